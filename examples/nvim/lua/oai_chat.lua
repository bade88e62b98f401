-- oai_chat: a small Neovim plugin on oai.  :OaiChat {prompt} streams the
-- reply into a scratch buffer; the model's reasoning goes first, in a closed
-- fold; <C-c> in that buffer cancels the reply.  The editor never blocks:
-- oai.uv drives the transfer from libuv, and text is written from
-- vim.schedule callbacks.
--
-- Install (lazy.nvim):
--   { "oai", build = "make", config = function(p)
--       vim.opt.rtp:append(p.dir .. "/examples/nvim")
--       require("oai_chat").setup { model = "gpt-4o-mini" }
--     end }
-- Environment: OPENAI_BASE_URL, OPENAI_API_KEY (setup{} options override).
local M = {}

-- this file is <root>/examples/nvim/lua/oai_chat.lua: find the library
local here = debug.getinfo(1, "S").source:sub(2)
local root = here:gsub("/examples/nvim/lua/oai_chat%.lua$", "")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/luajit/?.so;" .. package.cpath

local oai = require "oai"
local config = { model = os.getenv("OPENAI_MODEL") or "gpt-4o-mini" }
local client

local function get_client()
  if not client then
    require("oai.uv").attach(vim.uv or vim.loop)
    client = oai.new { base_url = config.base_url, api_key = config.api_key, headers = config.headers }
  end
  return client
end

function M.setup(opts)
  for k, v in pairs(opts or {}) do config[k] = v end
  client = nil
end

--- Stream a reply to `prompt` into a new scratch buffer; returns the
--- buffer and the stream.
function M.chat(prompt)
  local buf = vim.api.nvim_create_buf(true, true)
  vim.api.nvim_buf_set_name(buf, "oai://" .. buf)
  vim.bo[buf].filetype = "markdown"
  vim.api.nvim_set_current_buf(buf)
  vim.wo.foldmethod = "manual"
  vim.wo.foldminlines = 0
  local reasoning, content = {}, {}
  local state = { buf = buf, done = false }

  local function render()
    if not vim.api.nvim_buf_is_valid(buf) then return end
    local lines = {}
    local r = table.concat(reasoning)
    if r ~= "" then
      lines[1] = "> reasoning:"
      for l in (r .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = "> " .. l end
    end
    local nr = #lines
    local c = table.concat(content)
    for l in (c .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
    vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
    if nr > 0 then
      -- reasoning lines folded away (closed); rewriting the lines drops
      -- manual folds, so the fold is made again each time
      local win = vim.fn.bufwinid(buf)
      if win ~= -1 then
        vim.api.nvim_win_call(win, function()
          pcall(vim.cmd, "normal! zE")
          vim.cmd(("1,%dfold"):format(nr))
        end)
      end
    end
  end

  state.stream = get_client():stream({ model = config.model, messages = { { role = "user", content = prompt } } }, {
    on_reasoning = function(t) reasoning[#reasoning + 1] = t; render() end,
    on_text = function(t) content[#content + 1] = t; render() end,
    on_done = function(res, err)
      state.done = true
      state.result, state.err = res, err
      if not res then
        content[#content + 1] = "\n\n[" .. tostring(err) .. "]"
        render()
      end
    end,
  })
  vim.keymap.set("n", "<C-c>", function()
    if not state.done then state.stream:cancel() end
  end, { buffer = buf, desc = "cancel the oai reply" })
  return state
end

vim.api.nvim_create_user_command("OaiChat", function(o) M.chat(o.args) end,
  { nargs = "+", desc = "Stream a chat reply into a scratch buffer" })

return M
