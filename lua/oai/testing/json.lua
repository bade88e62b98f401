--- JSON for the oai.testing server (runs inside nginx's LuaJIT, on lua-cjson).
-- The server is the test peer of the library, so it never uses oai's own codec.
local cjson = require("cjson").new()

local json = {}

json.null = cjson.null

--- Encodes as `[]` (cjson 2.1.0 encodes every empty table as `{}`).
json.empty_array = "\0oai-testing-empty-array\0"
local EMPTY_ARRAY_ENCODED = '"\\u0000oai-testing-empty-array\\u0000"'
local EMPTY_ARRAY_PATTERN = (EMPTY_ARRAY_ENCODED:gsub("%p", "%%%0"))

--- encode(value) -> string: cjson, minus its `\/` escape, with `json.empty_array` as `[]`.
-- cjson escapes every `/` and every other backslash is part of an escape pair, so
-- removing the backslash of each `\/` is exact.
function json.encode(value)
  local s = cjson.encode(value):gsub("\\/", "/")
  if s:find(EMPTY_ARRAY_ENCODED, 1, true) then
    s = s:gsub(EMPTY_ARRAY_PATTERN, "[]")
  end
  return s
end

--- decode(text) -> value | nil, err
function json.decode(text)
  local ok, value = pcall(cjson.decode, text)
  if ok then return value end
  return nil, value
end

return json
