--- oai.testing: a local OpenAI-compatible server for specs, demos and users' own tests.
--
-- A real HTTP server: nginx with lua-nginx-module, running `oai.testing.app` in a private
-- prefix directory, on 127.0.0.1 and free ports (plus HTTPS with HTTP/2 on request).
-- This module is the controller; it runs in the test process on Lua 5.1-5.4 and LuaJIT
-- with nothing but the standard library (processes through os.execute/io.popen).
--
--   local testing = require "oai.testing"
--   local srv = testing.start { tls = true }
--   -- srv.url = "http://127.0.0.1:PORT/v1", srv.tls_url, srv.ca_file, ...
--   srv:requests(); srv:last_request(); srv:clear(); srv:script(name, steps); srv:stop()
--
-- Command line (make demo, CI): `lua lua/oai/testing.lua start DIR [--tls] [--workers=N]`
-- prints the base URL and leaves the server running; `... stop DIR` stops it.
-- See docs/testing.md.
local testing = {}

local SOURCE = debug.getinfo(1, "S").source

local POLL = 0.02           -- seconds between readiness/exit polls
local START_TIMEOUT = 10    -- seconds
local STOP_GRACE = 2        -- seconds between QUIT and KILL
local PORT_MIN, PORT_MAX = 20000, 60000

local NGX_LUA_PATH = "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;"
  .. "/usr/local/share/lua/5.1/?.lua;/usr/local/share/lua/5.1/?/init.lua;;"
local NGX_LUA_CPATH = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;/usr/lib/aarch64-linux-gnu/lua/5.1/?.so;"
  .. "/usr/local/lib/lua/5.1/?.so;/usr/lib/lua/5.1/?.so;;"

local has_cjson, cjson = pcall(require, "cjson")
if not has_cjson then cjson = nil end

---------------------------------------------------------------------------- helpers

-- as a module, or run as a script (lua5.4 lua/oai/testing.lua start DIR)
-- where oai.* may not be on package.path: then next to this file
local has_proc, proc = pcall(require, "oai.testing.proc")
if not has_proc then
  local dir = SOURCE:match("^@(.-)oai[/\\]testing%.lua$")
  if not dir then error(proc, 0) end
  proc = dofile(dir .. "oai/testing/proc.lua")
end
local q, execute, capture = proc.q, proc.execute, proc.capture
local read_file, write_file, write_atomic, exists = proc.read_file, proc.write_file, proc.write_atomic, proc.exists
local sleep, trim, alive, getpid, is_root = proc.sleep, proc.trim, proc.alive, proc.getpid, proc.is_root
local random, find_nginx, module_lines = proc.random, proc.find_nginx, proc.module_lines

local cwd
local function absolute(path)
  if path:sub(1, 1) == "/" then return path end
  cwd = cwd or trim(capture("pwd"))
  path = path:gsub("^%./", "")
  if path == "" or path == "." then return cwd end
  return cwd .. "/" .. path
end

-- the directory holding oai/testing.lua, absolute (nginx's lua_package_path needs it)
local function lua_root()
  local file = SOURCE:sub(1, 1) == "@" and SOURCE:sub(2) or "lua/oai/testing.lua"
  local root = file:match("^(.-)oai[/\\]testing%.lua$") or "lua/"
  root = root:gsub("/+$", "")
  return absolute(root == "" and "." or root)
end

-- one-line Lua literals (the format of requests.log and scripts/*.lua)
local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\127"] = "\\127" }
for i = 0, 31 do ESCAPES[string.char(i)] = string.format("\\%03d", i) end

local function serialize(v, depth)
  local t = type(v)
  if t == "string" then
    return '"' .. v:gsub('[%z\1-\31"\\\127]', ESCAPES) .. '"'
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("oai.testing: cannot serialize " .. tostring(v), 3) end
    if v == math.floor(v) and v >= -2^53 and v <= 2^53 then return string.format("%d", v) end
    return string.format("%.17g", v)
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "table" then
    depth = (depth or 0) + 1
    if depth > 32 then error("oai.testing: table nested too deeply", 3) end
    local out, n = {}, #v
    for i = 1, n do out[#out + 1] = serialize(v[i], depth) end
    local keys = {}
    for k in pairs(v) do
      if not (type(k) == "number" and k >= 1 and k <= n and k == math.floor(k)) then keys[#keys + 1] = k end
    end
    table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
      out[#out + 1] = "[" .. serialize(k, depth) .. "]=" .. serialize(v[k], depth)
    end
    return "{" .. table.concat(out, ",") .. "}"
  end
  error("oai.testing: cannot serialize a " .. t, 3)
end

-- evaluates a literal in an empty environment
local function load_literal(src, name)
  local fn
  if setfenv then
    fn = loadstring(src, name)
    if fn then setfenv(fn, {}) end
  else
    fn = load(src, name, "t", {})
  end
  if not fn then return nil end
  local ok, value = pcall(fn)
  if ok then return value end
  return nil
end

local function log_tail(dir, offset)
  local log = read_file(dir .. "/error.log") or ""
  log = log:sub((offset or 0) + 1)
  if #log > 2000 then log = "..." .. log:sub(-2000) end
  return log
end

---------------------------------------------------------------------------- files in DIR

local LAUNCHER = proc.LAUNCHER

local CERTS = [[
set -e
cd "$1"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -sha256"
openssl req -x509 $ec -keyout ca.key -out ca.pem.tmp -days 3650 -subj "/CN=oai-testing CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl req $ec -keyout server.key -out server.csr -subj "/CN=localhost"
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
  "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" > server.ext
openssl x509 -req -in server.csr -CA ca.pem.tmp -CAkey ca.key -set_serial "$2" -days 3650 \
  -sha256 -extfile server.ext -out server.pem
openssl req -x509 $ec -keyout other-ca.key -out other-ca.pem -days 3650 \
  -subj "/CN=oai-testing untrusted CA" -addext "basicConstraints=critical,CA:TRUE"
rm -f server.csr
mv ca.pem.tmp ca.pem
]]

local function ensure_certs(dir)
  local tls = dir .. "/tls"
  if exists(tls .. "/ca.pem") and exists(tls .. "/server.pem") and exists(tls .. "/other-ca.pem") then
    return tls
  end
  assert(execute("mkdir -p " .. q(tls)))
  write_file(tls .. "/make-certs.sh", CERTS)
  local cmd = "sh " .. q(tls .. "/make-certs.sh") .. " " .. q(tls) .. " " .. random(1, 2000000000)
    .. " >" .. q(tls .. "/openssl.log") .. " 2>&1"
  if not execute(cmd) then
    error("oai.testing: openssl could not make the test certificates:\n"
      .. (read_file(tls .. "/openssl.log") or ""), 3)
  end
  return tls
end

local function nginx_conf(c)
  local listen_tls = ""
  if c.tls_port then
    listen_tls = ([[
  server {
    listen 127.0.0.1:%d ssl http2;
    server_name localhost;
    ssl_certificate %s/server.pem;
    ssl_certificate_key %s/server.key;
    location / { content_by_lua_block { require("oai.testing.app").handle() } }
  }
]]):format(c.tls_port, c.tls, c.tls)
  end
  local d = c.dir
  return table.concat({
    "# oai.testing: private nginx; written by lua/oai/testing.lua at every start",
    c.modules,
    c.user and "user root;" or "",
    "daemon off;",
    "master_process on;",
    "worker_processes " .. c.workers .. ";",
    "worker_rlimit_nofile 8192;",
    "worker_shutdown_timeout 1s;",
    "pid " .. d .. "/nginx.pid;",
    "error_log " .. d .. "/error.log warn;",
    "events { worker_connections 4096; }",
    "http {",
    "  access_log off;",
    "  client_body_temp_path " .. d .. "/tmp/client_body;",
    "  proxy_temp_path " .. d .. "/tmp/proxy;",
    "  fastcgi_temp_path " .. d .. "/tmp/fastcgi;",
    "  uwsgi_temp_path " .. d .. "/tmp/uwsgi;",
    "  scgi_temp_path " .. d .. "/tmp/scgi;",
    "  lua_package_path '" .. c.root .. "/?.lua;" .. c.root .. "/?/init.lua;" .. NGX_LUA_PATH .. "';",
    "  lua_package_cpath '" .. NGX_LUA_CPATH .. "';",
    "  lua_shared_dict oai_testing 4m;",
    "  lua_socket_log_errors off;",
    "  init_by_lua_block { require 'oai.testing.app' }",
    "  gzip off;",
    "  server_tokens off;",
    "  chunked_transfer_encoding on;",
    "  keepalive_timeout 60s;",
    "  keepalive_requests 10000;",
    "  client_max_body_size 0;",
    "  client_body_buffer_size 1m;",
    "  large_client_header_buffers 8 64k;",
    "  default_type application/octet-stream;",
    "  server {",
    "    listen 127.0.0.1:" .. c.port .. ";",
    "    server_name localhost;",
    "    location / { content_by_lua_block { require('oai.testing.app').handle() } }",
    "  }",
    listen_tls,
    "}",
    "",
  }, "\n")
end

---------------------------------------------------------------------------- server objects

---@class oai.testing.Server
---@field url string            "http://127.0.0.1:PORT/v1"
---@field port integer
---@field tls_url string|nil    "https://localhost:TLSPORT/v1" (tls = true): HTTP/2 and HTTP/1.1
---@field tls_port integer|nil
---@field ca_file string|nil    PEM of the CA that signed the server certificate
---@field other_ca_file string|nil  PEM of an unrelated CA: verification fails with it
---@field dir string            the private nginx prefix directory
---@field pid integer           the nginx master process
local Server = {}
Server.__index = Server
testing.Server = Server

-- Owned servers stop when collected (5.2+: __gc on the table; 5.1/LuaJIT: a proxy).
local Owned = { __index = Server, __gc = function(self) self:stop() end }
local Detached = { __index = Server }

local function info_of(self)
  return { pid = self.pid, port = self.port, url = self.url, tls_port = self.tls_port,
    tls_url = self.tls_url, ca_file = self.ca_file, other_ca_file = self.other_ca_file }
end

local function set_ports(self, port, tls_port)
  self.port = port
  self.url = "http://127.0.0.1:" .. port .. "/v1"
  if tls_port then
    self.tls_port = tls_port
    self.tls_url = "https://localhost:" .. tls_port .. "/v1"
  end
end

-- starts nginx on random ports until one binds; returns the master pid or raises
local function launch(self, opts)
  local dir = self.dir
  local nginx = find_nginx(opts)
  local conf = {
    dir = dir, workers = math.floor(tonumber(opts.workers) or 1), root = lua_root(),
    modules = module_lines(opts, nginx), user = is_root(), tls = self.ca_file and (dir .. "/tls"),
  }
  local watch = opts.watchdog == false and 0 or getpid()
  write_file(dir .. "/launch.sh", LAUNCHER)
  local last_log = ""
  for _ = 1, 25 do
    conf.port = random(PORT_MIN, PORT_MAX)
    if self.ca_file then
      repeat conf.tls_port = random(PORT_MIN, PORT_MAX) until conf.tls_port ~= conf.port
    end
    write_file(dir .. "/nginx.conf", nginx_conf(conf))
    os.remove(dir .. "/nginx.pid")
    os.remove(dir .. "/launcher.pid")
    local offset = #(read_file(dir .. "/error.log") or "")
    assert(execute("sh " .. q(dir .. "/launch.sh") .. " " .. q(dir) .. " " .. watch .. " " .. q(nginx)
      .. " </dev/null >>" .. q(dir .. "/launch.log") .. " 2>&1 &"))

    local state, pid
    local t0, polls = os.time(), 0
    while true do
      pid = pid or tonumber(trim(read_file(dir .. "/launcher.pid") or ""))
      local master = tonumber(trim(read_file(dir .. "/nginx.pid") or ""))
      if master and alive(master) then pid = master; state = "ready" break end
      if pid and not alive(pid) then state = "exited" break end
      polls = polls + 1
      if os.difftime(os.time(), t0) > START_TIMEOUT or polls * POLL > START_TIMEOUT * 1.5 then
        state = "timeout" break
      end
      sleep(POLL)
    end

    if state == "ready" then
      set_ports(self, conf.port, conf.tls_port)
      self.pid = pid
      return
    end
    last_log = log_tail(dir, offset)
    if state == "timeout" and pid and alive(pid) then
      execute("kill -9 -" .. pid .. " 2>/dev/null; kill -9 " .. pid .. " 2>/dev/null")
    end
    if not (state == "exited" and last_log:find("Address already in use", 1, true)) then
      local launch_log = read_file(dir .. "/launch.log") or ""
      error("oai.testing: nginx did not start (" .. state .. ", " .. nginx .. ", " .. dir .. "):\n"
        .. last_log .. launch_log:sub(-500), 0)
    end
  end
  error("oai.testing: no free port after 25 tries:\n" .. last_log, 0)
end

---@class oai.testing.Options
---@field tls boolean|nil       also listen with HTTPS (HTTP/2 + HTTP/1.1 via ALPN); default false
---@field dir string|nil        private directory; default a fresh `mktemp -d`, removed by stop()
---@field workers integer|nil   nginx worker processes; default 1
---@field watchdog boolean|nil  false: the server outlives this process and GC (the CLI's mode)
---@field nginx string|nil      nginx binary; default $OAI_TESTING_NGINX, /usr/sbin/nginx, nginx
---@field modules_dir string|false|nil  where ngx_http_lua_module.so is; false: built in (OpenResty)

--- Starts a server on 127.0.0.1 and free ports; raises with the tail of nginx's
--- error.log when it cannot start (10 s at most).
---@param opts oai.testing.Options|nil
---@return oai.testing.Server
function testing.start(opts)
  opts = opts or {}
  local dir, created = opts.dir, false
  if dir then
    dir = absolute(dir)
    assert(execute("mkdir -p " .. q(dir)), "oai.testing: cannot create " .. dir)
  else
    dir = trim(capture('mktemp -d "${TMPDIR:-/tmp}/oai-testing.XXXXXX"'))
    if dir == "" then error("oai.testing: mktemp -d failed", 2) end
    created = true
  end
  dir = dir:gsub("/+$", "")
  assert(execute("mkdir -p " .. q(dir .. "/tmp") .. " " .. q(dir .. "/scripts")))

  local self = { dir = dir, _created = created }
  if opts.tls then
    local tls = ensure_certs(dir)
    self.ca_file = tls .. "/ca.pem"
    self.other_ca_file = tls .. "/other-ca.pem"
  end
  write_atomic(dir .. "/epoch", "0\n")
  write_file(dir .. "/requests.log", "")

  local detached = opts.watchdog == false
  setmetatable(self, detached and Detached or Owned)
  local ok, err = pcall(launch, self, opts)
  if not ok then
    self._stopped = true
    if created then execute("rm -rf " .. q(dir)) end
    error(err, 2)
  end
  if not detached and newproxy then -- 5.1 / LuaJIT: tables have no __gc
    self._gc = newproxy(true)
    getmetatable(self._gc).__gc = function() self:stop() end
  end
  write_atomic(dir .. "/server.lua", "return " .. serialize(info_of(self)) .. "\n")
  return self
end

--- Attaches to a server started in DIR by another process (e.g. the CLI).
--- It is not stopped by garbage collection; srv:stop() stops it.
---@param dir string
---@return oai.testing.Server
function testing.attach(dir)
  dir = absolute(dir):gsub("/+$", "")
  local info = load_literal(read_file(dir .. "/server.lua") or "", "=server.lua")
  if type(info) ~= "table" then error("oai.testing: no server in " .. dir, 2) end
  local self = setmetatable({ dir = dir, pid = info.pid, ca_file = info.ca_file,
    other_ca_file = info.other_ca_file }, Detached)
  set_ports(self, info.port, info.tls_port)
  return self
end

---@class oai.testing.Request
---@field n integer             request counter (restarts at 1 after clear)
---@field request_id string     "req_test_<n>", also the x-request-id response header
---@field method string
---@field path string           raw path, e.g. "/v1/chat/completions"
---@field query string          raw query string or ""
---@field headers table<string,string>  lowercased names; repeated headers joined with ", "
---@field body string           the exact body bytes ("" when none)
---@field json any              the body decoded with lua-cjson when it is JSON (and cjson is installed)
---@field connection integer    nginx connection serial number: equal numbers = reused connection
---@field connection_requests integer  requests so far on that connection
---@field protocol string       "HTTP/1.1" | "HTTP/2.0"
---@field scheme string         "http" | "https"
---@field time number           arrival time (seconds since the epoch, ms precision)

--- Every request received since start/clear, in arrival order (each is recorded
--- before its response is sent).
---@return oai.testing.Request[]
function Server:requests()
  local data = read_file(self.dir .. "/requests.log") or ""
  local list = {}
  for line in data:gmatch("([^\n]*)\n") do -- a half-written last line has no \n yet
    local rec = load_literal("return " .. line, "=request")
    if type(rec) == "table" then
      if cjson and rec.body:find("^%s*[%[{]") then
        local ok, value = pcall(cjson.decode, rec.body)
        if ok then rec.json = value end
      end
      list[#list + 1] = rec
    end
  end
  return list
end

--- The most recent request, or nil.
---@return oai.testing.Request|nil
function Server:last_request()
  local list = self:requests()
  return list[#list]
end

--- clear(): forgets recorded requests; restarts the request counter and x-test-fail-times counts.
function Server:clear()
  local epoch = tonumber((read_file(self.dir .. "/epoch") or "0"):match("%d+")) or 0
  write_atomic(self.dir .. "/epoch", string.format("%d\n", epoch + 1))
  write_file(self.dir .. "/requests.log", "")
end

local STEP_KEYS = { status = true, headers = true, send = true, flush = true, sleep_ms = true, close = true }

--- Defines the raw response played for requests with `x-test-script: name`; steps:
--- { {status=, headers=} (optional, first), {send="bytes"}, {flush=true},
---   {sleep_ms=N}, {close=true} ... }. Raises on a malformed script.
---@param name string  [%w_.-]+
---@param steps table[]
function Server:script(name, steps)
  if type(name) ~= "string" or not name:match("^[%w_%.%-]+$") then
    error("oai.testing: script name must match [%w_.-]+", 2)
  end
  if type(steps) ~= "table" then error("oai.testing: script steps must be a table", 2) end
  for i, step in ipairs(steps) do
    if type(step) ~= "table" then error("oai.testing: script step " .. i .. " is not a table", 2) end
    for k in pairs(step) do
      if not STEP_KEYS[k] then error("oai.testing: script step " .. i .. ": unknown key " .. tostring(k), 2) end
    end
    if (step.status or step.headers) and i ~= 1 then
      error("oai.testing: script step " .. i .. ": status/headers must be the first step", 2)
    end
    if step.send ~= nil and type(step.send) ~= "string" then
      error("oai.testing: script step " .. i .. ": send must be a string", 2)
    end
  end
  write_atomic(self.dir .. "/scripts/" .. name .. ".lua", "return " .. serialize(steps) .. "\n")
end

--- The text nginx logged (errors of the app land here too).
---@return string
function Server:error_log()
  return read_file(self.dir .. "/error.log") or ""
end

--- QUIT, KILL after 2 s, waits for nginx to exit, removes the dir start() created.
--- Idempotent.
function Server:stop()
  if self._stopped then return end
  self._stopped = true
  local pid = self.pid
  if pid and alive(pid) then
    execute("kill -QUIT " .. pid .. " 2>/dev/null")
    local polls = 0
    while alive(pid) and polls * POLL < STOP_GRACE do
      sleep(POLL)
      polls = polls + 1
    end
    if alive(pid) then
      execute("kill -9 -" .. pid .. " 2>/dev/null; kill -9 " .. pid .. " 2>/dev/null")
      polls = 0
      while alive(pid) and polls < 50 do
        sleep(POLL)
        polls = polls + 1
      end
    end
  end
  if self._created then execute("rm -rf " .. q(self.dir)) end
end

---------------------------------------------------------------------------- command line

local function main(argv)
  local cmd, dir = argv[1], argv[2]
  local opts = { dir = dir, watchdog = false }
  for i = 3, #argv do
    local a = argv[i]
    if a == "--tls" then opts.tls = true
    elseif a:match("^%-%-workers=%d+$") then opts.workers = tonumber(a:match("%d+"))
    else cmd = nil end
  end
  if cmd == "start" and dir then
    local srv = testing.start(opts)
    io.stdout:write(srv.url, "\n")
  elseif cmd == "stop" and dir then
    if exists(dir .. "/server.lua") then testing.attach(dir):stop() end
  else
    io.stderr:write("usage: lua testing.lua start DIR [--tls] [--workers=N]\n",
      "       lua testing.lua stop DIR\n")
    os.exit(2)
  end
end

if type(arg) == "table" and type(arg[0]) == "string" and arg[0]:match("testing%.lua$")
  and (...) ~= "oai.testing" then
  main({ ... })
end

return testing
