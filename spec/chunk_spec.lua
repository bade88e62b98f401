-- The C chunk decoder (src/chunk.c) against the generic Lua path
-- (records_from_chunk over oai.json.decode): for every chunk, the records
-- must be the same.  Chunks are generated with the shapes real providers
-- send: key orders, missing/extra fields, escapes, nulls, tool calls.
local oai = require "oai"
local records = require "oai.records"
local accumulator = require "oai.accumulator"

local encode, null = oai.json.encode, oai.null

-- records as a comparable list, META records dropped (the C path sends
-- them only when they change) and records grouped per choice in order
local function normalize(out, n)
  local recs, i = {}, 1
  while i <= n do
    local k = out[i]
    local a = records.arity[k] or 0
    if k ~= records.kinds.META then
      local r = { k }
      for j = 1, a do
        local v = out[i + j]
        if type(v) == "table" or v == null then v = encode(v) end
        r[#r + 1] = v == nil and "<nil>" or v
      end
      recs[#recs + 1] = table.concat(r, "|")
    end
    i = i + 1 + a
  end
  table.sort(recs)
  return recs
end

local function c_records(data)
  local p = oai.sse()
  local out = {}
  local n = p:records("data: " .. data .. "\n\n", out, 0)
  if out[1] == records.kinds.RAW and n == 2 then   -- the generic path took it
    local doc = out[2]
    out = {}
    n = records.records_from_chunk(doc, out, 0)
  end
  return normalize(out, n)
end

local function lua_records(data)
  local doc = oai.json.decode(data)
  if doc == nil then return nil end
  local out = {}
  local n = records.records_from_chunk(doc, out, 0)
  return normalize(out, n)
end

-- JSON text with a given key order (so the C path sees every order)
local function obj(pairs_list)
  local parts = {}
  for _, kv in ipairs(pairs_list) do
    parts[#parts + 1] = encode(kv[1]) .. ":" .. (type(kv[2]) == "string" and kv[2] or encode(kv[2]))
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

describe("the C chunk decoder", function()
  local seed = 7
  local function rnd(n)
    seed = (seed * 1103515245 + 12345) % 2147483648
    return math.floor(seed / 65536) % n   -- the high bits: the low ones of an LCG cycle fast
  end
  local function shuffle(t)
    for i = #t, 2, -1 do local j = rnd(i) + 1; t[i], t[j] = t[j], t[i] end
    return t
  end
  local texts = { "hi", "", " wörld", "a\"b\\c", "line\nnext", "😀", "tab\t", "\\u00e9 raw" }
  local function str() return texts[rnd(#texts) + 1] end

  local function delta()
    local d = {}
    if rnd(3) == 0 then d[#d + 1] = { "role", rnd(4) == 0 and '""' or '"assistant"' } end
    if rnd(4) ~= 0 then d[#d + 1] = { "content", rnd(6) == 0 and "null" or encode(str()) } end
    if rnd(4) == 0 then d[#d + 1] = { "reasoning_content", encode(str()) } end
    if rnd(6) == 0 then d[#d + 1] = { "reasoning", encode(str()) } end
    if rnd(6) == 0 then d[#d + 1] = { "refusal", rnd(3) == 0 and "null" or encode(str()) } end
    if rnd(5) == 0 then d[#d + 1] = { "custom_field", rnd(2) == 0 and encode(str()) or "42" } end
    if rnd(4) == 0 then
      local calls = {}
      for c = 1, rnd(3) + 1 do
        local f = {}
        if rnd(2) == 0 then f[#f + 1] = { "name", encode(rnd(3) == 0 and "" or "fn" .. c) } end
        if rnd(4) ~= 0 then f[#f + 1] = { "arguments", rnd(5) == 0 and '{"x":1}' or encode('{"a":' .. c) } end
        local tc = { { "function", obj(shuffle(f)) } }
        if rnd(4) ~= 0 then tc[#tc + 1] = { "index", tostring(c - 1) } end
        if rnd(2) == 0 then tc[#tc + 1] = { "id", encode(rnd(3) == 0 and "" or "call_" .. c) } end
        if rnd(2) == 0 then tc[#tc + 1] = { "type", '"function"' } end
        calls[c] = obj(shuffle(tc))
      end
      d[#d + 1] = { "tool_calls", "[" .. table.concat(calls, ",") .. "]" }
    end
    return obj(shuffle(d))
  end

  local function chunk()
    local choices = {}
    for c = 1, rnd(3) do
      local ch = {}
      if rnd(5) ~= 0 then ch[#ch + 1] = { "index", tostring(c - 1 + rnd(2)) } end
      ch[#ch + 1] = { "delta", rnd(10) == 0 and "null" or delta() }
      ch[#ch + 1] = { "finish_reason", rnd(3) == 0 and encode(({ "stop", "length", "tool_calls", "eos_token", "" })[rnd(5) + 1]) or "null" }
      if rnd(3) == 0 then ch[#ch + 1] = { "logprobs", rnd(2) == 0 and "null" or '{"content":[{"token":"a","logprob":-0.5}]}' } end
      if rnd(6) == 0 then ch[#ch + 1] = { "native_finish_reason", '"STOP"' } end
      choices[c] = obj(shuffle(ch))
    end
    local top = {
      { "id", '"chatcmpl-x"' }, { "created", "1700000000" }, { "model", '"m"' },
      { "choices", "[" .. table.concat(choices, ",") .. "]" },
    }
    if rnd(2) == 0 then top[#top + 1] = { "object", '"chat.completion.chunk"' } end
    if rnd(3) == 0 then top[#top + 1] = { "system_fingerprint", rnd(2) == 0 and "null" or '"fp"' } end
    if rnd(3) == 0 then top[#top + 1] = { "usage", rnd(2) == 0 and "null" or '{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}' } end
    if rnd(6) == 0 then top[#top + 1] = { "provider", '"OpenRouter"' } end
    return obj(shuffle(top))
  end

  it("gives the generic path's records for 3000 generated chunks", function()
    for i = 1, 3000 do
      local data = chunk()
      local want = lua_records(data)
      assert.is_not_nil(want, data)
      assert.same(want, c_records(data), "chunk " .. i .. ": " .. data)
    end
  end)

  -- a stream's chunks usually differ only in their content text, and the C
  -- path reuses the last content-only chunk as a template: a stream that
  -- keeps that shape, breaks it and comes back, through one parser
  it("gives the generic path's records for chunks of one stream that share a shape", function()
    local shapes = {
      '{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":null}]}',
      '{"model":"m","created":1,"id":"c1","choices":[{"logprobs":null,"delta":{"content":%s},"finish_reason":null,"index":0}],"object":"chat.completion.chunk"}',
      '{"choices":[{"delta":{"content":%s},"index":1}],"id":"c1"}',
      '{"id":"c1","choices":[{"index":0,"delta":{"content":%s}}],"usage":null}  ',
    }
    local others = {
      '{"id":"c1","choices":[{"index":0,"delta":{"content":%s},"finish_reason":"stop"}]}',
      '{"id":"c1","choices":[{"index":0,"delta":{"content":%s,"role":"assistant"}}]}',
      '{"id":"c1","choices":[{"index":0,"delta":{"content":%s}},{"index":1,"delta":{"content":"x"}}]}',
      '{"id":"c2","choices":[{"index":0,"delta":{"content":%s},"logprobs":null,"finish_reason":null}]}',
    }
    local tricky = { '"a\\"},\\"x\\":\\"b"', '"\\""', '"\\\\"', '""', '"\\u00e9"', '"tail\\"}]}"' }
    for round = 1, 40 do
      local p = oai.sse()
      local shape = shapes[rnd(#shapes) + 1]
      for i = 1, 50 do
        local text = rnd(5) == 0 and tricky[rnd(#tricky) + 1] or encode(str() .. i)
        if rnd(4) == 0 then text = '"' .. ("7"):rep(rnd(30)) .. '"' end   -- digits where an index was
        local other = rnd(10)
        local data = (other == 0 and others[rnd(#others) + 1]
          -- the same length, a few bytes apart: before or after the text
          or other == 1 and shape:gsub('"index":%d', '"index":3'):gsub('"id":"c1"', '"id":"c9"')
          or other == 2 and shape:gsub('"content"', '"refusal"')
          or other == 3 and shape:gsub('"finish_reason":null', '"finish_reason":"ab"'):gsub('"usage":null', '"usage":{  }')
          or shape):format(text)
        local want = lua_records(data)
        local out = {}
        local n = p:records("data: " .. data .. "\n\n", out, 0)
        assert.same(want, normalize(out, n), "round " .. round .. " chunk " .. i .. ": " .. data)
      end
    end
  end)

  it("finds a bad value in a chunk of the same shape as the last", function()
    local p = oai.sse()
    local shape = '{"id":"c1","choices":[{"index":0,"delta":{"content":"%s"}}]}'
    local out = {}
    assert.equal(9, (p:records("data: " .. shape:format("ok") .. "\n\n", out, 0)))   -- META + CONTENT
    for _, bad in ipairs({ "\\q", "ctl\1", "\\u12" }) do
      local data = shape:format(bad)
      local n, stop = p:records("data: " .. data .. "\n\n", out, 0)
      assert.is_true(stop, data)
      assert.equal(records.kinds.BAD, out[1])
      assert.equal(data, out[2])
      assert.equal(3, n)
      p:reset()
      assert.equal(9, (p:records("data: " .. shape:format("ok") .. "\n\n", out, 0)), "META again after reset")
    end
  end)

  it("falls back to the generic path on shapes it does not take", function()
    local odd = {
      '{"choices":[{"index":0,"delta":{"con\\u0074ent":"escaped key"}}]}',
      '{"choices":{"not":"an array"}}',
      '{"choices":[{"index":0,"delta":"a string"}]}',
      '{"choices":[{"index":0,"delta":{"tool_calls":{"0":{}}}}]}',
    }
    for _, data in ipairs(odd) do
      local p = oai.sse()
      local out = {}
      local n = p:records("data: " .. data .. "\n\n", out, 0)
      assert.equal(records.kinds.RAW, out[1], data)
      assert.equal(2, n)
    end
  end)

  it("reports invalid values inside a chunk as a bad chunk", function()
    for _, data in ipairs({ '{"choices":[{"index":0,"delta":{"content":"ctl \1"}}]}',
                            '{"choices":[{"index":0,"delta":{"content":"\\x"}}]}' }) do
      local p = oai.sse()
      local out = {}
      local n, stop = p:records("data: " .. data .. "\n\n", out, 0)
      assert.is_true(stop)
      assert.equal(records.kinds.BAD, out[1])
      assert.equal(data, out[2])
      assert.equal(3, n)
    end
  end)

  -- the decoder's reason and byte offset, on both paths (issue 11 item 8)
  it("says why a chunk is not JSON, and where", function()
    for _, case in ipairs({
      { "{not json", "oai.json.decode: at byte 2: expected a string key" },
      { "nope", "oai.json.decode: at byte 1: invalid literal" },
      { '{"a":1} x', "oai.json.decode: at byte 9: trailing characters after the value" },
      { '{"choices":[{"index":0,"delta":{"content":"ctl \1"}}]}',
        "oai.json.decode: at byte 48: control character in string" },
    }) do
      for flags = 0, 1 do
        local out = {}
        local n, stop = oai.sse():records("data: " .. case[1] .. "\n\n", out, flags)
        assert.same({ 3, true, records.kinds.BAD, case[1], case[2] }, { n, stop, out[1], out[2], out[3] })
      end
    end
  end)
end)

---------------------------------------------------------------- hostile text

-- records of a whole body fed in the given pieces to one parser; RAW
-- records (flags 1, or the generic path) expanded as the stream does
local function feed(pieces, flags)
  local p, recs, rn = oai.sse(), {}, 0
  for i, piece in ipairs(pieces) do
    local out = {}
    local n = p:records(piece, out, flags, i == #pieces)
    local j = 1
    while j <= n do
      local k = out[j]
      if k == records.kinds.RAW then
        local more = {}
        local m = records.records_from_chunk(out[j + 1], more, 0)
        for x = 1, m do recs[rn + x] = more[x] end
        rn = rn + m
      else
        for x = j, j + records.arity[k] do rn = rn + 1; recs[rn] = out[x] end
      end
      j = j + 1 + records.arity[k]
    end
  end
  recs.n = rn
  return recs
end

-- the text pieces and the completion a body gives
local function texts_of(recs)
  local acc, pieces, i = accumulator.new(), {}, 1
  while i <= recs.n do
    local k = recs[i]
    if k == records.kinds.CONTENT or k == records.kinds.REASONING or k == records.kinds.REFUSAL then
      pieces[#pieces + 1] = recs[i + 2]
    elseif k == records.kinds.TOOL then
      pieces[#pieces + 1] = recs[i + 7]
    end
    i = acc:apply(recs, i)
  end
  return pieces, acc:completion()
end

local function body_of(events)
  local t = {}
  for i, e in ipairs(events) do t[i] = "data: " .. e .. "\n\n" end
  return table.concat(t)
end

-- each body fed whole and at every split point, on the fast path (flags 0)
-- and the generic path (flags 1: whole chunks)
local function each_feed(body, fn)
  for flags = 0, 1 do
    fn(feed({ body }, flags), "whole, flags " .. flags)
    for at = 1, #body - 1 do
      fn(feed({ body:sub(1, at), body:sub(at + 1) }, flags), "split at " .. at .. ", flags " .. flags)
    end
  end
end

describe("hostile text in a stream (issue 11 item 5)", function()
  local R = "\239\191\189"   -- U+FFFD
  -- one delta of a field: the JSON text of a chunk whose field holds s (JSON string body)
  local fields = {
    content = function(s, i) return '{"choices":[{"index":' .. (i or 0) .. ',"delta":{"content":"' .. s .. '"}}]}' end,
    reasoning_content = function(s, i) return '{"choices":[{"index":' .. (i or 0) .. ',"delta":{"reasoning_content":"' .. s .. '"}}]}' end,
    reasoning = function(s, i) return '{"choices":[{"delta":{"reasoning":"' .. s .. '"},"index":' .. (i or 0) .. '}]}' end,
    refusal = function(s, i) return '{"id":"c","choices":[{"index":' .. (i or 0) .. ',"delta":{"refusal":"' .. s .. '"}}]}' end,
    arguments = function(s, i) return '{"choices":[{"index":' .. (i or 0) .. ',"delta":{"tool_calls":[{"index":0,"function":{"arguments":"' .. s .. '"}}]}}]}' end,
    -- a shape the fast path does not take (escaped key): the generic path in both modes
    escaped = function(s, i) return '{"\\u0069d":"c","choices":[{"index":' .. (i or 0) .. ',"delta":{"content":"' .. s .. '"}}]}' end,
  }
  local function field_text(c, name)
    local m = c.choices[1].message
    if name == "arguments" then return m.tool_calls[1]["function"].arguments end
    if name == "escaped" then return m.content end
    return m[name]
  end

  -- deltas (JSON string bodies) -> the text pieces handed out, joined text
  local cases = {
    { "a surrogate pair split over two deltas", { "ab\\ud83d", "\\ude00cd" }, { "ab", "😀cd" } },
    { "a pair split with nothing else around", { "\\uD83D", "\\uDE00" }, { "", "😀" } },
    { "a pair split twice in a row", { "\\ud83d", "\\ude00\\ud83d", "\\ude01" }, { "", "😀", "😁" } },
    { "a whole pair inside one delta", { "x\\ud83d\\ude00y" }, { "x😀y" } },
    { "a high half with no low half next", { "a\\ud83d", "b" }, { "a", R .. "b" } },
    { "an empty delta between the halves", { "a\\ud83d", "", "\\ude00" }, { "a", "", "😀" } },
    { "a lone high half inside a delta", { "a\\ud83dz" }, { "a" .. R .. "z" } },
    { "a lone low half at the start", { "\\ude00x" }, { R .. "x" } },
    { "a lone low half inside a delta", { "x\\ude00" }, { "x" .. R } },
    { "a high half before another escape", { "\\ud83d\\u0041" }, { R .. "A" } },
    { "two high halves", { "\\ud83d\\ud83d" }, { R, R } },
    { "a half still waiting at [DONE]", { "end\\ud83d" }, { "end", R } },
    { "invalid UTF-8 bytes", { "x\255y" }, { "x" .. R .. "y" } },
    { "an encoded surrogate (CESU)", { "\237\160\189\237\184\128" }, { R:rep(6) } },
    { "a truncated 4-byte sequence: one U+FFFD", { "\240\159\152z" }, { R .. "z" } },
    { "an overlong form", { "\192\175\224\128\175" }, { R:rep(5) } },
    { "beyond U+10FFFF", { "\244\144\128\128" }, { R:rep(4) } },
    { "invalid bytes and an escape", { "\\n\255" }, { "\n" .. R } },
  }
  for _, name in ipairs({ "content", "reasoning_content", "reasoning", "refusal", "arguments", "escaped" }) do
    for _, case in ipairs(cases) do
      it(name .. ": " .. case[1], function()
        local ev = {}
        for i, d in ipairs(case[2]) do ev[i] = fields[name](d) end
        ev[#ev + 1] = "[DONE]"
        local want = table.concat(case[3])
        each_feed(body_of(ev), function(recs, how)
          local pieces, c = texts_of(recs)
          assert.same(case[3], pieces, how)
          assert.equal(want, field_text(c, name), how)
          oai.json.encode(c)   -- valid UTF-8: can be sent back
        end)
      end)
    end
  end

  it("joins the halves per choice index and per field", function()
    local ev = {
      fields.content("a\\ud83d", 0), fields.content("b\\ud83d", 1), fields.reasoning_content("r\\ud83d", 0),
      fields.content("\\ude01c", 1), fields.reasoning_content("\\ude02", 0), fields.content("\\ude00d", 0),
      '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\\ud83d"}},'
        .. '{"index":1,"function":{"arguments":"\\ud83d"}}]}}]}',
      '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"\\ude04"}},'
        .. '{"index":0,"function":{"arguments":"\\ude03"}}]}}]}',
      "[DONE]",
    }
    each_feed(body_of(ev), function(recs, how)
      local _, c = texts_of(recs)
      assert.equal("a😀d", c.choices[1].message.content, how)
      assert.equal("r😂", c.choices[1].message.reasoning_content, how)
      assert.equal("b😁c", c.choices[2].message.content, how)
      assert.equal("😃", c.choices[1].message.tool_calls[1]["function"].arguments, how)
      assert.equal("😄", c.choices[1].message.tool_calls[2]["function"].arguments, how)
    end)
  end)

  it("replaces invalid text outside the text fields, in keys too (item 10)", function()
    local ev = {
      '{"id":"c\\ud83d","model":"m\255","choices":[{"index":0,"delta":{"content":"a","x\255":"y\\ude00"},"z\192":1}],"k\255":"v"}',
      "[DONE]",
    }
    each_feed(body_of(ev), function(recs, how)
      local _, c = texts_of(recs)
      assert.equal("c" .. R, c.id, how)
      assert.equal("m" .. R, c.model, how)
      assert.equal("v", c["k" .. R], how)
      assert.equal("y" .. R, c.choices[1].message["x" .. R], how)
      assert.equal(1, c.choices[1]["z" .. R], how)
      oai.json.encode(c)
    end)
  end)

  it("hands out the joined character in the later chunk from chunks() (flags 1)", function()
    local out = {}
    local n = oai.sse():records(body_of({ fields.content("ab\\ud83d"), fields.content("\\ude00cd"), fields.content("x\\ud83d"), "[DONE]" }), out, 1)
    assert.equal(9, n)
    assert.same({ "ab", "😀cd", "x", R }, { out[2].choices[1].delta.content, out[4].choices[1].delta.content,
      out[6].choices[1].delta.content, out[8].choices[1].delta.content })
    assert.equal(records.kinds.DONE, out[9])
  end)
end)

describe("duplicate keys in a chunk (issue 11 item 9)", function()
  local dups = {
    '{"choices":[{"index":0,"delta":{"content":"first"}}],"choices":[{"index":0,"delta":{"content":"last"}}]}',
    '{"choices":[{"index":0,"delta":{"content":"first"},"delta":{"role":"assistant"}}]}',
    '{"choices":[{"index":0,"delta":{"content":"first"},"delta":null}]}',
    '{"choices":[{"index":0,"delta":null,"delta":{"content":"last"}}]}',
    '{"choices":[{"index":0,"delta":{"content":"first","content":"last"}}]}',
    '{"choices":[{"index":0,"index":1,"delta":{"content":"x"}}]}',
    '{"choices":[{"index":0,"delta":{"content":"x","extra":"a","extra":"b"}}]}',
    '{"choices":[{"index":0,"delta":{"content":"x","extra":"a","extra":null}}]}',
    '{"choices":[{"index":0,"delta":{"content":"x"},"native":"a","native":"b"}]}',
    '{"p":1,"choices":[],"p":2}',
    '{"p":1,"choices":[],"p":null}',
    '{"usage":{"total_tokens":1},"usage":null,"choices":[]}',
    '{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"a"},"function":{"name":"f"}}]}}]}',
  }
  it("keeps the last, on the fast path as on the generic path", function()
    for _, data in ipairs(dups) do
      assert.same(lua_records(data), c_records(data), data)
      local out = {}
      local n = oai.sse():records("data: " .. data .. "\n\n", out, 1)
      local via_raw = {}
      assert.equal(records.kinds.RAW, out[1])
      assert.equal(2, n)
      local m = records.records_from_chunk(out[2], via_raw, 0)
      assert.same(normalize(via_raw, m), c_records(data), data)
    end
  end)
  it("has the last choices' text", function()
    assert.same({ "1|0|last" }, c_records(dups[1]))
  end)
end)
