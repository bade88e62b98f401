-- examples/chat.lua driven through a pseudo-terminal (util-linux `script`):
-- streaming, /commands, multi-line input, and Ctrl-C cancelling the reply
-- in progress without ending the program.  The command is exec'd: a `sh -c`
-- left as parent would itself die of the SIGINT the terminal sends.
describe("chat CLI #child", function()
  it("streams, runs commands and survives Ctrl-C", function()
    local lua = (_VERSION == "Lua 5.1" and (jit and "luajit" or "lua5.1")) or ("lua" .. _VERSION:match("%d+%.%d+"))
    local build = os.getenv("OAI_CHILD_BUILD") or os.getenv("OAI_BUILD") or ("build/" .. (jit and "luajit" or _VERSION:match("%d+%.%d+")))
    local save = os.tmpname()
    local out = os.tmpname()
    local long = {}
    for i = 1, 150 do long[i] = "word" .. i end
    local input = table.concat({
      "sleep 1.5; printf 'hello there\\n'; sleep 1.5",
      "printf '%s\\n' '" .. table.concat(long, " ") .. "'; sleep 1.2",
      "printf '\\003'; sleep 1",
      "printf '/save " .. save .. "\\n'; sleep 0.3",
      "printf '/clear\\n/load " .. save .. "\\n/model test-model\\n/system Be terse.\\n'; sleep 0.3",
      "printf 'multi \\\\\\nline\\n'; sleep 1.5",
      "printf '/quit\\n'; sleep 0.5",
    }, "; ")
    local cmd = ("(%s) | env -u OPENAI_BASE_URL -u OPENAI_API_KEY SHELL=/bin/sh TERM=dumb LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='%s/?.so;;' timeout 40 script -qfec 'exec %s examples/chat.lua' /dev/null > %s 2>&1")
      :format(input, build, lua, out)
    local ok, _, code = os.execute(cmd)
    if type(ok) == "number" then code = ok; ok = ok == 0 end
    local f = io.open(out, "rb")
    local log = f:read("*a"):gsub("\r", "")
    f:close()
    os.remove(out)
    os.remove(save)
    assert.is_true(ok == true or code == 0, "exit " .. tostring(code) .. "\n" .. log .. "\n(exit " .. tostring(code) .. ")")
    assert.truthy(log:find("Hello! You said: hello there", 1, true), log)
    assert.truthy(log:find("tokens/s", 1, true), log)
    assert.truthy(log:find("[canceled]", 1, true), log)
    -- the input line is echoed by the terminal; the reply must not be complete
    assert.falsy(log:find("You said: word1 word2", 1, true), "the long reply was not cut short:\n" .. log)
    assert.truthy(log:find("saved 2 messages", 1, true), log)
    assert.truthy(log:find("loaded 2 messages", 1, true), log)
    assert.truthy(log:find("model: test-model", 1, true), log)
    assert.truthy(log:find("system: Be terse.", 1, true), log)
    assert.truthy(log:find("Hello! You said: multi \nline", 1, true), log)
  end)
end)
