--- oai: OpenAI-compatible Chat Completions for Lua, with its core in C.
---
--- Programmer errors raise; runtime failures return `nil, err` (see
--- oai.errors for the error shape).
local core = require "oai.native"
local loop = require "oai.loop"
local errors = require "oai.errors"
local fail = errors.fail
local stream_mod = require "oai.stream"
local handle_mod = require "oai.handle"

local json_encode, json_decode = core.json_encode, core.json_decode
local monotime = core.monotime
local ipairs = ipairs
local type, pairs, tostring, tonumber, setmetatable, getmetatable, error =
  type, pairs, tostring, tonumber, setmetatable, getmetatable, error
local floor, random, min = math.floor, math.random, math.min

local oai = {}

oai.core = core
oai.version = core.version

--- JSON codec (C): encode(value) -> string | raises; decode(text) -> value | nil, err
oai.json = { encode = json_encode, decode = json_decode }
oai.null = core.null
oai.array = core.array
oai.object = core.object
oai.base64 = core.base64
oai.sse = core.sse
oai.errors = errors

-- tasks (oai.spawn, oai.run and oai.sleep follow the transport: see below)
oai.step = loop.step

local DEFAULT_BASE_URL = "https://api.openai.com/v1"
local USER_AGENT = "oai-lua/" .. core.version

-- option name -> default; every one can also be given per call
local DEFAULTS = {
  timeout = 600, connect_timeout = 10, idle_timeout = 300, max_retries = 2,
  proxy = false, ca_file = false, verify = true, stream_usage = false,
  max_body_bytes = 64 * 1024 * 1024, max_event_bytes = 8 * 1024 * 1024,
  grace = 2, resolve = false,
}

-- numeric options: { lowest, highest, integral }.  NaN, infinities and
-- values out of range are programmer errors (NaN would slip past every
-- comparison: max_retries = 0/0 retried forever, timeout = 0/0 had no limit)
local NUMERIC = {
  timeout = { 0, 1e9 }, connect_timeout = { 0, 1e9 }, idle_timeout = { 0, 1e9 }, grace = { 0, 1e9 },
  max_retries = { 0, 1e6, true }, max_body_bytes = { 0, 1e12, true }, max_event_bytes = { 1, 1e12, true },
}

local function show_number(v)
  if type(v) ~= "number" then return type(v) end
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
  return ("%.14g"):format(v)
end

-- raises (at the caller's caller) when option k has a bad value v
local function check_option(where, k, v)
  local rule = NUMERIC[k]
  if not rule then return end
  local lo, hi, integral = rule[1], rule[2], rule[3]
  if type(v) == "number" and v >= lo and v <= hi and (not integral or v == floor(v)) then return end
  local what = integral and (lo > 0 and "a positive integer" or "a non-negative integer")
    or "a non-negative number"
  if type(v) == "number" and v == v and v > hi then what = what .. (" up to %.14g"):format(hi) end
  -- blame the first caller outside this file
  local level, here = 2, debug.getinfo(1, "S").source
  while true do
    local info = debug.getinfo(level, "S")
    if not info or info.source ~= here then break end
    level = level + 1
  end
  error(("%s: %s must be %s (got %s)"):format(where, k, what, show_number(v)), level)
end

-- secrets live here, never in the client table itself (printing or
-- serialising a client must not reveal the key)
local secrets = setmetatable({}, { __mode = "k" })
-- client -> its cached header tables (they hold "Authorization: Bearer <key>",
-- so they live beside the client, like the key)
local hcaches = setmetatable({}, { __mode = "k" })
-- completion table -> response metadata
local metadata = setmetatable({}, { __mode = "k" })

---@class oai.Client
---@field base_url string
local Client = {}
Client.__index = Client
oai.Client = Client

function Client:__tostring()
  return "oai.client (" .. errors.mask_url_credentials(self.base_url) .. ")"
end

---@class oai.ClientOptions
---@field base_url? string default $OPENAI_BASE_URL, then https://api.openai.com/v1
---@field api_key? string default $OPENAI_API_KEY; no Authorization header when absent
---@field headers? table<string,string> extra request headers
---@field timeout? number total seconds per attempt (600)
---@field connect_timeout? number seconds (10)
---@field idle_timeout? number seconds without any byte (300)
---@field max_retries? integer extra attempts on retryable failures (2)
---@field proxy? string proxy URL (libcurl's proxy environment variables apply otherwise)
---@field ca_file? string PEM bundle to verify TLS peers with
---@field verify? boolean verify TLS peer and host (true)
---@field stream_usage? boolean ask for usage in streams (stream_options.include_usage)
---@field max_body_bytes? integer largest non-streamed body accepted (64 MiB)
---@field max_event_bytes? integer largest single stream event accepted (8 MiB)
---@field grace? number seconds to wait for [DONE] after every choice finished (2)
---@field resolve? string[] libcurl "host:port:address" overrides

--- Create a client.  Every option is optional and can be overridden per call.
---@param opts? oai.ClientOptions
---@return oai.Client
function oai.new(opts)
  if opts ~= nil and type(opts) ~= "table" then error("oai.new: options must be a table", 2) end
  opts = opts or {}
  local self = setmetatable({}, Client)
  local base = opts.base_url or os.getenv("OPENAI_BASE_URL")
  if base == nil or base == "" then base = DEFAULT_BASE_URL end
  if type(base) ~= "string" or not base:match("^https?://") then
    error("oai.new: base_url must be an http:// or https:// URL", 2)
  end
  self.base_url = base:gsub("/+$", "")
  local key = opts.api_key
  if key == nil then key = os.getenv("OPENAI_API_KEY") end
  if key == "" then key = nil end
  if key ~= nil and type(key) ~= "string" then error("oai.new: api_key must be a string", 2) end
  secrets[self] = key
  self.headers = {}
  if opts.headers then
    if type(opts.headers) ~= "table" then error("oai.new: headers must be a table", 2) end
    for k, v in pairs(opts.headers) do self.headers[k] = v end
  end
  self.options = {}
  for k, v in pairs(DEFAULTS) do
    local given = opts[k]
    if given ~= nil then
      check_option("oai.new", k, given)
      self.options[k] = given
    else
      self.options[k] = v
    end
  end
  return self
end

-- merged per-call options; only the keys given are checked
local function options(self, call)
  local base = self.options
  if not call then return base end
  local o
  for k in pairs(DEFAULTS) do
    local v = call[k]
    if v ~= nil then
      check_option("oai call options", k, v)
      if not o then
        o = {}
        for kk, vv in pairs(base) do o[kk] = vv end
      end
      o[k] = v
    end
  end
  return o or base   -- shared: callers never modify it
end

-- set h[name] = value, replacing a header of the same name in another case
local function set_header(h, name, value)
  local l = name:lower()
  for k in pairs(h) do
    if type(k) == "string" and k:lower() == l then h[k] = nil end
  end
  h[name] = value
end

-- client headers that carry credentials: not sent to another origin
local CREDENTIAL_HEADERS = { authorization = true, ["api-key"] = true }

local function build_headers(self, key, accept, has_body, foreign)
  local h = { ["User-Agent"] = USER_AGENT, ["Accept"] = accept }
  if has_body then h["Content-Type"] = "application/json" end
  if key then h["Authorization"] = "Bearer " .. key end
  for k, v in pairs(self.headers) do
    if not (foreign and type(k) == "string" and CREDENTIAL_HEADERS[k:lower()]) then set_header(h, k, v) end
  end
  return h
end

-- the request headers; the client's part is built once per kind of request.
-- foreign: the URL is not on base_url's origin (no key, no credential headers)
local function header_table(self, call, key, accept, has_body, foreign)
  local h
  if foreign then
    h = build_headers(self, nil, accept, has_body, true)
  elseif key == secrets[self] then
    local cache = hcaches[self]
    if not cache then cache = {}; hcaches[self] = cache end
    local ck = accept .. (has_body and "+body" or "")
    h = cache[ck]
    if not h then h = build_headers(self, key, accept, has_body); cache[ck] = h end
  else
    h = build_headers(self, key, accept, has_body)
  end
  if call and call.headers then
    local merged = {}
    for k, v in pairs(h) do merged[k] = v end
    for k, v in pairs(call.headers) do set_header(merged, k, v) end
    return merged
  end
  return h   -- shared and never modified: the C side only reads it
end

---------------------------------------------------------------- errors

local RETRYABLE_TRANSPORT = {
  COULDNT_CONNECT = true, COULDNT_RESOLVE_HOST = true, COULDNT_RESOLVE_PROXY = true,
  GOT_NOTHING = true, SEND_ERROR = true, RECV_ERROR = true, PARTIAL_FILE = true,
  HTTP2 = true, HTTP2_STREAM = true, OPERATION_TIMEDOUT = true, SSL_CONNECT_ERROR = true,
  WEIRD_SERVER_REPLY = false, PROXY = true,
}

local function header_of(headers, name) return headers and headers[name] end

-- seconds the server asked us to wait, from retry-after-ms / retry-after
local function retry_after(headers)
  local ms = tonumber(header_of(headers, "retry-after-ms") or "")
  if ms then return ms / 1000 end
  local ra = header_of(headers, "retry-after")
  if ra then
    local secs = tonumber(ra)
    if secs then return secs end
    local t = core.getdate(ra)
    if t then return t - os.time() end
  end
  return nil
end
oai._retry_after = retry_after

local function should_retry_status(status, headers)
  local sr = header_of(headers, "x-should-retry")
  if sr == "true" then return true end
  if sr == "false" then return false end
  return status == 408 or status == 409 or status == 429 or status >= 500
end

local function backoff(attempt, headers)
  local ra = headers and retry_after(headers)
  if ra and ra > 0 and ra <= 60 then return ra end
  local d = min(0.5 * 2 ^ (attempt - 1), 8)
  return d * (1 - 0.25 * random())
end
oai._backoff = backoff

local function truncate(s, n)
  if #s > n then return s:sub(1, n) end
  return s
end

-- an error for a non-2xx response (body complete)
local function status_error(status, headers, body, key)
  local fields = {
    status = status,
    request_id = header_of(headers, "x-request-id"),
    retry_after = retry_after(headers),
  }
  local doc = json_decode(body)
  local env = type(doc) == "table" and doc.error
  if type(env) == "string" then env = { message = env } end
  if type(env) == "table" then
    fields.kind = "api"
    local msg = env.message
    fields.message = type(msg) == "string" and msg or ("HTTP " .. status)
    for _, k in pairs({ "type", "code", "param" }) do
      local v = env[k]
      if type(v) == "string" or type(v) == "number" then fields[k] = v end
    end
    fields.error = env
  elseif type(doc) == "table" and type(doc.message) == "string" then
    -- some gateways send {"message": ...} without the envelope
    fields.kind = "api"
    fields.message = doc.message
    if type(doc.type) == "string" then fields.type = doc.type end
    if type(doc.code) == "string" or type(doc.code) == "number" then fields.code = doc.code end
  else
    fields.kind = "http"
    local ct = header_of(headers, "content-type") or "no content type"
    fields.message = "HTTP " .. status .. " (" .. ct .. ", " .. #body .. " bytes)"
    fields.body = truncate(body, 2048)
  end
  return errors.new(fields, key)
end

local function transport_error(name, message, key)
  return errors.new({
    kind = errors.transport_kind(name),
    name = name,
    message = message,
  }, key)
end

---------------------------------------------------------------- transports

-- A transport makes requests progress.  The default drives libcurl's multi
-- handle from oai.loop; inside OpenResty, oai.ngx speaks HTTP over
-- cosockets.  Its requests have the methods of oai.request (status,
-- headers, header, body, is_sse, read_records, pending, result, cancel,
-- close, info).
local curl_transport = {
  name = "curl",
  request = core.request,
  start = loop.start,
  wait = loop.wait,
  forget = loop.forget,
}
oai.curl_transport = curl_transport

local transport_override

--- Use another transport for every client (nil: automatic).
---@param t? table a transport {request, start, wait, forget}; nil: automatic
function oai.set_transport(t) transport_override = t end

local function transport()
  if transport_override then return transport_override end
  if type(ngx) == "table" and type(ngx.get_phase) == "function" then
    return require("oai.ngx").transport()   -- raises naming the phase where cosockets cannot run
  end
  return curl_transport
end
oai.transport = transport

-- Tasks and sleeps belong to the host that does the waiting: oai.loop's
-- coroutines with libcurl, light threads and ngx.sleep inside nginx (a
-- transport may bring spawn, run and sleep).  Tail calls keep the callers'
-- error levels.

--- oai.spawn([opts,] fn, ...) -> task (a light thread inside nginx)
---@param opts table|function options {on_error} or the function
---@param fn? function
---@return table task
function oai.spawn(opts, fn, ...) return (transport().spawn or loop.spawn)(opts, fn, ...) end

--- Run until every task has finished (inside nginx: this request's tasks).
---@return nil
function oai.run() return (transport().run or loop.run)() end

--- Sleep; other tasks (or nginx requests) keep running.
---@param seconds number
function oai.sleep(seconds) return (transport().sleep or loop.sleep)(seconds) end

---------------------------------------------------------------- URLs

local DEFAULT_PORT = { http = "80", https = "443" }

-- the authority (between "://" and the path) of a URL, or nil
local function authority_of(url)
  return url:match("^%a[%w+.-]*://([^/?#]*)")
end

-- "scheme://host:port" of an http(s) URL, lower-cased, default port filled
-- in; nil when the authority holds anything unusual (it then matches nothing)
local function origin_of(url)
  local scheme, auth = url:match("^(%a[%w+.-]*)://([^/?#]*)")
  if not scheme then return nil end
  if auth:find("[\\%s%c]") then return nil end
  scheme = scheme:lower()
  local hostport = auth:match("^.*@(.*)$") or auth
  if not hostport:match("^[%w%.%-_:%[%]]+$") then return nil end
  local host, port = hostport:match("^(%[[%x:%.]+%]):?(%d*)$")
  if not host then host, port = hostport:match("^([^:%[%]]+):?(%d*)$") end
  if not host then return nil end
  if port == "" then port = DEFAULT_PORT[scheme] end
  if not port then return nil end
  return scheme .. "://" .. host:lower() .. ":" .. tostring(tonumber(port))
end
oai._origin_of = origin_of

local function is_absolute(path)
  return path:match("^[hH][tT][tT][pP][sS]?://") ~= nil
end

-- The URL for path and whether it leaves base_url's origin.  A relative
-- path is joined under base_url (base .. "/" .. path without its leading
-- slashes) and must keep base_url's authority (raises otherwise); an
-- absolute URL on another scheme, host or port is foreign: no credentials.
local function resolve_url(self, call, path, level)
  local base = (call and call.base_url or self.base_url):gsub("/+$", "")
  if is_absolute(path) then
    local there = origin_of(path)
    return path, there == nil or there ~= origin_of(base)
  end
  local url = base .. "/" .. path:gsub("^/+", "")
  if authority_of(url) ~= authority_of(base) then
    error(("oai: path %q leaves base_url's host"):format(path), level + 1)
  end
  return url, false
end

---------------------------------------------------------------- requests

-- Start one attempt and wait for its headers (stream) or its end.
local function attempt(self, o, method, url, body, call, stream, key, foreign)
  local T = transport()
  local req = T.request {
    url = url,
    method = method,
    headers = header_table(self, call, key, stream and "text/event-stream" or "application/json", body ~= nil,
      foreign),
    body = body,
    stream = stream,
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
  if stream then
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

--- Send a request with the retry rules; returns the live request (for a 2xx
--- stream: headers in, body still arriving) or the finished one, or nil, err.
function Client:_send(method, path, body, call, stream)
  local o = options(self, call)
  local key = secrets[self]
  if call and call.api_key ~= nil then key = call.api_key end
  local url, foreign = resolve_url(self, call, path, 2)
  -- another origin gets the key only when this call passed it
  if foreign and call and call.api_key ~= nil then foreign = false end
  if foreign then key = nil end
  local t0 = monotime()
  local max_retries = o.max_retries or 0
  local n = 0
  while true do
    n = n + 1
    local req = attempt(self, o, method, url, body, call, stream, key, foreign)
    local done, ok, name, msg = req:result()
    local status = req:status()
    local err, retry
    if done and not ok and not (stream and status and status >= 200 and status <= 299) then
      err = transport_error(name, msg, key)
      retry = RETRYABLE_TRANSPORT[name] == true
    elseif status and (status < 200 or status > 299) then
      local headers = req:headers()
      err = status_error(status, headers, req:body(), key)
      retry = should_retry_status(status, headers)
      err.headers = headers
    end
    if not err then
      return req, n, t0
    end
    err.attempts = n
    if call and call.on_retry_check then retry = call.on_retry_check(err, retry) end
    if not retry or n > max_retries then
      err.headers = nil
      req:close()
      return nil, err
    end
    local delay = backoff(n, err.headers)
    err.headers = nil
    req:close()
    oai.sleep(delay)
  end
end

local function decode_body(req, key)
  local body = req:body()
  local doc, derr = json_decode(body)
  if doc == nil or type(doc) ~= "table" then
    local fields = {
      kind = "protocol",
      status = req:status(),
      request_id = req:header("x-request-id"),
      message = doc == nil and ("response is not valid JSON: " .. tostring(derr))
        or "response is not a JSON object",
      body = truncate(body, 2048),
    }
    return nil, errors.new(fields, key)
  end
  return doc
end

-- the response headers are parsed only when someone asks for them
local Meta = {
  __index = function(m, k)
    if k == "headers" then
      local h = {}
      for line in m._raw:gmatch("[^\r\n]+") do
        local name, value = line:match("^([^:]+):%s*(.-)%s*$")
        if name then
          name = name:lower()
          h[name] = h[name] and (h[name] .. ", " .. value) or value
        end
      end
      rawset(m, "headers", h)
      return h
    end
  end,
}

local function remember(doc, req, attempts, t0)
  if type(doc) == "table" then
    metadata[doc] = setmetatable({
      status = req:status(),
      _raw = req:raw_headers(),
      request_id = req:header("x-request-id"),
      attempts = attempts,
      elapsed = monotime() - t0,
    }, Meta)
  end
end

--- Response metadata of a decoded response: {status, headers, request_id,
--- attempts, elapsed}; nil for tables that did not come from a response.
---@param response table
---@return table?
function oai.meta(response)
  return metadata[response]
end

-- JSON-encode a request body; raises (programmer error) with the path
local function encode(body, level)
  if type(body) == "string" then return body end
  local ok, s = pcall(json_encode, body)
  if not ok then error(s, level + 1) end
  return s
end

local function json_call(self, method, path, body, call)
  local key = secrets[self]
  if call and call.api_key ~= nil then key = call.api_key end
  local req, attempts, t0 = self:_send(method, path, body, call, false)
  if not req then return fail(attempts) end
  local doc, err = decode_body(req, key)
  if doc then remember(doc, req, attempts, t0) end
  req:close()
  if err then
    err.attempts = attempts
    return fail(err)
  end
  return doc
end

--- POST /chat/completions (non-streamed).  A request with `stream = true`
--- is streamed and accumulated.
---@param request table the Chat Completions request, sent as given
---@param opts? table per-call options (any client option, `headers`)
---@return table? completion
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Client:chat(request, opts)
  if type(request) ~= "table" then error("client:chat: request must be a table", 2) end
  if request.stream == true and self.stream then
    local s, msg, err = self:stream(request, opts)
    if not s then return nil, msg, err end
    return s:result()
  end
  return json_call(self, "POST", "/chat/completions", encode(request, 2), opts)
end

-- base URLs whose servers refused stream_options (400/422 naming it)
local no_stream_options = {}

local function refuses_stream_options(err)
  if err.status ~= 400 and err.status ~= 422 then return false end
  if err.param == "stream_options" then return true end
  local text = tostring(err.message or "") .. " " .. tostring(err.body or "")
  return text:find("stream_options", 1, true) ~= nil
end

-- the body of a streamed request: a copy with stream = true (and
-- stream_options when usage is wanted and the server takes it)
local function stream_body(self, request, opts)
  local o = options(self, opts)
  local base = (opts and opts.base_url or self.base_url):gsub("/+$", "")
  local body = {}
  for k, v in pairs(request) do body[k] = v end
  body.stream = true
  local added_usage = false
  if o.stream_usage and body.stream_options == nil and not no_stream_options[base] then
    body.stream_options = { include_usage = true }
    added_usage = true
  end
  return body, added_usage, base, o
end

-- open the stream: POST, retries, the stream_options fallback
local function open_stream(self, body, json, added_usage, base, o, opts)
  local req, attempts, t0 = self:_send("POST", "/chat/completions", json, opts, true)
  if not req and added_usage and refuses_stream_options(attempts) then
    no_stream_options[base] = true
    body.stream_options = nil
    req, attempts, t0 = self:_send("POST", "/chat/completions", encode(body, 3), opts, true)
  end
  if not req then return fail(attempts) end
  local key = secrets[self]
  if opts and opts.api_key ~= nil then key = opts.api_key end
  local meta = { status = req:status(), _raw = req:raw_headers(),
                 request_id = req:header("x-request-id"), attempts = attempts }
  return stream_mod.new(req, {
    key = key, status = meta.status, request_id = meta.request_id, transport = transport(),
    grace = o.grace,
    remember = function(doc)
      local m = {}
      for k, v in pairs(meta) do m[k] = v end
      m.elapsed = monotime() - t0
      metadata[doc] = setmetatable(m, Meta)
    end,
  })
end

--- POST /chat/completions with stream = true.  Returns once the response
--- headers are in (HTTP errors come back as nil, err after the retries).
--- With callbacks (on_text, on_reasoning, on_tool_call, on_event, on_done)
--- it returns a handle at once (oai.handle: status, partial, result,
--- cancel) and a task opens the stream and feeds the callbacks.
---@param request table
---@param opts? table per-call options and callbacks
---@return oai.Stream|oai.StreamHandle|nil stream
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Client:stream(request, opts)
  if type(request) ~= "table" then error("client:stream: request must be a table", 2) end
  local body, added_usage, base, o = stream_body(self, request, opts)
  local json = encode(body, 2)   -- unencodable requests raise here, in the caller
  if handle_mod.has_callbacks(opts) then
    return handle_mod.start(function()
      return open_stream(self, body, json, added_usage, base, o, opts)
    end, opts, oai.spawn)
  end
  return open_stream(self, body, json, added_usage, base, o, opts)
end

--- GET /models -> array of model objects
---@return table? models
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Client:models(opts)
  local doc, msg, err = json_call(self, "GET", "/models", nil, opts)
  if not doc then return nil, msg, err end
  local data = doc.data
  if type(data) ~= "table" then
    return fail(errors.new({ kind = "protocol", message = "models response has no data array" }))
  end
  metadata[data] = metadata[doc]
  return data
end

--- GET an arbitrary path under base_url (or an absolute URL) -> decoded JSON
---@param path string
---@param opts? table per-call options
---@return any? decoded
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Client:get(path, opts)
  if type(path) ~= "string" then error("client:get: path must be a string", 2) end
  resolve_url(self, opts, path, 2)   -- raises here, in the caller, for a path leaving base_url
  return json_call(self, "GET", path, nil, opts)
end

--- POST a table (JSON-encoded) or a string body -> decoded JSON
---@param path string
---@param body? table|string
---@param opts? table per-call options
---@return any? decoded
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Client:post(path, body, opts)
  if type(path) ~= "string" then error("client:post: path must be a string", 2) end
  resolve_url(self, opts, path, 2)
  return json_call(self, "POST", path, body ~= nil and encode(body, 2) or "", opts)
end

-- helpers (issue #5): messages, conversation, tools, structured outputs.
-- Each module installs its functions into oai / Client.
for _, name in ipairs({ "oai.messages", "oai.conversation", "oai.tools", "oai.parse" }) do
  local ok, mod = pcall(require, name)
  if ok and type(mod) == "table" and mod.install then
    mod.install(oai, Client)
  elseif not ok and not tostring(mod):find("module '" .. name .. "' not found", 1, true) then
    error(mod, 0)
  end
end


return oai
