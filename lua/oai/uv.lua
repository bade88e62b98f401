--- oai.uv: drive oai from a libuv event loop (Neovim's vim.uv / vim.loop, or
--- luv) without polling.  libcurl tells us which sockets to watch and when
--- its next timeout is (socket mode of the multi handle); those become uv
--- poll handles and one uv timer.  With no transfer running, nothing is
--- armed and oai costs nothing.
---
--- Task resumptions and user callbacks run through `opts.schedule`
--- (default: vim.schedule in Neovim, so they may call the editor's API;
--- uv callbacks themselves are "fast" contexts where most of it is off
--- limits).
local core = require "oai.native"
local loop = require "oai.loop"

local M = {}

local attached

---@class oai.UvOptions
---@field schedule? fun(fn: function) where task resumptions run (default vim.schedule, else direct)
---@field block? fun(ms: number) how a blocking call outside a task waits (default vim.wait, else uv.run("once"))

--- Attach oai to a libuv loop.  Must be called while no transfer is running.
---@param uv table vim.uv, vim.loop or require "luv"
---@param opts? oai.UvOptions
---@return table driver with detach()
function M.attach(uv, opts)
  if type(uv) ~= "table" or type(uv.new_timer) ~= "function" then
    error("oai.uv.attach: expected a libuv binding (vim.uv, vim.loop or luv)", 2)
  end
  if attached then return attached end
  opts = opts or {}
  local vim = rawget(_G, "vim")
  local schedule = opts.schedule or (vim and vim.schedule) or function(fn) fn() end
  local block = opts.block
  local activity = false
  if not block then
    if vim and vim.wait then
      -- returns as soon as a transfer made progress
      block = function(ms)
        activity = false
        vim.wait(ms > 0 and ms or 0, function() return activity end, 1)
      end
    else
      block = function(ms)
        -- one turn of the loop; a timer bounds the wait
        local t = uv.new_timer()
        t:start(math.max(0, math.floor(ms)), 0, function() end)
        uv.run("once")
        t:stop()
        t:close()
      end
    end
  end

  loop.set_multi_options({ socket_mode = true })
  local multi = loop.multi()
  local polls = {}             -- fd -> uv poll handle
  local watching = {}          -- fd -> what libcurl asked for (1 in, 2 out, 3 both)
  local curl_timer = uv.new_timer()
  local task_timer = uv.new_timer()
  local pass_queued = false
  local new_poll = uv.new_socket_poll or uv.new_poll

  local apply, wake

  local function after(running, ready)
    activity = true
    loop.deliver(ready)
    apply()
  end

  local function on_socket(fd)
    return function(err, events)
      local mask = 0
      if err then
        -- libuv reports a socket error (a reset: POLLERR) as EBADF and
        -- stops the handle.  Tell libcurl the socket is ready for what it
        -- waits for, with the error bit: it then reads (or writes), meets
        -- the real error and names it (RECV_ERROR "Connection reset by
        -- peer"), as the plain loop does.  The error bit alone would make
        -- it fail with SEND_ERROR "select/poll returned error".
        -- (luv before 1.44.2-1 also prints "EBADF: bad file descriptor" to
        -- stderr for every poll error; nothing here can stop that.)
        mask = 4 + (watching[fd] or 3)
      end
      if events then
        if events:find("r", 1, true) then mask = mask + 1 end
        if events:find("w", 1, true) then mask = mask + 2 end
      end
      after(multi:socket_action(fd, mask))
    end
  end

  local function on_curl_timer()
    after(multi:socket_action(nil, 0))
  end

  -- socket and timer changes libcurl asked for since the last call
  apply = function()
    local changes, timeout = multi:socket_changes()
    for i = 1, #changes, 2 do
      local fd, what = changes[i], changes[i + 1]
      local p = polls[fd]
      if what == 4 then
        if p then
          p:stop()
          p:close()
          polls[fd] = nil
        end
        watching[fd] = nil
      else
        if not p then
          p = new_poll(fd)
          polls[fd] = p
        end
        watching[fd] = what
        p:start(what == 1 and "r" or what == 2 and "w" or "rw", on_socket(fd))
      end
    end
    if timeout then
      curl_timer:stop()
      if timeout >= 0 then curl_timer:start(timeout, 0, on_curl_timer) end
    end
  end

  local function pass()
    pass_queued = false
    local ok, next_timer = pcall(loop.run_pass)
    task_timer:stop()
    if ok and next_timer then
      task_timer:start(math.floor(next_timer * 1000) + 1, 0, wake)
    end
    if not ok then error(next_timer, 0) end
  end

  wake = function()
    if pass_queued then return end
    pass_queued = true
    schedule(pass)
  end

  local driver = {
    wake = wake,
    started = function() apply() end,
    pump = function(wait_ms)
      -- a blocking call outside any task: let the host loop turn
      block(wait_ms)
    end,
  }

  function driver.detach()
    loop.set_driver(nil)
    for fd, p in pairs(polls) do p:stop(); p:close(); polls[fd] = nil end
    curl_timer:stop(); curl_timer:close()
    task_timer:stop(); task_timer:close()
    attached = nil
    loop.set_multi_options(nil)
  end

  function driver.handles()
    local n = 0
    for _ in pairs(polls) do n = n + 1 end
    return { polls = n, curl_timer = curl_timer:is_active(), task_timer = task_timer:is_active() }
  end

  loop.set_driver(driver)
  attached = driver
  if loop.has_runnable() then wake() end
  return driver
end

---@return nil
function M.detach()
  if attached then attached.detach() end
end

M.core = core
return M
