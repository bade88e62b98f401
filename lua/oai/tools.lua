--- oai.tools: a tool registry and the tool-call loop.
---
---   local tools = oai.tools {
---     get_weather = { description = "Current weather", parameters = {...},
---                     handler = function(args, call) return { temp_c = 21 } end },
---   }
---   tools:definitions()                 -- the request's `tools` array
---   tools:dispatch(tool_calls, opts)    -- `tool` messages, in call order
---   tools:run(client, request, opts)    -- final, err, messages
---
--- Whatever goes wrong with one call (unknown tool, arguments that are not
--- JSON or do not fit the tool's schema, a handler returning nil, msg or
--- raising) becomes that call's tool message `error: ...`, so the model can
--- correct itself; nothing is raised.
local core = require "oai.native"
local loop = require "oai.loop"
local errors = require "oai.errors"
local schema = require "oai.schema"
local messages = require "oai.messages"
local transport = require "oai.transport"
local reply = require "oai.reply"

local null = core.null
local json_encode, json_decode = core.json_encode, core.json_decode
local type, pairs, ipairs, tostring, error, pcall, setmetatable =
  type, pairs, ipairs, tostring, error, pcall, setmetatable
local sort, concat = table.sort, table.concat

local M = {}

-- Can a coroutine yield from inside pcall?  Not on PUC Lua 5.1 (LuaJIT and 5.2+
-- can).  Where it cannot, a handler that may yield runs as its own task.
-- Decided from the runtime, never by resuming a probe coroutine: loading a
-- module must not resume or yield (inside nginx, `require` runs in a request's
-- coroutine, and ngx_lua's coroutine.resume yields it: "attempt to yield
-- across C-call boundary").
local PCALL_YIELDS = rawget(_G, "jit") ~= nil or _VERSION ~= "Lua 5.1"

---@class oai.ToolSpec
---@field description? string
---@field parameters? table JSON schema of the arguments object
---@field strict? boolean
---@field handler fun(args: table, call: table): any, string?

---@class oai.Toolset
local Toolset = {}
Toolset.__index = Toolset
M.Toolset = Toolset

function Toolset:__tostring()
  local names = {}
  for i, t in ipairs(self._list) do names[i] = t.name end
  return "oai.tools (" .. concat(names, ", ") .. ")"
end

--- Add a tool.
---@param name string
---@param spec oai.ToolSpec
---@return oai.Toolset self
function Toolset:add(name, spec)
  if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
    error("oai.tools: tool names are letters, digits, _ and - (got " .. tostring(name) .. ")", 2)
  end
  if type(spec) ~= "table" then error("oai.tools: tool " .. name .. " must be a table", 2) end
  if type(spec.handler) ~= "function" then
    error("oai.tools: tool " .. name .. " needs a handler function", 2)
  end
  if spec.parameters ~= nil and type(spec.parameters) ~= "table" then
    error("oai.tools: parameters of " .. name .. " must be a table (a JSON schema)", 2)
  end
  if self._by_name[name] then error("oai.tools: tool " .. name .. " is defined twice", 2) end
  local t = { name = name, description = spec.description, parameters = spec.parameters,
              strict = spec.strict, handler = spec.handler }
  self._by_name[name] = t
  self._list[#self._list + 1] = t
  return self
end

--- Create a toolset from a map name -> spec (listed sorted by name) or from
--- an array of specs with a `name` field (listed in that order).
---@param specs? table<string, oai.ToolSpec>|oai.ToolSpec[]
---@return oai.Toolset
function M.new(specs)
  if specs ~= nil and type(specs) ~= "table" then error("oai.tools: expected a table of tools", 2) end
  local self = setmetatable({ _list = {}, _by_name = {} }, Toolset)
  specs = specs or {}
  if specs[1] ~= nil then
    for i, spec in ipairs(specs) do
      if type(spec) ~= "table" then error("oai.tools: tool " .. i .. " must be a table", 2) end
      local ok, err = pcall(self.add, self, spec.name, spec)
      if not ok then error(err, 2) end
    end
  else
    local names = {}
    for name in pairs(specs) do names[#names + 1] = name end
    sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, name in ipairs(names) do
      local ok, err = pcall(self.add, self, name, specs[name])
      if not ok then error(err, 2) end
    end
  end
  return self
end

--- The request's `tools` array: {type = "function", function = {name,
--- description, parameters, strict}} per tool.
---@return table[]
function Toolset:definitions()
  local out = core.array()
  for i, t in ipairs(self._list) do
    out[i] = { type = "function", ["function"] = {
      name = t.name, description = t.description, parameters = t.parameters, strict = t.strict } }
  end
  return out
end

--- The names of the tools, in definition order.
---@return string[]
function Toolset:names()
  local out = {}
  for i, t in ipairs(self._list) do out[i] = t.name end
  return out
end

---------------------------------------------------------------- one call

-- the tool and its decoded arguments, or nil and what is wrong
local function prepare(self, call)
  local fn = type(call) == "table" and call["function"]
  if type(fn) ~= "table" then return nil, "malformed tool call (no function)" end
  local name = fn.name
  local tool = type(name) == "string" and self._by_name[name]
  if not tool then
    return nil, ("unknown tool %q; the tools are: %s"):format(tostring(name), concat(self:names(), ", "))
  end
  local args = fn.arguments
  if args == nil or args == null or args == "" then
    args = core.object()
  elseif type(args) == "string" then
    local v, derr = json_decode(args)
    if v == nil then
      return nil, "the arguments of " .. name .. " are not valid JSON (" .. tostring(derr) .. ")"
    end
    args = v
  end
  if schema.json_type(args) ~= "object" then
    return nil, "the arguments of " .. name .. " must be a JSON object, not " .. schema.json_type(args)
  end
  if tool.parameters then
    local ok, problem = schema.check(args, tool.parameters, "$")
    if not ok then return nil, "invalid arguments for " .. name .. ": " .. problem end
  end
  return tool, args
end

-- "file.lua:12: msg" -> "msg" (the model does not need our line numbers)
local function error_text(e)
  if type(e) == "string" then
    local s = e:gsub("^[%w_%.%-/\\]+:%d+: ", "", 1):gsub('^%[string ".-"%]:%d+: ', "", 1)
    return s
  end
  if type(e) == "table" and type(e.message) == "string" and not errors.is(e) then return e.message end
  return tostring(e)
end

-- what a handler's results become: content, err
local function outcome(v, msg)
  if (v == nil or v == false) and msg ~= nil then return nil, tostring(msg) end
  if type(v) == "string" then return v end
  if v == nil then v = null end
  local ok, s = pcall(json_encode, v)
  if not ok then return nil, "the result cannot be encoded as JSON: " .. error_text(s) end
  return s
end

local RETURNED = {}
local function noop() end

-- tasks of the current host (light threads inside nginx, where oai.loop
-- must not run)
local function spawn_handler(tool, args, call)
  return transport.spawn({ on_error = noop }, function()
    return RETURNED, tool.handler(args, call)
  end)
end

-- a handler run as a task: content, err
local function task_outcome(task)
  local mark, v, msg = task:wait()
  if mark == RETURNED then return outcome(v, msg) end
  return nil, error_text(v) -- wait() gave nil, the error
end

-- a handler called here: content, err
local function direct_outcome(tool, args, call)
  local ok, v, msg = pcall(tool.handler, args, call)
  if ok then return outcome(v, msg) end
  return nil, error_text(v)
end

local function tool_message(call, content, err)
  local text = err and ("error: " .. err) or content
  local id = type(call) == "table" and call.id or nil
  return { role = "tool", tool_call_id = type(id) == "string" and id or "", content = text }, text
end

---@class oai.DispatchOptions
---@field parallel? boolean run the handlers of these calls as concurrent tasks (false)
---@field on_call? fun(call: table, args: table): boolean?, string? before a handler runs; returning false (and a reason) declines the call, which is reported as `error: <reason>`
---@field on_result? fun(call: table, content: string, err: string?) after each call, with the tool message text and, for failures, the error alone

--- Run the handlers of a reply's tool calls; returns the `tool` messages in
--- call order.  Failures become `error: ...` messages, never raise (except
--- errors raised by on_call / on_result themselves).
---@param tool_calls table[] a reply message's tool_calls
---@param opts? oai.DispatchOptions
---@return oai.Message[]
function Toolset:dispatch(tool_calls, opts)
  if type(tool_calls) ~= "table" then error("tools:dispatch: tool_calls must be an array", 2) end
  opts = opts or {}
  local on_call, on_result = opts.on_call, opts.on_result
  local in_task = loop.current_task() ~= nil
  local n = #tool_calls
  -- validate and ask on_call, in call order
  local jobs = {}
  for i = 1, n do
    local call = tool_calls[i]
    local tool, args = prepare(self, call)
    local job = { call = call }
    if not tool then
      job.err = args
    else
      job.tool, job.args = tool, args
      if on_call then
        local go, why = on_call(call, args)
        if go == false then
          job.tool = nil
          job.err = why ~= nil and tostring(why) or ("the call of " .. tool.name .. " was declined")
        end
      end
    end
    jobs[i] = job
  end
  local out = core.array()
  if opts.parallel then
    local any = false
    for _, job in ipairs(jobs) do
      if job.tool then job.task = spawn_handler(job.tool, job.args, job.call); any = true end
    end
    -- outside a task, start them now (task:wait() then only waits for I/O)
    -- (a host's own tasks start at once, and oai.loop must not run there)
    if any and not in_task and not transport.hosted() then loop.pump(0) end
    for _, job in ipairs(jobs) do
      if job.task then job.content, job.err = task_outcome(job.task) end
    end
  end
  for i, job in ipairs(jobs) do
    if job.tool and not job.task then
      if in_task and not PCALL_YIELDS then
        job.content, job.err = task_outcome(spawn_handler(job.tool, job.args, job.call))
      else
        job.content, job.err = direct_outcome(job.tool, job.args, job.call)
      end
    end
    local msg, text = tool_message(job.call, job.content, job.err)
    out[i] = msg
    if on_result then on_result(job.call, text, job.err) end
  end
  return out
end

---------------------------------------------------------------- the loop

local call_ids = 0

---@class oai.RunOptions: oai.DispatchOptions
---@field max_rounds? integer most requests to the model (10)
---@field stream? boolean use client:stream and its result() (false)
---@field keep_reasoning? boolean send the replies' reasoning_content back (false)
---@field on_response? fun(completion: table, round: integer) each model reply, before its calls run
---@field headers? table<string,string> and any other per-call client option or stream callback

--- The tool-call loop: request; while the reply calls tools, run them,
--- append the assistant message and the tool messages, request again.
--- The caller's request is not modified.  `request.tools` defaults to
--- tools:definitions(); a forcing `tool_choice` ("required" or a named
--- function) applies to the first request only.
---@param client oai.Client
---@param request table a Chat Completions request
---@param opts? oai.RunOptions
---@return table? final the last completion (a reply without tool calls)
---@return string? message of the failure (tostring(err))
---@return oai.Error? err the request's error, or kind "tool_loop" after max_rounds (err.messages)
---@return oai.Message[] messages the whole history: request.messages and every message added
function Toolset:run(client, request, opts)
  if type(client) ~= "table" or type(client.chat) ~= "function" then
    error("tools:run: expected a client as first argument", 2)
  end
  if type(request) ~= "table" then error("tools:run: request must be a table", 2) end
  opts = opts or {}
  local max_rounds = opts.max_rounds or 10
  if type(max_rounds) ~= "number" or not (max_rounds >= 1 and max_rounds <= 1e6)   -- NaN fails both
    or max_rounds ~= math.floor(max_rounds) then
    error("tools:run: max_rounds must be a positive integer (got "
      .. (type(max_rounds) ~= "number" and type(max_rounds) or max_rounds ~= max_rounds and "nan"
        or tostring(max_rounds)) .. ")", 2)
  end
  local base = {}
  for k, v in pairs(request) do base[k] = v end
  if base.tools == nil then base.tools = self:definitions() end
  local history = core.array()
  if type(request.messages) == "table" then
    for i, m in ipairs(request.messages) do history[i] = m end
  end
  local added = setmetatable({}, { __mode = "k" })
  local keep = opts.keep_reasoning
  local last
  for round = 1, max_rounds do
    local req = {}
    for k, v in pairs(base) do req[k] = v end
    local send = core.array()
    for i, m in ipairs(history) do
      send[i] = (added[m] and not keep) and messages.without_reasoning(m) or m
    end
    req.messages = send
    local res, emsg, err = reply.ask(client, req, opts, opts.stream)
    if not res then
      err.messages = err.messages or history
      return nil, emsg, err, history
    end
    last = res
    if opts.on_response then opts.on_response(res, round) end
    local choice, msg = reply.message(res)
    if not choice then
      msg.messages = history
      return nil, tostring(msg), msg, history
    end
    local m = messages.from_reply(msg)
    history[#history + 1] = m
    added[m] = true
    local calls = m.tool_calls
    if not calls then return res, nil, nil, history end
    for _, c in ipairs(calls) do
      if type(c.id) ~= "string" or c.id == "" then
        call_ids = call_ids + 1
        c.id = "call_oai_" .. call_ids
      end
    end
    local results = self:dispatch(calls, opts)
    for _, m in ipairs(results) do history[#history + 1] = m end
    local tc = base.tool_choice
    if tc == "required" or type(tc) == "table" then base.tool_choice = nil end
  end
  local lerr = errors.new({
    kind = "tool_loop",
    message = ("the model still calls tools after %d rounds (max_rounds)"):format(max_rounds),
    rounds = max_rounds, messages = history, completion = last,
  })
  return nil, tostring(lerr), lerr, history
end

return M
