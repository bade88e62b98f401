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
--- The rooms: oai.ngx.request (the request over a cosocket: connect, TLS,
--- send, read, timeouts), oai.ngx.response (what it received: head, body,
--- records), oai.ngx.http1 (the pure HTTP/1.1 response parser it feeds),
--- oai.ngx.tasks (light threads: spawn/run/sleep, waiting for news).
---
--- What nginx.conf must provide (docs/openresty.md): `resolver` for host
--- names (without one only IP addresses and `localhost` work),
--- `lua_ssl_trusted_certificate` (+ `lua_ssl_verify_depth`) to verify TLS
--- peers: a `ca_file` cannot be chosen per request with cosockets, so the
--- option raises here; `proxy` is not supported either.

local request = require "oai.ngx.request"
local tasks = require "oai.ngx.tasks"

local M = {}

-- tunables (module-wide): the connection pool of each upstream
M.keepalive_timeout = nil   -- ms an idle pooled connection is kept (nil: lua_socket_keepalive_timeout)
M.pool_size = nil           -- pooled connections per upstream (nil: lua_socket_pool_size)
request.settings = M        -- read at every release

M.check_phase = tasks.check_phase
M.Request, M.request, M.start = request.Request, request.request, request.start
M.wait, M.forget, M.sleep = tasks.wait, tasks.forget, tasks.sleep
M.Task, M.spawn, M.run = tasks.Task, tasks.spawn, tasks.run

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
  tasks.check_phase()
  return T
end

return M
