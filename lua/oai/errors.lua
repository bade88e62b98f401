--- oai.errors: the one error shape for runtime failures, and the only place
--- error tables are built.
---
--- Runtime failures return `nil, message, err`; `err` is a table with `kind`
--- and `message`, plus what is known: `status`, `type`, `code`, `param`,
--- `request_id`, `retry_after`, `body`, `name` (libcurl), `attempts`,
--- `partial` (streams).  `tostring(err)` is one readable line.  The API
--- error envelope ({"error": {...}}) is read here only (M.api_fields).
local core = require "oai.native"

local type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable =
  type, pairs, ipairs, tostring, tonumber, setmetatable, getmetatable
local json_decode = core.json_decode

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

--- The error for a transport failure (name: libcurl's, or BODY_TOO_LARGE,
--- CANCELED, ... from the transports).
---@param name string
---@param message string
---@param key? string masked
---@return oai.Error
function M.from_transport(name, message, key)
  return M.new({ kind = M.transport_kind(name), name = name, message = message }, key)
end

local function truncate(s, n)
  if #s > n then return s:sub(1, n) end
  return s
end
M.truncate = truncate

-- seconds the server asked us to wait, from retry-after-ms / retry-after
-- (headers: lower-cased names)
---@param headers? table<string,string>
---@return number?
function M.retry_after(headers)
  if not headers then return nil end
  local ms = tonumber(headers["retry-after-ms"] or "")
  if ms then return ms / 1000 end
  local ra = headers["retry-after"]
  if ra then
    local secs = tonumber(ra)
    if secs then return secs end
    local t = core.getdate(ra)
    if t then return t - os.time() end
  end
  return nil
end

--- Fill `fields` from an API error envelope's inner object (the value of
--- "error" in a response body or in a stream event): kind "api", message,
--- type, code, param, and `error` = the object.  A string is the message.
---@param env any
---@param fields table
---@param default_message string when env carries no message
---@return table fields
function M.api_fields(env, fields, default_message)
  if type(env) ~= "table" then env = { message = tostring(env) } end
  fields.kind = "api"
  local msg = env.message
  fields.message = type(msg) == "string" and msg or default_message
  for _, k in ipairs({ "type", "code", "param" }) do
    local v = env[k]
    if type(v) == "string" or type(v) == "number" then fields[k] = v end
  end
  fields.error = env
  return fields
end

--- The error for a non-2xx response whose body is complete: "api" from the
--- error envelope (or a bare {"message": ...}), else "http" with the body.
---@param status integer
---@param headers? table<string,string> lower-cased names
---@param body string
---@param key? string masked
---@return oai.Error
function M.from_status(status, headers, body, key)
  local fields = {
    status = status,
    request_id = headers and headers["x-request-id"],
    retry_after = M.retry_after(headers),
  }
  local doc = json_decode(body)
  local env = type(doc) == "table" and doc.error
  if type(env) == "table" or type(env) == "string" then
    M.api_fields(env, fields, "HTTP " .. status)
  elseif type(doc) == "table" and type(doc.message) == "string" then
    -- some gateways send {"message": ...} without the envelope
    fields.kind = "api"
    fields.message = doc.message
    if type(doc.type) == "string" then fields.type = doc.type end
    if type(doc.code) == "string" or type(doc.code) == "number" then fields.code = doc.code end
  else
    fields.kind = "http"
    local ct = headers and headers["content-type"] or "no content type"
    fields.message = "HTTP " .. status .. " (" .. ct .. ", " .. #body .. " bytes)"
    fields.body = truncate(body, 2048)
  end
  return M.new(fields, key)
end

--- The error for a 2xx body that is not a JSON object.
---@param status? integer
---@param request_id? string
---@param body string
---@param doc any what json_decode gave (nil: not JSON)
---@param derr? string json_decode's message
---@param key? string masked
---@return oai.Error
function M.from_body(status, request_id, body, doc, derr, key)
  return M.new({
    kind = "protocol", status = status, request_id = request_id,
    message = doc == nil and ("response is not valid JSON: " .. tostring(derr))
      or "response is not a JSON object",
    body = truncate(body, 2048),
  }, key)
end

--- A "protocol" error: the server's answer has not the expected shape.
---@param message string
---@param fields? table more fields
---@return oai.Error
function M.protocol(message, fields)
  fields = fields or {}
  fields.kind, fields.message = "protocol", message
  return M.new(fields)
end

---@param v any
---@return boolean
function M.is(v)
  return getmetatable(v) == Error
end

return M
