-- Streaming against the local server: the API, accumulation, provider quirks.
local oai = require "oai"
local server = require "server"

local null = oai.null
local encode = oai.json.encode

local function user(text) return { role = "user", content = text } end

-- a chat.completion.chunk with the usual envelope
local function chunk(choices, extra)
  local c = { id = "chatcmpl-q", object = "chat.completion.chunk", created = 1700000001,
              model = "quirk-model", choices = choices or oai.array() }
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end
local function delta(d, finish, index)
  return { index = index or 0, delta = d, finish_reason = finish or null }
end

-- script steps from a list of raw event strings: as one burst, or with a
-- flush and a pause after each
local function steps(events, paced, status_step)
  local s = { status_step or { status = 200, headers = { ["content-type"] = "text/event-stream" } } }
  if not paced then
    s[#s + 1] = { send = table.concat(events) }
  else
    for _, e in ipairs(events) do
      s[#s + 1] = { send = e }
      s[#s + 1] = { flush = true }
      s[#s + 1] = { sleep_ms = 5 }
    end
  end
  return s
end

local function data(c) return "data: " .. (type(c) == "string" and c or encode(c)) .. "\n\n" end

describe("streaming", function()
  local srv, client

  lazy_setup(function()
    srv = server.start {}
    client = oai.new { base_url = srv.url, api_key = "sk-stream-test", max_retries = 1 }
  end)
  lazy_teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:clear() end)

  local nscript = 0
  -- run `fn(stream)` on a script played both as one burst and paced
  local function both(events, fn, status_step)
    for _, paced in ipairs({ false, true }) do
      nscript = nscript + 1
      local name = "s" .. nscript
      srv:script(name, steps(events, paced, status_step))
      local s, _, err = client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-script"] = name }, grace = 0.3 })
      fn(s, err, paced)
    end
  end

  describe("API", function()
    it("sends stream = true and yields content deltas from text()", function()
      local s = assert(client:stream { model = "test-model", messages = { user("one two three") } })
      local parts = {}
      for t in s:text() do parts[#parts + 1] = t end
      assert.equal("Hello! You said: one two three", table.concat(parts))
      assert.truthy(#parts > 3)
      local body = oai.json.decode(srv:last_request().body)
      assert.is_true(body.stream)
      assert.is_nil(body.stream_options)
      assert.equal("text/event-stream", srv:last_request().headers.accept)
    end)

    it("has a status: streaming until the end was read, then done or failed", function()
      local s = assert(client:stream { model = "test-model", messages = { user("st") } })
      assert.equal("streaming", s:status())
      assert.equal("oai.stream (streaming)", tostring(s))
      assert.truthy(s:result())
      assert.equal("done", s:status())
      assert.equal("oai.stream (done)", tostring(s))
      s = assert(client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-drop"] = "mid-stream" } }))
      s:result()
      assert.equal("failed", s:status())
    end)

    it("accumulates the same completion as the non-streamed call", function()
      local plain = assert(client:chat { model = "test-model", messages = { user("same") } })
      local s = assert(client:stream { model = "test-model", messages = { user("same") } })
      local res = assert(s:result())
      assert.equal("chat.completion", res.object)
      assert.equal(plain.model, res.model)
      assert.equal(plain.created, res.created)
      assert.equal(plain.system_fingerprint, res.system_fingerprint)
      assert.same(plain.choices[1].message.content, res.choices[1].message.content)
      assert.equal("assistant", res.choices[1].message.role)
      assert.equal("stop", res.choices[1].finish_reason)
      assert.equal(0, res.choices[1].index)
      if math.type then assert.equal("integer", math.type(res.created)) end
    end)

    it("gives typed events and usage when stream_usage is on", function()
      local s = assert(client:stream({ model = "test-model", messages = { user("a b") } },
        { stream_usage = true }))
      local types, text = {}, {}
      for ev in s:events() do
        types[ev.type] = (types[ev.type] or 0) + 1
        if ev.type == "content" then
          assert.equal(0, ev.index)
          text[#text + 1] = ev.text
        elseif ev.type == "finish" then
          assert.equal("stop", ev.reason)
        elseif ev.type == "usage" then
          assert.equal(ev.usage.prompt_tokens + ev.usage.completion_tokens, ev.usage.total_tokens)
        end
      end
      assert.equal(1, types.finish)
      assert.equal(1, types.usage)
      assert.equal("Hello! You said: a b", table.concat(text))
      local res = assert(s:result())
      assert.truthy(res.usage.total_tokens > 0)
      assert.same({ include_usage = true }, oai.json.decode(srv:last_request().body).stream_options)
    end)

    it("hands out each decoded chunk from chunks()", function()
      local s = assert(client:stream({ model = "test-model", messages = { user("x") } },
        { headers = { ["x-test-chunks"] = "4" } }))
      local n, text = 0, {}
      for c in s:chunks() do
        n = n + 1
        assert.equal("chat.completion.chunk", c.object)
        local d = c.choices[1] and c.choices[1].delta
        if d and type(d.content) == "string" then text[#text + 1] = d.content end
      end
      assert.equal(6, n)   -- role, 4 words, finish
      assert.equal("w1 w2 w3 w4", table.concat(text))
      assert.equal("w1 w2 w3 w4", assert(s:result()).choices[1].message.content)
    end)

    it("streams reasoning_content under the provider's name", function()
      local s = assert(client:stream { model = "reasoner", messages = { user("why") } })
      local reasoning = {}
      for ev in s:events() do
        if ev.type == "reasoning" then reasoning[#reasoning + 1] = ev.text end
      end
      local res = assert(s:result())
      assert.equal("Thinking about: why", table.concat(reasoning))
      assert.equal("Thinking about: why", res.choices[1].message.reasoning_content)
      assert.equal("Hello! You said: why", res.choices[1].message.content)
    end)

    it("streams tool calls", function()
      local tools = { { type = "function", ["function"] = { name = "get_weather", parameters = { type = "object" } } } }
      local s = assert(client:stream { model = "tools", messages = { user("weather in Paris") }, tools = tools })
      local frags = {}
      for ev in s:events() do
        if ev.type == "tool_call" then
          assert.equal(0, ev.call_index)
          assert.equal("get_weather", ev.name)
          frags[#frags + 1] = ev.arguments
        end
      end
      local res = assert(s:result())
      local call = res.choices[1].message.tool_calls[1]
      assert.equal("function", call.type)
      assert.equal("get_weather", call["function"].name)
      assert.equal(table.concat(frags), call["function"].arguments)
      assert.same({ query = "weather in Paris" }, oai.json.decode(call["function"].arguments))
      assert.equal("tool_calls", res.choices[1].finish_reason)
      assert.equal(null, res.choices[1].message.content)
      assert.truthy(#frags > 2)
    end)

    it("keeps n > 1 choices apart", function()
      local s = assert(client:stream { model = "test-model", n = 2, messages = { user("two") } })
      local res = assert(s:result())
      assert.equal(2, #res.choices)
      assert.equal("Hello! You said: two", res.choices[1].message.content)
      assert.equal("[1] Hello! You said: two", res.choices[2].message.content)
      assert.equal(1, res.choices[2].index)
    end)

    it("returns HTTP errors from client:stream after the retries", function()
      local s, _, err = client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-status"] = "429", ["x-test-retry-after-ms"] = "5" } })
      assert.is_nil(s)
      assert.equal("api", err.kind)
      assert.equal(429, err.status)
      assert.equal(2, err.attempts)
    end)

    it("drives callbacks from a task and returns at once", function()
      local text, done_res, done_err, reasoning = {}, nil, nil, {}
      local s = client:stream({ model = "reasoner", messages = { user("cb") } }, {
        on_text = function(t) text[#text + 1] = t end,
        on_reasoning = function(t) reasoning[#reasoning + 1] = t end,
        on_done = function(res, err) done_res, done_err = res, err end,
      })
      assert.truthy(s)
      assert.is_nil(done_res)
      oai.run()
      assert.is_nil(done_err)
      assert.equal("Hello! You said: cb", table.concat(text))
      assert.equal("Thinking about: cb", table.concat(reasoning))
      assert.equal("Hello! You said: cb", done_res.choices[1].message.content)
    end)

    it("reports a failed request to on_done", function()
      local got
      client:stream({ model = "m", messages = { user("x") } }, {
        headers = { ["x-test-status"] = "401" },
        on_text = function() end,
        on_done = function(res, err) got = { res, err } end,
      })
      oai.run()
      assert.is_nil(got[1])
      assert.equal(401, got[2].status)
    end)

    it("runs many streams at once in tasks", function()
      local out = {}
      for i = 1, 20 do
        oai.spawn(function()
          local s = assert(client:stream({ model = "m", messages = { user("x") } },
            { headers = { ["x-test-chunks"] = "10", ["x-test-chunk-delay-ms"] = "20" } }))
          local parts = {}
          -- a while loop: Lua 5.1 cannot yield inside a generic for
          local next_text = s:text()
          while true do
            local t = next_text()
            if not t then break end
            parts[#parts + 1] = t
          end
          out[i] = table.concat(parts)
        end)
      end
      local t0 = oai.core.monotime()
      oai.run()
      for i = 1, 20 do assert.equal("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10", out[i]) end
      assert.truthy(oai.core.monotime() - t0 < 2)
    end)

    it("opens concurrent streams at once over cleartext HTTP/1.1", function()
      -- none waits for another's connection to become free (libcurl's
      -- PIPEWAIT would hold them until the first stream had ended)
      local opened, first_end = {}, nil
      local loop = require "oai.loop"
      loop.set_multi_options(loop.multi_options)   -- a new multi: no idle connections to reuse
      for i = 1, 5 do
        oai.spawn(function()
          local s = assert(client:stream({ model = "m", messages = { user("x") } },
            { headers = { ["x-test-chunks"] = "6", ["x-test-chunk-delay-ms"] = "100" } }))
          opened[i] = oai.core.monotime()
          assert.equal("w1 w2 w3 w4 w5 w6", (s:result()).choices[1].message.content)
          first_end = first_end or oai.core.monotime()
        end)
      end
      oai.run()
      for i = 1, 5 do assert.truthy(opened[i] < first_end, "stream " .. i .. " opened after another had ended") end
    end)

    it("delivers each flushed event without waiting for more bytes", function()
      local s = assert(client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-chunks"] = "3", ["x-test-chunk-delay-ms"] = "400" } }))
      local t0 = oai.core.monotime()
      local first
      for _ in s:text() do first = first or (oai.core.monotime() - t0) end
      -- the first word is sent at once, the rest 400 ms apart
      assert.truthy(first < 0.2, first)
    end)
  end)

  describe("cancel", function()
    it("cancels with stream:cancel() and keeps the partial result", function()
      local s = assert(client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-chunks"] = "50", ["x-test-chunk-delay-ms"] = "50" } }))
      local n = 0
      for _ in s:text() do
        n = n + 1
        if n == 2 then s:cancel() end
      end
      local res, _, err = s:result()
      assert.is_nil(res)
      assert.equal("canceled", err.kind)
      assert.equal("w1 w2 ", err.partial.choices[1].message.content)
    end)

    it("cancels a callback stream from outside, waking its task", function()
      local got
      local s = client:stream({ model = "m", messages = { user("x") } }, {
        headers = { ["x-test-chunks"] = "100", ["x-test-chunk-delay-ms"] = "50" },
        on_text = function() end,
        on_done = function(res, err) got = { res, err } end,
      })
      oai.spawn(function() oai.sleep(0.2); s:cancel() end)
      local t0 = oai.core.monotime()
      oai.run()
      assert.truthy(oai.core.monotime() - t0 < 1.5)
      assert.is_nil(got[1])
      assert.equal("canceled", got[2].kind)
    end)

    if _VERSION == "Lua 5.4" then
      it("cancels when a for loop is left with break (Lua 5.4)", function()
        local s = assert(client:stream({ model = "m", messages = { user("x") } },
          { headers = { ["x-test-chunks"] = "50", ["x-test-chunk-delay-ms"] = "50" } }))
        for _ in s:text() do break end
        local _, _, err = s:result()
        assert.equal("canceled", err.kind)
      end)
    end

    it("cancels an unreferenced stream when it is collected", function()
      do
        local s = assert(client:stream({ model = "m", messages = { user("x") } },
          { headers = { ["x-test-chunks"] = "100", ["x-test-chunk-delay-ms"] = "50" } }))
        s:text()()
      end
      collectgarbage(); collectgarbage()
      -- the transfer is gone from the loop
      assert.equal(0, require("oai.loop").stats().transfers)
      -- and the client still works
      assert.truthy(client:chat { model = "m", messages = { user("after") } })
    end)
  end)

  describe("cancel ends what was delivered", function()
    -- a burst: hundreds of events decoded in one read, still buffered at cancel()
    local burst = {}
    for i = 1, 300 do burst[i] = data(chunk({ delta({ content = "p" .. i .. " " }) })) end
    burst[#burst + 1] = data(chunk({ delta({}, "stop") }))
    burst[#burst + 1] = "data: [DONE]\n\n"

    local function content(c) return c.choices[1] and c.choices[1].message.content end

    it("text() ends at cancel(); err.partial and partial() hold exactly what was delivered", function()
      both(burst, function(s)
        local got = {}
        for t in s:text() do
          got[#got + 1] = t
          if #got == 1 then s:cancel() end
        end
        assert.same({ "p1 " }, got)
        assert.equal("canceled", s:status())
        assert.equal("oai.stream (canceled)", tostring(s))
        local res, _, err = s:result()
        assert.is_nil(res)
        assert.equal("canceled", err.kind)
        assert.equal("p1 ", content(err.partial))
        assert.equal("p1 ", content(s:partial()))
      end)
    end)

    it("events() and chunks() end at cancel() too", function()
      both(burst, function(s)
        local got = {}
        for ev in s:events() do
          if ev.type == "content" then got[#got + 1] = ev.text end
          if #got == 2 then s:cancel() end
        end
        assert.same({ "p1 ", "p2 " }, got)
        assert.equal("p1 p2 ", content(select(3, s:result()).partial))
      end)
      both(burst, function(s)
        local n = 0
        for _ in s:chunks() do
          n = n + 1
          if n == 3 then s:cancel() end
        end
        assert.equal(3, n)
        local _, _, err = s:result()
        assert.equal("canceled", err.kind)
        assert.equal(content(err.partial), content(s:partial()))
      end)
    end)
  end)

  describe("the handle of a callback stream", function()
    local req = { model = "m", messages = { user("one two") } }
    local function content(c) return c and c.choices[1] and c.choices[1].message.content end

    it("has a status, a tostring, partial() and result() that follow the stream", function()
      local seen = {}
      local h
      h = client:stream(req, {
        headers = { ["x-test-chunks"] = "4", ["x-test-chunk-delay-ms"] = "10" },
        on_text = function(t)
          seen[#seen + 1] = { h:status(), tostring(h), content(h:partial()) }
        end,
      })
      assert.equal("connecting", h:status())
      assert.equal("oai.stream (connecting)", tostring(h))
      assert.equal(null, content(h:partial()) or null)
      oai.run()
      assert.equal(4, #seen)
      assert.same({ "streaming", "oai.stream (streaming)", "w1 " }, seen[1])
      assert.same({ "streaming", "oai.stream (streaming)", "w1 w2 w3 w4" }, seen[4])
      assert.equal("done", h:status())
      assert.equal("oai.stream (done)", tostring(h))
      assert.equal("w1 w2 w3 w4", content(h:partial()))
      assert.equal("w1 w2 w3 w4", content(assert(h:result())))
    end)

    it("raises a clear error from text(), events() and chunks(), and leaves the stream alone", function()
      local h = client:stream(req, { on_text = function() end })
      local msg = "callbacks already consume this stream; use on_text or call client:stream without callbacks"
      for _, m in ipairs({ "text", "events", "chunks" }) do
        assert.has_error(function() h[m](h) end, msg)
      end
      oai.run()
      assert.equal("done", h:status())
      assert.equal("Hello! You said: one two", content(h:result()))
    end)

    it("reports failed and canceled", function()
      local f = client:stream(req, { headers = { ["x-test-status"] = "401" }, on_text = function() end })
      local c = client:stream(req, { headers = { ["x-test-chunks"] = "50", ["x-test-chunk-delay-ms"] = "20" },
        on_text = function() end })
      oai.spawn(function() oai.sleep(0.15); c:cancel() end)
      oai.run()
      assert.equal("failed", f:status())
      assert.equal("oai.stream (failed)", tostring(f))
      assert.equal(401, select(3, f:result()).status)
      assert.equal("canceled", c:status())
      assert.equal("oai.stream (canceled)", tostring(c))
      local _, _, err = c:result()
      assert.equal("canceled", err.kind)
      assert.truthy(#content(c:partial()) > 0)
      assert.equal(content(err.partial), content(c:partial()))
    end)

    it("is canceled when cancel() comes before the response headers", function()
      local h = client:stream(req, { headers = { ["x-test-delay-ms"] = "100" }, on_text = function() end })
      h:cancel()
      assert.equal("canceled", h:status())
      oai.run()
      assert.equal("canceled", h:status())
      assert.equal("canceled", select(3, h:result()).kind)
    end)

    it("closes the transfer at once when a callback raises, then lets the error propagate", function()
      if _VERSION == "Lua 5.1" and type(jit) ~= "table" then
        return pending("PUC Lua 5.1 cannot yield across pcall: the transfer is released when the stream is collected")
      end
      local loop = require "oai.loop"
      local h, during
      h = client:stream(req, { headers = { ["x-test-chunks"] = "100", ["x-test-chunk-delay-ms"] = "20" },
        on_text = function(t) if t == "w2 " then error("boom in on_text", 0) end end })
      local ok, e = pcall(oai.run)
      assert.is_false(ok)
      assert.matches("boom in on_text", e, 1, true)
      -- no collectgarbage(): the transfer is gone because the stream was closed
      during = loop.stats().transfers
      assert.equal(0, during)
      assert.equal("failed", h:status())
      local _, _, err = h:result()
      assert.equal("canceled", err.kind)
      assert.matches("boom in on_text", err.message, 1, true)
      assert.equal("w1 w2 ", content(err.partial))
      -- with on_error: it gets the error as raised
      local got
      h = client:stream(req, { headers = { ["x-test-chunks"] = "100", ["x-test-chunk-delay-ms"] = "20" },
        on_error = function(err) got = err end,
        on_text = function() error("boom again", 0) end })
      oai.run()
      assert.equal("boom again", got)
      assert.equal(0, loop.stats().transfers)
    end)
  end)

  describe("stream_options", function()
    it("retries once without stream_options when refused, and remembers", function()
      local c = oai.new { base_url = srv.url .. "/", stream_usage = true }
      local s = assert(c:stream { model = "strict-stream-options", messages = { user("x") } })
      assert.truthy(s:result())
      local rs = srv:requests()
      assert.equal(2, #rs)
      assert.truthy(rs[1].body:find("stream_options", 1, true))
      assert.falsy(rs[2].body:find("stream_options", 1, true))
      srv:clear()
      assert.truthy(assert(c:stream { model = "strict-stream-options", messages = { user("x") } }):result())
      assert.equal(1, #srv:requests())
    end)
  end)

  describe("accumulation", function()
    it("merges tool calls by index, parallel calls, object arguments, missing ids", function()
      local ev = {
        data(chunk({ delta({ role = "assistant", content = null, tool_calls = {
          { index = 0, id = "call_a", type = "function", ["function"] = { name = "f", arguments = "" } } } }) })),
        data(chunk({ delta({ tool_calls = { { index = 1, type = "function", ["function"] = { name = "g", arguments = { x = 1 } } } } }) })),
        data(chunk({ delta({ tool_calls = { { index = 0, id = "", ["function"] = { name = "", arguments = '{"a"' } } } }) })),
        data(chunk({ delta({ tool_calls = { { index = 0, ["function"] = { arguments = ':1}' } } } }) })),
        data(chunk({ delta({}, "tool_calls") })),
        "data: [DONE]\n\n",
      }
      both(ev, function(s)
        local res = assert(s:result())
        local calls = res.choices[1].message.tool_calls
        assert.equal(2, #calls)
        assert.equal("call_a", calls[1].id)
        assert.equal("f", calls[1]["function"].name)
        assert.equal('{"a":1}', calls[1]["function"].arguments)
        assert.equal("g", calls[2]["function"].name)
        assert.equal('{"x":1}', calls[2]["function"].arguments)
        assert.truthy(calls[2].id:find("^call_"))
        assert.equal(null, res.choices[1].message.content)
        assert.equal("tool_calls", res.choices[1].finish_reason)
      end)
    end)

    it("falls back to id, then to position, when a provider omits index", function()
      local ev = {
        data(chunk({ delta({ tool_calls = {
          { id = "c1", type = "function", ["function"] = { name = "f", arguments = "{" } },
          { id = "c2", type = "function", ["function"] = { name = "g", arguments = "[" } } } }) })),
        data(chunk({ delta({ tool_calls = { { id = "c2", ["function"] = { arguments = "]" } } } }) })),
        data(chunk({ delta({ tool_calls = { { ["function"] = { arguments = "}" } } } }) })),
        data(chunk({ delta({}, "stop") })),
      }
      both(ev, function(s)
        local calls = assert(s:result()).choices[1].message.tool_calls
        assert.equal(2, #calls)
        assert.equal("{}", calls[1]["function"].arguments)
        assert.equal("[]", calls[2]["function"].arguments)
      end)
    end)

    it("concatenates refusal, keeps logprobs lists, usage from the last chunk", function()
      local ev = {
        data(chunk({ { index = 0, delta = { role = "assistant", refusal = "I can" }, finish_reason = null,
          logprobs = { content = oai.array(), refusal = { { token = "I", logprob = -0.1 } } } } }, { usage = null })),
        data(chunk({ { index = 0, delta = { refusal = "not." }, finish_reason = null,
          logprobs = { refusal = { { token = " can", logprob = -0.2 } } } } }, { usage = null })),
        data(chunk({ delta({}, "stop") }, { usage = null })),
        data(chunk(oai.array(), { usage = { prompt_tokens = 3, completion_tokens = 2, total_tokens = 5 } })),
        "data: [DONE]\n\n",
      }
      both(ev, function(s)
        local res = assert(s:result())
        local ch = res.choices[1]
        assert.equal("I cannot.", ch.message.refusal)
        assert.equal(null, ch.message.content)
        assert.equal(2, #ch.logprobs.refusal)
        assert.equal(" can", ch.logprobs.refusal[2].token)
        assert.equal(5, res.usage.total_tokens)
        assert.equal("[]", encode(ch.logprobs.content))
      end)
    end)

    it("keeps content that arrives with finish_reason, unknown fields, and role only once", function()
      local ev = {
        data(chunk({ delta({ role = "assistant", content = "A", custom = "x" }) })),
        data(chunk({ delta({ role = "assistant", content = "B", custom = "y", score = 1 }) })),
        data(chunk({ delta({ content = "C", score = 2 }, "eos_token") })),
        "data: [DONE]\n\n",
      }
      both(ev, function(s)
        local res = assert(s:result())
        local m = res.choices[1].message
        assert.equal("ABC", m.content)
        assert.equal("assistant", m.role)
        assert.equal("xy", m.custom)
        assert.equal(2, m.score)
        assert.equal("eos_token", res.choices[1].finish_reason)
        assert.equal("chatcmpl-q", res.id)
        assert.equal("quirk-model", res.model)
      end)
    end)

    it("keeps several choices apart by index, interleaved", function()
      local ev = {
        data(chunk({ delta({ content = "a" }, nil, 1) })),
        data(chunk({ delta({ content = "b" }, nil, 0) })),
        data(chunk({ delta({ content = "c" }, "stop", 1), delta({ content = "d" }, "length", 0) })),
        "data: [DONE]\n\n",
      }
      both(ev, function(s)
        local res = assert(s:result())
        assert.equal(0, res.choices[1].index)
        assert.equal("bd", res.choices[1].message.content)
        assert.equal("length", res.choices[1].finish_reason)
        assert.equal("ac", res.choices[2].message.content)
      end)
    end)
  end)

  describe("framing quirks", function()
    local words = { "Hel", "lo", " wörld", " 😀" }
    local function body(sep, prefix)
      local out = {}
      for _, w in ipairs(words) do
        out[#out + 1] = (prefix or "data: ") .. encode(chunk({ delta({ content = w }) })) .. sep .. sep
      end
      out[#out + 1] = (prefix or "data: ") .. encode(chunk({ delta({}, "stop") })) .. sep .. sep
      out[#out + 1] = (prefix or "data: ") .. "[DONE]" .. sep .. sep
      return out
    end
    local expect = "Hello wörld 😀"

    local function check(events)
      both(events, function(s)
        local parts = {}
        for t in s:text() do parts[#parts + 1] = t end
        assert.equal(expect, table.concat(parts))
        assert.equal(expect, assert(s:result()).choices[1].message.content)
      end)
    end

    it("accepts data: without a space", function() check(body("\n", "data:")) end)
    it("accepts CRLF line ends", function() check(body("\r\n")) end)
    it("accepts bare CR line ends", function() check(body("\r")) end)

    it("accepts events split at every byte, inside UTF-8 and between CR and LF", function()
      local all = table.concat(body("\r\n"))
      local pieces = {}
      -- split into 1..3 byte pieces, paced
      local i = 1
      while i <= #all do
        local n = (i % 3) + 1
        pieces[#pieces + 1] = all:sub(i, i + n - 1)
        i = i + n
      end
      check(pieces)
    end)

    it("ignores comments, keep-alives, data keep-alives and empty data events", function()
      local ev = body("\n")
      table.insert(ev, 1, ": OPENROUTER PROCESSING\n\n")
      table.insert(ev, 2, ": ping\n\n")
      table.insert(ev, 3, "data: : keepalive\n\n")
      table.insert(ev, 4, "data:\n\n")
      table.insert(ev, 5, "event: ping\n\n")
      check(ev)
    end)

    it("completes without [DONE] when the server closes", function()
      local ev = body("\n")
      table.remove(ev)
      check(ev)
    end)

    it("accepts [DONE] without the blank line", function()
      local ev = body("\n")
      ev[#ev] = "data: [DONE]"
      check(ev)
    end)

    it("accepts a chunk without object and usage: null", function()
      local ev = {
        data({ id = "x", created = 1, model = "m", choices = { delta({ content = "Hello wörld 😀" }) }, usage = null }),
        data({ id = "x", created = 1, model = "m", choices = { delta({}, "stop") }, usage = null }),
        "data: [DONE]\n\n",
      }
      check(ev)
    end)

    it("finishes after a grace period when the server neither sends [DONE] nor closes", function()
      local ev = body("\n")
      table.remove(ev)
      ev[#ev + 1] = ": still here\n\n"
      local st = { status = 200, headers = { ["content-type"] = "text/event-stream" } }
      nscript = nscript + 1
      local name = "grace" .. nscript
      local stp = steps(ev, false, st)
      stp[#stp + 1] = { flush = true }
      stp[#stp + 1] = { sleep_ms = 5000 }
      srv:script(name, stp)
      local t0 = oai.core.monotime()
      local s = assert(client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-script"] = name }, grace = 0.3 }))
      assert.equal(expect, assert(s:result()).choices[1].message.content)
      assert.truthy(oai.core.monotime() - t0 < 2)
    end)

    it("reads a JSON body when a server ignores stream = true", function()
      local doc = { id = "c", object = "chat.completion", created = 5, model = "m",
        choices = { { index = 0, message = { role = "assistant", content = expect }, finish_reason = "stop" } },
        usage = { prompt_tokens = 1, completion_tokens = 2, total_tokens = 3 } }
      both({ encode(doc) }, function(s)
        local parts = {}
        for t in s:text() do parts[#parts + 1] = t end
        assert.equal(expect, table.concat(parts))
        local res = assert(s:result())
        assert.equal(3, res.usage.total_tokens)
      end, { status = 200, headers = { ["content-type"] = "application/json" } })
    end)
  end)

  -- issue 11 item 5: servers split a surrogate pair over two chunks and
  -- send invalid UTF-8; the stream goes on with the right text
  describe("hostile text", function()
    local R = "\239\191\189"   -- U+FFFD
    local function ev(d, finish) return data(chunk({ delta(d, finish) })) end
    local events = {
      ev({ role = "assistant", content = "" }),
      'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"reasoning_content":"think \\ud83e"}}]}\n\n',
      'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"reasoning_content":"\\udd14!"}}]}\n\n',
      'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"content":"Hi \\ud83d"}}]}\n\n',
      'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"content":"\\ude00 there"}}]}\n\n',
      'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"content":", bad \255 byte"}}]}\n\n',
      'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"content":", lone \\udc00."}}]}\n\n',
      'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"f","arguments":"{\\"e\\":\\"\\ud83d"}}]}}]}\n\n',
      'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\ude03\\"}"}}]}}]}\n\n',
      'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"content":" end\\ud83d"}}]}\n\n',
      ev({}, "stop"),
      "data: [DONE]\n\n",
    }
    local text = "Hi 😀 there, bad " .. R .. " byte, lone " .. R .. ". end" .. R
    local pieces = { "Hi ", "😀 there", ", bad " .. R .. " byte", ", lone " .. R .. ".", " end", R }

    local function check(s)
      local got = {}
      for t in s:text() do got[#got + 1] = t end
      assert.same(pieces, got)
      local res = assert(s:result())
      local msg = res.choices[1].message
      assert.equal(text, msg.content)
      assert.equal("think 🤔!", msg.reasoning_content)
      assert.equal('{"e":"😃"}', msg.tool_calls[1]["function"].arguments)
      assert.equal("stop", res.choices[1].finish_reason)
      oai.json.encode(res)   -- valid UTF-8: the message can be sent back
    end

    it("joins split pairs and replaces invalid text in text() and result()", function()
      both(events, function(s) check(s) end)
    end)

    it("does the same with the events split at every third byte", function()
      local all, split, i = table.concat(events), {}, 1
      while i <= #all do split[#split + 1] = all:sub(i, i + 2); i = i + 3 end
      both(split, function(s) check(s) end)
    end)

    it("does the same in events()", function()
      both(events, function(s)
        local content, reasoning = {}, {}
        for e in s:events() do
          if e.type == "content" then content[#content + 1] = e.text end
          if e.type == "reasoning" then reasoning[#reasoning + 1] = e.text end
        end
        assert.same(pieces, content)
        assert.same({ "think ", "🤔!" }, reasoning)
        assert.equal(text, assert(s:result()).choices[1].message.content)
      end)
    end)

    it("does the same in chunks(): the joined character in the later chunk", function()
      both(events, function(s)
        local content = {}
        for c in s:chunks() do
          local d = c.choices and c.choices[1] and c.choices[1].delta
          if d and d.content and d.content ~= "" then content[#content + 1] = d.content end
        end
        assert.same(pieces, content)
        local res = assert(s:result())
        assert.equal(text, res.choices[1].message.content)
        assert.equal('{"e":"😃"}', res.choices[1].message.tool_calls[1]["function"].arguments)
      end)
    end)

    it("replaces a high half still waiting when the body ends without [DONE]", function()
      local ended = {
        'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"content":"end\\ud83d"}}]}\n\n',
        ev({}, "stop"),
      }
      both(ended, function(s)
        local got = {}
        for t in s:text() do got[#got + 1] = t end
        assert.same({ "end", R }, got)
        assert.equal("end" .. R, assert(s:result()).choices[1].message.content)
      end)
      both(ended, function(s)
        assert.equal("end" .. R, assert(s:result()).choices[1].message.content)
      end)
    end)
  end)

  describe("errors inside the stream", function()
    local head = data(chunk({ delta({ role = "assistant", content = "part" }) }))

    it("turns an error envelope into kind api and keeps the partial", function()
      both({ head, data({ error = { message = "overloaded", type = "server_error", code = "overload" } }) },
        function(s)
          local res, _, err = s:result()
          assert.is_nil(res)
          assert.equal("api", err.kind)
          assert.equal("overloaded", err.message)
          assert.equal("server_error", err.type)
          assert.equal("overload", err.code)
          assert.equal("part", err.partial.choices[1].message.content)
        end)
    end)

    it("turns event: error into kind api", function()
      both({ head, 'event: error\ndata: {"error":{"message":"bad things","code":"e1"}}\n\n' }, function(s)
        local _, _, err = s:result()
        assert.equal("api", err.kind)
        assert.equal("bad things", err.message)
        assert.equal("e1", err.code)
        assert.equal("part", err.partial.choices[1].message.content)
      end)
    end)

    it("ends with kind protocol on a chunk that is not JSON, with the raw data", function()
      both({ head, "data: {not json\n\n", data(chunk({ delta({ content = "lost?" }, "stop") })) }, function(s)
        local parts = {}
        for t in s:text() do parts[#parts + 1] = t end
        assert.same({ "part" }, parts)
        local _, _, err = s:result()
        assert.equal("protocol", err.kind)
        assert.equal("{not json", err.data)
        assert.equal("part", err.partial.choices[1].message.content)
      end)
    end)

    it("says why a chunk is not JSON and where (issue 11 item 8)", function()
      both({ head, "data: {not json\n\n" }, function(s)
        local _, _, err = s:result()
        assert.equal("protocol", err.kind)
        assert.equal("invalid chunk in stream: oai.json.decode: at byte 2: expected a string key", err.message)
      end)
    end)

    it("reports a truncated last event as kind protocol", function()
      both({ head, 'data: {"id":"chatcmpl-q","choices":[{"index":0,"delta":{"content":"x"}}]}' }, function(s)
        local _, _, err = s:result()
        assert.equal("protocol", err.kind)
        assert.truthy(err.message:find("truncated", 1, true))
        assert.equal("part", err.partial.choices[1].message.content)
      end)
    end)

    it("reports a dropped connection as kind network, partial kept", function()
      local s = assert(client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-drop"] = "mid-stream", ["x-test-chunks"] = "5" } }))
      local res, _, err = s:result()
      assert.is_nil(res)
      assert.truthy(err.kind == "network" or err.kind == "protocol", err.kind)
      assert.equal("w1 w2 ", err.partial.choices[1].message.content)
    end)

    it("reports an idle stall as kind timeout, partial kept", function()
      local s = assert(client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-stall-ms"] = "4000", ["x-test-chunks"] = "3" }, idle_timeout = 1 }))
      local res, _, err = s:result()
      assert.is_nil(res)
      assert.equal("timeout", err.kind)
      assert.equal("w1 ", err.partial.choices[1].message.content)
    end)

    it("enforces the event size limit", function()
      local big = data(chunk({ delta({ content = string.rep("x", 300000) }) }))
      srv:script("big", steps({ head, big }, false))
      local s = assert(client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-script"] = "big" }, max_event_bytes = 100000 }))
      local _, _, err = s:result()
      assert.equal("protocol", err.kind)
      assert.truthy(err.message:find("max_event_bytes", 1, true), err.message)
      assert.equal("part", err.partial.choices[1].message.content)
    end)
  end)
end)
