--- oai.handle: what client:stream(request, {on_text = ...}) returns.
---
--- With callbacks a task of its own opens the stream and feeds the
--- callbacks; the handle is how the caller watches that task: status(),
--- partial(), result(), cancel().  It has no iterators: the callbacks already
--- consume the stream, so text(), events() and chunks() raise at once.
local accumulator = require "oai.accumulator"
local errors = require "oai.errors"

local setmetatable, tostring, error, type = setmetatable, tostring, error, type
local co_running = coroutine.running

local M = {}

M.CALLBACKS = { "on_text", "on_reasoning", "on_tool_call", "on_event", "on_done" }

--- Does a per-call options table hold any stream callback?
---@param opts? table
---@return boolean
function M.has_callbacks(opts)
  if not opts then return false end
  for _, k in ipairs(M.CALLBACKS) do if opts[k] ~= nil then return true end end
  return false
end

-- A raising callback must close the transfer at once, before the error
-- propagates.  That takes a pcall around the driving loop, which yields
-- (waits) inside: PUC Lua 5.1 cannot yield across a pcall, so there the
-- transfer is released when the stream is collected.
local yieldable_pcall = _VERSION ~= "Lua 5.1" or type(jit) == "table"

-- feed the callbacks until the stream ends
-- (while loops, not generic for: Lua 5.1 cannot yield inside a for iterator)
local function drive_callbacks(s, opts)
  local on_text, on_reasoning, on_tool, on_event = opts.on_text, opts.on_reasoning, opts.on_tool_call, opts.on_event
  if on_event or on_reasoning or on_tool then
    local next_event = s:events()
    while true do
      local ev = next_event()
      if ev == nil then break end
      if on_event then on_event(ev) end
      local t = ev.type
      if t == "content" then
        if on_text then on_text(ev.text, ev) end
      elseif t == "reasoning" then
        if on_reasoning then on_reasoning(ev.text, ev) end
      elseif t == "tool_call" then
        if on_tool then on_tool(ev) end
      end
    end
  elseif on_text then
    local next_text = s:text()
    while true do
      local text = next_text()
      if text == nil then break end
      on_text(text)
    end
  end
  local res, _, err = s:result()
  if opts.on_done then opts.on_done(res, err) end
end

---@class oai.StreamHandle
---@field task table the task that opens the stream and runs the callbacks
local Handle = {}
Handle.__index = Handle
M.Handle = Handle

local CONSUMED = "callbacks already consume this stream; use on_text or call client:stream without callbacks"

-- the task's body: open, then feed the callbacks
local function drive(h, open, opts)
  h._co = co_running()
  local s, _, err = open()
  if not s then
    if h._canceled then err = errors.new({ kind = "canceled", message = "stream canceled" }) end
    h._err = err
    if opts.on_done then opts.on_done(nil, err) end
    return
  end
  h._stream = s
  if h._canceled then s:cancel() end
  if not yieldable_pcall then return drive_callbacks(s, opts) end
  local ok, e = pcall(drive_callbacks, s, opts)
  if not ok then
    if not s.finished then
      h._raised = true
      s:_abort("stream canceled: a callback raised: " .. tostring(e))
    end
    error(e, 0)
  end
end

--- Start the task that opens a stream with `open()` and feeds opts' callbacks.
---@param open fun(): (oai.Stream|nil), oai.Error? opens the stream (waits for the headers)
---@param opts table the per-call options with the callbacks (and on_error)
---@param spawn function oai.spawn
---@return oai.StreamHandle
function M.start(open, opts, spawn)
  local h = setmetatable({ _canceled = false }, Handle)
  h.task = spawn({ on_error = opts.on_error }, drive, h, open, opts)
  return h
end

--- "connecting" (waiting for the response headers), "streaming", "done",
--- "failed" (the request failed, or a callback raised) or "canceled".
---@return string status
function Handle:status()
  if self._raised then return "failed" end
  local s = self._stream
  if s then return s:status() end
  if self._canceled then return "canceled" end
  if self._err then return "failed" end
  return "connecting"
end

--- Wait until the stream has ended and on_done has run: the completion, or
--- nil, err (err.partial holds what was accumulated).
---@return table? completion
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Handle:result()
  local s = self._stream
  if co_running() == self._co and self._co ~= nil then
    -- from one of its own callbacks: only once the stream has ended (on_done)
    if s and s.finished then return s:result() end
    error("oai: handle:result() from the stream's own callbacks before its end; use on_done", 2)
  end
  self.task:wait()
  s = self._stream
  if s then return s:result() end
  return errors.fail(self._err)
end

--- The completion accumulated so far (empty while connecting).
---@return table completion
function Handle:partial()
  local s = self._stream
  if s then return s:partial() end
  return accumulator.new():completion()
end

--- Stop the stream now: the callbacks get no more deltas, on_done gets
--- nil, err with kind "canceled".  While connecting, the request is closed
--- as soon as its response headers are in.  No effect once it has ended.
---@return nil
function Handle:cancel()
  local st = self:status()
  if st ~= "connecting" and st ~= "streaming" then return end
  self._canceled = true
  if self._stream then self._stream:cancel() end
end

--- Raises: the callbacks already consume the stream.
---@return nil
function Handle:text() error(CONSUMED, 2) end
--- Raises: the callbacks already consume the stream.
---@return nil
function Handle:events() error(CONSUMED, 2) end
--- Raises: the callbacks already consume the stream.
---@return nil
function Handle:chunks() error(CONSUMED, 2) end

function Handle:__tostring()
  return "oai.stream (" .. self:status() .. ")"
end

return M
