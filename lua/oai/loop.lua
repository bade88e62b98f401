--- oai.loop: tasks (coroutines), the one libcurl multi handle that drives
--- every transfer, timers, and the run/step/sleep entry points.
---
--- All waiting happens here, in Lua: C never yields.  Code that needs a
--- transfer to progress calls `loop.wait(req)`.  Inside an oai task that
--- yields to the loop; anywhere else (main chunk, a coroutine that is not an
--- oai task) it drives the loop itself until the request has news, so a
--- plain script just blocks its caller and a foreign scheduler is never
--- yielded into.
local core = require "oai.native"

local monotime = core.monotime
local co_create, co_resume, co_yield, co_status, co_running =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.status, coroutine.running
local traceback = debug.traceback
local unpack = table.unpack or unpack
local select, type, error, tostring, pcall, setmetatable, getmetatable =
  select, type, error, tostring, pcall, setmetatable, getmetatable

local loop = {}

local multi            -- the libcurl multi handle (created on first use)
local task_of = setmetatable({}, { __mode = "k" })   -- coroutine -> task
local live = 0         -- tasks not yet finished
local runq, runq_n = {}, 0                          -- tasks to resume, FIFO
-- request -> what waits on it: one waiter, or a Waiters list of them.  A
-- waiter is a task, or a Mark (a caller outside any task driving the loop).
local waiting = setmetatable({}, { __mode = "k" })
local Waiters, Mark = {}, {}
local news = setmetatable({}, { __mode = "k" })     -- request -> true: news nobody waited for yet
local timers = {}      -- sorted by .at: { at = seconds, task = t } or { at, fn }
local errors = {}      -- unhandled task errors, raised by run()/step()
local driver           -- optional external driver (oai.uv): { wake = fn }
--- loop.on_pump: optional function called after every pump (e.g. a CLI
--- checking for Ctrl-C while a call blocks)

local Task = {}
Task.__index = Task

-- a finite number >= 0 (NaN fails every comparison: a NaN timer or wait
-- would never fire and would block every later timer), else raises at the
-- caller's caller
local function check_seconds(v, where, name)
  if type(v) == "number" and v >= 0 and v < math.huge then return v end
  local got = type(v) ~= "number" and type(v) or v ~= v and "nan" or v == math.huge and "inf"
    or v == -math.huge and "-inf" or ("%.14g"):format(v)
  error(("%s: %s must be a non-negative number (got %s)"):format(where, name, got), 3)
end

---@return userdata multi the loop's libcurl multi handle
function loop.multi()
  if not multi then multi = core.multi(loop.multi_options) end
  return multi
end

local function current_task()
  local co = co_running()
  return co and task_of[co] or nil
end
loop.current_task = current_task

local function schedule(task, ...)
  if task.queued or task.done then return end
  task.queued = true
  task.resume_n = select("#", ...)
  task.resume_args = task.resume_n > 0 and { ... } or nil
  runq_n = runq_n + 1
  runq[runq_n] = task
  if driver then driver.wake() end
end

local function finish(task, ok, ...)
  task.done = true
  live = live - 1
  if ok then
    task.results = { n = select("#", ...), ... }
  else
    local err = ...
    task.err = err
    local okm, msg = pcall(tostring, err)   -- a raising __tostring must not escape
    task.trace = traceback(task.co, okm and msg or "(error object is not a string)")
    if task.on_error then
      task.handled = true
      -- nothing may raise here: the pass resuming the other tasks goes on;
      -- the handler's own error is raised by run()/step() afterwards
      local okh, e2 = pcall(task.on_error, err, task.trace)
      if not okh then
        local okt, m2 = pcall(tostring, e2)
        errors[#errors + 1] = { trace = "oai: on_error handler raised: " .. (okt and m2 or "?") }
      end
    elseif not task.joined then
      errors[#errors + 1] = task
    end
  end
  local joiners = task.joiners
  if joiners then
    task.joiners = nil
    for i = 1, #joiners do schedule(joiners[i]) end
  end
end

local finish_or_wait

local function resume(task)
  local args, n = task.resume_args, task.resume_n or 0
  task.resume_args = nil
  if n > 0 then
    return finish_or_wait(task, co_resume(task.co, unpack(args, 1, n)))
  end
  return finish_or_wait(task, co_resume(task.co))
end

-- after a resume: the task either finished, failed, or yielded a wait
finish_or_wait = function(task, ok, ...)
  if not ok then return finish(task, false, ...) end
  if co_status(task.co) == "dead" then return finish(task, true, ...) end
  -- a yield: the task registered what it waits for before yielding; a bare
  -- coroutine.yield() inside a task just lets the others run
  if not task.blocked then schedule(task) end
end

local function run_ready(deadline)
  -- only the tasks queued before this pass run now; those they wake wait
  -- for the next pass, so a busy task cannot starve the transfers.  With a
  -- deadline (oai.step's budget) the rest stays queued for the next pass.
  local n = runq_n
  if n == 0 then return end
  local q = runq
  runq, runq_n = {}, 0
  for i = 1, n do
    local t = q[i]
    if deadline and i > 1 and monotime() > deadline then
      local rest, woken, wn = {}, runq, runq_n
      local k = 0
      for j = i, n do k = k + 1; rest[k] = q[j] end
      for j = 1, wn do k = k + 1; rest[k] = woken[j] end
      runq, runq_n = rest, k
      return
    end
    t.queued = false
    if not t.done and co_status(t.co) == "suspended" then
      t.blocked = false
      resume(t)
    end
  end
end

local function fire_timers()
  if #timers == 0 then return end
  local now = monotime()
  while timers[1] and timers[1].at <= now do
    local tm = table.remove(timers, 1)
    if tm.task then schedule(tm.task) else tm.fn() end
  end
end

local function add_timer(tm)
  local i = #timers
  while i > 0 and timers[i].at > tm.at do i = i - 1 end
  table.insert(timers, i + 1, tm)
  if driver then driver.wake() end
  return tm
end

-- a blocking caller's place among a request's waiters; `arrived` is built
-- once per mark (the marks are reused)
local free_marks, free_n = {}, 0
local function new_mark()
  local m = setmetatable({ woken = false, req = false }, Mark)
  m.arrived = function() return m.woken or news[m.req] == true end
  return m
end

local function wake(w)
  if getmetatable(w) == Mark then w.woken = true else schedule(w) end
end

-- wake everything waiting on req; false when nothing was
local function wake_all(req)
  local w = waiting[req]
  if not w then return false end
  waiting[req] = nil
  if getmetatable(w) == Waiters then
    for i = 1, #w do wake(w[i]) end
  else
    wake(w)
  end
  return true
end

local function add_waiter(req, w)
  local cur = waiting[req]
  if cur == nil then
    waiting[req] = w
  elseif getmetatable(cur) == Waiters then
    cur[#cur + 1] = w
  else
    waiting[req] = setmetatable({ cur, w }, Waiters)
  end
end

local function remove_waiter(req, w)
  local cur = waiting[req]
  if cur == w then
    waiting[req] = nil
  elseif getmetatable(cur) == Waiters then
    for i = #cur, 1, -1 do if cur[i] == w then table.remove(cur, i) end end
    if #cur == 0 then waiting[req] = nil end
  end
end

local function deliver(ready)
  for i = 1, #ready do
    local req = ready[i]
    if not wake_all(req) then news[req] = true end
  end
end
loop.deliver = deliver

--- One pump: resume runnable tasks, wait up to timeout_ms for transfers or
--- timers, deliver what happened, resume again.  Never waits when timeout_ms
--- is 0.  Returns true while tasks or transfers remain.
local function pump(timeout_ms, budget_ms, done)
  local deadline = budget_ms and monotime() + budget_ms / 1000
  run_ready(deadline)
  local wait = timeout_ms or 0
  -- no waiting when there is work, or when what the caller waits for has
  -- already happened in the pass above
  if runq_n > 0 or (done and done()) then wait = 0 end
  if timers[1] then
    local dt = (timers[1].at - monotime()) * 1000
    if dt < wait then wait = dt > 0 and dt or 0 end
  end
  if driver then
    driver.pump(wait)
  else
    local _, ready = loop.multi():perform(wait)
    deliver(ready)
  end
  fire_timers()
  if not deadline or monotime() < deadline then run_ready(deadline) end
  if loop.on_pump then loop.on_pump() end
  return live > 0 or (multi ~= nil and multi:count() > 0)
end
loop.pump = pump

local function raise_errors()
  local t = table.remove(errors, 1)
  if t then
    t.handled = true
    error(t.trace, 0)
  end
end

--- Drive everything for at most `timeout` seconds (0, the default, never
--- blocks: for game loops).  `budget` (seconds) bounds the time spent
--- resuming tasks in this call; tasks left over run in the next step (for
--- a steady frame time).
---@param timeout? number seconds
---@param budget? number seconds
---@return boolean busy true while tasks or transfers remain
function loop.step(timeout, budget)
  if timeout ~= nil then check_seconds(timeout, "oai.step", "timeout") end
  if budget ~= nil then check_seconds(budget, "oai.step", "budget") end
  local busy = pump((timeout or 0) * 1000, budget and budget * 1000)
  raise_errors()
  return busy
end

--- Run until every task has finished; raises the first unhandled task error
--- (with the task's traceback).
---@return nil
function loop.run()
  if current_task() then error("oai.run: called from inside a task", 2) end
  local function finished() return live == 0 and runq_n == 0 end
  while true do
    raise_errors()
    if finished() then break end
    pump(1000, nil, finished)
  end
  raise_errors()
end

--- Wait until the request has news (headers, data or completion), or at
--- most `timeout` seconds when given.  Inside a task this yields to the
--- loop; elsewhere it drives the loop.
---@param req userdata
---@param timeout? number seconds
function loop.wait(req, timeout)
  if news[req] then news[req] = nil; return end
  local t = current_task()
  if t then
    -- several tasks may wait on one request (text() in one, result() in
    -- another): news wakes them all
    add_waiter(req, t)
    t.blocked = true
    local tm
    if timeout then
      tm = add_timer { at = monotime() + timeout, fn = function()
        remove_waiter(req, t)
        schedule(t)
      end }
    end
    co_yield()
    if tm then loop.cancel_timer(tm) end
    remove_waiter(req, t)   -- resumed by something else (a joiner's wake, a bare resume)
    return
  end
  -- outside a task: drive the loop until the news reaches our mark (tasks
  -- may be waiting on the same request).  Marks are reused: a blocking
  -- script waits several times per request, and allocates nothing for it.
  local mark = free_marks[free_n]
  if mark then
    free_marks[free_n] = nil
    free_n = free_n - 1
  else
    mark = new_mark()
  end
  mark.woken, mark.req = false, req
  add_waiter(req, mark)
  local deadline = timeout and monotime() + timeout
  local arrived = mark.arrived
  while not arrived() do
    local wait = 1000
    if deadline then
      wait = (deadline - monotime()) * 1000
      if wait <= 0 then break end
    end
    pump(wait, nil, arrived)
  end
  remove_waiter(req, mark)
  if not mark.woken then news[req] = nil end
  mark.req = nil
  free_n = free_n + 1
  free_marks[free_n] = mark
end

--- Start a transfer on the loop's multi handle.
---@param req userdata
function loop.start(req)
  loop.multi():add(req)
  if driver then driver.started(req) end
end

--- Stop waiting for req (after a cancel): a task waiting on it is resumed
--- (it then sees the request finished).
---@param req userdata
function loop.forget(req)
  if wake_all(req) then
    news[req] = nil
  else
    news[req] = true   -- a later waiter returns and sees the request ended
  end
end

--- Sleep for `seconds`; inside a task other tasks keep running.
---@param seconds number
function loop.sleep(seconds)
  if seconds ~= nil then check_seconds(seconds, "oai.sleep", "seconds") end
  local at = monotime() + (seconds or 0)
  local t = current_task()
  if t then
    add_timer { at = at, task = t }
    t.blocked = true
    co_yield()
    return
  end
  while true do
    local left = at - monotime()
    if left <= 0 then break end
    pump(left * 1000)
  end
end

---@param tm table
function loop.cancel_timer(tm)
  for i = 1, #timers do
    if timers[i] == tm then table.remove(timers, i); return end
  end
end

--- oai.spawn([opts,] fn, ...) -> task.  opts.on_error(err, traceback)
--- handles the task's error instead of oai.run() raising it.
---@param opts table|function options {on_error} or the function
---@param fn? function
---@return table task
function loop.spawn(opts, fn, ...)
  local args
  if type(opts) == "function" then
    args = { n = select("#", fn, ...), fn, ... }
    fn, opts = opts, nil
  else
    if type(opts) ~= "table" then error("oai.spawn: expected a function", 2) end
    if type(fn) ~= "function" then error("oai.spawn: expected a function after the options", 2) end
    args = { n = select("#", ...), ... }
  end
  local task = setmetatable({ on_error = opts and opts.on_error }, Task)
  task.co = co_create(function() return fn(unpack(args, 1, args.n)) end)
  task_of[task.co] = task
  live = live + 1
  schedule(task)
  return task
end

---@return boolean
function Task:is_done() return self.done == true end

--- Wait for the task to finish: its return values, or nil, err if it failed
--- (the error is then considered handled).
---@return any ...
function Task:wait()
  self.joined = true
  if not self.done then
    local me = current_task()
    if me then
      if me == self then error("oai: a task cannot wait for itself", 2) end
      self.joiners = self.joiners or {}
      self.joiners[#self.joiners + 1] = me
      me.blocked = true
      co_yield()
    else
      local function done() return self.done end
      while not self.done do pump(1000, nil, done) end
    end
  end
  if self.err ~= nil then
    self.handled = true
    for i = #errors, 1, -1 do if errors[i] == self then table.remove(errors, i) end end
    return nil, self.err
  end
  local r = self.results
  return unpack(r, 1, r.n)
end

--- Install an external driver (oai.uv): the driver owns waiting.
--- driver = { pump = function(wait_ms), wake = function(), started = function(req) }
---@param d? table
function loop.set_driver(d) driver = d end

--- Options for the multi handle (socket_mode for external event loops).
--- Replaces an idle multi; raises while transfers are running.
---@param opts? table
function loop.set_multi_options(opts)
  if multi then
    if multi:count() > 0 then error("oai: cannot switch the transfer mode while transfers are running", 2) end
    multi:close()
    multi = nil
  end
  loop.multi_options = opts
end

--- One pass for an external driver: resume runnable tasks and fire due
--- timers; returns the seconds until the next timer, or nil.  Unhandled
--- task errors are raised (the host reports them).
---@return number? seconds until the next timer
function loop.run_pass()
  run_ready()
  fire_timers()
  run_ready()
  raise_errors()
  if timers[1] then
    local dt = timers[1].at - monotime()
    return dt > 0 and dt or 0
  end
  return nil
end

---@return boolean
function loop.has_runnable() return runq_n > 0 end

---@return table
function loop.stats()
  return { tasks = live, runnable = runq_n, timers = #timers,
           transfers = multi and multi:count() or 0 }
end

return loop
