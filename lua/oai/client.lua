--- oai.client: the Client type: options, headers, URLs, credentials, and
--- the requests (chat, stream, models, get, post).
---
--- The API key and the header tables that carry it live in side tables
--- keyed by the client (weak), never in the client table itself: printing
--- or serialising a client must not reveal the key.  Attempts and retries
--- are oai.send's; errors are oai.errors'.
local core = require "oai.native"
local errors = require "oai.errors"
local send = require "oai.send"
local transport = require "oai.transport"
local reply = require "oai.reply"
local stream_mod = require "oai.stream"
local handle_mod = require "oai.handle"
local structured = require "oai.structured"

local fail = errors.fail
local json_encode, json_decode = core.json_encode, core.json_decode
local monotime = core.monotime
local type, pairs, tostring, tonumber, setmetatable, error, pcall, rawset =
  type, pairs, tostring, tonumber, setmetatable, error, pcall, rawset
local floor = math.floor

local M = {}

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
M.Client = Client

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
function M.new(opts)
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
M.origin_of = origin_of

local function is_absolute(path)
  return path:match("^[hH][tT][tT][pP][sS]?://") ~= nil
end

-- The URL for path and whether it leaves base_url's origin.  A relative
-- path is joined under base_url (base .. "/" .. path without its leading
-- slashes) and must keep base_url's authority (raises otherwise); an
-- absolute URL on another scheme, host or port is foreign: no credentials.
local url_cache = setmetatable({}, { __mode = "k" })   -- client -> { [path] = url }

local function resolve_url(self, call, path, level)
  local own = not (call and call.base_url)
  if own then
    -- the usual case: a relative path under the client's own base_url
    local cache = url_cache[self]
    local url = cache and cache.urls[path]
    if url and cache.base == self.base_url then return url, false end
  end
  local base = (call and call.base_url or self.base_url):gsub("/+$", "")
  if is_absolute(path) then
    local there = origin_of(path)
    return path, there == nil or there ~= origin_of(base)
  end
  local url = base .. "/" .. path:gsub("^/+", "")
  if authority_of(url) ~= authority_of(base) then
    error(("oai: path %q leaves base_url's host"):format(path), level + 1)
  end
  if own then
    local cache = url_cache[self]
    if not cache or cache.base ~= self.base_url or cache.n >= 64 then
      cache = { base = self.base_url, n = 0, urls = {} }
      url_cache[self] = cache
    end
    if not cache.urls[path] then cache.urls[path] = url; cache.n = cache.n + 1 end
  end
  return url, false
end

---------------------------------------------------------------- requests

-- the key a call uses: the call's own api_key, else the client's
local function key_of(self, call)
  if call and call.api_key ~= nil then return call.api_key end
  return secrets[self]
end

-- send with the retry rules (oai.send): req, attempts, t0 | nil, err
local function send_call(self, method, path, body, call, stream)
  local key = key_of(self, call)
  local url, foreign = resolve_url(self, call, path, 2)
  -- another origin gets the key only when this call passed it
  if foreign and call and call.api_key ~= nil then foreign = false end
  if foreign then key = nil end
  local accept = stream and "text/event-stream" or "application/json"
  return send.send(options(self, call), {
    method = method, url = url, body = body, stream = stream, key = key,
    headers = header_table(self, call, key, accept, body ~= nil, foreign),
  })
end

local function decode_body(req, key)
  local body = req:body()
  local doc, derr = json_decode(body)
  if type(doc) ~= "table" then
    return nil, errors.from_body(req:status(), req:header("x-request-id"), body, doc, derr, key)
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
function M.meta(response)
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
  local key = key_of(self, call)
  local req, attempts, t0 = send_call(self, method, path, body, call, false)
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
  if request.stream == true then return reply.ask(self, request, opts, true) end
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
  local req, attempts, t0 = send_call(self, "POST", "/chat/completions", json, opts, true)
  if not req and added_usage and refuses_stream_options(attempts) then
    no_stream_options[base] = true
    body.stream_options = nil
    req, attempts, t0 = send_call(self, "POST", "/chat/completions", encode(body, 3), opts, true)
  end
  if not req then return fail(attempts) end
  local key = key_of(self, opts)
  local meta = { status = req:status(), _raw = req:raw_headers(),
                 request_id = req:header("x-request-id"), attempts = attempts }
  return stream_mod.new(req, {
    key = key, status = meta.status, request_id = meta.request_id, transport = transport.current(),
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
    end, opts, transport.spawn)
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
    return fail(errors.protocol("models response has no data array"))
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

-- client:parse (structured outputs) is documented in oai.structured
Client.parse = structured.parse

return M
