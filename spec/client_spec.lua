-- The client against the local server: requests, errors, retries, timeouts,
-- TLS, HTTP/2, connection reuse, tasks.
local oai = require "oai"
local two = require("helpers").two
local server = require "server"

local KEY = "sk-test-0123456789abcdef"

local function user(text) return { role = "user", content = text } end

describe("oai client", function()
  local srv, client

  lazy_setup(function()
    srv = server.start { tls = true }
    client = oai.new { base_url = srv.url, api_key = KEY, max_retries = 2 }
  end)

  lazy_teardown(function()
    if srv then srv:stop() end
  end)

  before_each(function() srv:clear() end)

  local function chat(headers, extra)
    local req = { model = "test-model", messages = { user("hello there") } }
    for k, v in pairs(extra or {}) do req[k] = v end
    return two(client:chat(req, { headers = headers }))
  end

  describe("chat", function()
    it("returns the decoded completion with integers as integers", function()
      local res, err = chat()
      assert.is_nil(err)
      assert.equal("Hello! You said: hello there", res.choices[1].message.content)
      assert.equal("chat.completion", res.object)
      assert.equal(0, res.choices[1].index)
      assert.equal(1700000000, res.created)
      if math.type then
        assert.equal("integer", math.type(res.created))
        assert.equal("integer", math.type(res.usage.total_tokens))
      end
      assert.equal(res.usage.prompt_tokens + res.usage.completion_tokens, res.usage.total_tokens)
    end)

    it("sends the request exactly as given, with sorted keys and vendor fields", function()
      local req = {
        model = "test-model",
        messages = { user("hi"), { role = "assistant", content = oai.null } },
        enable_thinking = false, llmgw_thinking = { budget = 100 }, reasoning_effort = "low",
        tools = oai.array(), temperature = 0.5, max_tokens = 7, logit_bias = { ["50256"] = -100 },
      }
      local res, _, err = client:chat(req)
      assert.is_nil(err)
      assert.truthy(res)
      local r = srv:last_request()
      assert.equal("POST", r.method)
      assert.equal("/v1/chat/completions", r.path)
      assert.equal('{"enable_thinking":false,"llmgw_thinking":{"budget":100},"logit_bias":{"50256":-100},'
        .. '"max_tokens":7,"messages":[{"content":"hi","role":"user"},{"content":null,"role":"assistant"}],'
        .. '"model":"test-model","reasoning_effort":"low","temperature":0.5,"tools":[]}', r.body)
      assert.equal("application/json", r.headers["content-type"])
      assert.equal("application/json", r.headers["accept"])
      assert.equal("Bearer " .. KEY, r.headers["authorization"])
      assert.truthy(r.headers["user-agent"]:find("^oai%-lua/"))
      assert.is_nil(r.headers["expect"])
    end)

    it("adds no Authorization header without a key, and sends extra headers", function()
      -- OPENAI_API_KEY may be set in the environment: "" means no key
      local c = oai.new { base_url = srv.url, api_key = "", headers = { ["X-Org"] = "o1" } }
      assert.truthy(c:chat({ model = "m", messages = { user("x") } }, { headers = { ["X-Call"] = "c1" } }))
      local r = srv:last_request()
      assert.is_nil(r.headers["authorization"])
      assert.equal("o1", r.headers["x-org"])
      assert.equal("c1", r.headers["x-call"])
    end)

    it("lets a user header replace a default one", function()
      assert.truthy(chat({ ["accept"] = "application/x-custom" }))
      assert.equal("application/x-custom", srv:last_request().headers["accept"])
    end)

    it("raises on an unencodable request, naming the path", function()
      assert.has_error(function()
        client:chat { model = "m", messages = { user("a"), { role = "user", content = print } } }
      end, "oai.json.encode: messages[2].content: cannot encode a function")
    end)

    it("raises on header injection without echoing the value", function()
      local ok, err = pcall(chat, { ["X-Evil"] = "a\r\nX-Injected: 1" })
      assert.is_false(ok)
      assert.truthy(tostring(err):find("X-Evil", 1, true))
      assert.falsy(tostring(err):find("X-Injected", 1, true))
      assert.equal(0, #srv:requests())
    end)

    it("exposes response metadata with oai.meta", function()
      local res = assert(chat())
      local m = oai.meta(res)
      assert.equal(200, m.status)
      assert.truthy(m.request_id:find("^req_test_"))
      assert.equal(m.request_id, m.headers["x-request-id"])
      assert.equal(1, m.attempts)
      assert.truthy(m.elapsed >= 0)
    end)
  end)

  describe("models, get and post", function()
    it("lists models", function()
      local models, _, err = client:models()
      assert.is_nil(err)
      assert.truthy(#models >= 3)
      assert.equal("test-model", models[1].id)
      assert.equal("GET", srv:last_request().method)
      assert.equal("/v1/models", srv:last_request().path)
    end)

    it("gets and posts other endpoints", function()
      local m = assert(client:get("/models/reasoner"))
      assert.equal("reasoner", m.id)
      local echo = assert(client:post("/echo", { a = 1, b = oai.array() }))
      assert.equal('{"a":1,"b":[]}', echo.body)
    end)
  end)

  describe("errors", function()
    it("maps an error envelope to kind api with its fields", function()
      local res, err = chat({ ["x-test-status"] = "400" })
      assert.is_nil(res)
      assert.equal("api", err.kind)
      assert.equal(400, err.status)
      assert.equal("invalid_request_error", err.type)
      assert.equal("Test error 400", err.message)
      assert.truthy(err.request_id:find("^req_test_"))
      assert.equal(1, err.attempts)
      assert.equal("oai: 400 invalid_request_error: Test error 400 (request " .. err.request_id .. ")", tostring(err))
    end)

    it("maps a non-JSON error page to kind http with the body", function()
      local _, err = chat({ ["x-test-status"] = "404", ["x-test-envelope"] = "0" })
      assert.equal("http", err.kind)
      assert.equal(404, err.status)
      assert.truthy(err.body:find("<html>", 1, true))
      assert.truthy(tostring(err):find("^oai: 404 http: "))
    end)

    it("reports connection failures as kind network with the libcurl name", function()
      local c = oai.new { base_url = "http://127.0.0.1:1/v1", api_key = KEY, max_retries = 0 }
      local _, _, err = c:chat { model = "m", messages = { user("x") } }
      assert.equal("network", err.kind)
      assert.equal("COULDNT_CONNECT", err.name)
      assert.equal(1, err.attempts)
    end)

    it("reports a 2xx body that is not JSON as kind protocol", function()
      srv:script("notjson", { { status = 200, headers = { ["content-type"] = "application/json" } },
                              { send = "this is not json" } })
      local _, err = chat({ ["x-test-script"] = "notjson" })
      assert.equal("protocol", err.kind)
      assert.equal("this is not json", err.body)
    end)

    it("never shows the API key, even when the server echoes it", function()
      srv:script("echo-key", { { status = 500, headers = { ["content-type"] = "text/plain" } },
                               { send = "bad key " .. KEY .. " here" } })
      local _, _, err = client:chat({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-script"] = "echo-key" }, max_retries = 0 })
      assert.equal("http", err.kind)
      assert.falsy(err.body:find(KEY, 1, true))
      assert.falsy(tostring(err):find(KEY, 1, true))
      assert.truthy(err.body:find("[REDACTED]", 1, true))
      assert.falsy(tostring(client):find(KEY, 1, true))
    end)
  end)

  describe("secrets", function()
    -- every table reachable from v (keys and values; metatables skipped)
    -- -> the path of the first string holding `needle`, or nil
    local function find_in(v, needle, path, seen)
      path, seen = path or "root", seen or {}
      if type(v) == "string" then return v:find(needle, 1, true) and path or nil end
      if type(v) ~= "table" or seen[v] then return nil end
      seen[v] = true
      for k, x in pairs(v) do
        local found = find_in(k, needle, path .. "[key]", seen)
          or find_in(x, needle, path .. "." .. tostring(k), seen)
        if found then return found end
      end
      return nil
    end

    local function sse(...)
      local out = {}
      for i, doc in ipairs({ ... }) do out[i] = "data: " .. oai.json.encode(doc) .. "\n\n" end
      return table.concat(out)
    end

    it("keeps the API key out of everything reachable from the client, its streams and errors", function()
      local c = oai.new { base_url = srv.url, api_key = KEY, ca_file = srv.ca_file, max_retries = 0 }
      local req = { model = "test-model", messages = { user("hi") } }
      assert.truthy(c:chat(req))
      assert.truthy(c:chat(req, { headers = { ["X-Call"] = "1" } }))
      assert.truthy(c:models())
      local s = assert(c:stream(req))
      assert.truthy(s:result())
      local _, _, err = c:chat(req, { headers = { ["x-test-status"] = "401" } })
      assert.truthy(err)
      local fs = assert(c:stream(req, { headers = { ["x-test-drop"] = "mid-stream" } }))
      local _, _, serr = fs:result()
      assert.truthy(serr)
      assert.equal("Bearer " .. KEY, srv:last_request().headers["authorization"])
      assert.is_nil(find_in(c, KEY))
      assert.is_nil(find_in(s, KEY))
      assert.is_nil(find_in(fs, KEY))
      assert.is_nil(find_in(err, KEY))
      assert.is_nil(find_in(serr, KEY))
    end)

    it("masks an echoed key in every string of an error envelope, nested ones too", function()
      srv:script("echo-envelope", { { status = 401, headers = { ["content-type"] = "application/json" } },
        { send = oai.json.encode { error = { message = "bad key " .. KEY, code = KEY, type = "auth",
          param = { nested = { "x" .. KEY .. "y" }, [KEY] = true } } } } })
      local _, _, err = client:chat({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-script"] = "echo-envelope" }, max_retries = 0 })
      assert.equal("api", err.kind)
      assert.equal("bad key [REDACTED]", err.message)
      assert.equal("bad key [REDACTED]", err.error.message)
      assert.equal("[REDACTED]", err.code)
      assert.equal("[REDACTED]", err.error.code)
      assert.equal("x[REDACTED]y", err.error.param.nested[1])
      assert.is_true(err.error.param["[REDACTED]"])
      assert.is_nil(find_in(err, KEY))
    end)

    it("masks an echoed key in an in-stream error, its raw data and the partial completion", function()
      local chunk = { id = "c1", object = "chat.completion.chunk", created = 1, model = "m",
        choices = { { index = 0, delta = { role = "assistant", content = "your key is " .. KEY } } } }
      srv:script("echo-stream", { { status = 200, headers = { ["content-type"] = "text/event-stream" } },
        { send = sse(chunk, { error = { message = "bad key " .. KEY, code = KEY, details = { KEY } } }) } })
      local s = assert(client:stream({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-script"] = "echo-stream" }, max_retries = 0 }))
      local _, _, err = s:result()
      assert.equal("api", err.kind)
      assert.equal("bad key [REDACTED]", err.error.message)
      assert.equal("[REDACTED]", err.code)
      assert.equal("[REDACTED]", err.error.details[1])
      assert.equal("your key is [REDACTED]", err.partial.choices[1].message.content)
      assert.is_nil(find_in(err, KEY))
      assert.falsy(tostring(err):find(KEY, 1, true))
    end)

    it("masks strings in errors without looping on cycles", function()
      local t = { msg = "k " .. KEY }
      t.self = t
      local err = oai.errors.new({ kind = "api", message = KEY, body = KEY, partial = t, list = { t, { KEY } } }, KEY)
      assert.equal("[REDACTED]", err.message)
      assert.equal("[REDACTED]", err.body)
      assert.equal("k [REDACTED]", err.partial.msg)
      assert.equal(err.partial, err.partial.self)
      assert.equal("[REDACTED]", err.list[2][1])
    end)
  end)

  describe("URLs", function()
    local origin   -- "http://127.0.0.1:PORT", base_url without a path

    before_each(function() origin = srv.url:gsub("/v1$", "") end)

    it("keeps a relative path under base_url, even one that looks like an authority", function()
      local c = oai.new { base_url = origin, api_key = KEY, max_retries = 0 }
      local port = origin:match(":(%d+)$")
      local path = "@127.0.0.1:" .. port .. "/v1/models"
      c:get(path)
      local r = srv:last_request()
      assert.equal("/" .. path, r.path)
      -- with or without the leading slash, under base_url's path
      c = oai.new { base_url = srv.url .. "/", api_key = KEY, max_retries = 0 }
      assert.truthy(c:get("models"))
      assert.equal("/v1/models", srv:last_request().path)
      assert.truthy(c:get("/models"))
      assert.equal("/v1/models", srv:last_request().path)
    end)

    it("sends no credentials to an absolute URL on another scheme, host or port unless the call passes api_key", function()
      local c = oai.new { base_url = srv.url, api_key = KEY, ca_file = srv.ca_file, max_retries = 0,
                          headers = { ["api-key"] = KEY, ["X-Org"] = "o1" } }
      -- same origin, absolute: credentials go
      assert.truthy(c:get(srv.url .. "/models"))
      local r = srv:last_request()
      assert.equal("Bearer " .. KEY, r.headers["authorization"])
      assert.equal(KEY, r.headers["api-key"])
      -- another scheme, host and port (the TLS listener at localhost): none
      assert.truthy(c:get(srv.tls_url .. "/models"))
      r = srv:last_request()
      assert.is_nil(r.headers["authorization"])
      assert.is_nil(r.headers["api-key"])
      assert.equal("o1", r.headers["x-org"])
      assert.truthy(c:chat({ model = "test-model", messages = { user("x") } }, { base_url = srv.url }))
      assert.equal("Bearer " .. KEY, srv:last_request().headers["authorization"])
      -- unless the call passes api_key
      assert.truthy(c:get(srv.tls_url .. "/models", { api_key = "sk-other-0123456789" }))
      assert.equal("Bearer sk-other-0123456789", srv:last_request().headers["authorization"])
    end)

    it("compares origins by scheme, host and port, default ports included", function()
      local o = oai._origin_of
      assert.equal("https://api.example.com:443", o("HTTPS://API.example.com/v1"))
      assert.equal(o("http://h/x"), o("http://user:pw@h:80/y"))
      assert.equal("http://evil.com:80", o("http://good.com@evil.com/"))
      assert.is_nil(o("http://good.com\\@evil.com/"))
      assert.is_nil(o("http://h:x/"))
      assert.equal("http://[::1]:8080", o("http://[::1]:8080/v1"))
    end)

    it("masks base_url credentials in tostring(client) and in errors", function()
      local c = oai.new { base_url = "http://user:pa55word@127.0.0.1:1/v1", api_key = KEY, max_retries = 0 }
      assert.equal("oai.client (http://***@127.0.0.1:1/v1)", tostring(c))
      local err = oai.errors.new({ kind = "network", message = "cannot reach http://user:pa55word@127.0.0.1:1/v1" })
      assert.equal("cannot reach http://***@127.0.0.1:1/v1", err.message)
      local _, _, e = c:chat { model = "m", messages = { user("x") } }
      assert.falsy(tostring(e):find("pa55word", 1, true))
    end)
  end)

  describe("retries", function()
    local fast = 0.05
    local function key() return "k" .. tostring(math.random(1, 1e9)) end

    it("retries 429 and 5xx up to max_retries, counting attempts", function()
      local t0 = oai.core.monotime()
      local _, _, err = client:chat({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-status"] = "503", ["x-test-retry-after-ms"] = "10" } })
      assert.equal(503, err.status)
      assert.equal(3, err.attempts)
      assert.equal(3, #srv:requests())
      assert.truthy(oai.core.monotime() - t0 < 1)
      assert.truthy(tostring(err):find("3 attempts", 1, true))
    end)

    it("succeeds after transient failures", function()
      local res, err = chat({ ["x-test-status"] = "429", ["x-test-fail-times"] = "2",
                              ["x-test-key"] = key(), ["x-test-retry-after-ms"] = "10" })
      assert.is_nil(err)
      assert.equal(3, oai.meta(res).attempts)
    end)

    it("does not retry other 4xx", function()
      local _, err = chat({ ["x-test-status"] = "401" })
      assert.equal(1, err.attempts)
      assert.equal(1, #srv:requests())
    end)

    it("retries 408 and 409", function()
      for _, st in ipairs({ "408", "409" }) do
        srv:clear()
        local _, err = chat({ ["x-test-status"] = st, ["x-test-retry-after-ms"] = "1" })
        assert.equal(3, err.attempts)
      end
    end)

    it("honours x-should-retry both ways", function()
      local _, err = chat({ ["x-test-status"] = "500", ["x-test-should-retry"] = "false" })
      assert.equal(1, err.attempts)
      srv:clear()
      _, err = chat({ ["x-test-status"] = "400", ["x-test-should-retry"] = "true",
                      ["x-test-retry-after-ms"] = "1" })
      assert.equal(3, err.attempts)
    end)

    it("waits retry-after-ms, retry-after seconds and an HTTP-date retry-after", function()
      local t0 = oai.core.monotime()
      chat({ ["x-test-status"] = "429", ["x-test-fail-times"] = "1", ["x-test-key"] = key(),
             ["x-test-retry-after-ms"] = "300" })
      local dt = oai.core.monotime() - t0
      assert.truthy(dt >= 0.29 and dt < 1.5, dt)
      t0 = oai.core.monotime()
      chat({ ["x-test-status"] = "429", ["x-test-fail-times"] = "1", ["x-test-key"] = key(),
             ["x-test-retry-after"] = "1" })
      dt = oai.core.monotime() - t0
      assert.truthy(dt >= 0.99 and dt < 2.5, dt)
      local date = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 2)
      t0 = oai.core.monotime()
      local res, err = chat({ ["x-test-status"] = "429", ["x-test-fail-times"] = "1", ["x-test-key"] = key(),
                              ["x-test-retry-after"] = date })
      dt = oai.core.monotime() - t0
      assert.is_nil(err)
      assert.truthy(res)
      assert.truthy(dt >= 0.9 and dt < 3.5, dt)
      assert.equal(err, nil)
    end)

    it("parses retry-after values and ignores out-of-range ones for backoff", function()
      assert.equal(0.25, oai._retry_after({ ["retry-after-ms"] = "250" }))
      assert.equal(3, oai._retry_after({ ["retry-after"] = "3" }))
      local d = oai._retry_after({ ["retry-after"] = os.date("!%a, %d %b %Y %H:%M:%S GMT", os.time() + 10) })
      assert.truthy(d > 8 and d <= 10)
      -- 120 s is above the 60 s cap: exponential backoff instead
      local b = oai._backoff(1, { ["retry-after"] = "120" })
      assert.truthy(b > 0.37 and b <= 0.5, b)
      b = oai._backoff(3, {})
      assert.truthy(b > 1.49 and b <= 2, b)
      b = oai._backoff(10, {})
      assert.truthy(b > 5.99 and b <= 8, b)
    end)

    it("retries dropped connections", function()
      local _, _, err = client:chat({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-drop"] = "before-headers" }, max_retries = 1 })
      assert.equal("network", err.kind)
      assert.equal(2, err.attempts)
      -- libcurl itself may retry once on a fresh connection when a reused
      -- one dies before answering
      assert.truthy(#srv:requests() >= 2)
    end)
  end)

  describe("numeric options and arguments", function()
    local NAN, INF = 0 / 0, math.huge
    -- fn must raise msg at once; a hang (the old NaN behaviour) fails instead
    local function raises(msg, fn)
      local loop = require "oai.loop"
      local t0 = oai.core.monotime()
      loop.on_pump = function()
        if oai.core.monotime() - t0 > 1 then loop.on_pump = nil; error("hung instead of raising", 0) end
      end
      local ok, err = pcall(fn)
      loop.on_pump = nil
      assert.is_false(ok, "did not raise: " .. msg)
      assert.equal(msg, (tostring(err):gsub("^[^:]*:%d+: ", "")))
    end

    it("oai.new rejects NaN, negative, infinite and out-of-range values, naming the option", function()
      local cases = {
        { "timeout", NAN, "a non-negative number (got nan)" },
        { "timeout", -1, "a non-negative number (got -1)" },
        { "timeout", INF, "a non-negative number up to 1000000000 (got inf)" },
        { "connect_timeout", NAN, "a non-negative number (got nan)" },
        { "idle_timeout", NAN, "a non-negative number (got nan)" },
        { "idle_timeout", -INF, "a non-negative number (got -inf)" },
        { "grace", NAN, "a non-negative number (got nan)" },
        { "grace", "2", "a non-negative number (got string)" },
        { "max_retries", NAN, "a non-negative integer (got nan)" },
        { "max_retries", 1.5, "a non-negative integer (got 1.5)" },
        { "max_retries", -1, "a non-negative integer (got -1)" },
        { "max_retries", INF, "a non-negative integer up to 1000000 (got inf)" },
        { "max_body_bytes", NAN, "a non-negative integer (got nan)" },
        { "max_body_bytes", 1e13, "a non-negative integer up to 1000000000000 (got 10000000000000)" },
        { "max_event_bytes", NAN, "a positive integer (got nan)" },
        { "max_event_bytes", 0, "a positive integer (got 0)" },
      }
      for _, c in ipairs(cases) do
        raises("oai.new: " .. c[1] .. " must be " .. c[3], function()
          oai.new { base_url = srv.url, [c[1]] = c[2] }
        end)
      end
      -- the limits themselves are fine, and 0 still means "no limit"
      assert.truthy(oai.new { base_url = srv.url, timeout = 0, max_retries = 0, grace = 0, max_body_bytes = 0 })
      assert.truthy(oai.new { base_url = srv.url, timeout = 1e9, max_retries = 1e6, max_event_bytes = 1 })
    end)

    it("the same options per call are checked before anything is sent", function()
      for _, k in ipairs({ "timeout", "connect_timeout", "idle_timeout", "grace", "max_retries" }) do
        raises("oai call options: " .. k .. " must be a non-negative " .. (k == "max_retries" and "integer" or "number")
          .. " (got nan)", function()
          client:chat({ model = "test-model", messages = { user("x") } }, { [k] = NAN })
        end)
        raises("oai call options: " .. k .. " must be a non-negative " .. (k == "max_retries" and "integer" or "number")
          .. " (got nan)", function()
          client:stream({ model = "test-model", messages = { user("x") } }, { [k] = NAN })
        end)
      end
      assert.equal(0, #srv:requests())
    end)

    it("oai.sleep and oai.step reject NaN, negative and infinite values (inside tasks too)", function()
      raises("oai.sleep: seconds must be a non-negative number (got nan)", function() oai.sleep(NAN) end)
      raises("oai.sleep: seconds must be a non-negative number (got -1)", function() oai.sleep(-1) end)
      raises("oai.sleep: seconds must be a non-negative number (got inf)", function() oai.sleep(INF) end)
      raises("oai.step: timeout must be a non-negative number (got nan)", function() oai.step(NAN) end)
      raises("oai.step: budget must be a non-negative number (got nan)", function() oai.step(0, NAN) end)
      -- a task's NaN sleep used to block every later timer
      local err, woke
      oai.spawn({ on_error = function(e) err = e end }, function() oai.sleep(NAN) end)
      oai.spawn(function() oai.sleep(0.01); woke = true end)
      raises("nothing", function() oai.run(); error("nothing", 0) end)
      assert.truthy(tostring(err):find("oai.sleep: seconds must be a non-negative number (got nan)", 1, true), tostring(err))
      assert.is_true(woke)
    end)

    it("the C core rejects NaN before converting it to an integer", function()
      local core = oai.core
      local m = core.multi()
      raises("oai.multi: perform timeout_ms must be a non-negative number (got nan)", function() m:perform(NAN) end)
      raises("oai.multi: perform timeout_ms must be a non-negative number (got -1)", function() m:perform(-1) end)
      m:perform(0)
      m:close()
      for _, k in ipairs({ "timeout_ms", "connect_timeout_ms", "idle_timeout_ms", "max_body_bytes", "max_event_bytes" }) do
        raises("oai.request: option '" .. k .. "' must be a non-negative number up to 1000000000000 (got nan)", function()
          core.request { url = srv.url .. "/models", [k] = NAN }
        end)
      end
    end)
  end)

  describe("timeouts", function()
    it("enforces the total timeout", function()
      local t0 = oai.core.monotime()
      local _, _, err = client:chat({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-delay-ms"] = "3000" }, timeout = 0.3, max_retries = 0 })
      assert.equal("timeout", err.kind)
      assert.equal("OPERATION_TIMEDOUT", err.name)
      assert.truthy(oai.core.monotime() - t0 < 2)
    end)

    it("enforces the idle timeout when no byte arrives", function()
      local t0 = oai.core.monotime()
      local _, _, err = client:chat({ model = "m", messages = { user("x") } },
        { headers = { ["x-test-stall-ms"] = "4000" }, idle_timeout = 1, max_retries = 0 })
      assert.equal("timeout", err.kind)
      local dt = oai.core.monotime() - t0
      assert.truthy(dt >= 0.9 and dt < 3.5, dt)
    end)

    it("enforces the connect timeout", function()
      -- a listener that never accepts, its backlog filled: SYNs go unanswered
      local socket = require "socket"
      local l = assert(socket.tcp())
      assert(l:bind("127.0.0.1", 0))
      assert(l:listen(0))
      local _, port = l:getsockname()
      local fill = {}
      for i = 1, 3 do
        fill[i] = socket.tcp()
        fill[i]:settimeout(0)
        fill[i]:connect("127.0.0.1", port)
      end
      socket.sleep(0.1)
      local c = oai.new { base_url = "http://127.0.0.1:" .. port .. "/v1", connect_timeout = 0.3, max_retries = 0 }
      local t0 = oai.core.monotime()
      local _, _, err = c:chat { model = "m", messages = { user("x") } }
      local dt = oai.core.monotime() - t0
      for i = 1, 3 do fill[i]:close() end
      l:close()
      assert.equal("timeout", err.kind)
      assert.truthy(dt >= 0.25 and dt < 2, dt)
    end)
  end)

  describe("TLS", function()
    it("verifies the server with the generated CA and uses HTTP/2", function()
      local c = oai.new { base_url = srv.tls_url, api_key = KEY, ca_file = srv.ca_file }
      local res, _, err = c:chat { model = "m", messages = { user("tls") } }
      assert.is_nil(err)
      assert.equal("Hello! You said: tls", res.choices[1].message.content)
      local r = srv:last_request()
      assert.equal("HTTP/2.0", r.protocol)
      assert.equal("https", r.scheme)
    end)

    it("fails verification against an unknown CA", function()
      local c = oai.new { base_url = srv.tls_url, ca_file = srv.other_ca_file, max_retries = 0 }
      local _, _, err = c:chat { model = "m", messages = { user("x") } }
      assert.equal("network", err.kind)
      assert.equal("SSL_CACERT", err.name)
      assert.equal(0, #srv:requests())
    end)

    it("can skip verification when asked", function()
      local c = oai.new { base_url = srv.tls_url, verify = false }
      assert.truthy(c:chat { model = "m", messages = { user("x") } })
    end)
  end)

  describe("connections", function()
    it("reuses one connection for sequential requests", function()
      for _ = 1, 5 do assert.truthy(chat()) end
      local rs = srv:requests()
      assert.equal(5, #rs)
      for i = 2, 5 do assert.equal(rs[1].connection, rs[i].connection) end
    end)
  end)

  -- the multi handle itself, in whichever way it waits here (epoll on
  -- Linux; CI runs these specs again with OAI_NO_EPOLL=1)
  describe("core.multi", function()
    local core = oai.core

    it("waits up to the timeout with nothing to do, and wakeup() ends the wait", function()
      local m = core.multi()
      local t0 = core.monotime()
      m:perform(150)
      local dt = core.monotime() - t0
      assert.truthy(dt >= 0.12 and dt < 1, dt)
      m:wakeup()
      t0 = core.monotime()
      m:perform(2000)
      assert.truthy(core.monotime() - t0 < 0.5)
      t0 = core.monotime()
      for _ = 1, 100 do m:perform(0) end   -- 0 never waits
      assert.truthy(core.monotime() - t0 < 0.5)
      m:close()
    end)

    it("drives requests to the end with perform alone, one at a time or many at once", function()
      local m = core.multi()
      local function post(i)
        return core.request { url = srv.url .. "/chat/completions", method = "POST",
          headers = { ["Content-Type"] = "application/json" },
          body = oai.json.encode { model = "m", messages = { user("n" .. i) } } }
      end
      for round = 1, 2 do
        local reqs = {}
        for i = 1, round == 1 and 1 or 30 do reqs[i] = post(i); m:add(reqs[i]) end
        local deadline = core.monotime() + 10
        local left = #reqs
        while left > 0 and core.monotime() < deadline do
          local _, ready = m:perform(1000)
          for _, r in ipairs(ready) do if r:result() then left = left - 1 end end
        end
        assert.equal(0, left)
        for i, r in ipairs(reqs) do
          assert.equal(200, r:status())
          assert.equal("Hello! You said: n" .. i, oai.json.decode(r:body()).choices[1].message.content)
          r:close()
        end
      end
      assert.equal(0, m:count())
      m:close()
    end)
  end)

  describe("tasks", function()
    it("runs 100 concurrent chats on one thread", function()
      local results = {}
      local t0 = oai.core.monotime()
      for i = 1, 100 do
        oai.spawn(function()
          local res, _, err = client:chat({ model = "m", messages = { user("n" .. i) } },
            { headers = { ["x-test-delay-ms"] = "200" } })
          assert(res, err)
          results[i] = res.choices[1].message.content
        end)
      end
      oai.run()
      local dt = oai.core.monotime() - t0
      for i = 1, 100 do assert.equal("Hello! You said: n" .. i, results[i]) end
      -- sequentially this would take 20 s
      assert.truthy(dt < 5, dt)
    end)

    it("surfaces a task error from oai.run with the task's traceback", function()
      oai.spawn(function()
        local res = assert(chat())
        local function inner() error("boom in task: " .. res.object) end
        inner()
      end)
      local ok, err = pcall(oai.run)
      assert.is_false(ok)
      assert.truthy(err:find("boom in task: chat.completion", 1, true))
      assert.truthy(err:find("inner", 1, true) or err:find("traceback", 1, true))
    end)

    it("gives a task's error to its own handler instead", function()
      local seen
      oai.spawn({ on_error = function(e) seen = e end }, function() error("handled", 0) end)
      oai.run()
      assert.equal("handled", seen)
    end)

    -- drive the loop for at most `secs` (a hang fails the spec instead of blocking it)
    local function drive(secs)
      local t0 = oai.core.monotime()
      while oai.step(0.02) do
        if oai.core.monotime() - t0 > secs then return false end
      end
      return true
    end

    it("runs the other tasks when an on_error handler raises, and run() raises that error", function()
      local ran = {}
      oai.spawn({ on_error = function() error("handler broke", 0) end }, function() error("first", 0) end)
      oai.spawn(function() ran[#ran + 1] = "second" end)
      oai.spawn(function() oai.sleep(0.01); ran[#ran + 1] = "third" end)
      local ok, err = pcall(oai.run)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("on_error handler raised: handler broke", 1, true), err)
      assert.is_true(drive(3), "the loop stalled")
      assert.same({ "second", "third" }, ran)
      oai.run()
      assert.same({ tasks = 0, runnable = 0, timers = 0, transfers = 0 }, require("oai.loop").stats())
    end)

    it("wakes every task waiting on one stream: text() in one, result() in another", function()
      local s = assert(client:stream({ model = "test-model", messages = { user("x") } },
        { headers = { ["x-test-chunks"] = "30", ["x-test-chunk-delay-ms"] = "5" } }))
      local pieces, res, rerr, text_done = {}, nil, nil, false
      oai.spawn(function()
        -- a while loop: Lua 5.1 cannot yield inside a generic for's iterator
        local next_text = s:text()
        while true do
          local t = next_text()
          if t == nil then break end
          pieces[#pieces + 1] = t
        end
        text_done = true
      end)
      oai.spawn(function() res, rerr = s:result() end)
      assert.is_true(drive(5), "a task waiting on the stream never woke")
      assert.is_true(text_done)
      assert.is_nil(rerr)
      local words = {}
      for i = 1, 30 do words[i] = "w" .. i end
      assert.equal(table.concat(words, " "), res.choices[1].message.content)
      assert.truthy(#pieces > 0)
    end)

    it("wakes a blocking result() while a task iterates the same stream", function()
      local s = assert(client:stream({ model = "test-model", messages = { user("x") } },
        { headers = { ["x-test-chunks"] = "10", ["x-test-chunk-delay-ms"] = "5" } }))
      local n = 0
      oai.spawn(function()
        local next_text = s:text()   -- (5.1: no yield inside a generic for)
        while next_text() do n = n + 1 end
      end)
      oai.step(0)   -- the task is now waiting on the stream
      local t0 = oai.core.monotime()
      local loop = require "oai.loop"
      loop.on_pump = function()   -- a hang fails the spec
        if oai.core.monotime() - t0 > 3 then loop.on_pump = nil; error("result() never woke", 0) end
      end
      local ok, res = pcall(s.result, s)   -- the main chunk waits too
      loop.on_pump = nil
      assert.is_true(ok, res)
      assert.equal("w1 w2 w3 w4 w5 w6 w7 w8 w9 w10", res.choices[1].message.content)
      assert.is_true(drive(3))
    end)

    it("lets other tasks progress while one sleeps, and step(0) never blocks", function()
      local order = {}
      oai.spawn(function() oai.sleep(0.2); order[#order + 1] = "slow" end)
      oai.spawn(function() assert(chat()); order[#order + 1] = "chat" end)
      local t0 = oai.core.monotime()
      oai.step(0)
      assert.truthy(oai.core.monotime() - t0 < 0.05)
      oai.run()
      assert.same({ "chat", "slow" }, order)
    end)

    it("blocks instead of yielding inside a foreign coroutine", function()
      local co = coroutine.create(function()
        local res = chat()
        return res.choices[1].message.content
      end)
      local ok, v = coroutine.resume(co)
      assert.is_true(ok)
      assert.equal("Hello! You said: hello there", v)
      assert.equal("dead", coroutine.status(co))
    end)

    it("returns from oai.run() and task:wait() as soon as the tasks end", function()
      local t0 = oai.core.monotime()
      oai.spawn(function() end)
      oai.run()
      local t = oai.spawn(function() return 7 end)
      assert.equal(7, t:wait())
      assert.truthy(oai.core.monotime() - t0 < 0.5)
    end)

    it("joins a task with task:wait()", function()
      local t = oai.spawn(function(a, b) oai.sleep(0.01); return a + b, "x" end, 2, 3)
      local s, x = t:wait()
      assert.equal(5, s)
      assert.equal("x", x)
    end)
  end)
end)
