--- oai.structured: structured outputs (client:parse, oai.parse_reply, oai.validate).
---
---   local value, err = client:parse { model = "m", messages = msgs,
---     response_format = { type = "json_schema", json_schema = {
---       name = "person", strict = true, schema = { type = "object", ... } } } }
---
--- Returns the decoded answer.  Failures are nil, err with err.kind
--- "refusal" (the model refused; err.refusal), "length" (the answer was cut
--- off), "schema" (not JSON, or not matching the schema; err.path), or the
--- request's own error kinds.
local core = require "oai.native"
local errors = require "oai.errors"
local schema = require "oai.schema"
local reply = require "oai.reply"

local json_decode = core.json_decode
local type, error, tostring = type, error, tostring

local M = {}

local function fail(kind, message, fields)
  fields = fields or {}
  fields.kind, fields.message = kind, message
  return errors.fail(errors.new(fields))
end

-- the JSON inside a ```json fence (some gateways add one in json_object mode)
local function unfence(s)
  return s:match("^%s*```[%w_%-]*[ \t]*\r?\n(.-)\r?\n?```%s*$")
end

-- raises on a response_format client:parse cannot check against
local function format_of(rf, who, level)
  if type(rf) ~= "table" then
    error(who .. ': request.response_format must be { type = "json_schema", json_schema = {...} } '
      .. 'or { type = "json_object" }', level + 1)
  end
  if rf.type == "json_schema" then
    if type(rf.json_schema) ~= "table" then
      error(who .. ": response_format.json_schema must be a table {name, schema, strict}", level + 1)
    end
    local s = rf.json_schema.schema
    if s ~= nil and type(s) ~= "table" and type(s) ~= "boolean" then
      error(who .. ": response_format.json_schema.schema must be a table", level + 1)
    end
    return s, rf.json_schema.name
  elseif rf.type == "json_object" then
    return nil, nil
  end
  error(who .. ': response_format.type must be "json_schema" or "json_object"', level + 1)
end

--- The decoded answer of a completion made with response_format, checked
--- like client:parse does.
---@param completion table a completion (non-streamed shape)
---@param response_format table the request's response_format
---@return any value the decoded JSON (oai.null for null)
---@return string? message of the failure
---@return oai.Error? err kind "refusal" | "length" | "schema"
function M.reply(completion, response_format)
  local sch, name = format_of(response_format, "oai.parse_reply", 2)
  return M._check(completion, response_format, sch, name)
end

function M._check(completion, rf, sch, name)
  local choice, msg = reply.message(completion)
  if not choice then return errors.fail(msg) end
  local content = msg.content
  local base = { completion = completion, content = type(content) == "string" and content or nil }
  if type(msg.refusal) == "string" and msg.refusal ~= "" then
    base.refusal = msg.refusal
    return fail("refusal", msg.refusal, base)
  end
  local finish = choice.finish_reason
  if finish == "length" then
    return fail("length", 'the answer was cut off (finish_reason "length"); raise max_tokens '
      .. "or max_completion_tokens", base)
  end
  if finish == "content_filter" then
    return fail("refusal", 'the answer was withheld by a content filter (finish_reason "content_filter")', base)
  end
  if type(content) ~= "string" then
    base.path = "$"
    return fail("schema", "the reply has no content", base)
  end
  local value, derr = json_decode(content)
  if value == nil then
    local inner = unfence(content)
    if inner then value = json_decode(inner) end
  end
  if value == nil then
    base.path = "$"
    return fail("schema", "the answer is not valid JSON (" .. tostring(derr) .. ")", base)
  end
  if rf.type == "json_object" and schema.json_type(value) ~= "object" then
    base.path = "$"
    return fail("schema", "$: expected a JSON object, got " .. schema.json_type(value), base)
  end
  if sch ~= nil then
    local ok, problem, path = schema.check(value, sch, "$")
    if not ok then
      base.path = path
      base.value = value
      local label = type(name) == "string" and (" " .. name) or ""
      return fail("schema", "the answer does not match the schema" .. label .. ": " .. problem, base)
    end
  end
  return value
end

--- Structured outputs: send the request (which must carry a json_schema
--- or json_object response_format) and return the decoded answer, checked
--- against the schema.  opts.stream = true streams it (client:stream and
--- its result(); stream callbacks in opts work too).  Installed as
--- client:parse.
---@param client oai.Client
---@param request table
---@param opts? table per-call client options, `stream`
---@return any value the decoded answer
---@return string? message of the failure
---@return oai.Error? err kind "refusal" | "length" | "schema" | a request error
---@return table? completion on success, the completion
function M.parse(client, request, opts)
  if type(request) ~= "table" then error("client:parse: request must be a table", 2) end
  local rf = request.response_format
  local sch, name = format_of(rf, "client:parse", 2)
  local res, msg, err = reply.ask(client, request, opts, opts and opts.stream)
  if not res then return nil, msg, err end
  local value, pmsg, perr = M._check(res, rf, sch, name)
  if perr then return nil, pmsg, perr end
  return value, nil, nil, res
end

--- Check a decoded JSON value against a JSON schema (the checker
--- client:parse and the tool loop use).  Installed as oai.validate.
---@param value any
---@param s table the schema
---@return true|nil ok
---@return string? problem "PATH: problem"
---@return string? path
function M.validate(value, s)
  if type(s) ~= "table" and type(s) ~= "boolean" then error("oai.validate: schema must be a table", 2) end
  return schema.check(value, s, "$")
end

return M
