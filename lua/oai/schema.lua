--- oai.schema: a small JSON Schema checker for decoded JSON values.
---
--- Used by client:parse (structured outputs) and by the tool loop (tool
--- arguments).  It knows the keywords OpenAI's structured outputs use:
--- `type` (one or a list), `properties`, `required`, `additionalProperties`
--- (false or a schema), `items`, `enum`, `const`, `anyOf`/`oneOf` (checked as
--- anyOf) and `$ref` to `#`, `#/$defs/NAME` or `#/definitions/NAME`.  Other
--- keywords (formats, lengths, bounds, patterns) are ignored.
---
--- The first violation is reported as "PATH: problem", where PATH starts at
--- `$` and uses Lua's indexing: `$.items[1].name` (arrays count from 1).
local core = require "oai.native"

local null = core.null
local type, pairs, ipairs, next, tostring, getmetatable = type, pairs, ipairs, next, tostring, getmetatable
local floor, huge = math.floor, math.huge
local sort, concat = table.sort, table.concat

local M = {}

local ARRAY_MT = getmetatable(core.array())
local OBJECT_MT = getmetatable(core.object())
if OBJECT_MT == ARRAY_MT then OBJECT_MT = nil end

-- "array", "object" or "empty" (an unmarked empty table: either)
local function table_kind(t)
  local mt = getmetatable(t)
  if mt ~= nil then
    if mt == ARRAY_MT then return "array" end
    if mt == OBJECT_MT then return "object" end
  end
  local n = #t
  if n == 0 then return next(t) == nil and "empty" or "object" end
  local count = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k > n or k ~= floor(k) then return "object" end
    count = count + 1
  end
  return count == n and "array" or "object"
end

--- The JSON type name of a decoded value: "null", "boolean", "integer",
--- "number", "string", "array", "object" (an empty unmarked table is
--- "object"), or the Lua type for values JSON cannot hold.
---@param v any
---@return string
function M.json_type(v)
  local t = type(v)
  if v == null then return "null" end
  if t == "number" then
    if v == floor(v) and v > -huge and v < huge then return "integer" end
    return "number"
  elseif t == "table" then
    local k = table_kind(v)
    return k == "array" and "array" or "object"
  end
  return t
end

local function has_type(v, name)
  local t = type(v)
  if name == "string" then return t == "string"
  elseif name == "number" then return t == "number" and v == v and v > -huge and v < huge
  elseif name == "integer" then return t == "number" and v == floor(v) and v > -huge and v < huge
  elseif name == "boolean" then return t == "boolean"
  elseif name == "null" then return v == null
  elseif name == "array" then return t == "table" and table_kind(v) ~= "object"
  elseif name == "object" then return t == "table" and table_kind(v) ~= "array"
  end
  return true -- unknown type names do not constrain
end

local function deep_equal(a, b)
  if a == b then return true end
  if type(a) ~= "table" or type(b) ~= "table" then return false end
  for k, v in pairs(a) do
    if not deep_equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function show(v)
  local t = type(v)
  if t == "string" then
    local q = ("%q"):format(v):gsub("\\\n", "\\n")
    return q
  end
  if v == null then return "null" end
  if t == "table" then return M.json_type(v) end
  return tostring(v)
end

local function key_path(path, k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return path .. "." .. k end
  return path .. "[" .. show(k) .. "]"
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  sort(ks, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "string" or ta == "number" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return ks
end

local function resolve(ref, root)
  if ref == "#" then return root end
  local name = ref:match("^#/%$defs/(.+)$")
  local defs = root["$defs"]
  if not name then
    name = ref:match("^#/definitions/(.+)$")
    defs = root.definitions
  end
  if name and type(defs) == "table" then return defs[name] end
  return nil
end

local function type_list(s)
  local t = s.type
  if type(t) == "string" then return { t } end
  if type(t) == "table" then return t end
  return nil
end

local check

local function fail(path, problem)
  return nil, path .. ": " .. problem, path
end

-- the types an alternative allows (through one $ref), or nil
local function alt_types(alt, root)
  if type(alt) ~= "table" then return nil end
  if type(alt["$ref"]) == "string" and alt.type == nil then
    local target = resolve(alt["$ref"], root)
    if type(target) == "table" then return type_list(target) end
  end
  return type_list(alt)
end

local function check_any(v, alts, path, root, depth)
  -- the error of the first alternative whose type fits says most; when no
  -- alternative's type fits, list the types
  local first_err, first_at, fitting_err, fitting_at
  local names, typed = {}, true
  for _, alt in ipairs(alts) do
    local ok, err, at = check(v, alt, path, root, depth)
    if ok then return true end
    if not first_err then first_err, first_at = err, at end
    local types = alt_types(alt, root)
    if types then
      for _, name in ipairs(types) do
        names[#names + 1] = name
        if not fitting_err and has_type(v, name) then fitting_err, fitting_at = err, at end
      end
    else
      typed = false
    end
  end
  if fitting_err then return nil, fitting_err, fitting_at end
  if typed and names[1] ~= nil then
    return fail(path, "expected " .. concat(names, " or ") .. ", got " .. M.json_type(v))
  end
  return nil, first_err, first_at
end

check = function(v, s, path, root, depth)
  if s == false then return fail(path, "not allowed") end
  if type(s) ~= "table" then return true end
  if depth > 64 then return fail(path, "schema nested too deeply") end
  depth = depth + 1
  local ref = s["$ref"]
  if type(ref) == "string" then
    local target = resolve(ref, root)
    if target == nil then return fail(path, "cannot resolve $ref " .. ref) end
    local ok, err, at = check(v, target, path, root, depth)
    if not ok then return nil, err, at end
  end
  local alts = s.anyOf or s.oneOf
  if type(alts) == "table" and alts[1] ~= nil then
    local ok, err, at = check_any(v, alts, path, root, depth)
    if not ok then return nil, err, at end
  end
  if s.const ~= nil and not deep_equal(v, s.const) then
    return fail(path, "expected " .. show(s.const) .. ", got " .. show(v))
  end
  local types = type_list(s)
  if types and types[1] ~= nil then
    local fits = false
    for _, name in ipairs(types) do
      if has_type(v, name) then fits = true; break end
    end
    if not fits then
      return fail(path, "expected " .. concat(types, " or ") .. ", got " .. M.json_type(v))
    end
  end
  if type(s.enum) == "table" and s.enum[1] ~= nil then
    local found = false
    for _, e in ipairs(s.enum) do
      if deep_equal(v, e) then found = true; break end
    end
    if not found then
      local shown = {}
      for i, e in ipairs(s.enum) do shown[i] = show(e) end
      return fail(path, "expected one of " .. concat(shown, ", ") .. ", got " .. show(v))
    end
  end
  if type(v) ~= "table" then return true end
  local kind = table_kind(v)
  if kind ~= "array" then
    -- an object (or an empty table)
    if type(s.required) == "table" then
      for _, name in ipairs(s.required) do
        if v[name] == nil then return fail(key_path(path, name), "required field missing") end
      end
    end
    local props = type(s.properties) == "table" and s.properties or nil
    if props then
      for _, name in ipairs(sorted_keys(props)) do
        local fv = v[name]
        if fv ~= nil then
          local ok, err, at = check(fv, props[name], key_path(path, name), root, depth)
          if not ok then return nil, err, at end
        end
      end
    end
    local extra = s.additionalProperties
    if extra ~= nil and extra ~= true then
      for _, name in ipairs(sorted_keys(v)) do
        if not (props and props[name] ~= nil) then
          if extra == false then
            return fail(key_path(path, name), "unexpected field (additionalProperties is false)")
          end
          local ok, err, at = check(v[name], extra, key_path(path, name), root, depth)
          if not ok then return nil, err, at end
        end
      end
    end
  end
  if kind ~= "object" and type(s.items) == "table" then
    for i = 1, #v do
      local ok, err, at = check(v[i], s.items, path .. "[" .. i .. "]", root, depth)
      if not ok then return nil, err, at end
    end
  end
  return true
end

--- Check a decoded JSON value against a JSON schema.
---@param value any a decoded JSON value (oai.null for null)
---@param schema table|boolean the schema
---@param path? string name of the root in messages ("$")
---@return true|nil ok
---@return string? problem "PATH: problem", e.g. `$.items[2].name: expected string, got integer`
---@return string? path the PATH alone
function M.check(value, schema, path)
  return check(value, schema, path or "$", type(schema) == "table" and schema or {}, 0)
end

return M
