-- LÖVE configuration: headless (no window, no graphics) so it runs in CI.
function love.conf(t)
  t.identity = "oai-love-example"
  t.window = false
  t.modules.window = false
  t.modules.graphics = false
  t.modules.audio = false
  t.modules.sound = false
  t.modules.joystick = false
  t.modules.physics = false
  t.modules.video = false
end
