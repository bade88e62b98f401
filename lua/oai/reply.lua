--- oai.reply: getting one reply from the model and reading its message.
---
--- ask() is "chat, or stream then result" for the helpers that need a
--- whole completion (client:chat with stream = true, client:parse, the
--- tool loop); message() is the one check that a completion carries
--- choices[1].message (conversations, the tool loop, structured outputs).
local errors = require "oai.errors"

local type = type

local M = {}

--- One whole completion: client:chat, or client:stream then result().
---@param client oai.Client
---@param request table
---@param opts? table per-call options (stream callbacks too, when streaming)
---@param stream? boolean
---@return table? completion
---@return string? message of the failure (tostring(err))
---@return oai.Error? err
function M.ask(client, request, opts, stream)
  if stream then
    local s, msg, err = client:stream(request, opts)
    if not s then return nil, msg, err end
    return s:result()
  end
  return client:chat(request, opts)
end

--- The first choice of a completion and its message, or nil, err (kind
--- "protocol"; err.completion is the completion).
---@param completion any
---@return table? choice
---@return table|oai.Error message_or_err
function M.message(completion)
  local choice = type(completion) == "table" and type(completion.choices) == "table" and completion.choices[1]
  local msg = type(choice) == "table" and choice.message
  if type(msg) ~= "table" then
    return nil, errors.protocol("the reply has no choices[1].message", { completion = completion })
  end
  return choice, msg
end

return M
