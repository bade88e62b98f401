--- oai.ngx: the OpenResty transport.  HTTP/1.1 over nginx cosockets
--- (ngx.socket.tcp), so nginx's own event loop does every wait: a request
--- in progress costs its light thread nothing but a pending socket read, and
--- the worker keeps serving everything else.  libcurl is never called here.
---
--- `require "oai"` selects it by itself inside nginx (see oai.transport);
--- the bytes of an event stream go through the same C SSE parser and C chunk
--- decoder as with libcurl (`oai.sse`'s `p:records`).
---
---   content_by_lua_block {
---     local client = require("oai").new { base_url = "https://api.openai.com/v1" }
---     local s = assert(client:stream { model = "m", messages = { ... } })
---     for text in s:text() do ngx.print(text); ngx.flush(true) end
---   }
---
--- What nginx.conf must provide (docs/openresty.md): `resolver` for host
--- names (without one only IP addresses and `localhost` work),
--- `lua_ssl_trusted_certificate` (+ `lua_ssl_verify_depth`) to verify TLS
--- peers: a `ca_file` cannot be chosen per request with cosockets, so the
--- option raises here; `proxy` is not supported either.
local core = require "oai.native"

local monotime = core.monotime
local new_sse = core.sse
local type, tostring, tonumber, setmetatable, error, pairs, select, pcall, xpcall =
  type, tostring, tonumber, setmetatable, error, pairs, select, pcall, xpcall
local floor, min, max = math.floor, math.min, math.max
local concat = table.concat
local byte, sub, find, lower, format = string.byte, string.sub, string.find, string.lower, string.format
local unpack = table.unpack or unpack
local traceback = debug.traceback
local co_running, co_status = coroutine.running, coroutine.status

-- the nginx request running now (nil outside nginx): a cosocket may only be
-- touched from the request that opened it
local get_request
do
  local ok, base = pcall(require, "resty.core.base")
  get_request = ok and type(base) == "table" and base.get_request or function() return nil end
end

local M = {}

-- tunables (module-wide): the connection pool of each upstream
M.keepalive_timeout = nil   -- ms an idle pooled connection is kept (nil: lua_socket_keepalive_timeout)
M.pool_size = nil           -- pooled connections per upstream (nil: lua_socket_pool_size)

local BIG_MS = 2147483647   -- cosockets read 0 as "the nginx default": "no limit" is this
local RECV_SIZE = 65536     -- receiveany returns at most what one read gave anyway
local MAX_HEAD = 1024 * 1024
local MAX_STALE_RETRIES = 2  -- a pooled connection the server closed meanwhile

---------------------------------------------------------------- phases

-- phases where cosockets (and so requests) work
local COSOCKET_PHASES = {
  rewrite = true, server_rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

local HINTS = {
  init = "; in init_by_lua there is no event loop yet: start the work from a request or a timer",
  init_worker = "; from init_worker_by_lua, run it in ngx.timer.at(0, fn)",
  log = "; to call after the response, use ngx.timer.at(0, fn) from the log phase",
}

--- Raises unless cosockets work in the current phase; returns the phase.
---@return string phase
function M.check_phase()
  if type(ngx) ~= "table" or type(ngx.get_phase) ~= "function" then
    error("oai.ngx: not running inside nginx (no ngx.get_phase)", 0)
  end
  local phase = ngx.get_phase()
  if not COSOCKET_PHASES[phase] then
    error("oai: cannot make requests in nginx's " .. tostring(phase) .. " phase (cosockets are"
      .. " unavailable); use a content, access, rewrite or timer phase" .. (HINTS[phase] or ""), 0)
  end
  return phase
end

---------------------------------------------------------------- URLs and the request head

local function url_error(self, name, msg)
  self.early_name, self.early_msg = name, msg
  return self
end

-- url -> fields of self (scheme, host, port, path, ...); failures are kept
-- for start() to report, as libcurl reports them from the transfer
local function parse_url(self, url)
  if find(url, "[%z\1-\32\127]") then
    return url_error(self, "URL_MALFORMAT", "URL rejected: Malformed input to a URL function")
  end
  local scheme, rest = url:match("^(%a[%w+.-]*)://(.*)$")
  if not scheme then
    return url_error(self, "URL_MALFORMAT", "URL using bad/illegal format or missing URL")
  end
  scheme = lower(scheme)
  if scheme ~= "http" and scheme ~= "https" then
    return url_error(self, "UNSUPPORTED_PROTOCOL", "Protocol \"" .. scheme .. "\" not supported")
  end
  local authority, path = rest:match("^([^/?#]*)(.*)$")
  path = path:gsub("#.*$", "")
  if path == "" then path = "/" elseif byte(path, 1) == 63 then path = "/" .. path end  -- "?"
  if find(authority, "@", 1, true) then
    return url_error(self, "URL_MALFORMAT", "credentials in the URL are not supported by oai.ngx")
  end
  local host, port
  if byte(authority, 1) == 91 then   -- "[v6]:port"
    host, port = authority:match("^%[([%x:.]+)%]:?(%d*)$")
  else
    host, port = authority:match("^([^:]+):?(%d*)$")
  end
  if not host or host == "" then
    return url_error(self, "URL_MALFORMAT", "URL rejected: No host part in the URL")
  end
  local tls = scheme == "https"
  local default_port = tls and 443 or 80
  port = port ~= "" and tonumber(port) or default_port
  if port < 1 or port > 65535 then
    return url_error(self, "URL_MALFORMAT", "URL rejected: Port number was not a decimal number between 0 and 65535")
  end
  host = lower(host)
  local v6 = find(host, ":", 1, true) ~= nil
  local name = v6 and ("[" .. host .. "]") or host
  self.tls, self.host, self.port, self.path = tls, host, port, path
  self.host_header = port == default_port and name or (name .. ":" .. port)
  -- no resolver is needed for localhost (RFC 6761); v6 literals go in brackets
  self.connect_host = host == "localhost" and "127.0.0.1" or name
  self.pool = scheme .. "://" .. name .. ":" .. port
  return self
end

local function opt_ms(spec, k)
  local v = spec[k]
  if v == nil then return 0 end
  if type(v) ~= "number" or not (v >= 0 and v <= 1e12) then   -- NaN fails both
    error("oai.request: option '" .. k .. "' must be a non-negative number up to 1000000000000 (got "
      .. (type(v) ~= "number" and type(v) or v ~= v and "nan" or format("%.14g", v)) .. ")", 3)
  end
  return v
end

local function opt_str(spec, k)
  local v = spec[k]
  if v ~= nil and type(v) ~= "string" then error("oai.request: option '" .. k .. "' must be a string", 3) end
  return v
end

-- header names and values: no CR, LF or NUL (header injection); a value
-- never appears in the message
local function add_headers(lines, headers, skip)
  if headers == nil then return end
  if type(headers) ~= "table" then error("oai.request: option 'headers' must be a table", 3) end
  for k, v in pairs(headers) do
    if type(k) ~= "string" or type(v) ~= "string" then
      error("oai.request: header names and values must be strings", 3)
    end
    if k == "" then error("oai.request: empty header name", 3) end
    if find(k, "[%z\1-\32:\127]") then
      error("oai.request: invalid character in header name '"
        .. (find(k, "[%z\r\n]") and "(contains CR/LF)" or k) .. "'", 3)
    end
    if find(v, "[%z\r\n]") then
      error("oai.request: header '" .. k .. "' has a value containing CR, LF or NUL", 3)
    end
    local l = lower(k)
    if not skip[l] then
      lines[#lines + 1] = k .. ": " .. v .. "\r\n"
      skip[l .. "#given"] = true
    end
  end
end

---------------------------------------------------------------- requests

---@class oai.ngx.Request
local Request = {}
-- request -> its head (which holds the Authorization header): kept beside the
-- request, never in it, so a dumped request or stream shows no key
local heads = setmetatable({}, { __mode = "k" })
Request.__index = Request
M.Request = Request

local function check(self)
  if self.closed then error("attempt to use a closed oai.request", 3) end
  return self
end

--- request{url=, method=, headers=, body=, stream=, timeout_ms=,
--- connect_timeout_ms=, idle_timeout_ms=, verify=, max_body_bytes=,
--- max_event_bytes=} -> req | raises on misuse (as oai.core.request).
--- `proxy` and `ca_file` raise: nginx.conf decides those (see the header).
---@param spec table
---@return oai.ngx.Request
function M.request(spec)
  if type(spec) ~= "table" then error("bad argument #1 to 'request' (table expected, got " .. type(spec) .. ")", 2) end
  local url = opt_str(spec, "url")
  if url == nil then error("oai.request: option 'url' is required", 2) end
  local method = opt_str(spec, "method") or "GET"
  if not method:match("^%u+$") then error("oai.request: invalid method", 2) end
  local body = spec.body
  if body ~= nil and type(body) ~= "string" then error("oai.request: option 'body' must be a string", 2) end
  if opt_str(spec, "proxy") ~= nil then
    error("oai.ngx: the proxy option is not supported inside nginx (cosockets connect directly)", 2)
  end
  if opt_str(spec, "ca_file") ~= nil then
    error("oai.ngx: ca_file cannot be set per request inside nginx; set"
      .. " lua_ssl_trusted_certificate in nginx.conf instead", 2)
  end
  local self = setmetatable({
    url = url, method = method, body_s = body, want_sse = spec.stream and true or false,
    verify = spec.verify ~= false,
    timeout_ms = opt_ms(spec, "timeout_ms"),
    connect_ms = opt_ms(spec, "connect_timeout_ms"),
    idle_ms = opt_ms(spec, "idle_timeout_ms"),
    max_body = opt_ms(spec, "max_body_bytes"),
    max_event = spec.max_event_bytes,
    -- response state
    state = "new", done = false, received = 0, raw_bytes = 0,
    rbuf = "", rpos = 1,
    hdr = {}, nh = 0, head_bytes = 0,
    parts = {}, np = 0,
    sse_raw = {}, sse_n = 0,
    stale_retries = 0,
  }, Request)
  parse_url(self, url)
  -- the request head, built (and validated) now, as oai.core.request does
  local lines = { method, " ", self.path or "/", " HTTP/1.1\r\n" }
  local skip = { ["content-length"] = true, ["transfer-encoding"] = true, ["expect"] = true }
  local user = {}
  add_headers(user, spec.headers, skip)
  if not skip["host#given"] then lines[#lines + 1] = "Host: " .. (self.host_header or "") .. "\r\n" end
  if not skip["connection#given"] then lines[#lines + 1] = "Connection: keep-alive\r\n" end
  -- identity only, as with libcurl: a compressed body is refused (deliver)
  if not skip["accept-encoding#given"] then lines[#lines + 1] = "Accept-Encoding: identity\r\n" end
  for i = 1, #user do lines[#lines + 1] = user[i] end
  if body ~= nil or method == "POST" or method == "PUT" or method == "PATCH" then
    lines[#lines + 1] = "Content-Length: " .. (body and #body or 0) .. "\r\n"
  end
  lines[#lines + 1] = "\r\n"
  heads[self] = concat(lines)
  self.no_body = method == "HEAD"
  return self
end

---------------------------------------------------------------- finishing

-- Nothing here may raise: cancel() runs from finalizers (the stream's
-- guard), and an error inside a __gc metamethod, even a caught one, can
-- crash LuaJIT inside nginx (seen with lua-nginx-module 0.10.23).  From
-- another request (a finalizer running there), the socket is left to nginx,
-- which closes it when its own request ends.
local function release(self, reuse)
  local sock = self.sock
  if not sock then return end
  self.sock = nil
  if get_request() ~= self.r then return end
  if reuse then
    local ok = sock:setkeepalive(M.keepalive_timeout, M.pool_size)
    if ok then return end
  end
  local ok, err = sock:close()
  -- another light thread is inside a read or write on it: that thread
  -- closes it when its operation returns (see fill)
  if not ok and err and find(err, "busy", 1, true) then self.sock_busy = sock end
end

local function fail(self, name, msg)
  if self.done then return end
  self.done, self.ok, self.err_name, self.err_msg = true, false, name, msg
  self.t_end = monotime()
  self.news = true
  release(self, false)
end

local function finish_ok(self)
  if self.done then return end
  self.done, self.ok = true, true
  self.t_end = monotime()
  self.news = true
  local reuse = self.keepalive and self.rpos > #self.rbuf
  release(self, reuse)
end

---------------------------------------------------------------- connecting

-- cosocket connect/handshake errors -> libcurl's names
local VERIFY_HINTS = {
  ["2"] = true, ["18"] = true, ["19"] = true, ["20"] = true, ["21"] = true, ["27"] = true,
}

local function tls_error(self, err)
  local code, text = tostring(err):match("^(%d+): (.*)$")
  if err == "certificate host mismatch" then
    return "PEER_FAILED_VERIFICATION", "SSL: certificate subject name does not match target host name '"
      .. self.host .. "' (nginx checks DNS names only: use the host name, not an IP address)"
  elseif code and VERIFY_HINTS[code] then
    return "SSL_CACERT", "SSL certificate problem: " .. text
      .. " (the CA must be in lua_ssl_trusted_certificate in nginx.conf)"
  elseif code == "22" then
    return "PEER_FAILED_VERIFICATION", "SSL certificate problem: " .. text
      .. " (raise lua_ssl_verify_depth in nginx.conf)"
  elseif code then
    return "PEER_FAILED_VERIFICATION", "SSL certificate problem: " .. text
  elseif err == "timeout" then
    return "OPERATION_TIMEDOUT", "SSL connection timeout"
  end
  return "SSL_CONNECT_ERROR", "SSL handshake with " .. self.host .. ":" .. self.port .. " failed: " .. tostring(err)
end

local function connect_error(self, err, connect_ms)
  err = tostring(err)
  if err == "timeout" then
    return "OPERATION_TIMEDOUT", format("Connection timed out after %d milliseconds", connect_ms)
  elseif find(err, "no resolver defined", 1, true) then
    return "COULDNT_RESOLVE_HOST", "Could not resolve host: " .. self.host
      .. " (add a resolver directive to nginx.conf; without one only IP addresses and localhost work)"
  elseif find(err, "could not be resolved", 1, true) then
    return "COULDNT_RESOLVE_HOST", "Could not resolve host: " .. self.host .. " (" .. err .. ")"
  end
  return "COULDNT_CONNECT", "Failed to connect to " .. self.host .. " port " .. self.port .. ": " .. err
end

-- remaining ms of the total timeout (BIG_MS when none); <= 0 when over
local function total_left(self)
  if not self.deadline then return BIG_MS end
  return (self.deadline - monotime()) * 1000
end

local function timed_out(self)
  fail(self, "OPERATION_TIMEDOUT", format("Operation timed out after %d milliseconds with %d bytes received",
    floor((monotime() - self.t_start) * 1000 + 0.5), self.received))
end

-- connect (or take a pooled connection), TLS, send the request
local function open(self)
  local ngx_tcp = ngx.socket.tcp
  local sock = ngx_tcp()
  local left = total_left(self)
  if left <= 0 then return timed_out(self) end
  local connect_ms = min(self.connect_ms > 0 and self.connect_ms or BIG_MS, left)
  local send_ms = min(self.idle_ms > 0 and self.idle_ms or BIG_MS, left)
  sock:settimeouts(max(1, floor(connect_ms)), max(1, floor(send_ms)), BIG_MS)
  self.r = get_request()
  local ok, err = sock:connect(self.connect_host, self.port,
    { pool = self.pool .. (self.verify and "" or "#noverify"), pool_size = M.pool_size })
  if not ok then
    if err == "timeout" and total_left(self) <= 1 then return timed_out(self) end
    return fail(self, connect_error(self, err, connect_ms))
  end
  self.sock = sock
  self.reused = (sock:getreusedtimes() or 0) > 0
  if self.tls and not self.reused then
    ok, err = sock:sslhandshake(false, self.host, self.verify)
    if not ok then return fail(self, tls_error(self, err)) end
    -- lua-nginx-module 0.10.23 sometimes reports success for a handshake
    -- whose verification failed, having closed the connection: a closed
    -- socket has no reuse count.  Once more on a new connection, for the
    -- real reason.
    if self.verify and not sock:getreusedtimes() then
      self.sock = nil
      if not self.tls_retried then
        self.tls_retried = true
        return open(self)
      end
      return fail(self, "PEER_FAILED_VERIFICATION", "SSL certificate verification of " .. self.host
        .. " failed (check lua_ssl_trusted_certificate and lua_ssl_verify_depth in nginx.conf)")
    end
  end
  self.t_connect = self.t_connect or (monotime() - self.t_start)
  self.num_connects = (self.num_connects or 0) + (self.reused and 0 or 1)
  local head = heads[self]
  local bytes, serr = sock:send(self.body_s and { head, self.body_s } or head)
  if not bytes then
    if self.reused and self.stale_retries < MAX_STALE_RETRIES then
      self.stale_retries = self.stale_retries + 1
      release(self, false)
      return open(self)
    end
    if serr == "timeout" then
      if total_left(self) <= 1 then return timed_out(self) end
      return fail(self, "OPERATION_TIMEDOUT", format("sending the request timed out after %d ms", send_ms))
    end
    return fail(self, "SEND_ERROR", "Failed sending data to the peer: " .. tostring(serr))
  end
  self.state = "status"
  self.last_rx = monotime()
end

---------------------------------------------------------------- parsing the response

-- a line (without CR LF) from the read buffer, or nil when incomplete
local function take_line(self)
  local buf, pos = self.rbuf, self.rpos
  local i = find(buf, "\n", pos, true)
  if not i then
    if #buf - pos + 1 > MAX_HEAD then
      fail(self, "WEIRD_SERVER_REPLY", "response line too long")
    end
    return nil
  end
  self.rpos = i + 1
  if i > pos and byte(buf, i - 1) == 13 then return sub(buf, pos, i - 2) end
  return sub(buf, pos, i - 1)
end

-- up to n bytes of body from the read buffer
local function take_bytes(self, n)
  local buf, pos = self.rbuf, self.rpos
  local avail = #buf - pos + 1
  if avail <= 0 then return nil end
  if n > avail then n = avail end
  self.rpos = pos + n
  if pos == 1 and n == #buf then return buf end
  return sub(buf, pos, pos + n - 1)
end

local function looks_like_sse(p)
  p = p:gsub("^[ \r\n\t]+", "")
  if sub(p, 1, 3) == "\239\187\191" then p = sub(p, 4) end
  return sub(p, 1, 4) == "data" or sub(p, 1, 5) == "event" or sub(p, 1, 2) == "id"
    or sub(p, 1, 5) == "retry" or sub(p, 1, 1) == ":"
end

local function first_header(self, lname)
  local hdr = self.hdr
  for i = 1, self.nh do
    local h = hdr[i]
    if h[1] == lname then return h[2] end
  end
  return nil
end

-- at the first body bytes (as decide_body in http.c): an event stream only
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

local function deliver(self, piece)
  local n = #piece
  if n == 0 then return end
  if not self.body_mode then
    -- nothing is decoded (we ask for identity): as refuse_encoding in http.c
    local ce = first_header(self, "content-encoding")
    if ce and ce ~= "" and lower(ce) ~= "identity" then
      return fail(self, "BAD_CONTENT_ENCODING", "the server sent a body with Content-Encoding: "
        .. sub(ce, 1, 63):gsub("[%c\128-\255]", "?") .. "; oai asks for identity (Accept-Encoding: identity) and decodes none")
    end
    decide(self, piece)
  end
  if self.body_mode == "plain" then
    if self.max_body > 0 and self.received + n > self.max_body then
      return fail(self, "BODY_TOO_LARGE", format("response body exceeds max_body_bytes (%d)", self.max_body))
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

local function end_of_headers(self)
  local st = self.status_code
  self.headers_done = true
  self.news = true
  local conn = lower(first_header(self, "connection") or "")
  if self.minor >= 1 then
    self.keepalive = not find(conn, "close", 1, true)
  else
    self.keepalive = find(conn, "keep-alive", 1, true) ~= nil
  end
  if self.no_body or st == 204 or st == 304 then
    self.framing = "none"
    return finish_ok(self)
  end
  local te = first_header(self, "transfer-encoding")
  if te then
    -- several lines are joined by headers(); the last coding decides
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
    if not n then return fail(self, "WEIRD_SERVER_REPLY", "invalid Content-Length in the response") end
    for i = 1, self.nh do
      local h = self.hdr[i]
      if h[1] == "content-length" and h[2]:match("^%s*(%d+)%s*$") ~= n then
        return fail(self, "WEIRD_SERVER_REPLY", "conflicting Content-Length values in the response")
      end
    end
    self.framing, self.remaining = "length", tonumber(n)
    if self.remaining == 0 then return finish_ok(self) end
    return
  end
  self.framing, self.keepalive = "close", false
end

-- parse what the read buffer holds; returns when it needs more bytes
local function advance(self)
  while not self.done do
    local state = self.state
    if state == "status" or state == "skip" then
      local line = take_line(self)
      if not line then return end
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
            self.minor, self.status_code = tonumber(minor), st
            self.state = "headers"
          end
        end
      end
    elseif state == "headers" then
      local line = take_line(self)
      if not line then return end
      self.head_bytes = self.head_bytes + #line + 2
      if self.head_bytes > MAX_HEAD then
        return fail(self, "WEIRD_SERVER_REPLY", "response headers larger than " .. MAX_HEAD .. " bytes")
      end
      if line == "" then
        self.state = "body"
        end_of_headers(self)
      else
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
      end
    else -- body
      local framing = self.framing
      if framing == "length" then
        local piece = take_bytes(self, self.remaining)
        if not piece then return end
        self.remaining = self.remaining - #piece
        deliver(self, piece)
        if self.remaining == 0 then finish_ok(self) end
      elseif framing == "chunked" then
        local cs = self.chunk
        if cs == "size" then
          local line = take_line(self)
          if not line then return end
          local hex = line:match("^%s*(%x+)%s*[;]?")
          if not hex or #hex > 12 then
            return fail(self, "RECV_ERROR", "Illegal or missing hexadecimal sequence in chunked-encoding")
          end
          local size = tonumber(hex, 16)
          if size == 0 then self.chunk = "trailer"
          else self.remaining, self.chunk = size, "data" end
        elseif cs == "data" then
          local piece = take_bytes(self, self.remaining)
          if not piece then return end
          self.remaining = self.remaining - #piece
          deliver(self, piece)
          if self.remaining == 0 then self.chunk = "crlf" end
        elseif cs == "crlf" then
          local line = take_line(self)
          if not line then return end
          if line ~= "" then return fail(self, "RECV_ERROR", "chunk not terminated by CRLF in chunked-encoding") end
          self.chunk = "size"
        else -- trailer
          local line = take_line(self)
          if not line then return end
          if line == "" then finish_ok(self) end
        end
      else -- close-delimited
        local piece = take_bytes(self, RECV_SIZE * 16)
        if not piece then return end
        deliver(self, piece)
      end
    end
  end
end

---------------------------------------------------------------- reading

-- the connection ended (closed or reset) after `self.raw_bytes` bytes
local function ended(self, err)
  if self.raw_bytes == 0 and self.reused and self.stale_retries < MAX_STALE_RETRIES then
    -- a pooled connection that the server had closed: try again once
    self.stale_retries = self.stale_retries + 1
    release(self, false)
    self.state = "new"
    open(self)
    return
  end
  local state = self.state
  if err ~= "closed" then
    return fail(self, "RECV_ERROR", "Recv failure: " .. tostring(err))
  end
  if state == "body" and self.framing == "close" then
    self.keepalive = false
    return finish_ok(self)
  end
  if self.raw_bytes == 0 then return fail(self, "GOT_NOTHING", "Empty reply from server") end
  if state ~= "body" then
    return fail(self, "RECV_ERROR", "connection closed inside the response headers")
  end
  if self.framing == "length" then
    return fail(self, "PARTIAL_FILE", format("transfer closed with %d bytes remaining to read", self.remaining))
  end
  return fail(self, "PARTIAL_FILE", "transfer closed with outstanding read data remaining")
end

-- one read; returns "wait" when the caller's own time limit ran out
local function fill(self, until_t)
  local now = monotime()
  local limit, cause = BIG_MS, nil
  if self.idle_ms > 0 then
    local t = self.idle_ms - (now - self.last_rx) * 1000
    if t < limit then limit, cause = t, "idle" end
  end
  if self.deadline then
    local t = (self.deadline - now) * 1000
    if t < limit then limit, cause = t, "total" end
  end
  if until_t then
    local t = (until_t - now) * 1000
    if t < limit then limit, cause = t, "wait" end
  end
  if limit < 1 then
    if cause == "wait" then return "wait" end
    if cause == "idle" then
      return fail(self, "OPERATION_TIMEDOUT", format("no data received for %d ms (idle_timeout)", self.idle_ms))
    end
    return timed_out(self)
  end
  local sock = self.sock
  sock:settimeouts(BIG_MS, BIG_MS, floor(limit + 0.999))
  local data, err = sock:receiveany(RECV_SIZE)
  if self.done or self.closed then
    -- canceled from another light thread while we were reading
    local orphan = self.sock_busy or (self.sock == sock and sock)
    self.sock, self.sock_busy = nil, nil
    if orphan then orphan:close() end
    return
  end
  if data then
    self.raw_bytes = self.raw_bytes + #data
    self.last_rx = monotime()
    local pos = self.rpos
    if pos > #self.rbuf then
      self.rbuf = data
    else
      self.rbuf = sub(self.rbuf, pos) .. data
    end
    self.rpos = 1
    return
  end
  if err == "timeout" then
    return fill(self, until_t)   -- re-checks which limit ran out
  end
  return ended(self, err)
end

---------------------------------------------------------------- the oai.request methods

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
  for i = 1, self.nh do
    local h = self.hdr[i]
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
  for i = 1, self.nh do
    local h = self.hdr[i]
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

--- req:result() -> done[, ok, name, message]
---@return boolean done
---@return boolean? ok
---@return string? name libcurl's name of the failure
---@return string? message
function Request:result()
  check(self)
  if not self.done then return false end
  if self.ok then return true, true end
  return true, false, self.err_name, self.err_msg
end

--- req:info() -> {elapsed, connect_time, start_transfer, http_version,
--- num_connects, primary_ip, received, reused, reconnects, transport}
---@return table
function Request:info()
  check(self)
  local t0 = self.t_start
  return {
    elapsed = t0 and ((self.t_end or monotime()) - t0) or 0,
    connect_time = self.t_connect,
    start_transfer = self.t_first,
    http_version = self.minor and ("1." .. self.minor) or nil,
    num_connects = self.num_connects or 0,
    primary_ip = self.connect_host,
    received = self.received,
    reused = self.reused or false,
    reconnects = self.stale_retries,   -- pooled connections found closed by the server
    transport = "ngx",
  }
end

--- req:cancel(): stops the transfer now (the socket is closed, never pooled);
--- the request then reads as done with CANCELED.  Unlike oai.request's, it
--- never raises, not even after close: it runs from finalizers (see release).
---@return nil
function Request:cancel()
  if self.closed then return end
  if not self.done then
    self.done, self.ok = true, false
    self.err_name, self.err_msg = "CANCELED", "request canceled"
    self.t_end = monotime()
  end
  release(self, false)
end

--- req:close(): idempotent; an unfinished transfer is canceled
---@return nil
function Request:close()
  if self.closed then return end
  if not self.done then self:cancel() else release(self, false) end
  self.closed = true
  self.parts, self.np, self.body_cache = {}, 0, nil
  self.sse_raw, self.sse_n = {}, 0
  self.rbuf, self.rpos = "", 1
  if self.parser then self.parser:close() end
end

function Request:__tostring()
  if self.closed then return "oai.request (closed)" end
  return "oai.request (ngx, " .. self.url:gsub("%?.*$", "") .. ")"
end

---------------------------------------------------------------- the transport

--- Start the request: connect (pooled connections first), TLS, send.
--- Connection failures are reported by req:result(), not raised.
---@param req oai.ngx.Request
function M.start(req)
  if getmetatable(req) ~= Request then error("oai.ngx: start() expects a request of oai.ngx", 2) end
  check(req)
  if req.state ~= "new" or req.t_start then error("oai.multi: a request can only be started once", 2) end
  req.t_start = monotime()
  req.last_rx = req.t_start
  if req.timeout_ms > 0 then req.deadline = req.t_start + req.timeout_ms / 1000 end
  if req.early_name then return fail(req, req.early_name, req.early_msg) end
  open(req)
end

--- Wait until the request has news (headers, body bytes, the end), or at
--- most `timeout` seconds.  The socket reads yield to nginx: other requests
--- and light threads run meanwhile.
---@param req oai.ngx.Request
---@param timeout? number seconds
function M.wait(req, timeout)
  if req.closed or req.done or not req.t_start then return end
  local reader = req.reading
  if reader and co_status(reader) ~= "dead" then
    -- another light thread is reading this socket (text() in one thread,
    -- result() in another): a cosocket has one reader, so wait for its news
    local sema = req.sema
    if not sema then
      sema = require("ngx.semaphore").new(0)
      req.sema, req.sema_n = sema, 0
    end
    req.sema_n = req.sema_n + 1
    local ok = sema:wait(timeout or 3600)
    if not ok and req.sema_n > 0 then req.sema_n = req.sema_n - 1 end   -- timed out: not counted any more
    return
  end
  req.reading = co_running()
  req.news = false
  local until_t = timeout and (monotime() + timeout)
  while true do
    advance(req)
    if req.news or req.done or req.closed then req.news = false break end
    if fill(req, until_t) == "wait" then break end
    if req.done or req.closed then break end
  end
  req.reading = nil
  -- the threads waiting for this reader's news go on (one of them may then
  -- become the reader)
  local n = req.sema_n
  if n and n > 0 then
    req.sema_n = 0
    req.sema:post(n)
  end
end

--- Wake the light threads waiting for the reader of req (after a cancel;
--- they then see the request finished).
---@param req oai.ngx.Request
---@return nil
function M.forget(req)
  local n = req and req.sema_n
  if n and n > 0 then
    req.sema_n = 0
    req.sema:post(n)
  end
end

--- ngx.sleep, for retry backoff inside nginx
---@param seconds number
function M.sleep(seconds)
  if seconds ~= nil and not (type(seconds) == "number" and seconds >= 0 and seconds < math.huge) then
    -- NaN fails every comparison
    error("oai.sleep: seconds must be a non-negative number (got "
      .. (type(seconds) ~= "number" and type(seconds) or seconds ~= seconds and "nan" or tostring(seconds)) .. ")", 2)
  end
  if seconds and seconds > 0 then ngx.sleep(seconds) else ngx.sleep(0) end
end

---------------------------------------------------------------- tasks as light threads

-- oai.spawn inside nginx: each task is a light thread of the current
-- request (ngx.thread.spawn), so nginx schedules it; the request's handler
-- does not end before its threads do.
---@class oai.ngx.Task
local Task = {}
Task.__index = Task
M.Task = Task

local by_ctx = setmetatable({}, { __mode = "k" })   -- ngx.ctx -> tasks of that request

local function pack(...) return { n = select("#", ...), ... } end

--- spawn([opts,] fn, ...) -> task (as oai.spawn): opts.on_error(err, trace)
--- handles the task's error; otherwise it is logged and run() raises it.
---@param opts table|function options {on_error} or the function
---@param fn? function
---@return oai.ngx.Task
function M.spawn(opts, fn, ...)
  local args
  if type(opts) == "function" then
    args = pack(fn, ...)
    fn, opts = opts, nil
  else
    if type(opts) ~= "table" then error("oai.spawn: expected a function", 2) end
    if type(fn) ~= "function" then error("oai.spawn: expected a function after the options", 2) end
    args = pack(...)
  end
  M.check_phase()
  local task = setmetatable({ on_error = opts and opts.on_error, done = false }, Task)
  local ctx = ngx.ctx
  local list = by_ctx[ctx]
  if not list then
    list = {}
    by_ctx[ctx] = list
  elseif #list >= 64 then
    -- a long-lived timer spawning without run(): forget what is settled
    local keep = {}
    for i = 1, #list do
      local t = list[i]
      if not t.done or (t.err ~= nil and not t.handled) or t.handler_err then keep[#keep + 1] = t end
    end
    list = keep
    by_ctx[ctx] = list
  end
  list[#list + 1] = task
  local function handler(e) return { e, traceback(tostring(e), 2) } end
  local function body()
    local r = pack(xpcall(function() return fn(unpack(args, 1, args.n)) end, handler))
    task.done = true
    if r[1] then
      task.results = pack(unpack(r, 2, r.n))
    else
      task.err, task.trace = r[2][1], r[2][2]
      if task.on_error then
        task.handled = true
        local ok, e2 = pcall(task.on_error, task.err, task.trace)
        if not ok then
          -- as with oai.loop: run() raises it once the tasks are done
          task.handler_err = "oai: on_error handler raised: " .. tostring(e2)
          ngx.log(ngx.ERR, task.handler_err)
        end
      elseif not task.joined then
        ngx.log(ngx.ERR, "oai: task failed: ", task.trace)
      end
    end
    if task.sema then task.sema:post(task.waiters) end
  end
  local th, err = ngx.thread.spawn(body)
  if not th then error("oai.spawn: " .. tostring(err), 2) end
  task.thread = th
  return task
end

---@return boolean
function Task:is_done() return self.done end

-- wait until t finished (any light thread of the request may wait)
local function join(t)
  if t.done then return end
  if not t.sema then
    t.sema = require("ngx.semaphore").new(0)
    t.waiters = 0
  end
  t.waiters = t.waiters + 1
  while not t.done do t.sema:wait(3600) end
end

--- Wait for the task (from any light thread of the request): its return
--- values, or nil, err when it failed (the error is then handled).
---@return any ...
function Task:wait()
  self.joined = true
  if not self.done and coroutine.running() == self.thread then
    error("oai: a task cannot wait for itself", 2)
  end
  join(self)
  if self.err ~= nil then
    self.handled = true
    return nil, self.err
  end
  local r = self.results
  return unpack(r, 1, r.n)
end

--- oai.run() inside nginx: wait for every task this request (or timer)
--- spawned; raises the first error nobody handled, with its traceback.
---@return nil
function M.run()
  local ctx = ngx.ctx
  local list = by_ctx[ctx]
  if not list then return end
  local i = 1
  while list[i] do   -- tasks may spawn more meanwhile
    join(list[i])
    i = i + 1
  end
  by_ctx[ctx] = nil
  for j = 1, #list do
    local t = list[j]
    if t.handler_err then
      local e = t.handler_err
      t.handler_err = nil
      error(e, 0)
    end
    if t.err ~= nil and not t.handled then
      t.handled = true
      error(t.trace, 0)
    end
  end
end

local T = {
  name = "ngx",
  request = M.request,
  start = M.start,
  wait = M.wait,
  forget = M.forget,
  sleep = M.sleep,
  spawn = M.spawn,
  run = M.run,
}
M.T = T

--- The transport for the current phase; raises naming the phase where
--- cosockets cannot run (init, init_worker, set, header_filter,
--- body_filter, log, balancer, ...).
---@return table transport {name, request, start, wait, forget, sleep, spawn, run}
function M.transport()
  M.check_phase()
  return T
end

return M
