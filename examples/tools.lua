-- examples/tools.lua: the tool-call loop.  Two Lua functions become tools;
-- tools:run sends the question, runs the calls the model makes (in parallel,
-- as tasks), feeds the results back and streams the final answer.  A call
-- with bad arguments is answered with an `error: ...` tool message so the
-- model can correct itself; on_call / on_result show each step.
--
--   lua5.4 examples/tools.lua       uses $OPENAI_BASE_URL / $OPENAI_API_KEY
--                                   ($OPENAI_MODEL), else starts the local server
local oai = require "oai"

local base_url = os.getenv("OPENAI_BASE_URL")
local local_server
if not base_url or base_url == "" then
  -- no provider configured: the bundled local OpenAI-compatible server,
  -- whose `tools` model calls the tools named in the question
  local_server = require("oai.testing").start {}
  base_url = local_server.url
end
local model = os.getenv("OPENAI_MODEL") or (local_server and "tools" or "gpt-4o-mini")
local client = oai.new { base_url = base_url }

local CITY = { type = "object", properties = { city = { type = "string", description = "City name" } },
               required = oai.array { "city" }, additionalProperties = false }

local tools = oai.tools {
  weather = {
    description = "Current weather in a city",
    parameters = CITY,
    handler = function(args)
      oai.sleep(0.1) -- pretend to ask a weather service; other handlers run meanwhile
      return { city = args.city, temp_c = 21, sky = "clear" }
    end,
  },
  time = {
    description = "Local time in a city",
    parameters = CITY,
    handler = function(args)
      if args.city == "" then return nil, "which city?" end -- becomes "error: which city?"
      return os.date("!%H:%M UTC")
    end,
  },
}

local question = "What are the weather and the local time in Paris? (city=Paris)"
print("user: " .. question)

local started = false
local final, err, _, messages = tools:run(client, {
  model = model,
  messages = { oai.system "Answer briefly; use the tools.", oai.user(question) },
}, {
  parallel = true,
  stream = true,
  max_rounds = 5,
  -- the local server's model: spoil the first call, to show the correction
  headers = local_server and { ["x-test-tool-mode"] = "missing-required" } or nil,
  on_text = function(text)
    if not started then io.write("assistant: "); started = true end
    io.write(text)
    io.flush()
  end,
  on_call = function(call, args)
    print(("  -> %s(%s)"):format(call["function"].name, oai.json.encode(args)))
  end,
  on_result = function(call, content)
    print(("  <- %s: %s"):format(call.id, content))
  end,
})
print()

if not final then
  io.stderr:write("failed: ", tostring(err), "\n")
else
  local roles = {}
  for i, m in ipairs(messages) do roles[i] = m.role end
  print(("(%d messages: %s)"):format(#messages, table.concat(roles, ", ")))
end

if local_server then local_server:stop() end
if not final then os.exit(1) end
