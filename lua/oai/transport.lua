--- oai.transport: the transport contract, and which transport runs now.
---
--- A transport makes requests progress.  The default drives libcurl's multi
--- handle from oai.loop; inside OpenResty, oai.ngx speaks HTTP over
--- cosockets.  Everything above this file (send, client, stream) uses a
--- transport only through the methods below.
---
---   transport = {
---     name    = "curl" | "ngx" | ...,
---     request = function(spec) -> req     -- spec: url, method, headers, body,
---               -- stream, timeout_ms, connect_timeout_ms, idle_timeout_ms,
---               -- proxy, ca_file, verify, max_body_bytes, max_event_bytes, resolve
---     start   = function(req)             -- begin the transfer
---     wait    = function(req, timeout?)   -- yield/block until req has news
---     forget  = function(req)             -- stop tracking req (before close)
---     -- optional: the host's own tasks (light threads inside nginx)
---     spawn   = function([opts,] fn, ...) -> task
---     run     = function()
---     sleep   = function(seconds)
---   }
---
--- A request has the methods of oai.request: status, headers, header,
--- raw_headers, body, is_sse, read_records, flush_records, pending, result,
--- cancel, close, info.
---
--- M.spawn, M.run and M.sleep are always present: the transport's own, or
--- oai.loop's.  Tail calls keep the callers' error levels.
local core = require "oai.native"
local loop = require "oai.loop"

local type = type

local M = {}

--- libcurl through oai.loop
M.curl = {
  name = "curl",
  request = core.request,
  start = loop.start,
  wait = loop.wait,
  forget = loop.forget,
}

local override

--- Use another transport for every client (nil: automatic).
---@param t? table a transport {request, start, wait, forget}; nil: automatic
function M.set(t) override = t end

--- The transport requests use now: the override, oai.ngx inside nginx
--- (raises naming the phase where cosockets cannot run), else libcurl.
---@return table transport
function M.current()
  if override then return override end
  if type(ngx) == "table" and type(ngx.get_phase) == "function" then
    return require("oai.ngx").transport()
  end
  return M.curl
end

--- spawn([opts,] fn, ...) -> task (a light thread inside nginx)
---@param opts table|function options {on_error} or the function
---@param fn? function
---@return table task
function M.spawn(opts, fn, ...) return (M.current().spawn or loop.spawn)(opts, fn, ...) end

--- Run until every task has finished (inside nginx: this request's tasks).
---@return nil
function M.run() return (M.current().run or loop.run)() end

--- Sleep; other tasks (or nginx requests) keep running.
---@param seconds number
function M.sleep(seconds) return (M.current().sleep or loop.sleep)(seconds) end

--- Does the current host bring its own tasks (they start at once, and
--- oai.loop must not be pumped there)?
---@return boolean
function M.hosted()
  return M.current().spawn ~= nil
end

return M
