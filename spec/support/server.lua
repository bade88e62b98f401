-- The local OpenAI-compatible server for specs: `local server = require "server"`.
return require "oai.testing"
