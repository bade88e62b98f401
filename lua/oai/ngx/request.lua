--- oai.ngx.request: one HTTP/1.1 request over an nginx cosocket
--- (ngx.socket.tcp), with the methods of oai.request (src/request.c) so the
--- client and streams above cannot tell the transports apart: connect (a
--- pooled connection first), TLS, send the head, read what the socket gives
--- into the pure response parser (oai.ngx.http1), the timeouts, the end
--- (pooled, closed, canceled).  What was received is read through the
--- methods of oai.ngx.response.
---
--- Who waits for a request's news, and how several light threads share one
--- reader, is oai.ngx.tasks'; `M.pump` is the reading it drives.
local core = require "oai.native"
local http1 = require "oai.ngx.http1"
local response = require "oai.ngx.response"

local monotime = core.monotime
local type, tostring, setmetatable, error, pairs, getmetatable =
  type, tostring, setmetatable, error, pairs, getmetatable
local floor, min, max = math.floor, math.min, math.max
local concat = table.concat
local find, lower, sub, format = string.find, string.lower, string.sub, string.format
local deliver = response.deliver

-- the nginx request running now (nil outside nginx): a cosocket may only be
-- touched from the request that opened it
local get_request
do
  local ok, base = pcall(require, "resty.core.base")
  get_request = ok and type(base) == "table" and base.get_request or function() return nil end
end

local M = {}

--- settings: the connection pool of each upstream, read at every release
--- (oai.ngx sets this to its module table: `keepalive_timeout`, `pool_size`)
M.settings = {}

local BIG_MS = 2147483647   -- cosockets read 0 as "the nginx default": "no limit" is this
local RECV_SIZE = 65536     -- receiveany returns at most what one read gave anyway
local MAX_STALE_RETRIES = 2  -- a pooled connection the server closed meanwhile

---------------------------------------------------------------- options and the request head

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
for k, f in pairs(response.methods) do Request[k] = f end
-- request -> its head (which holds the Authorization header): kept beside the
-- request, never in it, so a dumped request or stream shows no key
local heads = setmetatable({}, { __mode = "k" })
Request.__index = Request
M.Request = Request

local check = response.check

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
    state = "new", done = false, received = 0,
    parts = {}, np = 0,
    sse_raw = {}, sse_n = 0,
    stale_retries = 0,
  }, Request)
  -- a bad URL is reported by start(), as libcurl reports it from the transfer
  local u, name, msg = http1.parse_url(url)
  if u then
    for k, v in pairs(u) do self[k] = v end
  else
    self.early_name, self.early_msg = name, msg
  end
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
    local ok = sock:setkeepalive(M.settings.keepalive_timeout, M.settings.pool_size)
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
  local p = self.http
  local reuse = p.keepalive and p:buffered() == 0
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
    { pool = self.pool .. (self.verify and "" or "#noverify"), pool_size = M.settings.pool_size })
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
  self.state = "sent"
  self.http = http1.new { no_body = self.no_body }
  self.last_rx = monotime()
end

---------------------------------------------------------------- reading

-- parse what the parser holds; returns when it needs more bytes
local function advance(self)
  local p = self.http
  while p and not self.done do
    local ev, a, b = p:next()
    if ev == "body" then
      local name, msg = deliver(self, a)
      if name then fail(self, name, msg) end
    elseif ev == "head" then
      self.status_code, self.minor = p.status, p.minor
      self.headers_done = true
      self.news = true
    elseif ev == "done" then
      finish_ok(self)
    elseif ev == "error" then
      fail(self, a, b)
    else
      return
    end
  end
end

-- the connection ended (closed or reset)
local function ended(self, err)
  if self.http.fed == 0 and self.reused and self.stale_retries < MAX_STALE_RETRIES then
    -- a pooled connection that the server had closed: try again once
    self.stale_retries = self.stale_retries + 1
    release(self, false)
    self.state, self.http = "new", nil
    open(self)
    return
  end
  if err ~= "closed" then
    return fail(self, "RECV_ERROR", "Recv failure: " .. tostring(err))
  end
  self.http:feed(nil)
  advance(self)
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
    self.last_rx = monotime()
    self.http:feed(data)
    return
  end
  if err == "timeout" then
    return fill(self, until_t)   -- re-checks which limit ran out
  end
  return ended(self, err)
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
  self.http = nil
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

--- Read until the request has news (headers, body bytes, the end) or the
--- clock reaches until_t (monotime seconds, nil: no limit); the socket reads
--- yield to nginx.  One light thread at a time (oai.ngx.tasks sees to it).
---@param req oai.ngx.Request
---@param until_t? number
function M.pump(req, until_t)
  req.news = false
  while true do
    advance(req)
    if req.news or req.done or req.closed then req.news = false break end
    if fill(req, until_t) == "wait" then break end
    if req.done or req.closed then break end
  end
end

return M
