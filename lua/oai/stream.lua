--- oai.stream: the Stream object of client:stream().
---
--- The transport hands over records: a flat array that the C chunk decoder
--- (req:read_records) fills from the event stream, a few slots per delta,
--- without building the chunk table.  Everything here works on those
--- records: the iterators, the typed events, and the accumulation into a
--- completion of the non-streamed shape.
local core = require "oai.native"
local loop = require "oai.loop"
local errors = require "oai.errors"
local fail = errors.fail

local null = core.null
local json_decode, json_encode = core.json_decode, core.json_encode
local monotime = core.monotime
local type, pairs, ipairs, tostring, setmetatable, select = type, pairs, ipairs, tostring, setmetatable, select
local concat, sort = table.concat, table.sort

local M = {}

-- record kinds and their number of slots after the kind: defined once, in
-- the core (src/chunk.h)
local KINDS, ARITY = core.record_kinds, core.record_arity
local K_CONTENT, K_REASONING, K_REFUSAL, K_TOOL, K_FINISH, K_ROLE, K_USAGE, K_META,
      K_LOGPROBS, K_DELTA_EXTRA, K_CHOICE_EXTRA, K_TOP_EXTRA, K_ERROR, K_DONE, K_BAD, K_RAW =
      KINDS.CONTENT, KINDS.REASONING, KINDS.REFUSAL, KINDS.TOOL, KINDS.FINISH, KINDS.ROLE,
      KINDS.USAGE, KINDS.META, KINDS.LOGPROBS, KINDS.DELTA_EXTRA, KINDS.CHOICE_EXTRA,
      KINDS.TOP_EXTRA, KINDS.ERROR, KINDS.DONE, KINDS.BAD, KINDS.RAW
M.kinds = KINDS
M.arity = ARITY

---------------------------------------------------------------- records from a decoded chunk

local DELTA_KNOWN = { role = true, content = true, reasoning_content = true, reasoning = true,
                      refusal = true, tool_calls = true }
local CHOICE_KNOWN = { index = true, delta = true, finish_reason = true, logprobs = true }
local TOP_KNOWN = { id = true, object = true, created = true, model = true,
                    system_fingerprint = true, choices = true, usage = true, error = true }

local function nonempty(v)
  if type(v) == "string" then return v ~= "" and v or nil end
  if v == nil or v == null then return nil end
  return v
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do if type(k) == "string" then ks[#ks + 1] = k end end
  sort(ks)
  return ks
end

-- The generic path: a decoded chat.completion.chunk table -> records, the
-- same records the C decoder emits.  Used for chunks() and for chunk shapes
-- the C fast path does not take.
local function records_from_chunk(c, out, n)
  local function put(...)
    local k = select("#", ...)
    for i = 1, k do out[n + i] = (select(i, ...)) end
    n = n + k
  end
  if type(c) ~= "table" then
    put(K_BAD, json_encode(c), "event data is not a JSON object")
    return n
  end
  if c.error ~= nil and c.error ~= null then
    put(K_ERROR, c.error, nil)
    return n
  end
  if c.id ~= nil or c.model ~= nil or c.created ~= nil or c.system_fingerprint ~= nil then
    put(K_META, c.id, c.created, c.model, c.system_fingerprint, c.object)
  end
  local choices = c.choices
  if type(choices) == "table" then
    for pos = 1, #choices do
      local ch = choices[pos]
      if type(ch) == "table" then
        local idx = ch.index
        if type(idx) ~= "number" then idx = pos - 1 end
        local d = ch.delta
        if type(d) == "table" then
          if nonempty(d.role) then put(K_ROLE, idx, d.role) end
          if type(d.reasoning_content) == "string" then put(K_REASONING, idx, d.reasoning_content, "reasoning_content") end
          if type(d.reasoning) == "string" then put(K_REASONING, idx, d.reasoning, "reasoning") end
          if type(d.content) == "string" then put(K_CONTENT, idx, d.content) end
          if type(d.refusal) == "string" then put(K_REFUSAL, idx, d.refusal) end
          local tcs = d.tool_calls
          if type(tcs) == "table" then
            for tp = 1, #tcs do
              local tc = tcs[tp]
              if type(tc) == "table" then
                local fn = type(tc["function"]) == "table" and tc["function"] or {}
                local args = fn.arguments
                if type(args) == "table" then args = json_encode(args) end
                if type(args) ~= "string" then args = nil end
                local ti = tc.index
                if type(ti) ~= "number" then ti = nil end
                put(K_TOOL, idx, tp, ti, nonempty(tc.id), nonempty(tc.type), nonempty(fn.name), args)
              end
            end
          end
          for _, k in ipairs(sorted_keys(d)) do
            if not DELTA_KNOWN[k] and d[k] ~= null then put(K_DELTA_EXTRA, idx, k, d[k]) end
          end
        end
        if ch.logprobs ~= nil and ch.logprobs ~= null then put(K_LOGPROBS, idx, ch.logprobs) end
        for _, k in ipairs(sorted_keys(ch)) do
          if not CHOICE_KNOWN[k] and ch[k] ~= null then put(K_CHOICE_EXTRA, idx, k, ch[k]) end
        end
        if nonempty(ch.finish_reason) then put(K_FINISH, idx, ch.finish_reason) end
      end
    end
  end
  if type(c.usage) == "table" then put(K_USAGE, c.usage) end
  for _, k in ipairs(sorted_keys(c)) do
    if not TOP_KNOWN[k] and c[k] ~= null then put(K_TOP_EXTRA, k, c[k]) end
  end
  return n
end
M.records_from_chunk = records_from_chunk

---------------------------------------------------------------- accumulation

local function new_choice(idx)
  return { index = idx, parts = {}, np = 0, calls = {}, by_index = {}, by_id = {},
           extras = {}, extra_order = {}, choice_extras = {} }
end

local ids = 0
local function gen_id()
  ids = ids + 1
  return ("call_oai%x%04d"):format(math.floor(monotime() * 1000) % 0x1000000, ids)
end

local Acc = {}
Acc.__index = Acc

---@return table accumulator
function M.accumulator()
  return setmetatable({ choices = {}, order = {}, top_extras = {}, last_tool = {} }, Acc)
end

---@param idx integer choice index
---@return table choice state
function Acc:choice(idx)
  local ch = self.choices[idx]
  if not ch then
    ch = new_choice(idx)
    self.choices[idx] = ch
    self.order[#self.order + 1] = idx
  end
  return ch
end

local function add_text(ch, field, text)
  local buf = ch[field]
  if not buf then buf = {}; ch[field] = buf end
  buf[#buf + 1] = text
end

-- a tool-call delta -> the call it continues (index, then id, then position)
---@param idx integer choice index
---@param pos integer position in the delta
---@param ti? integer tool-call index
---@param id? string
---@param typ? string
---@param name? string
---@param args? string
---@return table call
function Acc:tool(idx, pos, ti, id, typ, name, args)
  local ch = self:choice(idx)
  local call
  if ti ~= nil then
    call = ch.by_index[ti]
  elseif id ~= nil then
    call = ch.by_id[id]
  else
    -- neither index nor id: the call at the same position
    call = ch.calls[pos]
  end
  if call == nil then
    call = { args = {}, index = ti }
    ch.calls[#ch.calls + 1] = call
    call.n = #ch.calls
    if ti ~= nil then ch.by_index[ti] = call end
  end
  if id ~= nil and call.id == nil then
    call.id = id
    ch.by_id[id] = call
  end
  if typ ~= nil and call.type == nil then call.type = typ end
  if name ~= nil and call.name == nil then call.name = name end
  if args ~= nil and args ~= "" then call.args[#call.args + 1] = args end
  return call
end

-- apply one record (kind at out[i]); returns the index after it
---@param out table records
---@param i integer slot of the record kind
---@return integer next slot
function Acc:apply(out, i)
  local k = out[i]
  if k == K_CONTENT then
    local ch = self:choice(out[i + 1])
    local np = ch.np + 1
    ch.parts[np] = out[i + 2]
    ch.np = np
  elseif k == K_REASONING then
    local ch = self:choice(out[i + 1])
    add_text(ch, "reasoning", out[i + 2])
    if not ch.reasoning_key then ch.reasoning_key = out[i + 3] end
  elseif k == K_REFUSAL then
    add_text(self:choice(out[i + 1]), "refusal", out[i + 2])
  elseif k == K_TOOL then
    self:tool(out[i + 1], out[i + 2], out[i + 3], out[i + 4], out[i + 5], out[i + 6], out[i + 7])
  elseif k == K_FINISH then
    local ch = self:choice(out[i + 1])
    if ch.finish_reason == nil then self.finished_n = (self.finished_n or 0) + 1 end
    ch.finish_reason = out[i + 2]
  elseif k == K_ROLE then
    local ch = self:choice(out[i + 1])
    if ch.role == nil then ch.role = out[i + 2] end
  elseif k == K_USAGE then
    self.usage = out[i + 1]
  elseif k == K_META then
    local id, created, model, fp, obj = out[i + 1], out[i + 2], out[i + 3], out[i + 4], out[i + 5]
    if self.id == nil and nonempty(id) then self.id = id end
    if self.created == nil and type(created) == "number" then self.created = created end
    if self.model == nil and nonempty(model) then self.model = model end
    if nonempty(fp) then self.system_fingerprint = fp end
    if obj ~= nil then self.object_seen = obj end
  elseif k == K_LOGPROBS then
    local ch = self:choice(out[i + 1])
    local lp = out[i + 2]
    if type(lp) == "table" then
      ch.logprobs = ch.logprobs or {}
      for _, f in ipairs({ "content", "refusal" }) do
        local list = lp[f]
        if type(list) == "table" then
          local dst = ch.logprobs[f]
          if dst == nil then dst = core.array(); ch.logprobs[f] = dst end
          for j = 1, #list do dst[#dst + 1] = list[j] end
        end
      end
    end
  elseif k == K_DELTA_EXTRA then
    local ch = self:choice(out[i + 1])
    local name, v = out[i + 2], out[i + 3]
    local old = ch.extras[name]
    if old == nil then ch.extra_order[#ch.extra_order + 1] = name end
    if type(v) == "string" and type(old) == "string" then v = old .. v end
    ch.extras[name] = v
  elseif k == K_CHOICE_EXTRA then
    local ch = self:choice(out[i + 1])
    ch.choice_extras[out[i + 2]] = out[i + 3]
  elseif k == K_TOP_EXTRA then
    self.top_extras[out[i + 1]] = out[i + 2]
  end
  return i + 1 + (ARITY[k] or 0)
end

local function joined(buf)
  if buf == nil then return nil end
  return concat(buf)
end

--- The completion so far, in the non-streamed shape.
---@return table completion
function Acc:completion()
  local c = {
    id = self.id,
    object = "chat.completion",
    created = self.created,
    model = self.model,
    system_fingerprint = self.system_fingerprint,
    usage = self.usage,
  }
  for k, v in pairs(self.top_extras) do if c[k] == nil then c[k] = v end end
  local idxs = {}
  for i = 1, #self.order do idxs[i] = self.order[i] end
  sort(idxs)
  local choices = core.array()
  for _, idx in ipairs(idxs) do
    local ch = self.choices[idx]
    local msg = { role = ch.role or "assistant" }
    if ch.np > 0 then msg.content = concat(ch.parts, "", 1, ch.np) else msg.content = null end
    local r = joined(ch.reasoning)
    if r then msg[ch.reasoning_key or "reasoning_content"] = r end
    msg.refusal = joined(ch.refusal) or null
    if #ch.calls > 0 then
      local calls = {}
      local ordered = {}
      for j = 1, #ch.calls do ordered[j] = ch.calls[j] end
      sort(ordered, function(a, b)
        local ai, bi = a.index, b.index
        if ai ~= nil and bi ~= nil and ai ~= bi then return ai < bi end
        return a.n < b.n
      end)
      for j, call in ipairs(ordered) do
        if call.id == nil then call.id = gen_id() end
        calls[j] = {
          id = call.id,
          type = call.type or "function",
          ["function"] = { name = call.name or "", arguments = concat(call.args) },
        }
      end
      msg.tool_calls = calls
    end
    for _, name in ipairs(ch.extra_order) do
      if msg[name] == nil then msg[name] = ch.extras[name] end
    end
    local choice = {
      index = idx,
      message = msg,
      finish_reason = ch.finish_reason or null,
      logprobs = ch.logprobs or null,
    }
    for k, v in pairs(ch.choice_extras) do if choice[k] == nil then choice[k] = v end end
    choices[#choices + 1] = choice
  end
  c.choices = choices
  return c
end

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
    acc = M.accumulator(), finished = false, ctx = ctx or {},
    grace = ctx and ctx.grace or 2,
    T = ctx and ctx.transport or { wait = loop.wait, forget = loop.forget },
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
    local e, raw = out[i + 1], out[i + 2]
    if type(e) ~= "table" then e = { message = tostring(e) } end
    local f = { kind = "api", status = self.ctx.status, data = raw }
    f.message = type(e.message) == "string" and e.message or "error event in stream"
    for _, key in ipairs({ "type", "code", "param" }) do
      if type(e[key]) == "string" or type(e[key]) == "number" then f[key] = e[key] end
    end
    f.error = e
    self:_finish(stream_error(self, f))
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
