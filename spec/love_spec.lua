-- LÖVE host test: runs examples/love headless in real LÖVE 11.4 (LuaJIT).
local function sh(cmd)
  local ok, _, code = os.execute(cmd)
  if type(ok) == "number" then return ok == 0, ok end
  return ok == true, code
end

describe("LÖVE host #child", function()
  it("streams a reply inside love.update and exits 0", function()
    assert.is_true(sh("command -v love >/dev/null 2>&1"), "love is not installed (Debian package love)")
    local out = os.tmpname()
    local ok, code = sh("OAI_ROOT=\"$PWD\" SDL_AUDIODRIVER=dummy timeout 60 love examples/love > " .. out .. " 2>&1")
    local f = io.open(out)
    local log = f:read("*a")
    f:close()
    os.remove(out)
    print("\n  love: " .. log:gsub("\n", " | "))
    assert.is_true(ok, "love exited with " .. tostring(code) .. ": " .. log)
    assert.truthy(log:find("reply: w1 w2", 1, true), log)
  end)
end)
