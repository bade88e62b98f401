--- oai.accumulator: the accumulator, records in -> a completion out.
---
--- A stream's deltas (as records, see oai.records) are applied one by one;
--- completion() gives, at any point, everything so far in the shape of a
--- non-streamed chat.completion: content, reasoning and refusal joined per
--- choice, tool-call fragments merged into whole calls (by index, then id,
--- then position), the last finish reason, usage, and fields the decoder
--- did not know (delta, choice and top-level extras) carried through.
---
--- The Stream reads a few fields directly on its hot path (content of a
--- choice seen before is appended inline, without apply): acc.choices[idx]
--- with .parts / .np (content parts and their count), acc.order (choice
--- indexes in first-seen order), acc.finished_n (choices finished), and a
--- choice's .calls / .by_index / .by_id (to resolve tool-call events).
local core = require "oai.native"
local records = require "oai.records"

local null = core.null
local monotime = core.monotime
local nonempty = records.nonempty
local type, pairs, ipairs, setmetatable = type, pairs, ipairs, setmetatable
local concat, sort = table.concat, table.sort

local kinds, ARITY = records.kinds, records.arity
local K_CONTENT, K_REASONING, K_REFUSAL, K_TOOL, K_FINISH, K_ROLE, K_USAGE, K_META,
      K_LOGPROBS, K_DELTA_EXTRA, K_CHOICE_EXTRA, K_TOP_EXTRA =
      kinds.CONTENT, kinds.REASONING, kinds.REFUSAL, kinds.TOOL, kinds.FINISH, kinds.ROLE,
      kinds.USAGE, kinds.META, kinds.LOGPROBS, kinds.DELTA_EXTRA, kinds.CHOICE_EXTRA,
      kinds.TOP_EXTRA

local M = {}

local function new_choice(idx)
  return { index = idx, parts = {}, np = 0, calls = {}, by_index = {}, by_id = {},
           extras = {}, extra_order = {}, choice_extras = {} }
end

local ids = 0
local function gen_id()
  ids = ids + 1
  return ("call_oai%x%04d"):format(math.floor(monotime() * 1000) % 0x1000000, ids)
end

---@class oai.Accumulator
---@field choices table<integer, table> choice index -> choice state
---@field order integer[] choice indexes, first seen first
---@field finished_n? integer number of choices that have a finish reason
---@field usage? table the last usage record
local Acc = {}
Acc.__index = Acc
M.Accumulator = Acc

--- A new, empty accumulator.
---@return oai.Accumulator
function M.new()
  return setmetatable({ choices = {}, order = {}, top_extras = {}, last_tool = {} }, Acc)
end

---@param idx integer choice index
---@return table choice state
function Acc:choice(idx)
  local ch = self.choices[idx]
  if not ch then
    ch = new_choice(idx)
    self.choices[idx] = ch
    self.order[#self.order + 1] = idx
  end
  return ch
end

local function add_text(ch, field, text)
  local buf = ch[field]
  if not buf then buf = {}; ch[field] = buf end
  buf[#buf + 1] = text
end

-- a tool-call delta -> the call it continues (index, then id, then position)
---@param idx integer choice index
---@param pos integer position in the delta
---@param ti? integer tool-call index
---@param id? string
---@param typ? string
---@param name? string
---@param args? string
---@return table call
function Acc:tool(idx, pos, ti, id, typ, name, args)
  local ch = self:choice(idx)
  local call
  if ti ~= nil then
    call = ch.by_index[ti]
  elseif id ~= nil then
    call = ch.by_id[id]
  else
    -- neither index nor id: the call at the same position
    call = ch.calls[pos]
  end
  if call == nil then
    call = { args = {}, index = ti }
    ch.calls[#ch.calls + 1] = call
    call.n = #ch.calls
    if ti ~= nil then ch.by_index[ti] = call end
  end
  if id ~= nil and call.id == nil then
    call.id = id
    ch.by_id[id] = call
  end
  if typ ~= nil and call.type == nil then call.type = typ end
  if name ~= nil and call.name == nil then call.name = name end
  if args ~= nil and args ~= "" then call.args[#call.args + 1] = args end
  return call
end

-- apply one record (kind at out[i]); returns the index after it.  Kinds
-- that carry nothing to accumulate (DONE, ERROR, BAD, RAW) are skipped.
---@param out table records
---@param i integer slot of the record kind
---@return integer next slot
function Acc:apply(out, i)
  local k = out[i]
  if k == K_CONTENT then
    local ch = self:choice(out[i + 1])
    local np = ch.np + 1
    ch.parts[np] = out[i + 2]
    ch.np = np
  elseif k == K_REASONING then
    local ch = self:choice(out[i + 1])
    add_text(ch, "reasoning", out[i + 2])
    if not ch.reasoning_key then ch.reasoning_key = out[i + 3] end
  elseif k == K_REFUSAL then
    add_text(self:choice(out[i + 1]), "refusal", out[i + 2])
  elseif k == K_TOOL then
    self:tool(out[i + 1], out[i + 2], out[i + 3], out[i + 4], out[i + 5], out[i + 6], out[i + 7])
  elseif k == K_FINISH then
    local ch = self:choice(out[i + 1])
    if ch.finish_reason == nil then self.finished_n = (self.finished_n or 0) + 1 end
    ch.finish_reason = out[i + 2]
  elseif k == K_ROLE then
    local ch = self:choice(out[i + 1])
    if ch.role == nil then ch.role = out[i + 2] end
  elseif k == K_USAGE then
    self.usage = out[i + 1]
  elseif k == K_META then
    local id, created, model, fp, obj = out[i + 1], out[i + 2], out[i + 3], out[i + 4], out[i + 5]
    if self.id == nil and nonempty(id) then self.id = id end
    if self.created == nil and type(created) == "number" then self.created = created end
    if self.model == nil and nonempty(model) then self.model = model end
    if nonempty(fp) then self.system_fingerprint = fp end
    if obj ~= nil then self.object_seen = obj end
  elseif k == K_LOGPROBS then
    local ch = self:choice(out[i + 1])
    local lp = out[i + 2]
    if type(lp) == "table" then
      ch.logprobs = ch.logprobs or {}
      for _, f in ipairs({ "content", "refusal" }) do
        local list = lp[f]
        if type(list) == "table" then
          local dst = ch.logprobs[f]
          if dst == nil then dst = core.array(); ch.logprobs[f] = dst end
          for j = 1, #list do dst[#dst + 1] = list[j] end
        end
      end
    end
  elseif k == K_DELTA_EXTRA then
    local ch = self:choice(out[i + 1])
    local name, v = out[i + 2], out[i + 3]
    local old = ch.extras[name]
    if old == nil then ch.extra_order[#ch.extra_order + 1] = name end
    if type(v) == "string" and type(old) == "string" then v = old .. v end
    ch.extras[name] = v
  elseif k == K_CHOICE_EXTRA then
    local ch = self:choice(out[i + 1])
    ch.choice_extras[out[i + 2]] = out[i + 3]
  elseif k == K_TOP_EXTRA then
    self.top_extras[out[i + 1]] = out[i + 2]
  end
  return i + 1 + (ARITY[k] or 0)
end

local function joined(buf)
  if buf == nil then return nil end
  return concat(buf)
end

--- The completion so far, in the non-streamed shape.
---@return table completion
function Acc:completion()
  local c = {
    id = self.id,
    object = "chat.completion",
    created = self.created,
    model = self.model,
    system_fingerprint = self.system_fingerprint,
    usage = self.usage,
  }
  for k, v in pairs(self.top_extras) do if c[k] == nil then c[k] = v end end
  local idxs = {}
  for i = 1, #self.order do idxs[i] = self.order[i] end
  sort(idxs)
  local choices = core.array()
  for _, idx in ipairs(idxs) do
    local ch = self.choices[idx]
    local msg = { role = ch.role or "assistant" }
    if ch.np > 0 then msg.content = concat(ch.parts, "", 1, ch.np) else msg.content = null end
    local r = joined(ch.reasoning)
    if r then msg[ch.reasoning_key or "reasoning_content"] = r end
    msg.refusal = joined(ch.refusal) or null
    if #ch.calls > 0 then
      local calls = {}
      local ordered = {}
      for j = 1, #ch.calls do ordered[j] = ch.calls[j] end
      sort(ordered, function(a, b)
        local ai, bi = a.index, b.index
        if ai ~= nil and bi ~= nil and ai ~= bi then return ai < bi end
        return a.n < b.n
      end)
      for j, call in ipairs(ordered) do
        if call.id == nil then call.id = gen_id() end
        calls[j] = {
          id = call.id,
          type = call.type or "function",
          ["function"] = { name = call.name or "", arguments = concat(call.args) },
        }
      end
      msg.tool_calls = calls
    end
    for _, name in ipairs(ch.extra_order) do
      if msg[name] == nil then msg[name] = ch.extras[name] end
    end
    local choice = {
      index = idx,
      message = msg,
      finish_reason = ch.finish_reason or null,
      logprobs = ch.logprobs or null,
    }
    for k, v in pairs(ch.choice_extras) do if choice[k] == nil then choice[k] = v end end
    choices[#choices + 1] = choice
  end
  c.choices = choices
  return c
end

return M
