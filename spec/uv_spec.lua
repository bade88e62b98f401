-- oai.uv with luv: transfers driven by libuv poll/timer handles.
local ok_luv, uv = pcall(require, "luv")
local oai = require "oai"
local server = require "server"

local function user(t) return { role = "user", content = t } end

describe("oai.uv (luv)", function()
  if not ok_luv then
    it("needs luv (Debian lua-luv)", function() error("luv is not installed for " .. _VERSION) end)
    return
  end
  local srv, client, driver

  lazy_setup(function()
    srv = server.start {}
    client = oai.new { base_url = srv.url, api_key = "sk-uv" }
    driver = require("oai.uv").attach(uv)
  end)
  lazy_teardown(function()
    if driver then driver.detach() end
    -- let libuv finish closing the handles before the Lua state goes away
    uv.run("nowait")
    if srv then srv:stop() end
  end)

  local function run_until(cond, secs)
    local deadline = uv.now() + (secs or 10) * 1000
    while not cond() do
      uv.run("once")
      uv.update_time()
      if uv.now() > deadline then error("timed out") end
    end
  end

  it("streams from tasks resumed by uv callbacks", function()
    local out, done = {}, 0
    for i = 1, 10 do
      oai.spawn(function()
        local s = assert(client:stream({ model = "m", messages = { user("x") } },
          { headers = { ["x-test-chunks"] = "5", ["x-test-chunk-delay-ms"] = "10" } }))
        out[i] = assert(s:result()).choices[1].message.content
        done = done + 1
      end)
    end
    run_until(function() return done == 10 end)
    for i = 1, 10 do assert.equal("w1 w2 w3 w4 w5", out[i]) end
  end)

  it("fires stream callbacks", function()
    local text, res = {}, nil
    client:stream({ model = "reasoner", messages = { user("cb") } }, {
      on_text = function(t) text[#text + 1] = t end,
      on_done = function(r, err) res = r or err end,
    })
    run_until(function() return res ~= nil end)
    assert.equal("Hello! You said: cb", table.concat(text))
    assert.equal("Hello! You said: cb", res.choices[1].message.content)
  end)

  it("keeps nothing armed when idle (no polling timer)", function()
    local done = false
    oai.spawn(function() assert(client:chat { model = "m", messages = { user("x") } }); done = true end)
    run_until(function() return done end)
    -- let the last callbacks settle
    for _ = 1, 5 do uv.run("nowait") end
    local h = driver.handles()
    assert.is_false(h.task_timer)
    -- libcurl keeps the idle connection (a poll handle may watch it for a
    -- close) but needs no periodic timer
    assert.is_false(h.curl_timer)
  end)

  it("serves a blocking call outside any task", function()
    local res = assert(client:chat { model = "m", messages = { user("plain") } })
    assert.equal("Hello! You said: plain", res.choices[1].message.content)
  end)

  it("names a connection reset mid-stream as the plain loop does (RECV_ERROR, peer reset)", function()
    local raw = require "raw_server"
    local rs = raw.start { { send = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
      .. 'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n' }, { sleep = 0.3 }, { reset = true } }
    local c = oai.new { base_url = rs.url, api_key = "sk-uv", max_retries = 0 }
    local err
    oai.spawn(function()
      local s = assert(c:stream { model = "m", messages = { user("x") } })
      local _
      _, _, err = s:result()
      err = err or false
    end)
    local ok, e = pcall(run_until, function() return err ~= nil end)
    rs.stop()
    assert(ok, e)
    assert.is_table(err)
    assert.equal("network", err.kind)
    assert.equal("RECV_ERROR", err.name, tostring(err))
    assert.truthy(err.message:find("reset", 1, true), err.message)
    assert.equal("hi", err.partial.choices[1].message.content)
  end)

  it("counts bytes of the response head for idle_timeout (socket mode)", function()
    local raw = require "raw_server"
    local rs = raw.start { { send = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nX-Slow: " },
      { drip = "abcdef", every = 0.5 },
      { send = '\r\n\r\ndata: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n' } }
    local c = oai.new { base_url = rs.url, api_key = "sk-uv", max_retries = 0, idle_timeout = 2 }
    local res, err
    oai.spawn(function()
      local s = assert(c:stream { model = "m", messages = { user("x") } })
      res, _, err = s:result()
      res = res or false
    end)
    local ok, e = pcall(run_until, function() return res ~= nil end)
    rs.stop()
    assert(ok, e)
    assert.is_nil(err, tostring(err))
    assert.equal("hi", res.choices[1].message.content)
  end)

  it("sleeps in tasks on uv timers", function()
    local t0 = uv.now()
    local woke
    oai.spawn(function() oai.sleep(0.05); woke = uv.now() end)
    run_until(function() return woke ~= nil end)
    assert.truthy(woke - t0 >= 45, woke - t0)
  end)
end)
