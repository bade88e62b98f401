-- examples/love: streaming a reply inside a LÖVE game loop.  oai.step(0)
-- (a timeout of 0 seconds) runs once per frame in love.update and never
-- blocks, so the frame rate holds while the reply streams in.  Quits with
-- exit code 0 when the reply completed, 1 on an error (also from the error
-- handler), so CI can run it:
--   OAI_ROOT=$PWD love examples/love        (uses build/luajit/oai/core.so)
-- Talks to $OPENAI_BASE_URL, else starts the bundled local server.
local root = os.getenv("OAI_ROOT") or "."
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/luajit/?.so;" .. package.cpath

local oai = require "oai"

local srv, stream, text, frames, worst = nil, {}, nil, 0, 0

function love.load()
  local base = os.getenv("OPENAI_BASE_URL")
  if not base or base == "" then
    srv = require("oai.testing").start {}
    base = srv.url
  end
  local client = oai.new { base_url = base,
    headers = srv and { ["x-test-chunks"] = "20", ["x-test-chunk-delay-ms"] = "20" } or nil }
  stream = client:stream({ model = os.getenv("OPENAI_MODEL") or "test-model",
                           messages = { oai.user and oai.user("Say hello to the game") or
                                        { role = "user", content = "Say hello to the game" } } }, {
    on_text = function(t) text = (text or "") .. t end,
    on_done = function(res, err)
      if res then
        print("reply: " .. res.choices[1].message.content)
        print(("frames: %d, slowest oai.step: %.2f ms"):format(frames, worst))
        if srv then srv:stop() end
        love.event.quit(0)
      else
        print("error: " .. tostring(err))
        if srv then srv:stop() end
        love.event.quit(1)
      end
    end,
  })
end

function love.update(dt)
  frames = frames + 1
  local t0 = oai.core.monotime()
  oai.step(0)
  local ms = (oai.core.monotime() - t0) * 1000
  if ms > worst then worst = ms end
  if frames > 60 * 30 then
    print("timed out")
    love.event.quit(1)
  end
end

-- any Lua error quits non-zero instead of showing LÖVE's error screen
function love.errorhandler(msg)
  print("error: " .. tostring(msg) .. "\n" .. debug.traceback())
  if srv then pcall(srv.stop, srv) end
  os.exit(1)
end
