-- Documentation checks: every public function of oai (Lua and C) has a
-- heading in docs/API.md, and every public Lua function carries LuaCATS
-- annotations (---@param / ---@return) so lua-language-server completes it.
local oai = require "oai"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function public(t, prefix, sep, out)
  for k, v in pairs(t) do
    local callable = type(v) == "function"
      or (type(v) == "table" and getmetatable(v) and getmetatable(v).__call ~= nil)
    if type(k) == "string" and callable and not k:match("^_") then
      out[#out + 1] = prefix .. sep .. k
    end
  end
  return out
end

local function api_names()
  local names = {}
  public(oai, "oai", ".", names)
  public(oai.json, "oai.json", ".", names)
  public(oai.Client, "client", ":", names)
  public(require("oai.stream").Stream, "stream", ":", names)
  public(require("oai.handle").Handle, "handle", ":", names)
  local task = oai.spawn(function() end)
  oai.run()
  public(getmetatable(task).__index, "task", ":", names)
  if oai.conversation then
    public(oai.conversation, "oai.conversation", ".", names)
    public(getmetatable(oai.conversation {}).__index, "conv", ":", names)
  end
  if oai.tools then public(getmetatable(oai.tools {}).__index, "tools", ":", names) end
  public(require("oai.uv"), "oai.uv", ".", names)
  local testing = require "oai.testing"
  public(testing, "oai.testing", ".", names)
  public(testing.Server or {}, "srv", ":", names)
  public(oai.core, "core", ".", names)
  local reg = debug.getregistry()
  public(reg["oai.multi"].__index, "multi", ":", names)
  public(reg["oai.request"].__index, "req", ":", names)
  public(reg["oai.sse"].__index, "p", ":", names)
  table.sort(names)
  return names
end

describe("docs/API.md", function()
  it("has a heading for every public function and method", function()
    local doc = read("docs/API.md")
    local headings = {}
    for h in doc:gmatch("\n### ([^\n]+)") do
      headings[h:match("^[%w_.:]+")] = true
    end
    local missing = {}
    local names = api_names()
    for _, n in ipairs(names) do
      if not headings[n] then missing[#missing + 1] = n end
    end
    assert.same({}, missing)
    assert.truthy(#names > 90, #names)
  end)

  it("documents the OpenResty transport", function()
    assert.truthy(read("docs/API.md"):find("\n### oai.ngx.transport()", 1, true))
  end)
end)

describe("LuaCATS annotations", function()
  local files = { "init", "client", "send", "transport", "reply", "stream", "records", "accumulator", "handle", "loop", "uv",
    "ngx/init", "ngx/http1", "ngx/request", "ngx/response", "ngx/tasks", "errors",
    "messages", "conversation", "window", "tools", "structured", "schema" }
  it("annotate every public Lua function", function()
    local missing = {}
    for _, f in ipairs(files) do
      local path = "lua/oai/" .. f .. ".lua"
      local fh = io.open(path, "rb")
      if fh then
        local lines = {}
        for l in fh:lines() do lines[#lines + 1] = l end
        fh:close()
        for i, l in ipairs(lines) do
          -- public: function T.name / T:name where T is not a local helper table of privates
          local tbl, name = l:match("^function ([%w_]+)[.:]([%w_]+)%s*%(")
          if tbl and not name:match("^_") and not tbl:match("^_") then
            local j, annotated = i - 1, false
            while j > 0 and lines[j]:match("^%-%-") do
              if lines[j]:match("^%-%-%-@") then annotated = true end
              j = j - 1
            end
            if not annotated then missing[#missing + 1] = path .. ":" .. i .. " " .. tbl .. "." .. name end
          end
        end
      end
    end
    assert.same({}, missing)
  end)
end)

describe("packaging", function()
  it("lists every Lua module in a rockspec: the library in oai, the test server in oai-testing", function()
    local spec = read("oai-scm-1.rockspec") .. read("oai-testing-scm-1.rockspec")
    local p = assert(io.popen("find lua/oai -name '*.lua' | sort"))
    local missing = {}
    for path in p:lines() do
      if not spec:find('"' .. path .. '"', 1, true) then missing[#missing + 1] = path end
    end
    p:close()
    assert.same({}, missing)
  end)

  it("keeps the test server out of the library rock", function()
    assert.falsy(read("oai-scm-1.rockspec"):find("oai.testing", 1, true))
  end)
end)

describe("docs/architecture.md", function()
  -- module -> its oai requirements (comments left out), as "a -> b, c"
  local function graph()
    local lines = {}
    local p = assert(io.popen("cd lua && find oai -name '*.lua' | sort"))
    for file in p:lines() do
      local mod = file:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
      if not mod:match("^oai%.testing") then
        local code = {}
        for l in io.lines("lua/" .. file) do code[#code + 1] = (l:gsub("%-%-.*$", "")) end
        local seen, deps = {}, {}
        for name in table.concat(code, "\n"):gmatch('require%s*%(?%s*"(oai[%w_.]*)"') do
          if name ~= mod and not seen[name] then seen[name] = true; deps[#deps + 1] = name end
        end
        table.sort(deps)
        lines[#lines + 1] = mod .. " -> " .. (#deps > 0 and table.concat(deps, ", ") or "(none)")
      end
    end
    p:close()
    table.sort(lines)
    return lines
  end

  it("draws the import graph the code has", function()
    local doc = read("docs/architecture.md")
    local block = assert(doc:match("<!%-%- doc%-test: imports %-%->\n```text\n(.-)```"), "no imports block")
    local drawn = {}
    for l in block:gmatch("[^\n]+") do drawn[#drawn + 1] = l end
    table.sort(drawn)
    assert.same(graph(), drawn)
  end)

  it("names every C and Lua file of the library", function()
    local doc = read("docs/architecture.md")
    local p = assert(io.popen("ls src/*.c src/*.h"))
    local missing = {}
    for f in p:lines() do
      local base = f:match("([^/]+)$")
      if not doc:find("`" .. base .. "`", 1, true) then missing[#missing + 1] = f end
    end
    p:close()
    assert.same({}, missing)
  end)

  it("keeps each file to one room's size: C under 800 lines, Lua under 600", function()
    local big = {}
    local p = assert(io.popen("wc -l src/*.c src/*.h lua/oai/*.lua lua/oai/ngx/*.lua lua/oai/testing/*.lua"))
    for l in p:lines() do
      local n, f = l:match("^%s*(%d+)%s+(%S+)$")
      if f and f ~= "total" then
        n = tonumber(n)
        if (f:match("%.[ch]$") and n > 800) or (f:match("%.lua$") and n > 600) then big[#big + 1] = f .. " " .. n end
      end
    end
    p:close()
    assert.same({}, big)
  end)
end)
