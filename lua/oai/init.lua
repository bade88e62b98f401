--- oai: OpenAI-compatible Chat Completions for Lua.
local core = require "oai.core"

local oai = {}

oai.core = core
oai.version = core.version

--- JSON codec (C): encode(value) -> string | raises; decode(text) -> value | nil, err
oai.json = { encode = core.json_encode, decode = core.json_decode }
oai.null = core.null
oai.array = core.array
oai.object = core.object
oai.base64 = core.base64
oai.sse = core.sse

return oai
