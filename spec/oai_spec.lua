local oai = require "oai"

describe("require 'oai'", function()
  it("loads the C core built for this runtime", function()
    assert.is_table(oai.core)
    assert.equal(oai.core.version, oai.version)
    local build = os.getenv("OAI_BUILD")
    if build then
      -- the module must come from this runtime's own build directory
      local path = package.searchpath and package.searchpath("oai.core", package.cpath)
      if path then assert.truthy(path:find(build, 1, true), path) end
    end
  end)
end)
