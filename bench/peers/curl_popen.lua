-- What many Neovim plugins do: run `curl -N` and read its output line by line
-- (here with io.popen under LuaJIT), decoding each `data:` line with lua-cjson
-- (run by bench/run.lua).
--
--   luajit curl_popen.lua stream URL STREAMS CHUNKS DELAY_MS
--       STREAMS curl processes started at once, then read one after the other
--       (io.popen cannot wait on several pipes; each 200-chunk stream fits in
--       its 64 KiB pipe buffer, so no curl is held back meanwhile).
--   luajit curl_popen.lua chat URL REQUESTS    one curl process per request
--
-- Prints: content_bytes=B chunks=C requests=R   (R = requests that succeeded)
local cjson = require "cjson"

local mode, url = arg[1], arg[2]
local ENDPOINT = url .. "/chat/completions"

local bytes, chunks, ok = 0, 0, 0

local function curl(body, headers)
  local cmd = { "curl -sS -N -X POST", "'" .. ENDPOINT .. "'",
    "-H 'Content-Type: application/json'", "-H 'Authorization: Bearer sk-bench'" }
  for _, h in ipairs(headers or {}) do cmd[#cmd + 1] = "-H '" .. h .. "'" end
  cmd[#cmd + 1] = "-d '" .. body .. "'"
  return assert(io.popen(table.concat(cmd, " "), "r"))
end

if mode == "chat" then
  local n = tonumber(arg[3])
  local body = cjson.encode({ model = "bench", messages = { { role = "user", content = "hi" } } })
  for _ = 1, n do
    local f = curl(body)
    local doc = cjson.decode(f:read("*a"))
    f:close()
    local content = doc.choices and doc.choices[1].message.content
    if type(content) == "string" then
      bytes = bytes + #content
      ok = ok + 1
    end
  end
elseif mode == "stream" then
  local streams, n, delay = tonumber(arg[3]), arg[4], arg[5]
  local body = cjson.encode({ model = "bench", messages = { { role = "user", content = "hi" } }, stream = true })
  local headers = { "Accept: text/event-stream", "x-test-bench: 1", "x-test-chunks: " .. n,
                    "x-test-chunk-delay-ms: " .. delay }
  local files = {}
  for i = 1, streams do files[i] = curl(body, headers) end
  for i = 1, streams do
    local f, done = files[i], false
    for line in f:lines() do
      if line:sub(1, 6) == "data: " then
        local data = line:sub(7)
        if data == "[DONE]" then
          done = true
        else
          local chunk = cjson.decode(data)
          local choice = chunk.choices[1]
          local text = choice and choice.delta.content
          if type(text) == "string" and text ~= "" then
            bytes = bytes + #text
            chunks = chunks + 1
          end
        end
      end
    end
    f:close()
    if done then ok = ok + 1 end
  end
else
  io.stderr:write("usage: curl_popen.lua stream URL STREAMS CHUNKS DELAY_MS | chat URL REQUESTS\n")
  os.exit(2)
end

io.write(("content_bytes=%d chunks=%d requests=%d\n"):format(bytes, chunks, ok))
