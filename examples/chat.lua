-- examples/chat.lua: a streaming chat CLI (also `make demo`).
-- Streams the reply as it arrives, shows reasoning dimmed and tool calls,
-- prints usage and tokens per second; commands: /model NAME, /system TEXT,
-- /save FILE, /load FILE, /clear, /quit; multi-line input: end a line with \
-- to continue it.  Ctrl-C cancels the reply in progress, not the program.
--
--   lua5.4 examples/chat.lua                 talk to $OPENAI_BASE_URL (or the local server)
--   lua5.4 examples/chat.lua --once "hi"     one exchange, then exit
--   options: --model NAME --system TEXT --base-url URL
local oai = require "oai"

local args, once = {}, nil
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    if a == "--once" then once = arg[i + 1]; i = i + 1
    elseif a:match("^%-%-") then args[a:sub(3)] = arg[i + 1]; i = i + 1
    end
    i = i + 1
  end
end

local base_url = args["base-url"] or os.getenv("OPENAI_BASE_URL")
local local_server
if not base_url or base_url == "" then
  -- no provider configured: the bundled local OpenAI-compatible server
  local_server = require("oai.testing").start {}
  base_url = local_server.url
end
local model = args.model or os.getenv("OPENAI_MODEL") or (local_server and "reasoner" or "gpt-4o-mini")
local client = oai.new { base_url = base_url, stream_usage = true,
  headers = local_server and { ["x-test-chunk-delay-ms"] = "25" } or nil }

-- colour only on a terminal, and never with NO_COLOR set (no-color.org)
local function stdout_is_tty()
  local r = os.execute("test -t 1")
  return r == true or r == 0
end
local tty = os.getenv("NO_COLOR") == nil and os.getenv("TERM") ~= nil and os.getenv("TERM") ~= "dumb"
  and stdout_is_tty()
local function dim(s) return tty and ("\27[2m" .. s .. "\27[0m") or s end
local function bold(s) return tty and ("\27[1m" .. s .. "\27[0m") or s end

local messages = {}
local system = args.system
local function history()
  local h = {}
  if system then h[1] = { role = "system", content = system } end
  for _, m in ipairs(messages) do h[#h + 1] = m end
  return h
end

local function turn(text)
  messages[#messages + 1] = { role = "user", content = text }
  local t0 = oai.core.monotime()
  local stream, err = client:stream { model = model, messages = history() }
  if not stream then
    io.write(bold("error: "), tostring(err), "\n")
    table.remove(messages)
    return
  end
  local in_reasoning = false
  local first
  -- Ctrl-C while the reply streams cancels it (SIGINT becomes a flag that
  -- the loop checks after every pump); at the prompt it ends the program
  oai.core.sigint_trap(true)
  local canceled = false
  require("oai.loop").on_pump = function()
    if oai.core.sigint_take() and not canceled then
      canceled = true
      stream:cancel()
    end
  end
  local next_event = stream:events()
  while true do
    local ev = next_event()
    if not ev then break end
    first = first or oai.core.monotime()
    if ev.type == "reasoning" then
      if not in_reasoning then io.write(dim("[thinking] ")); in_reasoning = true end
      io.write(dim(ev.text))
    elseif ev.type == "content" then
      if in_reasoning then io.write("\n"); in_reasoning = false end
      io.write(ev.text)
    elseif ev.type == "tool_call" and ev.name then
      io.write(dim(("\n[tool call %s %s]"):format(ev.name, ev.arguments or "")))
    end
    io.flush()
    if oai.core.sigint_take() and not canceled then
      canceled = true
      stream:cancel()
    end
  end
  require("oai.loop").on_pump = nil
  oai.core.sigint_trap(false)
  if canceled then io.write(dim("\n[canceled]")) end
  io.write("\n")
  local res, _, rerr = stream:result()
  if not res then
    if not canceled then io.write(bold("error: "), tostring(rerr), "\n") end
    table.remove(messages)
    return
  end
  local msg = res.choices[1].message
  messages[#messages + 1] = { role = "assistant", content = msg.content }
  local u = res.usage
  if u and u ~= oai.null then
    local dt = oai.core.monotime() - (first or t0)
    io.write(dim(("[%d prompt + %d completion tokens, %.1f tokens/s, %.2f s]\n"):format(
      u.prompt_tokens or 0, u.completion_tokens or 0,
      dt > 0 and (u.completion_tokens or 0) / dt or 0, oai.core.monotime() - t0)))
  end
end

local function save(file)
  local f, e = io.open(file, "wb")
  if not f then return print("cannot save: " .. e) end
  f:write(oai.json.encode({ model = model, system = system or oai.null, messages = oai.array(messages) }))
  f:close()
  print("saved " .. #messages .. " messages to " .. file)
end

local function load(file)
  local f, e = io.open(file, "rb")
  if not f then return print("cannot load: " .. e) end
  local doc, derr = oai.json.decode(f:read("*a"))
  f:close()
  if type(doc) ~= "table" then return print("cannot load: " .. tostring(derr)) end
  messages = doc.messages or {}
  if type(doc.system) == "string" then system = doc.system end
  print("loaded " .. #messages .. " messages from " .. file)
end

local function command(line)
  local cmd, rest = line:match("^/(%S+)%s*(.*)$")
  if cmd == "model" then
    if rest ~= "" then model = rest end
    print("model: " .. model)
  elseif cmd == "system" then
    system = rest ~= "" and rest or nil
    print("system: " .. tostring(system))
  elseif cmd == "save" then save(rest)
  elseif cmd == "load" then load(rest)
  elseif cmd == "clear" then messages = {}; print("cleared")
  elseif cmd == "quit" or cmd == "exit" then return true
  else print("commands: /model NAME, /system TEXT, /save FILE, /load FILE, /clear, /quit") end
end

if once then
  io.write(bold("> "), once, "\n")
  turn(once)
else
  print(dim("oai chat: " .. base_url .. ", model " .. model .. " (/quit to leave)"))
  while true do
    io.write(bold("> "))
    io.flush()
    local ok, line = pcall(io.read, "*l")
    if not ok or line == nil then break end
    -- a trailing backslash continues the input on the next line
    while line:sub(-1) == "\\" do
      local more = io.read("*l")
      if not more then break end
      line = line:sub(1, -2) .. "\n" .. more
    end
    if line:sub(1, 1) == "/" then
      if command(line) then break end
    elseif line:match("%S") then
      turn(line)
    end
  end
end

if local_server then local_server:stop() end
