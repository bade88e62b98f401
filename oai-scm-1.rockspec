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
test_dependencies = { "busted", "lua-cjson" }   -- the suite also uses oai-testing-scm-1.rockspec
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
    ["oai.accumulator"] = "lua/oai/accumulator.lua",
    ["oai.client"] = "lua/oai/client.lua",
    ["oai.conversation"] = "lua/oai/conversation.lua",
    ["oai.errors"] = "lua/oai/errors.lua",
    ["oai.handle"] = "lua/oai/handle.lua",
    ["oai.loop"] = "lua/oai/loop.lua",
    ["oai.messages"] = "lua/oai/messages.lua",
    ["oai.native"] = "lua/oai/native.lua",
    ["oai.ngx"] = "lua/oai/ngx/init.lua",
    ["oai.ngx.http1"] = "lua/oai/ngx/http1.lua",
    ["oai.ngx.request"] = "lua/oai/ngx/request.lua",
    ["oai.ngx.response"] = "lua/oai/ngx/response.lua",
    ["oai.ngx.tasks"] = "lua/oai/ngx/tasks.lua",
    ["oai.records"] = "lua/oai/records.lua",
    ["oai.reply"] = "lua/oai/reply.lua",
    ["oai.schema"] = "lua/oai/schema.lua",
    ["oai.send"] = "lua/oai/send.lua",
    ["oai.stream"] = "lua/oai/stream.lua",
    ["oai.structured"] = "lua/oai/structured.lua",
    ["oai.tools"] = "lua/oai/tools.lua",
    ["oai.transport"] = "lua/oai/transport.lua",
    ["oai.uv"] = "lua/oai/uv.lua",
    ["oai.window"] = "lua/oai/window.lua",
  },
}
test = { type = "busted" }
