rockspec_format = "3.0"
package = "oai-testing"
version = "scm-1"
source = { url = "git+https://example.invalid/oai.git" }
description = {
  summary = "A local OpenAI-compatible server for testing code that uses oai",
  detailed = [[
oai.testing starts a private nginx (with the Lua module) on 127.0.0.1 that
answers /v1/chat/completions, /v1/models and more like an OpenAI-compatible
provider: streams, tool calls, scripted faults, recorded requests.  Needs
nginx with lua-nginx-module (Debian: nginx, libnginx-mod-http-lua,
lua-resty-core) and, inside nginx, lua-cjson.]],
  license = "MIT",
}
dependencies = { "lua >= 5.1", "oai", "lua-cjson" }
build = {
  type = "builtin",
  modules = {
    ["oai.testing"] = "lua/oai/testing.lua",
    ["oai.testing.app"] = "lua/oai/testing/app.lua",
    ["oai.testing.chat"] = "lua/oai/testing/chat.lua",
    ["oai.testing.json"] = "lua/oai/testing/json.lua",
    ["oai.testing.proc"] = "lua/oai/testing/proc.lua",
  },
}
