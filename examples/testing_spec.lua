-- examples/testing_spec.lua: how a plugin author tests offline with
-- oai.testing, the local OpenAI-compatible server (docs/testing.md).
--   busted --lua=lua5.4 --cpath='build/5.4/?.so' examples/testing_spec.lua
local oai = require "oai"
local testing = require "oai.testing"

describe("my plugin", function()
  local srv, client

  lazy_setup(function()
    srv = testing.start()
    client = oai.new { base_url = srv.url, api_key = "sk-test", max_retries = 2 }
  end)
  lazy_teardown(function() srv:stop() end)
  before_each(function() srv:clear() end)

  it("sends the conversation and reads the reply", function()
    local res = assert(client:chat { model = "test-model", messages = { oai.user "hi" } })
    assert.equal("Hello! You said: hi", res.choices[1].message.content)
    local req = srv:last_request()
    assert.equal("Bearer sk-test", req.headers.authorization)
    assert.equal("hi", req.json.messages[1].content)
  end)

  it("streams a scripted reply with a delay between events", function()
    srv:script("two-words", {
      { status = 200, headers = { ["content-type"] = "text/event-stream" } },
      { send = 'data: {"choices":[{"index":0,"delta":{"content":"Hello"}}]}\n\n' },
      { sleep_ms = 50 },
      { send = 'data: {"choices":[{"index":0,"delta":{"content":" world"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n' },
    })
    local s = assert(client:stream({ model = "m", messages = { oai.user "x" } },
      { headers = { ["x-test-script"] = "two-words" } }))
    local parts = {}
    for t in s:text() do parts[#parts + 1] = t end
    assert.same({ "Hello", " world" }, parts)
  end)

  it("retries a rate limit", function()
    client = oai.new { base_url = srv.url, api_key = "sk-test",
      headers = { ["x-test-fail-times"] = "1", ["x-test-key"] = "retry", ["x-test-status"] = "429",
                  ["x-test-retry-after-ms"] = "10" } }
    assert(client:chat { model = "m", messages = { oai.user "x" } })
    assert.equal(2, #srv:requests())
  end)
end)
