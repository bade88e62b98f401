-- Specs of the local OpenAI-compatible server (lua/oai/testing.lua + lua/oai/testing/).
-- They talk HTTP through the curl command line, independently of the library's client.
local testing = require "server"
local cjson = require "cjson"

local proc = require "oai.testing.proc"
local q, read_file, write_file = proc.q, proc.read_file, proc.write_file

-- run(cmd) -> stdout, exit code (io.popen's close gives no status on 5.1/LuaJIT)
local function run(cmd)
  local p = assert(io.popen(cmd .. '; echo "__rc=$?"'))
  local out = p:read("*a")
  p:close()
  local text, rc = out:match("^(.*)__rc=(%d+)%s*$")
  return text, tonumber(rc)
end

local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  return stat ~= nil and not stat:match("^.*%) Z")
end

local function wait_dead(pid, seconds)
  for _ = 1, seconds * 10 do
    if not alive(pid) then return true end
    os.execute("sleep 0.1")
  end
  return not alive(pid)
end

local tmp = assert(io.popen("mktemp -d"):read("*l"))
local body_seq = 0

--- curl(args) -> { rc, status, http_version, time, headers, body, stderr }
local function curl(args)
  local hdr, out, err = tmp .. "/headers", tmp .. "/body", tmp .. "/stderr"
  os.remove(hdr)
  os.remove(out)
  local text, rc = run("curl -sS -D " .. q(hdr) .. " -o " .. q(out)
    .. " -w '%{http_code} %{http_version} %{time_total}' " .. args .. " 2>" .. q(err))
  local code, version, t = text:match("(%d+) ([%d%.]+) ([%d%.]+)%s*$")
  local res = { rc = rc, status = tonumber(code), http_version = version, time = tonumber(t),
    body = read_file(out) or "", stderr = read_file(err) or "", headers = {} }
  local raw = read_file(hdr) or ""
  local block = raw:match(".*()HTTP/") -- the last response (after any 100 Continue)
  for line in raw:sub(block or 1):gmatch("[^\r\n]+") do
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    if name then res.headers[name:lower()] = value end
  end
  return res
end

-- curl with a request body given as bytes (sent exactly with --data-binary @file)
local function post(url, body, args)
  body_seq = body_seq + 1
  local file = tmp .. "/request-" .. body_seq
  write_file(file, body)
  return curl("--http1.1 -H 'content-type: application/json' --data-binary @" .. q(file)
    .. " " .. (args or "") .. " " .. q(url))
end

local function chat(srv, request, args)
  return post(srv.url .. "/chat/completions", request, args)
end

local function decode(body)
  return cjson.decode(body)
end

-- SSE body -> array of data payloads ("[DONE]" kept as a string, chunks decoded)
local function events(body)
  local list = {}
  for event in body:gmatch("(.-)\n\n") do
    local data = assert(event:match("^data: (.*)$"), event)
    list[#list + 1] = data == "[DONE]" and data or decode(data)
  end
  return list
end

local HELLO = '{"model":"test-model","messages":[{"role":"system","content":"Be terse."},'
  .. '{"role":"user","content":"hi there"}]}'

describe("oai.testing", function()
  local srv

  lazy_setup(function()
    srv = testing.start { tls = true }
  end)

  lazy_teardown(function()
    if srv then
      if os.getenv("OAI_TESTING_SHOW_LOG") then io.stderr:write(srv:error_log()) end
      srv:stop()
    end
    os.execute("rm -rf " .. q(tmp))
  end)

  before_each(function()
    srv:clear()
  end)

  it("starts nginx on 127.0.0.1 with a private directory", function()
    assert.matches("^http://127%.0%.0%.1:%d+/v1$", srv.url)
    assert.matches("^https://localhost:%d+/v1$", srv.tls_url)
    assert.equal(srv.url, "http://127.0.0.1:" .. srv.port .. "/v1")
    assert.truthy(read_file(srv.dir .. "/nginx.conf"))
    assert.truthy(read_file(srv.ca_file):find("BEGIN CERTIFICATE", 1, true))
    assert.truthy(alive(srv.pid))
  end)

  describe("chat completions", function()
    it("answers the default model with the last user message", function()
      local res = chat(srv, HELLO)
      assert.equal(200, res.status)
      assert.equal("application/json", res.headers["content-type"])
      assert.equal("req_test_1", res.headers["x-request-id"])
      local c = decode(res.body)
      assert.equal("chatcmpl-test-1", c.id)
      assert.equal("chat.completion", c.object)
      assert.equal("test-model", c.model)
      assert.equal("fp_test", c.system_fingerprint)
      assert.equal(1, #c.choices)
      assert.equal("Hello! You said: hi there", c.choices[1].message.content)
      assert.equal("assistant", c.choices[1].message.role)
      assert.equal(cjson.null, c.choices[1].message.refusal)
      assert.equal(cjson.null, c.choices[1].logprobs)
      assert.equal("stop", c.choices[1].finish_reason)
      assert.equal(4, c.usage.prompt_tokens)
      assert.equal(5, c.usage.completion_tokens)
      assert.equal(9, c.usage.total_tokens)
      -- integers are printed as integers
      assert.matches('"created":1700000000[,}]', res.body)
      assert.matches('"index":0[,}]', res.body)
      assert.matches('"total_tokens":9[,}]', res.body)
    end)

    it("joins the text parts of an array content", function()
      local res = chat(srv, '{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a/b"},'
        .. '{"type":"image_url","image_url":{"url":"data:,"}},{"type":"text","text":"c"}]}]}')
      assert.equal("Hello! You said: a/b c", decode(res.body).choices[1].message.content)
      assert.equal("m", decode(res.body).model)
    end)

    it("returns n choices", function()
      local res = chat(srv, '{"model":"m","n":2,"messages":[{"role":"user","content":"x"}]}')
      local c = decode(res.body)
      assert.equal(2, #c.choices)
      assert.equal(0, c.choices[1].index)
      assert.equal(1, c.choices[2].index)
      assert.equal("Hello! You said: x", c.choices[1].message.content)
      assert.equal("[1] Hello! You said: x", c.choices[2].message.content)
    end)

    it("streams word by word and ends with [DONE]", function()
      local res = chat(srv, '{"model":"m","stream":true,"messages":[{"role":"user","content":"hi there"}]}', "-N")
      assert.equal(200, res.status)
      assert.equal("text/event-stream", res.headers["content-type"])
      assert.equal("no-cache", res.headers["cache-control"])
      local ev = events(res.body)
      assert.equal("[DONE]", ev[#ev])
      assert.same({ role = "assistant", content = "" }, ev[1].choices[1].delta)
      local text = {}
      for i = 2, #ev - 2 do
        assert.equal("chat.completion.chunk", ev[i].object)
        assert.equal("chatcmpl-test-1", ev[i].id)
        assert.equal(1700000000, ev[i].created)
        assert.equal("m", ev[i].model)
        assert.equal("fp_test", ev[i].system_fingerprint)
        assert.equal(cjson.null, ev[i].choices[1].finish_reason)
        text[#text + 1] = ev[i].choices[1].delta.content
      end
      assert.same({ "Hello! ", "You ", "said: ", "hi ", "there" }, text)
      local last = ev[#ev - 1]
      assert.same({}, last.choices[1].delta)
      assert.equal("stop", last.choices[1].finish_reason)
      assert.is_nil(last.usage)
      assert.falsy(res.body:find('"usage"', 1, true))
    end)

    it("adds a usage chunk when stream_options.include_usage is true", function()
      local res = chat(srv, '{"model":"m","stream":true,"stream_options":{"include_usage":true},'
        .. '"messages":[{"role":"user","content":"hi there"}]}', "-N")
      local ev = events(res.body)
      assert.equal("[DONE]", ev[#ev])
      local usage = ev[#ev - 1]
      assert.same({}, usage.choices)
      assert.matches('"choices":%[%]', res.body)
      assert.same({ prompt_tokens = 2, completion_tokens = 5, total_tokens = 7 }, usage.usage)
      for i = 1, #ev - 2 do assert.equal(cjson.null, ev[i].usage) end
      assert.equal("stop", ev[#ev - 2].choices[1].finish_reason)
    end)

    it("interleaves the choices of a stream with n = 2", function()
      local ev = events(chat(srv, '{"model":"m","n":2,"stream":true,"messages":[{"role":"user","content":"a b"}]}', "-N").body)
      local text, finish = { [0] = "", [1] = "" }, {}
      local order = {}
      for i = 1, #ev - 1 do
        local c = ev[i].choices[1]
        text[c.index] = text[c.index] .. (c.delta.content or "")
        if c.finish_reason ~= cjson.null then finish[c.index] = c.finish_reason end
        order[#order + 1] = c.index
      end
      assert.equal("Hello! You said: a b", text[0])
      assert.equal("[1] Hello! You said: a b", text[1])
      assert.same({ [0] = "stop", [1] = "stop" }, finish)
      assert.same({ 0, 1, 0, 1 }, { order[3], order[4], order[5], order[6] })
    end)

    it("reasons with the reasoner model", function()
      local c = decode(chat(srv, '{"model":"reasoner","messages":[{"role":"user","content":"why"}]}').body)
      assert.equal("Thinking about: why", c.choices[1].message.reasoning_content)
      assert.equal("Hello! You said: why", c.choices[1].message.content)
      local ev = events(chat(srv, '{"model":"reasoner","stream":true,"messages":[{"role":"user","content":"why"}]}', "-N").body)
      local kinds, reasoning, content = {}, "", ""
      for i = 2, #ev - 2 do
        local d = ev[i].choices[1].delta
        if d.reasoning_content then reasoning = reasoning .. d.reasoning_content; kinds[#kinds + 1] = "r" end
        if d.content then content = content .. d.content; kinds[#kinds + 1] = "c" end
      end
      assert.equal("Thinking about: why", reasoning)
      assert.equal("Hello! You said: why", content)
      assert.equal("rrrcccc", table.concat(kinds))
    end)

    local TOOLS = '"tools":[{"type":"function","function":{"name":"get_weather","parameters":{}}},'
      .. '{"type":"function","function":{"name":"search"}}]'

    it("calls the tools named in the last user message with the tools model", function()
      local c = decode(chat(srv, '{"model":"tools",' .. TOOLS
        .. ',"messages":[{"role":"user","content":"SEARCH then Get_Weather in Zürich"}]}').body)
      local choice = c.choices[1]
      assert.equal("tool_calls", choice.finish_reason)
      assert.equal(cjson.null, choice.message.content)
      local calls = choice.message.tool_calls
      assert.equal(2, #calls)
      assert.equal("call_1_0", calls[1].id)
      assert.equal("function", calls[1].type)
      assert.equal("get_weather", calls[1]["function"].name)
      assert.equal("search", calls[2]["function"].name)
      assert.equal("call_1_1", calls[2].id)
      assert.same({ query = "SEARCH then Get_Weather in Zürich" }, decode(calls[1]["function"].arguments))
      assert.equal('{"query": "SEARCH then Get_Weather in Zürich"}', calls[1]["function"].arguments)

      c = decode(chat(srv, '{"model":"tools",' .. TOOLS .. ',"messages":[{"role":"user","content":"hello"}]}').body)
      assert.equal(1, #c.choices[1].message.tool_calls)
      assert.equal("get_weather", c.choices[1].message.tool_calls[1]["function"].name)
    end)

    it("answers tool results with the tools model", function()
      local c = decode(chat(srv, '{"model":"tools",' .. TOOLS .. ',"messages":[{"role":"user","content":"x"},'
        .. '{"role":"assistant","content":null,"tool_calls":[]},'
        .. '{"role":"tool","tool_call_id":"a","content":"21C"},{"role":"tool","tool_call_id":"b","content":"sunny"}]}').body)
      assert.equal("Tool results: 21C | sunny", c.choices[1].message.content)
      assert.equal("stop", c.choices[1].finish_reason)
      -- without tools it behaves like the default model
      c = decode(chat(srv, '{"model":"tools","messages":[{"role":"user","content":"x"}]}').body)
      assert.equal("Hello! You said: x", c.choices[1].message.content)
    end)

    it("streams tool calls in OpenAI's delta shape", function()
      local ev = events(chat(srv, '{"model":"tools","stream":true,' .. TOOLS
        .. ',"messages":[{"role":"user","content":"search for é and ü"}]}', "-N").body)
      assert.equal(cjson.null, ev[1].choices[1].delta.content)
      local first = ev[2].choices[1].delta.tool_calls[1]
      assert.same({ index = 0, id = "call_1_0", type = "function",
        ["function"] = { name = "search", arguments = "" } }, first)
      local args = ""
      for i = 3, #ev - 2 do
        local call = ev[i].choices[1].delta.tool_calls[1]
        assert.same({ "function", "index" }, (function()
          local keys = {}
          for k in pairs(call) do keys[#keys + 1] = k end
          table.sort(keys)
          return keys
        end)())
        assert.is_nil(call["function"].name)
        assert.truthy(#call["function"].arguments <= 10)
        args = args .. call["function"].arguments
      end
      assert.equal('{"query": "search for é and ü"}', args)
      assert.equal("tool_calls", ev[#ev - 1].choices[1].finish_reason)
    end)

    it("refuses stream_options with the strict-stream-options model", function()
      local res = chat(srv, '{"model":"strict-stream-options","stream":true,"stream_options":{"include_usage":true},'
        .. '"messages":[{"role":"user","content":"x"}]}')
      assert.equal(400, res.status)
      assert.same({ error = { message = "Unrecognized request argument supplied: stream_options",
        type = "invalid_request_error", param = "stream_options", code = cjson.null } }, decode(res.body))
      local ev = events(chat(srv, '{"model":"strict-stream-options","stream":true,'
        .. '"messages":[{"role":"user","content":"x"}]}', "-N").body)
      assert.equal("[DONE]", ev[#ev])
    end)

    it("answers 400 to a body that is not JSON", function()
      local res = chat(srv, '{"model":')
      assert.equal(400, res.status)
      assert.equal("invalid_request_error", decode(res.body).error.type)
    end)
  end)

  describe("other endpoints", function()
    it("lists models and gets one", function()
      local res = curl(q(srv.url .. "/models"))
      assert.equal(200, res.status)
      local list = decode(res.body)
      assert.equal("list", list.object)
      assert.truthy(#list.data >= 3)
      assert.same({ id = "test-model", object = "model", created = 1700000000, owned_by = "oai-testing" }, list.data[1])
      assert.equal("reasoner", decode(curl(q(srv.url .. "/models/reasoner")).body).id)
      res = curl(q(srv.url .. "/models/nope"))
      assert.equal(404, res.status)
      assert.equal("model_not_found", decode(res.body).error.code)
    end)

    it("echoes method, body and headers", function()
      local res = post(srv.url .. "/echo", "raw \1 body", "-H 'x-thing: 1'")
      local e = decode(res.body)
      assert.equal("POST", e.method)
      assert.equal("raw \1 body", e.body)
      assert.equal("1", e.headers["x-thing"])
    end)

    it("answers 404 with an error envelope elsewhere", function()
      local res = curl(q(srv.url .. "/nope"))
      assert.equal(404, res.status)
      local err = decode(res.body).error
      assert.equal("invalid_request_error", err.type)
      assert.equal("unknown_url", err.code)
      assert.matches("^req_test_%d+$", res.headers["x-request-id"])
    end)
  end)

  describe("recorded requests", function()
    it("keeps method, path, query, headers and the exact body bytes", function()
      local body = "line1\r\nline2\r\n\0\1\2\127 caf\195\169 \226\152\131 \255\254 \"q\" \\ end\r"
      post(srv.url .. "/echo?a=b&c=%20d", body, "-H 'X-Custom: one' -H 'x-custom: two' -H 'Authorization: Bearer sk-test'")
      local list = srv:requests()
      assert.equal(1, #list)
      local r = list[1]
      assert.same(r, srv:last_request())
      assert.equal("POST", r.method)
      assert.equal("/v1/echo", r.path)
      assert.equal("a=b&c=%20d", r.query)
      assert.equal(body, r.body)
      assert.is_nil(r.json)
      assert.equal("one, two", r.headers["x-custom"])
      assert.equal("Bearer sk-test", r.headers.authorization)
      assert.equal("application/json", r.headers["content-type"])
      assert.equal(tostring(#body), r.headers["content-length"])
      assert.equal("HTTP/1.1", r.protocol)
      assert.equal("http", r.scheme)
      assert.is_number(r.connection)
      assert.equal(1, r.connection_requests)
      assert.equal("req_test_1", r.request_id)
    end)

    it("decodes JSON bodies", function()
      chat(srv, HELLO)
      assert.equal("test-model", srv:last_request().json.model)
      assert.equal("hi there", srv:last_request().json.messages[2].content)
    end)

    it("reads bodies nginx spooled to a file", function()
      local parts = {}
      for i = 0, 255 do parts[#parts + 1] = string.char(i) end
      local body = string.rep(table.concat(parts), 12 * 1024) -- 3 MiB, every byte value
      post(srv.url .. "/echo", body, "-o /dev/null")
      local r = srv:last_request()
      assert.equal(#body, #r.body)
      assert.truthy(r.body == body)
    end)

    it("shows connection reuse", function()
      curl("--http1.1 -o /dev/null " .. q(srv.url .. "/models") .. " " .. q(srv.url .. "/models/tools"))
      curl("--http1.1 " .. q(srv.url .. "/models"))
      local list = srv:requests()
      assert.equal(3, #list)
      assert.equal(list[1].connection, list[2].connection)
      assert.equal(2, list[2].connection_requests)
      assert.are_not.equal(list[1].connection, list[3].connection)
    end)

    it("forgets requests and restarts the counter on clear", function()
      curl(q(srv.url .. "/models"))
      assert.equal(1, #srv:requests())
      srv:clear()
      assert.same({}, srv:requests())
      assert.is_nil(srv:last_request())
      local res = curl(q(srv.url .. "/models"))
      assert.equal("req_test_1", res.headers["x-request-id"])
    end)
  end)

  describe("control headers", function()
    local M = q(srv and srv.url or "")
    before_each(function() M = q(srv.url .. "/models") end)

    it("x-test-status answers an OpenAI error envelope", function()
      local res = curl("-H 'x-test-status: 429' " .. M)
      assert.equal(429, res.status)
      assert.equal("application/json", res.headers["content-type"])
      assert.equal("req_test_1", res.headers["x-request-id"])
      assert.same({ error = { message = "Test error 429", type = "requests", param = cjson.null,
        code = "rate_limit_exceeded" } }, decode(res.body))
      local types = { [400] = "invalid_request_error", [401] = "authentication_error",
        [403] = "permission_error", [404] = "not_found_error", [409] = "conflict_error",
        [422] = "invalid_request_error", [500] = "server_error", [503] = "server_error" }
      for status, etype in pairs(types) do
        res = curl("-H 'x-test-status: " .. status .. "' " .. M)
        assert.equal(status, res.status)
        assert.same({ error = { message = "Test error " .. status, type = etype, param = cjson.null,
          code = cjson.null } }, decode(res.body))
      end
      -- a status below 400 keeps the normal body
      res = curl("-H 'x-test-status: 203' " .. M)
      assert.equal(203, res.status)
      assert.equal("list", decode(res.body).object)
      -- also on chat completions, streamed or not
      res = chat(srv, '{"model":"m","stream":true,"messages":[]}', "-H 'x-test-status: 500'")
      assert.equal(500, res.status)
      assert.equal("server_error", decode(res.body).error.type)
    end)

    it("x-test-envelope: 0 answers an HTML page", function()
      local res = curl("-H 'x-test-status: 502' -H 'x-test-envelope: 0' " .. M)
      assert.equal(502, res.status)
      assert.equal("text/html", res.headers["content-type"])
      assert.equal("<html><body><h1>502 Bad Gateway</h1></body></html>", res.body)
    end)

    it("passes retry hints through", function()
      local res = curl("-H 'x-test-status: 503' -H 'x-test-retry-after: Wed, 21 Oct 2015 07:28:00 GMT' "
        .. "-H 'x-test-retry-after-ms: 250' -H 'x-test-should-retry: false' " .. M)
      assert.equal("Wed, 21 Oct 2015 07:28:00 GMT", res.headers["retry-after"])
      assert.equal("250", res.headers["retry-after-ms"])
      assert.equal("false", res.headers["x-should-retry"])
    end)

    it("x-test-fail-times fails the first N requests of a key", function()
      local function status(key, extra)
        return curl("-H 'x-test-fail-times: 2' -H 'x-test-key: " .. key .. "' " .. (extra or "") .. M).status
      end
      assert.equal(500, status("a"))
      assert.equal(429, status("a", "-H 'x-test-status: 429' "))
      assert.equal(200, status("a"))
      assert.equal(200, status("a", "-H 'x-test-status: 429' "))
      assert.equal(500, status("b"))
      srv:clear()
      assert.equal(500, status("a"))
    end)

    it("x-test-delay-ms delays the response headers", function()
      local res = curl("-H 'x-test-delay-ms: 250' " .. M)
      assert.equal(200, res.status)
      assert.truthy(res.time >= 0.24, res.time)
    end)

    it("x-test-chunks streams exactly N content chunks", function()
      local res = chat(srv, '{"model":"m","stream":true,"messages":[]}', "-N -H 'x-test-chunks: 5'")
      local ev = events(res.body)
      local pieces = {}
      for i = 2, #ev - 2 do pieces[#pieces + 1] = ev[i].choices[1].delta.content end
      assert.same({ "w1 ", "w2 ", "w3 ", "w4 ", "w5" }, pieces)
      local c = decode(chat(srv, '{"model":"m","messages":[]}', "-H 'x-test-chunks: 3'").body)
      assert.equal("w1 w2 w3", c.choices[1].message.content)
    end)

    it("x-test-chunk-delay-ms sleeps between chunks", function()
      local res = chat(srv, '{"model":"m","stream":true,"messages":[]}',
        "-N -H 'x-test-chunks: 3' -H 'x-test-chunk-delay-ms: 100'")
      assert.equal("[DONE]", events(res.body)[6])
      assert.truthy(res.time >= 0.19, res.time)
    end)

    it("x-test-stall-ms stalls streams and plain bodies", function()
      local res = chat(srv, '{"model":"m","stream":true,"messages":[]}', "-N -H 'x-test-chunks: 2' -H 'x-test-stall-ms: 300'")
      assert.equal(5, #events(res.body))
      assert.truthy(res.time >= 0.29, res.time)
      res = curl("-H 'x-test-stall-ms: 300' " .. M)
      assert.truthy(#decode(res.body).data >= 3)
      assert.equal(tostring(#res.body), res.headers["content-length"])
      assert.truthy(res.time >= 0.29, res.time)
    end)

    it("x-test-drop closes the connection", function()
      local res = curl("-H 'x-test-drop: before-headers' " .. M)
      assert.equal(52, res.rc) -- empty reply
      res = curl("--http1.1 -H 'x-test-drop: mid-body' " .. M)
      assert.equal(18, res.rc) -- partial file
      assert.equal(200, res.status)
      assert.equal(math.floor(tonumber(res.headers["content-length"]) / 2), #res.body)
      res = chat(srv, '{"model":"m","stream":true,"messages":[{"role":"user","content":"a b c"}]}',
        "-N -H 'x-test-drop: mid-stream'")
      assert.equal(18, res.rc)
      local ev = events(res.body)
      assert.equal(3, #ev) -- role chunk + 2 content chunks
      assert.falsy(res.body:find("[DONE]", 1, true))
      assert.equal(3, #srv:requests()) -- recorded before responding
    end)

    it("x-test-script plays raw bytes exactly", function()
      local bytes = { "data:{\"a\":1}\r\r", "data: caf\195", "\169\0\255\n", ": comment\r\n\r\n", "data: tail" }
      srv:script("quirks", {
        { status = 201, headers = { ["content-type"] = "text/event-stream; charset=utf-8", ["x-extra"] = "yes" } },
        { send = bytes[1] }, { flush = true }, { send = bytes[2] }, { sleep_ms = 50 },
        { send = bytes[3] }, { send = bytes[4] }, { sleep_ms = 10 }, { send = bytes[5] },
      })
      local res = curl("-N -H 'x-test-script: quirks' " .. q(srv.url .. "/chat/completions"))
      assert.equal(0, res.rc)
      assert.equal(201, res.status)
      assert.equal("text/event-stream; charset=utf-8", res.headers["content-type"])
      assert.equal("yes", res.headers["x-extra"])
      assert.matches("^req_test_%d+$", res.headers["x-request-id"])
      assert.equal(table.concat(bytes), res.body)

      srv:script("cut", { { send = "data: x\n\n" }, { close = true } })
      res = curl("-N -H 'x-test-script: cut' " .. q(srv.url .. "/chat/completions"))
      assert.equal(18, res.rc)
      assert.equal(200, res.status)
      assert.equal("text/event-stream", res.headers["content-type"])
      assert.equal("data: x\n\n", res.body)

      local json = '{"id":"x","object":"chat.completion","choices":[]}'
      srv:script("plain", { { headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#json) } },
        { send = json:sub(1, 10) }, { sleep_ms = 20 }, { send = json:sub(11) } })
      res = curl("--http1.1 -H 'x-test-script: plain' " .. M)
      assert.equal(0, res.rc)
      assert.equal(json, res.body)
      assert.equal(tostring(#json), res.headers["content-length"])
      assert.is_nil(res.headers["transfer-encoding"])

      res = curl("-H 'x-test-script: missing' " .. M)
      assert.equal(500, res.status)
    end)

    it("rejects malformed scripts", function()
      assert.has_error(function() srv:script("a/b", {}) end, "oai.testing: script name must match [%w_.-]+")
      assert.has_error(function() srv:script("x", { { send = "a" }, { status = 200 } }) end,
        "oai.testing: script step 2: status/headers must be the first step")
      assert.has_error(function() srv:script("x", { { wait = 1 } }) end,
        "oai.testing: script step 1: unknown key wait")
    end)

    it("x-test-body-bytes answers a completion of exactly N bytes", function()
      local res = chat(srv, '{"model":"big","messages":[]}', "-H 'x-test-body-bytes: 1000000'")
      assert.equal(200, res.status)
      assert.equal(1000000, #res.body)
      assert.equal("1000000", res.headers["content-length"])
      local c = decode(res.body)
      assert.equal("chat.completion", c.object)
      assert.equal("big", c.model)
      assert.matches("^x+$", c.choices[1].message.content)
    end)
  end)

  describe("HTTPS", function()
    it("verifies with ca_file and negotiates HTTP/2", function()
      local res = curl("--http2 --cacert " .. q(srv.ca_file) .. " " .. q(srv.tls_url .. "/models"))
      assert.equal(0, res.rc)
      assert.equal(200, res.status)
      assert.equal("2", res.http_version)
      local r = srv:last_request()
      assert.equal("HTTP/2.0", r.protocol)
      assert.equal("https", r.scheme)
    end)

    it("speaks HTTP/1.1 too, and is valid for 127.0.0.1", function()
      local res = curl("--http1.1 --cacert " .. q(srv.ca_file) .. " " .. q("https://127.0.0.1:" .. srv.tls_port .. "/v1/models"))
      assert.equal(200, res.status)
      assert.equal("1.1", res.http_version)
      assert.equal("HTTP/1.1", srv:last_request().protocol)
    end)

    it("records HTTP/2 request bodies and streams over HTTP/2", function()
      local res = post(srv.tls_url .. "/chat/completions",
        '{"model":"m","stream":true,"messages":[{"role":"user","content":"h2"}]}',
        "--http2 -N --cacert " .. q(srv.ca_file))
      -- post() forces --http1.1 first; the later --http2 wins
      assert.equal("2", res.http_version)
      local ev = events(res.body)
      assert.equal("[DONE]", ev[#ev])
      assert.equal("h2", srv:last_request().json.messages[1].content)
    end)

    it("fails verification with other_ca_file", function()
      local res = curl("--cacert " .. q(srv.other_ca_file) .. " " .. q(srv.tls_url .. "/models"))
      assert.equal(60, res.rc)
      assert.same({}, srv:requests())
    end)
  end)

  describe("lifecycle", function()
    it("runs several servers at once and stops idempotently", function()
      local other = testing.start()
      assert.are_not.equal(srv.port, other.port)
      assert.are_not.equal(srv.dir, other.dir)
      assert.is_nil(other.tls_url)
      assert.equal(200, curl(q(other.url .. "/models")).status)
      assert.equal(1, #other:requests())
      assert.same({}, srv:requests())
      local pid, dir = other.pid, other.dir
      other:stop()
      assert.falsy(alive(pid))
      assert.is_nil(io.open(dir .. "/nginx.conf"))
      assert.equal(7, curl(q(other.url .. "/models")).rc) -- connection refused
      other:stop()
    end)

    it("keeps a directory it did not create, and restarts in it", function()
      local dir = tmp .. "/kept"
      local a = testing.start { dir = dir }
      a:stop()
      local b = testing.start { dir = dir }
      assert.equal(200, curl(q(b.url .. "/models")).status)
      assert.equal(1, #b:requests())
      b:stop()
      assert.truthy(io.open(dir .. "/nginx.conf"))
    end)

    it("is stopped by its watchdog when the Lua process exits without stop", function()
      local dir = tmp .. "/orphan"
      local out = run("lua5.4 -e " .. q("package.path = 'lua/?.lua;' .. package.path "
        .. "local s = require('oai.testing').start { dir = " .. string.format("%q", dir) .. " } "
        .. "io.write(s.pid, ' ', s.url, ' ', s.dir) io.stdout:flush() os.exit(0)"))
      assert.equal(dir, out:match("(%S+)$"))
      local pid, url = out:match("^(%d+) (%S+)")
      pid = assert(tonumber(pid), out)
      assert.equal(200, curl(q(url .. "/models")).status)
      assert.truthy(wait_dead(pid, 5))
    end)

    it("stops a server that is garbage collected", function()
      local other = testing.start()
      local pid, dir = other.pid, other.dir
      other = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      assert.falsy(alive(pid))
      assert.is_nil(io.open(dir .. "/nginx.conf"))
    end)

    it("has a command line for make demo and CI", function()
      local dir = tmp .. "/cli"
      local out, rc = run("lua5.4 lua/oai/testing.lua start " .. q(dir))
      assert.equal(0, rc)
      local url = out:match("^(http://127%.0%.0%.1:%d+/v1)\n$")
      assert.truthy(url, out)
      assert.equal(200, curl(q(url .. "/models")).status)
      local attached = testing.attach(dir)
      assert.equal(url, attached.url)
      assert.equal(1, #attached:requests())
      local pid = attached.pid
      out, rc = run("lua5.4 lua/oai/testing.lua stop " .. q(dir))
      assert.equal(0, rc)
      assert.falsy(alive(pid))
      assert.equal(7, curl(q(url .. "/models")).rc)
    end)

    it("raises with the error log when nginx cannot start", function()
      local ok, err = pcall(testing.start, { nginx = "/bin/false" })
      assert.is_false(ok)
      assert.matches("oai.testing: nginx did not start", err)
    end)
  end)
end)
