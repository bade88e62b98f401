-- Conversations: history, send and stream (appended only when the turn
-- completed), trimming that never orphans tool messages, keep_reasoning,
-- usage totals and cost, exact JSON round trips, fork, and the tool loop.
local oai = require "oai"
local helpers = require "helpers"
local function ways(name, body) return helpers.ways(it, name, body, "send") end
local roles = helpers.roles

local server = require "server"

local null = oai.null

local function contents(messages)
  local out = {}
  for i, m in ipairs(messages) do out[i] = type(m.content) == "string" and m.content or "-" end
  return table.concat(out, "|")
end

-- one turn: conv:send, or conv:stream and its result()
local function turn(conv, client, stream, request, opts)
  request = request or { model = "test-model" }
  if not stream then return helpers.two(conv:send(client, request, opts)) end
  local s, _, err = conv:stream(client, request, opts)
  if not s then return nil, err end
  return helpers.two(s:result())
end

local function tool_turn(id_prefix, n)
  local calls = {}
  for k = 1, n do
    calls[k] = { id = id_prefix .. k, type = "function", ["function"] = { name = "f", arguments = "{}" } }
  end
  local out = { oai.assistant(nil, { tool_calls = calls }) }
  for k = 1, n do out[#out + 1] = oai.tool(id_prefix .. k, "r" .. k) end
  return out
end

-- no tool message without its assistant message, no tool-calling assistant
-- message without every answer
local function assert_whole(messages)
  local open = nil
  for i, m in ipairs(messages) do
    if m.role == "tool" then
      assert.truthy(open and open[m.tool_call_id], "orphan tool message at " .. i)
      open[m.tool_call_id] = nil
    else
      if open then assert.is_nil(next(open), "unanswered tool call before " .. i) end
      open = nil
      if m.role == "assistant" and m.tool_calls then
        open = {}
        for _, c in ipairs(m.tool_calls) do open[c.id] = true end
      end
    end
  end
  if open then assert.is_nil(next(open), "unanswered tool call at the end") end
end

describe("oai.conversation", function()
  describe("history", function()
    it("builds the history with the message helpers", function()
      local conv = oai.conversation { system = "You are terse." }
      assert.equal(conv, conv:user "hi")
      conv:assistant("hello"):add(oai.user "again"):tool("c1", "x")
      assert.equal("system,user,assistant,user,tool", roles(conv:messages()))
      assert.equal("You are terse.|hi|hello|again|x", contents(conv:messages()))
      assert.equal("x", conv:last().content)
      assert.equal("x", conv:pop().content)
      assert.equal("again", conv:last().content)
      conv:system "Be kind."
      assert.equal("Be kind.", conv:messages()[1].content)
      assert.equal(4, #conv:messages())
      -- messages() is a copy
      local m = conv:messages()
      m[1] = nil
      assert.equal(4, #conv:messages())
      conv:clear()
      assert.equal("system", roles(conv:messages()))
      assert.equal("[]", oai.json.encode(oai.conversation():messages()))
      local c2 = oai.conversation():system("S")
      assert.equal("system", roles(c2:messages()))
    end)

    it("raises on misuse", function()
      local conv = oai.conversation()
      assert.has_error(function() conv:add("hi") end, "conv:add: a message is a table with a string role")
      assert.has_error(function() oai.conversation { max_messages = 0 } end, "oai.conversation: max_messages must be a positive number")
      assert.has_error(function() oai.conversation "x" end, "oai.conversation: options must be a table")
      assert.has_error(function() conv:send(nil, {}) end, "conv:send: expected a client as first argument")
      assert.has_error(function() conv:request { messages = {} } end,
        "conv:request: request.messages is set; the conversation supplies the messages")
      assert.has_error(function() oai.conversation.from_json(1) end, "oai.conversation.from_json: expected a string")
    end)

    it("forks into an independent copy", function()
      local conv = oai.conversation { system = "S", max_messages = 3 }
      conv:user { oai.text "a" }
      local copy = conv:fork()
      copy:user "b"
      copy:messages()[2].content[1].text = "changed"
      assert.equal("system,user", roles(conv:messages()))
      assert.equal("system,user,user", roles(copy:messages()))
      assert.equal(3, copy.max_messages)
      assert.equal(conv:to_json():gsub('"messages":.*', ""), copy:to_json():gsub('"messages":.*', ""))
    end)
  end)

  describe("trimming", function()
    local function conv_with(opts, ...)
      local conv = oai.conversation(opts)
      for _, group in ipairs({ ... }) do
        for _, m in ipairs(group) do conv:add(m) end
      end
      return conv
    end

    it("keeps the system message and the newest messages within max_messages", function()
      local conv = conv_with({ system = "S", max_messages = 3 },
        { oai.user "u1", oai.assistant "a1", oai.user "u2", oai.assistant "a2", oai.user "u3" })
      assert.equal("S|u2|a2|u3", contents(conv:window()))
      conv.max_messages = 1
      assert.equal("S|u3", contents(conv:window()))
      conv.max_messages = nil
      assert.equal("S|u1|a1|u2|a2|u3", contents(conv:window()))
      -- the history itself is kept
      assert.equal(6, #conv:messages())
    end)

    it("keeps a tool-calling turn whole or drops it whole", function()
      local conv = conv_with({ system = "S", max_messages = 4 },
        { oai.user "u1" }, tool_turn("a", 2), { oai.assistant "a1", oai.user "u2" })
      -- 4 messages would cut the turn after its first tool message
      assert.equal("S|a1|u2", contents(conv:window()))
      conv.max_messages = 5
      assert.equal("S|-|r1|r2|a1|u2", contents(conv:window()))
      for n = 1, 8 do
        conv.max_messages = n
        assert_whole(conv:window())
      end
    end)

    it("never orphans tool messages, whatever the limits", function()
      local conv = conv_with({ system = "S" },
        { oai.user "u1" }, tool_turn("a", 1), tool_turn("b", 3), { oai.assistant "x", oai.user "u2" },
        tool_turn("c", 2), { oai.assistant "y" })
      for n = 1, 14 do
        for _, chars in ipairs({ 1, 3, 5, 8, 12, 20, 1000 }) do
          conv.max_messages, conv.max_chars = n, chars
          local w = conv:window()
          assert.equal("system", w[1].role)
          assert.equal("y", w[#w].content)
          assert_whole(w)
        end
      end
    end)

    it("leaves out tool messages without their call and turns not fully answered", function()
      local turn2 = tool_turn("b", 2)
      table.remove(turn2) -- b2 unanswered
      local conv = conv_with({}, { oai.user "u1", oai.tool("zz", "orphan") }, tool_turn("a", 1), turn2,
        { oai.user "u2" })
      assert.equal("u1|-|r1|u2", contents(conv:window()))
      assert_whole(conv:window())
    end)

    it("counts characters (UTF-8) of text, tool calls and the system message against max_chars", function()
      local conv = conv_with({ system = "sys", max_chars = 13 },
        { oai.user "héllo", oai.assistant "wörld", oai.user { oai.text "abc", oai.image_url "https://x/y.png" } })
      -- 3 (system) + 3 + 5 = 11; + 5 more would be 16
      assert.equal("sys|wörld|-", contents(conv:window()))
      conv.max_chars = 16
      assert.equal("sys|héllo|wörld|-", contents(conv:window()))
      -- the newest message always goes, even over the limit
      conv.max_chars = 1
      assert.equal("sys|-", contents(conv:window()))
    end)
  end)

  describe("against the local server", function()
    local srv, client

    lazy_setup(function()
      srv = server.start()
      client = oai.new { base_url = srv.url, api_key = "sk-test", max_retries = 0 }
    end)
    lazy_teardown(function() if srv then srv:stop() end end)
    before_each(function() srv:clear() end)

    local function sent(i)
      local reqs = srv:requests()
      return oai.json.decode(reqs[i or #reqs].body)
    end

    ways("sends the history and appends the reply", function(stream)
      local conv = oai.conversation { system = "You are terse." }
      conv:user "hi"
      local request = { model = "test-model", temperature = 0 }
      local res = assert(turn(conv, client, stream, request))
      assert.equal("Hello! You said: hi", res.choices[1].message.content)
      assert.equal("system,user,assistant", roles(conv:messages()))
      assert.same({ role = "assistant", content = "Hello! You said: hi" }, conv:last())
      conv:user "more"
      assert(turn(conv, client, stream, request))
      assert.equal("system,user,assistant,user,assistant", roles(conv:messages()))
      assert.equal("Hello! You said: more", conv:last().content)
      local body = sent()
      assert.equal(0, body.temperature)
      assert.equal("system,user,assistant,user", roles(body.messages))
      assert.equal(stream or nil, body.stream)
      -- the request table was not touched
      assert.same({ model = "test-model", temperature = 0 }, request)
    end)

    ways("appends nothing when the turn fails, so a retry is one call", function(stream)
      local conv = oai.conversation { system = "S" }
      conv:user "hi"
      local res, err = turn(conv, client, stream, nil, { headers = { ["x-test-status"] = "500" } })
      assert.is_nil(res)
      assert.equal(500, err.status)
      assert.equal("system,user", roles(conv:messages()))
      if stream then
        -- a stream that breaks after its headers
        res, err = turn(conv, client, true, nil, { headers = { ["x-test-drop"] = "mid-stream" } })
        assert.is_nil(res)
        assert.equal("network", err.kind)
        assert.equal("system,user", roles(conv:messages()))
      end
      assert(turn(conv, client, stream))
      assert.equal("system,user,assistant", roles(conv:messages()))
      assert.truthy(conv:usage().by_model["test-model"])
      assert.equal(1, conv:usage().requests)
    end)

    it("appends a streamed reply once, however the stream is consumed", function()
      local conv = oai.conversation()
      local function count() return #conv:messages() end
      -- iterate to the end, then result()
      conv:user "one"
      local s = assert(conv:stream(client, { model = "test-model" }))
      local text = {}
      for t in s:text() do text[#text + 1] = t end
      assert.equal(2, count())
      assert(s:result())
      assert(s:result())
      assert.equal(2, count())
      assert.equal(table.concat(text), conv:last().content)
      -- only result()
      conv:user "two"
      s = assert(conv:stream(client, { model = "test-model" }))
      assert(s:result())
      assert.equal(4, count())
      -- events() to the end, never result()
      conv:user "three"
      s = assert(conv:stream(client, { model = "test-model" }))
      for _ in s:events() do end
      assert.equal(6, count())
      -- chunks()
      conv:user "four"
      s = assert(conv:stream(client, { model = "test-model" }))
      for _ in s:chunks() do end
      assert.equal(8, count())
      assert.equal("Hello! You said: four", conv:last().content)
      -- canceled: nothing
      conv:user "five"
      s = assert(conv:stream(client, { model = "test-model" }, { headers = { ["x-test-chunk-delay-ms"] = "20" } }))
      local it = s:text()
      assert.truthy(it())
      s:cancel()
      assert.is_nil(it())
      local res, _, err = s:result()
      assert.is_nil(res)
      assert.equal("canceled", err.kind)
      assert.equal(9, count())
      assert.equal("five", conv:last().content)
    end)

    it("appends a reply streamed with callbacks before on_done", function()
      local conv = oai.conversation()
      conv:user "cb"
      local text, seen = {}, nil
      local s = assert(conv:stream(client, { model = "test-model" }, {
        on_text = function(t) text[#text + 1] = t end,
        on_done = function(res, err) seen = { roles(conv:messages()), res and res.choices[1].message.content, err } end,
      }))
      assert(s:result())
      assert.same({ "user,assistant", "Hello! You said: cb" }, seen)
      assert.equal("Hello! You said: cb", table.concat(text))
      assert.equal(2, #conv:messages())
      -- a failure with callbacks appends nothing
      conv:user "again"
      local failed
      s = assert(conv:stream(client, { model = "test-model" }, {
        headers = { ["x-test-status"] = "400" },
        on_done = function(res, err) failed = err end,
      }))
      assert.is_nil(s:result())
      assert.equal(400, failed.status)
      assert.equal("user,assistant,user", roles(conv:messages()))
    end)

    ways("trims what it sends", function(stream)
      local conv = oai.conversation { system = "S", max_messages = 3 }
      conv:user("u1"):assistant("a1")
      for _, m in ipairs(tool_turn("t", 2)) do conv:add(m) end
      conv:assistant("a2"):user("u2")
      assert(turn(conv, client, stream))
      assert.equal("S|a2|u2", contents(sent().messages))
      assert.equal("system,user,assistant,assistant,tool,tool,assistant,user,assistant", roles(conv:messages()))
    end)

    ways("sends reasoning back only with keep_reasoning", function(stream)
      for _, keep in ipairs({ false, true }) do
        local conv = oai.conversation { keep_reasoning = keep }
        conv:user "why"
        assert(turn(conv, client, stream, { model = "reasoner" }))
        assert.equal("Thinking about: why", conv:last().reasoning_content)
        conv:user "and?"
        assert(turn(conv, client, stream, { model = "reasoner" }))
        local a = sent().messages[2]
        assert.equal("assistant", a.role)
        assert.equal("Hello! You said: why", a.content)
        if keep then
          assert.equal("Thinking about: why", a.reasoning_content)
        else
          assert.is_nil(a.reasoning_content)
        end
        -- the history keeps it either way
        assert.equal("Thinking about: why", conv:messages()[2].reasoning_content)
      end
    end)

    ways("totals usage over every turn, with reasoning tokens and cost", function(stream)
      local c = oai.new { base_url = srv.url, stream_usage = true }
      local conv = oai.conversation()
      conv:user "why not"
      local r1 = assert(turn(conv, c, stream, { model = "reasoner" }))
      conv:user "ok"
      local r2 = assert(turn(conv, c, stream, { model = "test-model" }))
      local u1, u2 = r1.usage, r2.usage
      assert.equal(4, u1.completion_tokens_details.reasoning_tokens) -- "Thinking about: why not"
      local u = conv:usage()
      assert.equal(2, u.requests)
      assert.equal(u1.prompt_tokens + u2.prompt_tokens, u.prompt_tokens)
      assert.equal(u1.completion_tokens + u2.completion_tokens, u.completion_tokens)
      assert.equal(u1.total_tokens + u2.total_tokens, u.total_tokens)
      assert.equal(4, u.reasoning_tokens)
      assert.equal(0, u.cached_tokens)
      assert.is_nil(u.cost)
      assert.equal(u1.prompt_tokens, u.by_model.reasoner.prompt_tokens)
      assert.equal(1, u.by_model["test-model"].requests)
      local priced = conv:usage { prices = { reasoner = { prompt = 1, completion = 2 } } }
      local expect = (u1.prompt_tokens * 1 + u1.completion_tokens * 2) / 1e6
      assert.truthy(math.abs(priced.cost - expect) < 1e-15)
      assert.same({ "test-model" }, priced.unpriced)
      priced = conv:usage { prices = { reasoner = { prompt = 1, completion = 2 }, ["test-model"] = { prompt = 3, completion = 4 } } }
      expect = expect + (u2.prompt_tokens * 3 + u2.completion_tokens * 4) / 1e6
      assert.truthy(math.abs(priced.cost - expect) < 1e-15)
      assert.is_nil(priced.unpriced)
      -- usage survives JSON
      assert.same(conv:usage(), oai.conversation.from_json(conv:to_json()):usage())
    end)

    it("prices cached prompt tokens", function()
      local conv = oai.conversation()
      conv:_record({ usage = { prompt_tokens = 1000, completion_tokens = 10, total_tokens = 1010,
        prompt_tokens_details = { cached_tokens = 800 } } }, "m")
      local u = conv:usage { prices = { m = { prompt = 2, completion = 8, cached = 0.5 } } }
      assert.equal(800, u.cached_tokens)
      assert.truthy(math.abs(u.cost - (200 * 2 + 800 * 0.5 + 10 * 8) / 1e6) < 1e-15)
    end)

    ways("runs the tool loop and appends every new message", function(stream)
      local tools = oai.tools { get_time = { parameters = { type = "object", properties = { city = { type = "string" } } },
        handler = function(args) return args.city .. " 09:00" end } }
      local conv = oai.conversation { system = "S", request = { model = "tools" } }
      conv:user "get_time city=Oslo"
      local final = assert(conv:run(client, tools, nil, { stream = stream }))
      assert.equal("Tool results: Oslo 09:00", final.choices[1].message.content)
      assert.equal("system,user,assistant,tool,assistant", roles(conv:messages()))
      assert.equal("Oslo 09:00", conv:messages()[4].content)
      assert.equal(2, conv:usage().requests)
      -- a loop that fails appends nothing (but its replies count)
      conv:user "get_time city=Rome"
      local res, _, err = conv:run(client, tools, nil, { stream = stream, max_rounds = 2,
        headers = { ["x-test-tool-mode"] = "forever" } })
      assert.is_nil(res)
      assert.equal("tool_loop", err.kind)
      assert.equal("system,user,assistant,tool,assistant,user", roles(conv:messages()))
      assert.equal(4, conv:usage().requests)
      -- the next turn sends the whole tool turn
      assert(conv:send(client))
      assert.equal("system,user,assistant,tool,assistant,user", roles(sent().messages))
    end)

    it("uses default request fields from the options", function()
      local conv = oai.conversation { request = { model = "reasoner", temperature = 1 } }
      conv:user "x"
      assert(conv:send(client, { temperature = 0 }))
      local body = sent()
      assert.equal("reasoner", body.model)
      assert.equal(0, body.temperature)
      assert.equal(conv:request().model, "reasoner")
    end)
  end)

  describe("JSON", function()
    local function sample()
      local conv = oai.conversation { system = "You are terse.", max_messages = 40, max_chars = 60000,
        keep_reasoning = true, request = { model = "m", stop = oai.array() } }
      conv:user { oai.text "what is this?", oai.image_url("data:image/png;base64,AAAA", { detail = "low" }) }
      conv:add { role = "assistant", content = null, reasoning_content = "hmm",
        tool_calls = { { id = "c1", type = "function", ["function"] = { name = "look", arguments = "{}" } } } }
      conv:tool("c1", "a cat 🐱")
      conv:assistant("A cat.", { refusal = null, annotations = oai.array(), extra = { n = 1.5, big = 2 ^ 53, o = oai.object() } })
      conv:user {}
      conv:_record({ model = "m-2024", usage = { prompt_tokens = 10, completion_tokens = 5, total_tokens = 15,
        completion_tokens_details = { reasoning_tokens = 2 } } }, "m")
      return conv
    end

    it("round-trips exactly, with empty arrays and nulls", function()
      local conv = sample()
      local text = conv:to_json()
      local back = assert(oai.conversation.from_json(text))
      assert.equal(text, back:to_json())
      assert.same(conv:messages(), back:messages())
      assert.same(conv:usage(), back:usage())
      assert.equal(40, back.max_messages)
      assert.equal(60000, back.max_chars)
      assert.is_true(back.keep_reasoning)
      assert.truthy(text:find('"content":null', 1, true))
      assert.truthy(text:find('"annotations":[]', 1, true))
      assert.truthy(text:find('{"content":[],"role":"user"}', 1, true))
      assert.truthy(text:find('"o":{}', 1, true))
      assert.truthy(text:find('"refusal":null', 1, true))
      assert.truthy(text:find('"stop":[]', 1, true))
      assert.equal(oai.null, back:messages()[3].content)
      -- and again
      assert.equal(text, assert(oai.conversation.from_json(back:to_json())):to_json())
    end)

    it("writes sorted keys", function()
      local conv = oai.conversation { system = "S" }
      conv:user "hi"
      assert.equal('{"keep_reasoning":false,"messages":[{"content":"S","role":"system"},{"content":"hi","role":"user"}],'
        .. '"usage":{},"version":1}', conv:to_json())
      assert.equal('{"keep_reasoning":false,"messages":[],"usage":{},"version":1}', oai.conversation():to_json())
      assert.equal(oai.conversation():to_json(), oai.conversation.from_json(oai.conversation():to_json()):to_json())
    end)

    it("rejects text that is not a saved conversation", function()
      local cases = {
        { "{", "$" },
        { "[]", "$.version" },
        { '{"version":2,"messages":[]}', "$.version" },
        { '{"version":1}', "$.messages" },
        { '{"version":1,"messages":[{"content":"x"}]}', "$.messages[1]" },
        { '{"version":1,"messages":[],"usage":{"m":3}}', "$.usage.m" },
        { '{"version":1,"messages":[],"max_chars":0}', "$.max_chars" },
      }
      for _, c in ipairs(cases) do
        local conv, _, err = oai.conversation.from_json(c[1])
        assert.is_nil(conv)
        assert.equal("schema", err.kind)
        assert.equal(c[2], err.path)
      end
    end)

    it("raises when a message cannot be encoded", function()
      local conv = oai.conversation()
      conv:add { role = "user", content = print }
      assert.has_error(function() conv:to_json() end)
    end)
  end)

  describe("example", function()
    it("examples/conversation.lua runs against the local server", function()
      local out = helpers.run_example("conversation.lua")
      assert.matches("rc=0\n$", out)
      assert.matches("assistant: Hello! You said: And another one?", out, 1, true)
      assert.matches('history still ends with the user message: "Why?"', out, 1, true)
      assert.matches("usage: 3 requests, ", out, 1, true)
      assert.matches("the restored conversation has 7 messages, its fork 9", out, 1, true)
    end)
  end)
end)
