-- Neovim host test: runs spec/hosts/nvim_streams.lua inside real headless
-- Neovim (LuaJIT build of oai) and checks its exit code and report.
local server = require "server"

local helpers = require "helpers"
local sh = helpers.sh

describe("Neovim host #child", function()
  local have_nvim = sh("command -v nvim >/dev/null 2>&1")
  local have_jit = io.open("build/luajit/oai/core.so", "rb")
  if have_jit then have_jit:close() end

  it("streams 20 replies into 20 buffers without blocking the editor", function()
    assert.is_true(have_nvim, "nvim is not installed (Debian package neovim)")
    assert.truthy(have_jit, "build/luajit/oai/core.so is missing: run make")
    local srv = server.start {}
    local ok, code, report = helpers.nvim("nvim_streams.lua", srv.url)
    srv:stop()
    print("\n  nvim: " .. report:gsub("\n$", ""))
    assert.is_true(ok, "nvim exited with " .. tostring(code) .. ": " .. report)
    assert.truthy(report:find("^ok "), report)
    local lag = tonumber(report:match("max_timer_lag_ms=([%d%.]+)"))
    -- reported, loosely asserted (busy machines): a blocking call would
    -- show up as hundreds of milliseconds
    assert.truthy(lag < 150, report)
  end)

  it("runs the examples/nvim plugin: folded reasoning, <C-c> cancels", function()
    assert.is_true(have_nvim, "nvim is not installed (Debian package neovim)")
    local srv = server.start {}
    local ok, code, report = helpers.nvim("nvim_plugin.lua", srv.url)
    srv:stop()
    assert.is_true(ok, "nvim exited with " .. tostring(code) .. ": " .. report)
    assert.equal("ok\n", report)
  end)
end)
