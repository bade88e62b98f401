--- Model behaviours of the oai.testing server (runs inside nginx's LuaJIT).
-- Each model is a function (req, ctx) -> reply, where reply is
--   { content = string | nil (null), pieces = { stream pieces of content } | nil,
--     reasoning = string | nil, refusal = string | nil,
--     tool_calls = { { id =, name =, arguments = string | table } } | nil,
--     finish_reason = "stop" | ... }
-- or { error = { status =, message =, type =, param =, code = } }.
-- chat.plan expands one reply into the `n` choices the renderer in app.lua sends.
local json = require "oai.testing.json"

local chat = {}

--- text_of(content) -> string: a message content as text (parts: text parts joined by " ").
local function text_of(content)
  if type(content) == "string" then return content end
  if type(content) == "table" then
    local parts = {}
    for _, part in ipairs(content) do
      if type(part) == "table" and type(part.text) == "string"
        and (part.type == nil or part.type == "text") then
        parts[#parts + 1] = part.text
      end
    end
    return table.concat(parts, " ")
  end
  return ""
end
chat.text_of = text_of

--- words(s) -> number of whitespace-separated words (our "tokens").
local function words(s)
  local n = 0
  if type(s) == "string" then
    for _ in s:gmatch("%S+") do n = n + 1 end
  end
  return n
end
chat.words = words

--- split_words(text) -> pieces, one word each with its trailing spaces; concat == text.
local function split_words(text)
  local pieces = {}
  if text == "" then return pieces end
  for piece in text:gmatch("%s*%S+%s*") do pieces[#pieces + 1] = piece end
  if table.concat(pieces) ~= text then pieces = { text } end -- only spaces
  return pieces
end
chat.split_words = split_words

local function last_user_text(messages)
  for i = #messages, 1, -1 do
    local m = messages[i]
    if type(m) == "table" and m.role == "user" then return text_of(m.content) end
  end
  return ""
end
chat.last_user_text = last_user_text

chat.models = {}

--- Any model name not listed below: "Hello! You said: <last user text>".
function chat.models.default(req)
  return { content = "Hello! You said: " .. last_user_text(req.messages), finish_reason = "stop" }
end

--- "reasoner": the default reply plus reasoning_content "Thinking about: <last user text>".
function chat.models.reasoner(req)
  local reply = chat.models.default(req)
  reply.reasoning = "Thinking about: " .. last_user_text(req.messages)
  return reply
end

---------------------------------------------------------------------------- schemas

--- instance(schema, root, key) -> a deterministic small value valid for the schema:
-- const, else enum[1], else anyOf/oneOf[1], else by type: object -> its required
-- properties (every property when there is no `required`),
-- array -> one item, string -> the property name (or "text"), integer 1, number 1.5,
-- boolean true, null. `$ref` to #, #/$defs/X and #/definitions/X is followed.
local function instance(schema, root, key, depth)
  depth = (depth or 0) + 1
  if type(schema) ~= "table" or depth > 24 then return key or "text" end
  local ref = schema["$ref"]
  if type(ref) == "string" then
    local target
    if ref == "#" then
      target = root
    else
      local name = ref:match("^#/%$defs/(.+)$")
      local defs = root["$defs"]
      if not name then name, defs = ref:match("^#/definitions/(.+)$"), root.definitions end
      target = name and type(defs) == "table" and defs[name]
    end
    if type(target) == "table" then return instance(target, root, key, depth) end
  end
  if schema.const ~= nil then return schema.const end
  if type(schema.enum) == "table" and schema.enum[1] ~= nil then return schema.enum[1] end
  local alts = schema.anyOf or schema.oneOf
  if type(alts) == "table" and alts[1] ~= nil then return instance(alts[1], root, key, depth) end
  local t = schema.type
  if type(t) == "table" then
    local pick = "null"
    for _, name in ipairs(t) do
      if name ~= "null" then pick = name; break end
    end
    t = pick
  end
  if t == nil then
    if type(schema.properties) == "table" then t = "object"
    elseif schema.items ~= nil then t = "array"
    else t = "string" end
  end
  if t == "object" then
    local obj = {}
    local props = type(schema.properties) == "table" and schema.properties or {}
    if type(schema.required) == "table" then
      for _, name in ipairs(schema.required) do obj[name] = instance(props[name], root, name, depth) end
    else
      for name, sub in pairs(props) do obj[name] = instance(sub, root, name, depth) end
    end
    return obj
  elseif t == "array" then
    if schema.maxItems == 0 then return json.empty_array end
    return { instance(schema.items, root, key, depth) }
  elseif t == "integer" then return 1
  elseif t == "number" then return 1.5
  elseif t == "boolean" then return true
  elseif t == "null" then return json.null
  end
  return key or "text"
end
chat.instance = instance

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  return keys
end

local function schema_type(schema)
  local t = type(schema) == "table" and schema.type
  if type(t) == "table" then t = t[1] end
  if t == nil and type(schema) == "table" then
    if type(schema.properties) == "table" then t = "object" elseif schema.items ~= nil then t = "array" end
  end
  return t
end

--- corrupt(value, schema) -> value with one wrong-typed leaf: the first property in sorted
-- order (descending into objects and arrays); a string expected gets 42, anything else "wrong".
local function corrupt(value, schema)
  local t = schema_type(schema)
  if t == "object" and type(value) == "table" and type(schema.properties) == "table" then
    local keys = sorted_keys(schema.properties)
    local k = keys[1]
    if k ~= nil then value[k] = corrupt(value[k], schema.properties[k]) end
    return value
  elseif t == "array" and type(value) == "table" and value[1] ~= nil then
    value[1] = corrupt(value[1], schema.items)
    return value
  elseif t == "string" then
    return 42
  end
  return "wrong"
end

---------------------------------------------------------------------------- tools

-- "key=value", "key=\"two words\"" and "tool.key=value" pairs of a message
local function given_values(text)
  local given = {}
  for k, v in text:gmatch('([%w_%.%-]+)="([^"]*)"') do given[k] = v end
  for k, v in text:gmatch('([%w_%.%-]+)=([^%s",;%)%]]+)') do
    v = v:gsub("[%.!?]+$", "")
    if given[k] == nil then given[k] = v end
  end
  return given
end

local function convert(v, schema)
  local t = schema_type(schema)
  if t == "integer" or t == "number" then return tonumber(v) or v end
  if t == "boolean" then return v == "true" end
  return v
end

-- arguments (JSON text) for a call of tool `fn` (the request's function object)
local function good_arguments(fn, text)
  local params = fn.parameters
  if type(params) ~= "table" or type(params.properties) ~= "table" or next(params.properties) == nil then
    return '{"query": ' .. json.encode(text) .. '}', nil
  end
  local given = given_values(text)
  local required = {}
  if type(params.required) == "table" then
    for _, name in ipairs(params.required) do required[name] = true end
  else
    for name in pairs(params.properties) do required[name] = true end
  end
  local args = {}
  for name, sub in pairs(params.properties) do
    local v = given[fn.name .. "." .. name]
    if v == nil then v = given[name] end
    if v ~= nil then
      args[name] = convert(v, sub)
    elseif name == "query" and schema_type(sub) == "string" then
      args[name] = text
    elseif required[name] then
      args[name] = instance(sub, params, name)
    end
  end
  return json.encode(args), args
end

local BAD_MODES = { ["invalid-json"] = true, ["unknown-tool"] = true,
                    ["missing-required"] = true, ["wrong-type"] = true }

-- one call, spoiled as `mode` says
local function spoil(call, fn, mode)
  if mode == "invalid-json" then
    call.arguments = call.arguments:sub(1, -2)
  elseif mode == "unknown-tool" then
    call.name = "no_such_tool"
  elseif mode == "missing-required" then
    local params = fn.parameters
    local args = json.decode(call.arguments) or {}
    local req = type(params) == "table" and type(params.required) == "table" and params.required or {}
    for _, name in ipairs(req) do args[name] = nil end
    if #req == 0 then
      for _, k in ipairs(sorted_keys(args)) do args[k] = nil; break end
    end
    call.arguments = next(args) == nil and "{}" or json.encode(args)
  elseif mode == "wrong-type" then
    local args = json.decode(call.arguments) or {}
    call.arguments = json.encode(corrupt(args, fn.parameters or {}))
  end
end

--- "tools": with `tools` and a user message, calls the tools named in the last user message
-- (else the first tool), all in one reply (parallel calls). Arguments: `{"query": <text>}`
-- for a tool without properties, else each property given as `name=value`, `name="a b"` or
-- `tool.name=value` in the text, and chat.instance for the other required ones. Once there are as many batches of tool results after
-- the last user message as rounds wanted, answers "Tool results: a | b" quoting the last
-- batch. Headers: x-test-tool-rounds: N (rounds of calls, default 1); x-test-tool-mode:
-- invalid-json | unknown-tool | missing-required | wrong-type (the first call of the first
-- round is spoiled, one more round then corrects it) | object-args (arguments as a JSON
-- object) | forever (never stops calling).
function chat.models.tools(req, ctx)
  local messages = req.messages
  local headers = ctx.headers or {}
  local mode = headers["x-test-tool-mode"]
  local rounds = math.floor(tonumber(headers["x-test-tool-rounds"]) or 1)
  if BAD_MODES[mode] then rounds = rounds + 1 end
  local user
  for i = #messages, 1, -1 do
    if type(messages[i]) == "table" and messages[i].role == "user" then user = i; break end
  end
  -- batches of tool results since the last user message
  local batches, prev_tool = 0, false
  for i = (user or 0) + 1, #messages do
    local is_tool = type(messages[i]) == "table" and messages[i].role == "tool"
    if is_tool and not prev_tool then batches = batches + 1 end
    prev_tool = is_tool
  end
  local last = messages[#messages]
  local tools = type(req.tools) == "table" and req.tools or {}
  local wants_calls = #tools > 0 and user ~= nil and (mode == "forever" or batches < rounds)
  if type(last) == "table" and last.role == "tool" and not wants_calls then
    local first = #messages
    while first > 1 and type(messages[first - 1]) == "table" and messages[first - 1].role == "tool" do
      first = first - 1
    end
    local results = {}
    for i = first, #messages do results[#results + 1] = text_of(messages[i].content) end
    return { content = "Tool results: " .. table.concat(results, " | "), finish_reason = "stop" }
  end
  if wants_calls and type(last) == "table" and (last.role == "user" or last.role == "tool") then
    local text = text_of(messages[user].content)
    local lower = text:lower()
    local fns = {}
    for _, tool in ipairs(tools) do
      local fn = type(tool) == "table" and tool["function"]
      local name = type(fn) == "table" and fn.name
      if type(name) == "string" and name ~= "" and lower:find(name:lower(), 1, true) then
        fns[#fns + 1] = fn
      end
    end
    if #fns == 0 then
      local fn = type(tools[1]) == "table" and tools[1]["function"]
      fns[1] = type(fn) == "table" and type(fn.name) == "string" and fn or { name = "tool" }
    end
    local calls = {}
    for k, fn in ipairs(fns) do
      local arguments, args = good_arguments(fn, text)
      local call = { id = "call_" .. ctx.n .. "_" .. (k - 1), name = fn.name, arguments = arguments }
      if mode == "object-args" then call.arguments = args or json.decode(arguments) end
      if k == 1 and batches == 0 and BAD_MODES[mode] then spoil(call, fn, mode) end
      calls[k] = call
    end
    return { content = nil, tool_calls = calls, finish_reason = "tool_calls" }
  end
  return chat.models.default(req)
end

---------------------------------------------------------------------------- structured

-- UTF-8-safe pieces of about `size` bytes
local function pieces_of(s, size)
  local out, i, len = {}, 1, #s
  while i <= len do
    local j = math.min(i + size - 1, len)
    while j < len do
      local b = s:byte(j + 1)
      if b < 0x80 or b >= 0xC0 then break end
      j = j + 1
    end
    out[#out + 1] = s:sub(i, j)
    i = j + 1
  end
  return out
end
chat.pieces_of = pieces_of

--- "structured": with response_format json_schema answers chat.instance(schema) as JSON;
-- with json_object `{"answer": <last user text>}`; otherwise as the default model. Streamed
-- in pieces of about 8 bytes. x-test-structured: refusal (refusal text, content null) |
-- length (the first half, finish_reason "length") | invalid-json (prose before the JSON) |
-- wrong-type (chat.corrupt) | missing-required (the first required property removed) |
-- extra-property (adds "unexpected": true).
function chat.models.structured(req, ctx)
  local headers = ctx.headers or {}
  local mode = headers["x-test-structured"]
  local rf = type(req.response_format) == "table" and req.response_format or {}
  if mode == "refusal" then
    return { refusal = "I'm sorry, I can't help with that.", finish_reason = "stop" }
  end
  local value, schema
  if rf.type == "json_schema" and type(rf.json_schema) == "table" then
    schema = type(rf.json_schema.schema) == "table" and rf.json_schema.schema or {}
    value = instance(schema, schema)
  elseif rf.type == "json_object" then
    value = { answer = last_user_text(req.messages) }
  else
    return chat.models.default(req)
  end
  if mode == "wrong-type" then
    value = corrupt(value, schema or {})
  elseif mode == "missing-required" and type(value) == "table" then
    local required = schema and type(schema.required) == "table" and schema.required or {}
    if required[1] ~= nil then value[required[1]] = nil end
  elseif mode == "extra-property" and type(value) == "table" then
    value.unexpected = true
  end
  local content = json.encode(value)
  if type(value) == "table" and next(value) == nil and schema_type(schema) == "object" then content = "{}" end
  local finish = "stop"
  if mode == "invalid-json" then
    content = "Here is the JSON you asked for: " .. content
  elseif mode == "length" then
    content = content:sub(1, math.floor(#content / 2))
    finish = "length"
  end
  return { content = content, pieces = pieces_of(content, 8), finish_reason = finish }
end

--- "strict-stream-options": refuses any request carrying stream_options, like some gateways.
chat.models["strict-stream-options"] = function(req)
  if req.stream_options ~= nil then
    return { error = { status = 400,
      message = "Unrecognized request argument supplied: stream_options",
      type = "invalid_request_error", param = "stream_options" } }
  end
  return chat.models.default(req)
end

--- plan(req, ctx) -> { choices = { {content, pieces, reasoning, refusal, tool_calls, finish_reason} } }
-- | nil, error. ctx.chunks (x-test-chunks) replaces the text by "w1 w2 ... wN" in N pieces.
function chat.plan(req, ctx)
  local behaviour = chat.models[req.model] or chat.models.default
  local reply = behaviour(req, ctx)
  if reply.error then return nil, reply.error end
  local n = math.floor(tonumber(req.n) or 1)
  if n < 1 then n = 1 elseif n > 128 then n = 128 end
  local choices = {}
  for i = 0, n - 1 do
    local c = { finish_reason = reply.finish_reason or "stop", reasoning = reply.reasoning,
                refusal = reply.refusal }
    if reply.content then
      local pieces
      if ctx.chunks then
        pieces = {}
        for k = 1, ctx.chunks do pieces[k] = "w" .. k .. (k < ctx.chunks and " " or "") end
      elseif reply.pieces then
        pieces = {}
        for k, p in ipairs(reply.pieces) do pieces[k] = p end
      else
        pieces = split_words(reply.content)
      end
      if i > 0 then
        local prefix = "[" .. i .. "] "
        if pieces[1] then pieces[1] = prefix .. pieces[1] else pieces[1] = prefix end
      end
      c.pieces = pieces
      c.content = table.concat(pieces)
    end
    if reply.tool_calls then
      c.tool_calls = {}
      for k, call in ipairs(reply.tool_calls) do
        c.tool_calls[k] = { id = i == 0 and call.id or (call.id .. "_" .. i),
          name = call.name, arguments = call.arguments }
      end
    end
    choices[#choices + 1] = c
  end
  return { choices = choices }
end

--- usage(req, plan) -> usage object: words of all message texts / of everything generated;
-- with reasoning, completion_tokens_details.reasoning_tokens = its words.
function chat.usage(req, plan)
  local prompt = 0
  for _, m in ipairs(req.messages) do
    if type(m) == "table" then prompt = prompt + words(text_of(m.content)) end
  end
  local completion, reasoning = 0, 0
  for _, c in ipairs(plan.choices) do
    completion = completion + words(c.content) + words(c.reasoning) + words(c.refusal)
    reasoning = reasoning + words(c.reasoning)
    for _, call in ipairs(c.tool_calls or {}) do completion = completion + words(call.arguments) end
  end
  local usage = { prompt_tokens = prompt, completion_tokens = completion, total_tokens = prompt + completion }
  -- reasoning models report the reasoning part of completion_tokens
  if reasoning > 0 then usage.completion_tokens_details = { reasoning_tokens = reasoning } end
  return usage
end

return chat
