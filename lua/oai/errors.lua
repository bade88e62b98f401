--- oai.errors: the one error shape for runtime failures.
---
--- Runtime failures return `nil, err`; `err` is a table with `kind` and
--- `message`, plus what is known: `status`, `type`, `code`, `param`,
--- `request_id`, `retry_after`, `body`, `name` (libcurl), `attempts`,
--- `partial` (streams).  `tostring(err)` is one readable line.
local M = {}

---@class oai.Error
---@field kind "api"|"http"|"network"|"timeout"|"canceled"|"protocol"|string
---@field message string
---@field status? integer HTTP status
---@field type? string error type from the error envelope
---@field code? string|integer error code from the error envelope
---@field param? string
---@field request_id? string
---@field retry_after? number seconds the server asked to wait
---@field body? string first 2 KiB of a non-JSON error body
---@field name? string stable libcurl failure name (COULDNT_CONNECT, OPERATION_TIMEDOUT, SSL_CACERT, ...)
---@field attempts? integer
---@field partial? table what a stream accumulated before it failed
local Error = {}
Error.__index = Error
M.Error = Error

local function plural(n, word)
  return n .. " " .. word .. (n == 1 and "" or "s")
end

function Error:__tostring()
  local parts = { "oai:" }
  if self.status then parts[#parts + 1] = tostring(self.status) end
  if self.kind == "api" then
    local label = self.code
    if type(label) ~= "string" and type(label) ~= "number" or label == "" then label = self.type end
    if type(label) ~= "string" and type(label) ~= "number" or label == "" then label = "api" end
    parts[#parts + 1] = tostring(label)
  else
    parts[#parts + 1] = tostring(self.kind)
    if self.name then parts[#parts + 1] = tostring(self.name) end
  end
  local extra = {}
  if self.request_id then extra[#extra + 1] = "request " .. tostring(self.request_id) end
  if self.attempts and self.attempts > 1 then extra[#extra + 1] = plural(self.attempts, "attempt") end
  local msg = tostring(self.message or ""):gsub("[\r\n]+", " ")
  local s = table.concat(parts, " ") .. ": " .. msg
  if #extra > 0 then s = s .. " (" .. table.concat(extra, ", ") .. ")" end
  return s
end

--- Replace every occurrence of `secret` in s (plain text, no patterns).
local function mask(s, secret)
  if type(s) ~= "string" or not secret or #secret < 4 then return s end
  local out, i = {}, 1
  while true do
    local a, b = s:find(secret, i, true)
    if not a then break end
    out[#out + 1] = s:sub(i, a - 1)
    out[#out + 1] = "[REDACTED]"
    i = b + 1
  end
  if i == 1 then return s end
  out[#out + 1] = s:sub(i)
  return table.concat(out)
end
M.mask = mask

-- "scheme://user:password@" -> "scheme://***@": credentials in URLs
local function mask_url_credentials(s)
  if not s:find("@", 1, true) then return s end
  return (s:gsub("(%a[%w+.-]*://)[^/?#@%s]+@", "%1***@"))
end
M.mask_url_credentials = mask_url_credentials

local function mask_string(s, secret)
  return mask_url_credentials(mask(s, secret))
end

-- mask every string reachable from t (values and keys, nested tables), in
-- place; `seen` stops cycles and shared tables
local function mask_table(t, secret, seen)
  if seen[t] then return end
  seen[t] = true
  local moved
  for k, v in pairs(t) do
    if type(v) == "string" then
      local m = mask_string(v, secret)
      if m ~= v then t[k] = m end   -- assigning an existing field is safe inside pairs
    elseif type(v) == "table" then
      mask_table(v, secret, seen)
    end
    if type(k) == "string" then
      local mk = mask_string(k, secret)
      if mk ~= k then moved = moved or {}; moved[k] = mk end
    elseif type(k) == "table" then
      mask_table(k, secret, seen)
    end
  end
  if moved then
    for k, mk in pairs(moved) do
      t[mk] = t[k]
      t[k] = nil
    end
  end
end

--- new(fields, secret) -> err: masks `secret`, and credentials in URLs
--- (`https://user:pass@host` -> `https://***@host`), in every string of
--- `fields`, recursively (`error`, `partial`, ...), in place.
---@param fields table
---@param secret? string masked in every string
---@return oai.Error
function M.new(fields, secret)
  mask_table(fields, secret, {})
  return setmetatable(fields, Error)
end

--- fail(err) -> nil, message, err: how every public function reports a
--- runtime failure.  The message (tostring(err)) comes second so that
--- `assert(client:chat(...))` raises a readable string on every runtime
--- (Lua 5.1's assert takes only a string); the table with kind, status,
--- partial, ... comes third.
---@param err oai.Error
---@return nil
---@return string message
---@return oai.Error err
function M.fail(err)
  return nil, tostring(err), err
end

-- transport failure name -> kind; every other name is "network".  The one
-- mapping for both transports, chat and streams (plain and event-stream
-- bodies alike).
local TRANSPORT_KIND = {
  OPERATION_TIMEDOUT = "timeout",
  CANCELED = "canceled",
  BODY_TOO_LARGE = "protocol",
  BAD_CONTENT_ENCODING = "protocol",
}

--- The error kind of a transport failure name (libcurl's, or BODY_TOO_LARGE,
--- CANCELED, ... from the transports).
---@param name? string
---@return string kind
function M.transport_kind(name)
  return TRANSPORT_KIND[name] or "network"
end

---@param v any
---@return boolean
function M.is(v)
  return getmetatable(v) == Error
end

return M
