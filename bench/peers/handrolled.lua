-- What a user would write without oai (Lua 5.4): luasocket for raw HTTP/1.1
-- (chunked bodies included), a Lua SSE line parser and lua-cjson.  Several
-- streams run as coroutines over non-blocking sockets and socket.select, the
-- usual luasocket pattern (run by bench/run.lua).
--
--   lua5.4 handrolled.lua stream URL STREAMS CHUNKS DELAY_MS
--   lua5.4 handrolled.lua chat URL REQUESTS      (one keep-alive connection)
--
-- Prints: content_bytes=B chunks=C requests=R   (R = requests that succeeded)
-- socket.select is select(2): at most FD_SETSIZE (1024) sockets, so this peer
-- does not run the 2,000-stream scenario.
local socket = require "socket"
local cjson = require "cjson"

local mode, url = arg[1], arg[2]
local host, port, base = url:match("^http://([^:/]+):?(%d*)(.*)$")
port = tonumber(port) or 80
local PATH = base .. "/chat/completions"

local bytes, chunks, ok = 0, 0, 0

---------------------------------------------------------------- scheduler

local readers = {}      -- socket -> coroutine waiting for it to be readable
local nreaders = 0

-- Reads whatever the socket has (at least one byte), yielding while none;
-- nil at end of stream.
local function recv(sock)
  while true do
    local data, err, partial = sock:receive(65536)
    if data then return data end
    if partial and partial ~= "" then return partial end
    if err ~= "timeout" then return nil, err end
    readers[sock] = coroutine.running()
    nreaders = nreaders + 1
    coroutine.yield()
  end
end

local function run(tasks)
  local live = {}
  for i, fn in ipairs(tasks) do
    local co = coroutine.create(fn)
    live[co] = true
    assert(coroutine.resume(co))
    if coroutine.status(co) == "dead" then live[co] = nil end
  end
  while nreaders > 0 do
    local list = {}
    for s in pairs(readers) do list[#list + 1] = s end
    local ready = socket.select(list, nil, 30)
    for _, s in ipairs(ready) do
      local co = readers[s]
      readers[s] = nil
      nreaders = nreaders - 1
      local okr, err = coroutine.resume(co)
      if not okr then error(err) end
    end
  end
end

---------------------------------------------------------------- HTTP/1.1

local function connect()
  local sock = assert(socket.tcp())
  sock:setoption("tcp-nodelay", true)
  assert(sock:connect(host, port))
  sock:settimeout(0)
  return sock
end

local function send_all(sock, data)
  local i = 1
  while i <= #data do
    local last, err, partial = sock:send(data, i)
    if last then i = last + 1
    elseif err == "timeout" then i = partial + 1; socket.select(nil, { sock }, 30)
    else error(err) end
  end
end

local function request(sock, body, extra)
  send_all(sock, table.concat({
    "POST ", PATH, " HTTP/1.1\r\n",
    "Host: ", host, ":", port, "\r\n",
    "Authorization: Bearer sk-bench\r\n",
    "Content-Type: application/json\r\n",
    "Content-Length: ", #body, "\r\n",
    extra or "",
    "\r\n", body,
  }))
end

-- A response reader: status, headers, then the body through on_data(piece)
-- (chunked transfer coding decoded).  Leaves bytes after the body in conn.buf.
local function response(conn, on_data)
  local buf = conn.buf
  local head_end
  while true do
    head_end = buf:find("\r\n\r\n", 1, true)
    if head_end then break end
    local data = recv(conn.sock)
    if not data then error("connection closed before headers") end
    buf = buf .. data
  end
  local head = buf:sub(1, head_end - 1)
  buf = buf:sub(head_end + 4)
  local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
  local headers = {}
  for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[k:lower()] = v end

  if headers["transfer-encoding"] == "chunked" then
    -- chunk data is passed on as it arrives (a chunk can be megabytes)
    local remaining, after_data = 0, false
    while true do
      if remaining > 0 then
        if #buf == 0 then
          buf = recv(conn.sock)
          if not buf then error("connection closed inside a chunk") end
        end
        if #buf <= remaining then
          remaining = remaining - #buf
          on_data(buf)
          buf = ""
        else
          on_data(buf:sub(1, remaining))
          buf = buf:sub(remaining + 1)
          remaining = 0
        end
      else
        -- [CRLF after the previous chunk's data] size CRLF
        local from = after_data and 3 or 1
        local line_end = buf:find("\r\n", from, true)
        if line_end then
          local size = tonumber(buf:match("^%x+", from), 16)
          if size == 0 then
            -- no trailers from our server: the last chunk is "0\r\n\r\n"
            while #buf < line_end + 3 do buf = buf .. assert(recv(conn.sock)) end
            buf = buf:sub(line_end + 4)
            break
          end
          buf = buf:sub(line_end + 2)
          remaining, after_data = size, true
        else
          local data = recv(conn.sock)
          if not data then error("connection closed inside the chunked body") end
          buf = buf .. data
        end
      end
    end
  else
    local left = tonumber(headers["content-length"]) or math.huge
    while left > 0 do
      if #buf == 0 then
        local data = recv(conn.sock)
        if not data then
          if left == math.huge then break end
          error("connection closed inside the body")
        end
        buf = data
      end
      local piece = #buf <= left and buf or buf:sub(1, left)
      buf = #buf <= left and "" or buf:sub(left + 1)
      left = left - #piece
      on_data(piece)
    end
  end
  conn.buf = buf
  return status, headers
end

---------------------------------------------------------------- SSE

-- An SSE parser: feed(piece) splits lines (LF, CRLF), collects `data:` lines
-- and calls on_event(data) at each blank line.
local function sse_parser(on_event)
  local pending, data = "", nil
  return function(piece)
    pending = pending .. piece
    local pos = 1
    while true do
      local nl = pending:find("\n", pos, true)
      if not nl then break end
      local line = pending:sub(pos, nl - 1)
      if line:sub(-1) == "\r" then line = line:sub(1, -2) end
      pos = nl + 1
      if line == "" then
        if data then on_event(data) end
        data = nil
      elseif line:sub(1, 5) == "data:" then
        local v = line:sub(6)
        if v:sub(1, 1) == " " then v = v:sub(2) end
        data = data and (data .. "\n" .. v) or v
      end
    end
    pending = pending:sub(pos)
  end
end

---------------------------------------------------------------- main

if mode == "chat" then
  local n = tonumber(arg[3])
  local body = cjson.encode({ model = "bench", messages = { { role = "user", content = "hi" } } })
  run({ function()
    local conn = { sock = connect(), buf = "" }
    for _ = 1, n do
      request(conn.sock, body)
      local parts = {}
      local status = response(conn, function(p) parts[#parts + 1] = p end)
      local doc = cjson.decode(table.concat(parts))
      if status == 200 then
        bytes = bytes + #doc.choices[1].message.content
        ok = ok + 1
      else
        io.stderr:write("handrolled: HTTP ", status, "\n")
      end
    end
    conn.sock:close()
  end })
elseif mode == "stream" then
  local streams, n, delay = tonumber(arg[3]), arg[4], arg[5]
  local body = cjson.encode({ model = "bench", messages = { { role = "user", content = "hi" } }, stream = true })
  local extra = "Accept: text/event-stream\r\nx-test-bench: 1\r\nx-test-chunks: " .. n
    .. "\r\nx-test-chunk-delay-ms: " .. delay .. "\r\n"
  local tasks = {}
  for i = 1, streams do
    tasks[i] = function()
      local conn = { sock = connect(), buf = "" }
      request(conn.sock, body, extra)
      local done = false
      local feed = sse_parser(function(data)
        if data == "[DONE]" then done = true; return end
        local chunk = cjson.decode(data)
        local choice = chunk.choices[1]
        local text = choice and choice.delta.content
        if type(text) == "string" and text ~= "" then
          bytes = bytes + #text
          chunks = chunks + 1
        end
      end)
      local status = response(conn, feed)
      conn.sock:close()
      if status == 200 and done then ok = ok + 1 end
    end
  end
  run(tasks)
else
  io.stderr:write("usage: handrolled.lua stream URL STREAMS CHUNKS DELAY_MS | chat URL REQUESTS\n")
  os.exit(2)
end

io.write(("content_bytes=%d chunks=%d requests=%d\n"):format(bytes, chunks, ok))
