-- Every code block of README.md and docs/*.md runs, as written (only the
-- base URL and /path/to/oai are substituted), in the host it is written
-- for, against the local server: a snippet whose API changes breaks here.
-- How a block's host is chosen: spec/support/docblocks.lua.
local docblocks = require "docblocks"
local server = require "server"
local proc = require "oai.testing.proc"

local root = proc.trim(proc.capture("pwd"))

local HOSTS = { script = true, nvim = true, love = true, nginx = true, ["nginx-conf"] = true,
                ci = true, output = true, sh = true, ["nginx-http"] = true, ["nginx-lua"] = true,
                example = true, busted = true, imports = true }

describe("documentation code blocks #child", function()
  local srv
  lazy_setup(function() srv = server.start {} end)
  lazy_teardown(function() if srv then srv:stop() end end)

  for _, file in ipairs(docblocks.FILES) do
    local blocks = docblocks.blocks(file)
    local scripts, conf, first_location = {}, nil, nil
    for _, b in ipairs(blocks) do
      if b.host == "script" then scripts[#scripts + 1] = b end
      if b.host == "nginx-conf" then conf = b end
      if b.host == "nginx" and not first_location then first_location = b end
    end

    it(file .. ": every block names a host it runs in", function()
      local bad = {}
      for _, b in ipairs(blocks) do
        if not HOSTS[b.host or ""] then bad[#bad + 1] = ("%s:%d (```%s) host %s"):format(b.file, b.line, b.lang, tostring(b.host)) end
      end
      assert.same({}, bad)
    end)

    if #scripts > 0 then
      it(file .. ": the script blocks run in order as one program", function()
        local ok, out = docblocks.run_script(scripts, srv.url, root)
        assert.is_true(ok, out)
      end)
    end

    for _, b in ipairs(blocks) do
      local where = ("%s:%d"):format(b.file, b.line)
      if b.host == "nvim" then
        it(where .. " runs in headless Neovim", function()
          local ok, out = docblocks.run_nvim(b, srv.url, root)
          assert.is_true(ok, out)
        end)
      elseif b.host == "love" then
        it(where .. " runs in LÖVE", function()
          local ok, out = docblocks.run_love(b, srv.url, root)
          assert.is_true(ok, out)
        end)
      elseif b.host == "nginx" then
        it(where .. " serves a 200 in nginx, configured as " .. file .. " says", function()
          assert.truthy(conf, file .. " has nginx blocks but no <!-- doc-test: nginx-conf --> block")
          local ok, out = docblocks.run_nginx(conf, b, srv.url, root)
          assert.is_true(ok, out)
        end)
      elseif b.host == "nginx-http" or b.host == "nginx-lua" then
        it(where .. " serves a 200 in nginx, configured as " .. file .. " says", function()
          assert.truthy(conf, file .. " has nginx blocks but no <!-- doc-test: nginx-conf --> block")
          local ok, out
          if b.host == "nginx-http" then
            ok, out = docblocks.run_nginx(conf, assert(first_location, "no location block to run it with"), srv.url, root, b)
          else
            local loc = { code = "location = /lua {\n  content_by_lua_block {\n" .. b.code .. "  }\n}\n" }
            ok, out = docblocks.run_nginx(conf, loc, srv.url, root)
          end
          assert.is_true(ok, out)
        end)
      elseif b.host == "example" then
        it(where .. " names the spec that runs its example", function()
          local spec = b.note
          assert.truthy(spec and proc.exists(spec), "example blocks say <!-- doc-test: example spec/NAME_spec.lua -->")
          local text = assert(proc.read_file(spec))
          assert.truthy(text:find("examples/", 1, true), spec .. " does not run an example")
        end)
      elseif b.host == "busted" then
        it(where .. " passes as a busted spec", function()
          -- run as a spec of this repository (.busted gives the paths)
          proc.execute("mkdir -p " .. proc.q(root .. "/.tmp"))
          local f = root .. "/.tmp/doc_block_spec.lua"
          proc.write_file(f, b.code)
          local lua = require("helpers").interpreter()
          local out = proc.capture(("cd %s && busted --lua=%s .tmp/doc_block_spec.lua 2>&1; echo rc=$?")
            :format(proc.q(root), lua))
          os.remove(f)
          assert.truthy(out:find("rc=0%s*$"), out)
        end)
      elseif b.host == "sh" then
        it(where .. " runs as a shell script in the checkout", function()
          local code = docblocks.substitute(b.code, srv.url, root)
          local out = proc.capture("cd " .. proc.q(root) .. " && sh -e -c " .. proc.q(code) .. " 2>&1; echo rc=$?")
          assert.truthy(out:find("rc=0%s*$"), out)
        end)
      elseif b.host == "ci" then
        it(where .. " is what .ci/run runs", function()
          local ci = assert(proc.read_file(".ci/run"))
          for line in b.code:gmatch("[^\n]+") do
            local cmd = line:gsub("%s*#.*$", "")
            for part in (cmd .. "&&"):gmatch("%s*(.-)%s*&&") do
              if part ~= "" then assert.truthy(ci:find(part, 1, true), part .. " is not in .ci/run") end
            end
          end
        end)
      end
    end
  end
end)
