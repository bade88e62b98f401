--- oai.records: the record vocabulary of a chat completion stream.
---
--- A record is one delta, flattened: a kind number, then a fixed number of
--- slots (its arity), laid one after another in a flat array `out[1..n]`.
--- The C chunk decoder (req:read_records, p:records) fills such arrays from
--- the event stream without building chunk tables; `records_from_chunk` here
--- is the generic path that turns an already decoded chat.completion.chunk
--- table into the same records (for chunks(), for chunk shapes the C fast
--- path hands over whole as K_RAW, and for replaying a plain JSON body).
---
--- Kinds and their slots after the kind:
---   CONTENT      idx, text
---   REASONING    idx, text, field ("reasoning_content" | "reasoning")
---   REFUSAL      idx, text
---   TOOL         idx, pos, index?, id?, type?, name?, arguments?
---   FINISH       idx, reason
---   ROLE         idx, role
---   USAGE        usage
---   META         id, created, model, system_fingerprint, object
---   LOGPROBS     idx, logprobs
---   DELTA_EXTRA  idx, key, value
---   CHOICE_EXTRA idx, key, value
---   TOP_EXTRA    key, value
---   ERROR        error, raw data
---   DONE         (none)
---   BAD          raw data, message
---   RAW          decoded chunk
local core = require "oai.native"

local null = core.null
local json_encode = core.json_encode
local type, pairs, ipairs, select = type, pairs, ipairs, select
local sort = table.sort

local M = {}

-- The kinds and their arity are defined once, in C (src/chunk.h); the core
-- exports them as core.record_kinds (name -> number) and core.record_arity
-- (kind -> slots after the kind).
local kinds, arity = core.record_kinds, core.record_arity

--- Record kinds by name (CONTENT, REASONING, ..., RAW) -> kind number.
M.kinds = kinds
--- Kind number -> number of slots after the kind.
M.arity = arity

local K_CONTENT, K_REASONING, K_REFUSAL, K_TOOL, K_FINISH, K_ROLE, K_USAGE, K_META,
      K_LOGPROBS, K_DELTA_EXTRA, K_CHOICE_EXTRA, K_TOP_EXTRA, K_ERROR, K_BAD =
      kinds.CONTENT, kinds.REASONING, kinds.REFUSAL, kinds.TOOL, kinds.FINISH, kinds.ROLE,
      kinds.USAGE, kinds.META, kinds.LOGPROBS, kinds.DELTA_EXTRA, kinds.CHOICE_EXTRA,
      kinds.TOP_EXTRA, kinds.ERROR, kinds.BAD

local DELTA_KNOWN = { role = true, content = true, reasoning_content = true, reasoning = true,
                      refusal = true, tool_calls = true }
local CHOICE_KNOWN = { index = true, delta = true, finish_reason = true, logprobs = true }
local TOP_KNOWN = { id = true, object = true, created = true, model = true,
                    system_fingerprint = true, choices = true, usage = true, error = true }

--- A field's value as records carry it: nil for absent, null and "".
---@param v any
---@return any
function M.nonempty(v)
  if type(v) == "string" then return v ~= "" and v or nil end
  if v == nil or v == null then return nil end
  return v
end
local nonempty = M.nonempty

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do if type(k) == "string" then ks[#ks + 1] = k end end
  sort(ks)
  return ks
end

--- The generic path: a decoded chat.completion.chunk table -> records, the
--- same records the C decoder emits, written at out[n+1..]; returns the new n.
---@param c any the decoded chunk
---@param out table records
---@param n integer slots already used in out
---@return integer n
function M.records_from_chunk(c, out, n)
  local function put(...)
    local k = select("#", ...)
    for i = 1, k do out[n + i] = (select(i, ...)) end
    n = n + k
  end
  if type(c) ~= "table" then
    put(K_BAD, json_encode(c), "event data is not a JSON object")
    return n
  end
  if c.error ~= nil and c.error ~= null then
    put(K_ERROR, c.error, nil)
    return n
  end
  if c.id ~= nil or c.model ~= nil or c.created ~= nil or c.system_fingerprint ~= nil then
    put(K_META, c.id, c.created, c.model, c.system_fingerprint, c.object)
  end
  local choices = c.choices
  if type(choices) == "table" then
    for pos = 1, #choices do
      local ch = choices[pos]
      if type(ch) == "table" then
        local idx = ch.index
        if type(idx) ~= "number" then idx = pos - 1 end
        local d = ch.delta
        if type(d) == "table" then
          if nonempty(d.role) then put(K_ROLE, idx, d.role) end
          if type(d.reasoning_content) == "string" then put(K_REASONING, idx, d.reasoning_content, "reasoning_content") end
          if type(d.reasoning) == "string" then put(K_REASONING, idx, d.reasoning, "reasoning") end
          if type(d.content) == "string" then put(K_CONTENT, idx, d.content) end
          if type(d.refusal) == "string" then put(K_REFUSAL, idx, d.refusal) end
          local tcs = d.tool_calls
          if type(tcs) == "table" then
            for tp = 1, #tcs do
              local tc = tcs[tp]
              if type(tc) == "table" then
                local fn = type(tc["function"]) == "table" and tc["function"] or {}
                local args = fn.arguments
                if type(args) == "table" then args = json_encode(args) end
                if type(args) ~= "string" then args = nil end
                local ti = tc.index
                if type(ti) ~= "number" then ti = nil end
                put(K_TOOL, idx, tp, ti, nonempty(tc.id), nonempty(tc.type), nonempty(fn.name), args)
              end
            end
          end
          for _, k in ipairs(sorted_keys(d)) do
            if not DELTA_KNOWN[k] and d[k] ~= null then put(K_DELTA_EXTRA, idx, k, d[k]) end
          end
        end
        if ch.logprobs ~= nil and ch.logprobs ~= null then put(K_LOGPROBS, idx, ch.logprobs) end
        for _, k in ipairs(sorted_keys(ch)) do
          if not CHOICE_KNOWN[k] and ch[k] ~= null then put(K_CHOICE_EXTRA, idx, k, ch[k]) end
        end
        if nonempty(ch.finish_reason) then put(K_FINISH, idx, ch.finish_reason) end
      end
    end
  end
  if type(c.usage) == "table" then put(K_USAGE, c.usage) end
  for _, k in ipairs(sorted_keys(c)) do
    if not TOP_KNOWN[k] and c[k] ~= null then put(K_TOP_EXTRA, k, c[k]) end
  end
  return n
end

return M
