-- Test-process side of spec/ngx_spec.lua: start and stop private nginx instances
-- (own prefix, free port on 127.0.0.1, a watchdog that stops them if the test process
-- dies) and small process helpers.  Plain Lua 5.1-5.4 / LuaJIT, standard library only
-- (like lua/oai/testing.lua, whose helpers are private to it).
--
--   local control = dofile("spec/support/ngx/control.lua")
--   local ngx = control.start { conf = text_with_@PORT@_and_@PREFIX@, env = { K = "v" } }
--   ngx.port, ngx.url, ngx.prefix; ngx:error_log(); ngx:stop()
local control = {}

local PORT_MIN, PORT_MAX = 20000, 60000
local POLL = 0.02

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
control.q = q

local function execute(cmd)
  local a, _, c = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true and (c == nil or c == 0)
end
control.execute = execute

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a") or ""
  p:close()
  return out
end
control.capture = capture

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
control.read_file = read_file

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end
control.write_file = write_file

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end
control.exists = exists

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function alive(pid)
  if not pid then return false end
  local stat = read_file("/proc/" .. pid .. "/stat")
  if stat then
    local state = stat:match("^.*%) (%a)")
    return state ~= nil and state ~= "Z" and state ~= "X"
  end
  if exists("/proc/self/stat") then return false end
  return execute("kill -0 " .. pid .. " 2>/dev/null")
end

local function sleep(s) execute("sleep " .. s) end
control.sleep = sleep

local own_pid
local function getpid()
  if not own_pid then
    local stat = read_file("/proc/self/stat")
    own_pid = stat and tonumber(stat:match("^(%d+)")) or tonumber(trim(capture("echo $PPID")))
  end
  return own_pid
end

local function is_root()
  local status = read_file("/proc/self/status")
  local uid = status and status:match("\nUid:%s*(%d+)")
  if not uid then uid = trim(capture("id -u 2>/dev/null")) end
  return uid == "0"
end

-- absolute path of the repository (this file is spec/support/ngx/control.lua)
function control.root()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/spec/support/ngx/control%.lua$") or "."
  if dir:sub(1, 1) ~= "/" then
    local cwd = trim(capture("pwd"))
    dir = (dir == "." or dir == "") and cwd or (cwd .. "/" .. dir:gsub("^%./", ""))
  end
  return dir
end

local seed
local function random(lo, hi)
  if not seed then
    local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
    seed = (os.time() * 1000 + getpid() * 7919 + math.floor(os.clock() * 1e6) + addr) % 2147483646 + 1
  end
  seed = (seed * 16807) % 2147483647
  return lo + seed % (hi - lo + 1)
end

function control.find_nginx()
  local env = os.getenv("OAI_TESTING_NGINX")
  if env and env ~= "" then return env end
  for _, p in ipairs({ "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/openresty/nginx/sbin/nginx" }) do
    if exists(p) then return p end
  end
  return "nginx"
end

-- load_module lines for Debian's dynamic modules; "" when built in (OpenResty)
function control.module_lines(nginx)
  if nginx:find("openresty", 1, true) then return "" end
  for _, d in ipairs({ "/usr/share/nginx/modules", "/usr/lib/nginx/modules", "/usr/lib64/nginx/modules" }) do
    if exists(d .. "/ngx_http_lua_module.so") then
      local out = {}
      if exists(d .. "/ndk_http_module.so") then out[#out + 1] = "load_module " .. d .. "/ndk_http_module.so;" end
      out[#out + 1] = "load_module " .. d .. "/ngx_http_lua_module.so;"
      return table.concat(out, "\n")
    end
  end
  return ""
end

-- nginx drops privileges to nobody when started as root: keep root (test files are ours)
function control.user_line()
  return is_root() and "user root;" or ""
end

-- replace @NAME@ placeholders; raises on one left unfilled (but for the names
-- in `later`, which start() fills)
function control.fill(text, vars, later)
  local out = text:gsub("@([%u_]+)@", function(k)
    local v = vars[k]
    if v ~= nil then return tostring(v) end
  end)
  for left in out:gmatch("@([%u_]+)@") do
    if not (later and later[left]) then error("ngx control: placeholder @" .. left .. "@ not filled", 2) end
  end
  return out
end

local Nginx = {}
Nginx.__index = Nginx

function Nginx:error_log()
  return read_file(self.prefix .. "/error.log") or ""
end

function Nginx:stop()
  if self.stopped then return end
  self.stopped = true
  local pid = self.pid
  if pid and alive(pid) then
    execute("kill -QUIT " .. pid .. " 2>/dev/null")
    local n = 0
    while alive(pid) and n < 100 do sleep(POLL); n = n + 1 end
    if alive(pid) then execute("kill -9 -" .. pid .. " 2>/dev/null; kill -9 " .. pid .. " 2>/dev/null") end
  end
  if self.created then execute("rm -rf " .. q(self.prefix)) end
end

control.LATER = { PORT = true, PREFIX = true }

--- start{conf=, env=, watchdog=} -> nginx: fills @PORT@ and @PREFIX@ in conf (a free port on
--- 127.0.0.1, a fresh prefix) and waits until nginx has bound it; raises with the tail
--- of the error log otherwise.
function control.start(opts)
  local prefix = trim(capture('mktemp -d "${TMPDIR:-/tmp}/oai-ngx-spec.XXXXXX"'))
  assert(prefix ~= "", "mktemp -d failed")
  assert(execute("mkdir -p " .. q(prefix .. "/tmp") .. " " .. q(prefix .. "/logs")))
  local self = setmetatable({ prefix = prefix, created = true }, Nginx)
  local nginx = control.find_nginx()
  local launcher = control.root() .. "/spec/support/ngx/launch.sh"
  local envs = {}
  for k, v in pairs(opts.env or {}) do envs[#envs + 1] = k .. "=" .. q(v) end
  local last = ""
  for _ = 1, 20 do
    local port = random(PORT_MIN, PORT_MAX)
    local conf = control.fill(opts.conf, { PORT = port, PREFIX = prefix })
    write_file(prefix .. "/nginx.conf", conf)
    os.remove(prefix .. "/nginx.pid")
    os.remove(prefix .. "/launcher.pid")
    local offset = #(read_file(prefix .. "/error.log") or "")
    assert(execute(table.concat(envs, " ") .. " sh " .. q(launcher) .. " " .. q(prefix) .. " " .. (opts.watchdog == false and 0 or getpid()) .. " "
      .. q(nginx) .. " " .. q(prefix .. "/nginx.conf") .. " </dev/null >>" .. q(prefix .. "/launch.log") .. " 2>&1 &"))
    local state, pid, polls = nil, nil, 0
    while true do
      pid = pid or tonumber(trim(read_file(prefix .. "/launcher.pid") or ""))
      local master = tonumber(trim(read_file(prefix .. "/nginx.pid") or ""))
      if master and alive(master) then pid = master; state = "ready" break end
      if pid and not alive(pid) then state = "exited" break end
      polls = polls + 1
      if polls * POLL > 10 then state = "timeout" break end
      sleep(POLL)
    end
    if state == "ready" then
      self.pid, self.port = pid, port
      self.url = "http://127.0.0.1:" .. port
      return self
    end
    last = (read_file(prefix .. "/error.log") or ""):sub(offset + 1)
    if state == "timeout" and pid then execute("kill -9 -" .. pid .. " 2>/dev/null; kill -9 " .. pid .. " 2>/dev/null") end
    if not (state == "exited" and last:find("Address already in use", 1, true)) then
      local msg = "nginx did not start (" .. state .. "):\n" .. last:sub(-2000)
        .. (read_file(prefix .. "/launch.log") or ""):sub(-500)
      self:stop()
      error(msg, 2)
    end
  end
  self:stop()
  error("nginx: no free port after 20 tries:\n" .. last, 2)
end

return control
