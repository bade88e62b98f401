-- examples/conversation.lua: a conversation that keeps its own history.
-- One turn with conv:send, one streamed with conv:stream (the reply is
-- appended when the stream completes), a failed turn that appends nothing
-- and is retried, usage totals with a cost estimate, and saving the
-- conversation as JSON and restoring it (then forking it).
--
--   lua5.4 examples/conversation.lua    uses $OPENAI_BASE_URL / $OPENAI_API_KEY
--                                       ($OPENAI_MODEL), else starts the local server
local oai = require "oai"

local base_url = os.getenv("OPENAI_BASE_URL")
local local_server
if not base_url or base_url == "" then
  -- no provider configured: the bundled local OpenAI-compatible server
  local_server = require("oai.testing").start {}
  base_url = local_server.url
end
local model = os.getenv("OPENAI_MODEL") or (local_server and "reasoner" or "gpt-4o-mini")
local client = oai.new { base_url = base_url, stream_usage = true }

local conv = oai.conversation {
  system = "You are terse.",
  max_messages = 20,        -- each request: the system message + the newest 20
  max_chars = 20000,
  request = { model = model },
}

local function say(text) print("user: " .. text) end

-- 1. a plain turn
say "Name a prime number."
conv:user "Name a prime number."
local res = assert(conv:send(client))
print("assistant: " .. tostring(res.choices[1].message.content))

-- 2. a streamed turn
say "And another one?"
conv:user "And another one?"
local stream = assert(conv:stream(client))
io.write("assistant: ")
for text in stream:text() do io.write(text); io.flush() end
print()
local ok, _, err = stream:result()
if not ok then print("(stream failed: " .. tostring(err) .. ")") end

-- 3. a failed turn appends nothing: retrying is one call
say "Why?"
conv:user "Why?"
local failed = local_server and { headers = { ["x-test-status"] = "503" }, max_retries = 0 } or nil
res, err = conv:send(client, nil, failed)
if not res then
  print(("(failed: %s; history still ends with the user message: %q)"):format(tostring(err), conv:last().content))
  res = assert(conv:send(client))
end
print("assistant: " .. tostring(res.choices[1].message.content))

-- 4. usage over every turn, with prices per million tokens
local usage = conv:usage { prices = { [model] = { prompt = 0.15, completion = 0.60 } } }
print(("usage: %d requests, %d prompt + %d completion tokens (%d reasoning), cost $%.6f"):format(
  usage.requests, usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens, usage.cost or 0))

-- 5. save, restore, fork
local saved = conv:to_json()
local restored = assert(oai.conversation.from_json(saved))
assert(restored:to_json() == saved)
local branch = restored:fork()
branch:user "Say it in French."
res = assert(branch:send(client))
print(("saved %d bytes; the restored conversation has %d messages, its fork %d"):format(
  #saved, #restored:messages(), #branch:messages()))
print("fork's assistant: " .. tostring(res.choices[1].message.content))

if local_server then local_server:stop() end
