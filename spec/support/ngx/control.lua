-- Test-process side of spec/ngx_spec.lua: start and stop private nginx instances
-- (own prefix, free port on 127.0.0.1, a watchdog that stops them if the test process
-- dies) and small process helpers.  Plain Lua 5.1-5.4 / LuaJIT, standard library only
-- (the process helpers are oai.testing.proc's).
--
--   local control = dofile("spec/support/ngx/control.lua")
--   local ngx = control.start { conf = text_with_@PORT@_and_@PREFIX@, env = { K = "v" } }
--   ngx.port, ngx.url, ngx.prefix; ngx:error_log(); ngx:stop()
local control = {}

local PORT_MIN, PORT_MAX = 20000, 60000
local POLL = 0.02

local proc = require "oai.testing.proc"
local q, execute, capture, read_file, write_file, exists = proc.q, proc.execute, proc.capture,
  proc.read_file, proc.write_file, proc.exists
local trim, alive, sleep, getpid, is_root, random = proc.trim, proc.alive, proc.sleep,
  proc.getpid, proc.is_root, proc.random
control.q, control.execute, control.capture, control.read_file = q, execute, capture, read_file
control.write_file, control.exists, control.sleep = write_file, exists, sleep

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

function control.find_nginx() return proc.find_nginx({}) end

-- load_module lines for Debian's dynamic modules; "" when built in (OpenResty)
function control.module_lines(nginx) return proc.module_lines({}, nginx) end

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

-- Does nginx still need `lua_package_cpath` to find oai.core?  Once lua/oai/init.lua
-- finds the core from its own path (build/<runtime>/oai/core.so), set this to false
-- (or OAI_NGX_CPATH_LINES=0): every config the specs generate then drops its
-- lua_package_cpath lines, docs/openresty.md's included, and so tests that
-- `lua_package_path` alone is enough.
control.CPATH_LINES = os.getenv("OAI_NGX_CPATH_LINES") == "1"

--- cpath_lines(conf) -> conf, without its lua_package_cpath lines unless CPATH_LINES
function control.cpath_lines(text)
  if control.CPATH_LINES then return text end
  return (text:gsub("\n[ \t]*lua_package_cpath[^\n]*", ""))
end

--- code_blocks(markdown, lang) -> the bodies of its ```lang fenced blocks, in order
function control.code_blocks(md, lang)
  local blocks = {}
  for info, body in md:gmatch("\n```([%w_-]*)\n(.-\n)```") do
    if info == lang then blocks[#blocks + 1] = body end
  end
  return blocks
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
  local launcher = prefix .. "/launch.sh"
  write_file(launcher, proc.LAUNCHER)
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
