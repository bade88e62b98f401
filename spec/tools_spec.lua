-- The tool registry and the tool-call loop: definitions, dispatch (errors
-- reported back to the model, call order, parallel handlers), and run against
-- the local server's `tools` model, with chat and stream, blocking and in tasks.
local oai = require "oai"
local helpers = require "helpers"
local function ways(name, body) return helpers.ways(it, name, body) end
local roles = helpers.roles

local server = require "server"

local null = oai.null
local monotime = oai.core.monotime

local WEATHER_PARAMS = {
  type = "object",
  properties = { city = { type = "string" }, unit = { type = "string", enum = { "c", "f" } } },
  required = oai.array { "city" },
  additionalProperties = false,
}
local TIME_PARAMS = { type = "object", properties = { city = { type = "string" } }, required = { "city" } }

local function call(id, name, arguments)
  return { id = id, type = "function", ["function"] = { name = name, arguments = arguments } }
end

-- a toolset whose handlers log what they ran
local function make_tools(log, extra)
  local specs = {
    get_weather = { description = "Current weather in a city", parameters = WEATHER_PARAMS,
      handler = function(args)
        log[#log + 1] = "get_weather " .. args.city
        return { city = args.city, temp_c = 21 }
      end },
    get_time = { description = "Local time in a city", parameters = TIME_PARAMS,
      handler = function(args)
        log[#log + 1] = "get_time " .. args.city
        return args.city .. " 12:00"
      end },
  }
  for k, v in pairs(extra or {}) do specs[k] = v end
  return oai.tools(specs)
end

describe("oai.tools", function()
  describe("definitions", function()
    it("lists a map of tools sorted by name, in the request's shape", function()
      local tools = make_tools({})
      assert.equal('[{"function":{"description":"Local time in a city","name":"get_time","parameters":'
        .. '{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}},"type":"function"},'
        .. '{"function":{"description":"Current weather in a city","name":"get_weather","parameters":'
        .. '{"additionalProperties":false,"properties":{"city":{"type":"string"},"unit":{"enum":["c","f"],'
        .. '"type":"string"}},"required":["city"],"type":"object"}},"type":"function"}]',
        oai.json.encode(tools:definitions()))
      assert.same({ "get_time", "get_weather" }, tools:names())
    end)

    it("keeps the order of an array of tools, and strict", function()
      local h = function() end
      local tools = oai.tools { { name = "b", handler = h, strict = true }, { name = "a", handler = h } }
      assert.same({ "b", "a" }, tools:names())
      assert.equal('[{"function":{"name":"b","strict":true},"type":"function"},{"function":{"name":"a"},"type":"function"}]',
        oai.json.encode(tools:definitions()))
      assert.equal("[]", oai.json.encode(oai.tools():definitions()))
    end)

    it("raises on malformed tools", function()
      assert.has_error(function() oai.tools { f = { description = "x" } } end, "oai.tools: tool f needs a handler function")
      assert.has_error(function() oai.tools { ["bad name"] = { handler = print } } end,
        "oai.tools: tool names are letters, digits, _ and - (got bad name)")
      assert.has_error(function() oai.tools { { name = "a", handler = print }, { name = "a", handler = print } } end,
        "oai.tools: tool a is defined twice")
      assert.has_error(function() oai.tools { f = { handler = print, parameters = "x" } } end,
        "oai.tools: parameters of f must be a table (a JSON schema)")
    end)
  end)

  describe("dispatch", function()
    it("answers each call with a tool message, in call order", function()
      local log = {}
      local msgs = make_tools(log):dispatch({
        call("c1", "get_weather", '{"city":"Paris"}'),
        call("c2", "get_time", '{"city":"Tokyo"}'),
      })
      assert.same({
        { role = "tool", tool_call_id = "c1", content = '{"city":"Paris","temp_c":21}' },
        { role = "tool", tool_call_id = "c2", content = "Tokyo 12:00" },
      }, msgs)
      assert.same({ "get_weather Paris", "get_time Tokyo" }, log)
    end)

    it("reports bad calls back as error: messages naming the problem", function()
      local log = {}
      local msgs = make_tools(log):dispatch({
        call("c1", "get_wether", '{"city":"Paris"}'),
        call("c2", "get_weather", '{"city": "Paris"'),
        call("c3", "get_weather", '{}'),
        call("c4", "get_weather", '{"city": 7}'),
        call("c5", "get_weather", '{"city": "Paris", "unit": "k"}'),
        call("c6", "get_weather", '{"city": "Paris", "when": "now"}'),
        call("c7", "get_weather", '[1]'),
        call("c8", "get_time", ''),
        { id = "c9" },
      })
      local texts = {}
      for i, m in ipairs(msgs) do
        assert.equal("c" .. i, m.tool_call_id)
        texts[i] = m.content
      end
      assert.equal('error: unknown tool "get_wether"; the tools are: get_time, get_weather', texts[1])
      assert.matches("^error: the arguments of get_weather are not valid JSON %(.+%)$", texts[2])
      assert.equal("error: invalid arguments for get_weather: $.city: required field missing", texts[3])
      assert.equal("error: invalid arguments for get_weather: $.city: expected string, got integer", texts[4])
      assert.equal('error: invalid arguments for get_weather: $.unit: expected one of "c", "f", got "k"', texts[5])
      assert.equal("error: invalid arguments for get_weather: $.when: unexpected field (additionalProperties is false)", texts[6])
      assert.equal("error: the arguments of get_weather must be a JSON object, not array", texts[7])
      assert.equal("error: invalid arguments for get_time: $.city: required field missing", texts[8])
      assert.equal("error: malformed tool call (no function)", texts[9])
      assert.same({}, log)
    end)

    it("takes arguments a provider sent as an object as they are", function()
      local got
      local tools = oai.tools { f = { parameters = TIME_PARAMS, handler = function(args) got = args; return "ok" end } }
      local msgs = tools:dispatch({ call("c1", "f", { city = "Oslo" }) })
      assert.same({ city = "Oslo" }, got)
      assert.equal("ok", msgs[1].content)
    end)

    it("turns handler results into text: strings as is, other values as JSON", function()
      local results = {
        s = function() return "plain text" end,
        t = function() return { b = oai.array(), a = 1 } end,
        n = function() return 21 end,
        f = function() return false end,
        none = function() end,
        err = function() return nil, "city not found" end,
        errf = function() return false, "no permission" end,
        raise = function() error("boom") end,
        raise_table = function() error({ message = "table boom" }) end,
        bad = function() return { f = print } end,
      }
      local specs, calls, names = {}, {}, {}
      for name, fn in pairs(results) do names[#names + 1] = name end
      table.sort(names)
      for i, name in ipairs(names) do
        specs[name] = { handler = results[name] }
        calls[i] = call("id_" .. name, name, "{}")
      end
      local seen = {}
      local msgs = oai.tools(specs):dispatch(calls, {
        on_result = function(c, text, err) seen[c.id] = { text, err } end,
      })
      local by = {}
      for _, m in ipairs(msgs) do by[m.tool_call_id:sub(4)] = m.content end
      assert.equal("plain text", by.s)
      assert.equal('{"a":1,"b":[]}', by.t)
      assert.equal("21", by.n)
      assert.equal("false", by.f)
      assert.equal("null", by.none)
      assert.equal("error: city not found", by.err)
      assert.equal("error: no permission", by.errf)
      assert.equal("error: boom", by.raise)
      assert.equal("error: table boom", by.raise_table)
      assert.matches("^error: the result cannot be encoded as JSON: ", by.bad)
      assert.same({ "error: boom", "boom" }, seen.id_raise)
      assert.same({ "error: city not found", "city not found" }, seen.id_err)
      assert.same({ "plain text" }, seen.id_s)
    end)

    it("lets on_call decline a call", function()
      local log = {}
      local asked = {}
      local msgs = make_tools(log):dispatch({
        call("c1", "get_weather", '{"city":"Paris"}'),
        call("c2", "get_time", '{"city":"Tokyo"}'),
      }, { on_call = function(c, args)
        asked[#asked + 1] = c["function"].name .. " " .. args.city
        if c["function"].name == "get_time" then return false, "the user said no" end
      end })
      assert.same({ "get_weather Paris", "get_time Tokyo" }, asked)
      assert.equal("error: the user said no", msgs[2].content)
      assert.same({ "get_weather Paris" }, log)
    end)

    for _, in_task in ipairs({ false, true }) do
      it("runs parallel handlers concurrently and keeps call order (" .. (in_task and "in a task" or "blocking") .. ")", function()
        local finished = {}
        local function slow(delay)
          return { handler = function(args)
            oai.sleep(delay)
            finished[#finished + 1] = args.n
            if args.n == 2 then error("late failure") end
            return "done " .. args.n
          end }
        end
        local tools = oai.tools { a = slow(0.15), b = slow(0.05), c = slow(0.1) }
        local calls = { call("1", "a", '{"n":1}'), call("2", "b", '{"n":2}'), call("3", "c", '{"n":3}') }
        local msgs, elapsed
        local function go()
          local t0 = monotime()
          msgs = tools:dispatch(calls, { parallel = true })
          elapsed = monotime() - t0
        end
        if in_task then oai.spawn(go); oai.run() else go() end
        assert.same({ 2, 3, 1 }, finished)
        assert.same({ "done 1", "error: late failure", "done 3" }, { msgs[1].content, msgs[2].content, msgs[3].content })
        assert.same({ "1", "2", "3" }, { msgs[1].tool_call_id, msgs[2].tool_call_id, msgs[3].tool_call_id })
        assert.truthy(elapsed < 0.28, "took " .. elapsed .. " s")
        -- sequential for comparison
        finished = {}
        local t0 = monotime()
        if in_task then
          oai.spawn(function() msgs = tools:dispatch(calls) end); oai.run()
        else
          msgs = tools:dispatch(calls)
        end
        assert.same({ 1, 2, 3 }, finished)
        assert.truthy(monotime() - t0 >= 0.29)
        assert.equal("error: late failure", msgs[2].content)
      end)
    end
  end)

  describe("run against the tools model", function()
    local srv, client

    lazy_setup(function()
      srv = server.start()
      client = oai.new { base_url = srv.url, api_key = "sk-test" }
    end)
    lazy_teardown(function() if srv then srv:stop() end end)
    before_each(function() srv:clear() end)

    local function request(text)
      return { model = "tools", messages = { oai.system "Use tools.", oai.user(text) } }
    end

    local function bodies()
      local out = {}
      for i, r in ipairs(srv:requests()) do out[i] = oai.json.decode(r.body) end
      return out
    end

    ways("runs a two-round parallel tool loop ending in text", function(stream)
      local log, events = {}, {}
      local tools = make_tools(log)
      local req = request("get_weather city=Paris, get_time get_time.city=Tokyo")
      local final, _, err, messages = tools:run(client, req, {
        stream = stream, parallel = true, max_rounds = 5,
        headers = { ["x-test-tool-rounds"] = "2" },
        on_call = function(c, args) events[#events + 1] = "call " .. c["function"].name .. " " .. args.city end,
        on_result = function(c, text) events[#events + 1] = "result " .. c.id .. " " .. text end,
        on_response = function(res, round) events[#events + 1] = "response " .. round .. " " .. res.choices[1].finish_reason end,
      })
      assert.is_nil(err)
      local answer = 'Tool results: Tokyo 12:00 | {"city":"Paris","temp_c":21}'
      assert.equal(answer, final.choices[1].message.content)
      assert.equal("stop", final.choices[1].finish_reason)
      assert.equal("system,user,assistant,tool,tool,assistant,tool,tool,assistant", roles(messages))
      assert.equal(answer, messages[9].content)
      -- round 1: the calls of request 1, answered in call order
      local calls = messages[3].tool_calls
      assert.equal(2, #calls)
      assert.equal("call_1_0", calls[1].id)
      assert.equal("get_time", calls[1]["function"].name)
      assert.equal('{"city":"Tokyo"}', calls[1]["function"].arguments)
      assert.equal("get_weather", calls[2]["function"].name)
      assert.equal(null, messages[3].content)
      assert.same({ role = "tool", tool_call_id = "call_1_0", content = "Tokyo 12:00" }, messages[4])
      assert.same({ role = "tool", tool_call_id = "call_1_1", content = '{"city":"Paris","temp_c":21}' }, messages[5])
      assert.equal("call_2_0", messages[6].tool_calls[1].id)
      table.sort(log) -- parallel handlers: any order
      assert.same({ "get_time Tokyo", "get_time Tokyo", "get_weather Paris", "get_weather Paris" }, log)
      assert.same({
        "response 1 tool_calls", "call get_time Tokyo", "call get_weather Paris",
        "result call_1_0 Tokyo 12:00", 'result call_1_1 {"city":"Paris","temp_c":21}',
        "response 2 tool_calls", "call get_time Tokyo", "call get_weather Paris",
        "result call_2_0 Tokyo 12:00", 'result call_2_1 {"city":"Paris","temp_c":21}',
        "response 3 stop",
      }, events)
      -- what was sent: the tools, then the growing history
      local sent = bodies()
      assert.equal(3, #sent)
      for i, b in ipairs(sent) do
        assert.equal(stream or nil, b.stream)
        assert.equal(2, #b.tools)
        assert.equal("get_time", b.tools[1]["function"].name)
        assert.equal(({ 2, 5, 8 })[i], #b.messages)
      end
      assert.equal("Tokyo 12:00", sent[2].messages[4].content)
      assert.equal("call_1_0", sent[2].messages[4].tool_call_id)
      assert.same({ city = "Paris" }, oai.json.decode(sent[2].messages[3].tool_calls[2]["function"].arguments))
      -- the caller's request is untouched
      assert.equal(2, #req.messages)
      assert.is_nil(req.tools)
      assert.is_nil(req.stream)
    end)

    ways("passes stream callbacks through to each request", function(stream)
      local text = {}
      local final = assert(make_tools({}):run(client, request("get_time city=Rome"), {
        stream = stream, on_text = function(t) text[#text + 1] = t end,
      }))
      -- client:chat has no callbacks; client:stream calls them for every request
      assert.equal(stream and "Tool results: Rome 12:00" or "", table.concat(text))
      assert.equal("Tool results: Rome 12:00", final.choices[1].message.content)
    end)

    local BAD = {
      ["invalid-json"] = "^error: the arguments of get_time are not valid JSON %(.+%)$",
      ["unknown-tool"] = '^error: unknown tool "no_such_tool"; the tools are: get_time, get_weather$',
      ["missing-required"] = "^error: invalid arguments for get_time: %$%.city: required field missing$",
      ["wrong-type"] = "^error: invalid arguments for get_time: %$%.city: expected string, got integer$",
    }
    for _, mode in ipairs({ "invalid-json", "unknown-tool", "missing-required", "wrong-type" }) do
      ways("reports " .. mode .. " arguments back, then the model corrects them", function(stream)
        local log = {}
        local final, _, err, messages = make_tools(log):run(client,
          request("get_time city=Lima and get_weather city=Lima"),
          { stream = stream, headers = { ["x-test-tool-mode"] = mode } })
        assert.is_nil(err)
        assert.equal("system,user,assistant,tool,tool,assistant,tool,tool,assistant", roles(messages))
        assert.matches(BAD[mode], messages[4].content)
        assert.equal('{"city":"Lima","temp_c":21}', messages[5].content)
        assert.equal("Lima 12:00", messages[7].content)
        assert.equal('Tool results: Lima 12:00 | {"city":"Lima","temp_c":21}', final.choices[1].message.content)
        assert.same({ "get_weather Lima", "get_time Lima", "get_weather Lima" }, log)
        -- the error went to the model
        local sent = bodies()
        assert.equal(3, #sent)
        assert.matches(BAD[mode], sent[2].messages[4].content)
      end)
    end

    ways("accepts arguments sent as a JSON object", function(stream)
      local got
      local tools = make_tools({}, { get_time = { parameters = TIME_PARAMS,
        handler = function(args) got = args; return "t" end } })
      local final, _, err, messages = tools:run(client, request("get_time city=Oslo"),
        { stream = stream, headers = { ["x-test-tool-mode"] = "object-args" } })
      assert.is_nil(err)
      assert.same({ city = "Oslo" }, got)
      assert.equal("Tool results: t", final.choices[1].message.content)
      -- sent back as the usual JSON text
      assert.equal('{"city":"Oslo"}', messages[3].tool_calls[1]["function"].arguments)
      assert.equal('{"city":"Oslo"}', bodies()[2].messages[3].tool_calls[1]["function"].arguments)
    end)

    ways("reports handler failures to the model and to on_result", function(stream)
      local seen = {}
      local tools = oai.tools {
        get_time = { parameters = TIME_PARAMS, handler = function() error("clock is broken") end },
        get_weather = { parameters = WEATHER_PARAMS, handler = function() return nil, "no station in " .. "Nowhere" end },
      }
      local final, _, err, messages = tools:run(client, request("get_time get_weather city=Nowhere"), {
        stream = stream, parallel = true,
        on_result = function(c, text, e) seen[#seen + 1] = { c["function"].name, text, e } end,
      })
      assert.is_nil(err)
      assert.equal("Tool results: error: clock is broken | error: no station in Nowhere", final.choices[1].message.content)
      assert.equal("error: clock is broken", messages[4].content)
      assert.same({
        { "get_time", "error: clock is broken", "clock is broken" },
        { "get_weather", "error: no station in Nowhere", "no station in Nowhere" },
      }, seen)
    end)

    ways("lets handlers call the client themselves", function(stream)
      local tools = oai.tools {
        get_time = { parameters = TIME_PARAMS, handler = function(args)
          local res = assert(client:chat { model = "test-model", messages = { oai.user("time in " .. args.city) } })
          return res.choices[1].message.content
        end },
        get_weather = { parameters = WEATHER_PARAMS, handler = function(args)
          local s = assert(client:stream { model = "test-model", messages = { oai.user("weather in " .. args.city) } })
          return assert(s:result()).choices[1].message.content
        end },
      }
      local final = assert(tools:run(client, request("get_time get_weather city=Kyiv"), { stream = stream, parallel = true }))
      assert.equal("Tool results: Hello! You said: time in Kyiv | Hello! You said: weather in Kyiv",
        final.choices[1].message.content)
      assert.equal(4, #srv:requests())
    end)

    ways("stops after max_rounds with a tool_loop error and the messages so far", function(stream)
      local log = {}
      local final, _, err, messages = make_tools(log):run(client, request("get_time city=Bern"),
        { stream = stream, max_rounds = 3, headers = { ["x-test-tool-mode"] = "forever" } })
      assert.is_nil(final)
      assert.equal("tool_loop", err.kind)
      assert.equal("oai: tool_loop: the model still calls tools after 3 rounds (max_rounds)", tostring(err))
      assert.equal(messages, err.messages)
      assert.equal(3, err.rounds)
      assert.equal("system,user,assistant,tool,assistant,tool,assistant,tool", roles(messages))
      assert.equal(3, #srv:requests())
      assert.equal(3, #log)
      assert.equal("tool_calls", err.completion.choices[1].finish_reason)
    end)

    ways("returns a request's error with the messages so far", function(stream)
      local final, _, err, messages = make_tools({}):run(client, request("get_time city=Bern"),
        { stream = stream, max_retries = 0, headers = { ["x-test-status"] = "500" } })
      assert.is_nil(final)
      assert.equal("api", err.kind)
      assert.equal(500, err.status)
      assert.equal("system,user", roles(messages))
    end)

    it("sends a forcing tool_choice only with the first request, and keeps given tools", function()
      local tools = make_tools({})
      local defs = { tools:definitions()[1] }
      local final = assert(tools:run(client, { model = "tools", messages = { oai.user "get_time city=Rome" },
        tools = defs, tool_choice = "required", temperature = 0 }))
      assert.equal("Tool results: Rome 12:00", final.choices[1].message.content)
      local sent = bodies()
      assert.equal("required", sent[1].tool_choice)
      assert.is_nil(sent[2].tool_choice)
      assert.equal(1, #sent[2].tools)
      assert.equal(0, sent[2].temperature)
    end)

    it("raises on a missing client or request", function()
      local tools = make_tools({})
      assert.has_error(function() tools:run(nil, {}) end, "tools:run: expected a client as first argument")
      assert.has_error(function() tools:run(client, "x") end, "tools:run: request must be a table")
      assert.has_error(function() tools:run(client, {}, { max_rounds = 0 }) end, "tools:run: max_rounds must be a positive integer (got 0)")
      assert.has_error(function() tools:run(client, {}, { max_rounds = 0 / 0 }) end, "tools:run: max_rounds must be a positive integer (got nan)")
      assert.has_error(function() tools:run(client, {}, { max_rounds = 2.5 }) end, "tools:run: max_rounds must be a positive integer (got 2.5)")
      assert.has_error(function() tools:dispatch("x") end, "tools:dispatch: tool_calls must be an array")
    end)
  end)

  describe("example", function()
    it("examples/tools.lua runs against the local server", function()
      local out = helpers.run_example("tools.lua")
      assert.matches("rc=0\n$", out)
      assert.matches("-> weather%({\"city\":\"Paris\"}%)", out)
      assert.matches("error: invalid arguments for time: %$%.city: required field missing", out, 1, false)
      assert.matches("assistant: Tool results: ", out, 1, true)
      assert.matches("(9 messages: system, user, assistant, tool, tool, assistant, tool, tool, assistant)", out, 1, true)
    end)
  end)
end)
