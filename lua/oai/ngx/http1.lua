--- oai.ngx.http1: HTTP/1.1 without a socket, for the cosocket transport:
--- a pure response parser (and the split of the URL a request goes to).  It
--- is fed the bytes a connection gave and hands back what they mean, one
--- event at a time; the request (oai.ngx.request) owns the socket and calls
--- it.  Plain Lua 5.1-5.4 and LuaJIT, so spec/ngx_http1_spec.lua runs it
--- everywhere, fed whole, byte by byte and at every split.
---
---   local p = http1.new { no_body = method == "HEAD" }
---   p:feed(bytes)            -- as they arrive; p:feed(nil) when the peer closed
---   local ev, a, b = p:next()
---     "head"                 the final response head is in: p.status, p.minor,
---                            p.hdr[1..p.nh] = { lowercase name, value, name }
---     "body", piece          body bytes (chunked framing removed)
---     "done"                 the response is complete (p.keepalive: reusable)
---     "error", name, msg     libcurl's name of the failure, and a message
---     nil                    more bytes needed (or the parser has finished)
---
--- Interim 1xx responses (100 Continue, 103 Early Hints) are skipped; 101
--- is final.  Framing: none (HEAD, 204, 304), chunked (the last transfer
--- coding), Content-Length (repeats must agree), else close-delimited.
local byte, sub, find, lower = string.byte, string.sub, string.find, string.lower
local tonumber, setmetatable, concat = tonumber, setmetatable, table.concat

local M = {}

M.MAX_HEAD = 1024 * 1024     -- a head (and any one line) at most this long
M.MAX_PIECE = 1024 * 1024    -- a close-delimited body is handed out in pieces this big at most

--- parse_url(url) -> { tls, host, port, path, host_header, connect_host, pool }
--- | nil, name, message (libcurl's name of the failure: URL_MALFORMAT, ...)
---@param url string
---@return table? parts
---@return string? name
---@return string? message
function M.parse_url(url)
  if find(url, "[%z\1-\32\127]") then
    return nil, "URL_MALFORMAT", "URL rejected: Malformed input to a URL function"
  end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then
    return nil, "URL_MALFORMAT", "URL using bad/illegal format or missing URL"
  end
  scheme = lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then
    return nil, "UNSUPPORTED_PROTOCOL", "Protocol \"" .. scheme .. "\" not supported"
  end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  path = path:gsub("#.*$", "")
  if path == "" then path = "/" elseif byte(path, 1) == 63 then path = "/" .. path end  -- "?"
  if find(authority, "@", 1, true) then
    return nil, "URL_MALFORMAT", "credentials in the URL are not supported by oai.ngx"
  end
  local host, port
  if byte(authority, 1) == 91 then   -- "[v6]:port"
    host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  else
    host, port = authority:match("^([^:]+):?(%d*)$")
  end
  if not host or host == "" then
    return nil, "URL_MALFORMAT", "URL rejected: No host part in the URL"
  end
  local tls = scheme == "https"
  local default_port = tls and 443 or 80
  port = port ~= "" and tonumber(port) or default_port
  if port < 1 or port > 65535 then
    return nil, "URL_MALFORMAT", "URL rejected: Port number was not a decimal number between 0 and 65535"
  end
  host = lower(host)
  local v6 = find(host, ":", 1, true) ~= nil
  local name = v6 and ("[" .. host .. "]") or host
  return {
    tls = tls, host = host, port = port, path = path,
    host_header = port == default_port and name or (name .. ":" .. port),
    -- no resolver is needed for localhost (RFC 6761); v6 literals go in brackets
    connect_host = host == "localhost" and "127.0.0.1" or name,
    pool = scheme .. "://" .. name .. ":" .. port,
  }
end

---@class oai.ngx.http1.Parser
---@field status integer? the final status code, once "head" was returned
---@field minor integer? 0 or 1, from HTTP/1.x
---@field hdr table[] { lowercase name, value, name as sent } per header line
---@field nh integer
---@field keepalive boolean? the connection may serve another request
---@field framing string? "none", "chunked", "length" or "close"
---@field remaining integer? bytes of the body (length) or of the chunk still to come
local Parser = {}
Parser.__index = Parser

--- The first value of a header (lname in lower case) among p.hdr[1..p.nh].
---@param p oai.ngx.http1.Parser
---@param lname string
---@return string?
function M.header(p, lname)
  local hdr = p.hdr
  for i = 1, p.nh do
    local h = hdr[i]
    if h[1] == lname then return h[2] end
  end
  return nil
end
local first_header = M.header

--- new{no_body=, max_head=} -> a parser for one response.  no_body: the
--- request was HEAD (no body follows whatever the head says).
---@param opts? table
---@return oai.ngx.http1.Parser
function M.new(opts)
  opts = opts or {}
  return setmetatable({
    no_body = opts.no_body and true or false,
    max_head = opts.max_head or M.MAX_HEAD,
    max_piece = opts.max_piece or M.MAX_PIECE,
    state = "status", buf = "", pos = 1, fed = 0, eof = false,
    hdr = {}, nh = 0, head_bytes = 0,
  }, Parser)
end

--- Add bytes received; nil when the connection ended (closed by the peer).
---@param data string?
function Parser:feed(data)
  if data == nil then self.eof = true return end
  if data == "" then return end
  self.fed = self.fed + #data
  local pos = self.pos
  if pos > #self.buf then
    self.buf = data
  else
    self.buf = sub(self.buf, pos) .. data
  end
  self.pos = 1
end

--- Bytes fed but not parsed (after "done": sent beyond the response).
---@return integer
function Parser:buffered()
  return #self.buf - self.pos + 1
end

-- terminal events: the parser says nothing more afterwards
local function stop(self, ev, name, msg)
  self.state = ev
  return ev, name, msg
end

local function fail(self, name, msg) return stop(self, "error", name, msg) end

-- a line (without CR LF) from the buffer; nil when incomplete; false
-- (after setting the error) when too long
local function take_line(self)
  local buf, pos = self.buf, self.pos
  local i = find(buf, "\n", pos, true)
  if not i then
    if #buf - pos + 1 > self.max_head then return false end
    return nil
  end
  self.pos = i + 1
  if i > pos and byte(buf, i - 1) == 13 then return sub(buf, pos, i - 2) end
  return sub(buf, pos, i - 1)
end

-- up to n bytes from the buffer, nil when it is empty
local function take_bytes(self, n)
  local buf, pos = self.buf, self.pos
  local avail = #buf - pos + 1
  if avail <= 0 then return nil end
  if n > avail then n = avail end
  self.pos = pos + n
  if pos == 1 and n == #buf then return buf end
  return sub(buf, pos, pos + n - 1)
end

-- the head is complete: keep-alive and the framing of the body
local function end_of_head(self)
  local st = self.status
  local conn = lower(first_header(self, "connection") or "")
  if self.minor >= 1 then
    self.keepalive = not find(conn, "close", 1, true)
  else
    self.keepalive = find(conn, "keep-alive", 1, true) ~= nil
  end
  self.state = "body"
  if self.no_body or st == 204 or st == 304 then
    self.framing = "none"
    return
  end
  local te = first_header(self, "transfer-encoding")
  if te then
    -- several lines are joined; the last coding decides
    local all = {}
    for i = 1, self.nh do if self.hdr[i][1] == "transfer-encoding" then all[#all + 1] = self.hdr[i][2] end end
    te = lower(concat(all, ","))
    if te:match("chunked%s*$") then
      self.framing, self.chunk = "chunked", "size"
    else
      self.framing, self.keepalive = "close", false
    end
    return
  end
  local cl = first_header(self, "content-length")
  if cl then
    local n = cl:match("^%s*(%d+)%s*$")
    if not n then self.bad = "invalid Content-Length in the response" return end
    for i = 1, self.nh do
      local h = self.hdr[i]
      if h[1] == "content-length" and h[2]:match("^%s*(%d+)%s*$") ~= n then
        self.bad = "conflicting Content-Length values in the response"
        return
      end
    end
    self.framing, self.remaining = "length", tonumber(n)
    return
  end
  self.framing, self.keepalive = "close", false
end

-- the connection ended where the parser stands
local function at_eof(self)
  if self.state == "body" and self.framing == "close" then
    self.keepalive = false
    return stop(self, "done")
  end
  if self.fed == 0 then return fail(self, "GOT_NOTHING", "Empty reply from server") end
  if self.state ~= "body" then
    return fail(self, "RECV_ERROR", "connection closed inside the response headers")
  end
  if self.framing == "length" then
    return fail(self, "PARTIAL_FILE", ("transfer closed with %d bytes remaining to read"):format(self.remaining))
  end
  return fail(self, "PARTIAL_FILE", "transfer closed with outstanding read data remaining")
end

local function too_long(self)
  return fail(self, "WEIRD_SERVER_REPLY", "response line too long")
end

--- The next event from what was fed (see the module's comment).
---@return string? event "head", "body", "done", "error" or nil
---@return string? a the body piece, or the failure's name
---@return string? b the failure's message
function Parser:next()
  while true do
    local state = self.state
    if state == "status" or state == "skip" then
      local line = take_line(self)
      if line == false then return too_long(self) end
      if not line then break end
      if state == "skip" then
        if line == "" then self.state = "status" end
      else
        local minor, st = line:match("^HTTP/1%.(%d) (%d%d%d)")
        if not minor then
          if line == "" and self.head_bytes == 0 then
            -- a stray empty line before the status line: tolerated
          else
            return fail(self, "WEIRD_SERVER_REPLY", "unsupported response (not HTTP/1.x): "
              .. sub(line, 1, 40):gsub("[%c\128-\255]", "?"))
          end
        else
          st = tonumber(st)
          self.head_bytes = self.head_bytes + #line
          if st >= 100 and st < 200 and st ~= 101 then
            self.state = "skip"            -- 100 Continue, 103 Early Hints
          else
            self.minor, self.status = tonumber(minor), st
            self.state = "headers"
          end
        end
      end
    elseif state == "headers" then
      local line = take_line(self)
      if line == false then return too_long(self) end
      if not line then break end
      self.head_bytes = self.head_bytes + #line + 2
      if self.head_bytes > self.max_head then
        return fail(self, "WEIRD_SERVER_REPLY", "response headers larger than " .. self.max_head .. " bytes")
      end
      if line == "" then
        end_of_head(self)
        return "head"
      end
      local c = byte(line, 1)
      if (c == 32 or c == 9) and self.nh > 0 then   -- obsolete line folding
        local h = self.hdr[self.nh]
        h[2] = h[2] .. " " .. line:match("^%s*(.-)%s*$")
      else
        local name, value = line:match("^([^:%s]+):%s*(.-)%s*$")
        if not name then
          return fail(self, "WEIRD_SERVER_REPLY", "malformed header line in the response")
        end
        local nh = self.nh + 1
        self.hdr[nh] = { lower(name), value, name }
        self.nh = nh
      end
    elseif state == "body" then
      local framing = self.framing
      if self.bad then
        return fail(self, "WEIRD_SERVER_REPLY", self.bad)
      elseif framing == "length" then
        if self.remaining == 0 then return stop(self, "done") end
        local piece = take_bytes(self, self.remaining)
        if not piece then break end
        self.remaining = self.remaining - #piece
        return "body", piece
      elseif framing == "chunked" then
        local cs = self.chunk
        if cs == "data" then
          local piece = take_bytes(self, self.remaining)
          if not piece then break end
          self.remaining = self.remaining - #piece
          if self.remaining == 0 then self.chunk = "crlf" end
          return "body", piece
        end
        local line = take_line(self)
        if line == false then return too_long(self) end
        if not line then break end
        if cs == "size" then
          local hex = line:match("^%s*(%x+)%s*[;]?")
          if not hex or #hex > 12 then
            return fail(self, "RECV_ERROR", "Illegal or missing hexadecimal sequence in chunked-encoding")
          end
          local size = tonumber(hex, 16)
          if size == 0 then self.chunk = "trailer"
          else self.remaining, self.chunk = size, "data" end
        elseif cs == "crlf" then
          if line ~= "" then return fail(self, "RECV_ERROR", "chunk not terminated by CRLF in chunked-encoding") end
          self.chunk = "size"
        else -- trailer
          if line == "" then return stop(self, "done") end
        end
      elseif framing == "none" then
        return stop(self, "done")
      else -- close-delimited
        local piece = take_bytes(self, self.max_piece)
        if not piece then break end
        return "body", piece
      end
    else
      return nil   -- "done" or "error": finished
    end
  end
  if self.eof then return at_eof(self) end
  return nil
end

return M
