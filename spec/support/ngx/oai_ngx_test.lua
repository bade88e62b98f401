-- Handlers of the nginx that spec/ngx_spec.lua starts (spec/support/ngx/nginx.conf).
-- They run inside nginx's LuaJIT and use oai with the oai.ngx transport to call the
-- local OpenAI-compatible server (oai.testing), then answer the test's curl.
--
-- Loaded on first use in each worker (no init_by_lua preload, as docs/openresty.md
-- lets users do): before requiring oai it makes oai.core.request and oai.core.multi
-- raise and count their calls in the shared dict (GET /libcurl reads the count): no
-- code path may reach libcurl here.  The upstream's URLs come from the environment
-- (the `env` lines of nginx.conf), readable in every phase.
local M = {}

local ngx = ngx
local dict = ngx.shared.oai_ngx_test
local cfg = { url = os.getenv("OAI_NGX_TEST_UPSTREAM"), tls_url = os.getenv("OAI_NGX_TEST_TLS_UPSTREAM") }

local oai
do
  local core = require "oai.native"   -- the core, found as a user's require "oai" finds it
  local function forbidden(name)
    return function()
      dict:incr("libcurl_calls", 1, 0)
      error("oai.core." .. name .. " called inside nginx (libcurl must never run in a worker)", 2)
    end
  end
  -- before oai is loaded, so its curl transport captures the guards too
  core.request = forbidden("request")
  core.multi = forbidden("multi")
  oai = require "oai"
end

local function args()
  return ngx.req.get_uri_args()
end

local function new_client(extra)
  local o = { base_url = cfg.url, api_key = "sk-ngx-test-key", max_retries = 0, timeout = 30 }
  for k, v in pairs(extra or {}) do o[k] = v end
  return oai.new(o)
end

local function fail(status, err)
  ngx.status = status
  ngx.print("ERROR: ", tostring(err))
  return ngx.exit(status)
end

local function user_request(model, text)
  return { model = model, messages = { { role = "user", content = text } } }
end

---------------------------------------------------------------- the required locations

-- GET /chat?q=  non-streamed chat, prints the content
function M.chat()
  local res, _, err = new_client():chat(user_request(args().model or "test-model", args().q or "hi"))
  if not res then return fail(502, err) end
  ngx.print(res.choices[1].message.content)
end

-- GET /stream?q=&delay=&chunks=  re-streams each content delta as it arrives
function M.stream()
  local a = args()
  local headers = {}
  if a.delay then headers["x-test-chunk-delay-ms"] = a.delay end
  if a.chunks then headers["x-test-chunks"] = a.chunks end
  local s, _, err = new_client():stream(user_request(a.model or "test-model", a.q or "hi"), { headers = headers })
  if not s then return fail(502, err) end
  ngx.header["content-type"] = "text/plain"
  for text in s:text() do
    ngx.print(text)
    ngx.flush(true)
  end
  local res, _, rerr = s:result()
  if not res then ngx.print("\nERROR: ", tostring(rerr)) end
end

local WEATHER = {
  type = "function",
  ["function"] = {
    name = "get_weather",
    description = "Weather in a city",
    parameters = { type = "object", properties = { query = { type = "string" } } },
  },
}

-- GET /tools?q=&impl=manual|oai  a tool loop: the model calls get_weather, we answer,
-- ask again, print the final text
function M.tools()
  local client = new_client()
  local q = args().q or "weather in Paris?"
  local function weather(a) return "sunny in " .. tostring(a.query) end
  if oai.tools and args().impl ~= "manual" then
    local toolset = oai.tools {
      get_weather = {
        description = "Weather in a city",
        parameters = { type = "object", properties = { query = { type = "string" } } },
        handler = weather,
      },
    }
    local before = dict:get("libcurl_calls") or 0
    local ok, final, err = pcall(toolset.run, toolset, client, user_request("tools", q),
      { stream = args().stream == "1", parallel = args().parallel == "1" })
    ngx.header["x-libcurl"] = (dict:get("libcurl_calls") or 0) - before
    if not ok then return fail(500, final) end
    if not final then return fail(502, err) end
    ngx.header["x-tools-impl"] = "oai.tools"
    return ngx.print(final.choices[1].message.content)
  end
  -- by hand
  local msgs = { { role = "user", content = q } }
  for _ = 1, 4 do
    local res, _, err = client:chat { model = "tools", messages = msgs, tools = { WEATHER } }
    if not res then return fail(502, err) end
    local msg = res.choices[1].message
    if not msg.tool_calls then
      ngx.header["x-tools-impl"] = "manual"
      return ngx.print(msg.content)
    end
    msgs[#msgs + 1] = msg
    for _, call in ipairs(msg.tool_calls) do
      local a = oai.json.decode(call["function"].arguments)
      msgs[#msgs + 1] = { role = "tool", tool_call_id = call.id, content = weather(a) }
    end
  end
  return fail(500, "too many rounds")
end

-- GET /tls  a chat over HTTPS, verified with lua_ssl_trusted_certificate
function M.tls()
  local url = args().url or cfg.tls_url
  local client = new_client { base_url = url, verify = args().verify ~= "0" }
  local res, _, err = client:chat(user_request("test-model", args().q or "over tls"))
  if not res then
    ngx.status = 502
    return ngx.print("ERROR ", tostring(err and err.name), ": ", tostring(err))
  end
  ngx.print(res.choices[1].message.content)
end

---------------------------------------------------------------- probes: JSON in, JSON out

local function err_table(err)
  if err == nil then return nil end
  if type(err) ~= "table" then return { message = tostring(err), raised = true } end
  return { kind = err.kind, name = err.name, message = err.message, status = err.status,
           attempts = err.attempts, text = tostring(err),
           partial = err.partial and err.partial.choices and err.partial.choices[1]
             and err.partial.choices[1].message.content or nil }
end

local function content_of(res)
  local ch = res and res.choices and res.choices[1]
  return ch and ch.message and ch.message.content
end

local PROBES = {}

function PROBES.chat(client, p)
  local res, _, err = client:chat(p.request, p.call)
  return { content = content_of(res), err = err_table(err),
           meta = res and oai.meta(res) and { attempts = oai.meta(res).attempts, status = oai.meta(res).status } }
end

function PROBES.stream(client, p)
  local s, _, err = client:stream(p.request, p.call)
  if not s then return { err = err_table(err) } end
  local texts = {}
  for text in s:text() do texts[#texts + 1] = text end
  local res, _, rerr = s:result()
  return { deltas = texts, content = content_of(res), err = err_table(rerr),
           usage = res and res.usage }
end

function PROBES.events(client, p)
  local s, _, err = client:stream(p.request, p.call)
  if not s then return { err = err_table(err) } end
  local evs = {}
  for ev in s:events() do evs[#evs + 1] = ev.type .. ":" .. tostring(ev.text or ev.name or ev.reason or "") end
  local res, _, rerr = s:result()
  return { events = evs, content = content_of(res), err = err_table(rerr),
           reasoning = res and res.choices[1].message.reasoning_content,
           tool_calls = res and res.choices[1].message.tool_calls }
end

function PROBES.chunks(client, p)
  local s, _, err = client:stream(p.request, p.call)
  if not s then return { err = err_table(err) } end
  local n = 0
  for chunk in s:chunks() do if chunk.object == "chat.completion.chunk" then n = n + 1 end end
  local res, _, rerr = s:result()
  return { chunks = n, content = content_of(res), err = err_table(rerr) }
end

function PROBES.cancel(client, p)
  local s, _, err = client:stream(p.request, p.call)
  if not s then return { err = err_table(err) } end
  local got = {}
  for text in s:text() do
    got[#got + 1] = text
    if #got == (p.after or 2) then s:cancel() end
  end
  local res, _, rerr = s:result()
  return { deltas = got, content = content_of(res), err = err_table(rerr) }
end

-- two light threads on one stream: text() in one, result() in the other
function PROBES.shared_stream(client, p)
  local s, _, err = client:stream(p.request, p.call)
  if not s then return { err = err_table(err) } end
  local texts = {}
  local a = ngx.thread.spawn(function()
    local ok, e = pcall(function() for t in s:text() do texts[#texts + 1] = t end end)
    return ok or tostring(e)
  end)
  local b = ngx.thread.spawn(function()
    local ok, res, rerr = pcall(s.result, s)
    if not ok then return { raised = tostring(res) } end
    return { content = content_of(res), err = err_table(rerr) }
  end)
  local _, text_ok = ngx.thread.wait(a)
  local _, r = ngx.thread.wait(b)
  r = r or {}
  r.text_ok, r.deltas = text_ok, texts
  return r
end

function PROBES.models(client)
  local models, _, err = client:models()
  if not models then return { err = err_table(err) } end
  local ids = {}
  for i, m in ipairs(models) do ids[i] = m.id end
  return { ids = ids }
end

function PROBES.callbacks(client, p)
  local texts, done_res, done_err = {}, nil, nil
  local call = { on_text = function(t) texts[#texts + 1] = t end,
                 on_done = function(res, err) done_res, done_err = res, err end }
  for k, v in pairs(p.call or {}) do call[k] = v end
  local s = client:stream(p.request, call)
  local res, _, err = s:result()
  return { deltas = texts, content = content_of(res), err = err_table(err),
           on_done = content_of(done_res), on_done_err = err_table(done_err) }
end

-- cancel a callback stream from the handler's own thread while its task reads
function PROBES.callbacks_cancel(client, p)
  local texts, done_err = {}, nil
  local s = client:stream(p.request, { headers = p.call and p.call.headers,
    on_text = function(t) texts[#texts + 1] = t end,
    on_done = function(_, err) done_err = err end })
  ngx.sleep(p.cancel_after or 0.1)
  local t0 = ngx.now()
  s:cancel()
  local res, _, err = s:result()
  ngx.update_time()
  return { deltas = texts, content = content_of(res), err = err_table(err), on_done_err = err_table(done_err),
           wait_after_cancel = ngx.now() - t0 }
end

-- the handle of a callback stream: status, tostring, partial, iterators raise
function PROBES.handle(client, p)
  local seen, h = {}, nil
  h = client:stream(p.request, { headers = p.call and p.call.headers,
    on_text = function() seen[#seen + 1] = h:status() .. " " .. tostring(content_of(h:partial())) end })
  local r = { first = h:status(), first_text = tostring(h) }
  local ok, e = pcall(h.text, h)
  r.text_raises = not ok and tostring(e) or "no error"
  ok, e = pcall(h.events, h)
  r.events_raises = not ok and tostring(e) or "no error"
  local res, _, err = h:result()
  r.seen, r.content, r.err = seen, content_of(res), err_table(err)
  r.last, r.last_text, r.partial = h:status(), tostring(h), content_of(h:partial())
  return r
end

-- a raising on_text: the transfer is closed at once, the error goes to on_error
function PROBES.callbacks_raise(client, p)
  local got
  local h = client:stream(p.request, { headers = p.call and p.call.headers,
    on_error = function(e) got = tostring(e) end,
    on_text = function(t) if t == (p.raise_at or "w2 ") then error("boom in on_text", 0) end end })
  ngx.update_time()
  local t0 = ngx.now()
  local res, _, err = h:result()
  ngx.update_time()
  return { on_error = got, status = h:status(), content = content_of(res), err = err_table(err),
           elapsed = ngx.now() - t0 }
end

-- many finished streams and their finalizers (the streams' guards cancel their
-- requests): a finalizer that raises can crash LuaJIT inside nginx
function PROBES.gc(client, p)
  local n = 0
  for i = 1, p.n or 30 do
    local s = client:stream { model = "test-model", messages = { { role = "user", content = "gc " .. i } } }
    if s and s:result() then n = n + 1 end
    s = nil
    if i % 3 == 0 then collectgarbage() end
    -- an unfinished stream dropped for its finalizer to cancel
    local u = client:stream { model = "test-model", messages = { { role = "user", content = "drop" } } }
    u = nil
  end
  collectgarbage()
  return { streams = n }
end

-- several chats at once inside one request: ngx.thread.spawn
function PROBES.parallel(client, p)
  local threads = {}
  for i = 1, p.n or 3 do
    threads[i] = ngx.thread.spawn(function()
      local res, _, err = client:chat { model = "test-model", messages = { { role = "user", content = "p" .. i } },
                                     }
      return content_of(res) or tostring(err)
    end)
  end
  local out = {}
  for i = 1, #threads do
    local ok, v = ngx.thread.wait(threads[i])
    out[i] = ok and v or ("thread error: " .. tostring(v))
  end
  return { contents = out }
end

-- oai.spawn + oai.run (needs the transport-aware oai.spawn, see docs/openresty.md)
function PROBES.spawn(client, p)
  local out = {}
  for i = 1, p.n or 3 do
    oai.spawn(function()
      local res, _, err = client:chat { model = "test-model", messages = { { role = "user", content = "t" .. i } } }
      out[i] = content_of(res) or tostring(err)
    end)
  end
  oai.run()
  return { contents = out }
end

-- a raising on_error: the other tasks still run, oai.run() raises it
function PROBES.on_error_raises()
  local ran = {}
  oai.spawn({ on_error = function() error("handler broke", 0) end }, function() error("first", 0) end)
  oai.spawn(function() ran[#ran + 1] = "second" end)
  oai.spawn(function() oai.sleep(0.01); ran[#ran + 1] = "third" end)
  local ok, err = pcall(oai.run)
  return { ok = ok, raised = not ok and tostring(err) or nil, ran = ran }
end

-- NaN and friends inside nginx: oai.new, per-call options, oai.sleep, the transport's request
function PROBES.nan_options(client)
  local NAN = 0 / 0
  local function msg(fn)
    local ok, err = pcall(fn)
    return ok and "did not raise" or (tostring(err):gsub("^[^:]*:%d+: ", ""))
  end
  local req = { model = "test-model", messages = { { role = "user", content = "x" } } }
  local T = oai.transport()
  return {
    new = msg(function() oai.new { base_url = client.base_url, idle_timeout = NAN } end),
    call = msg(function() client:chat(req, { max_retries = NAN }) end),
    stream = msg(function() client:stream(req, { timeout = NAN }) end),
    sleep = msg(function() oai.sleep(NAN) end),
    sleep_neg = msg(function() oai.sleep(-1) end),
    request = msg(function() T.request { url = client.base_url .. "/models", timeout_ms = NAN } end),
  }
end

function PROBES.conversation(client)
  if not oai.conversation then return { skipped = "oai.conversation is not available" } end
  local conv = oai.conversation { system = "Be terse." }
  conv:user "first"
  local r1, e1 = conv:send(client, { model = "test-model" })
  if not r1 then return { err = err_table(e1) } end
  conv:user "second"
  local r2, e2 = conv:send(client, { model = "test-model" })
  if not r2 then return { err = err_table(e2) } end
  return { contents = { content_of(r1), content_of(r2) }, n = #conv:messages() }
end

function PROBES.info(client, p)
  -- the transport's request object directly: info(), headers, keepalive
  local T = oai.transport()
  local req = T.request { url = client.base_url .. "/models", method = "GET",
                          headers = { Accept = "application/json" }, timeout_ms = 5000 }
  T.start(req)
  while not req:result() do T.wait(req) end
  local done, ok, name, msg = req:result()
  local info = req:info()
  local r = { ok = ok, name = name, message = msg, status = req:status(), transport = T.name,
              reused = info.reused, reconnects = info.reconnects, http_version = info.http_version, received = info.received,
              request_id = req:header("X-Request-Id"), content_type = req:headers()["content-type"],
              body_len = #req:body(), is_sse = req:is_sse(),
              raw_has_request_id = req.raw_headers and req:raw_headers():find("\r\n[Xx]%-[Rr]equest%-[Ii]d: req_test_%d+\r\n") ~= nil
                or req.raw_headers and req:raw_headers():find("^[Xx]%-[Rr]equest%-[Ii]d: req_test_%d+\r\n") ~= nil }
  req:close()
  r.closed_raises = not pcall(req.status, req)
  req:close()   -- idempotent
  return r
end

-- header validation of the transport's request(): the message never echoes a value
function PROBES.bad_header(client, p)
  local T = oai.transport()
  local ok, err = pcall(T.request, { url = client.base_url .. "/models",
                                     headers = { [p.name or "X-Evil"] = p.value or "a\r\nInjected: 1" } })
  return { raised = not ok, message = tostring(err) }
end

-- client:get(p.url, p.call): {content?, err?}
function PROBES.get(client, p)
  local doc, _, err = client:get(p.url, p.call)
  return { ok = doc ~= nil, err = err_table(err) }
end

-- the path of the first string holding needle in a table reachable from v
-- (keys and values; metatables skipped), or nil
local function find_in(v, needle, path, seen)
  path, seen = path or "root", seen or {}
  if type(v) == "string" then return v:find(needle, 1, true) and path or nil end
  if type(v) ~= "table" or seen[v] then return nil end
  seen[v] = true
  for k, x in pairs(v) do
    local found = find_in(k, needle, path .. "[key]", seen) or find_in(x, needle, path .. "." .. tostring(k), seen)
    if found then return found end
  end
  return nil
end

-- chat, a stream, then p.chat_call's and p.stream_call's scripted failures:
-- where the key shows up (the failed stream itself holds the echoing content)
function PROBES.secrets(client, p)
  local key = p.key
  local req = { model = "test-model", messages = { { role = "user", content = "s" } } }
  local res = client:chat(req)
  local s = client:stream(req)
  local sres = s and s:result()
  local _, _, cerr = client:chat(req, p.chat_call)
  local fs = client:stream(req, p.stream_call)
  local _, _, serr = fs:result()
  return { chat = content_of(res), stream = content_of(sres),
           in_client = find_in(client, key) or false, in_stream = find_in(s, key) or false,
           in_chat_err = find_in(cerr, key) or false, in_stream_err = find_in(serr, key) or false,
           chat_err = cerr and { message = cerr.message, code = cerr.code, error_message = cerr.error and cerr.error.message },
           stream_err = serr and { message = serr.message, code = serr.code,
             error_message = serr.error and serr.error.message, partial = content_of(serr.partial) } }
end

-- POST /probe  {mode=, base="http"|"tls"|url, client={...}, request={...}, call={...}}
function M.probe()
  ngx.req.read_body()
  local p = oai.json.decode(ngx.req.get_body_data() or "{}")
  local before = dict:get("libcurl_calls") or 0
  local base = p.base == "tls" and cfg.tls_url or p.base == nil and cfg.url or p.base
  if p.base == "self" then base = "http://127.0.0.1:" .. ngx.var.server_port .. (p.path or "") end
  local copts = { base_url = base }
  for k, v in pairs(p.client or {}) do copts[k] = v end
  local client = new_client(copts)
  local ok, r = pcall(PROBES[p.mode], client, p)
  if not ok then r = { raised = tostring(r) } end
  r.libcurl = (dict:get("libcurl_calls") or 0) - before
  ngx.header["content-type"] = "application/json"
  ngx.print(oai.json.encode(r))
end

---------------------------------------------------------------- phases

-- set_by_lua: returns the error of a request made there
function M.in_set()
  local ok, err = pcall(function() return new_client():chat(user_request("test-model", "set")) end)
  return ok and "no error" or tostring(err)
end

-- log_by_lua / header_filter / body_filter: store the error in the shared dict
function M.in_phase(key)
  local ok, res, err = pcall(function() return new_client():chat(user_request("test-model", key)) end)
  if not ok then dict:set(key, tostring(res))
  elseif res then dict:set(key, "ok: " .. tostring(content_of(res)))
  else dict:set(key, "failed: " .. tostring(err)) end
end

function M.phase_result()
  ngx.print(dict:get(args().key) or "")
end

function M.libcurl()
  ngx.print(dict:get("libcurl_calls") or 0)
end

return M
