-- Small helpers shared by the specs.
local oai = require "oai"
local luassert = require "luassert"

local helpers = {}

-- The public API reports a runtime failure as nil, message, err (message
-- = tostring(err)): checks that, and gives wrappers res, err, ... back
-- (parse's and tools:run's extra results follow).
function helpers.two(res, msg, err, ...)
  if res == nil and err ~= nil then
    luassert.equal(tostring(err), msg, "the second result is tostring(err)")
  end
  return res, err, ...
end

function helpers.user(text) return { role = "user", content = text } end

-- it() four times: the non-streamed call (labelled `plain`, e.g. "chat" or
-- "send") and the streamed one, each blocking and inside a task.  `it` is
-- busted's, from the spec file's environment.
function helpers.ways(it, name, body, plain)
  for _, stream in ipairs({ false, true }) do
    for _, in_task in ipairs({ false, true }) do
      local label = ("%s (%s, %s)"):format(name, stream and "stream" or (plain or "chat"),
        in_task and "in a task" or "blocking")
      it(label, function()
        if in_task then
          local ran = false
          oai.spawn(function() body(stream); ran = true end)
          oai.run()
          luassert.is_true(ran)
        else
          body(stream)
        end
      end)
    end
  end
end

-- "user,assistant,tool" for a message list
function helpers.roles(messages)
  local out = {}
  for i, m in ipairs(messages) do out[i] = m.role end
  return table.concat(out, ",")
end

-- the module path for Lua programs a spec starts: `make asan` gives them
-- the plain build (they run without the sanitizer runtime)
function helpers.child_cpath()
  local child = os.getenv("OAI_CHILD_BUILD")
  if child and child ~= "" then return child .. "/?.so;" .. package.cpath end
  return package.cpath
end

-- run examples/<name> with the interpreter and module paths busted runs
-- with, against the bundled local server: its output, ending in "rc=N\n"
-- the interpreter busted runs under, with its flags: programs a spec
-- starts run on the same runtime
function helpers.interpreter()
  local lua = arg and arg[-1] or "lua"
  local i = -2
  while arg and arg[i] do lua = arg[i] .. " " .. lua; i = i - 1 end
  return lua
end

function helpers.run_example(name)
  local lua = helpers.interpreter()
  local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
  local cmd = ("env -u OPENAI_BASE_URL -u OPENAI_MODEL LUA_PATH=%s LUA_CPATH=%s %s examples/%s 2>&1; echo rc=$?")
    :format(q(package.path), q(helpers.child_cpath()), lua, name)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

-- os.execute -> ok, exit code (5.1 returns a number)
function helpers.sh(cmd)
  local ok, _, code = os.execute(cmd)
  if type(ok) == "number" then return ok == 0, ok end
  return ok == true, code
end

-- run `script` (under spec/hosts/) in headless Neovim against `url`:
-- ok, exit code, the report the script wrote
function helpers.nvim(script, url)
  local result = os.tmpname()
  local root = io.popen("pwd"):read("*l")
  local ok, code = helpers.sh(("OAI_ROOT=%q OAI_URL=%q OAI_RESULT=%q timeout 60 nvim --headless -u NONE -i NONE -n -c 'luafile %s/spec/hosts/%s' >/dev/null 2>&1")
    :format(root, url, result, root, script))
  local f = io.open(result, "r")
  local report = f and f:read("*a") or "(no report)"
  if f then f:close() end
  os.remove(result)
  return ok, code, report
end

return helpers
