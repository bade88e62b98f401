--- oai.ngx.response: what a cosocket request received, read through the
--- methods of oai.request: the head (status, headers), the decision plain
--- body or event stream (as decide_body in src/request.c), the plain body, and the
--- event-stream records through the C SSE parser and chunk decoder (the
--- same as with libcurl: `oai.sse`'s `p:records`).  The request
--- (oai.ngx.request) hands each body piece to `deliver`.
local core = require "oai.native"
local http1 = require "oai.ngx.http1"

local new_sse = core.sse
local type, error = type, error
local concat = table.concat
local find, lower, sub, format = string.find, string.lower, string.sub, string.format
local monotime = core.monotime
local first_header_of = http1.header

local M = {}

---@class oai.ngx.Request
local Request = {}
--- methods: installed on oai.ngx.request's Request
M.methods = Request

--- check(req) -> req | raises "attempt to use a closed oai.request" at the caller's caller
---@param self oai.ngx.Request
---@return oai.ngx.Request
function M.check(self)
  if self.closed then error("attempt to use a closed oai.request", 3) end
  return self
end
local check = M.check

local function looks_like_sse(p)
  p = p:gsub("^[ \r\n\t]+", "")
  if sub(p, 1, 3) == "\239\187\191" then p = sub(p, 4) end
  return sub(p, 1, 4) == "data" or sub(p, 1, 5) == "event" or sub(p, 1, 2) == "id"
    or sub(p, 1, 5) == "retry" or sub(p, 1, 1) == ":"
end

-- the response's header lines (as far as they are in)
local NO_HEAD = { hdr = {}, nh = 0 }
local function head(self) return self.http or NO_HEAD end

local function first_header(self, lname)
  return first_header_of(head(self), lname)
end

-- at the first body bytes (as decide_body in src/request.c): an event stream only
-- for a stream request with a 2xx status, by content type, else by sniffing
local function decide(self, piece)
  self.body_mode = "plain"
  local st = self.status_code
  if not self.want_sse or st < 200 or st > 299 then return end
  local ct = first_header(self, "content-type")
  if ct then
    ct = lower(ct)
    if find(ct, "event-stream", 1, true) then self.body_mode = "sse" return end
    if find(ct, "json", 1, true) or find(ct, "html", 1, true) then return end
  end
  if looks_like_sse(piece) then self.body_mode = "sse" end
end

--- deliver(req, piece) -> nil | name, message: a body piece, kept as plain
--- body or event-stream bytes; a failure (refused encoding, too large) is
--- returned for the request to end with
---@param self oai.ngx.Request
---@param piece string
---@return string? name
---@return string? message
function M.deliver(self, piece)
  local n = #piece
  if n == 0 then return end
  if not self.body_mode then
    -- nothing is decoded (we ask for identity): as refuse_encoding in src/request.c
    local ce = first_header(self, "content-encoding")
    if ce and ce ~= "" and lower(ce) ~= "identity" then
      return "BAD_CONTENT_ENCODING", "the server sent a body with Content-Encoding: "
        .. sub(ce, 1, 63):gsub("[%c\128-\255]", "?") .. "; oai asks for identity (Accept-Encoding: identity) and decodes none"
    end
    decide(self, piece)
  end
  if self.body_mode == "plain" then
    if self.max_body > 0 and self.received + n > self.max_body then
      return "BODY_TOO_LARGE", format("response body exceeds max_body_bytes (%d)", self.max_body)
    end
    local np = self.np + 1
    self.parts[np] = piece
    self.np = np
    self.body_cache = nil
  else
    local k = self.sse_n + 1
    self.sse_raw[k] = piece
    self.sse_n = k
  end
  self.received = self.received + n
  self.t_first = self.t_first or (monotime() - self.t_start)
  self.news = true
end

--- req:status() -> status code or nil before the headers are in
---@return integer? status
function Request:status()
  check(self)
  if not self.headers_done then return nil end
  return self.status_code
end

--- req:headers() -> { [lowercase name] = value } (repeats joined with ", ")
---@return table<string,string>
function Request:headers()
  check(self)
  local t = {}
  local p = head(self)
  for i = 1, p.nh do
    local h = p.hdr[i]
    local old = t[h[1]]
    t[h[1]] = old and (old .. ", " .. h[2]) or h[2]
  end
  return t
end

--- req:raw_headers() -> the header lines of the final response ("Name: value\r\n" each)
---@return string
function Request:raw_headers()
  check(self)
  local out = {}
  local p = head(self)
  for i = 1, p.nh do
    local h = p.hdr[i]
    out[i] = h[3] .. ": " .. h[2] .. "\r\n"
  end
  return concat(out)
end

--- req:header(name) -> value or nil (first occurrence, any case)
---@param name string
---@return string?
function Request:header(name)
  check(self)
  if type(name) ~= "string" then error("bad argument #1 to 'header' (string expected, got " .. type(name) .. ")", 2) end
  return first_header(self, lower(name))
end

--- req:body() -> the plain body received so far (not consumed)
---@return string
function Request:body()
  check(self)
  if self.body_mode == "sse" then return concat(self.sse_raw, "", 1, self.sse_n) end
  local b = self.body_cache
  if not b then
    b = concat(self.parts, "", 1, self.np)
    self.body_cache = b
  end
  return b
end

--- req:is_sse() -> true/false once the first body byte is in, else nil
---@return boolean?
function Request:is_sse()
  check(self)
  if not self.body_mode then return nil end
  return self.body_mode == "sse"
end

local function parser(self)
  local p = self.parser
  if not p then
    p = new_sse(self.max_event and { max_event_bytes = self.max_event } or nil)
    self.parser = p
  end
  return p
end

-- the event-stream bytes received since the last call
local function take_raw(self)
  local n = self.sse_n
  if n == 0 then return "" end
  local raw = self.sse_raw
  local s = n == 1 and raw[1] or concat(raw, "", 1, n)
  for i = 1, n do raw[i] = nil end
  self.sse_n = 0
  return s
end

--- req:flush_records(out, flags) -> n (as oai.request: a waiting UTF-16 high
--- half at the end of a body without [DONE] becomes U+FFFD)
---@param out table
---@param flags? integer
---@return integer n
function Request:flush_records(out, flags)
  check(self)
  if self.body_mode ~= "sse" then return 0 end
  return parser(self):flush_records(out, flags or 0)
end

--- req:read_records(out, flags[, final]) -> n, stop (as oai.request: the
--- C SSE parser frames the bytes, the C chunk decoder fills out[1..n])
---@param out table
---@param flags? integer 1: whole decoded chunks (RAW records)
---@param final? boolean end an unterminated last event first
---@return integer n
---@return boolean stop
function Request:read_records(out, flags, final)
  check(self)
  if type(out) ~= "table" then error("bad argument #1 to 'read_records' (table expected, got " .. type(out) .. ")", 2) end
  if self.body_mode ~= "sse" then
    error("oai.request: read_records() on a response that is not an event stream", 2)
  end
  local bytes = take_raw(self)
  if bytes == "" and not final then return 0, false end
  return parser(self):records(bytes, out, flags or 0, final and true or false)
end

--- req:read() -> array of {type=, data=, id=} events | nil, err
---@return table[]? events
---@return string? err
function Request:read()
  check(self)
  if self.body_mode ~= "sse" then
    error("oai.request: read() on a response that is not an event stream", 2)
  end
  return parser(self):feed(take_raw(self))
end

--- req:pending() -> true if an event stream ended inside an event
---@return boolean
function Request:pending()
  check(self)
  if self.body_mode ~= "sse" then return false end
  return self.sse_n > 0 or (self.parser ~= nil and self.parser:pending())
end

return M
