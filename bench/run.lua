-- bench/run.lua: oai against its peers on the local oai.testing server.
-- Run by bench/run.sh (`make bench`), which builds the helpers first.
--
-- Every run is one process started under build/bench/measure, which reports
-- the CPU time (user+sys, from wait4: the process and the children it waited
-- for), wall time and peak RSS of that process.  The clients run interleaved
-- (client A run 1, client B run 1, ..., then run 2, ...), each prints a
-- checksum that is checked here, and the table shows medians.  Every run is
-- paired with a start-up run of the same client just before it (one stream of
-- 0 chunks; one request for S3); CPU per chunk or per request is the median
-- over runs of (CPU of the run - CPU of its start-up run) / units.
--
-- Environment:
--   BENCH_RUNS=5          runs per scenario (S1: 2 * RUNS + 1)
--   BENCH_SCENARIOS=S1,S3 only these scenarios
--   BENCH_CLIENTS=floor,oai-5.4   only these clients (ids below)
--   BENCH_BUILD=build     where <runtime>/oai/core.so are
--   BENCH_WORKERS=1       nginx workers of the local server
--   BENCH_OUT=build/bench where results.md and samples.tsv go
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local testing = require "oai.testing"

local RUNS = tonumber(os.getenv("BENCH_RUNS") or "") or 5
local BUILD = os.getenv("BENCH_BUILD") or "build"
local OUT = os.getenv("BENCH_OUT") or "build/bench"
local WORKERS = tonumber(os.getenv("BENCH_WORKERS") or "") or 1
local MEASURE = OUT .. "/measure"
local FLOOR = OUT .. "/floor"
local TIMEOUT = 240   -- seconds per run

local function set_of(s)
  if not s or s == "" then return nil end
  local t = {}
  for w in s:gmatch("[^,%s]+") do t[w] = true end
  return t
end
local ONLY_SCENARIOS = set_of(os.getenv("BENCH_SCENARIOS"))
local ONLY_CLIENTS = set_of(os.getenv("BENCH_CLIENTS"))

local function sh_quote(s)
  s = tostring(s)
  if s:match("^[%w%-%./_=:,+]+$") then return s end
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function have(cmd)
  local f = io.popen("command -v " .. sh_quote(cmd) .. " 2>/dev/null")
  local out = f:read("a")
  f:close()
  return out ~= ""
end

local exists = require("oai.testing.proc").exists

---------------------------------------------------------------- scenarios

-- S3's request: "Hello! You said: hi"
local CHAT_REPLY_BYTES = #"Hello! You said: hi"

local SCENARIOS = {
  { id = "S1", title = "one stream of 20,000 chunks sent at once", mode = "stream",
    streams = 1, chunks = 20000, delay = 0, unit = "chunk", runs = 2 * RUNS + 1 },
  { id = "S2", title = "200 concurrent streams of 200 chunks, 5 ms apart", mode = "stream",
    streams = 200, chunks = 200, delay = 5, unit = "chunk", runs = RUNS },
  { id = "S3", title = "2,000 sequential small non-streamed requests", mode = "chat",
    requests = 2000, unit = "request", runs = RUNS },
  { id = "S4", title = "2,000 concurrent streams of 10 chunks, 100 ms apart", mode = "stream",
    streams = 2000, chunks = 10, delay = 100, unit = "chunk", runs = RUNS },
}

-- start-up runs, one per kind of scenario
local BASELINES = {
  stream = { id = "B-stream", mode = "stream", streams = 1, chunks = 0, delay = 0 },
  chat = { id = "B-chat", mode = "chat", requests = 1 },
}

---------------------------------------------------------------- clients

local LUA_PATH = "lua/?.lua;lua/?/init.lua;;"

local function oai_client(id, label, interp, rt, variant, only)
  return {
    id = id, label = label, is_oai = true, runtime = rt, variant = variant,
    needs = { interp, BUILD .. "/" .. rt .. "/oai/core.so" },
    env = { LUA_CPATH = BUILD .. "/" .. rt .. "/?.so;;", LUA_PATH = LUA_PATH },
    argv = function(sc)
      return { interp, "bench/peers/oai_client.lua" }, sc.mode == "stream" and { variant } or nil
    end,
    only = only,
  }
end

local CLIENTS = {
  { id = "floor", label = "floor (C libcurl)", needs = { FLOOR },
    argv = function() return { FLOOR } end },
  { id = "node", label = "openai-node", needs = { "node", "bench/node_modules/openai/package.json" },
    argv = function() return { "node", "bench/peers/openai_node.mjs" } end },
  { id = "handrolled", label = "hand-rolled Lua 5.4", needs = { "lua5.4" },
    argv = function() return { "lua5.4", "bench/peers/handrolled.lua" } end,
    na = { S4 = "socket.select is select(2): at most 1,024 sockets" },
    notes = { S2 = "coroutines + socket.select" } },
  { id = "curl-popen", label = "LuaJIT + curl -N popen", needs = { "luajit", "curl" },
    argv = function() return { "luajit", "bench/peers/curl_popen.lua" } end,
    na = { S4 = "2,000 curl processes" },
    notes = { S2 = "200 curl processes, read one after the other", S3 = "a curl process per request" },
    -- one curl process per request: 2,000 would take ~45 s per run
    requests = { S3 = 200 } },
  oai_client("oai-5.4", "oai Lua 5.4", "lua5.4", "5.4", "text"),
  oai_client("oai-5.4-result", "oai Lua 5.4 result()", "lua5.4", "5.4", "result", { S1 = true }),
  oai_client("oai-luajit", "oai LuaJIT", "luajit", "luajit", "text"),
  oai_client("oai-luajit-result", "oai LuaJIT result()", "luajit", "luajit", "result", { S1 = true }),
}

-- Lua 5.4 targets from issue 4
local TARGETS = {
  ["oai-5.4"] = { S1 = 0.5, S2 = 12 },
  ["oai-5.4-result"] = { S1 = 0.7 },
}
local TARGET_S3, TARGET_S4_RSS_MB = 50, 64

---------------------------------------------------------------- running

local log = assert(io.open(OUT .. "/bench.log", "w"))
local samples_file = assert(io.open(OUT .. "/samples.tsv", "w"))
samples_file:write("scenario\tclient\trun\tcpu_us\twall_us\tmaxrss_kb\tstatus\tchecksum\n")

local function units_of(sc, client)
  if sc.mode == "chat" then
    return client.requests and client.requests[sc.id] or sc.requests
  end
  return sc.streams * sc.chunks
end

local function args_of(sc, client, url)
  local argv, tail = client.argv(sc)
  local a = {}
  for i = 1, #argv do a[i] = argv[i] end
  a[#a + 1] = sc.mode
  a[#a + 1] = url
  if sc.mode == "chat" then
    a[#a + 1] = tostring(units_of(sc, client))
  else
    a[#a + 1] = tostring(sc.streams)
    a[#a + 1] = tostring(sc.chunks)
    a[#a + 1] = tostring(sc.delay)
  end
  for _, v in ipairs(tail or {}) do a[#a + 1] = v end
  return a
end

local function content_bytes(n)
  local s = 0
  for k = 1, n do s = s + 1 + #tostring(k) end
  return s + (n > 0 and n - 1 or 0)
end

-- expected checksum fields
local function expected(sc, client)
  if sc.mode == "chat" then
    local n = units_of(sc, client)
    if client.id == "floor" then return { requests = n } end
    return { requests = n, content_bytes = n * CHAT_REPLY_BYTES }
  end
  if client.id == "floor" then
    -- events: role, the chunks, finish, [DONE]; two newlines each
    return { requests = sc.streams, lines = sc.streams * 2 * (sc.chunks + 3) }
  end
  return { requests = sc.streams, chunks = sc.streams * sc.chunks,
           content_bytes = sc.streams * content_bytes(sc.chunks) }
end

local function worker_pids(srv)
  -- the master's children named nginx (its watchdog is a child too)
  local f = io.popen("pgrep -P " .. srv.pid .. " nginx 2>/dev/null")
  local pids = {}
  for line in f:lines() do pids[#pids + 1] = line end
  f:close()
  return pids
end

local CLK_TCK = 100
do
  local f = io.popen("getconf CLK_TCK 2>/dev/null")
  CLK_TCK = tonumber(f:read("a")) or 100
  f:close()
end
local measured_ms = 0   -- CPU of every measured process and of the server
local function server_cpu_ms(pids)
  local total = 0
  for _, pid in ipairs(pids) do
    local f = io.open("/proc/" .. pid .. "/stat", "r")
    if f then
      local stat = f:read("a")
      f:close()
      local rest = stat:match("%) (.*)$")
      local fields = {}
      for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
      -- fields[1] is stat's field 3 (state): utime (14) and stime (15) are 12 and 13
      total = total + (tonumber(fields[12]) + tonumber(fields[13])) * 1000 / CLK_TCK
    end
  end
  return total
end

local function run_one(sc, client, url, run)
  local env = {}
  for k, v in pairs(client.env or {}) do env[#env + 1] = k .. "=" .. v end
  table.sort(env)
  local argv = { MEASURE, "-t", tostring(TIMEOUT), "env" }
  for _, e in ipairs(env) do argv[#argv + 1] = e end
  for _, a in ipairs(args_of(sc, client, url)) do argv[#argv + 1] = a end
  local q = {}
  for i, a in ipairs(argv) do q[i] = sh_quote(a) end
  local cmd = table.concat(q, " ")
  log:write("# ", sc.id, " ", client.id, " run ", run, ": ", cmd, "\n")
  log:flush()
  local f = io.popen(cmd .. " 2>>" .. sh_quote(OUT .. "/bench.log"))
  local out = f:read("a")
  f:close()
  local m, sum = {}, {}
  for line in out:gmatch("[^\n]+") do
    local target = line:match("^measure: ") and m or sum
    for k, v in line:gmatch("([%w_]+)=(%S+)") do target[k] = tonumber(v) or v end
  end
  local r = {
    cpu = (m.user_us or 0) + (m.sys_us or 0), wall = m.wall_us or 0, rss = m.maxrss_kb or 0,
    status = m.status or "no measure line", sum = sum, ok = m.status == "exit:0",
  }
  local exp = expected(sc, client)
  local bad = {}
  for k, v in pairs(exp) do
    if sum[k] ~= v then bad[#bad + 1] = k .. "=" .. tostring(sum[k]) .. " (want " .. v .. ")" end
  end
  table.sort(bad)
  if not r.ok then table.insert(bad, 1, r.status) end
  r.check = #bad == 0 and "ok" or table.concat(bad, ", ")
  r.good = #bad == 0
  local sums = {}
  for k, v in pairs(sum) do sums[#sums + 1] = k .. "=" .. tostring(v) end
  table.sort(sums)
  measured_ms = measured_ms + r.cpu / 1000
  samples_file:write(table.concat({ sc.id, client.id, run, r.cpu, r.wall, r.rss, r.status,
    table.concat(sums, " ") }, "\t"), "\n")
  samples_file:flush()
  log:write("#   -> ", r.status, " cpu ", r.cpu, " us, wall ", r.wall, " us, rss ", r.rss,
    " kB, ", r.check, "\n")
  return r
end

local function median(xs)
  if #xs == 0 then return nil end
  local t = {}
  for i = 1, #xs do t[i] = xs[i] end
  table.sort(t)
  local n = #t
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

---------------------------------------------------------------- main

local clients = {}
local skipped = {}
for _, c in ipairs(CLIENTS) do
  local missing
  for _, need in ipairs(c.needs or {}) do
    if need:find("/", 1, true) then
      if not exists(need) then missing = need end
    elseif not have(need) then
      missing = need
    end
  end
  if ONLY_CLIENTS and not ONLY_CLIENTS[c.id] then
    -- not asked for
  elseif missing then
    skipped[#skipped + 1] = c.label .. " (missing " .. missing .. ")"
  else
    clients[#clients + 1] = c
  end
end

local scenarios = {}
for _, sc in ipairs(SCENARIOS) do
  if not ONLY_SCENARIOS or ONLY_SCENARIOS[sc.id] then scenarios[#scenarios + 1] = sc end
end

local function runs_here(sc, client)
  if client.only and not client.only[sc.id] then return false end
  if client.na and client.na[sc.id] then return false end
  return true
end

local srv = testing.start { workers = WORKERS }
local url = srv.url
local workers = worker_pids(srv)
io.stderr:write(("bench: server %s (%d worker%s), %d runs per scenario (S1: %d)\n"):format(
  url, #workers, #workers == 1 and "" or "s", RUNS, 2 * RUNS + 1))
for _, s in ipairs(skipped) do io.stderr:write("bench: skipping ", s, "\n") end

-- jiffies: busy (all CPUs, everything but idle and iowait) and steal
local function cpu_stat()
  local f = io.open("/proc/stat", "r")
  if not f then return nil end
  local line = f:read("l")
  f:close()
  local v = {}
  for w in line:gmatch("%d+") do v[#v + 1] = tonumber(w) end
  return { busy = v[1] + v[2] + v[3] + v[6] + v[7] + (v[8] or 0), steal = v[8] or 0 }
end

local function now()
  local f = io.popen("date +%s.%N")
  local t = tonumber(f:read("a"))
  f:close()
  return t or os.time()
end

local t_start = now()
local stat_start = cpu_stat()
local results = {}   -- results[scenario id][client id] = { runs }
local server_ms = {} -- scenario id -> server CPU per run (ms), list

-- Each run of a scenario is paired with a start-up run of the same client just
-- before it, so that drift (other load on the machine) cancels out.
local function run_scenario(sc, list, nruns)
  local base_sc = BASELINES[sc.mode]
  results[sc.id] = results[sc.id] or {}
  results[base_sc.id] = results[base_sc.id] or {}
  server_ms[sc.id] = server_ms[sc.id] or {}
  srv:clear()
  for run = 1, nruns do
    for _, c in ipairs(list) do
      local b = run_one(base_sc, c, url, run)
      local bs = results[base_sc.id][c.id] or {}
      results[base_sc.id][c.id] = bs
      bs[#bs + 1] = b
      local s0 = server_cpu_ms(workers)
      local r = run_one(sc, c, url, run)
      server_ms[sc.id][#server_ms[sc.id] + 1] = server_cpu_ms(workers) - s0
      measured_ms = measured_ms + server_ms[sc.id][#server_ms[sc.id]]
      r.base = b
      local rs = results[sc.id][c.id] or {}
      results[sc.id][c.id] = rs
      rs[#rs + 1] = r
      for _, x in ipairs({ b, r }) do
        if not x.good then
          io.stderr:write(("bench: %s %s run %d: %s\n"):format(x == b and base_sc.id or sc.id,
            c.id, run, x.check))
        end
      end
    end
    io.stderr:write(("bench: %s run %d/%d done (%.0f s)\n"):format(sc.id, run, nruns, now() - t_start))
  end
end

local ok, err = pcall(function()
  for _, sc in ipairs(scenarios) do
    local list = {}
    for _, c in ipairs(clients) do
      if runs_here(sc, c) then list[#list + 1] = c end
    end
    run_scenario(sc, list, sc.runs)
  end
end)
srv:stop()
if not ok then error(err, 0) end

---------------------------------------------------------------- report

local function stats(sc, c)
  local rs = results[sc.id] and results[sc.id][c.id]
  if not rs or #rs == 0 then return nil end
  local cpu, wall, rss, good, checks = {}, {}, {}, 0, {}
  for _, r in ipairs(rs) do
    cpu[#cpu + 1], wall[#wall + 1], rss[#rss + 1] = r.cpu, r.wall, r.rss
    if r.good then good = good + 1 else checks[#checks + 1] = r.check end
  end
  local st = { cpu = median(cpu), wall = median(wall), rss = median(rss), n = #rs, good = good,
               checks = checks, last = rs[#rs] }
  local units = units_of(sc, c)
  if sc.mode == "chat" then units = units - 1 end -- the start-up run made one request
  local per = {}
  for _, r in ipairs(rs) do
    if r.base then per[#per + 1] = (r.cpu - r.base.cpu) / units end
  end
  st.per_unit = median(per)
  table.sort(per)
  st.per_min, st.per_max = per[1], per[#per]
  return st
end

local function fmt_num(x, digits)
  if x == nil then return "" end
  return string.format("%." .. digits .. "f", x)
end

local function fmt_per_unit(x)
  if x == nil then return "" end
  if math.abs(x) >= 100 then return string.format("%.0f", x) end
  if math.abs(x) >= 10 then return string.format("%.1f", x) end
  return string.format("%.2f", x)
end

local function ratio(a, b)
  if a == nil or b == nil then return "" end
  if b <= 0 or a < 0 then return "n/m" end
  local r = a / b
  if r >= 100 then return string.format("%.0f×", r) end
  if r >= 10 then return string.format("%.1f×", r) end
  return string.format("%.2f×", r)
end

local lines = {}
local function out(s) lines[#lines + 1] = s or "" end

out(("oai benchmarks: %s, %d vCPU, server oai.testing (nginx, %d worker%s). "
  .. "Medians of %d runs (S1: %d). CPU = user+sys of the client process (and the "
  .. "processes it waited for), start-up subtracted, [range over runs]; "
  .. "wall and peak RSS as measured. oai rows read streams with text().")
  :format(os.date("!%Y-%m-%d %H:%M UTC"), tonumber(io.popen("nproc"):read("a")) or 0,
    WORKERS, WORKERS == 1 and "" or "s", RUNS, 2 * RUNS + 1))
out()
local verdicts = {}

for _, sc in ipairs(scenarios) do
  local ids = {}
  for _, c in ipairs(clients) do ids[c.id] = stats(sc, c) end
  local node, floor = ids["node"], ids["floor"]
  out(("### %s: %s"):format(sc.id, sc.title))
  out()
  out(("| client | CPU µs/%s | ×node | ×floor | wall ms | ×node | ×floor | peak RSS MB | ×node | ×floor | checksum |")
    :format(sc.unit))
  out("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|")
  for _, c in ipairs(clients) do
    local st = ids[c.id]
    if c.only and not c.only[sc.id] then
      -- variant not run in this scenario
    elseif c.na and c.na[sc.id] then
      out(("| %s | n/a | | | | | | | | | %s |"):format(c.label, c.na[sc.id]))
    elseif st then
      local check
      if st.good == st.n then
        check = "ok"
        if sc.mode == "chat" and c.requests and c.requests[sc.id] then
          check = "ok (" .. c.requests[sc.id] .. " requests)"
        end
      else
        check = ("%d/%d ok: %s"):format(st.good, st.n, st.checks[1])
      end
      if c.notes and c.notes[sc.id] then check = check .. "; " .. c.notes[sc.id] end
      if sc.id == "S4" and st.last.sum.requests then
        check = check .. (", %s/%d streams done"):format(tostring(st.last.sum.requests), sc.streams)
      end
      out(("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |"):format(
        c.label, fmt_per_unit(st.per_unit) .. (st.per_min and (" [%s–%s]")
          :format(fmt_per_unit(st.per_min), fmt_per_unit(st.per_max)) or ""),
        ratio(st.per_unit, node and node.per_unit), ratio(st.per_unit, floor and floor.per_unit),
        fmt_num(st.wall / 1000, 0), ratio(st.wall, node and node.wall), ratio(st.wall, floor and floor.wall),
        fmt_num(st.rss / 1024, 1), ratio(st.rss, node and node.rss), ratio(st.rss, floor and floor.rss),
        check))
      -- targets
      local t = TARGETS[c.id] and TARGETS[c.id][sc.id]
      if t and st.per_unit then
        verdicts[#verdicts + 1] = ("%s %s: %s µs/%s, target ≤ %s: %s"):format(sc.id, c.label,
          fmt_per_unit(st.per_unit), sc.unit, t, st.per_unit <= t and "met" or "MISSED")
      end
      if c.id == "oai-5.4" and sc.id == "S3" and st.per_unit then
        verdicts[#verdicts + 1] = ("S3 %s: %s µs/request, target ≤ %d: %s"):format(c.label,
          fmt_per_unit(st.per_unit), TARGET_S3, st.per_unit <= TARGET_S3 and "met" or "MISSED")
      end
      if c.id == "oai-5.4" and sc.id == "S4" then
        local done = st.good == st.n
        local mb = st.rss / 1024
        verdicts[#verdicts + 1] = ("S4 %s: %s, peak RSS %.1f MB, target all complete and ≤ %d MB: %s")
          :format(c.label, done and "all complete" or "INCOMPLETE", mb, TARGET_S4_RSS_MB,
            (done and mb <= TARGET_S4_RSS_MB) and "met" or "MISSED")
      end
    end
  end
  local sm = median(server_ms[sc.id] or {})
  out()
  out(("Server (nginx workers) CPU per run, median: %.0f ms."):format(sm or 0))
  out()
end

out("### Start-up (subtracted above)")
out()
out("| client | CPU ms (stream of 0 chunks) | CPU ms (1 request) | wall ms | peak RSS MB |")
out("|---|--:|--:|--:|--:|")
for _, c in ipairs(clients) do
  local bs = results["B-stream"] and results["B-stream"][c.id]
  local bc = results["B-chat"] and results["B-chat"][c.id]
  local function med(rs, f)
    if not rs then return nil end
    local xs = {}
    for _, r in ipairs(rs) do xs[#xs + 1] = r[f] end
    return median(xs)
  end
  local any = bs or bc
  if any then
    out(("| %s | %s | %s | %s | %s |"):format(c.label, fmt_num(bs and med(bs, "cpu") / 1000, 1),
      fmt_num(bc and med(bc, "cpu") / 1000, 1), fmt_num(med(any, "wall") / 1000, 0),
      fmt_num(med(any, "rss") / 1024, 1)))
  end
end
out()
if #verdicts > 0 then
  out("### Targets (issue 4, Lua 5.4)")
  out()
  for _, v in ipairs(verdicts) do out("- " .. v) end
  out()
end
if #skipped > 0 then
  out("Skipped: " .. table.concat(skipped, "; ") .. ".")
  out()
end
local stat_end = cpu_stat()
if stat_start and stat_end then
  local secs = math.max(now() - t_start, 0.1)
  local busy_ms = (stat_end.busy - stat_start.busy) * 1000 / CLK_TCK
  local other = (busy_ms - measured_ms) / secs / 10 -- % of one CPU
  out(("Other load on the machine meanwhile (all CPU busy time minus the clients' and the "
    .. "server's): about %.0f%% of one CPU on average; steal %.1f%%.")
    :format(math.max(other, 0), (stat_end.steal - stat_start.steal) * 1000 / CLK_TCK / secs / 10))
end
out(("Total time: %.0f s. Raw samples: %s/samples.tsv."):format(now() - t_start, OUT))

local report = table.concat(lines, "\n") .. "\n"
io.write(report)
local f = io.open(OUT .. "/results.md", "w")
if f then f:write(report) f:close() end
log:close()
samples_file:close()
