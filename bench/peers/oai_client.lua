-- oai as a user would call it (Lua 5.1-5.4 or LuaJIT; run by bench/run.lua).
--
--   oai_client.lua stream URL STREAMS CHUNKS DELAY_MS [text|result]
--       STREAMS streams of CHUNKS content chunks; one stream runs as a plain
--       blocking script, several run as oai.spawn tasks under oai.run().
--       text: `for t in s:text()`; result: only `s:result()`.
--   oai_client.lua chat URL REQUESTS
--       REQUESTS sequential client:chat calls.
--
-- Prints: content_bytes=B chunks=C requests=R   (R = requests that succeeded)
local oai = require "oai"

local mode, url = arg[1], arg[2]
local REQUEST = { model = "bench", messages = { { role = "user", content = "hi" } } }

local bytes, chunks, ok = 0, 0, 0

if mode == "chat" then
  local n = tonumber(arg[3])
  local client = oai.new { base_url = url, api_key = "sk-bench", max_retries = 0 }
  for _ = 1, n do
    local res, err = client:chat(REQUEST)
    if res then
      bytes = bytes + #res.choices[1].message.content
      ok = ok + 1
    else
      io.stderr:write("oai_client: ", tostring(err), "\n")
    end
  end
elseif mode == "stream" then
  local streams, n, delay = tonumber(arg[3]), arg[4], arg[5]
  local variant = arg[6] or "text"
  local client = oai.new { base_url = url, api_key = "sk-bench", max_retries = 0,
    headers = { ["x-test-chunks"] = n, ["x-test-chunk-delay-ms"] = delay, ["x-test-bench"] = "1" } }

  local function one()
    local s, err = client:stream(REQUEST)
    if not s then
      io.stderr:write("oai_client: ", tostring(err), "\n")
      return
    end
    if variant == "result" then
      local res, rerr = s:result()
      if not res then
        io.stderr:write("oai_client: ", tostring(rerr), "\n")
        return
      end
      local text = res.choices[1].message.content
      if type(text) == "string" then
        bytes = bytes + #text
        -- the chunk count is in the last word ("... w20000"): O(1), no scan
        chunks = chunks + (tonumber(text:sub(-12):match("w(%d+)$")) or 0)
      end
    else
      -- text() alone: no result() afterwards (it would build the completion);
      -- a stream that ended early shows in the chunk count the runner checks
      for t in s:text() do
        bytes = bytes + #t
        chunks = chunks + 1
      end
    end
    ok = ok + 1
  end

  if streams == 1 then
    one()
  else
    for _ = 1, streams do oai.spawn(one) end
    oai.run()
  end
else
  io.stderr:write("usage: oai_client.lua stream URL STREAMS CHUNKS DELAY_MS [text|result] | chat URL REQUESTS\n")
  os.exit(2)
end

io.write(("content_bytes=%d chunks=%d requests=%d\n"):format(bytes, chunks, ok))
