--- oai.ngx.tasks: waiting inside nginx, on light threads of the current
--- request (ngx.thread.spawn) so nginx schedules them: the phases where that
--- works, oai.spawn/run/sleep and Task:wait, and the waits for a request's
--- news (one light thread reads a cosocket; the others wait for its news on
--- a semaphore).  What oai.loop is for libcurl, without a loop of its own.
local core = require "oai.native"
local request = require "oai.ngx.request"

local monotime, pump = core.monotime, request.pump
local type, tostring, setmetatable, error, select, pcall, xpcall =
  type, tostring, setmetatable, error, select, pcall, xpcall
local unpack = table.unpack or unpack
local traceback = debug.traceback
local co_running, co_status = coroutine.running, coroutine.status

local M = {}

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

---------------------------------------------------------------- waiting for a request

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
  pump(req, timeout and (monotime() + timeout))
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

---------------------------------------------------------------- tasks

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

return M
