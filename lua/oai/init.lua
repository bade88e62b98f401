--- oai: OpenAI-compatible Chat Completions for Lua, with its core in C.
---
--- This file is the public surface: everything `require "oai"` gives is
--- listed here, taken from the module that implements it.  Programmer
--- errors raise; runtime failures return `nil, message, err` (see
--- oai.errors for the error shape).
local core = require "oai.native"
local loop = require "oai.loop"
local errors = require "oai.errors"
local transport = require "oai.transport"
local send = require "oai.send"
local client = require "oai.client"
local messages = require "oai.messages"
local conversation = require "oai.conversation"
local tools = require "oai.tools"
local structured = require "oai.structured"

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
oai.errors = errors

-- clients (oai.client)
oai.Client = client.Client
oai.new = client.new
oai.meta = client.meta

-- transports and tasks (oai.transport; oai.loop drives libcurl)
oai.curl_transport = transport.curl
oai.set_transport = transport.set
oai.transport = transport.current
oai.spawn = transport.spawn
oai.run = transport.run
oai.sleep = transport.sleep
oai.step = loop.step

-- messages (oai.messages)
oai.system = messages.system
oai.developer = messages.developer
oai.user = messages.user
oai.assistant = messages.assistant
oai.tool = messages.tool
oai.text = messages.text
oai.image_url = messages.image_url
oai.image_file = messages.image_file
oai.image_type = messages.image_type

-- helpers: conversations, the tool loop, structured outputs
oai.conversation = conversation.api
oai.tools = tools.new
oai.parse_reply = structured.reply
oai.validate = structured.validate

-- internals the specs reach (not API)
oai._retry_after = errors.retry_after
oai._backoff = send.backoff
oai._origin_of = client.origin_of

return oai
