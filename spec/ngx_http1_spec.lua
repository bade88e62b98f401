-- oai.ngx.http1: the pure HTTP/1.1 response parser of the cosocket transport
-- (lua/oai/ngx/http1.lua).  No nginx here: it runs under every interpreter.
-- Table-driven like spec/sse_spec.lua: every case is fed whole, byte by byte
-- and in two pieces split at every position, and must give the same events
-- (body pieces joined), keep-alive verdict and leftover bytes each time.
local http1 = require "oai.ngx.http1"

-- the events of a head: status, HTTP/1.minor, "Name: value" lines joined by "|"
local function H(status, minor, headers) return { "head", status, minor, headers or "" } end
local function B(s) return { "body", s } end
local DONE = { "done" }
local function E(name, msg) return { "error", name, msg } end

-- { name, input, events, eof = feed(nil) at the end, opts = http1.new's,
--   keepalive = p.keepalive after the events, buffered = p:buffered() }
local cases = {
  -- status lines
  { "a Content-Length body", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    { H(200, 1, "Content-Length: 5"), B "hello", DONE }, keepalive = true },
  { "a status line without a reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
    { H(200, 1, "Content-Length: 0"), DONE }, keepalive = true },
  { "a reason with spaces and odd bytes", "HTTP/1.1 404 Not \1 Found \255\r\nContent-Length: 0\r\n\r\n",
    { H(404, 1, "Content-Length: 0"), DONE } },
  { "LF line ends", "HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
    { H(200, 1, "Content-Length: 2"), B "hi", DONE }, keepalive = true },
  { "a stray empty line before the status line", "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    { H(200, 1, "Content-Length: 0"), DONE } },
  { "not HTTP/1.x", "HTTP/2 200\r\n\r\n",
    { E("WEIRD_SERVER_REPLY", "unsupported response (not HTTP/1.x): HTTP/2 200") } },
  { "not HTTP at all, control bytes masked", "SSH-2.0-x\1\255\r\n",
    { E("WEIRD_SERVER_REPLY", "unsupported response (not HTTP/1.x): SSH-2.0-x??") } },
  { "a two-digit status", "HTTP/1.1 20 OK\r\n\r\n",
    { E("WEIRD_SERVER_REPLY", "unsupported response (not HTTP/1.x): HTTP/1.1 20 OK") } },
  { "an empty line after a status line is the end of the head",
    "HTTP/1.1 200 OK\r\n\r\nx", { H(200, 1), B "x" }, keepalive = false },

  -- keep-alive
  { "HTTP/1.1 keeps the connection", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    { H(200, 1, "Content-Length: 0"), DONE }, keepalive = true },
  { "HTTP/1.1 with Connection: close", "HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n",
    { H(200, 1, "Connection: Close|Content-Length: 0"), DONE }, keepalive = false },
  { "HTTP/1.0 closes the connection", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    { H(200, 0, "Content-Length: 2"), B "hi", DONE }, keepalive = false },
  { "HTTP/1.0 with Connection: keep-alive", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n",
    { H(200, 0, "Connection: Keep-Alive|Content-Length: 0"), DONE }, keepalive = true },
  { "bytes after the response stay buffered", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP",
    { H(200, 1, "Content-Length: 2"), B "hi", DONE }, keepalive = true, buffered = 4 },

  -- headers
  { "values are trimmed, names keep their case", "HTTP/1.1 200 OK\r\nX-A:   v w  \r\nx-b:\r\nContent-Length: 0\r\n\r\n",
    { H(200, 1, "X-A: v w|x-b: |Content-Length: 0"), DONE } },
  { "obsolete line folding joins with a space", "HTTP/1.1 200 OK\r\nX-A: one\r\n   two \r\n\tthree\r\nContent-Length: 0\r\n\r\n",
    { H(200, 1, "X-A: one two three|Content-Length: 0"), DONE } },
  { "a folded line before any header", "HTTP/1.1 200 OK\r\n  x: y\r\n\r\n",
    { E("WEIRD_SERVER_REPLY", "malformed header line in the response") } },
  { "a header line without a colon", "HTTP/1.1 200 OK\r\nbogus\r\n\r\n",
    { E("WEIRD_SERVER_REPLY", "malformed header line in the response") } },
  { "a space before the colon", "HTTP/1.1 200 OK\r\nX-A : v\r\n\r\n",
    { E("WEIRD_SERVER_REPLY", "malformed header line in the response") } },
  { "repeated headers are kept in order", "HTTP/1.1 200 OK\r\nSet: a\r\nSet: b\r\nContent-Length: 0\r\n\r\n",
    { H(200, 1, "Set: a|Set: b|Content-Length: 0"), DONE } },

  -- Content-Length
  { "duplicate equal Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length:  2 \r\n\r\nhi",
    { H(200, 1, "Content-Length: 2|Content-Length: 2"), B "hi", DONE } },
  { "conflicting Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi",
    { H(200, 1, "Content-Length: 2|Content-Length: 3"),
      E("WEIRD_SERVER_REPLY", "conflicting Content-Length values in the response") } },
  { "an invalid Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nhi",
    { H(200, 1, "Content-Length: 2x"), E("WEIRD_SERVER_REPLY", "invalid Content-Length in the response") } },
  { "a negative Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    { H(200, 1, "Content-Length: -1"), E("WEIRD_SERVER_REPLY", "invalid Content-Length in the response") } },
  { "a body cut short", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
    { H(200, 1, "Content-Length: 5"), B "hel",
      E("PARTIAL_FILE", "transfer closed with 2 bytes remaining to read") }, eof = true },

  -- chunked
  { "chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), B "hello world", DONE }, keepalive = true },
  { "chunk sizes in either case, with spaces", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n A \r\n0123456789\r\n0\r\n\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), B "0123456789", DONE } },
  { "chunk extensions are ignored", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a=b;c\r\nhi\r\n0;last\r\n\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), B "hi", DONE } },
  { "trailers are skipped", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), B "hi", DONE }, keepalive = true },
  { "chunked beats Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
    { H(200, 1, "Content-Length: 99|Transfer-Encoding: chunked"), B "hi", DONE } },
  { "the last transfer coding decides (chunked)", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n",
    { H(200, 1, "Transfer-Encoding: gzip|Transfer-Encoding: Chunked"), DONE } },
  { "the last transfer coding decides (not chunked: to the close)", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\nab",
    { H(200, 1, "Transfer-Encoding: chunked, gzip"), B "ab", DONE }, eof = true, keepalive = false },
  { "a bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), E("RECV_ERROR", "Illegal or missing hexadecimal sequence in chunked-encoding") } },
  { "an empty chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), E("RECV_ERROR", "Illegal or missing hexadecimal sequence in chunked-encoding") } },
  { "a chunk size of 13 hex digits", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), E("RECV_ERROR", "Illegal or missing hexadecimal sequence in chunked-encoding") } },
  { "a chunk not ended by CRLF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiX\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), B "hi", E("RECV_ERROR", "chunk not terminated by CRLF in chunked-encoding") } },
  { "chunked cut short", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhe",
    { H(200, 1, "Transfer-Encoding: chunked"), B "he",
      E("PARTIAL_FILE", "transfer closed with outstanding read data remaining") }, eof = true },
  { "chunked cut before the last chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), B "hi",
      E("PARTIAL_FILE", "transfer closed with outstanding read data remaining") }, eof = true },

  -- close-delimited
  { "a body to the close", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it\r\n",
    { H(200, 1, "Content-Type: text/plain"), B "all of it\r\n", DONE }, eof = true, keepalive = false },
  { "an empty body to the close", "HTTP/1.1 200 OK\r\n\r\n", { H(200, 1), DONE }, eof = true, keepalive = false },
  { "a body to the close, in small pieces", "HTTP/1.1 200 OK\r\n\r\n0123456789",
    { H(200, 1), B "0123456789", DONE }, eof = true, opts = { max_piece = 3 } },
  { "a body to the close not closed yet", "HTTP/1.1 200 OK\r\n\r\nsome", { H(200, 1), B "some" } },

  -- interim responses
  { "100 Continue is skipped", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    { H(200, 1, "Content-Length: 1"), B "x", DONE } },
  { "103 Early Hints and their headers are skipped",
    "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </b>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    { H(204, 1), DONE } },
  { "an empty line after an interim response is not tolerated twice",
    "HTTP/1.1 100 Continue\r\n\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    { E("WEIRD_SERVER_REPLY", "unsupported response (not HTTP/1.x): ") } },
  { "101 is final", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nContent-Length: 0\r\n\r\n",
    { H(101, 1, "Upgrade: x|Content-Length: 0"), DONE } },
  { "only interim responses, then the close", "HTTP/1.1 100 Continue\r\n\r\n",
    { E("RECV_ERROR", "connection closed inside the response headers") }, eof = true },

  -- no body whatever the head says
  { "a response to HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
    { H(200, 1, "Content-Length: 5"), DONE }, opts = { no_body = true }, keepalive = true },
  { "a response to HEAD, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    { H(200, 1, "Transfer-Encoding: chunked"), DONE }, opts = { no_body = true } },
  { "204 No Content", "HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
    { H(204, 1, "Content-Length: 3"), DONE }, keepalive = true },
  { "304 Not Modified", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
    { H(304, 1, "Transfer-Encoding: chunked"), DONE } },
  { "a response not to HEAD has its body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    { H(200, 1, "Content-Length: 2"), B "ok", DONE }, opts = { no_body = false } },

  -- the connection ends early
  { "nothing at all", "", { E("GOT_NOTHING", "Empty reply from server") }, eof = true },
  { "inside the status line", "HTTP/1.1 2",
    { E("RECV_ERROR", "connection closed inside the response headers") }, eof = true },
  { "inside the headers", "HTTP/1.1 200 OK\r\nContent-Le",
    { E("RECV_ERROR", "connection closed inside the response headers") }, eof = true },

  -- limits
  { "a head over max_head", "HTTP/1.1 200 OK\r\nA: 0123456789\r\nB: 0123456789\r\n\r\n",
    { E("WEIRD_SERVER_REPLY", "response headers larger than 40 bytes") }, opts = { max_head = 40 } },
  { "a head of exactly max_head", "HTTP/1.1 200 OK\r\nA: 01234567\r\n\r\n",
    { H(200, 1, "A: 01234567"), DONE }, eof = true, opts = { max_head = 30 } },
  { "a status line without LF over max_head", "HTTP/1.1 200 " .. ("x"):rep(40),
    { E("WEIRD_SERVER_REPLY", "response line too long") }, opts = { max_head = 16 } },
  { "a chunk size line without LF over max_head",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" .. ("e"):rep(80),
    { H(200, 1, "Transfer-Encoding: chunked"), E("WEIRD_SERVER_REPLY", "response line too long") },
    opts = { max_head = 64 } },
  { "a body longer than max_head is not a line", "HTTP/1.1 200 OK\r\nContent-Length: 80\r\n\r\n" .. ("b"):rep(80),
    { H(200, 1, "Content-Length: 80"), B(("b"):rep(80)), DONE }, opts = { max_head = 64 } },
}

-- feed the pieces (then the end when eof), collecting the events
local function run(case, pieces)
  local p = http1.new(case.opts)
  local out = {}
  local function drain()
    while true do
      local ev, a, b = p:next()
      if not ev then return end
      if ev == "body" then
        assert.is_true(#a > 0, "an empty body piece")
        local last = out[#out]
        if last and last[1] == "body" then last[2] = last[2] .. a else out[#out + 1] = { "body", a } end
      elseif ev == "head" then
        local lines = {}
        for i = 1, p.nh do lines[i] = p.hdr[i][3] .. ": " .. p.hdr[i][2] end
        out[#out + 1] = { "head", p.status, p.minor, table.concat(lines, "|") }
      else
        out[#out + 1] = { ev, a, b }
      end
    end
  end
  for i = 1, #pieces do
    p:feed(pieces[i])
    drain()
  end
  if case.eof then
    p:feed(nil)
    drain()
  end
  -- after an error what stays unparsed depends on where the bytes were split
  local last = out[#out]
  return { events = out, keepalive = p.keepalive,
    buffered = not (last and last[1] == "error") and p:buffered() or nil }
end

local function expected(case)
  local keepalive = case.keepalive
  if keepalive == nil then keepalive = run(case, { case[2] }).keepalive end   -- where not the point
  return {
    events = case[3],
    keepalive = keepalive,
    buffered = case[3][#case[3]] and case[3][#case[3]][1] ~= "error" and (case.buffered or 0) or nil,
  }
end

describe("oai.ngx.http1 response parser", function()
  for _, case in ipairs(cases) do
    local name, input = case[1], case[2]
    describe(name, function()
      it("gives the events fed whole", function()
        assert.same(expected(case), run(case, { input }))
      end)

      it("gives the same events fed byte by byte", function()
        local bytes = {}
        for i = 1, #input do bytes[i] = input:sub(i, i) end
        assert.same(expected(case), run(case, bytes))
      end)

      it("gives the same events split at every point", function()
        local want = expected(case)
        for i = 0, #input do
          local got = run(case, { input:sub(1, i), input:sub(i + 1) })
          if not (pcall(assert.same, want, got)) then
            assert.same(want, got, "split at " .. i)
          end
        end
      end)
    end)
  end

  it("says nothing more after the end", function()
    local p = http1.new()
    p:feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert.equal("head", (p:next()))
    assert.equal("done", (p:next()))
    p:feed("more")
    p:feed(nil)
    assert.is_nil(p:next())
    assert.equal(4, p:buffered())
  end)

  it("says nothing more after an error", function()
    local p = http1.new()
    p:feed("garbage\r\n")
    assert.same({ "error", "WEIRD_SERVER_REPLY", "unsupported response (not HTTP/1.x): garbage" }, { p:next() })
    p:feed(nil)
    assert.same({}, { p:next() })
  end)

  it("finds the first value of a header by its lowercase name", function()
    local p = http1.new()
    p:feed("HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert.equal("head", (p:next()))
    assert.equal("1", http1.header(p, "x-a"))
    assert.is_nil(http1.header(p, "x-b"))
  end)
end)

describe("oai.ngx.http1.parse_url", function()
  local ok_cases = {
    { "http://example.com/v1", { tls = false, host = "example.com", port = 80, path = "/v1",
      host_header = "example.com", connect_host = "example.com", pool = "http://example.com:80" } },
    { "HTTPS://Example.COM:8443", { tls = true, host = "example.com", port = 8443, path = "/",
      host_header = "example.com:8443", connect_host = "example.com", pool = "https://example.com:8443" } },
    { "http://localhost:8080?x=1#frag", { tls = false, host = "localhost", port = 8080, path = "/?x=1",
      host_header = "localhost:8080", connect_host = "127.0.0.1", pool = "http://localhost:8080" } },
    { "https://[::1]:443/a", { tls = true, host = "::1", port = 443, path = "/a",
      host_header = "[::1]", connect_host = "[::1]", pool = "https://[::1]:443" } },
  }
  for _, c in ipairs(ok_cases) do
    it("splits " .. c[1], function()
      assert.same(c[2], http1.parse_url(c[1]))
    end)
  end

  local bad_cases = {
    { "http://a b/", "URL_MALFORMAT", "URL rejected: Malformed input to a URL function" },
    { "example.com/v1", "URL_MALFORMAT", "URL using bad/illegal format or missing URL" },
    { "ftp://example.com/", "UNSUPPORTED_PROTOCOL", "Protocol \"ftp\" not supported" },
    { "http://user:pw@example.com/", "URL_MALFORMAT", "credentials in the URL are not supported by oai.ngx" },
    { "http:///v1", "URL_MALFORMAT", "URL rejected: No host part in the URL" },
    { "http://example.com:0/", "URL_MALFORMAT",
      "URL rejected: Port number was not a decimal number between 0 and 65535" },
    { "http://example.com:99999/", "URL_MALFORMAT",
      "URL rejected: Port number was not a decimal number between 0 and 65535" },
  }
  for _, c in ipairs(bad_cases) do
    it("refuses " .. c[1], function()
      assert.same({ nil, c[2], c[3] }, { http1.parse_url(c[1]) })
    end)
  end
end)
