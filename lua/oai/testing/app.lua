--- The oai.testing server: an OpenAI-compatible peer that runs inside nginx's LuaJIT
-- (lua-nginx-module). It is independent of the library under test: it never requires
-- `oai` or `oai.core`. Its prefix directory (nginx -p) holds everything it shares with
-- the test process (see lua/oai/testing.lua):
--   requests.log   one Lua table constructor per line, appended before responding
--   epoch          bumped by srv:clear(); request and fail-times counters are per epoch
--   scripts/N.lua  `return { steps }` for x-test-script: N
-- Behaviour is chosen by the request: the model (chat.lua) and x-test-* headers.
local json = require "oai.testing.json"
local chat = require "oai.testing.chat"

local ngx = ngx
local null = json.null

local CREATED = 1700000000
local FINGERPRINT = "fp_test"
local DICT = "oai_testing"

local app = {}

local MODELS = { "test-model", "reasoner", "tools", "structured" }

local REASONS = {
  [200] = "OK", [201] = "Created", [400] = "Bad Request", [401] = "Unauthorized",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [408] = "Request Timeout", [409] = "Conflict", [413] = "Payload Too Large",
  [422] = "Unprocessable Entity", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [502] = "Bad Gateway", [503] = "Service Unavailable",
  [504] = "Gateway Timeout",
}

local ERROR_TYPES = {
  [400] = "invalid_request_error", [401] = "authentication_error", [403] = "permission_error",
  [404] = "not_found_error", [409] = "conflict_error", [422] = "invalid_request_error",
  [429] = "requests",
}

local function error_type(status)
  return ERROR_TYPES[status] or (status >= 500 and "server_error") or "invalid_request_error"
end

-- Lua literals on one line: control bytes, quote and backslash as \ddd or \" \\; every
-- other byte (UTF-8 or not) stays raw, which Lua's lexer accepts in all versions.
local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\127"] = "\\127" }
for i = 0, 31 do ESCAPES[string.char(i)] = string.format("\\%03d", i) end

local function quote(s)
  return '"' .. s:gsub('[%z\1-\31"\\\127]', ESCAPES) .. '"'
end

local read_file = require("oai.testing.proc").read_file

-- milliseconds from a header, or nil
local function ms(value)
  local n = tonumber(value)
  if n and n > 0 then return n end
  return nil
end

-- Closes the connection at once, whatever has been sent (HTTP/2: resets the stream).
local function abort()
  ngx.flush(true)
  return ngx.exit(444)
end

local function record(ctx)
  local hs = {}
  for k, v in pairs(ctx.headers) do hs[#hs + 1] = "[" .. quote(k) .. "]=" .. quote(v) end
  table.sort(hs)
  local line = table.concat({
    "{n=", string.format("%d", ctx.n),
    ",request_id=", quote(ctx.request_id),
    ",method=", quote(ctx.method),
    ",path=", quote(ctx.path),
    ",query=", quote(ctx.query),
    ",headers={", table.concat(hs, ","), "}",
    ",body=", quote(ctx.body),
    ",connection=", string.format("%d", tonumber(ngx.var.connection) or 0),
    ",connection_requests=", string.format("%d", tonumber(ngx.var.connection_requests) or 0),
    ",protocol=", quote(ngx.var.server_protocol or ""),
    ",scheme=", quote(ngx.var.scheme or ""),
    ",time=", string.format("%.3f", ngx.now()),
    "}\n",
  })
  local f = assert(io.open(ctx.dir .. "requests.log", "ab"))
  f:setvbuf("no") -- one write(2) per record: lines of concurrent workers do not interleave
  f:write(line)
  f:close()
end

local function request_context()
  local dir = ngx.config.prefix()
  if dir:sub(-1) ~= "/" then dir = dir .. "/" end
  local epoch = (read_file(dir .. "epoch") or "0"):match("%d+") or "0"
  local n = ngx.shared[DICT]:incr("n:" .. epoch, 1, 0)

  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  if not body then
    local file = ngx.req.get_body_file()
    body = file and read_file(file) or ""
  end

  local headers = {}
  for k, v in pairs(ngx.req.get_headers(0)) do
    if type(v) == "table" then v = table.concat(v, ", ") end
    headers[k] = v
  end

  local uri = ngx.var.request_uri or ngx.var.uri
  return {
    dir = dir, epoch = epoch, n = n, request_id = "req_test_" .. n,
    method = ngx.req.get_method(), path = uri:match("^[^?]*"), query = ngx.var.args or "",
    headers = headers, body = body, ok_status = 200,
  }
end

-- Sends a whole body with Content-Length, honouring x-test-stall-ms and x-test-drop.
local function send_body(ctx, status, content_type, body)
  ngx.status = status
  ngx.header["content-type"] = content_type
  ngx.header["content-length"] = #body
  local drop = ctx.headers["x-test-drop"]
  drop = drop == "mid-body" or drop == "mid-stream"
  local stall = ms(ctx.headers["x-test-stall-ms"])
  if not drop and not stall then
    ngx.print(body)
    return
  end
  local half = math.floor(#body / 2)
  ngx.send_headers()
  ngx.print(body:sub(1, half))
  ngx.flush(true)
  if drop then return abort() end
  ngx.sleep(stall / 1000)
  ngx.print(body:sub(half + 1))
end

local function send_json(ctx, status, value)
  return send_body(ctx, status, "application/json", json.encode(value))
end

local function send_error(ctx, status, message, etype, param, code)
  return send_json(ctx, status, { error = {
    message = message, type = etype or error_type(status), param = param or null, code = code or null,
  } })
end

-- x-test-status (and x-test-fail-times): the failure itself.
local function send_test_error(ctx, status)
  if ctx.headers["x-test-envelope"] == "0" then
    local title = status .. " " .. (REASONS[status] or "Error")
    return send_body(ctx, status, "text/html", "<html><body><h1>" .. title .. "</h1></body></html>")
  end
  return send_error(ctx, status, "Test error " .. status, error_type(status), nil,
    status == 429 and "rate_limit_exceeded" or nil)
end

local function model_object(id)
  return { id = id, object = "model", created = CREATED, owned_by = "oai-testing" }
end

---------------------------------------------------------------------------- scripts

local function load_script(ctx, name)
  if not name:match("^[%w_%.%-]+$") then return nil end
  local fn = loadfile(ctx.dir .. "scripts/" .. name .. ".lua")
  if not fn then return nil end
  setfenv(fn, {})
  local ok, steps = pcall(fn)
  if ok and type(steps) == "table" then return steps end
  return nil
end

local function play_script(ctx, steps)
  local status, headers, first = 200, { ["content-type"] = "text/event-stream" }, 1
  local head = steps[1]
  if type(head) == "table" and (head.status or head.headers) then
    status = head.status or 200
    for k, v in pairs(head.headers or {}) do headers[k:lower()] = v end
    first = 2
  end
  ngx.status = status
  for k, v in pairs(headers) do ngx.header[k] = v end
  ngx.send_headers()
  ngx.flush(true)
  for i = first, #steps do
    local step = steps[i]
    if step.send then
      ngx.print(step.send)
    elseif step.flush then
      ngx.flush(true)
    elseif step.sleep_ms then
      ngx.flush(true)
      ngx.sleep(step.sleep_ms / 1000)
    elseif step.close then
      return abort()
    end
  end
end

---------------------------------------------------------------------------- chat

local function chunk_base(ctx, req, include_usage, choices)
  return {
    id = "chatcmpl-test-" .. ctx.n, object = "chat.completion.chunk", created = CREATED,
    model = req.model, system_fingerprint = FINGERPRINT, choices = choices,
    usage = include_usage and null or nil,
  }
end

-- UTF-8-safe fragments of about `size` bytes (OpenAI streams tool arguments in pieces)
local fragments = chat.pieces_of

local function send_stream(ctx, req, plan)
  local h = ctx.headers
  local include_usage = type(req.stream_options) == "table" and req.stream_options.include_usage == true
  local delay, stall = ms(h["x-test-chunk-delay-ms"]), ms(h["x-test-stall-ms"])
  local drop = h["x-test-drop"] == "mid-stream" or h["x-test-drop"] == "mid-body"

  ngx.status = ctx.ok_status
  ngx.header["content-type"] = "text/event-stream"
  ngx.header["cache-control"] = "no-cache"
  ngx.send_headers()

  -- x-test-bench: 1 without delays: build every event first, then send the whole body in
  -- one print, so a benchmark client gets full reads and the server's per-event flush
  -- (a write(2) each) neither dominates nor paces the client.  Content events are built
  -- from one template around the encoded text: LuaJIT 2.1.0-beta3 hashes only a few bytes
  -- of a long string, so 20,000 distinct near-identical event strings would take O(n^2).
  local batch = h["x-test-bench"] == "1" and not delay and not stall and not drop and {} or nil
  local function emit(value)
    if batch then
      local d = value.choices[1] and value.choices[1].delta
      local text = d and d.content
      if type(text) == "string" and next(d, next(d)) == nil then
        d.content = "\1oai-bench\1"
        local s = "data: " .. json.encode(value) .. "\n\n"
        d.content = text
        local a, b = s:find(json.encode("\1oai-bench\1"), 1, true)
        batch[#batch + 1] = { s:sub(1, a - 1), json.encode(text), s:sub(b + 1) }
      else
        batch[#batch + 1] = "data: " .. json.encode(value) .. "\n\n"
      end
      return true
    end
    local ok = ngx.print("data: ", json.encode(value), "\n\n")
    return ok and ngx.flush(true)
  end
  local function choice(index, delta, finish)
    return { index = index, delta = delta, logprobs = null, finish_reason = finish or null }
  end

  local queues = {}
  for i, c in ipairs(plan.choices) do
    local role = { role = "assistant", content = c.content and "" or null }
    if not emit(chunk_base(ctx, req, include_usage, { choice(i - 1, role) })) then return end
    local q = {}
    if c.reasoning then
      for _, p in ipairs(chat.split_words(c.reasoning)) do q[#q + 1] = { reasoning_content = p } end
    end
    for _, p in ipairs(c.pieces or {}) do q[#q + 1] = { content = p } end
    if c.refusal then
      for _, p in ipairs(chat.split_words(c.refusal)) do q[#q + 1] = { refusal = p } end
    end
    for k, call in ipairs(c.tool_calls or {}) do
      if type(call.arguments) == "table" then
        -- arguments as a JSON object (some providers), in one piece
        q[#q + 1] = { tool_calls = { { index = k - 1, id = call.id, type = "function",
          ["function"] = { name = call.name, arguments = call.arguments } } } }
      else
        q[#q + 1] = { tool_calls = { { index = k - 1, id = call.id, type = "function",
          ["function"] = { name = call.name, arguments = "" } } } }
        for _, frag in ipairs(fragments(call.arguments, 8)) do
          q[#q + 1] = { tool_calls = { { index = k - 1, ["function"] = { arguments = frag } } } }
        end
      end
    end
    queues[i] = q
  end

  -- delta chunks, choices interleaved
  local sent, pos = 0, 1
  while true do
    local any = false
    for i, q in ipairs(queues) do
      local delta = q[pos]
      if delta then
        any = true
        if sent > 0 and delay then ngx.sleep(delay / 1000) end
        if not emit(chunk_base(ctx, req, include_usage, { choice(i - 1, delta) })) then return end
        sent = sent + 1
        if sent == 1 and stall then ngx.sleep(stall / 1000) end
        if sent == 2 and drop then return abort() end
      end
    end
    if not any then break end
    pos = pos + 1
  end
  if drop then return abort() end

  for i, c in ipairs(plan.choices) do
    if not emit(chunk_base(ctx, req, include_usage, { choice(i - 1, {}, c.finish_reason) })) then return end
  end
  if include_usage then
    local last = chunk_base(ctx, req, false, json.empty_array)
    last.usage = chat.usage(req, plan)
    if not emit(last) then return end
  end
  if batch then
    batch[#batch + 1] = "data: [DONE]\n\n"
    ngx.print(batch)
  else
    ngx.print("data: [DONE]\n\n")
  end
  ngx.flush(true)
end

local function completion(ctx, req, plan)
  local choices = {}
  for i, c in ipairs(plan.choices) do
    local message = { role = "assistant", content = c.content or null, refusal = c.refusal or null }
    if c.reasoning then message.reasoning_content = c.reasoning end
    if c.tool_calls then
      message.tool_calls = {}
      for k, call in ipairs(c.tool_calls) do
        message.tool_calls[k] = { id = call.id, type = "function",
          ["function"] = { name = call.name, arguments = call.arguments } }
      end
    end
    choices[i] = { index = i - 1, message = message, logprobs = null, finish_reason = c.finish_reason }
  end
  return {
    id = "chatcmpl-test-" .. ctx.n, object = "chat.completion", created = CREATED,
    model = req.model, system_fingerprint = FINGERPRINT, choices = choices,
    usage = chat.usage(req, plan),
  }
end

local function chat_completions(ctx)
  local req = json.decode(ctx.body)
  if type(req) ~= "table" or req[1] ~= nil then
    return send_error(ctx, 400, "We could not parse the JSON body of your request. (HINT: This "
      .. "likely means you aren't using your HTTP library correctly. The OpenAI API expects a "
      .. "JSON payload, but what was sent was not valid JSON.)", "invalid_request_error")
  end
  if type(req.model) ~= "string" then
    return send_error(ctx, 400, "you must provide a model parameter", "invalid_request_error")
  end
  if type(req.messages) ~= "table" then
    return send_error(ctx, 400, "Missing required parameter: 'messages'.", "invalid_request_error",
      "messages", "missing_required_parameter")
  end
  ctx.chunks = tonumber(ctx.headers["x-test-chunks"])
  if ctx.chunks then ctx.chunks = math.max(0, math.floor(ctx.chunks)) end
  local plan, err = chat.plan(req, ctx)
  if not plan then
    return send_error(ctx, err.status or 400, err.message, err.type, err.param, err.code)
  end
  if req.stream == true then return send_stream(ctx, req, plan) end
  return send_json(ctx, ctx.ok_status, completion(ctx, req, plan))
end

---------------------------------------------------------------------------- sized bodies

local PAD = string.rep("x", 65536)

-- x-test-body-bytes: N -> a chat.completion of exactly N bytes (at least its skeleton),
-- sent in 64 KiB pieces.
local function send_sized(ctx, size)
  local req = json.decode(ctx.body)
  local model = type(req) == "table" and type(req.model) == "string" and req.model or "test-model"
  local marker = "OAI_TESTING_PADDING"
  local plan = { choices = { { content = marker, finish_reason = "stop" } } }
  local body = json.encode(completion(ctx, { model = model, messages = {} }, plan))
  local at = body:find('"' .. marker .. '"', 1, true)
  local prefix, suffix = body:sub(1, at), body:sub(at + #marker + 1)
  local pad = math.max(0, size - #prefix - #suffix)
  ngx.status = 200
  ngx.header["content-type"] = "application/json"
  ngx.header["content-length"] = #prefix + pad + #suffix
  ngx.print(prefix)
  while pad > 0 do
    local piece = pad >= #PAD and PAD or PAD:sub(1, pad)
    pad = pad - #piece
    ngx.print(piece)
    if not ngx.flush(true) then return end
  end
  ngx.print(suffix)
end

---------------------------------------------------------------------------- entry

local function route(ctx)
  local method, path = ctx.method, ctx.path
  if path == "/v1/chat/completions" and method == "POST" then
    return chat_completions(ctx)
  elseif path == "/v1/models" and method == "GET" then
    local data = {}
    for i, id in ipairs(MODELS) do data[i] = model_object(id) end
    return send_json(ctx, ctx.ok_status, { object = "list", data = data })
  elseif path:sub(1, 11) == "/v1/models/" and method == "GET" then
    local id = ngx.unescape_uri(path:sub(12))
    for _, known in ipairs(MODELS) do
      if known == id then return send_json(ctx, ctx.ok_status, model_object(id)) end
    end
    return send_error(ctx, 404, "The model '" .. id .. "' does not exist", "invalid_request_error",
      "model", "model_not_found")
  elseif path == "/v1/echo" then
    return send_json(ctx, ctx.ok_status, { method = method, path = path, query = ctx.query,
      body = ctx.body, headers = ctx.headers })
  end
  return send_error(ctx, 404, "Unknown request URL: " .. method .. " " .. path
    .. ". Please check the URL for typos, or see the docs at https://platform.openai.com/docs/api-reference/.",
    "invalid_request_error", nil, "unknown_url")
end

--- content_by_lua entry point for every request.
function app.handle()
  local ctx = request_context()
  record(ctx)
  local h = ctx.headers

  ngx.header["x-request-id"] = ctx.request_id
  if h["x-test-retry-after"] then ngx.header["retry-after"] = h["x-test-retry-after"] end
  if h["x-test-retry-after-ms"] then ngx.header["retry-after-ms"] = h["x-test-retry-after-ms"] end
  if h["x-test-should-retry"] then ngx.header["x-should-retry"] = h["x-test-should-retry"] end

  local delay = ms(h["x-test-delay-ms"])
  if delay then ngx.sleep(delay / 1000) end
  if h["x-test-drop"] == "before-headers" then return ngx.exit(444) end

  local status = tonumber(h["x-test-status"])
  if status then status = math.floor(status) end
  local fail_times = tonumber(h["x-test-fail-times"])
  if fail_times then
    local key = "fail:" .. ctx.epoch .. ":" .. (h["x-test-key"] or "")
    if ngx.shared[DICT]:incr(key, 1, 0) <= fail_times then
      return send_test_error(ctx, status or 500)
    end
  elseif status and status >= 400 then
    return send_test_error(ctx, status)
  elseif status and status >= 100 then
    ctx.ok_status = status
  end

  if h["x-test-script"] then
    local steps = load_script(ctx, h["x-test-script"])
    if not steps then
      return send_error(ctx, 500, "No such test script: " .. h["x-test-script"], "server_error")
    end
    return play_script(ctx, steps)
  end

  local size = tonumber(h["x-test-body-bytes"])
  if size then return send_sized(ctx, math.floor(size)) end

  return route(ctx)
end

return app
