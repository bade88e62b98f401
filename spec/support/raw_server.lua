-- A raw TCP server for hostile-server specs: what nginx (oai.testing) cannot
-- send -- a response head dripped byte by byte, a half header line and a
-- stall, a connection reset (RST) mid-stream.
--
--   local raw = require "raw_server"
--   local s = raw.start { {send = "HTTP/1.1 200 OK\r\n"}, {sleep = 0.5}, {reset = true} }
--   s.url          -- "http://127.0.0.1:PORT/v1"
--   s:stop()
--
-- A child process (this interpreter, luasocket) accepts connections one after
-- the other; for each it reads the request (head and Content-Length body),
-- then plays the steps: {send = bytes}, {drip = bytes, every = secs} (one
-- byte at a time), {sleep = secs}, {close = true} (FIN), {reset = true} (RST:
-- SO_LINGER 0).  After the last step it closes.
local M = {}

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local interpreter = require("helpers").interpreter

local function literal(v)
  if type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do out[#out + 1] = "[" .. literal(k) .. "]=" .. literal(x) end
    return "{" .. table.concat(out, ",") .. "}"
  elseif type(v) == "string" then
    return '"' .. v:gsub(".", function(ch) return "\\" .. ch:byte() end) .. '"'
  end
  return tostring(v)
end

local CHILD = [=[
local socket = require "socket"
local steps, portfile = assert(loadstring or load)("return " .. arg[1])(), arg[2]
local l = assert(socket.bind("127.0.0.1", 0))
local _, port = l:getsockname()
local f = assert(io.open(portfile .. ".tmp", "w")); f:write(port); f:close()
os.rename(portfile .. ".tmp", portfile)
while true do
  local c = l:accept()
  if c then
    c:settimeout(10)
    local len = 0
    while true do
      local line = c:receive("*l")
      if not line then break end
      local n = line:lower():match("^content%-length:%s*(%d+)")
      if n then len = tonumber(n) end
      if line == "" then break end
    end
    if len > 0 then c:receive(len) end
    local reset = false
    for _, s in ipairs(steps) do
      if s.send then c:send(s.send)
      elseif s.drip then
        for i = 1, #s.drip do c:send(s.drip:sub(i, i)); socket.sleep(s.every or 0.5) end
      elseif s.sleep then socket.sleep(s.sleep)
      elseif s.reset then reset = true; break
      elseif s.close then break end
    end
    if reset then c:setoption("linger", { on = true, timeout = 0 }) end
    c:close()
  end
end
]=]

--- start(steps) -> server {url=, port=, stop=}
function M.start(steps)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. q(dir)))
  local script, portfile = dir .. "/raw.lua", dir .. "/port"
  local f = assert(io.open(script, "w")); f:write(CHILD); f:close()
  local cmd = ("LUA_PATH=%s LUA_CPATH=%s %s %s %s %s >/dev/null 2>&1 & echo $!")
    :format(q(package.path), q(package.cpath), interpreter(), q(script), q(literal(steps)), q(portfile))
  local p = assert(io.popen(cmd))
  local pid = tonumber(p:read("*l"))
  p:close()
  local port
  for _ = 1, 200 do
    local pf = io.open(portfile)
    if pf then port = tonumber(pf:read("*a")); pf:close() end
    if port then break end
    os.execute("sleep 0.02")
  end
  assert(port, "raw_server: the child did not start")
  return {
    port = port, url = "http://127.0.0.1:" .. port .. "/v1",
    stop = function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      os.execute("rm -rf " .. q(dir))
    end,
  }
end

return M
