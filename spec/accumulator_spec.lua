-- The accumulator on its own: records in, a completion of the non-streamed
-- shape out.  Records are written by hand here (kind, then its slots), as
-- the C decoder and records_from_chunk lay them out.
local oai = require "oai"
local records = require "oai.records"
local accumulator = require "oai.accumulator"

local null, encode = oai.null, oai.json.encode
local K = records.kinds

-- records -> the accumulator after applying all of them
local function fed(...)
  local recs = { ... }
  local acc, out, n = accumulator.new(), {}, 0
  for _, r in ipairs(recs) do
    -- the kind's arity, not #r: slots may be nil
    local len = 1 + records.arity[r[1]]
    for j = 1, len do out[n + j] = r[j] end
    n = n + len
  end
  local i = 1
  while i <= n do i = acc:apply(out, i) end
  assert.equal(n + 1, i)
  return acc
end

-- the completion of those records
local function completion(...)
  return fed(...):completion()
end

local function message(c, pos) return c.choices[pos or 1].message end

-- tool calls without the generated ids, as comparable tables
local function calls_of(c, pos)
  local t = {}
  for j, call in ipairs(message(c, pos).tool_calls or {}) do
    t[j] = { call.type, call["function"].name, call["function"].arguments }
  end
  return t
end

describe("an accumulator", function()
  it("with nothing applied gives a completion without choices", function()
    local c = accumulator.new():completion()
    assert.equal("chat.completion", c.object)
    assert.equal(0, #c.choices)
    assert.equal("[]", encode(c.choices))
    assert.is_nil(c.id)
    assert.is_nil(c.usage)
  end)

  it("returns from apply the slot after the record, skipping kinds with nothing to keep", function()
    local acc = accumulator.new()
    local out = { K.CONTENT, 0, "a", K.DONE, K.TOOL, 0, 1, 0, "c1", "function", "f", "{}", K.USAGE, {} }
    assert.equal(4, acc:apply(out, 1))
    assert.equal(5, acc:apply(out, 4))
    assert.equal(13, acc:apply(out, 5))
    assert.equal(15, acc:apply(out, 13))
  end)

  describe("joins text per choice", function()
    it("content, in arrival order", function()
      local c = completion({ K.CONTENT, 0, "Hel" }, { K.CONTENT, 0, "" }, { K.CONTENT, 0, "lo" })
      assert.equal("Hello", message(c).content)
      assert.equal("assistant", message(c).role)
      assert.equal(null, message(c).refusal)
    end)

    it("content null when none came, \"\" when only empty deltas came", function()
      assert.equal(null, message(completion({ K.ROLE, 0, "assistant" })).content)
      assert.equal("", message(completion({ K.CONTENT, 0, "" })).content)
    end)

    it("reasoning under the field it first came in, reasoning_content by default", function()
      local c = completion({ K.REASONING, 0, "th", "reasoning" }, { K.REASONING, 0, "ink", "reasoning_content" },
        { K.CONTENT, 0, "ok" })
      assert.equal("think", message(c).reasoning)
      assert.is_nil(message(c).reasoning_content)
      c = completion({ K.REASONING, 0, "a", nil }, { K.REASONING, 0, "b", nil })
      assert.equal("ab", message(c).reasoning_content)
    end)

    it("refusal", function()
      local c = completion({ K.REFUSAL, 0, "I can" }, { K.REFUSAL, 0, "not." })
      assert.equal("I cannot.", message(c).refusal)
      assert.equal(null, message(c).content)
    end)

    it("for each choice apart, choices sorted by index whatever the arrival order", function()
      local c = completion({ K.CONTENT, 2, "c" }, { K.CONTENT, 0, "a" }, { K.CONTENT, 2, "C" },
        { K.CONTENT, 1, "b" })
      assert.same({ 0, 1, 2 }, { c.choices[1].index, c.choices[2].index, c.choices[3].index })
      assert.same({ "a", "b", "cC" }, { message(c, 1).content, message(c, 2).content, message(c, 3).content })
    end)
  end)

  it("keeps the first role of a choice", function()
    local c = completion({ K.ROLE, 0, "tool" }, { K.ROLE, 0, "assistant" }, { K.CONTENT, 0, "x" })
    assert.equal("tool", message(c).role)
  end)

  describe("merges tool-call fragments", function()
    it("by index, arguments concatenated, first id, type and name kept", function()
      local c = completion(
        { K.TOOL, 0, 1, 0, "call_a", "function", "get_weather", "" },
        { K.TOOL, 0, 1, 1, "call_b", "function", "get_time", '{"tz":' },
        { K.TOOL, 0, 1, 0, nil, nil, nil, '{"city":' },
        { K.TOOL, 0, 1, 0, "call_other", "other", "renamed", '"Paris"}' },
        { K.TOOL, 0, 1, 1, nil, nil, nil, '"UTC"}' })
      assert.same({ { "function", "get_weather", '{"city":"Paris"}' }, { "function", "get_time", '{"tz":"UTC"}' } },
        calls_of(c))
      local calls = message(c).tool_calls
      assert.same({ "call_a", "call_b" }, { calls[1].id, calls[2].id })
    end)

    it("ordered by index, whatever order the calls started in", function()
      local c = completion({ K.TOOL, 0, 1, 2, "c2", nil, "two", "2" }, { K.TOOL, 0, 1, 0, "c0", nil, "zero", "0" },
        { K.TOOL, 0, 1, 1, "c1", nil, "one", "1" })
      assert.same({ { "function", "zero", "0" }, { "function", "one", "1" }, { "function", "two", "2" } }, calls_of(c))
    end)

    it("by id when the fragments carry no index", function()
      local c = completion({ K.TOOL, 0, 1, nil, "x", "function", "f", "{" },
        { K.TOOL, 0, 1, nil, "y", "function", "g", "[" },
        { K.TOOL, 0, 1, nil, "x", nil, nil, "}" }, { K.TOOL, 0, 1, nil, "y", nil, nil, "]" })
      assert.same({ { "function", "f", "{}" }, { "function", "g", "[]" } }, calls_of(c))
    end)

    it("by position in the delta when they carry neither index nor id", function()
      local c = completion({ K.TOOL, 0, 1, nil, nil, nil, "f", "{" }, { K.TOOL, 0, 2, nil, nil, nil, "g", "[" },
        { K.TOOL, 0, 1, nil, nil, nil, nil, "}" }, { K.TOOL, 0, 2, nil, nil, nil, nil, "]" })
      assert.same({ { "function", "f", "{}" }, { "function", "g", "[]" } }, calls_of(c))
    end)

    it("per choice", function()
      local c = completion({ K.TOOL, 0, 1, 0, "a", nil, "f", "0" }, { K.TOOL, 1, 1, 0, "b", nil, "g", "1" })
      assert.same({ { "function", "f", "0" } }, calls_of(c, 1))
      assert.same({ { "function", "g", "1" } }, calls_of(c, 2))
    end)

    it("giving a call without id, type or name an id of its own, type function and name \"\"", function()
      local c = completion({ K.TOOL, 0, 1, 0, nil, nil, nil, "{}" })
      local call = message(c).tool_calls[1]
      assert.matches("^call_oai", call.id)
      assert.same({ "function", "", "{}" }, { call.type, call["function"].name, call["function"].arguments })
      local c2 = completion({ K.TOOL, 0, 1, 0, nil, nil, nil, "{}" })
      assert.are_not.equal(call.id, message(c2).tool_calls[1].id)
    end)

    it("returning from tool() the call a fragment continues", function()
      local acc = accumulator.new()
      local call = acc:tool(0, 1, 3, "id3", "function", "f", "{")
      assert.equal(call, acc:tool(0, 1, 3, nil, nil, nil, "}"))
      assert.equal(call, acc:tool(0, 1, nil, "id3", nil, nil, ""))
      assert.same({ "{", "}" }, call.args)
      assert.equal(3, call.index)
    end)

    it("with no tool_calls field when no call came", function()
      assert.is_nil(message(completion({ K.CONTENT, 0, "x" })).tool_calls)
    end)
  end)

  describe("finish reasons", function()
    it("the last one of each choice, null for a choice without one", function()
      local c = completion({ K.CONTENT, 1, "b" }, { K.FINISH, 0, "length" }, { K.FINISH, 0, "stop" })
      assert.equal("stop", c.choices[1].finish_reason)
      assert.equal(null, c.choices[2].finish_reason)
    end)

    it("counted once per choice in finished_n", function()
      local acc = fed({ K.CONTENT, 0, "a" }, { K.CONTENT, 1, "b" })
      assert.is_nil(acc.finished_n)
      acc = fed({ K.FINISH, 0, "stop" }, { K.FINISH, 0, "stop" }, { K.FINISH, 1, "tool_calls" })
      assert.equal(2, acc.finished_n)
      assert.same({ 0, 1 }, acc.order)
    end)
  end)

  it("keeps the last usage", function()
    local u1, u2 = { total_tokens = 1 }, { prompt_tokens = 2, completion_tokens = 3, total_tokens = 5 }
    local c = completion({ K.USAGE, u1 }, { K.CONTENT, 0, "x" }, { K.USAGE, u2 })
    assert.equal(u2, c.usage)
  end)

  it("keeps the first non-empty id, created and model and the last system_fingerprint", function()
    local c = completion({ K.META, "", "no", null, "fp1", "chat.completion.chunk" },
      { K.META, "chatcmpl-1", 1700000000, "m1", "", nil },
      { K.META, "chatcmpl-2", 1700000009, "m2", "fp2", nil })
    assert.same({ "chatcmpl-1", 1700000000, "m1", "fp2", "chat.completion" },
      { c.id, c.created, c.model, c.system_fingerprint, c.object })
  end)

  it("appends logprobs content and refusal lists, null without any", function()
    local a, b, r = { token = "a" }, { token = "b" }, { token = "no" }
    local c = completion({ K.LOGPROBS, 0, { content = { a } } }, { K.LOGPROBS, 0, { content = { b }, refusal = { r } } },
      { K.LOGPROBS, 0, null }, { K.CONTENT, 1, "x" })
    local lp = c.choices[1].logprobs
    assert.same({ a, b }, { lp.content[1], lp.content[2] })
    assert.equal(2, #lp.content)
    assert.same({ r }, { lp.refusal[1] })
    assert.equal(null, c.choices[2].logprobs)
    assert.equal('[]', encode(completion({ K.LOGPROBS, 0, { content = {} } }).choices[1].logprobs.content))
  end)

  describe("carries fields it does not know", function()
    it("delta extras into the message: strings joined, other values replaced, known fields kept", function()
      local c = completion({ K.DELTA_EXTRA, 0, "audio", "ab" }, { K.DELTA_EXTRA, 0, "audio", "cd" },
        { K.DELTA_EXTRA, 0, "n", 1 }, { K.DELTA_EXTRA, 0, "n", 2 },
        { K.DELTA_EXTRA, 0, "content", "not this" }, { K.CONTENT, 0, "this" })
      local m = message(c)
      assert.same({ "abcd", 2, "this" }, { m.audio, m.n, m.content })
    end)

    it("choice extras into the choice, the last value, without replacing known fields", function()
      local c = completion({ K.CHOICE_EXTRA, 0, "stop_reason", 1 }, { K.CHOICE_EXTRA, 0, "stop_reason", 2 },
        { K.CHOICE_EXTRA, 0, "index", 7 }, { K.CONTENT, 0, "x" })
      assert.same({ 2, 0 }, { c.choices[1].stop_reason, c.choices[1].index })
    end)

    it("top-level extras into the completion, without replacing known fields", function()
      local c = completion({ K.TOP_EXTRA, "service_tier", "default" }, { K.TOP_EXTRA, "object", "other" },
        { K.META, "id", 1, "m", nil, nil })
      assert.same({ "default", "chat.completion" }, { c.service_tier, c.object })
    end)
  end)

  it("gives the same records' completion as records_from_chunk over the chunks", function()
    local acc, out, n = accumulator.new(), {}, 0
    local chunks = {
      { id = "c1", created = 5, model = "m", choices = { { index = 0, delta = { role = "assistant", content = "Hi" } } } },
      { choices = { { index = 0, delta = { content = " there", tool_calls = {
        { index = 0, id = "call_1", type = "function", ["function"] = { name = "f", arguments = "{}" } } } } } } },
      { choices = { { index = 0, delta = {}, finish_reason = "tool_calls" } }, usage = { total_tokens = 3 } },
    }
    for _, ch in ipairs(chunks) do n = records.records_from_chunk(ch, out, n) end
    local i = 1
    while i <= n do i = acc:apply(out, i) end
    local c = acc:completion()
    assert.same({ "c1", 5, "m", "Hi there", "tool_calls", 3 },
      { c.id, c.created, c.model, message(c).content, c.choices[1].finish_reason, c.usage.total_tokens })
    assert.same({ { "function", "f", "{}" } }, calls_of(c))
    assert.equal("call_1", message(c).tool_calls[1].id)
  end)
end)
