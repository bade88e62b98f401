--- oai.send: one HTTP exchange with its retries.
---
--- One attempt starts a request on the current transport and waits for its
--- headers (streams) or its end; a failed attempt becomes an error
--- (errors.from_transport, errors.from_status) and is retried with backoff
--- while the failure is retryable and attempts remain.
local core = require "oai.native"
local errors = require "oai.errors"
local transport = require "oai.transport"

local monotime = core.monotime
local random, min = math.random, math.min

local M = {}

-- libcurl failure names worth another attempt
local RETRYABLE_TRANSPORT = {
  COULDNT_CONNECT = true, COULDNT_RESOLVE_HOST = true, COULDNT_RESOLVE_PROXY = true,
  GOT_NOTHING = true, SEND_ERROR = true, RECV_ERROR = true, PARTIAL_FILE = true,
  HTTP2 = true, HTTP2_STREAM = true, OPERATION_TIMEDOUT = true, SSL_CONNECT_ERROR = true,
  WEIRD_SERVER_REPLY = false, PROXY = true,
}

local function should_retry_status(status, headers)
  local sr = headers and headers["x-should-retry"]
  if sr == "true" then return true end
  if sr == "false" then return false end
  return status == 408 or status == 409 or status == 429 or status >= 500
end

--- Seconds to wait before attempt `attempt` + 1: the server's retry-after
--- (up to 60 s), else exponential backoff from 0.5 s (at most 8 s), jittered.
---@param attempt integer
---@param headers? table<string,string>
---@return number seconds
function M.backoff(attempt, headers)
  local ra = headers and errors.retry_after(headers)
  if ra and ra > 0 and ra <= 60 then return ra end
  local d = min(0.5 * 2 ^ (attempt - 1), 8)
  return d * (1 - 0.25 * random())
end

-- Start one attempt and wait for its headers (stream) or its end.
local function attempt(o, x)
  local T = transport.current()
  local req = T.request {
    url = x.url,
    method = x.method,
    headers = x.headers,
    body = x.body,
    stream = x.stream,
    timeout_ms = (o.timeout or 0) * 1000,
    connect_timeout_ms = (o.connect_timeout or 0) * 1000,
    idle_timeout_ms = (o.idle_timeout or 0) * 1000,
    proxy = o.proxy or nil,
    ca_file = o.ca_file or nil,
    verify = o.verify ~= false,
    max_body_bytes = o.max_body_bytes or nil,
    max_event_bytes = o.max_event_bytes or nil,
    resolve = o.resolve or nil,
  }
  T.start(req)
  -- no pcall around the waits: Lua 5.1 cannot yield across it.  If the
  -- waiting task dies, the transfer still ends and is then released.
  local wait = T.wait
  if x.stream then
    while not req:result() and not req:status() do wait(req) end
    local st = req:status()
    if st and (st < 200 or st > 299) then
      while not req:result() do wait(req) end
    end
  else
    while not req:result() do wait(req) end
  end
  return req
end

--- Send a request with the retry rules.  `x` is {method, url, headers, body,
--- stream, key}; `o` the merged client options.  Returns the live
--- request (for a 2xx stream: headers in, body still arriving) or the
--- finished one, the number of attempts and the start time; or nil, err.
---@param o table
---@param x table
---@return table? req
---@return integer|oai.Error attempts_or_err
---@return number? t0
function M.send(o, x)
  local stream, key = x.stream, x.key
  local t0 = monotime()
  local max_retries = o.max_retries or 0
  local n = 0
  while true do
    n = n + 1
    local req = attempt(o, x)
    local done, ok, name, msg = req:result()
    local status = req:status()
    local err, retry, headers
    if done and not ok and not (stream and status and status >= 200 and status <= 299) then
      err = errors.from_transport(name, msg, key)
      retry = RETRYABLE_TRANSPORT[name] == true
    elseif status and (status < 200 or status > 299) then
      headers = req:headers()
      err = errors.from_status(status, headers, req:body(), key)
      retry = should_retry_status(status, headers)
    end
    if not err then
      return req, n, t0
    end
    err.attempts = n
    req:close()
    if not retry or n > max_retries then
      return nil, err
    end
    transport.sleep(M.backoff(n, headers))
  end
end

return M
