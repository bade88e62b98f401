-- The C chunk decoder (src/chunk.c) against the generic Lua path
-- (records_from_chunk over oai.json.decode): for every chunk, the records
-- must be the same.  Chunks are generated with the shapes real providers
-- send: key orders, missing/extra fields, escapes, nulls, tool calls.
local oai = require "oai"
local stream = require "oai.stream"

local encode, null = oai.json.encode, oai.null

-- records as a comparable list, META records dropped (the C path sends
-- them only when they change) and records grouped per choice in order
local function normalize(out, n)
  local recs, i = {}, 1
  while i <= n do
    local k = out[i]
    local a = stream.arity[k] or 0
    if k ~= stream.kinds.META then
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
  return normalize(out, n)
end

local function lua_records(data)
  local doc = oai.json.decode(data)
  if doc == nil then return nil end
  local out = {}
  local n = stream.records_from_chunk(doc, out, 0)
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
    for _, bad in ipairs({ "bad \255", "\\ud800", "\\q", "ctl\1" }) do
      local data = shape:format(bad)
      local n, stop = p:records("data: " .. data .. "\n\n", out, 0)
      assert.is_true(stop, data)
      assert.equal(stream.kinds.BAD, out[1])
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
      assert.equal(stream.kinds.RAW, out[1], data)
      assert.equal(2, n)
    end
  end)

  it("reports invalid values inside a chunk as a bad chunk", function()
    for _, data in ipairs({ '{"choices":[{"index":0,"delta":{"content":"bad \255"}}]}',
                            '{"choices":[{"index":0,"delta":{"content":"\\ud800"}}]}' }) do
      local p = oai.sse()
      local out = {}
      local n, stop = p:records("data: " .. data .. "\n\n", out, 0)
      assert.is_true(stop)
      assert.equal(stream.kinds.BAD, out[1])
      assert.equal(data, out[2])
      assert.equal(3, n)
    end
  end)
end)
