--- oai.window: which messages of a history a request carries.
---
--- The leading system message(s), then the newest messages within
--- max_messages / max_chars; a tool-calling assistant message and its tool
--- messages are sent together or not at all (a server rejects a half).
local core = require "oai.native"
local messages = require "oai.messages"

local type, ipairs = type, ipairs

local M = {}

-- characters of a string (UTF-8 aware)
local function ulen(s)
  if type(s) ~= "string" then return 0 end
  local _, n = s:gsub("[^\128-\191]", "")
  return n
end

local function chars_of(m, keep_reasoning)
  local n = 0
  local c = m.content
  if type(c) == "string" then
    n = ulen(c)
  elseif type(c) == "table" then
    for _, part in ipairs(c) do
      if type(part) == "table" then n = n + ulen(part.text) end
    end
  end
  if type(m.tool_calls) == "table" then
    for _, call in ipairs(m.tool_calls) do
      local fn = type(call) == "table" and call["function"]
      if type(fn) == "table" then n = n + ulen(fn.name) + ulen(fn.arguments) end
    end
  end
  if keep_reasoning and m.role == "assistant" then
    n = n + ulen(m.reasoning_content) + ulen(m.reasoning)
  end
  return n
end

local function has_calls(m)
  return m.role == "assistant" and type(m.tool_calls) == "table" and m.tool_calls[1] ~= nil
end

local function is_head(m)
  return m.role == "system" or m.role == "developer"
end

-- units of the history after the head: an assistant message with tool_calls
-- and the tool messages answering it, or one other message.  Tool messages
-- without their assistant message, and tool-call turns not fully answered,
-- are left out (a server would reject them).
local function units_of(msgs, i)
  local units, n = {}, #msgs
  while i <= n do
    local m = msgs[i]
    if has_calls(m) then
      local want, count = {}, 0
      for _, c in ipairs(m.tool_calls) do
        if type(c) == "table" and c.id ~= nil and not want[c.id] then
          want[c.id] = true
          count = count + 1
        end
      end
      local unit, j = { m }, i + 1
      while j <= n and msgs[j].role == "tool" and want[msgs[j].tool_call_id] do
        want[msgs[j].tool_call_id] = nil
        unit[#unit + 1] = msgs[j]
        j = j + 1
      end
      if #unit - 1 == count then units[#units + 1] = unit end
      i = j
    elseif m.role == "tool" then
      i = i + 1
    else
      units[#units + 1] = { m }
      i = i + 1
    end
  end
  return units
end

--- The messages a request carries: the leading system message(s), then
--- the newest messages within max_messages and max_chars (the newest
--- message or tool-call turn always).  Assistant messages lose their
--- reasoning fields unless keep_reasoning.
---@param msgs oai.Message[] the whole history
---@param max_m? integer
---@param max_c? integer
---@param keep? boolean keep_reasoning
---@return oai.Message[]
function M.of(msgs, max_m, max_c, keep)
  local out = core.array()
  local i, used = 1, 0
  while msgs[i] and is_head(msgs[i]) do
    out[#out + 1] = msgs[i]
    used = used + chars_of(msgs[i], keep)
    i = i + 1
  end
  local units = units_of(msgs, i)
  local count, first = 0, #units + 1
  for u = #units, 1, -1 do
    local unit = units[u]
    local uc = 0
    for _, m in ipairs(unit) do uc = uc + chars_of(m, keep) end
    if u < #units then
      if max_m and count + #unit > max_m then break end
      if max_c and used + uc > max_c then break end
    end
    count, used, first = count + #unit, used + uc, u
  end
  for u = first, #units do
    for _, m in ipairs(units[u]) do
      if m.role == "assistant" and not keep then m = messages.without_reasoning(m) end
      out[#out + 1] = m
    end
  end
  return out
end

return M
