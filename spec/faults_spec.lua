-- The fault matrix: every row, streamed and not, gives the documented
-- err.kind, keeps what it can, never shows the API key, and leaves the
-- client usable for the next request.
local oai = require "oai"
local two = require("helpers").two
local server = require "server"

local KEY = "sk-faults-5ecret-0123456789"

local function user(t) return { role = "user", content = t } end

describe("fault matrix", function()
  local srv, client

  lazy_setup(function()
    srv = server.start { tls = true }
    client = oai.new { base_url = srv.url, api_key = KEY, max_retries = 0 }
  end)
  lazy_teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:clear() end)

  -- run one request in a mode: "chat" or "stream" (stream: result())
  local function run(mode, opts, c)
    c = c or client
    local req = { model = "m", messages = { user("fault") } }
    if mode == "chat" then return two(c:chat(req, opts)) end
    local s, _, err = c:stream(req, opts)
    if not s then return nil, err end
    return two(s:result())
  end

  local function check(err, kind)
    assert.is_table(err, "expected an error")
    assert.equal(kind, err.kind, tostring(err))
    local text = tostring(err)
    assert.falsy(text:find(KEY, 1, true), "key in tostring(err)")
    for k, v in pairs(err) do
      if type(v) == "string" then assert.falsy(v:find(KEY, 1, true), "key in err." .. k) end
    end
    assert.falsy(tostring(err.body or ""):find(KEY, 1, true))
    -- the client still works
    local res = assert(client:chat { model = "m", messages = { user("after") } })
    assert.equal("Hello! You said: after", res.choices[1].message.content)
  end

  local n = 0
  local function script(steps)
    n = n + 1
    srv:script("f" .. n, steps)
    return { ["x-test-script"] = "f" .. n }
  end

  for _, mode in ipairs({ "chat", "stream" }) do
    describe(mode, function()
      it("connection refused -> network", function()
        local c = oai.new { base_url = "http://127.0.0.1:1/v1", api_key = KEY, max_retries = 0 }
        local _, err = run(mode, nil, c)
        check(err, "network")
        assert.equal("COULDNT_CONNECT", err.name)
      end)

      it("DNS failure -> network", function()
        local c = oai.new { base_url = "http://no-such-host.invalid/v1", api_key = KEY, max_retries = 0 }
        local _, err = run(mode, nil, c)
        check(err, "network")
        assert.equal("COULDNT_RESOLVE_HOST", err.name)
      end)

      it("TLS with an unknown CA -> network SSL_CACERT", function()
        local c = oai.new { base_url = srv.tls_url, api_key = KEY, ca_file = srv.other_ca_file, max_retries = 0 }
        local _, err = run(mode, nil, c)
        check(err, "network")
        assert.equal("SSL_CACERT", err.name)
      end)

      it("TLS host mismatch -> network PEER_FAILED_VERIFICATION", function()
        local url = "https://wrong-name.test:" .. srv.tls_port .. "/v1"
        local c = oai.new { base_url = url, api_key = KEY, ca_file = srv.ca_file, max_retries = 0,
                            resolve = { "wrong-name.test:" .. srv.tls_port .. ":127.0.0.1" } }
        local _, err = run(mode, nil, c)
        assert.equal(0, #srv:requests())
        check(err, "network")
        assert.equal("PEER_FAILED_VERIFICATION", err.name)
      end)

      it("server closes before headers -> network", function()
        local _, err = run(mode, { headers = { ["x-test-drop"] = "before-headers" } })
        check(err, "network")
      end)

      it("server closes mid-body -> network, partial kept in streams", function()
        local h = mode == "chat" and { ["x-test-drop"] = "mid-body" }
          or { ["x-test-drop"] = "mid-stream", ["x-test-chunks"] = "6" }
        local _, err = run(mode, { headers = h })
        check(err, "network")
        if mode == "stream" then assert.equal("w1 w2 ", err.partial.choices[1].message.content) end
      end)

      it("stall before the first byte -> timeout (idle)", function()
        local t0 = oai.core.monotime()
        local _, err = run(mode, { headers = { ["x-test-delay-ms"] = "5000" }, idle_timeout = 1 })
        check(err, "timeout")
        assert.truthy(oai.core.monotime() - t0 < 4)
      end)

      it("stall mid-body -> timeout (idle), partial kept in streams", function()
        local _, err = run(mode, { headers = { ["x-test-stall-ms"] = "5000", ["x-test-chunks"] = "4" }, idle_timeout = 1 })
        check(err, "timeout")
        if mode == "stream" then assert.equal("w1 ", err.partial.choices[1].message.content) end
      end)

      it("a server dripping one byte per second -> total timeout, not idle", function()
        local body = mode == "chat" and '{"id":"x","object":"chat.completion","choices":[]}'
          or 'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        local steps = { { status = 200, headers = { ["content-type"] = mode == "chat"
          and "application/json" or "text/event-stream" } } }
        for i = 1, #body do
          steps[#steps + 1] = { send = body:sub(i, i) }
          steps[#steps + 1] = { sleep_ms = 400 }
        end
        local t0 = oai.core.monotime()
        local _, err = run(mode, { headers = script(steps), idle_timeout = 1, timeout = 2 })
        local dt = oai.core.monotime() - t0
        check(err, "timeout")
        assert.truthy(dt >= 1.8 and dt < 3.5, dt)
      end)

      it("asks for the identity encoding (both transports decode none)", function()
        assert.truthy(run(mode))
        assert.equal("identity", srv:last_request().headers["accept-encoding"])
      end)

      it("200 with text/html -> protocol", function()
        local _, err = run(mode, { headers = script({ { status = 200, headers = { ["content-type"] = "text/html" } },
          { send = "<html><body>hello</body></html>" } }) })
        check(err, "protocol")
        assert.truthy(err.body:find("<html>", 1, true))
      end)

      it("empty 200 body -> protocol", function()
        local _, err = run(mode, { headers = script({ { status = 200, headers = { ["content-type"] =
          mode == "chat" and "application/json" or "text/event-stream" } } }) })
        check(err, "protocol")
      end)

      it("HTML 502 page -> http with the body", function()
        local _, err = run(mode, { headers = { ["x-test-status"] = "502", ["x-test-envelope"] = "0" } })
        check(err, "http")
        assert.equal(502, err.status)
        assert.truthy(err.body:find("502 Bad Gateway", 1, true))
      end)

      it("429 storm honouring retry-after", function()
        local c = oai.new { base_url = srv.url, api_key = KEY, max_retries = 2 }
        local t0 = oai.core.monotime()
        local _, err = run(mode, { headers = { ["x-test-status"] = "429", ["x-test-retry-after"] = "1" } }, c)
        local dt = oai.core.monotime() - t0
        check(err, "api")
        assert.equal(3, err.attempts)
        assert.equal(1, err.retry_after)
        assert.truthy(dt >= 1.9 and dt < 4, dt)
      end)

      it("x-should-retry: false on 500 -> one attempt", function()
        local c = oai.new { base_url = srv.url, api_key = KEY, max_retries = 2 }
        local _, err = run(mode, { headers = { ["x-test-status"] = "500", ["x-test-should-retry"] = "false" } }, c)
        assert.equal(1, #srv:requests())
        check(err, "api")
        assert.equal(1, err.attempts)
      end)

      it("header injection in a user header raises", function()
        assert.has_error(function()
          run(mode, { headers = { ["X-Evil"] = "v\r\nInjected: 1" } })
        end)
        assert.equal(0, #srv:requests())
      end)

      it("an echoed API key is masked", function()
        local _, err = run(mode, { headers = script({ { status = 401, headers = { ["content-type"] = "application/json" } },
          { send = '{"error":{"message":"Incorrect API key provided: ' .. KEY .. '","type":"invalid_request_error","code":"invalid_api_key"}}' } }) })
        check(err, "api")
        assert.truthy(err.message:find("[REDACTED]", 1, true))
      end)
    end)
  end

  describe("stream only", function()
    it("10 MB single SSE line -> protocol (event size limit)", function()
      local big = 'data: {"choices":[{"index":0,"delta":{"content":"' .. string.rep("x", 10 * 1024 * 1024) .. '"}}]}\n\n'
      local _, err = run("stream", { headers = script({ { send = 'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\n' },
        { send = big } }) })
      check(err, "protocol")
      assert.truthy(err.message:find("max_event_bytes", 1, true))
      assert.equal("ok", err.partial.choices[1].message.content)
    end)

    it("invalid JSON chunk -> protocol with the raw data", function()
      local _, err = run("stream", { headers = script({ { send = 'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\ndata: {oops\n\n' } }) })
      check(err, "protocol")
      assert.equal("{oops", err.data)
      assert.equal("ok", err.partial.choices[1].message.content)
    end)

    it("an oversized plain (non-SSE) body -> protocol (BODY_TOO_LARGE), as on chat", function()
      local _, err = run("stream", { max_body_bytes = 100000, headers = { ["x-test-body-bytes"] = "200000" } })
      check(err, "protocol")
      assert.equal("BODY_TOO_LARGE", err.name)
    end)

    it("in-stream error -> api, partial kept", function()
      local _, err = run("stream", { headers = script({ { send = 'data: {"choices":[{"index":0,"delta":{"content":"ok"}}]}\n\ndata: {"error":{"message":"upstream failed","code":"e"}}\n\n' } }) })
      check(err, "api")
      assert.equal("upstream failed", err.message)
      assert.equal("ok", err.partial.choices[1].message.content)
    end)
  end)

  describe("chat only", function()
    it("100 MB body -> protocol (max_body_bytes)", function()
      local _, err = run("chat", { headers = { ["x-test-body-bytes"] = tostring(100 * 1024 * 1024) } })
      check(err, "protocol")
      assert.equal("BODY_TOO_LARGE", err.name)
    end)

    it("a body under the limit is fine", function()
      local res = assert(run("chat", { headers = { ["x-test-body-bytes"] = tostring(2 * 1024 * 1024) } }))
      assert.truthy(#res.choices[1].message.content > 1000000)
    end)
  end)
end)

-- What nginx cannot play: bytes on the wire as a hostile server sends them
-- (spec/support/raw_server.lua).  spec/ngx_spec.lua runs the same rows over
-- the cosocket transport, spec/uv_spec.lua the reset through oai.uv.
describe("hostile wire", function()
  local raw = require "raw_server"
  local HEAD = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
  local BODY = 'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'

  local function gzip(s)
    local name = os.tmpname()
    local f = assert(io.open(name, "wb")); f:write(s); f:close()
    local p = assert(io.popen("gzip -c < '" .. name .. "'"))
    local out = p:read("*a")
    p:close()
    os.remove(name)
    return out
  end

  -- run mode ("chat" | "stream") against a raw server playing steps
  local function run(mode, steps, opts)
    local s = raw.start(steps)
    local c = oai.new { base_url = s.url, api_key = KEY, max_retries = 0 }
    local req = { model = "m", messages = { user("wire") } }
    local t0 = oai.core.monotime()
    local res, err
    if mode == "chat" then res, err = two(c:chat(req, opts))
    else
      local st
      st, _, err = c:stream(req, opts)
      if st then res, err = two(st:result()) end
    end
    s.stop()
    return res, err, oai.core.monotime() - t0
  end

  for _, mode in ipairs({ "chat", "stream" }) do
    describe(mode, function()
      it("asks for identity: a gzip body it did not ask for -> protocol BAD_CONTENT_ENCODING naming it", function()
        local body = mode == "chat" and '{"id":"x","object":"chat.completion","choices":[]}' or BODY
        local gz = gzip(body)
        local _, err = run(mode, { { send = "HTTP/1.1 200 OK\r\nContent-Type: "
          .. (mode == "chat" and "application/json" or "text/event-stream")
          .. "\r\nContent-Encoding: gzip\r\nContent-Length: " .. #gz .. "\r\n\r\n" .. gz } })
        assert.is_table(err)
        assert.equal("protocol", err.kind, tostring(err))
        assert.equal("BAD_CONTENT_ENCODING", err.name)
        assert.truthy(err.message:find("Content-Encoding: gzip", 1, true), err.message)
      end)

      it("idle_timeout counts bytes in the response head: one byte per 0.5 s is not idle", function()
        local json = '{"id":"x","object":"chat.completion","choices":[]}'
        local head = mode == "chat" and "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
          .. #json .. "\r\n" or HEAD
        local res, err = run(mode, { { send = head .. "X-Slow: " }, { drip = "abcdef", every = 0.5 },
          { send = "\r\n\r\n" .. (mode == "chat" and json or BODY) } }, { idle_timeout = 2 })
        assert.is_nil(err, tostring(err))
        assert.is_table(res)
      end)

      it("idle_timeout fires on half a header line and a stall", function()
        local _, err, dt = run(mode, { { send = "HTTP/1.1 200 OK\r\nContent-Ty" }, { sleep = 5 } }, { idle_timeout = 1 })
        assert.is_table(err)
        assert.equal("timeout", err.kind, tostring(err))
        assert.truthy(err.message:find("idle_timeout", 1, true), err.message)
        assert.truthy(dt >= 0.9 and dt < 2.5, dt)
      end)
    end)
  end

  it("a connection reset mid-stream -> network RECV_ERROR, partial kept", function()
    local _, err = run("stream", { { send = HEAD .. "\r\n" .. 'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n' },
      { sleep = 0.3 }, { reset = true } })
    assert.is_table(err)
    assert.equal("network", err.kind)
    assert.equal("RECV_ERROR", err.name, tostring(err))
    assert.truthy(err.message:find("reset", 1, true), err.message)
    assert.equal("hi", err.partial.choices[1].message.content)
  end)
end)
