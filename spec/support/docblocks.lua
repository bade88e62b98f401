-- The code blocks of README.md and docs/*.md, and how each is run in the
-- host it is written for (spec/docs_blocks_spec.lua).
--
-- A block's host comes from an HTML comment on the line before its fence,
-- `<!-- doc-test: HOST -->`, or from its language: ```lua is a plain
-- script, ```nginx a location run inside the file's nginx.conf block.
--   script      all script blocks of one file run in order as one program
--               (later blocks use what earlier ones defined)
--   nvim        headless Neovim, the checkout on the runtimepath
--   love        LÖVE, headless, the block as main.lua
--   nginx       a location block, inside the file's `nginx-conf` block
--   nginx-conf  the configuration the file's nginx blocks run in
--   nginx-http  directives for that configuration's http block (run with the
--               file's first location)
--   nginx-lua   Lua for a content_by_lua_block (a location of its own)
--   example     commands that start a long-running example by hand; what they
--               run is tested by the spec the comment names
--   ci          shell commands that .ci/run must run as written
--   output      text a program prints (not code)
local proc = require "oai.testing.proc"

local M = {}

M.FILES = { "README.md", "docs/API.md", "docs/helpers.md", "docs/json.md",
            "docs/openresty.md", "docs/testing.md" }

-- file -> array of {file, line, lang, host, code}
function M.blocks(file)
  local text = assert(proc.read_file(file), file)
  local out, lines = {}, {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  local i = 1
  while i <= #lines do
    local lang = lines[i]:match("^```(%S*)")
    if lang then
      local start, body = i, {}
      i = i + 1
      while i <= #lines and not lines[i]:match("^```%s*$") do
        body[#body + 1] = lines[i]
        i = i + 1
      end
      local j = start - 1
      while j > 0 and lines[j]:match("^%s*$") do j = j - 1 end
      local host, note
      if j > 0 then host, note = lines[j]:match("^<!%-%- doc%-test: ([%w%-]+)%s*(.-)%s*%-%->%s*$") end
      if not host then
        host = (lang == "lua" and "script") or (lang == "nginx" and "nginx") or nil
      end
      out[#out + 1] = { file = file, line = start, lang = lang, host = host, note = note,
                        code = table.concat(body, "\n") .. "\n" }
    end
    i = i + 1
  end
  return out
end

-- what the docs write for "your server" -> the local test server
function M.substitute(code, url, root)
  code = code:gsub("https://api%.openai%.com/v1", url)
  code = code:gsub("http://127%.0%.0%.1:8080/v1", url)
  code = code:gsub("/path/to/oai", root)
  return code
end

local lua_cmd = require("helpers").interpreter

local function lua_path(root)
  return root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;;"
end

-- a 1x1 PNG for the snippets that attach cat.png
local PNG = "\137PNG\r\n\26\n\0\0\0\rIHDR\0\0\0\1\0\0\0\1\8\6\0\0\0\31\21\196\137\0\0\0\rIDATx\218c\248\15\0\1\1\1\0\24\221\141\176\0\0\0\0IEND\174B`\130"

-- a scratch directory holding the files snippets refer to
function M.scratch()
  local dir = os.tmpname()
  os.remove(dir)
  assert(proc.execute("mkdir -p " .. proc.q(dir)))
  proc.write_file(dir .. "/cat.png", PNG)
  return dir
end

-- run shell `cmd` in `dir`: ok, output
local function run(dir, cmd)
  local out = proc.capture("cd " .. proc.q(dir) .. " && " .. cmd .. " 2>&1; echo \"rc=$?\"")
  local rc = tonumber(out:match("rc=(%d+)%s*$"))
  return rc == 0, out
end

-- The environment a user of a checkout has: LUA_PATH to lua/ (README), the
-- provider's variables (oai.new's documented defaults).  No LUA_CPATH.
local function env(root, url)
  return ("env -u LUA_CPATH -u LUA_CPATH_5_4 -u LUA_CPATH_5_3 -u LUA_CPATH_5_2 LUA_PATH=%s OPENAI_BASE_URL=%s OPENAI_API_KEY=sk-doc-test ")
    :format(proc.q(lua_path(root)), proc.q(url))
end

-- script blocks of one file, in order, as one program
function M.run_script(blocks, url, root)
  local dir, parts, map = M.scratch(), {}, {}
  local n = 1
  for _, b in ipairs(blocks) do
    map[#map + 1] = ("program line %d = %s:%d"):format(n, b.file, b.line + 1)
    local code = M.substitute(b.code, url, root)
    parts[#parts + 1] = code
    local _, nl = code:gsub("\n", "")
    n = n + nl
  end
  proc.write_file(dir .. "/doc.lua", table.concat(parts))
  local ok, out = run(dir, env(root, url) .. lua_cmd() .. " doc.lua")
  return ok, out .. "\n" .. table.concat(map, "\n")
end

-- headless Neovim with the checkout on the runtimepath (what plugin managers
-- do); waits until oai has no task left, fails on an error or vim.notify
-- at WARN or above
function M.run_nvim(block, url, root)
  local dir = M.scratch()
  proc.write_file(dir .. "/block.lua", M.substitute(block.code, url, root))
  proc.write_file(dir .. "/wrap.lua", [[
local notes = {}
vim.notify = function(msg, level) notes[#notes + 1] = { msg = tostring(msg), level = level or 0 } end
local function finish(code, msg)
  io.stdout:write(msg, "\n")
  vim.cmd("cquit " .. code)
end
local ok, err = pcall(dofile, "block.lua")
if not ok then return finish(3, "block raised: " .. tostring(err)) end
local loop = require "oai.loop"
local done = vim.wait(20000, function() return loop.stats().tasks == 0 end, 10)
vim.wait(50)
if not done then return finish(4, "tasks still running after 20 s") end
for _, n in ipairs(notes) do
  if n.level >= vim.log.levels.WARN or n.msg:find("oai:", 1, true) then
    return finish(5, "notified: " .. n.msg)
  end
end
local text = {}
for _, b in ipairs(vim.api.nvim_list_bufs()) do
  text[#text + 1] = table.concat(vim.api.nvim_buf_get_lines(b, 0, -1, false), "\n")
end
finish(0, "ok\n" .. table.concat(text, "\n"))
]])
  return run(dir, ("env -u LUA_PATH -u LUA_CPATH OPENAI_BASE_URL=%s OPENAI_API_KEY=sk-doc-test timeout 60 nvim --headless -u NONE -i NONE -n --cmd %s -c 'luafile wrap.lua' </dev/null")
    :format(proc.q(url), proc.q("set rtp^=" .. root)))
end

-- LÖVE: the block is main.lua of a headless game; it ends once oai has no
-- task left (or fails after 20 s); errors exit non-zero
function M.run_love(block, url, root)
  local dir = M.scratch()
  proc.write_file(dir .. "/conf.lua", [[
function love.conf(t)
  t.window = false
  for _, m in ipairs({ "window", "graphics", "audio", "sound", "joystick", "physics", "video" }) do t.modules[m] = false end
end
]])
  proc.write_file(dir .. "/main.lua", M.substitute(block.code, url, root) .. [[

do -- doc-test harness: quit when oai has nothing left to do
  local update, t = love.update, 0
  function love.update(dt)
    if update then update(dt) end
    t = t + dt
    local tasks = require("oai.loop").stats().tasks
    if (tasks == 0 and t > 0.2) or t > 20 then
      print("caption: " .. tostring(rawget(_G, "caption")))
      love.event.quit(tasks == 0 and 0 or 4)
    end
  end
  love.errorhandler = function(msg) io.stderr:write("error: ", tostring(msg), "\n") os.exit(3) end
end
]])
  return run(dir, env(root, url) .. "SDL_AUDIODRIVER=dummy timeout 60 love .")
end

-- nginx: `conf` (the file's nginx.conf block, as documented) with a server
-- holding `location`; returns ok, output (the response and error log)
function M.run_nginx(conf, location, url, root, http_extra)
  local dir = M.scratch()
  assert(proc.execute("mkdir -p " .. proc.q(dir .. "/logs") .. " " .. proc.q(dir .. "/tmp")))
  local nginx = proc.find_nginx({})
  proc.write_file(dir .. "/launch.sh", proc.LAUNCHER)
  local path = location.code:match("location%s*=?%s*(/[%w_/%-]*)") or "/"
  local c, body, log
  -- a random port; another one when something else holds it (nginx then
  -- logs "Address already in use" and is stopped)
  for _ = 1, 10 do
    local port = proc.random(20000, 40000)
    c = M.substitute(conf.code, url, root)
    local http_end = assert(c:find("}%s*$"), "the nginx-conf block must end with the http block")
    local server = ("  server {\n    listen 127.0.0.1:%d;\n%s  }\n"):format(port, M.substitute(location.code, url, root))
    c = "daemon off;\nworker_processes 2;\npid " .. dir .. "/nginx.pid;\nerror_log " .. dir .. "/error.log info;\n"
      .. c:sub(1, http_end - 1)
      .. "  access_log off;\n  client_body_temp_path " .. dir .. "/tmp;\n"
      .. (http_extra and M.substitute(http_extra.code, url, root) or "") .. server .. "}\n"
      .. "events { worker_connections 256; }\n"
    proc.write_file(dir .. "/nginx.conf", c)
    os.remove(dir .. "/error.log")
    os.remove(dir .. "/nginx.pid")
    assert(proc.execute(("OPENAI_BASE_URL=%s OPENAI_API_KEY=sk-doc-test sh %s %s %d %s </dev/null >/dev/null 2>&1 &")
      :format(proc.q(url), proc.q(dir .. "/launch.sh"), proc.q(dir), proc.getpid(), proc.q(nginx))))
    local busy = false
    for _ = 1, 50 do
      body = proc.capture(("curl -sS -N -m 20 -w '\\nstatus=%%{http_code}' 'http://127.0.0.1:%d%s?q=hello' 2>&1"):format(port, path))
      if not body:find("Connection refused", 1, true) and not body:find("Couldn't connect", 1, true) then break end
      if (proc.read_file(dir .. "/error.log") or ""):find("Address already in use", 1, true) then busy = true break end
      proc.sleep(0.1)
    end
    log = proc.read_file(dir .. "/error.log") or ""
    local launcher = proc.read_file(dir .. "/launcher.pid")
    if launcher then proc.execute("kill -QUIT " .. proc.trim(launcher) .. " 2>/dev/null") end
    if not busy then break end
    proc.sleep(0.6)
  end
  local ok = body:find("status=200", 1, true) ~= nil and not log:find("%[error%]") and not log:find("%[alert%]")
    and not log:find("%[emerg%]")
  return ok, body .. "\n--- error.log\n" .. log .. "\n--- nginx.conf\n" .. c
end

return M
