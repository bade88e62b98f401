rockspec_format = "3.0"
package = "oai"
version = "scm-1"
source = { url = "git+https://example.invalid/oai.git" }
description = {
  summary = "OpenAI-compatible Chat Completions for Lua, with its core in C",
  detailed = "Streaming (SSE), tool calls, retries and tasks over libcurl's multi interface.",
  license = "MIT",
}
dependencies = { "lua >= 5.1" }
test_dependencies = { "busted", "lua-cjson" }
external_dependencies = {
  -- only the library is checked: on Debian/Ubuntu the headers sit in the
  -- multiarch directory (/usr/include/<triplet>/curl), which the compiler
  -- searches by itself but LuaRocks does not; CURL_INCDIR/CURL_LIBDIR still
  -- override
  CURL = { library = "curl" },
}
build = {
  type = "builtin",
  modules = {
    ["oai.core"] = {
      sources = { "src/core.c", "src/util.c", "src/json_encode.c", "src/json_decode.c",
                  "src/sse.c", "src/lsse.c", "src/records.c", "src/chunk.c", "src/scan.c",
                  "src/text.c", "src/request.c", "src/headers.c", "src/multi.c" },
      incdirs = { "src", "$(CURL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)" },
      libraries = { "curl", "m" },
      defines = {},
    },
    ["oai"] = "lua/oai/init.lua",
    ["oai.conversation"] = "lua/oai/conversation.lua",
    ["oai.errors"] = "lua/oai/errors.lua",
    ["oai.handle"] = "lua/oai/handle.lua",
    ["oai.loop"] = "lua/oai/loop.lua",
    ["oai.messages"] = "lua/oai/messages.lua",
    ["oai.native"] = "lua/oai/native.lua",
    ["oai.ngx"] = "lua/oai/ngx.lua",
    ["oai.parse"] = "lua/oai/parse.lua",
    ["oai.schema"] = "lua/oai/schema.lua",
    ["oai.stream"] = "lua/oai/stream.lua",
    ["oai.testing"] = "lua/oai/testing.lua",
    ["oai.testing.app"] = "lua/oai/testing/app.lua",
    ["oai.testing.chat"] = "lua/oai/testing/chat.lua",
    ["oai.testing.json"] = "lua/oai/testing/json.lua",
    ["oai.testing.proc"] = "lua/oai/testing/proc.lua",
    ["oai.tools"] = "lua/oai/tools.lua",
    ["oai.uv"] = "lua/oai/uv.lua",
  },
}
test = { type = "busted" }
