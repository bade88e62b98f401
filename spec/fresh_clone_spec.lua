-- A fresh clone, set up exactly as the README tells users: `make`, then
-- nothing but the Lua path (LUA_PATH to the clone's lua/) for scripts on
-- every runtime, nothing but the runtimepath for Neovim, nothing but
-- lua_package_path for nginx.  No LUA_CPATH, no preload: the core finds
-- itself (lua/oai/native.lua).  The clone is of HEAD (commit first).
local server = require "server"
local proc = require "oai.testing.proc"

local q = proc.q

local function run(cmd)
  local out = proc.capture("{ " .. cmd .. "; } 2>&1; echo \"rc=$?\"")
  return tonumber(out:match("rc=(%d+)%s*$")) == 0, out
end

local SCRIPT = [[
local oai = require "oai"
local client = oai.new()   -- $OPENAI_BASE_URL, $OPENAI_API_KEY
local res = assert(client:chat { model = "m", messages = { oai.user "plain" } })
assert(res.choices[1].message.content == "Hello! You said: plain", res.choices[1].message.content)
local s = assert(client:stream { model = "m", messages = { oai.user "streamed" } })
local parts = {}
for text in s:text() do parts[#parts + 1] = text end
assert(assert(s:result()).choices[1].message.content == "Hello! You said: streamed")
assert(table.concat(parts) == "Hello! You said: streamed")
-- the README's idiom with a failing server: a readable string on every runtime
local down = oai.new { base_url = "http://127.0.0.1:1/v1", max_retries = 0 }
local ok, e = pcall(function() return assert(down:stream { model = "m", messages = { oai.user "x" } }) end)
assert(not ok and type(e) == "string" and e:find("oai: network COULDNT_CONNECT", 1, true), tostring(e))
local _, msg, err = down:chat { model = "m", messages = { oai.user "x" } }
assert(msg == tostring(err) and err.kind == "network", msg)
print("ok " .. (type(jit) == "table" and "luajit" or _VERSION))
]]

local NVIM = [[
local function finish(code, msg) io.stdout:write(msg, "\n") vim.cmd("cquit " .. code) end
local ok, err = pcall(function()
  require("oai.uv").attach(vim.uv or vim.loop)
  local client = require("oai").new()
  local buf = vim.api.nvim_create_buf(true, true)
  local done, failure = false, nil
  client:stream({ model = "m", messages = { { role = "user", content = "from neovim" } } }, {
    on_text = function(t)
      local last = vim.api.nvim_buf_get_lines(buf, -2, -1, false)[1] or ""
      vim.api.nvim_buf_set_lines(buf, -2, -1, false, vim.split(last .. t, "\n"))
    end,
    on_done = function(_, e) done = true; failure = e end,
  })
  assert(vim.wait(20000, function() return done end, 10), "the stream did not end")
  assert(not failure, tostring(failure))
  local text = table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n")
  assert(text == "Hello! You said: from neovim", text)
end)
if ok then finish(0, "ok nvim") else finish(1, tostring(err)) end
]]

-- the spec starts every runtime itself: it runs once, under Lua 5.4's busted
local describe = _VERSION == "Lua 5.4" and rawget(_G, "jit") == nil and describe
  or function(name) pending(name .. " (runs under Lua 5.4's busted)") end

describe("a fresh clone #child", function()
  local srv, clone
  lazy_setup(function()
    srv = server.start {}
    clone = os.tmpname()
    os.remove(clone)
    local ok, out = run(("git clone -q . %s && cd %s && env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS make >/dev/null"):format(q(clone), q(clone)))
    assert(ok, out)
  end)
  lazy_teardown(function()
    if srv then srv:stop() end
    if clone then proc.execute("rm -rf " .. q(clone)) end
  end)

  local function env()
    return ("env -u LUA_CPATH -u LUA_CPATH_5_2 -u LUA_CPATH_5_3 -u LUA_CPATH_5_4 -u LUA_INIT LUA_PATH=%s OPENAI_BASE_URL=%s OPENAI_API_KEY=sk-fresh ")
      :format(q(clone .. "/lua/?.lua;" .. clone .. "/lua/?/init.lua;;"), q(srv.url))
  end

  for _, lua in ipairs({ "lua5.1", "lua5.2", "lua5.3", "lua5.4", "luajit" }) do
    it("runs a script on " .. lua .. " with only LUA_PATH set", function()
      local f = os.tmpname()
      proc.write_file(f, SCRIPT)
      local ok, out = run("cd /tmp && " .. env() .. lua .. " " .. q(f))
      os.remove(f)
      assert.is_true(ok, out)
    end)
  end

  it("streams into a Neovim buffer via oai.uv with only the runtimepath set", function()
    local f = os.tmpname()
    proc.write_file(f, NVIM)
    local ok, out = run(("cd /tmp && env -u LUA_PATH -u LUA_CPATH OPENAI_BASE_URL=%s OPENAI_API_KEY=sk-fresh timeout 60 nvim --headless -u NONE -i NONE -n --cmd %s -c %s </dev/null")
      :format(q(srv.url), q("set rtp^=" .. clone), q("luafile " .. f)))
    os.remove(f)
    assert.is_true(ok, out)
  end)

  it("raises an error naming the missing core and the command that builds it", function()
    local ok, out = run(("cd /tmp && mv %s/build %s/build.off && %s lua5.4 -e 'require \"oai\"'; rc=$?; mv %s/build.off %s/build; exit $rc")
      :format(q(clone), q(clone), env(), q(clone), q(clone)))
    assert.is_false(ok)
    assert.truthy(out:find("build/5.4/oai/core.so", 1, true), out)
    assert.truthy(out:find("run `make` in", 1, true), out)
  end)
end)
