-- examples/openresty/proxy.lua: a streaming OpenAI-compatible proxy inside nginx
-- (the handlers of examples/openresty/nginx.conf; see docs/openresty.md).
-- Clients call nginx without a key; nginx adds $OPENAI_API_KEY, applies its own
-- rules (here: a max_tokens cap) and re-streams the upstream's events as they arrive,
-- through oai's cosocket transport: the worker never blocks, whatever the upstream does.
--
--   POST /v1/chat/completions   same request and response shapes as the upstream,
--                               "stream": true re-streamed event by event
--   GET  /v1/models             the upstream's model list
--   GET  /chat?q=hello          the reply as plain text, streamed
local oai = require "oai"

local ngx = ngx
local json_encode, json_decode = oai.json.encode, oai.json.decode

local M = {}

local MAX_TOKENS = 4096   -- the proxy's own rule: no request may ask for more

-- one client per worker: $OPENAI_BASE_URL and $OPENAI_API_KEY (the `env` lines in
-- nginx.conf pass them to the workers)
local client
local function get_client()
  if not client then client = oai.new { max_retries = 2, timeout = 300, idle_timeout = 120 } end
  return client
end

local function send_json(status, doc)
  ngx.status = status
  ngx.header["content-type"] = "application/json"
  ngx.print(json_encode(doc))
  return ngx.exit(status)
end

-- an oai error as an OpenAI error response: the upstream's status and envelope when
-- it sent one, else 504 for timeouts and 502 for the rest
local function send_error(err)
  local status = err.status or (err.kind == "timeout" and 504) or 502
  return send_json(status, { error = {
    message = err.message,
    type = err.type or ("upstream_" .. tostring(err.kind)),
    code = err.code or err.name or oai.null,
    param = err.param or oai.null,
  } })
end

local function read_json_body()
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()   -- bodies over client_body_buffer_size
    if file then
      local f = io.open(file, "rb")
      if f then body = f:read("*a"); f:close() end
    end
  end
  local doc = body and json_decode(body)
  if type(doc) ~= "table" then return nil end
  return doc
end

--- POST /v1/chat/completions
function M.completions()
  if ngx.req.get_method() ~= "POST" then
    return send_json(405, { error = { message = "use POST", type = "invalid_request_error" } })
  end
  local req = read_json_body()
  if not req then
    return send_json(400, { error = { message = "the body must be a JSON object", type = "invalid_request_error" } })
  end
  if type(req.max_tokens) ~= "number" or req.max_tokens > MAX_TOKENS then req.max_tokens = MAX_TOKENS end

  if req.stream ~= true then
    local res, _, err = get_client():chat(req)
    if not res then return send_error(err) end
    ngx.header["content-type"] = "application/json"
    return ngx.print(json_encode(res))
  end

  -- errors before the first byte still get a proper status
  local stream, _, err = get_client():stream(req)
  if not stream then return send_error(err) end
  ngx.header["content-type"] = "text/event-stream"
  ngx.header["cache-control"] = "no-cache"
  ngx.header["x-accel-buffering"] = "no"
  for chunk in stream:chunks() do
    -- with lua_check_client_abort on, nginx ends this handler (and so the upstream
    -- request) when the client goes away; a failed write stops it too
    if not ngx.print("data: ", json_encode(chunk), "\n\n") or not ngx.flush(true) then
      stream:cancel()
      return
    end
  end
  local _, _, serr = stream:result()
  if serr then
    ngx.log(ngx.ERR, "oai: upstream stream failed: ", tostring(serr))
    -- the headers are gone: the error travels as an event, as OpenAI sends them
    ngx.print("data: ", json_encode { error = { message = serr.message,
      type = serr.type or ("upstream_" .. tostring(serr.kind)), code = serr.code or serr.name or oai.null } }, "\n\n")
  end
  ngx.print("data: [DONE]\n\n")
  ngx.flush(true)
end

--- GET /v1/models
function M.models()
  local models, _, err = get_client():models()
  if not models then return send_error(err) end
  return send_json(200, { object = "list", data = models })
end

--- GET /chat?q=...&model=...  the reply as plain streamed text
function M.chat()
  local args = ngx.req.get_uri_args()
  local q = type(args.q) == "string" and args.q or "Say hello."
  local model = type(args.model) == "string" and args.model or os.getenv("OAI_MODEL") or "gpt-4o-mini"
  local stream, err = get_client():stream { model = model, messages = { { role = "user", content = q } } }
  if not stream then return send_error(err) end
  ngx.header["content-type"] = "text/plain; charset=utf-8"
  for text in stream:text() do
    if not ngx.print(text) or not ngx.flush(true) then
      stream:cancel()
      return
    end
  end
  local _, _, serr = stream:result()
  if serr then
    -- the 200 is gone: log why, and tell the reader the text is cut
    ngx.log(ngx.ERR, "oai: upstream stream failed: ", tostring(serr))
    ngx.print("\n[error: ", serr.message, "]")
  end
  ngx.print("\n")
end

return M
