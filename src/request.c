/*
** request.c: oai.request, one libcurl easy handle: the request options, the
** response body (plain, or the raw bytes of an event stream, framed and
** decoded into records only when Lua drains them), the outcome.  The easy
** handles are pooled per Lua state.  The libcurl callbacks here only buffer
** bytes, stamp times and link the request into its multi's ready list
** (multi.c); the header store is headers.c.
*/
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/tcp.h>      /* struct tcp_info (netinet/tcp.h hides it under c99) */
#define OAI_TCP_INFO 1
#endif

#include "http.h"

/* ------------------------------------------------------ curl callbacks */

static int looks_like_sse(const char *p, size_t n) {
  static const char *const starts[] = { "data", "event", "id", "retry", ":" };
  size_t i, k;
  while (n > 0 && (*p == ' ' || *p == '\r' || *p == '\n' || *p == '\t')) p++, n--;
  if (n >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB
      && (unsigned char)p[2] == 0xBF) p += 3, n -= 3;
  for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
    k = strlen(starts[i]);
    if (n >= k && memcmp(p, starts[i], k) == 0) return 1;
  }
  return 0;
}


/* decide at the first body bytes whether they are an event stream: only for
   a stream request with a 2xx status, by content type, else by sniffing */
static void decide_body(request *r, const char *p, size_t n) {
  size_t ctlen = 0;
  const char *ct;
  r->body_mode = BODY_PLAIN;
  if (!r->want_sse || r->status < 200 || r->status > 299) return;
  ct = oai_find_header(&r->hdr, "content-type", &ctlen);
  if (ct != NULL) {
    size_t i;
    char low[128];
    size_t k = ctlen < sizeof(low) - 1 ? ctlen : sizeof(low) - 1;
    for (i = 0; i < k; i++) low[i] = (char)((ct[i] >= 'A' && ct[i] <= 'Z') ? ct[i] + 32 : ct[i]);
    low[k] = '\0';
    if (strstr(low, "event-stream") != NULL) { r->body_mode = BODY_SSE; return; }
    if (strstr(low, "json") != NULL || strstr(low, "html") != NULL) return;
  }
  if (looks_like_sse(p, n)) r->body_mode = BODY_SSE;
}

/* We ask for identity (Accept-Encoding: identity) and decode nothing, as
   the cosocket transport: a body in any other Content-Encoding cannot be
   read, so it fails at its first byte, naming the encoding */
static int refuse_encoding(request *r) {
  size_t vl = 0, k;
  const char *v = oai_find_header(&r->hdr, "content-encoding", &vl);
  if (v == NULL || vl == 0 || (vl == 8 && oai_ieq(v, "identity", 8))) return 0;
  k = vl < sizeof(r->encoding) - 1 ? vl : sizeof(r->encoding) - 1;
  for (vl = 0; vl < k; vl++) {
    unsigned char c = (unsigned char)v[vl];
    r->encoding[vl] = (char)(c < 32 || c > 126 ? '?' : c);
  }
  r->encoding[k] = '\0';
  r->abort_reason = ABORT_ENCODING;
  return 1;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud) {
  request *r = (request *)ud;
  size_t n = size * nmemb;
  if (r->abort_reason != ABORT_NONE) return 0;
  if (r->body_mode == BODY_UNDECIDED) {
    if (refuse_encoding(r)) return 0;
    decide_body(r, p, n);
  }
  if (r->body_mode == BODY_SSE && r->body.len >= SSE_HIGH_WATER) {
    /* Lua has not framed what came so far: let libcurl hold the rest (it
       delivers it again on unpause) rather than growing the buffer; a
       fast burst then stays in a small, warm buffer */
    r->paused = 1;
    return CURL_WRITEFUNC_PAUSE;
  }
  if (r->body_mode == BODY_PLAIN && r->max_body > 0 && r->received + n > r->max_body) {
    r->abort_reason = ABORT_TOO_BIG;
    return 0;
  }
  if (!oai_buf_add(&r->body, p, n)) {
    r->abort_reason = ABORT_NOMEM;
    return 0;
  }
  r->received += n;
  r->last_rx = oai_monotime_coarse();
  oai_mark_ready(r);
  return n;
}

/* While the response head comes in, libcurl calls back per complete header
   line only, so a server dripping a long line byte by byte would look idle.
   The kernel knows when the connection last received a byte: take that, from
   the transfer's own socket (its local port must match the one libcurl
   reports, so a socket closed and reused since is never read).  Linux only;
   elsewhere idleness in the head is counted per header line. */
static void stamp_from_socket(request *r) {
#ifdef OAI_TCP_INFO
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  struct tcp_info ti;
  socklen_t tl = sizeof ti;
  long port = 0;
  unsigned sport;
  double t;
  if (r->sock == CURL_SOCKET_BAD) return;
  if (curl_easy_getinfo(r->easy, CURLINFO_LOCAL_PORT, &port) != CURLE_OK || port <= 0) return;
  if (getsockname(r->sock, (struct sockaddr *)&ss, &sl) != 0) return;
  if (ss.ss_family == AF_INET) sport = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  else if (ss.ss_family == AF_INET6) sport = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  else return;
  if ((long)sport != port) return;
  memset(&ti, 0, sizeof ti);
  if (getsockopt(r->sock, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0) return;
  t = oai_monotime_coarse() - (double)ti.tcpi_last_data_recv / 1000.0;
  if (t > r->last_rx) r->last_rx = t;
#else
  (void)r;
#endif
}

/* CURLOPT_SOCKOPTFUNCTION: remembers the socket a new connection uses */
static int sockopt_cb(void *ud, curl_socket_t s, curlsocktype purpose) {
  request *r = (request *)ud;
  if (purpose == CURLSOCKTYPE_IPCXN) r->sock = s;
  return CURL_SOCKOPT_OK;
}

/* libcurl calls this at least once a second while a transfer runs (the
   low-speed check keeps a 1 s timer alive): the exact idle timeout,
   "no byte for idle_ms", in the response head as in the body */
static int xferinfo_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
  request *r = (request *)ud;
  (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
  if (r->paused) {   /* waiting for Lua, not for the server */
    r->last_rx = oai_monotime_coarse();
    return 0;
  }
  if (r->idle_ms > 0 && r->body_mode == BODY_UNDECIDED) stamp_from_socket(r);
  if (r->idle_ms > 0 && (oai_monotime_coarse() - r->last_rx) * 1000 >= (double)r->idle_ms) {
    r->abort_reason = ABORT_IDLE;
    return 1;
  }
  return 0;
}

/* -------------------------------------------------------------- request */

request *oai_check_request(lua_State *L, int idx) {
  request *r = (request *)luaL_checkudata(L, idx, OAI_REQUEST_MT);
  if (r->easy == NULL) luaL_error(L, "attempt to use a closed oai.request");
  return r;
}

/* ------------------------------------------------------ easy handle pool */

/* Closed requests give their easy handle back (curl_easy_reset keeps
   nothing of the old request but libcurl's caches); creating one costs more
   than the rest of a small request.  One pool per Lua state, in the
   registry; its __gc cleans the handles up. */
#define POOL_KEY "oai.easypool"
#ifndef POOL_MAX
#define POOL_MAX 32
#endif

typedef struct easypool {
  CURL *h[POOL_MAX];
  int n;
  int closed;   /* after __gc: handles given back are cleaned up at once */
} easypool;

static int pool_gc(lua_State *L) {
  easypool *p = (easypool *)lua_touserdata(L, 1);
  while (p->n > 0) curl_easy_cleanup(p->h[--p->n]);
  p->closed = 1;
  return 0;
}

static easypool *get_pool(lua_State *L) {
  easypool *p;
  lua_getfield(L, LUA_REGISTRYINDEX, POOL_KEY);
  p = (easypool *)lua_touserdata(L, -1);
  lua_pop(L, 1);   /* anchored in the registry */
  return p;
}

static CURL *easy_take(lua_State *L) {
  easypool *p = get_pool(L);
  if (p != NULL && !p->closed && p->n > 0) return p->h[--p->n];
  return curl_easy_init();
}

static void easy_give(lua_State *L, CURL *e) {
  easypool *p = get_pool(L);
  if (p != NULL && !p->closed && p->n < POOL_MAX) {
    curl_easy_reset(e);
    p->h[p->n++] = e;
  } else {
    curl_easy_cleanup(e);
  }
}

/* req:close() -> nothing; idempotent; also __gc and __close */
static int request_close(lua_State *L) {
  request *r = (request *)luaL_checkudata(L, 1, OAI_REQUEST_MT);
  if (r->easy == NULL) return 0;
  if (r->m != NULL) oai_request_detach(r, L);
  easy_give(L, r->easy);
  r->easy = NULL;
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  curl_slist_free_all(r->resolve);
  r->resolve = NULL;
  oai_buf_free(&r->body);
  oai_buf_free(&r->hdr);
  oai_sse_free(&r->sse);
  oai_chunk_free(&r->chunk);
  return 0;
}

static int opt_field(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);
  return !lua_isnil(L, -1);
}

/* a limit in ms or bytes: 0 to 1e12 (and to LONG_MAX where long is 32 bits) */
static long opt_ms(lua_State *L, int idx, const char *k, long def) {
  long v = def;
  if (opt_field(L, idx, k)) {
    lua_Number hi = (lua_Number)LONG_MAX < 1e12 ? (lua_Number)LONG_MAX : 1e12;
    char num[64];
    snprintf(num, sizeof num, "%.14g", (double)hi);
    lua_pushfstring(L, "oai.request: option '%s' must be a non-negative number up to %s", k, num);
    v = (long)oai_checkrange(L, -2, 0, hi, 0, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return v;
}

static const char *opt_str(lua_State *L, int idx, const char *k) {
  const char *s = NULL;
  if (opt_field(L, idx, k)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "oai.request: option '%s' must be a string", k);
    s = lua_tostring(L, -1);
  }
  lua_pop(L, 1);   /* the string stays alive in the options table */
  return s;
}

#define SETOPT(opt, val) do { if (curl_easy_setopt(r->easy, opt, val) != CURLE_OK) \
  return luaL_error(L, "oai.request: libcurl refused option " #opt); } while (0)

/* request{url=, method=, headers=, body=, stream=, timeout_ms=,
   connect_timeout_ms=, idle_timeout_ms=, proxy=, ca_file=, verify=, resolve=,
   max_body_bytes=, max_event_bytes=} -> req | raises on misuse.
   0 disables a timeout or a limit. */
static int request_new(lua_State *L) {
  request *r;
  const char *url, *method, *s;
  size_t bodylen = 0;
  const char *body = NULL;
  long verify = 1;
  double t, ct, it;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  r = (request *)lua_newuserdatauv(L, sizeof(request), 0);
  memset(r, 0, sizeof(*r));
  r->ref = LUA_NOREF;
  r->sock = CURL_SOCKET_BAD;
  luaL_setmetatable(L, OAI_REQUEST_MT);
  oai_sse_init(&r->sse, 0);
  r->easy = easy_take(L);
  if (r->easy == NULL) return luaL_error(L, "oai.request: curl_easy_init failed");

  url = opt_str(L, 1, "url");
  if (url == NULL) return luaL_error(L, "oai.request: option 'url' is required");
  method = opt_str(L, 1, "method");
  if (method == NULL) method = "GET";

  SETOPT(CURLOPT_URL, url);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_TCP_NODELAY, 1L);
  SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
  SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  /* prefer multiplexing on an HTTP/2 connection being set up, but only
     where one can turn out to be HTTP/2 (TLS, ALPN): on cleartext HTTP
     libcurl would hold this transfer until another one to the same host
     has finished, so concurrent streams would run one after the other */
  SETOPT(CURLOPT_PIPEWAIT, oai_ieq(url, "https://", 8) ? 1L : 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(CURLOPT_ERRORBUFFER, r->errbuf);
  SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
  SETOPT(CURLOPT_WRITEDATA, (void *)r);
  SETOPT(CURLOPT_HEADERFUNCTION, oai_header_cb);
  SETOPT(CURLOPT_HEADERDATA, (void *)r);
  SETOPT(CURLOPT_PRIVATE, (void *)r);

  if (opt_field(L, 1, "body")) {
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "oai.request: option 'body' must be a string");
    body = lua_tolstring(L, -1, &bodylen);
  }
  lua_pop(L, 1);
  if (strcmp(method, "GET") == 0 && body == NULL) SETOPT(CURLOPT_HTTPGET, 1L);
  else {
    if (strcmp(method, "POST") != 0) {
      size_t i, ml = strlen(method);
      for (i = 0; i < ml; i++)
        if (!(method[i] >= 'A' && method[i] <= 'Z')) return luaL_error(L, "oai.request: invalid method");
      SETOPT(CURLOPT_CUSTOMREQUEST, method);
    }
    if (body != NULL || strcmp(method, "POST") == 0) {
      SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bodylen);
      SETOPT(CURLOPT_COPYPOSTFIELDS, body != NULL ? body : "");
    }
  }

  oai_set_headers(L, r, 1);
  oai_add_header(L, r, "Expect:");   /* no 100-continue round trip for big bodies */

  if (opt_field(L, 1, "stream")) r->want_sse = lua_toboolean(L, -1);
  lua_pop(L, 1);
  /* identity only, as the cosocket transport (which has no zlib): both
     accept the same bodies; a server that compresses anyway is refused
     with BAD_CONTENT_ENCODING (refuse_encoding) */
  if (!r->own_accept_encoding) oai_add_header(L, r, "Accept-Encoding: identity");
  SETOPT(CURLOPT_HTTPHEADER, r->headers);

  t = (double)opt_ms(L, 1, "timeout_ms", 0);
  ct = (double)opt_ms(L, 1, "connect_timeout_ms", 0);
  it = (double)opt_ms(L, 1, "idle_timeout_ms", 0);
  if (t > 0) SETOPT(CURLOPT_TIMEOUT_MS, (long)t);
  if (ct > 0) SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)ct);
  if (it > 0) {
    /* the low-speed check is only a backstop (it averages over seconds);
       the progress callback measures the time since the last byte */
    long secs = (long)((it + 999) / 1000);
    r->idle_ms = (long)it;
    SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(CURLOPT_LOW_SPEED_TIME, secs < 1 ? 1L : secs);
    SETOPT(CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
    SETOPT(CURLOPT_XFERINFODATA, (void *)r);
    SETOPT(CURLOPT_NOPROGRESS, 0L);
    SETOPT(CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
    SETOPT(CURLOPT_SOCKOPTDATA, (void *)r);
  }
  if (opt_field(L, 1, "resolve")) {
    /* {"host:port:address", ...}: pin names to addresses (tests, split DNS) */
    int i, n;
    if (!lua_istable(L, -1)) return luaL_error(L, "oai.request: option 'resolve' must be an array of strings");
    n = (int)lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      struct curl_slist *nl;
      size_t l;
      const char *e;
      lua_rawgeti(L, -1, i);
      e = lua_tolstring(L, -1, &l);
      if (e == NULL || oai_has_crlf(e, l)) return luaL_error(L, "oai.request: option 'resolve' must be an array of strings");
      nl = curl_slist_append(r->resolve, e);
      if (nl == NULL) return luaL_error(L, "oai.request: out of memory");
      r->resolve = nl;
      lua_pop(L, 1);
    }
    SETOPT(CURLOPT_RESOLVE, r->resolve);
  }
  lua_pop(L, 1);
  if ((s = opt_str(L, 1, "proxy")) != NULL) SETOPT(CURLOPT_PROXY, s);
  if ((s = opt_str(L, 1, "ca_file")) != NULL) SETOPT(CURLOPT_CAINFO, s);
  if (opt_field(L, 1, "verify")) verify = lua_toboolean(L, -1);
  lua_pop(L, 1);
  SETOPT(CURLOPT_SSL_VERIFYPEER, verify);
  SETOPT(CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
  r->max_body = (size_t)opt_ms(L, 1, "max_body_bytes", 0);
  {
    long mx = opt_ms(L, 1, "max_event_bytes", 0);
    if (mx > 0) { oai_sse_free(&r->sse); oai_sse_init(&r->sse, (size_t)mx); }
  }
  return 1;
}

/* req:status() -> status code (integer) or nil before the headers are in */
static int request_status(lua_State *L) {
  request *r = oai_check_request(L, 1);
  if (!r->headers_done) return 0;
  lua_pushinteger(L, (lua_Integer)r->status);
  return 1;
}


/* req:body() -> the whole plain body received so far (a copy; not consumed) */
static int request_body(lua_State *L) {
  request *r = oai_check_request(L, 1);
  lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.len);
  return 1;
}

/* req:is_sse() -> true if the response body is being read as an event
   stream, false if as a plain body, nil while no body byte has arrived */
static int request_is_sse(lua_State *L) {
  request *r = oai_check_request(L, 1);
  if (r->body_mode == BODY_UNDECIDED) return 0;
  lua_pushboolean(L, r->body_mode == BODY_SSE);
  return 1;
}

typedef struct read_ctx {
  lua_State *L;
  int n;
} read_ctx;

static int push_event(void *ud, const oai_sse_event *ev) {
  read_ctx *c = (read_ctx *)ud;
  lua_State *L = c->L;
  lua_createtable(L, 0, 3);
  lua_pushlstring(L, ev->type, ev->type_len);
  lua_setfield(L, -2, "type");
  lua_pushlstring(L, ev->data, ev->data_len);
  lua_setfield(L, -2, "data");
  lua_pushlstring(L, ev->id, ev->id_len);
  lua_setfield(L, -2, "id");
  lua_rawseti(L, -2, ++c->n);
  return 0;
}

/* the raw bytes received since the last call were framed: they are dropped
   (even when the parser failed: it is then unusable anyway), and a transfer
   paused for want of room goes on */
static void drained(request *r) {
  r->body.len = 0;
  if (r->paused && r->easy != NULL) {
    /* room again: libcurl may hand over what it held right here (our
       write callback only buffers), the rest comes with the next perform */
    r->paused = 0;
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
  }
}

/* req:read() -> array of {type=, data=, id=} events framed since the last
   call (possibly empty) | nil, err when the event size limit was exceeded */
static int request_read(lua_State *L) {
  request *r = oai_check_request(L, 1);
  read_ctx c;
  int rc = 0;
  if (r->body_mode != BODY_SSE) luaL_error(L, "oai.request: read() on a response that is not an event stream");
  lua_newtable(L);
  c.L = L;
  c.n = 0;
  if (r->body.len > 0) {
    rc = oai_sse_feed(&r->sse, r->body.p, r->body.len, push_event, &c);
    drained(r);
  }
  if (rc != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, oai_sse_strerror(rc));
    return 2;
  }
  return 1;
}

/* req:read_records(out, flags[, final]) -> n, stop: frames the bytes received since
   the last call and decodes each chunk into records (chunk.c) stored in
   out[1..n]; stop is true after [DONE], an error event or a bad chunk.
   flags: 1 = hand out whole decoded chunks (RAW records); final: end an
   unterminated last event first */
static int request_read_records(lua_State *L) {
  request *r = oai_check_request(L, 1);
  int n = 0, rc = 0, raw, final;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (r->body_mode != BODY_SSE) luaL_error(L, "oai.request: read_records() on a response that is not an event stream");
  raw = lua_isnoneornil(L, 3) ? 0
    : (int)oai_checkrange(L, 3, 0, INT_MAX, 1, "oai.request: read_records flags must be a non-negative integer") & 1;
  final = lua_toboolean(L, 4);
  lua_settop(L, 3);
  if (r->body.len > 0 || (final && oai_sse_pending(&r->sse))) {
    rc = oai_records_feed(L, &r->sse, &r->chunk, r->body.p ? r->body.p : "", r->body.len,
                          final, 2, &n, raw);
    drained(r);
  }
  lua_pushinteger(L, n);
  lua_pushboolean(L, rc != 0);
  return 2;
}

/* req:flush_records(out, flags) -> n: when the body ended without [DONE],
   the records of what the chunk decoder still holds (a UTF-16 high half that
   no low half followed becomes U+FFFD), in out[1..n] */
static int request_flush_records(lua_State *L) {
  request *r = oai_check_request(L, 1);
  int n = 0;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3);
  oai_chunk_flush(L, 2, &n, &r->chunk, (int)(luaL_optinteger(L, 3, 0) & 1));
  lua_pushinteger(L, n);
  return 1;
}

/* req:pending() -> true if an event stream ended inside an event */
static int request_pending(lua_State *L) {
  request *r = oai_check_request(L, 1);
  lua_pushboolean(L, r->body_mode == BODY_SSE && (r->body.len > 0 || oai_sse_pending(&r->sse)));
  return 1;
}

/* req:result() -> done, [ok, name, message]: done is false while running;
   once done, ok is true on success, else name is a stable libcurl error
   name (or BODY_TOO_LARGE / OUT_OF_MEMORY / CANCELED) and message a text */
static int request_result(lua_State *L) {
  request *r = oai_check_request(L, 1);
  if (!r->done) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, 1);
  if (r->result == CURLE_OK && r->abort_reason == ABORT_NONE) {
    lua_pushboolean(L, 1);
    return 2;
  }
  lua_pushboolean(L, 0);
  switch (r->abort_reason) {
    case ABORT_TOO_BIG:
      lua_pushliteral(L, "BODY_TOO_LARGE");
      lua_pushfstring(L, "response body exceeds max_body_bytes (%d)", (int)r->max_body);
      return 4;
    case ABORT_NOMEM:
      lua_pushliteral(L, "OUT_OF_MEMORY");
      lua_pushliteral(L, "out of memory while receiving the response");
      return 4;
    case ABORT_IDLE:
      lua_pushliteral(L, "OPERATION_TIMEDOUT");
      lua_pushfstring(L, "no data received for %d ms (idle_timeout)", (int)r->idle_ms);
      return 4;
    case ABORT_CANCELED:
      lua_pushliteral(L, "CANCELED");
      lua_pushliteral(L, "request canceled");
      return 4;
    case ABORT_ENCODING:
      lua_pushliteral(L, "BAD_CONTENT_ENCODING");
      lua_pushfstring(L, "the server sent a body with Content-Encoding: %s;"
                      " oai asks for identity (Accept-Encoding: identity) and decodes none", r->encoding);
      return 4;
    default: break;
  }
  lua_pushstring(L, oai_curl_name(r->result, r->errbuf));
  lua_pushstring(L, r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result));
  return 4;
}

/* req:info() -> {elapsed, connect_time, start_transfer, http_version,
   num_connects, local_port, primary_ip, received} */
static int request_info(lua_State *L) {
  request *r = oai_check_request(L, 1);
  double d;
  long l;
  char *s = NULL;
  lua_createtable(L, 0, 8);
  if (curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &d) == CURLE_OK) {
    lua_pushnumber(L, d);
    lua_setfield(L, -2, "elapsed");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME, &d) == CURLE_OK) {
    lua_pushnumber(L, d);
    lua_setfield(L, -2, "connect_time");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_STARTTRANSFER_TIME, &d) == CURLE_OK) {
    lua_pushnumber(L, d);
    lua_setfield(L, -2, "start_transfer");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &l) == CURLE_OK) {
    const char *v = l == CURL_HTTP_VERSION_2_0 ? "2" : l == CURL_HTTP_VERSION_1_1 ? "1.1"
                  : l == CURL_HTTP_VERSION_1_0 ? "1.0" : l == CURL_HTTP_VERSION_3 ? "3" : NULL;
    if (v != NULL) {
      lua_pushstring(L, v);
      lua_setfield(L, -2, "http_version");
    }
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &l) == CURLE_OK) {
    lua_pushinteger(L, (lua_Integer)l);
    lua_setfield(L, -2, "num_connects");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_LOCAL_PORT, &l) == CURLE_OK) {
    lua_pushinteger(L, (lua_Integer)l);
    lua_setfield(L, -2, "local_port");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_PRIMARY_IP, &s) == CURLE_OK && s != NULL) {
    lua_pushstring(L, s);
    lua_setfield(L, -2, "primary_ip");
  }
  lua_pushnumber(L, (lua_Number)r->received);
  lua_setfield(L, -2, "received");
  return 1;
}

/* req:cancel() -> nothing: stops the transfer now and releases its
   connection; the request then reads as done with CANCELED */
static int request_cancel(lua_State *L) {
  request *r = oai_check_request(L, 1);
  if (r->m != NULL) oai_request_detach(r, L);
  if (!r->done) {
    r->done = 1;
    r->abort_reason = ABORT_CANCELED;
  }
  return 0;
}

static int request_tostring(lua_State *L) {
  request *r = (request *)luaL_checkudata(L, 1, OAI_REQUEST_MT);
  if (r->easy == NULL) lua_pushliteral(L, "oai.request (closed)");
  else lua_pushfstring(L, "oai.request (%p)", (void *)r);
  return 1;
}

static const luaL_Reg request_methods[] = {
  { "status", request_status },
  { "headers", oai_request_headers },
  { "header", oai_request_header },
  { "raw_headers", oai_request_raw_headers },
  { "body", request_body },
  { "is_sse", request_is_sse },
  { "read", request_read },
  { "read_records", request_read_records },
  { "pending", request_pending },
  { "flush_records", request_flush_records },
  { "result", request_result },
  { "info", request_info },
  { "cancel", request_cancel },
  { "close", request_close },
  { NULL, NULL }
};

/* module table on top: sets request; the easy-handle pool goes into the
   registry */
void oai_open_request(lua_State *L) {
  easypool *p;
  /* not thread-safe, and only the first call does anything */
  curl_global_init(CURL_GLOBAL_DEFAULT);
  p = (easypool *)lua_newuserdatauv(L, sizeof(easypool), 0);
  memset(p, 0, sizeof(*p));
  lua_newtable(L);
  lua_pushcfunction(L, pool_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, POOL_KEY);
  oai_new_type(L, OAI_REQUEST_MT, request_methods, request_close, request_tostring);
  lua_pushcfunction(L, request_new);
  lua_setfield(L, -2, "request");
}
