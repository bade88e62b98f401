-- Run inside headless Neovim (nvim --headless -u NONE -i NONE -n -c 'luafile ...'):
-- 20 concurrent streams from the local server, each written into its own
-- buffer, while a 10 ms repeating timer measures how late it fires.  Exits
-- with `cquit 0` only if every stream is right; any error exits non-zero.
local root = os.getenv("OAI_ROOT")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/luajit/?.so;" .. package.cpath

local out = assert(io.open(os.getenv("OAI_RESULT"), "w"))
local function finish(code, msg)
  out:write(msg, "\n")
  out:close()
  vim.cmd("cquit " .. code)
end

local ok, err = pcall(function()
  local oai = require "oai"
  local uv = vim.uv or vim.loop
  require("oai.uv").attach(uv)
  local client = oai.new { base_url = os.getenv("OAI_URL"), api_key = "sk-nvim" }

  local N, CHUNKS = 20, 30
  local expected = {}
  for i = 1, CHUNKS do expected[#expected + 1] = "w" .. i end
  expected = table.concat(expected, " ")

  -- the lag probe: a 10 ms repeating timer
  local max_lag, ticks, last = 0, 0, uv.hrtime()
  local probe = uv.new_timer()
  probe:start(10, 10, function()
    local now = uv.hrtime()
    local lag = (now - last) / 1e6 - 10
    if lag > max_lag then max_lag = lag end
    last = now
    ticks = ticks + 1
  end)

  local done, failures = 0, {}
  for i = 1, N do
    local buf = vim.api.nvim_create_buf(false, true)
    client:stream({ model = "m", messages = { { role = "user", content = "x" } } }, {
      headers = { ["x-test-chunks"] = tostring(CHUNKS), ["x-test-chunk-delay-ms"] = "20" },
      on_text = function(text)
        -- runs through vim.schedule: the editor API is allowed here
        local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
        local cur = table.concat(lines, "\n") .. text
        vim.api.nvim_buf_set_lines(buf, 0, -1, false, vim.split(cur, "\n", { plain = true }))
      end,
      on_done = function(res, e)
        local got = table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "\n")
        if not res then failures[#failures + 1] = "stream " .. i .. ": " .. tostring(e)
        elseif got ~= expected then failures[#failures + 1] = "stream " .. i .. " buffer: " .. got
        elseif res.choices[1].message.content ~= expected then failures[#failures + 1] = "stream " .. i .. " result" end
        done = done + 1
      end,
      on_error = function(e, tb) failures[#failures + 1] = tostring(tb or e); done = done + 1 end,
    })
  end

  local t0 = uv.hrtime()
  local finished = vim.wait(20000, function() return done == N end, 5)
  probe:stop()
  probe:close()
  local secs = (uv.hrtime() - t0) / 1e9
  if not finished then error("timed out: " .. done .. " of " .. N .. " streams finished") end
  if #failures > 0 then error(table.concat(failures, "\n")) end
  return ("ok streams=%d chunks=%d seconds=%.2f timer_ticks=%d max_timer_lag_ms=%.2f"):format(N, CHUNKS, secs, ticks, max_lag)
end)

if ok then finish(0, err) else finish(1, "FAIL " .. tostring(err)) end
