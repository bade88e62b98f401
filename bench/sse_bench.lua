-- sse_bench.lua: throughput of oai.sse through the Lua binding (p:feed,
-- which builds a table per event), in 16 KiB and 1-byte pieces.
--
--   LUA_CPATH='build/5.4/?.so' LUA_PATH='lua/?.lua;lua/?/init.lua' lua5.4 bench/sse_bench.lua
--   LUA_CPATH='build/luajit/?.so' LUA_PATH='lua/?.lua;lua/?/init.lua' luajit bench/sse_bench.lua
--
-- The framing alone, without Lua, is measured by bench/sse_bench.c.
-- CPU time via os.clock(); best and median of several runs.
local oai = require "oai"

local EVENTS = 20000

local function make_stream(n)
  local words = { " the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", "." }
  local parts = {}
  for i = 1, n do
    parts[i] = 'data: {"id":"chatcmpl-9x8Yz7AbCdEfGhIjKlMnOpQrStUv","object":"chat.completion.chunk",'
      .. '"created":1700000000,"model":"gpt-4o-mini","system_fingerprint":"fp_x",'
      .. '"choices":[{"index":0,"delta":{"content":"' .. words[(i - 1) % 10 + 1]
      .. '"},"logprobs":null,"finish_reason":null}]}\n\n'
  end
  parts[n + 1] = "data: [DONE]\n\n"
  return table.concat(parts)
end

local function split(s, size)
  local pieces = {}
  for i = 1, #s, size do pieces[#pieces + 1] = s:sub(i, i + size - 1) end
  return pieces
end

-- one pass: feed every piece to a fresh parser; seconds, events seen
local function pass(pieces)
  local p = oai.sse()
  local n = 0
  local t0 = os.clock()
  for i = 1, #pieces do
    local events = p:feed(pieces[i])
    n = n + #events
  end
  local t = os.clock() - t0
  assert(not p:pending())
  p:close()
  return t, n
end

local function measure(name, pieces, bytes, events, runs)
  local times = {}
  collectgarbage()
  for r = 1, runs do
    local t, n = pass(pieces)
    assert(n == events, ("%s: %d events, expected %d"):format(name, n, events))
    times[r] = t
  end
  table.sort(times)
  local best, median = times[1], times[math.floor((runs + 1) / 2)]
  print(("%-24s %10.1f %12.1f %12.0f"):format(name, bytes / best / 1e6,
    bytes / median / 1e6, best / events * 1e9))
end

local stream = make_stream(EVENTS)
-- 1-byte pieces: a tenth of the stream, so the piece table stays small
local small = make_stream(EVENTS / 10)

print(("%s, stream: %d events + [DONE], %.2f MB, %d bytes/event"):format(
  jit and jit.version or _VERSION, EVENTS, #stream / 1e6, math.floor(#stream / (EVENTS + 1))))
print()
print(("%-24s %10s %12s %12s"):format("Lua p:feed, pieces of", "best MB/s", "median MB/s",
  "ns/event"))
measure("16 KiB", split(stream, 16384), #stream, EVENTS + 1, 15)
measure("1 byte (2,000 events)", split(small, 1), #small, EVENTS / 10 + 1, 5)
