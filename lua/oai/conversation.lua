--- oai.conversation: a message history that sends itself.
---
---   local conv = oai.conversation { system = "You are terse.", max_messages = 40 }
---   conv:user "hi"
---   local res, err = conv:send(client, { model = "m" })     -- appends the reply
---   local stream = conv:stream(client, { model = "m" })     -- appended when it completes
---   conv:to_json(); oai.conversation.from_json(text); conv:usage()
---
--- A reply is appended only when its turn completed; a failed or canceled
--- turn appends nothing (the user message stays), so a retry is one call.
--- Each request carries the leading system message(s) and the newest
--- messages within max_messages / max_chars; a tool-calling assistant
--- message and its tool messages are sent together or not at all.
local core = require "oai.native"
local errors = require "oai.errors"
local fail = errors.fail
local messages = require "oai.messages"
local reply = require "oai.reply"
local handle = require "oai.handle"
local window = require "oai.window"

local json_encode, json_decode = core.json_encode, core.json_decode
local type, pairs, ipairs, next, error, tostring, pcall, setmetatable, getmetatable =
  type, pairs, ipairs, next, error, tostring, pcall, setmetatable, getmetatable
local sort = table.sort

local M = {}

local VERSION = 1

---@class oai.ConversationOptions
---@field system? string|oai.ContentPart[] the system message
---@field max_messages? integer most messages sent besides the leading system message(s) (no limit)
---@field max_chars? integer most characters of text sent, system message included (no limit)
---@field keep_reasoning? boolean send assistant turns' reasoning_content back (false)
---@field request? table default request fields (model, temperature, ...) under each call's own
---@field messages? oai.Message[] initial history

---@class oai.Conversation
---@field max_messages? integer
---@field max_chars? integer
---@field keep_reasoning boolean
---@field defaults? table
local Conversation = {}
Conversation.__index = Conversation
M.Conversation = Conversation

local function check_message(m, who, level)
  if type(m) ~= "table" or type(m.role) ~= "string" then
    error(who .. ": a message is a table with a string role", level + 1)
  end
end

local function positive(v, name)
  if v ~= nil and (type(v) ~= "number" or not (v >= 1)) then   -- NaN fails v >= 1
    error("oai.conversation: " .. name .. " must be a positive number", 3)
  end
  return v
end

--- A new conversation.
---@param opts? oai.ConversationOptions
---@return oai.Conversation
function M.new(opts)
  if opts ~= nil and type(opts) ~= "table" then error("oai.conversation: options must be a table", 2) end
  opts = opts or {}
  local self = setmetatable({
    _messages = core.array(),
    _usage = {},
    max_messages = positive(opts.max_messages, "max_messages"),
    max_chars = positive(opts.max_chars, "max_chars"),
    keep_reasoning = opts.keep_reasoning == true,
  }, Conversation)
  if opts.request ~= nil then
    if type(opts.request) ~= "table" then error("oai.conversation: request must be a table", 2) end
    self.defaults = opts.request
  end
  if opts.system ~= nil then self._messages[1] = messages.system(opts.system) end
  if opts.messages ~= nil then
    if type(opts.messages) ~= "table" then error("oai.conversation: messages must be an array", 2) end
    for _, m in ipairs(opts.messages) do
      check_message(m, "oai.conversation", 2)
      self._messages[#self._messages + 1] = m
    end
  end
  return self
end

function Conversation:__tostring()
  return "oai.conversation (" .. #self._messages .. " messages)"
end

---------------------------------------------------------------- history

--- Append a message (any role).
---@param message oai.Message
---@return oai.Conversation self
function Conversation:add(message)
  check_message(message, "conv:add", 2)
  self._messages[#self._messages + 1] = message
  return self
end

--- Set the system message (replaces a leading one).
---@param text string|oai.ContentPart[]
---@return oai.Conversation self
function Conversation:system(text)
  local m = messages.system(text)
  local first = self._messages[1]
  if first and first.role == "system" then
    self._messages[1] = m
  else
    table.insert(self._messages, 1, m)
  end
  return self
end

--- Append a user message.
---@param content oai.Content
---@param fields? table
---@return oai.Conversation self
function Conversation:user(content, fields)
  self._messages[#self._messages + 1] = messages.user(content, fields)
  return self
end

--- Append an assistant message.
---@param content? oai.Content
---@param fields? table
---@return oai.Conversation self
function Conversation:assistant(content, fields)
  self._messages[#self._messages + 1] = messages.assistant(content, fields)
  return self
end

--- Append a tool result message.
---@param tool_call_id string
---@param content oai.Content
---@return oai.Conversation self
function Conversation:tool(tool_call_id, content)
  self._messages[#self._messages + 1] = messages.tool(tool_call_id, content)
  return self
end

--- Every message of the history (a new array).
---@return oai.Message[]
function Conversation:messages()
  local out = core.array()
  for i, m in ipairs(self._messages) do out[i] = m end
  return out
end

--- The newest message, or nil.
---@return oai.Message?
function Conversation:last()
  return self._messages[#self._messages]
end

--- Remove and return the newest message (e.g. to regenerate a reply).
---@return oai.Message?
function Conversation:pop()
  local n = #self._messages
  if n == 0 then return nil end
  local m = self._messages[n]
  self._messages[n] = nil
  return m
end

--- Forget every message but the leading system message(s); usage stays.
---@return oai.Conversation self
function Conversation:clear()
  local keep = core.array()
  for _, m in ipairs(self._messages) do
    if m.role ~= "system" and m.role ~= "developer" then break end
    keep[#keep + 1] = m
  end
  self._messages = keep
  return self
end

---------------------------------------------------------------- trimming

--- The messages the next request will carry: the leading system
--- message(s), then the newest messages within max_messages and max_chars
--- (the newest message or tool-call turn always; see oai.window).
--- Assistant messages lose their reasoning fields unless keep_reasoning.
---@return oai.Message[]
function Conversation:window()
  return window.of(self._messages, self.max_messages, self.max_chars, self.keep_reasoning)
end

--- The request the next send would make: the conversation's default
--- request fields, then `fields`, and `messages` = conv:window().
---@param fields? table request fields (model, ...); must not hold messages
---@return table request
function Conversation:request(fields)
  return self:_request(fields, "conv:request", 2)
end

function Conversation:_request(fields, who, level)
  if fields ~= nil and type(fields) ~= "table" then error(who .. ": request must be a table", level + 1) end
  if fields and fields.messages ~= nil then
    error(who .. ": request.messages is set; the conversation supplies the messages", level + 1)
  end
  local req = {}
  if self.defaults then for k, v in pairs(self.defaults) do req[k] = v end end
  if fields then for k, v in pairs(fields) do req[k] = v end end
  req.messages = self:window()
  return req
end

---------------------------------------------------------------- usage

local COUNTERS = { "requests", "prompt_tokens", "completion_tokens", "total_tokens",
                   "reasoning_tokens", "cached_tokens" }

local function num(v)
  if type(v) == "number" and v == v then return v end
  return 0
end

function Conversation:_record(res, model)
  if type(model) ~= "string" or model == "" then model = type(res.model) == "string" and res.model or "" end
  local u = self._usage[model]
  if not u then
    u = {}
    for _, k in ipairs(COUNTERS) do u[k] = 0 end
    self._usage[model] = u
  end
  local function add(k, n) u[k] = num(u[k]) + n end
  add("requests", 1)
  local usage = res.usage
  if type(usage) == "table" then
    local p, c = num(usage.prompt_tokens), num(usage.completion_tokens)
    add("prompt_tokens", p)
    add("completion_tokens", c)
    add("total_tokens", type(usage.total_tokens) == "number" and usage.total_tokens or p + c)
    local cd, pd = usage.completion_tokens_details, usage.prompt_tokens_details
    if type(cd) == "table" then add("reasoning_tokens", num(cd.reasoning_tokens)) end
    if type(pd) == "table" then add("cached_tokens", num(pd.cached_tokens)) end
  end
end

---@class oai.Price
---@field prompt number per million prompt tokens
---@field completion number per million completion tokens (reasoning tokens included)
---@field cached? number per million cached prompt tokens (default: the prompt price)

---@class oai.Usage
---@field requests integer
---@field prompt_tokens integer
---@field completion_tokens integer
---@field total_tokens integer
---@field reasoning_tokens integer
---@field cached_tokens integer
---@field by_model table<string, table> the same counters per model (with cost when priced)
---@field cost? number with opts.prices: the cost of the priced models
---@field unpriced? string[] with opts.prices: models without a price

--- Token totals over every completed request of this conversation.
---@param opts? {prices?: table<string, oai.Price>}
---@return oai.Usage
function Conversation:usage(opts)
  local prices = opts and opts.prices
  local total = { by_model = {} }
  for _, k in ipairs(COUNTERS) do total[k] = 0 end
  local models = {}
  for model in pairs(self._usage) do models[#models + 1] = model end
  sort(models)
  if prices then total.cost = 0 end
  for _, model in ipairs(models) do
    local u = self._usage[model]
    local copy = {}
    for _, k in ipairs(COUNTERS) do
      copy[k] = num(u[k])
      total[k] = total[k] + copy[k]
    end
    if prices then
      local p = prices[model]
      if type(p) == "table" then
        local cached = copy.cached_tokens
        local cost = ((copy.prompt_tokens - cached) * num(p.prompt)
          + cached * (p.cached ~= nil and num(p.cached) or num(p.prompt))
          + copy.completion_tokens * num(p.completion)) / 1e6
        copy.cost = cost
        total.cost = total.cost + cost
      else
        total.unpriced = total.unpriced or {}
        total.unpriced[#total.unpriced + 1] = model
      end
    end
    total.by_model[model] = copy
  end
  return total
end

---------------------------------------------------------------- sending

-- append the reply of a completed turn
local function commit(self, res, model)
  local choice, msg = reply.message(res)
  if not choice then return nil, msg end
  self:_record(res, model)
  self._messages[#self._messages + 1] = messages.from_reply(msg)
  return true
end

local function check_client(client, who)
  if type(client) ~= "table" or type(client.chat) ~= "function" then
    error(who .. ": expected a client as first argument", 3)
  end
end

--- Send the conversation (client:chat) and append the reply.
---@param client oai.Client
---@param request? table request fields (model, temperature, tools, ...) without messages
---@param opts? table per-call client options
---@return table? completion
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Conversation:send(client, request, opts)
  check_client(client, "conv:send")
  local req = self:_request(request, "conv:send", 2)
  local res, msg, err = client:chat(req, opts)
  if not res then return nil, msg, err end
  local ok, cerr = commit(self, res, req.model)
  if not ok then return fail(cerr) end
  return res
end

--- Stream the conversation (client:stream).  The reply is appended once,
--- when the stream completes: when an iterator reaches its end, when
--- result() succeeds, or (with callbacks) before on_done.
---@param client oai.Client
---@param request? table request fields without messages
---@param opts? table per-call client options and stream callbacks
---@return oai.Stream? stream
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Conversation:stream(client, request, opts)
  check_client(client, "conv:stream")
  local req = self:_request(request, "conv:stream", 2)
  local done = false
  local function finish(res)
    if res and not done then
      done = true
      commit(self, res, req.model)
    end
  end
  local callbacks = handle.has_callbacks(opts)
  if callbacks then
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    local on_done = opts.on_done
    o.on_done = function(res, err)
      finish(res)
      if on_done then on_done(res, err) end
    end
    opts = o
  end
  local s, msg, err = client:stream(req, opts)
  if not s then return nil, msg, err end
  local result = s.result
  s.result = function(st)
    local res, rmsg, rerr = result(st)
    finish(res)
    return res, rmsg, rerr
  end
  if not callbacks then
    for _, name in ipairs({ "text", "events", "chunks" }) do
      local iter = s[name]
      s[name] = function(st, ...)
        local f, state, ctl, closer = iter(st, ...)
        return function(...)
          local v = f(...)
          if v == nil then st:result() end
          return v
        end, state, ctl, closer
      end
    end
  end
  return s
end

--- Run the tool loop (tools:run) on the conversation; on success every
--- new message (tool-calling turns, tool results, the final reply) is
--- appended.  Usage counts every reply, also of a loop that failed.
---@param client oai.Client
---@param tools oai.Toolset
---@param request? table request fields without messages
---@param opts? oai.RunOptions
---@return table? final
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Conversation:run(client, tools, request, opts)
  check_client(client, "conv:run")
  if type(tools) ~= "table" or type(tools.run) ~= "function" then
    error("conv:run: expected a toolset (oai.tools) as second argument", 2)
  end
  local req = self:_request(request, "conv:run", 2)
  local o = {}
  if opts then for k, v in pairs(opts) do o[k] = v end end
  if o.keep_reasoning == nil then o.keep_reasoning = self.keep_reasoning end
  local replies = {}
  local on_response = o.on_response
  o.on_response = function(res, round)
    replies[#replies + 1] = res
    if on_response then on_response(res, round) end
  end
  local final, msg, err, history = tools:run(client, req, o)
  for _, r in ipairs(replies) do self:_record(r, req.model) end
  if not final then return nil, msg, err end
  for i = #req.messages + 1, #history do
    self._messages[#self._messages + 1] = history[i]
  end
  return final
end

---------------------------------------------------------------- copies and JSON

local function deep_copy(v)
  if type(v) ~= "table" then return v end
  local c = {}
  for k, x in pairs(v) do c[k] = deep_copy(x) end
  return setmetatable(c, getmetatable(v))
end

--- An independent copy (history, usage and options).
---@return oai.Conversation
function Conversation:fork()
  local c = setmetatable({}, Conversation)
  for k, v in pairs(self) do c[k] = deep_copy(v) end
  return c
end

--- The conversation as JSON text: messages, usage and options; keys
--- sorted, empty arrays and nulls kept.  Raises if a message holds a value
--- JSON cannot encode.
---@return string
function Conversation:to_json()
  local doc = {
    version = VERSION,
    messages = self._messages,
    usage = self._usage,
    keep_reasoning = self.keep_reasoning,
    max_messages = self.max_messages,
    max_chars = self.max_chars,
    request = self.defaults,
  }
  if next(self._usage) == nil then doc.usage = core.object() end
  local ok, s = pcall(json_encode, doc)
  if not ok then error("conv:to_json: " .. tostring(s), 2) end
  return s
end

local function bad(path, problem)
  return fail(errors.new({ kind = "schema", path = path, message = "not a saved conversation: " .. path .. ": " .. problem }))
end

--- A conversation from conv:to_json() text.
---@param text string
---@return oai.Conversation? conv
---@return string? message of the failure (tostring(err))
---@return oai.Error? err kind "schema" (invalid JSON or not a saved conversation)
function M.from_json(text)
  if type(text) ~= "string" then error("oai.conversation.from_json: expected a string", 2) end
  local doc, derr = json_decode(text)
  if doc == nil then return bad("$", "invalid JSON (" .. tostring(derr) .. ")") end
  if type(doc) ~= "table" then return bad("$", "not an object") end
  if doc.version ~= VERSION then return bad("$.version", "expected " .. VERSION) end
  local msgs = doc.messages
  if type(msgs) ~= "table" then return bad("$.messages", "not an array") end
  for i = 1, #msgs do
    if type(msgs[i]) ~= "table" or type(msgs[i].role) ~= "string" then
      return bad("$.messages[" .. i .. "]", "not a message")
    end
  end
  local usage = doc.usage
  if usage ~= nil and type(usage) ~= "table" then return bad("$.usage", "not an object") end
  for model, u in pairs(usage or {}) do
    if type(u) ~= "table" then return bad("$.usage." .. tostring(model), "not an object") end
  end
  local function opt_number(k)
    local v = doc[k]
    if v ~= nil and (type(v) ~= "number" or v < 1) then return false end
    return true
  end
  if not opt_number("max_messages") then return bad("$.max_messages", "not a positive number") end
  if not opt_number("max_chars") then return bad("$.max_chars", "not a positive number") end
  if doc.request ~= nil and type(doc.request) ~= "table" then return bad("$.request", "not an object") end
  local conv = setmetatable({
    _messages = core.array(msgs),
    _usage = usage or {},
    max_messages = doc.max_messages,
    max_chars = doc.max_chars,
    keep_reasoning = doc.keep_reasoning == true,
    defaults = doc.request,
  }, Conversation)
  return conv
end

--- oai.conversation: callable (oai.conversation(opts) is M.new(opts)),
--- with new, from_json and the Conversation type.
M.api = setmetatable({
  new = M.new,
  from_json = M.from_json,
  Conversation = Conversation,
}, { __call = function(_, opts) return M.new(opts) end })

return M
