--- oai.messages: message builders and content parts.
---
---   oai.system(text)  oai.user(content)  oai.assistant(content)
---   oai.tool(tool_call_id, content)
---   oai.text(s)  oai.image_url(url, {detail=})  oai.image_file(path, {detail=, max_bytes=})
---
--- `content` is a string or an array of parts.  Wrong argument types raise;
--- image_file's runtime failures (unreadable, unknown format, too large)
--- return nil, err.
local core = require "oai.native"
local errors = require "oai.errors"

local type, error, pairs, ipairs, tostring = type, error, pairs, ipairs, tostring
local io_open = io.open
local floor = math.floor
local file_kind = core.file_kind   -- nil where the core has no stat(2)
local null = core.null

local M = {}

M.MAX_IMAGE_BYTES = 20 * 1024 * 1024

---@alias oai.Content string|oai.ContentPart[]

---@class oai.ContentPart
---@field type "text"|"image_url"|string
---@field text? string
---@field image_url? {url: string, detail?: "low"|"high"|"auto"}

---@class oai.Message
---@field role "system"|"developer"|"user"|"assistant"|"tool"|string
---@field content? oai.Content|userdata
---@field tool_calls? table[]
---@field tool_call_id? string
---@field name? string
---@field reasoning_content? string

-- a new array holding the parts (the caller's table is neither kept nor marked)
local function copy_parts(parts, who)
  -- `{ oai.text "x", oai.image_file "missing.png" }` holds nil and the
  -- error: say so instead of sending a message without the image
  local n = 0
  for k, p in pairs(parts) do
    if errors.is(p) then error(who .. ": a content part is an error: " .. tostring(p), 4) end
    if type(k) ~= "number" then error(who .. ": content parts must be an array", 4) end
    if k > n then n = k end
  end
  local out = core.array()
  for i = 1, n do
    local p = parts[i]
    if type(p) ~= "table" and type(p) ~= "string" then
      error(who .. ": content part " .. i .. " must be a table or a string", 4)
    end
    if type(p) == "string" then p = { type = "text", text = p } end
    out[i] = p
  end
  return out
end

local function content_of(content, who, allow_nil)
  local t = type(content)
  if t == "string" then return content end
  if t == "table" then return copy_parts(content, who) end
  if content == nil and allow_nil then return null end
  if content == null and allow_nil then return null end
  error(who .. ": content must be a string or an array of content parts", 3)
end

local function with_fields(msg, fields, who)
  if fields == nil then return msg end
  if type(fields) ~= "table" then error(who .. ": fields must be a table", 3) end
  for k, v in pairs(fields) do
    if msg[k] == nil then msg[k] = v end
  end
  return msg
end

--- A system message.
---@param text string|oai.ContentPart[]
---@param fields? table extra message fields (e.g. name)
---@return oai.Message
function M.system(text, fields)
  return with_fields({ role = "system", content = content_of(text, "oai.system") }, fields, "oai.system")
end

--- A developer message (OpenAI's newer name for system instructions).
---@param text string|oai.ContentPart[]
---@param fields? table
---@return oai.Message
function M.developer(text, fields)
  return with_fields({ role = "developer", content = content_of(text, "oai.developer") }, fields, "oai.developer")
end

--- A user message; content is a string or an array of parts (strings in
--- the array become text parts).
---@param content oai.Content
---@param fields? table extra message fields (e.g. name)
---@return oai.Message
function M.user(content, fields)
  return with_fields({ role = "user", content = content_of(content, "oai.user") }, fields, "oai.user")
end

--- An assistant message; content may be nil (null) when fields.tool_calls is given.
---@param content? oai.Content
---@param fields? table extra message fields (tool_calls, name, reasoning_content, ...)
---@return oai.Message
function M.assistant(content, fields)
  return with_fields({ role = "assistant", content = content_of(content, "oai.assistant", true) },
    fields, "oai.assistant")
end

--- A tool result message answering the call with id tool_call_id.
---@param tool_call_id string
---@param content oai.Content
---@return oai.Message
function M.tool(tool_call_id, content)
  if type(tool_call_id) ~= "string" then error("oai.tool: tool_call_id must be a string", 2) end
  return { role = "tool", tool_call_id = tool_call_id, content = content_of(content, "oai.tool") }
end

--- A text content part.
---@param s string
---@return oai.ContentPart
function M.text(s)
  if type(s) ~= "string" then error("oai.text: expected a string", 2) end
  return { type = "text", text = s }
end

local DETAILS = { low = true, high = true, auto = true }

local function detail_of(opts, who)
  if opts == nil then return nil end
  if type(opts) ~= "table" then error(who .. ": options must be a table", 3) end
  local d = opts.detail
  if d ~= nil and not DETAILS[d] then
    error(who .. ': detail must be "low", "high" or "auto"', 3)
  end
  return d
end

--- An image part from a URL (https: or data:).
---@param url string
---@param opts? {detail?: "low"|"high"|"auto"}
---@return oai.ContentPart
function M.image_url(url, opts)
  if type(url) ~= "string" then error("oai.image_url: url must be a string", 2) end
  return { type = "image_url", image_url = { url = url, detail = detail_of(opts, "oai.image_url") } }
end

--- The MIME type of image bytes from their magic numbers, or nil.
---@param bytes string the first 12 bytes or more
---@return string? mime "image/png" | "image/jpeg" | "image/gif" | "image/webp"
function M.image_type(bytes)
  if bytes:sub(1, 8) == "\137PNG\r\n\26\n" then return "image/png" end
  if bytes:sub(1, 3) == "\255\216\255" then return "image/jpeg" end
  local gif = bytes:sub(1, 6)
  if gif == "GIF87a" or gif == "GIF89a" then return "image/gif" end
  if bytes:sub(1, 4) == "RIFF" and bytes:sub(9, 12) == "WEBP" then return "image/webp" end
  return nil
end

-- nil, message, err (errors.fail) for a file that cannot be used
local function file_error(path, code, message)
  return errors.fail(errors.new({ kind = "file", code = code, path = path, message = message }))
end

---@class oai.ImageFileOptions
---@field detail? "low"|"high"|"auto"
---@field max_bytes? integer largest file accepted (20 MiB)

--- An image part with the file's bytes as a data: URL.  The MIME type comes
--- from the magic bytes (PNG, JPEG, GIF, WebP), not from the file name.
---@param path string
---@param opts? oai.ImageFileOptions
---@return oai.ContentPart? part
---@return string? message of the failure
---@return oai.Error? err kind "file", code "unreadable" | "too_large" | "unsupported_type"
function M.image_file(path, opts)
  if type(path) ~= "string" then error("oai.image_file: path must be a string", 2) end
  local detail = detail_of(opts, "oai.image_file")
  local max = opts and opts.max_bytes or M.MAX_IMAGE_BYTES
  if type(max) ~= "number" then error("oai.image_file: max_bytes must be a number", 2) end
  -- only regular files: a FIFO would block io.open, a device never ends
  -- and a directory reports a bogus size (stat, where the core has it)
  local kind = file_kind and file_kind(path)
  if kind and kind ~= "file" then
    return file_error(path, "unreadable", "cannot read image " .. path
      .. ": not a regular file (" .. (kind == "other" and "special file" or kind) .. ")")
  end
  local f, oerr = io_open(path, "rb")
  if not f then
    return file_error(path, "unreadable", "cannot open image: " .. tostring(oerr))
  end
  local size = f:seek("end")
  if size and size > max then
    f:close()
    return file_error(path, "too_large", ("image %s is %d bytes, more than max_bytes (%d)")
      :format(path, size, max))
  end
  f:seek("set", 0)
  -- never more than max_bytes + 1 bytes, whatever seek said
  local want = max >= 0 and floor(max) + 1 or 1
  local bytes, rerr
  if want > 2 ^ 52 then bytes, rerr = f:read("*a") else bytes, rerr = f:read(want) end
  f:close()
  if bytes == nil and rerr == nil then bytes = "" end   -- an empty file
  if not bytes then
    return file_error(path, "unreadable", "cannot read image " .. path .. ": " .. tostring(rerr))
  end
  if #bytes > max then
    return file_error(path, "too_large", ("image %s is more than max_bytes (%d)")
      :format(path, max))
  end
  local mime = M.image_type(bytes)
  if not mime then
    return file_error(path, "unsupported_type",
      "image " .. path .. " is not PNG, JPEG, GIF or WebP (by its first bytes)")
  end
  return { type = "image_url", image_url = {
    url = "data:" .. mime .. ";base64," .. core.base64(bytes), detail = detail } }
end

---------------------------------------------------------------- internal helpers

local REASONING = { "reasoning_content", "reasoning" }
M.REASONING_FIELDS = REASONING

local function copy_calls(calls)
  local out = core.array()
  for i, c in ipairs(calls) do
    local fn = type(c["function"]) == "table" and c["function"] or {}
    local args = fn.arguments
    if type(args) == "table" then args = core.json_encode(args) end
    if type(args) ~= "string" then args = "" end
    out[i] = { id = c.id, type = c.type or "function",
               ["function"] = { name = fn.name, arguments = args } }
  end
  return out
end

--- The history form of a reply's message (a completion's choices[i].message):
--- role, content (null when absent), tool_calls (arguments as JSON text),
--- refusal (when a string), reasoning fields, name.
---@param msg table
---@return oai.Message
function M.from_reply(msg)
  local m = { role = "assistant", content = msg.content }
  if m.content == nil then m.content = null end
  if type(msg.tool_calls) == "table" and #msg.tool_calls > 0 then m.tool_calls = copy_calls(msg.tool_calls) end
  if type(msg.refusal) == "string" then m.refusal = msg.refusal end
  for _, k in ipairs(REASONING) do
    if type(msg[k]) == "string" then m[k] = msg[k] end
  end
  if type(msg.name) == "string" then m.name = msg.name end
  return m
end

--- msg without its reasoning fields (a copy, or msg itself when it has none).
---@param msg table
---@return table
function M.without_reasoning(msg)
  if msg.reasoning_content == nil and msg.reasoning == nil then return msg end
  local m = {}
  for k, v in pairs(msg) do m[k] = v end
  m.reasoning_content, m.reasoning = nil, nil
  return m
end

return M
