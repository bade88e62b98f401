--- oai.native: finds and loads the C core (`oai.core`) for the running Lua.
---
--- Every oai module gets the core through here, so nobody has to set
--- LUA_CPATH, `lua_package_cpath` or `package.cpath` for a checkout:
---   1. an `oai.core` already loaded (or preloaded) is used as it is;
---   2. `oai/core.so` on package.cpath (an installed tree: luarocks,
---      `make install`, or a cpath the user set) is loaded by `require`;
---   3. otherwise, when this file sits in a checkout (`<root>/lua/oai/`),
---      the core `make` built for this runtime, `<root>/build/<runtime>/oai/core.so`
---      (runtime: 5.1, 5.2, 5.3, 5.4 or luajit), is loaded from there.
--- When none is found the error names every file looked at and the command
--- that builds the core.  Loading never yields or touches the network.
local package, require, type, error, tostring = package, require, type, error, tostring
local io_open, concat = io.open, table.concat

local function runtime()
  if type(rawget(_G, "jit")) == "table" then return "luajit" end
  return (_VERSION:match("%d+%.%d+")) or "5.1"
end

local function readable(path)
  local f = io_open(path, "rb")
  if f then f:close() return true end
  return false
end

-- package.searchpath for every runtime (5.1 and LuaJIT lack it)
local function search_cpath(name, looked)
  local file = name:gsub("%.", "/")
  for template in (package.cpath or ""):gmatch("[^;]+") do
    local path = template:gsub("%?", file)
    if readable(path) then return path end
    looked[#looked + 1] = path
  end
  return nil
end

-- the checkout this file belongs to ("" when the path is relative to the
-- current directory), or nil when it is installed elsewhere
local function checkout_root()
  local getinfo = type(debug) == "table" and debug.getinfo
  local info = getinfo and getinfo(1, "S")
  local src = info and info.source or ""
  return src:match("^@(.-)lua[/\\]oai[/\\]native%.lua$")
end

local function load_core()
  local core = package.loaded["oai.core"]
  if core then return core end
  if package.preload and package.preload["oai.core"] then return require "oai.core" end
  local looked = {}
  if search_cpath("oai.core", looked) then return require "oai.core" end
  local rt, root = runtime(), checkout_root()
  if root then
    local path = root .. "build/" .. rt .. "/oai/core.so"
    if readable(path) then
      local open, err = package.loadlib(path, "luaopen_oai_core")
      if not open then error("oai: cannot load the C core " .. path .. ": " .. tostring(err), 0) end
      core = open("oai.core", path)
      package.loaded["oai.core"] = core
      return core
    end
    looked[#looked + 1] = path
  end
  local how = root and ("run `make` in " .. (root == "" and "the checkout" or root)
      .. " (needs libcurl's and Lua's development headers: ./.ci/install-deps)")
    or "install oai with luarocks, or put the directory holding oai/core.so on package.cpath"
  error("oai: the C core (oai.core) for " .. (rt == "luajit" and "LuaJIT" or "Lua " .. rt)
    .. " was not found; looked for:\n\t" .. concat(looked, "\n\t") .. "\n" .. how, 0)
end

return load_core()
