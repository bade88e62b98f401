-- oai.sse: the incremental text/event-stream parser (src/sse.c, src/lsse.c).
-- Table-driven: every case is fed whole, byte by byte, in two pieces split at
-- every position and in three pieces at a selection of positions, and must
-- give the same events, pending() and retry() each time.
local oai = require "oai"

local BOM = "\239\187\191"

local function ev(data, type_, id)
  return { type = type_ or "message", data = data, id = id or "" }
end

-- { name, input, events, pending, retry }
local cases = {
  -- line ends
  { "LF line ends", "data: a\n\ndata: b\n\n", { ev "a", ev "b" }, false },
  { "CRLF line ends", "data: a\r\n\r\ndata: b\r\n\r\n", { ev "a", ev "b" }, false },
  { "CR line ends", "data: a\r\rdata: b\r\r", { ev "a", ev "b" }, false },
  { "mixed line ends in one event", "data: a\r\ndata: b\rdata: c\n\r\n",
    { ev "a\nb\nc" }, false },
  { "CRLF as one line end, not two", "data: a\r\ndata: b\r\n\r\n", { ev "a\nb" }, false },
  { "LF then CR as two line ends", "data: a\n\rdata: b\n\n", { ev "a", ev "b" }, false },
  { "CR then CRLF as two line ends", "data: a\r\r\ndata: b\r\n\r\n",
    { ev "a", ev "b" }, false },
  { "a lone LF after a dispatched CR event", "data: a\r\r\n\ndata: b\n\n",
    { ev "a", ev "b" }, false },

  -- byte order mark
  { "a leading BOM is skipped", BOM .. "data: a\n\n", { ev "a" }, false },
  { "a BOM alone is nothing", BOM, {}, false },
  { "only one BOM is skipped", BOM .. BOM .. "data: a\n\ndata: b\n\n", { ev "b" }, false },
  { "a BOM after the start is not skipped", "data: a\n\n" .. BOM .. "data: b\n\n",
    { ev "a" }, false },
  { "a BOM inside a value is data", "data: " .. BOM .. "x\n\n", { ev(BOM .. "x") }, false },
  { "a partial BOM is kept as field name bytes", "\239\187data: a\n\ndata: b\n\n",
    { ev "b" }, false },
  { "one BOM byte is kept as a field name byte", "\239data: a\n\ndata: b\n\n",
    { ev "b" }, false },
  { "a BOM then a partial BOM", BOM .. "\239\187data: a\n\ndata: b\n\n",
    { ev "b" }, false },
  { "a partial BOM at the end is pending", "\239\187", {}, true },
  { "a partial BOM line", "\239\187\n\ndata: a\n\n", { ev "a" }, false },

  -- comments and field syntax
  { "comments are ignored", ": hello\ndata: a\n: between\n\n", { ev "a" }, false },
  { "a comment alone dispatches nothing", ": ping\n\n", {}, false },
  { "a lone colon is a comment", ":\ndata: a\n\n", { ev "a" }, false },
  { "data: : keepalive is data, not a comment", "data: : keepalive\n\n",
    { ev ": keepalive" }, false },
  { "no space after the colon", "data:a\n\n", { ev "a" }, false },
  { "one space after the colon is removed", "data: a\n\n", { ev "a" }, false },
  { "only one space is removed", "data:  a\n\n", { ev " a" }, false },
  { "a tab is not removed", "data:\ta\n\n", { ev "\ta" }, false },
  { "trailing spaces are kept", "data: a  \n\n", { ev "a  " }, false },
  { "colons in the value are kept", "data: a:b: c\n\n", { ev "a:b: c" }, false },
  { "a field with no colon has an empty value", "data\n\n", { ev "" }, false },
  { "two bare data lines give one LF", "data\ndata\n\n", { ev "\n" }, false },
  { "multi-line data is joined with LF", "data: a\ndata: b\ndata: c\n\n",
    { ev "a\nb\nc" }, false },
  { "an empty data field dispatches empty data", "data:\n\n", { ev "" }, false },
  { "a data field of one space dispatches empty data", "data: \n\n", { ev "" }, false },
  { "an empty line inside data", "data: a\ndata:\ndata: b\n\n", { ev "a\n\nb" }, false },
  { "unknown fields are ignored",
    "foo: bar\ndata: a\nDATA: b\nData: c\ndata : d\ndatadata: e\n\n", { ev "a" }, false },
  { "a long field name without colon is ignored", "datadata\n\ndata: a\n\n",
    { ev "a" }, false },
  { "blank lines alone dispatch nothing", "\n\n\r\n\r\r\n", {}, false },

  -- event type
  { "event sets the type", "event: add\ndata: 1\n\n", { ev("1", "add") }, false },
  { "event without space", "event:add\ndata: 1\n\n", { ev("1", "add") }, false },
  { "event keeps a second space", "event:  add\ndata: 1\n\n", { ev("1", " add") }, false },
  { "the type is reset after a dispatch", "event: add\ndata: 1\n\ndata: 2\n\n",
    { ev("1", "add"), ev "2" }, false },
  { "the type is reset by a blank line without data", "event: add\n\ndata: 2\n\n",
    { ev "2" }, false },
  { "the last event field wins", "event: a\nevent: b\ndata: 1\n\n", { ev("1", "b") }, false },
  { "an empty event field means message", "event: add\nevent:\ndata: 1\n\n",
    { ev "1" }, false },
  { "a bare event field means message", "event: add\nevent\ndata: 1\n\n", { ev "1" }, false },

  -- id
  { "id applies to the event and stays", "id: 1\ndata: a\n\ndata: b\n\n",
    { ev("a", nil, "1"), ev("b", nil, "1") }, false },
  { "id set by a blank-line-only block", "id: 5\n\ndata: a\n\n", { ev("a", nil, "5") }, false },
  { "id with a NUL is ignored", "id: 1\ndata: a\n\nid: 2\0x\ndata: b\n\n",
    { ev("a", nil, "1"), ev("b", nil, "1") }, false },
  { "an empty id resets it", "id: 1\ndata: a\n\nid:\ndata: b\n\n",
    { ev("a", nil, "1"), ev "b" }, false },
  { "a bare id field resets it", "id: 1\ndata: a\n\nid\ndata: b\n\n",
    { ev("a", nil, "1"), ev "b" }, false },
  { "an id after the data still applies", "data: a\nid: 7\n\n", { ev("a", nil, "7") }, false },
  { "an id alone leaves nothing pending", "id: 3\n", {}, false },

  -- retry
  { "retry with digits", "retry: 3000\n", {}, false, 3000 },
  { "retry with leading zeros", "retry: 007\n", {}, false, 7 },
  { "retry zero", "retry: 0\n", {}, false, 0 },
  { "the last valid retry wins", "retry: 10\nretry: 20\n", {}, false, 20 },
  { "retry with a non-digit is ignored", "retry: 10\nretry: 12a\n", {}, false, 10 },
  { "retry with a sign is ignored", "retry: -1\nretry: +1\n", {}, false },
  { "retry with a trailing space is ignored", "retry: 1 \n", {}, false },
  { "retry with two leading spaces is ignored", "retry:  5\n", {}, false },
  { "an empty retry is ignored", "retry: 10\nretry:\n", {}, false, 10 },
  { "a bare retry field is ignored", "retry\n", {}, false },
  { "a retry too large is ignored", "retry: 10\nretry: 99999999999999999999999999\n",
    {}, false, 10 },

  -- pending and the end of the stream
  { "an unterminated last event is not dispatched", "data: a\n\ndata: b\n",
    { ev "a" }, true },
  { "a partial line is pending", "data: b", {}, true },
  { "a partial comment line is pending", ": ping", {}, true },
  { "a type without data is pending", "event: x\n", {}, true },
  { "a stream ending with CR is complete", "data: a\r\r", { ev "a" }, false },

  -- bytes pass through
  { "NUL and invalid UTF-8 pass through", "data: a\0b\255\254\192\n\n",
    { ev "a\0b\255\254\192" }, false },
  { "type bytes pass through", "event: \255\0\ndata: x\n\n", { ev("x", "\255\0") }, false },
  { "an id with invalid UTF-8 is kept", "id: \255\ndata: x\n\n", { ev("x", nil, "\255") }, false },
}

-- a realistic chat.completion.chunk stream
do
  local chunks = {
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
      .. '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant",'
      .. '"content":""},"finish_reason":null}]}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
      .. '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hel"},'
      .. '"finish_reason":null}]}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
      .. '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"lo\\n"},'
      .. '"finish_reason":null}]}',
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,'
      .. '"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},'
      .. '"finish_reason":"stop"}]}',
    "[DONE]",
  }
  local input, events = { ": OPENROUTER PROCESSING\n\n" }, {}
  for i = 1, #chunks do
    input[#input + 1] = "data: " .. chunks[i] .. "\n\n"
    events[i] = ev(chunks[i])
  end
  cases[#cases + 1] = { "an OpenAI-style chunk stream ending with [DONE]",
    table.concat(input), events, false }
end

-- feed pieces to a fresh parser; all events, pending(), retry()
local function run(pieces, opts)
  local p = oai.sse(opts)
  local all = {}
  for i = 1, #pieces do
    local events, err = p:feed(pieces[i])
    assert(events, err)
    for j = 1, #events do all[#all + 1] = events[j] end
  end
  local result = { events = all, pending = p:pending(), retry = p:retry() }
  p:close()
  return result
end

local function expected(case)
  return { events = case[3], pending = case[4], retry = case[5] }
end

local function bytes(s)
  local t = {}
  for i = 1, #s do t[i] = s:sub(i, i) end
  return t
end

-- split positions for three pieces: the ends, every CR/LF and BOM byte and
-- its neighbours, and a regular sample
local function positions(s)
  local set, list = {}, {}
  local function add(i) if i >= 0 and i <= #s then set[i] = true end end
  add(0); add(1); add(2); add(3); add(#s - 1); add(#s)
  for i = 1, #s do
    local b = s:byte(i)
    if b == 10 or b == 13 or b >= 0xBB then add(i - 1); add(i); add(i + 1) end
  end
  for i = 0, #s, math.max(1, math.floor(#s / 8)) do add(i) end
  for i in pairs(set) do list[#list + 1] = i end
  table.sort(list)
  return list
end

describe("oai.sse parses", function()
  for _, case in ipairs(cases) do
    local name, input = case[1], case[2]
    describe(name, function()
      it("fed whole", function()
        assert.same(expected(case), run({ input }))
      end)
      it("fed byte by byte", function()
        assert.same(expected(case), run(bytes(input)))
      end)
      it("fed in two pieces split at every position", function()
        for i = 0, #input do
          assert.same(expected(case), run({ input:sub(1, i), input:sub(i + 1) }),
            "split at " .. i)
        end
      end)
      it("fed in three pieces", function()
        local pos = positions(input)
        for a = 1, #pos do
          for b = a, #pos do
            local i, j = pos[a], pos[b]
            assert.same(expected(case),
              run({ input:sub(1, i), input:sub(i + 1, j), input:sub(j + 1) }),
              "split at " .. i .. " and " .. j)
          end
        end
      end)
    end)
  end
end)

describe("oai.sse results", function()
  it("are arrays of event tables, empty when nothing was dispatched", function()
    local p = oai.sse()
    assert.same({}, p:feed("data: x"))
    assert.same({ { type = "message", data = "x", id = "" } }, p:feed("\n\n"))
    assert.same({}, p:feed(""))
  end)

  it("returns retry as an integer", function()
    local p = oai.sse()
    assert.is_nil(p:retry())
    p:feed("retry: 1500\n")
    assert.equal(1500, p:retry())
    if math.type then assert.equal("integer", math.type(p:retry())) end
  end)

  it("keeps the id, the retry and the limit across feeds but not across reset", function()
    local p = oai.sse { max_event_bytes = 20 }
    p:feed(BOM .. "id: 1\nretry: 5\n")
    assert.same({ ev("a", nil, "1") }, p:feed("data: a\n\n"))
    p:reset()
    assert.is_nil(p:retry())
    assert.is_false(p:pending())
    -- a BOM is allowed again, the id is gone, the limit stays
    assert.same({ ev "b" }, p:feed(BOM .. "data: b\n\n"))
    assert.same({ nil, "oai.sse: event exceeds max_event_bytes (20)" },
      { p:feed("data: 0123456789abcdef\n") })
  end)

  it("drops a half-received event on reset", function()
    local p = oai.sse()
    p:feed("event: x\ndata: half")
    assert.is_true(p:pending())
    p:reset()
    assert.is_false(p:pending())
    assert.same({ ev "new" }, p:feed("data: new\n\n"))
  end)
end)

describe("oai.sse max_event_bytes", function()
  local TOO_BIG_16 = "oai.sse: event exceeds max_event_bytes (16)"

  it("allows an event of exactly the limit", function()
    local p = oai.sse { max_event_bytes = 16 }
    -- the line "data: 0123456789" is 16 bytes
    assert.same({ ev "0123456789" }, p:feed("data: 0123456789\n\n"))
  end)

  it("fails one byte past the limit, and keeps failing", function()
    local p = oai.sse { max_event_bytes = 16 }
    assert.same({ nil, TOO_BIG_16 }, { p:feed("data: 0123456789a\n\n") })
    assert.same({ nil, TOO_BIG_16 }, { p:feed("data: ok\n\n") })
    assert.same({ nil, TOO_BIG_16 }, { p:feed("") })
    assert.is_true(p:pending())
  end)

  it("is usable again after reset, with the same limit", function()
    local p = oai.sse { max_event_bytes = 16 }
    assert.is_nil((p:feed("data: 0123456789a\n\n")))
    p:reset()
    assert.same({ ev "ok" }, p:feed("data: ok\n\n"))
    assert.same({ nil, TOO_BIG_16 }, { p:feed("data: 0123456789a\n\n") })
  end)

  it("counts the data buffer, the event type and the current line", function()
    -- "0123\n" (5) is buffered; then a 12-byte line: 17 > 16
    local p = oai.sse { max_event_bytes = 16 }
    assert.same({}, p:feed("data: 0123\n"))
    assert.same({ nil, TOO_BIG_16 }, { p:feed("data: 456789\n") })
    -- type "abcdef" (6) + the 11-byte line: 17 > 16
    p = oai.sse { max_event_bytes = 16 }
    assert.same({}, p:feed("event: abcdef\n"))
    assert.same({ nil, TOO_BIG_16 }, { p:feed("data: 01234\n") })
    -- the same lines fit once an event was dispatched in between
    p = oai.sse { max_event_bytes = 16 }
    assert.same({ ev "0123" }, p:feed("data: 0123\n\n"))
    assert.same({}, p:feed("data: 456789\n"))
  end)

  it("counts a comment line too", function()
    local p = oai.sse { max_event_bytes = 16 }
    assert.same({ nil, TOO_BIG_16 }, { p:feed(": this comment is long\n") })
  end)

  it("stops a long line without a newline, fed in small pieces, as it passes", function()
    local p = oai.sse { max_event_bytes = 1000 }
    assert.same({}, p:feed("data: "))
    local piece = ("x"):rep(10)
    -- 6 + 10 * 99 = 996 bytes fit; the 100th piece makes 1006
    for i = 1, 99 do assert.same({}, p:feed(piece), "piece " .. i) end
    assert.same({ nil, "oai.sse: event exceeds max_event_bytes (1000)" }, { p:feed(piece) })
  end)

  it("defaults to 8 MiB and stops a 10 MB line at 8 MiB", function()
    local p = oai.sse()
    local piece = ("x"):rep(65536)
    -- 128 pieces are exactly 8 MiB; the 129th passes the limit
    for i = 1, 128 do assert.same({}, p:feed(piece), "piece " .. i) end
    assert.same({ nil, "oai.sse: event exceeds max_event_bytes (8388608)" }, { p:feed(piece) })
    p:close()
  end)

  it("trips on the same line however the stream is split", function()
    local input = "data: a\n\nid: 1\ndata: 0123456789\n\ndata: 0123456789a\n\ndata: z\n\n"
    local want = { ev "a", ev("0123456789", nil, "1") }
    local function try(pieces)
      local p, got = oai.sse { max_event_bytes = 16 }, {}
      for i = 1, #pieces do
        local events, err = p:feed(pieces[i])
        if not events then return got, err end
        for j = 1, #events do got[#got + 1] = events[j] end
      end
      return got
    end
    -- byte by byte every event before the long line is delivered
    assert.same({ want, TOO_BIG_16 }, { try(bytes(input)) })
    -- in bigger pieces the failing feed drops the events it parsed first
    for i = 0, #input do
      local got, err = try({ input:sub(1, i), input:sub(i + 1) })
      assert.equal(TOO_BIG_16, err, "split at " .. i)
      for k = 1, #got do assert.same(want[k], got[k], "split at " .. i) end
    end
  end)

  it("must be a positive integer", function()
    local msg = "bad argument #1 to 'sse' (max_event_bytes must be a positive integer)"
    local bad = { 0, -1, 1.5, "10", true, {}, 0 / 0, math.huge }
    for _, v in ipairs(bad) do
      assert.has_error(function() local _ = oai.sse { max_event_bytes = v } end, msg)
    end
    assert.equal("oai.sse (", tostring(oai.sse { max_event_bytes = 1 }):sub(1, 9))
    assert.equal("oai.sse (", tostring(oai.sse { max_event_bytes = 2 ^ 40 }):sub(1, 9))
  end)
end)

describe("oai.sse arguments", function()
  it("takes an optional options table", function()
    assert.has_error(function() local _ = oai.sse(5) end,
      "bad argument #1 to 'sse' (table expected, got number)")
    assert.has_error(function() local _ = oai.sse("x") end,
      "bad argument #1 to 'sse' (table expected, got string)")
    assert.equal("oai.sse (", tostring(oai.sse(nil)):sub(1, 9))
    assert.equal("oai.sse (", tostring(oai.sse {}):sub(1, 9))
  end)

  it("feeds strings only", function()
    local p = oai.sse()
    assert.has_error(function() local _ = p:feed() end,
      "bad argument #1 to 'feed' (string expected, got no value)")
    assert.has_error(function() local _ = p:feed({}) end,
      "bad argument #1 to 'feed' (string expected, got table)")
    assert.has_error(function() local _ = p:feed(true) end,
      "bad argument #1 to 'feed' (string expected, got boolean)")
  end)

  it("checks self", function()
    local p = oai.sse()
    assert.has_error(function() local _ = p.feed(42, "x") end,
      "bad argument #1 to 'feed' (oai.sse expected, got number)")
    assert.has_error(function() local _ = p.retry({}) end,
      "bad argument #1 to 'retry' (oai.sse expected, got table)")
    assert.has_error(function() local _ = p.close() end,
      "bad argument #1 to 'close' (oai.sse expected, got no value)")
  end)
end)

describe("oai.sse lifetime", function()
  local CLOSED = "attempt to use a closed oai.sse"

  it("raises on every method after close", function()
    local p = oai.sse()
    p:feed("data: partial")
    p:close()
    assert.has_error(function() local _ = p:feed("x") end, CLOSED)
    assert.has_error(function() local _ = p:retry() end, CLOSED)
    assert.has_error(function() local _ = p:pending() end, CLOSED)
    assert.has_error(function() p:reset() end, CLOSED)
  end)

  it("closes twice without error", function()
    local p = oai.sse()
    p:close()
    p:close()
    assert.equal("oai.sse (closed)", tostring(p))
  end)

  it("prints its address while open", function()
    local s = tostring(oai.sse())
    assert.truthy(s:match("^oai%.sse %(0?x?%x+%)$"), s)
  end)

  it("is collected when unreferenced", function()
    local weak = setmetatable({}, { __mode = "v" })
    do
      local p = oai.sse()
      p:feed("event: e\ndata: some buffered bytes\nid: 12")
      weak[1] = p
    end
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1])
  end)

  -- only defined where it applies, so other runtimes do not count a pass
  local it_54 = _VERSION == "Lua 5.4" and it or function() end
  local it_52_53 = (_VERSION == "Lua 5.2" or _VERSION == "Lua 5.3") and it or function() end

  it_54("closes with __close on Lua 5.4", function()
    local chunk = assert((loadstring or load)([[
      local oai = ...
      local kept
      do
        local p <close> = oai.sse()
        p:feed("data: x")
        kept = p
      end
      return kept
    ]]))
    local p = chunk(oai)
    assert.equal("oai.sse (closed)", tostring(p))
    assert.has_error(function() local _ = p:pending() end, CLOSED)
  end)

  -- Building event tables allocates, so finalizers can run in the middle of
  -- a feed.  One that closes the parser must not free it under the feed.
  -- An eager collector (pause 0) makes that happen within a few tries.
  local function eager_gc(fn)
    collectgarbage()
    -- finalizers must be able to run inside a feed: incremental mode, no pause
    if _VERSION == "Lua 5.4" then collectgarbage("incremental") end
    local pause = collectgarbage("setpause", 0)
    local ok, err = pcall(fn)
    collectgarbage("setpause", pause)
    assert(ok, err)
  end
  local INPUT = ("data: 0123456789012345678901234567890123456789\n\n"):rep(2000)

  local function garbage_with_gc(fn)
    if newproxy then   -- 5.1 and LuaJIT: only userdata have __gc
      getmetatable(newproxy(true)).__gc = fn
    else
      setmetatable({}, { __gc = fn })
    end
  end

  it("survives being closed by a finalizer during a feed", function()
    local closed_in_feed = false
    eager_gc(function()
      for _ = 1, 500 do
        local p = oai.sse()
        garbage_with_gc(function() p:close() end)
        local ok, events = pcall(p.feed, p, INPUT)
        -- closed already before the feed began: try again
        if ok and tostring(p) == "oai.sse (closed)" then
          -- closed while parsing: the feed still completed
          assert.equal(2000, #events)
          assert.equal("0123456789012345678901234567890123456789", events[2000].data)
          assert.has_error(function() local _ = p:pending() end, CLOSED)
          closed_in_feed = true
          break
        end
        p:close()
      end
    end)
    assert.is_true(closed_in_feed)
  end)

  it("refuses to be fed or reset by a finalizer during its own feed", function()
    local seen
    eager_gc(function()
      for _ = 1, 500 do
        local p, feeding = oai.sse(), false
        garbage_with_gc(function()
          if not feeding then return end
          local ok1, err1 = pcall(p.feed, p, "data: x\n\n")
          local ok2, err2 = pcall(p.reset, p)
          seen = { ok1, err1, ok2, err2 }
        end)
        feeding = true
        local events = p:feed(INPUT)
        feeding = false
        assert.equal(2000, #events)   -- undisturbed
        p:close()
        if seen then break end
      end
    end)
    assert.same({ false, "attempt to feed an oai.sse from inside its own feed", false,
      "attempt to reset an oai.sse from inside its own feed" }, seen)
  end)

  -- On 5.2 and 5.3 an error in a finalizer propagates to where the
  -- collector ran: here, into the middle of a feed.
  it_52_53("reports a stream interrupted by an error inside feed", function()
    local p = oai.sse()
    local raised, armed = nil, true
    local function boom()
      if armed then armed = false; error("boom", 0) end
    end
    eager_gc(function()
      for _ = 1, 50 do
        garbage_with_gc(boom)
        local ok, err = pcall(p.feed, p, INPUT)
        if not ok then raised = err; break end
      end
      armed = false   -- the finalizers still to run must not raise
      collectgarbage()
    end)
    assert.truthy(raised and raised:find("boom", 1, true), tostring(raised))
    assert.same({ nil, "oai.sse: stream position lost (an earlier feed raised an error); "
      .. "call reset()" }, { p:feed("data: x\n\n") })
    assert.is_true(p:pending())
    p:reset()
    assert.same({ ev "x" }, p:feed("data: x\n\n"))
  end)
end)
