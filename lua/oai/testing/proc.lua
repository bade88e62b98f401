--- oai.testing.proc: the test process's side of running a private nginx:
--- shell quoting, files, process liveness, free-port picking, finding nginx
--- and its modules.  Plain Lua 5.1-5.4 / LuaJIT, standard library only.
--- Used by oai.testing and by spec/support/ngx/control.lua.
local proc = {}

local NGINX_CANDIDATES = { "/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/openresty/nginx/sbin/nginx" }
local MODULE_DIRS = { "/usr/share/nginx/modules", "/usr/lib/nginx/modules", "/usr/lib64/nginx/modules" }

local function q(s) -- shell quote
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- os.execute -> true when the command exited 0 (5.1/LuaJIT return a status number)
local function execute(cmd)
  local a, _, c = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true and (c == nil or c == 0)
end

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a") or ""
  p:close()
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local data = f:read("*a")
  f:close()
  return data
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  assert(f:write(data))
  assert(f:close())
end

-- readers in nginx never see a half-written file
local function write_atomic(path, data)
  write_file(path .. ".tmp", data)
  assert(os.rename(path .. ".tmp", path))
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function sleep(seconds)
  execute("sleep " .. seconds)
end

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- pid is a live process (zombies count as dead: nobody may reap them in containers)
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

local own_pid
local function getpid()
  if not own_pid then
    local stat = read_file("/proc/self/stat")
    own_pid = stat and tonumber(stat:match("^(%d+)"))
      or tonumber(trim(capture("echo $PPID"))) -- popen's sh is our child
  end
  return own_pid
end

local function is_root()
  local status = read_file("/proc/self/status")
  local uid = status and status:match("\nUid:%s*(%d+)")
  if not uid then uid = trim(capture("id -u 2>/dev/null")) end
  return uid == "0"
end

-- Park-Miller generator: picks ports without touching the caller's math.random state
local seed
local function random(lo, hi)
  if not seed then
    local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
    seed = (os.time() * 1000 + getpid() * 7919 + math.floor(os.clock() * 1e6) + addr) % 2147483646 + 1
  end
  seed = (seed * 16807) % 2147483647
  return lo + seed % (hi - lo + 1)
end

local function find_nginx(opts)
  if opts.nginx then return opts.nginx end
  local env = os.getenv("OAI_TESTING_NGINX")
  if env and env ~= "" then return env end
  for _, path in ipairs(NGINX_CANDIDATES) do
    if exists(path) then return path end
  end
  return "nginx"
end

-- load_module lines (none when the lua module is built in, as in OpenResty)
local function module_lines(opts, nginx)
  if opts.modules_dir == false or (opts.modules_dir == nil and nginx:find("openresty", 1, true)) then
    return ""
  end
  local dirs = opts.modules_dir and { opts.modules_dir } or MODULE_DIRS
  for _, d in ipairs(dirs) do
    if exists(d .. "/ngx_http_lua_module.so") then
      local lines = {}
      if exists(d .. "/ndk_http_module.so") then
        lines[#lines + 1] = "load_module " .. d .. "/ndk_http_module.so;"
      end
      lines[#lines + 1] = "load_module " .. d .. "/ngx_http_lua_module.so;"
      return table.concat(lines, "\n")
    end
  end
  return ""
end

-- the shell script that starts a private nginx: write it to a file, run it
-- in the background (see oai.testing's launch)
proc.LAUNCHER = [[
#!/bin/sh
# launcher of a private nginx (oai.testing, the OpenResty spec): becomes nginx (exec
# keeps the pid) in its own session; unless $2 is 0, a watchdog stops nginx once
# process $2 (the Lua test process) has exited.   sh launch.sh PREFIX WATCH NGINX [CONF]
dir=$1 watch=$2 nginx=$3 conf=${4:-$1/nginx.conf}
me=$$
echo "$me" > "$dir/launcher.pid"
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }
  case $s in Z*|X*) return 1;; esac
  return 0
}
if [ "$watch" != 0 ]; then
  (
    while alive "$me"; do
      if ! alive "$watch"; then
        kill -QUIT "$me" 2>/dev/null
        i=0
        while [ $i -lt 20 ] && alive "$me"; do sleep 0.1; i=$((i + 1)); done
        kill -9 -"$me" 2>/dev/null; kill -9 "$me" 2>/dev/null
        exit 0
      fi
      sleep 0.5
    done
  ) </dev/null >/dev/null 2>&1 &
fi
# own session and process group: a KILL of the group also ends orphaned workers
if command -v setsid >/dev/null 2>&1; then
  exec setsid "$nginx" -p "$dir/" -c "$conf" -e "$dir/error.log"
fi
exec "$nginx" -p "$dir/" -c "$conf" -e "$dir/error.log"
]]

proc.q, proc.execute, proc.capture = q, execute, capture
proc.read_file, proc.write_file, proc.write_atomic, proc.exists = read_file, write_file, write_atomic, exists
proc.sleep, proc.trim, proc.alive, proc.getpid, proc.is_root = sleep, trim, alive, getpid, is_root
proc.random, proc.find_nginx, proc.module_lines = random, find_nginx, module_lines

return proc
