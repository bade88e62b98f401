-- oai.json: the C codec.  JSONTestSuite, a differential test against
-- lua-cjson, every encoder rule and message, decode offsets, a seeded
-- round-trip property, base64.
local oai = require "oai"
local encode, decode, null = oai.json.encode, oai.json.decode, oai.null

-- the suite lives beside the project (../shared/testdata); OAI_JSONTESTSUITE
-- overrides.  A clone elsewhere without it reports the cases as pending.
local SUITE
for _, dir in ipairs({ os.getenv("OAI_JSONTESTSUITE") or false,
                       "../shared/testdata/JSONTestSuite/test_parsing/",
                       "/work/shared/testdata/JSONTestSuite/test_parsing/" }) do
  if dir and io.open(dir .. "y_structure_lonely_null.json", "rb") then SUITE = dir; break end
end
local has_int = math.type ~= nil

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function suite_files()
  if not SUITE then return {} end
  local p = assert(io.popen('ls "' .. SUITE .. '" 2>/dev/null'))
  local files = {}
  for f in p:lines() do if f:match("%.json$") then files[#files + 1] = f end end
  p:close()
  return files
end

-- how each implementation-defined case is decided (docs/json.md says why)
local DECIDED = {
  ["i_number_double_huge_neg_exp.json"] = true,
  ["i_number_huge_exp.json"] = false,
  ["i_number_neg_int_huge_exp.json"] = false,
  ["i_number_pos_double_huge_exp.json"] = false,
  ["i_number_real_neg_overflow.json"] = false,
  ["i_number_real_pos_overflow.json"] = false,
  ["i_number_real_underflow.json"] = true,
  ["i_number_too_big_neg_int.json"] = true,
  ["i_number_too_big_pos_int.json"] = true,
  ["i_number_very_big_negative_int.json"] = true,
  ["i_object_key_lone_2nd_surrogate.json"] = false,
  ["i_string_1st_surrogate_but_2nd_missing.json"] = false,
  ["i_string_1st_valid_surrogate_2nd_invalid.json"] = false,
  ["i_string_UTF-16LE_with_BOM.json"] = false,
  ["i_string_UTF-8_invalid_sequence.json"] = false,
  ["i_string_UTF8_surrogate_U+D800.json"] = false,
  ["i_string_incomplete_surrogate_and_escape_valid.json"] = false,
  ["i_string_incomplete_surrogate_pair.json"] = false,
  ["i_string_incomplete_surrogates_escape_valid.json"] = false,
  ["i_string_invalid_lonely_surrogate.json"] = false,
  ["i_string_invalid_surrogate.json"] = false,
  ["i_string_invalid_utf-8.json"] = false,
  ["i_string_inverted_surrogates_U+1D11E.json"] = false,
  ["i_string_iso_latin_1.json"] = false,
  ["i_string_lone_second_surrogate.json"] = false,
  ["i_string_lone_utf8_continuation_byte.json"] = false,
  ["i_string_not_in_unicode_range.json"] = false,
  ["i_string_overlong_sequence_2_bytes.json"] = false,
  ["i_string_overlong_sequence_6_bytes.json"] = false,
  ["i_string_overlong_sequence_6_bytes_null.json"] = false,
  ["i_string_truncated-utf-8.json"] = false,
  ["i_string_utf16BE_no_BOM.json"] = false,
  ["i_string_utf16LE_no_BOM.json"] = false,
  ["i_structure_500_nested_arrays.json"] = true,
  ["i_structure_UTF-8_BOM_empty_object.json"] = false,
}

describe("oai.json.decode on JSONTestSuite", function()
  if not SUITE then
    pending("JSONTestSuite not found: set OAI_JSONTESTSUITE to its test_parsing/ directory")
    return
  end
  local files = suite_files()

  it("finds the suite", function()
    assert.truthy(#files > 300, "JSONTestSuite incomplete at " .. SUITE)
  end)

  it("accepts every y_ case and rejects every n_ case", function()
    local wrong = {}
    for _, f in ipairs(files) do
      local kind = f:sub(1, 2)
      if kind == "y_" or kind == "n_" then
        local v, err = decode(read(SUITE .. f))
        if kind == "y_" and v == nil then wrong[#wrong + 1] = f .. ": " .. tostring(err) end
        if kind == "n_" and v ~= nil then wrong[#wrong + 1] = f .. ": accepted" end
        if kind == "n_" and v == nil then assert.is_string(err) end
      end
    end
    assert.same({}, wrong)
  end)

  it("decides every i_ case as documented", function()
    local n = 0
    for _, f in ipairs(files) do
      if f:sub(1, 2) == "i_" then
        n = n + 1
        local expected = DECIDED[f]
        assert.is_not_nil(expected, "undocumented i_ case " .. f)
        assert.equal(expected, decode(read(SUITE .. f)) ~= nil, f)
      end
    end
    assert.equal(35, n)
  end)
end)

-- structural equality where numbers compare by value and null by identity
local function same(a, b)
  if type(a) ~= type(b) then
    return type(a) == "number" and type(b) == "number" and a == b
  end
  if type(a) ~= "table" then
    if a ~= a and b ~= b then return true end
    return a == b
  end
  for k, v in pairs(a) do if not same(v, b[k]) then return false end end
  for k in pairs(b) do if a[k] == nil then return false end end
  return true
end

describe("oai.json.decode against lua-cjson", function()
  local ok_cjson, cjson = pcall(require, "cjson")

  it("has the reference available", function()
    assert.is_true(ok_cjson, "lua-cjson is a test dependency")
  end)

  it("decodes every y_ case cjson accepts to the same value", function()
    if not SUITE then return pending("JSONTestSuite not found") end
    local compared = 0
    for _, f in ipairs(suite_files()) do
      if f:sub(1, 2) == "y_" then
        local text = read(SUITE .. f)
        local okc, ref = pcall(cjson.decode, text)
        -- cjson 2.1.0 turns big integers and some exponents into floats of
        -- its own rounding: compare only where it produced a finite result
        if okc then
          local v = decode(text)
          assert.is_true(same(v, ref), f)
          compared = compared + 1
        end
      end
    end
    assert.truthy(compared > 80)
  end)

  it("decodes response-shaped documents like cjson", function()
    local docs = {
      '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" w\\u00f6rld \\"q\\" \\n"},"logprobs":null,"finish_reason":null}]}',
      '{"object":"list","data":[{"id":"a","object":"model","created":1,"owned_by":"x"},{"id":"b","object":"model","created":2,"owned_by":"y"}]}',
      '{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{\\"a\\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":0}}}',
      '{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
    }
    for _, d in ipairs(docs) do
      assert.is_true(same(decode(d), cjson.decode(d)), d)
    end
  end)
end)

describe("oai.json.decode", function()
  it("keeps integers integers and everything else floats", function()
    local t = decode('[22, -7, 22.0, 1e2, 9007199254740993, -0, 0]')
    assert.equal(22, t[1])
    if has_int then
      assert.equal("integer", math.type(t[1]))
      assert.equal("integer", math.type(t[2]))
      assert.equal("float", math.type(t[3]))
      assert.equal("float", math.type(t[4]))
      assert.equal("integer", math.type(t[5]))
      assert.equal(9007199254740993, t[5])
      assert.equal("float", math.type(t[6]))
      assert.equal("integer", math.type(t[7]))
      assert.equal("integer", math.type(decode(tostring(math.maxinteger))))
      assert.equal(math.mininteger, decode(tostring(math.mininteger)))
      assert.equal("float", math.type(decode("9223372036854775808")))
    end
    assert.equal(-1 / 0, 1 / t[6])
  end)

  it("decodes null, escapes and surrogate pairs", function()
    local t = decode('{"a":null,"b":"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\"\\\\"}')
    assert.equal(null, t.a)
    assert.equal("\195\169\240\159\152\128/\b\f\n\r\t\"\\", t.b)
  end)

  it("marks decoded empty arrays so they encode back as []", function()
    assert.equal("[]", encode(decode("[]")))
    assert.equal('{"a":[],"b":{}}', encode(decode('{"a":[],"b":{}}')))
  end)

  it("lets the last duplicate key win", function()
    assert.equal(2, decode('{"a":1,"a":2}').a)
  end)

  it("returns nil and an error naming the byte offset", function()
    local cases = {
      { "", "oai.json.decode: at byte 1: unexpected end of input" },
      { "[1,]", "oai.json.decode: at byte 4: unexpected character" },
      { '{"a" 1}', "oai.json.decode: at byte 6: expected ':' after object key" },
      { '{"a":1 "b":2}', "oai.json.decode: at byte 8: expected ',' or '}' after object member" },
      { "[1 2]", "oai.json.decode: at byte 4: expected ',' or ']' after array element" },
      { '"\\ud800"', "oai.json.decode: at byte 2: lone surrogate in \\u escape" },
      { '"a\255"', "oai.json.decode: at byte 3: invalid UTF-8 in string" },
      { '"a\nb"', "oai.json.decode: at byte 3: control character in string" },
      { "1e400", "oai.json.decode: at byte 1: number out of range" },
      { "01", "oai.json.decode: at byte 1: leading zero in number" },
      { "[1] x", "oai.json.decode: at byte 5: trailing characters after the value" },
      { "{1:2}", "oai.json.decode: at byte 2: expected a string key" },
      { "tru", "oai.json.decode: at byte 1: invalid literal" },
      { '"abc', "oai.json.decode: at byte 5: unterminated string" },
      { '"\\x"', "oai.json.decode: at byte 2: invalid escape in string" },
    }
    for _, c in ipairs(cases) do
      assert.same({ nil, c[2] }, { decode(c[1]) })
    end
  end)

  it("limits nesting to 512 without overflowing the C stack", function()
    assert.is_table(decode(string.rep("[", 512) .. string.rep("]", 512)))
    assert.same({ nil, "oai.json.decode: at byte 513: nesting deeper than 512" },
      { decode(string.rep("[", 513) .. string.rep("]", 513)) })
    assert.is_nil(decode(string.rep("[", 100000)))
    assert.is_nil(decode(string.rep('{"a":', 100000)))
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() decode({}) end)
  end)
end)

describe("oai.json.encode", function()
  it("writes integers exactly and floats in the shortest round-trip form", function()
    assert.equal("9007199254740992", encode(2 ^ 53))
    assert.equal("0.1", encode(0.1))
    assert.equal("0.3333333333333333", encode(1 / 3))
    assert.equal("5e-324", encode(5e-324))
    assert.equal("1e+300", encode(1e300))
    assert.equal("2", encode(2.0))
    assert.equal("-0", encode(-0.0))
    assert.equal("1000000000000000", encode(1e15))
    assert.equal("1.5", encode(1.5))
    if has_int then
      assert.equal(tostring(math.maxinteger), encode(math.maxinteger))
      assert.equal(tostring(math.mininteger), encode(math.mininteger))
    end
  end)

  it("escapes strings per RFC 8259 and leaves / alone", function()
    assert.equal('"a\\"b\\\\c/d\\n\\r\\t\\b\\f\\u0001\\u001f\127é"', encode('a"b\\c/d\n\r\t\b\f\1\31\127é'))
  end)

  it("encodes arrays, marked arrays, objects and null", function()
    assert.equal("[1,2,3]", encode({ 1, 2, 3 }))
    assert.equal("{}", encode({}))
    assert.equal("[]", encode(oai.array()))
    assert.equal("[1]", encode(oai.array({ 1 })))
    assert.equal("{}", encode(oai.object()))
    assert.equal('{"a":null,"b":true,"c":false}', encode({ a = null, b = true, c = false }))
    assert.equal("null", encode(null))
  end)

  it("sorts object keys by bytes", function()
    assert.equal('{"A":1,"B":2,"a":3,"ab":4,"abc":5,"b":6,"é":7}',
      encode({ b = 6, a = 3, abc = 5, ab = 4, B = 2, A = 1, ["é"] = 7 }))
  end)

  it("raises with the path to the bad value", function()
    local cases = {
      { { messages = { { role = "u" }, { content = print } } }, "oai.json.encode: messages[2].content: cannot encode a function" },
      { print, "oai.json.encode: cannot encode a function" },
      { { headers = { ["x-y"] = 0 / 0 } }, 'oai.json.encode: headers["x-y"]: cannot encode NaN' },
      { { a = 1 / 0 }, "oai.json.encode: a: cannot encode inf" },
      { { a = -1 / 0 }, "oai.json.encode: a: cannot encode -inf" },
      { { s = "a\255" }, "oai.json.encode: s: invalid UTF-8 in string" },
      { { s = "\237\160\128" }, "oai.json.encode: s: invalid UTF-8 in string" },
      { { s = "\192\128" }, "oai.json.encode: s: invalid UTF-8 in string" },
      { { t = { ["k\255"] = 1 } }, 'oai.json.encode: t["k?"]: invalid UTF-8 in key' },
      { { 1, 2, nil, 4 }, "oai.json.encode: array has a hole at index 3" },
      { { 1, a = 2 }, "oai.json.encode: table mixes integer and string keys" },
      { { [1.5] = 1 }, "oai.json.encode: key of type number (not an integer)" },
      { { [true] = 1 }, "oai.json.encode: key of type boolean" },
      { { x = coroutine.create(function() end) }, "oai.json.encode: x: cannot encode a thread" },
      { { x = io.stdout }, "oai.json.encode: x: cannot encode a userdata" },
      { oai.object({ 1 }), "oai.json.encode: integer key in a table marked as an object" },
      { oai.array({ a = 1 }), "oai.json.encode: string key in a table marked as an array" },
    }
    for _, c in ipairs(cases) do
      assert.has_error(function() encode(c[1]) end, c[2])
    end
    assert.has_error(function() encode() end)
  end)

  it("detects cycles but allows shared subtables", function()
    local t = {}
    t.self = t
    assert.has_error(function() encode(t) end, "oai.json.encode: self: cycle detected")
    local shared = { 1 }
    assert.equal('{"a":[1],"b":[1]}', encode({ a = shared, b = shared }))
  end)

  it("limits nesting to 128", function()
    local t = {}
    local cur = t
    for _ = 1, 127 do cur[1] = {}; cur = cur[1] end
    assert.truthy(encode(t))
    cur[1] = {}
    cur[1][1] = {}
    local ok, err = pcall(encode, t)
    assert.is_false(ok)
    assert.truthy(err:find("nesting deeper than 128", 1, true))
  end)

  it("refuses to re-mark a table with another metatable", function()
    assert.has_error(function() oai.array(setmetatable({}, {})) end,
      "oai.array: the table already has another metatable")
    local a = oai.array({})
    assert.equal(a, oai.array(a))
  end)
end)

describe("encode/decode round trip", function()
  -- a small deterministic generator (the same on every runtime)
  local seed = 12345
  local function rnd(n)
    seed = (seed * 1103515245 + 12345) % 2147483648
    return seed % n
  end
  local pieces = { "a", "é", "😀", "\n", "\"", "\\", "\1", "x y", "", "ß", "/" }
  local function gen(depth)
    local k = rnd(depth > 3 and 6 or 9)
    if k == 0 then return null end
    if k == 1 then return rnd(2) == 1 end
    if k == 2 then return rnd(2000000) - 1000000 end
    if k == 3 then return (rnd(2000000) - 1000000) / 1024 end
    if k == 4 or k == 5 then
      local s = {}
      for i = 1, rnd(5) do s[i] = pieces[rnd(#pieces) + 1] end
      return table.concat(s)
    end
    if k == 6 or k == 7 then
      local t = oai.array()
      for i = 1, rnd(5) do t[i] = gen(depth + 1) end
      return t
    end
    local t = {}
    for _ = 1, rnd(5) do t["k" .. rnd(10) .. pieces[rnd(3) + 1]] = gen(depth + 1) end
    return t
  end

  it("holds for 2000 random nested values", function()
    for i = 1, 2000 do
      local v = gen(0)
      local text = encode(v)
      local back, err = decode(text)
      assert.is_not_nil(back, err)
      assert.is_true(same(v, back), text)
      assert.equal(text, encode(back), "case " .. i)
    end
  end)
end)

describe("oai.base64", function()
  it("matches the RFC 4648 test vectors", function()
    local v = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==",
                fooba = "Zm9vYmE=", foobar = "Zm9vYmFy" }
    for k, e in pairs(v) do assert.equal(e, oai.base64(k)) end
  end)

  it("encodes all 256 byte values", function()
    local t = {}
    for i = 0, 255 do t[#t + 1] = string.char(i) end
    local s = oai.base64(table.concat(t))
    assert.equal(344, #s)
    assert.equal("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BB", s:sub(1, 88))
    assert.equal("+/w==", s:sub(-5))
  end)
end)
