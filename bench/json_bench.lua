-- bench/json_bench.lua: oai.json.decode vs cjson.decode on response-shaped
-- documents, and oai.json.encode vs cjson.encode on a typical request.
--   LUA_CPATH='build/5.4/?.so;;' LUA_PATH='lua/?.lua;lua/?/init.lua;;' lua5.4 bench/json_bench.lua
local oai = require "oai"
local cjson = require "cjson"

local function median(t)
  table.sort(t)
  return t[math.floor((#t + 1) / 2)]
end

-- microseconds per call of fn(arg), median of 7 runs
local function measure(fn, arg, n)
  local runs = {}
  for r = 1, 7 do
    local t0 = os.clock()
    for _ = 1, n do fn(arg) end
    runs[r] = (os.clock() - t0) / n * 1e6
  end
  return median(runs)
end

local chunk = '{"id":"chatcmpl-AbCdEf0123456789","object":"chat.completion.chunk","created":1700000000,'
  .. '"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0123456789","choices":[{"index":0,'
  .. '"delta":{"content":" streaming"},"logprobs":null,"finish_reason":null}]}'

local content = {}
for i = 1, 60 do content[#content + 1] = "Line " .. i .. " with \"quotes\", tabs\tand é ü 😀." end
local completion = cjson.encode({
  id = "chatcmpl-1", object = "chat.completion", created = 1700000000, model = "gpt-4o-mini",
  choices = { { index = 0, message = { role = "assistant", content = table.concat(content, "\n") },
                finish_reason = "stop" } },
  usage = { prompt_tokens = 120, completion_tokens = 480, total_tokens = 600 },
})

local models = { object = "list", data = {} }
for i = 1, 100 do
  models.data[i] = { id = "model-" .. i, object = "model", created = 1700000000 + i, owned_by = "org-" .. (i % 7) }
end
models = cjson.encode(models)

local tools = cjson.encode({
  id = "chatcmpl-2", object = "chat.completion", created = 1700000000, model = "gpt-4o",
  choices = { { index = 0, finish_reason = "tool_calls", message = { role = "assistant", tool_calls = {
    { id = "call_1", type = "function", ["function"] = { name = "get_weather", arguments = '{"city":"Paris","unit":"c"}' } },
    { id = "call_2", type = "function", ["function"] = { name = "get_time", arguments = '{"tz":"Europe/Paris"}' } },
  } } } },
  usage = { prompt_tokens = 80, completion_tokens = 40, total_tokens = 120 },
})

local request = { model = "gpt-4o-mini", temperature = 0.7, stream = true, messages = {} }
for i = 1, 20 do
  request.messages[i] = { role = i % 2 == 1 and "user" or "assistant",
                          content = "Message number " .. i .. ": " .. string.rep("some words here ", 8) }
end

print(("%-34s %12s %12s %8s"):format(_VERSION .. (jit and " (LuaJIT)" or ""), "oai µs", "cjson µs", "ratio"))
local function row(name, a, b, arg, n)
  local ta, tb = measure(a, arg, n), measure(b, arg, n)
  print(("%-34s %12.3f %12.3f %8.2f"):format(name, ta, tb, ta / tb))
end
row("decode chat.completion.chunk", oai.json.decode, cjson.decode, chunk, 20000)
row("decode completion (4 KB content)", oai.json.decode, cjson.decode, completion, 5000)
row("decode /v1/models (100 models)", oai.json.decode, cjson.decode, models, 1000)
row("decode tool-call completion", oai.json.decode, cjson.decode, tools, 10000)
row("encode request (20 messages)", oai.json.encode, cjson.encode, request, 5000)
print("(ratio < 1: oai is faster; oai.json.encode also sorts keys and checks UTF-8)")
