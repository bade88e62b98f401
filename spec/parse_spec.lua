-- Structured outputs: the schema checker (oai.validate) and client:parse
-- against the local server's `structured` model, with chat and stream,
-- blocking and inside tasks.
local oai = require "oai"
local helpers = require "helpers"
local function ways(name, body) return helpers.ways(it, name, body) end
local server = require "server"

local null = oai.null

local PERSON = {
  type = "object",
  properties = {
    name = { type = "string" },
    age = { type = "integer" },
    tags = { type = "array", items = { type = "string" } },
  },
  required = { "name", "age", "tags" },
  additionalProperties = false,
}

local function format(schema, name)
  return { type = "json_schema", json_schema = { name = name or "person", strict = true, schema = schema or PERSON } }
end

describe("oai.validate", function()
  local function check(value, schema) return { oai.validate(value, schema) } end

  it("checks types, with integral floats as integers", function()
    assert.same({ true }, check("x", { type = "string" }))
    assert.same({ true }, check(2, { type = "integer" }))
    assert.same({ true }, check(2.0, { type = "integer" }))
    assert.same({ true }, check(2.5, { type = "number" }))
    assert.same({ true }, check(false, { type = "boolean" }))
    assert.same({ true }, check(null, { type = "null" }))
    assert.same({ true }, check(null, { type = { "string", "null" } }))
    assert.same({ true }, check({ 1, 2 }, { type = "array" }))
    assert.same({ true }, check({ a = 1 }, { type = "object" }))
    assert.same({ true }, check("anything", {}))
    assert.same({ nil, "$: expected integer, got number", "$" }, check(2.5, { type = "integer" }))
    assert.same({ nil, "$: expected string, got integer", "$" }, check(1, { type = "string" }))
    assert.same({ nil, "$: expected string or null, got boolean", "$" }, check(true, { type = { "string", "null" } }))
    assert.same({ nil, "$: expected object, got array", "$" }, check({ 1 }, { type = "object" }))
    assert.same({ nil, "$: expected array, got object", "$" }, check({ a = 1 }, { type = "array" }))
    assert.same({ nil, "$: expected number, got null", "$" }, check(null, { type = "number" }))
  end)

  it("tells empty arrays from empty objects by their marks", function()
    assert.same({ true }, check({}, { type = "array" }))
    assert.same({ true }, check({}, { type = "object" }))
    assert.same({ true }, check(oai.array(), { type = "array" }))
    assert.same({ nil, "$: expected object, got array", "$" }, check(oai.array(), { type = "object" }))
    assert.same({ nil, "$: expected object, got array", "$" }, check(oai.json.decode("[]"), { type = "object" }))
    assert.same({ true }, check(oai.json.decode("{}"), { type = "object" }))
  end)

  it("checks required, properties, additionalProperties, items, enum and const, naming the path", function()
    local schema = {
      type = "object",
      properties = {
        name = { type = "string" },
        kind = { enum = { "cat", "dog" } },
        v = { const = 1 },
        pets = { type = "array", items = { type = "object", properties = { age = { type = "integer" } },
          required = { "age" }, additionalProperties = false } },
        ["odd key"] = { type = "boolean" },
        meta = { type = "object", additionalProperties = { type = "string" } },
      },
      required = { "name" },
      additionalProperties = false,
    }
    assert.same({ true }, check({ name = "x", kind = "dog", v = 1, pets = { { age = 1 }, { age = 2 } },
      ["odd key"] = true, meta = { a = "b" } }, schema))
    local cases = {
      { {}, "$.name: required field missing" },
      { { name = 1 }, "$.name: expected string, got integer" },
      { { name = "x", kind = "cow" }, '$.kind: expected one of "cat", "dog", got "cow"' },
      { { name = "x", v = 2 }, "$.v: expected 1, got 2" },
      { { name = "x", pets = { { age = 1 }, { age = "2" } } }, "$.pets[2].age: expected integer, got string" },
      { { name = "x", pets = { { age = 1 }, {} } }, "$.pets[2].age: required field missing" },
      { { name = "x", pets = { { age = 1, color = "red" } } }, "$.pets[1].color: unexpected field (additionalProperties is false)" },
      { { name = "x", ["odd key"] = "yes" }, '$["odd key"]: expected boolean, got string' },
      { { name = "x", meta = { a = 1 } }, "$.meta.a: expected string, got integer" },
      { { name = "x", extra = true }, "$.extra: unexpected field (additionalProperties is false)" },
    }
    for _, c in ipairs(cases) do
      local ok, problem, path = oai.validate(c[1], schema)
      assert.is_nil(ok)
      assert.equal(c[2], problem)
      assert.equal(c[2]:match("^(.-): "), path)
    end
  end)

  it("follows anyOf and $ref", function()
    local schema = {
      type = "object",
      properties = {
        next = { anyOf = { { ["$ref"] = "#/$defs/node" }, { type = "null" } } },
        list = { type = "array", items = { ["$ref"] = "#/definitions/item" } },
      },
      ["$defs"] = { node = { type = "object", properties = { v = { type = "integer" } }, required = { "v" } } },
      definitions = { item = { type = "string" } },
    }
    assert.same({ true }, check({ next = null, list = { "a" } }, schema))
    assert.same({ true }, check({ next = { v = 1 } }, schema))
    assert.same({ nil, "$.next.v: expected integer, got string", "$.next.v" }, check({ next = { v = "1" } }, schema))
    assert.same({ nil, "$.next: expected object or null, got integer", "$.next" }, check({ next = 3 }, schema))
    assert.same({ nil, "$.list[1]: expected string, got boolean", "$.list[1]" }, check({ list = { true } }, schema))
    assert.same({ nil, "$: cannot resolve $ref #/$defs/none", "$" }, check(1, { ["$ref"] = "#/$defs/none" }))
    local tree = { type = "object", properties = { kids = { type = "array", items = { ["$ref"] = "#" } } } }
    assert.same({ nil, "$.kids[1].kids[1].kids: expected array, got integer", "$.kids[1].kids[1].kids" },
      check({ kids = { { kids = { { kids = 1 } } } } }, tree))
  end)

  it("raises on a schema that is not a table", function()
    assert.has_error(function() oai.validate(1, "x") end, "oai.validate: schema must be a table")
  end)
end)

describe("client:parse", function()
  local srv, client

  lazy_setup(function()
    srv = server.start()
    client = oai.new { base_url = srv.url, api_key = "sk-test", max_retries = 0 }
  end)
  lazy_teardown(function() if srv then srv:stop() end end)
  before_each(function() srv:clear() end)

  local function parse(stream, schema, mode, rf)
    return helpers.two(client:parse({ model = "structured", messages = { oai.user "Tell me about Ada" },
      response_format = rf or format(schema) },
      { stream = stream, headers = mode and { ["x-test-structured"] = mode } or nil }))
  end

  ways("returns the decoded answer", function(stream)
    local value, err, completion = parse(stream)
    assert.is_nil(err)
    assert.same({ name = "name", age = 1, tags = { "tags" } }, value)
    if math.type then assert.equal("integer", math.type(value.age)) end
    assert.equal("stop", completion.choices[1].finish_reason)
    -- the request went out as given
    local body = oai.json.decode(srv:last_request().body)
    assert.same(format(), body.response_format)
    assert.equal(stream or nil, body.stream)
  end)

  ways("checks nested answers with $defs and anyOf", function(stream)
    local schema = {
      type = "object",
      properties = {
        owner = { ["$ref"] = "#/$defs/person" },
        size = { type = "number" },
        open = { type = "boolean" },
        note = { anyOf = { { type = "null" }, { type = "string" } } },
      },
      required = { "owner", "size", "open", "note" },
      additionalProperties = false,
      ["$defs"] = { person = PERSON },
    }
    local value = assert(parse(stream, schema))
    assert.same({ owner = { name = "name", age = 1, tags = { "tags" } }, size = 1.5, open = true, note = null }, value)
  end)

  ways("decodes json_object answers", function(stream)
    local value = assert(parse(stream, nil, nil, { type = "json_object" }))
    assert.same({ answer = "Tell me about Ada" }, value)
  end)

  ways("reports a refusal", function(stream)
    local value, err = parse(stream, nil, "refusal")
    assert.is_nil(value)
    assert.equal("refusal", err.kind)
    assert.equal("I'm sorry, I can't help with that.", err.refusal)
    assert.equal("oai: refusal: I'm sorry, I can't help with that.", tostring(err))
    assert.equal("stop", err.completion.choices[1].finish_reason)
  end)

  ways("reports an answer cut off by the token limit", function(stream)
    local value, err = parse(stream, nil, "length")
    assert.is_nil(value)
    assert.equal("length", err.kind)
    assert.equal("{", err.content:sub(1, 1))
    assert.truthy(#err.content > 10)
    assert.is_nil(oai.json.decode(err.content))
    assert.matches('finish_reason "length"', err.message, 1, true)
  end)

  ways("reports an answer that is not JSON", function(stream)
    local value, err = parse(stream, nil, "invalid-json")
    assert.is_nil(value)
    assert.equal("schema", err.kind)
    assert.equal("$", err.path)
    assert.matches("^the answer is not valid JSON %(", err.message)
    assert.matches("^Here is the JSON you asked for: ", err.content)
  end)

  local SCHEMA_FAILURES = {
    ["wrong-type"] = { "$.age", "the answer does not match the schema person: $.age: expected integer, got string" },
    ["missing-required"] = { "$.name", "the answer does not match the schema person: $.name: required field missing" },
    ["extra-property"] = { "$.unexpected",
      "the answer does not match the schema person: $.unexpected: unexpected field (additionalProperties is false)" },
  }
  for _, mode in ipairs({ "wrong-type", "missing-required", "extra-property" }) do
    ways("reports an answer that does not match the schema (" .. mode .. ")", function(stream)
      local value, err = parse(stream, nil, mode)
      assert.is_nil(value)
      assert.equal("schema", err.kind)
      assert.equal(SCHEMA_FAILURES[mode][1], err.path)
      assert.equal(SCHEMA_FAILURES[mode][2], err.message)
      assert.equal("table", type(err.value))
      assert.equal("oai: schema: " .. SCHEMA_FAILURES[mode][2], tostring(err))
    end)
  end

  ways("passes request errors through", function(stream)
    local value, _, err = client:parse({ model = "structured", messages = { oai.user "x" }, response_format = format() },
      { stream = stream, headers = { ["x-test-status"] = "429" } })
    assert.is_nil(value)
    assert.equal("api", err.kind)
    assert.equal(429, err.status)
  end)

  it("raises without a usable response_format", function()
    assert.has_error(function() client:parse { model = "m", messages = {} } end,
      'client:parse: request.response_format must be { type = "json_schema", json_schema = {...} } or { type = "json_object" }')
    assert.has_error(function() client:parse { model = "m", messages = {}, response_format = { type = "text" } } end,
      'client:parse: response_format.type must be "json_schema" or "json_object"')
    assert.has_error(function() client:parse { model = "m", messages = {}, response_format = { type = "json_schema" } } end,
      "client:parse: response_format.json_schema must be a table {name, schema, strict}")
    assert.has_error(function() client:parse("x") end, "client:parse: request must be a table")
  end)

  it("parses a completion made elsewhere with oai.parse_reply", function()
    local function reply(content, finish, extra)
      local msg = { role = "assistant", content = content }
      for k, v in pairs(extra or {}) do msg[k] = v end
      return { choices = { { index = 0, message = msg, finish_reason = finish or "stop" } } }
    end
    assert.same({ a = 1 }, oai.parse_reply(reply('{"a":1}'), { type = "json_object" }))
    -- a ```json fence some gateways add
    assert.same({ a = 1 }, oai.parse_reply(reply('```json\n{"a":1}\n```'), { type = "json_object" }))
    assert.equal(false, oai.parse_reply(reply("false"), format({ type = "boolean" })))
    local v, _, err = oai.parse_reply(reply("[1]"), { type = "json_object" })
    assert.is_nil(v)
    assert.equal("$: expected a JSON object, got array", err.message)
    v, _, err = oai.parse_reply(reply(null), format())
    assert.equal("the reply has no content", err.message)
    v, _, err = oai.parse_reply(reply('{"a":1}', "content_filter"), format())
    assert.equal("refusal", err.kind)
    v, _, err = oai.parse_reply({ choices = {} }, format())
    assert.equal("protocol", err.kind)
  end)
end)
