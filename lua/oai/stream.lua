--- oai.stream: the Stream object of client:stream(), a state machine over
--- one transfer.
---
--- The transport hands over records (see oai.records): a flat array that
--- the C chunk decoder (req:read_records) fills from the event stream, a
--- few slots per delta, without building the chunk table.  The Stream pulls
--- them (_fill), hands them out through its iterators (text, events,
--- chunks), applies each to its accumulator (oai.accumulator) and ends in
--- one of done, failed or canceled; result() and partial() are the
--- accumulator's completion.
local core = require "oai.native"
local transport = require "oai.transport"
local errors = require "oai.errors"
local records = require "oai.records"
local accumulator = require "oai.accumulator"
local fail = errors.fail

local null = core.null
local json_decode = core.json_decode
local monotime = core.monotime
local type, ipairs, tostring, setmetatable = type, ipairs, tostring, setmetatable
local records_from_chunk = records.records_from_chunk

local M = {}

local kinds = records.kinds
local K_CONTENT, K_REASONING, K_REFUSAL, K_TOOL, K_FINISH, K_ROLE, K_USAGE,
      K_ERROR, K_DONE, K_BAD, K_RAW =
      kinds.CONTENT, kinds.REASONING, kinds.REFUSAL, kinds.TOOL, kinds.FINISH, kinds.ROLE,
      kinds.USAGE, kinds.ERROR, kinds.DONE, kinds.BAD, kinds.RAW

---------------------------------------------------------------- Stream

---@class oai.Stream
local Stream = {}
Stream.__index = Stream
M.Stream = Stream

local FLAG_RAW = 1

local setclose
do
  -- Lua 5.4: the iterator's closing value cancels the stream on `break`
  local ok = pcall(load, "local x <close> = nil")
  if ok and load("local x <close> = nil") then
    setclose = function(s)
      return setmetatable({}, { __close = function() if not s.finished then s:cancel() end end })
    end
  else
    setclose = function() return nil end
  end
end

-- the request is cancelled when the stream is collected (5.2+: __gc on the
-- table; 5.1/LuaJIT: on a proxy userdata the stream holds)
local function guard(s, req)
  if req and newproxy then
    local p = newproxy(true)
    local live = { req = req }
    -- a finalizer must not raise (even a caught error in __gc can crash
    -- LuaJIT inside nginx): a finished stream has nothing left to cancel
    getmetatable(p).__gc = function() local r = live.req; if r then pcall(r.cancel, r) end end
    s._guard = p
    s._live = live
  end
end
Stream.__gc = function(s)
  local req = s._req
  if req and not s.finished then pcall(req.cancel, req) end
end

-- stream -> the API key its errors mask: kept beside the stream, never in
-- it (dumping or serialising a stream must not reveal the key)
local keys = setmetatable({}, { __mode = "k" })

---@param req userdata|table the transport request
---@param ctx? table (ctx.key is taken out of ctx and kept aside)
---@return oai.Stream
function M.new(req, ctx)
  local key = ctx and ctx.key
  if key ~= nil then ctx.key = nil end
  local s = setmetatable({
    _req = req, _out = {}, _ri = 1, _rn = 0, _flags = 0,
    acc = accumulator.new(), finished = false, ctx = ctx or {},
    grace = ctx and ctx.grace or 2,
    T = ctx and ctx.transport or transport.curl,
  }, Stream)
  keys[s] = key
  guard(s, req)
  return s
end

local function stream_error(s, fields)
  fields.partial = s.acc:completion()   -- masked with the rest
  fields.request_id = fields.request_id or s.ctx.request_id
  return errors.new(fields, keys[s])
end

-- end the stream; err nil means success.  Records decoded but not yet
-- handed out are dropped: after cancel() the iterators end at once, and
-- partial() / err.partial hold exactly what was delivered.
function Stream:_finish(err)
  if self.finished then return end
  self.finished = true
  self.err = err
  self._ri, self._rn, self._saved = 1, 0, nil
  local req = self._req
  if req then
    if not req:result() then req:cancel() end
    self.T.forget(req)
    req:close()
    if self._live then self._live.req = nil end
  end
end

-- the whole body was a plain JSON completion (server ignored stream=true)
function Stream:_plain_body()
  local req = self._req
  local doc, derr = json_decode(req:body())
  if type(doc) ~= "table" then
    return self:_finish(stream_error(self, { kind = "protocol", status = req:status(),
      message = "stream response is neither an event stream nor JSON: " .. tostring(derr),
      body = req:body():sub(1, 2048) }))
  end
  if doc.error ~= nil and doc.error ~= null then
    local n = 3
    self._out[1], self._out[2], self._out[3] = K_ERROR, doc.error, nil
    self._rn, self._ri = n, 1
    return
  end
  -- replay the completion as deltas so every iterator sees it
  local out, n = self._out, 0
  n = records_from_chunk({ id = doc.id, created = doc.created, model = doc.model,
    system_fingerprint = doc.system_fingerprint, usage = doc.usage }, out, n)
  for pos, ch in ipairs(type(doc.choices) == "table" and doc.choices or {}) do
    local msg = type(ch.message) == "table" and ch.message or {}
    n = records_from_chunk({ choices = { { index = ch.index or pos - 1, delta = msg,
      logprobs = ch.logprobs, finish_reason = ch.finish_reason } } }, out, n)
  end
  out[n + 1] = K_DONE
  self._rn, self._ri = n + 1, 1
end

-- make records available; false when the stream is over
function Stream:_fill()
  while true do
    if self._ri <= self._rn then return true end
    if self.finished or self._ended then return false end
    local req = self._req
    local done, ok, name, msg = req:result()
    if self._plain == nil then
      -- is the body an event stream? known with the first body byte
      local sse = req:is_sse()
      if sse == nil and not done then
        self.T.wait(req)
      else
        self._plain = not sse
      end
    elseif self._plain then
      if not done then
        self.T.wait(req)
      else
        if ok then self:_plain_body()
        else self:_finish(stream_error(self, { kind = errors.transport_kind(name), name = name, message = msg })) end
        self._ended = true
        return self._ri <= self._rn
      end
    else
      local n, stop = req:read_records(self._out, self._flags)
      if n > 0 then
        self._ri, self._rn = 1, n
        if stop then self._stop = true end
        self.last_data = monotime()
        return true
      end
      if self._stop then
        -- [DONE] or a fatal record was handed out: the stream is over
        self._ended = true
        return false
      end
      if done then
        self._ended = true
        if not ok then
          self:_finish(stream_error(self, { kind = errors.transport_kind(name), name = name, message = msg }))
        elseif req:pending() then
          -- the one unterminated event accepted: a final "data: [DONE]"
          local n2 = req:read_records(self._out, self._flags, true)
          if n2 == 1 and self._out[1] == K_DONE then
            self._done_seen = true
          else
            self:_finish(stream_error(self, { kind = "protocol",
              message = "stream ended inside an event (truncated)" }))
          end
        elseif not self.acc.finished_n and not self._done_seen then
          self:_finish(stream_error(self, { kind = "protocol",
            message = "stream ended before any choice finished and without [DONE]" }))
        end
        if ok and not self.finished then
          -- ended without [DONE]: a UTF-16 half still waiting becomes U+FFFD
          local nf = req:flush_records(self._out, self._flags)
          if nf > 0 then
            self._ri, self._rn = 1, nf
            return true
          end
        end
        return false
      end
      -- all choices finished: wait at most `grace` for [DONE] / usage / close
      local acc = self.acc
      if acc.finished_n and acc.finished_n >= #acc.order then
        local since = self.last_data or monotime()
        local left = self.grace - (monotime() - since)
        if left <= 0 then
          self._ended = true
          return false
        end
        self.T.wait(req, left)
      else
        self.T.wait(req)
      end
    end
  end
end

-- a fatal record (K_ERROR / K_BAD) at out[i]: ends the stream with an error
function Stream:_fatal(out, i)
  local k = out[i]
  if k == K_ERROR then
    -- the error envelope is read where every envelope is (oai.errors)
    self:_finish(stream_error(self, errors.api_fields(out[i + 1],
      { status = self.ctx.status, data = out[i + 2] }, "error event in stream")))
  else
    local raw, msg = out[i + 1], out[i + 2]
    self:_finish(stream_error(self, { kind = "protocol",
      message = "invalid chunk in stream: " .. tostring(msg), data = raw,
      body = type(raw) == "string" and raw:sub(1, 2048) or nil }))
  end
end

-- the next record, applied to the accumulator: kind, slot index (or nil at
-- end).  A K_RAW record (a whole decoded chunk) is returned as such when
-- want_raw (chunks()), else expanded into its records.
function Stream:_next(want_raw)
  while self._ri > self._rn do
    local sv = self._saved
    if sv then
      self._saved = nil
      self._out, self._ri, self._rn = sv[1], sv[2], sv[3]
    elseif not self:_fill() then
      if not self.finished then self:_finish(nil) end
      return nil
    end
  end
  local out, i = self._out, self._ri
  local k = out[i]
  if k == K_DONE then
    self._done_seen = true
    self._ri = i + 1
    return k, i
  elseif k == K_ERROR or k == K_BAD then
    self._ri = self._rn + 1
    self:_fatal(out, i)
    return nil
  elseif k == K_RAW then
    local chunk = out[i + 1]
    self._ri = i + 2
    local tmp = {}
    local n = records_from_chunk(chunk, tmp, 0)
    if not want_raw then
      self._saved = { out, self._ri, self._rn }
      self._out, self._ri, self._rn = tmp, 1, n
      return self:_next(false)
    end
    local j = 1
    while j <= n do
      local kk = tmp[j]
      if kk == K_ERROR or kk == K_BAD then
        self._ri = self._rn + 1
        self:_fatal(tmp, j)
        break
      end
      j = self.acc:apply(tmp, j)
    end
    return K_RAW, nil, chunk
  end
  self._ri = self.acc:apply(out, i)
  return k, i
end

--- Iterate over content deltas (strings).
---@return function iterator
function Stream:text()
  local closer = setclose(self)
  local choices = self.acc.choices
  return function()
    while true do
      local i, out = self._ri, self._out
      if i <= self._rn and out[i] == K_CONTENT then
        -- the hot path, inline: a content record of a choice seen before
        local ch, t = choices[out[i + 1]], out[i + 2]
        if ch then
          self._ri = i + 3
          local np = ch.np + 1
          ch.parts[np] = t
          ch.np = np
          if t ~= "" then return t end
        else
          local k, j = self:_next()
          if k == nil then return nil end
          t = self._out[j + 2]
          if t ~= "" then return t end
        end
      else
        local k, j = self:_next()
        if k == nil then return nil end
        if k == K_CONTENT then
          local t = self._out[j + 2]
          if t ~= "" then return t end
        end
      end
    end
  end, nil, nil, closer
end

local function event_of(s, k, i)
  local out = s._out
  if k == K_CONTENT then
    return { type = "content", index = out[i + 1], text = out[i + 2] }
  elseif k == K_REASONING then
    return { type = "reasoning", index = out[i + 1], text = out[i + 2], field = out[i + 3] }
  elseif k == K_REFUSAL then
    return { type = "refusal", index = out[i + 1], text = out[i + 2] }
  elseif k == K_TOOL then
    return { type = "tool_call", index = out[i + 1], call_index = out[i + 3],
             id = out[i + 4], name = out[i + 6], arguments = out[i + 7] or "" }
  elseif k == K_USAGE then
    return { type = "usage", usage = out[i + 1] }
  elseif k == K_FINISH then
    return { type = "finish", index = out[i + 1], reason = out[i + 2] }
  elseif k == K_ROLE then
    return { type = "role", index = out[i + 1], role = out[i + 2] }
  end
  return nil
end

-- tool events: fill in the call's resolved index and id
local function tool_event(s, ev)
  local ch = s.acc.choices[ev.index]
  if ch then
    local call
    if ev.call_index ~= nil then call = ch.by_index[ev.call_index]
    elseif ev.id ~= nil then call = ch.by_id[ev.id]
    else call = ch.calls[#ch.calls] end
    if call then
      ev.call_index = call.index or (call.n - 1)
      ev.id = ev.id or call.id
      ev.name = ev.name or call.name
    end
  end
  return ev
end

--- Iterate over typed events: {type="content"|"reasoning"|"refusal"|
--- "tool_call"|"usage"|"finish", ...}.
---@return function iterator
function Stream:events()
  local closer = setclose(self)
  return function()
    while true do
      local k, i = self:_next()
      if k == nil then return nil end
      if k ~= K_ROLE then
        local ev = event_of(self, k, i)
        if ev then
          if ev.type == "tool_call" then ev = tool_event(self, ev) end
          if ev.type ~= "content" or ev.text ~= "" then return ev end
        end
      end
    end
  end, nil, nil, closer
end

--- Iterate over each decoded chat.completion.chunk table.
---@return function iterator
function Stream:chunks()
  self._flags = FLAG_RAW
  local closer = setclose(self)
  return function()
    while true do
      local k, _, chunk = self:_next(true)
      if k == nil then return nil end
      if k == K_RAW then return chunk end
    end
  end, nil, nil, closer
end

--- Wait for the end: the completion (non-streamed shape), or nil, err with
--- err.partial holding everything accumulated so far.
---@return table? completion
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function Stream:result()
  -- drain: content records of known choices inline (the common case), the
  -- rest through _next
  local choices = self.acc.choices
  while true do
    local i, out = self._ri, self._out
    local ch = i <= self._rn and out[i] == K_CONTENT and choices[out[i + 1]]
    if ch then
      self._ri = i + 3
      local np = ch.np + 1
      ch.parts[np] = out[i + 2]
      ch.np = np
    elseif not self:_next() then
      break
    end
  end
  if self.err then return fail(self.err) end
  if self._result == nil then
    self._result = self.acc:completion()
    if self.ctx.remember then self.ctx.remember(self._result) end
  end
  return self._result
end

--- The completion accumulated so far (also while streaming).
---@return table completion
function Stream:partial()
  return self.acc:completion()
end

-- end the stream now with a "canceled" error saying why
function Stream:_abort(message)
  if self.finished then return end
  self:_finish(stream_error(self, { kind = "canceled", message = message }))
end

--- Stop the transfer now; the iterators end at once, result() then returns
--- nil, err (kind "canceled") whose err.partial is what was handed out.
---@return nil
function Stream:cancel()
  return self:_abort("stream canceled")
end

--- "streaming" until the end was read, then "done", "failed" or "canceled".
---@return string status
function Stream:status()
  if not self.finished then return "streaming" end
  local err = self.err
  if err == nil then return "done" end
  if err.kind == "canceled" then return "canceled" end
  return "failed"
end

function Stream:__tostring()
  return "oai.stream (" .. self:status() .. ")"
end

return M
