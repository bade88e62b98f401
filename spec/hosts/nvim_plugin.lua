-- Run inside headless Neovim: the examples/nvim plugin streams into a
-- buffer with the reasoning folded, and <C-c> cancels a long reply.
local root = os.getenv("OAI_ROOT")
local out = assert(io.open(os.getenv("OAI_RESULT"), "w"))
local ok, err = pcall(function()
  vim.opt.rtp:append(root .. "/examples/nvim")
  vim.cmd("runtime plugin/oai_chat.lua")
  local chat = require "oai_chat"
  chat.setup { base_url = os.getenv("OAI_URL"), api_key = "sk-plugin", model = "reasoner" }
  vim.cmd("OaiChat why is the sky blue")
  local st = chat._last or nil
  local buf = vim.api.nvim_get_current_buf()
  assert(vim.wait(10000, function()
    local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
    return lines[#lines] == "Hello! You said: why is the sky blue"
  end, 10), "reply never completed: " .. table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), "|"))
  local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  assert(lines[1] == "> reasoning:", lines[1])
  assert(lines[2] == "> Thinking about: why is the sky blue", lines[2])
  assert(vim.fn.foldclosed(1) == 1, "reasoning is not folded")
  -- a long reply, cancelled with <C-c>
  chat.setup { base_url = os.getenv("OAI_URL"), api_key = "sk-plugin", model = "test-model",
               headers = { ["x-test-chunks"] = "200", ["x-test-chunk-delay-ms"] = "20" } }
  local state = chat.chat("long")
  assert(vim.wait(5000, function()
    return (vim.api.nvim_buf_get_lines(state.buf, 0, -1, false)[1] or ""):find("w3", 1, true) ~= nil
  end, 10), "long reply did not start")
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes("<C-c>", true, false, true), "mx", false)
  assert(vim.wait(3000, function() return state.done end, 10), "cancel did not end the stream")
  assert(state.err and state.err.kind == "canceled", "expected a canceled error, got " .. tostring(state.err))
  return "ok"
end)
out:write(ok and "ok" or ("FAIL " .. tostring(err)), "\n")
out:close()
vim.cmd(ok and "cquit 0" or "cquit 1")
