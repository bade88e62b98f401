-- Message builders and content parts: oai.system/user/assistant/tool,
-- oai.text, oai.image_url, oai.image_file (magic-byte MIME detection, limits).
local oai = require "oai"
local server = require "server"

local null = oai.null

local PNG = "\137PNG\r\n\26\n"
local files = {}

local function file_with(bytes)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(bytes)
  f:close()
  files[#files + 1] = path
  return path
end

describe("oai messages", function()
  teardown(function()
    for _, p in ipairs(files) do os.remove(p) end
  end)

  describe("builders", function()
    it("build the four roles", function()
      assert.same({ role = "system", content = "Be terse." }, oai.system "Be terse.")
      assert.same({ role = "developer", content = "Rules" }, oai.developer "Rules")
      assert.same({ role = "user", content = "hi" }, oai.user "hi")
      assert.same({ role = "assistant", content = "hello" }, oai.assistant "hello")
      assert.same({ role = "tool", tool_call_id = "call_1", content = "21C" }, oai.tool("call_1", "21C"))
    end)

    it("take extra message fields without overriding role and content", function()
      assert.same({ role = "user", content = "hi", name = "ann" }, oai.user("hi", { name = "ann", role = "x" }))
      local calls = { { id = "c1", type = "function", ["function"] = { name = "f", arguments = "{}" } } }
      local m = oai.assistant(nil, { tool_calls = calls })
      assert.equal(null, m.content)
      assert.equal(calls, m.tool_calls)
      assert.equal('{"content":null,"role":"assistant","tool_calls":[{"function":{"arguments":"{}","name":"f"},'
        .. '"id":"c1","type":"function"}]}', oai.json.encode(m))
    end)

    it("copy an array of parts, turning strings into text parts", function()
      local parts = { "look:", oai.image_url("https://x/cat.png") }
      local m = oai.user(parts)
      assert.are_not.equal(parts, m.content)
      assert.is_nil(getmetatable(parts))
      assert.same({ type = "text", text = "look:" }, m.content[1])
      assert.same({ type = "image_url", image_url = { url = "https://x/cat.png" } }, m.content[2])
      assert.equal('{"content":[{"text":"look:","type":"text"},{"image_url":{"url":"https://x/cat.png"},'
        .. '"type":"image_url"}],"role":"user"}', oai.json.encode(m))
      assert.equal('{"content":[],"role":"user"}', oai.json.encode(oai.user {}))
    end)

    it("raise on wrong argument types", function()
      assert.has_error(function() oai.user(42) end, "oai.user: content must be a string or an array of content parts")
      assert.has_error(function() oai.system(nil) end, "oai.system: content must be a string or an array of content parts")
      assert.has_error(function() oai.tool(7, "x") end, "oai.tool: tool_call_id must be a string")
      assert.has_error(function() oai.text(1) end, "oai.text: expected a string")
      assert.has_error(function() oai.user { 1 } end, "oai.user: content part 1 must be a table or a string")
      assert.has_error(function() oai.user { x = 1 } end, "oai.user: content parts must be an array")
      assert.has_error(function() oai.image_url("u", { detail = "max" }) end,
        'oai.image_url: detail must be "low", "high" or "auto"')
    end)

    it("refuse a failed image_file inside a parts array instead of dropping it", function()
      local ok, err = pcall(oai.user, { oai.text "and this?", oai.image_file "/nonexistent/cat.png" })
      assert.is_false(ok)
      assert.matches("oai.user: a content part is an error: oai: file: cannot open image", err, 1, true)
    end)
  end)

  describe("image parts", function()
    it("image_url with detail", function()
      assert.same({ type = "image_url", image_url = { url = "data:x", detail = "low" } },
        oai.image_url("data:x", { detail = "low" }))
      assert.same({ type = "text", text = "t" }, oai.text "t")
    end)

    it("image_file detects PNG, JPEG, GIF and WebP by their first bytes", function()
      local cases = {
        { PNG .. "\0\1\255", "image/png", "iVBORw0KGgoAAf8=" },
        { "\255\216\255\224rest", "image/jpeg" },
        { "GIF87a\1\0", "image/gif" },
        { "GIF89a\1\0", "image/gif", "R0lGODlhAQA=" },
        { "RIFF\36\0\0\0WEBPVP8 ", "image/webp" },
      }
      for _, c in ipairs(cases) do
        local part = assert(oai.image_file(file_with(c[1]), { detail = "high" }))
        assert.equal("image_url", part.type)
        assert.equal("high", part.image_url.detail)
        assert.equal("data:" .. c[2] .. ";base64," .. (c[3] or oai.base64(c[1])), part.image_url.url)
        assert.equal(c[2], oai.image_type(c[1]))
      end
    end)

    it("image_file rejects other formats whatever the file name", function()
      for _, bytes in ipairs({ "BM\0\0 bitmap", "hello, world", "", "RIFF\0\0\0\0WAVE", "\137PNX\r\n\26\n" }) do
        local path = file_with(bytes)
        local part, _, err = oai.image_file(path)
        assert.is_nil(part)
        assert.equal("file", err.kind)
        assert.equal("unsupported_type", err.code)
        assert.equal(path, err.path)
        assert.equal("oai: file: image " .. path .. " is not PNG, JPEG, GIF or WebP (by its first bytes)", tostring(err))
      end
    end)

    it("image_file says when the file is missing", function()
      local part, _, err = oai.image_file("/nonexistent/cat.png")
      assert.is_nil(part)
      assert.equal("unreadable", err.code)
      assert.matches("cannot open image", err.message, 1, true)
    end)

    it("image_file refuses files above max_bytes, 20 MiB by default", function()
      local path = file_with(PNG .. string.rep("x", 92))
      assert.truthy(oai.image_file(path, { max_bytes = 100 }))
      local part, _, err = oai.image_file(path, { max_bytes = 99 })
      assert.is_nil(part)
      assert.equal("too_large", err.code)
      assert.equal("image " .. path .. " is 100 bytes, more than max_bytes (99)", err.message)
      -- a sparse file one byte over 20 MiB is refused before it is read
      local big = file_with(PNG)
      local f = assert(io.open(big, "r+b"))
      f:seek("set", 20 * 1024 * 1024)
      f:write("x")
      f:close()
      part, _, err = oai.image_file(big)
      assert.is_nil(part)
      assert.equal("too_large", err.code)
      assert.equal("image " .. big .. " is 20971521 bytes, more than max_bytes (20971520)", err.message)
    end)

    it("image_file refuses devices, FIFOs and directories without reading or blocking", function()
      local fifo = os.tmpname()
      os.remove(fifo)
      local made = os.execute("mkfifo " .. fifo)
      assert(made == true or made == 0, "mkfifo failed")
      finally(function() os.remove(fifo) end)
      local cases = { { "/dev/zero", "device" }, { "/dev/null", "device" }, { fifo, "fifo" }, { "spec", "directory" } }
      for _, c in ipairs(cases) do
        local path, kind = c[1], c[2]
        local part, _, err = oai.image_file(path, { max_bytes = 1024 })
        assert.is_nil(part)
        assert.equal("file", err.kind)
        assert.equal("unreadable", err.code)
        assert.equal(path, err.path)
        assert.equal("cannot read image " .. path .. ": not a regular file (" .. kind .. ")", err.message)
      end
    end)

    it("image_file reads at most max_bytes + 1 bytes when the size is unknown", function()
      -- without the core's stat (non-POSIX builds) /dev/zero is opened: its
      -- seek("end") says 0 bytes, and the read stops after max_bytes + 1
      local core = require "oai.core"
      local saved_kind, saved_mod = core.file_kind, package.loaded["oai.messages"]
      core.file_kind = nil
      package.loaded["oai.messages"] = nil
      local ok, m = pcall(require, "oai.messages")
      core.file_kind, package.loaded["oai.messages"] = saved_kind, saved_mod
      assert(ok, m)
      local part, _, err = m.image_file("/dev/zero", { max_bytes = 1024 })
      assert.is_nil(part)
      assert.equal("too_large", err.code)
      assert.equal("image /dev/zero is more than max_bytes (1024)", err.message)
    end)
  end)

  describe("against the local server", function()
    local srv, client

    lazy_setup(function()
      srv = server.start()
      client = oai.new { base_url = srv.url, api_key = "sk-test" }
    end)
    lazy_teardown(function() if srv then srv:stop() end end)
    before_each(function() srv:clear() end)

    for _, stream in ipairs({ false, true }) do
      it("sends image parts as data: URLs (" .. (stream and "stream" or "chat") .. ")", function()
        local img = assert(oai.image_file(file_with(PNG .. "pixels"), { detail = "low" }))
        local req = { model = "test-model", messages = {
          oai.system "You describe images.",
          oai.user { oai.text "what is this?", img },
        } }
        local res
        if stream then
          res = assert(assert(client:stream(req)):result())
        else
          res = assert(client:chat(req))
        end
        assert.equal("Hello! You said: what is this?", res.choices[1].message.content)
        local body = srv:last_request().body
        assert.truthy(body:find('{"image_url":{"detail":"low","url":"data:image/png;base64,'
          .. oai.base64(PNG .. "pixels") .. '"},"type":"image_url"}', 1, true))
        -- the caller's request was not changed
        assert.is_nil(req.stream)
      end)
    end
  end)
end)
