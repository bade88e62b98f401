-- bench/profile_s1.lua: where the CPU time of S1 goes, layer by layer, without
-- process start-up (os.clock() around the drain of each stream only).
--
--   LUA_CPATH='build/5.4/?.so;;' LUA_PATH='lua/?.lua;lua/?/init.lua;;' \
--     lua5.4 bench/profile_s1.lua [CHUNKS] [REPEATS]
--   PROFILE_LAYERS=records,text   only these layers (e.g. under perf record)
--   PROFILE_URL=http://127.0.0.1:PORT/v1   a running oai.testing server instead of a new one
--
-- Starts its own oai.testing server and, for each layer, drains REPEATS
-- streams of CHUNKS chunks (x-test-bench: 1, the whole body at once):
--   wait       only loop.wait until the transfer is done (libcurl + kernel;
--              the body is buffered, not framed)
--   records    the C hot path: req:read_records() after every wait (SSE framing +
--              chunk scanning + records), no Lua per record
--   records+lua  records plus the least Lua can do with them (append content to an array)
--   events-c   req:read(): SSE framing only, one Lua table per event
--   text       for t in s:text()      (records + stream.lua's _next + accumulator apply + iterator)
--   result     s:result()
--   events     for ev in s:events()
--   cjson      for scale: lua-cjson decoding every event's data (framing not included)
-- Prints the median CPU µs per chunk of each layer.
local oai = require "oai"
local loop = require "oai.loop"
local testing = require "oai.testing"

local CHUNKS = tonumber(arg[1]) or 20000
local REPEATS = tonumber(arg[2]) or 7
local REQUEST = { model = "bench", messages = { { role = "user", content = "hi" } } }

-- PROFILE_URL=http://127.0.0.1:PORT/v1: use a running server (keeps nginx out of a profile)
local url = os.getenv("PROFILE_URL")
local srv = not url and testing.start {} or nil
local client = oai.new { base_url = url or srv.url, api_key = "sk-bench", max_retries = 0,
  headers = { ["x-test-chunks"] = tostring(CHUNKS), ["x-test-bench"] = "1" } }

local clock = os.clock

local function open()
  local s = assert(client:stream(REQUEST))
  return s, s._req
end

local layers = {}
local order = {}
local function layer(name, fn)
  order[#order + 1] = name
  layers[name] = fn
end

-- the same response read as a plain body: libcurl and the kernel only
-- (a stream's transfer pauses when its bytes are not framed, so the
-- unframed layers use a plain request)
local function plain_body()
  local body = oai.json.encode({ model = REQUEST.model, messages = REQUEST.messages, stream = true })
  local req = oai.core.request { url = (url or srv.url) .. "/chat/completions", method = "POST", body = body,
    headers = { ["Content-Type"] = "application/json", ["x-test-chunks"] = tostring(CHUNKS), ["x-test-bench"] = "1" } }
  loop.start(req)
  return req
end

layer("wait", function()
  local req = plain_body()
  local t0 = clock()
  while not req:result() do loop.wait(req) end
  local dt = clock() - t0
  req:close()
  return dt
end)

-- drain a new stream at the transport level: read(req) -> items taken this
-- pass, stop; waits for the transfer when a pass took nothing
local function drain(read)
  local s, req = open()
  local t0 = clock()
  while true do
    local n, stop = read(req)
    if stop then break end
    if n == 0 then
      if req:result() then break end
      loop.wait(req)
    end
  end
  local dt = clock() - t0
  s:cancel()
  return dt
end

layer("records", function()
  local out = {}
  return drain(function(req) return req:read_records(out, 0) end)
end)

-- the least Lua can do with the records: what text() + accumulation could cost
-- over `records` (content appended to one parts array, other kinds skipped)
local ARITY = require("oai.records").arity
layer("records+lua", function()
  local out, parts, np = {}, {}, 0
  return drain(function(req)
    local n, stop = req:read_records(out, 0)
    local i = 1
    while i <= n do
      local k = out[i]
      if k == 1 then
        local t = out[i + 2]
        if t ~= "" then np = np + 1; parts[np] = t end
      end
      i = i + 1 + (ARITY[k] or 0)
    end
    return n, stop
  end)
end)

layer("events-c", function()
  return drain(function(req)
    local evs = assert(req:read())
    local last = evs[#evs]
    return #evs, last ~= nil and last.data == "[DONE]"
  end)
end)

layer("text", function()
  local s = open()
  local t0 = clock()
  local n = 0
  for t in s:text() do n = n + #t end
  return clock() - t0
end)

layer("result", function()
  local s = open()
  local t0 = clock()
  assert(s:result())
  return clock() - t0
end)

layer("events", function()
  local s = open()
  local t0 = clock()
  for _ in s:events() do end
  return clock() - t0
end)

local ok_cjson, cjson = pcall(require, "cjson")
if ok_cjson then
  layer("cjson", function()
    local req = plain_body()
    while not req:result() do loop.wait(req) end
    local evs = assert(oai.sse():feed(req:body()))
    req:close()
    local t0 = clock()
    for i = 1, #evs do
      local d = evs[i].data
      if d ~= "[DONE]" then cjson.decode(d) end
    end
    return clock() - t0
  end)
end

local function median(xs)
  table.sort(xs)
  local n = #xs
  if n % 2 == 1 then return xs[(n + 1) / 2] end
  return (xs[n / 2] + xs[n / 2 + 1]) / 2
end

-- PROFILE_LAYERS=records,text: only these (e.g. under perf or callgrind)
local only = os.getenv("PROFILE_LAYERS")
if only then
  local keep = {}
  for w in only:gmatch("[^,%s]+") do keep[w] = true end
  local o2 = {}
  for _, name in ipairs(order) do if keep[name] then o2[#o2 + 1] = name end end
  order = o2
end

local results = {}
for _, name in ipairs(order) do results[name] = {} end
for _ = 1, REPEATS do
  for _, name in ipairs(order) do
    collectgarbage()
    local dt = layers[name]()
    local xs = results[name]
    xs[#xs + 1] = dt
  end
end
if srv then srv:stop() end

print(("%s, %d chunks, median of %d (CPU µs per chunk, os.clock)"):format(
  _VERSION .. (jit and (" / " .. jit.version) or ""), CHUNKS, REPEATS))
for _, name in ipairs(order) do
  print(("  %-11s %6.3f"):format(name, median(results[name]) * 1e6 / CHUNKS))
end
