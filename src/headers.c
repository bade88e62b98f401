/*
** headers.c: the header store of an oai.request.  Going out: the caller's
** headers checked (no CR, LF or NUL: header injection) and set on the easy
** handle.  Coming back: the status and header lines of the final response
** captured by libcurl's header callback (1xx responses skipped, trailers
** ignored), then looked up from C (oai_find_header) and read from Lua
** (req:headers, req:header, req:raw_headers).
*/
#include <string.h>

#include "http.h"

int oai_ieq(const char *a, const char *b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    int ca = (unsigned char)a[i], cb = (unsigned char)b[i];
    if (ca >= 'A' && ca <= 'Z') ca += 32;
    if (cb >= 'A' && cb <= 'Z') cb += 32;
    if (ca != cb) return 0;
  }
  return 1;
}

/* the value of header `name` (lowercase) in the captured lines, trimmed */
const char *oai_find_header(const buf *h, const char *name, size_t *vlen) {
  size_t nl = strlen(name), i = 0;
  while (i < h->len) {
    const char *line = h->p + i;
    const char *end = memchr(line, '\n', h->len - i);
    size_t ll = end ? (size_t)(end - line) : h->len - i;
    i += ll + 1;
    if (ll > nl && line[nl] == ':' && oai_ieq(line, name, nl)) {
      const char *v = line + nl + 1;
      size_t vl = ll - nl - 1;
      while (vl > 0 && (*v == ' ' || *v == '\t')) v++, vl--;
      while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
      *vlen = vl;
      return v;
    }
  }
  return NULL;
}

/* CURLOPT_HEADERFUNCTION: a status line starts a response (the head of a
   1xx is dropped with it); the blank line ends the head */
size_t oai_header_cb(char *p, size_t size, size_t nmemb, void *ud) {
  request *r = (request *)ud;
  size_t n = size * nmemb;
  r->last_rx = oai_monotime_coarse();
  if (r->body_mode != BODY_UNDECIDED) return n;   /* trailers: ignored */
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {     /* a status line starts a response */
    const char *sp = memchr(p, ' ', n);
    r->hdr.len = 0;
    r->headers_done = 0;
    r->status = 0;
    if (sp != NULL) {
      long st = 0;
      size_t i = (size_t)(sp - p) + 1;
      while (i < n && p[i] >= '0' && p[i] <= '9' && st < 1000) st = st * 10 + (p[i++] - '0');
      r->status = st;
    }
    return n;
  }
  if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n')) {
    if (r->status >= 200) {                         /* 1xx responses are skipped */
      r->headers_done = 1;
      oai_mark_ready(r);
    }
    return n;
  }
  if (!oai_buf_add(&r->hdr, p, n)) {
    r->abort_reason = ABORT_NOMEM;
    return 0;
  }
  return n;
}

int oai_has_crlf(const char *s, size_t n) {
  return memchr(s, '\r', n) != NULL || memchr(s, '\n', n) != NULL || memchr(s, '\0', n) != NULL;
}

void oai_add_header(lua_State *L, request *r, const char *line) {
  struct curl_slist *nl = curl_slist_append(r->headers, line);
  if (nl == NULL) luaL_error(L, "oai.request: out of memory");
  r->headers = nl;
}

/* headers = { ["Name"] = "value", ... }: names and values must not contain
   CR, LF or NUL (header injection); the value is never put into the message */
void oai_set_headers(lua_State *L, request *r, int idx) {
  luaL_Buffer b;
  lua_getfield(L, idx, "headers");
  if (lua_isnil(L, -1)) { lua_pop(L, 1); return; }
  if (!lua_istable(L, -1)) luaL_error(L, "oai.request: option 'headers' must be a table");
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    size_t kl, vl, i;
    const char *k, *v;
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "oai.request: header names and values must be strings");
    k = lua_tolstring(L, -2, &kl);
    v = lua_tolstring(L, -1, &vl);
    if (kl == 0) luaL_error(L, "oai.request: empty header name");
    for (i = 0; i < kl; i++)
      if (k[i] <= ' ' || k[i] == ':' || k[i] == 127)
        luaL_error(L, "oai.request: invalid character in header name '%s'", oai_has_crlf(k, kl) ? "(contains CR/LF)" : k);
    if (oai_has_crlf(v, vl)) luaL_error(L, "oai.request: header '%s' has a value containing CR, LF or NUL", k);
    if (kl == 15 && oai_ieq(k, "accept-encoding", 15)) r->own_accept_encoding = 1;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, k, kl);
    /* "Name;" is libcurl's spelling of a header with an empty value */
    if (vl == 0) luaL_addchar(&b, ';');
    else { luaL_addstring(&b, ": "); luaL_addlstring(&b, v, vl); }
    luaL_pushresult(&b);
    oai_add_header(L, r, lua_tostring(L, -1));
    lua_pop(L, 2);   /* line, value */
  }
  lua_pop(L, 1);
}

/* req:headers() -> { [lowercase name] = value, ... } (repeats joined with ", ") */
int oai_request_headers(lua_State *L) {
  request *r = oai_check_request(L, 1);
  size_t i = 0;
  lua_newtable(L);
  while (i < r->hdr.len) {
    const char *line = r->hdr.p + i;
    const char *end = memchr(line, '\n', r->hdr.len - i);
    size_t ll = end ? (size_t)(end - line) : r->hdr.len - i;
    const char *colon = memchr(line, ':', ll);
    i += ll + 1;
    if (colon != NULL && colon > line) {
      size_t nl = (size_t)(colon - line), k;
      const char *v = colon + 1;
      size_t vl = ll - nl - 1;
      luaL_Buffer b;
      while (vl > 0 && (*v == ' ' || *v == '\t')) v++, vl--;
      while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
      luaL_buffinit(L, &b);
      for (k = 0; k < nl; k++) {
        char c = line[k];
        luaL_addchar(&b, (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c);
      }
      luaL_pushresult(&b);               /* t name */
      lua_pushvalue(L, -1);
      lua_rawget(L, -3);                 /* t name old */
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlstring(L, v, vl);
      } else {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, vl);
        lua_concat(L, 3);
      }
      lua_rawset(L, -3);
    }
  }
  return 1;
}

/* req:raw_headers() -> the header lines of the final response, as sent */
int oai_request_raw_headers(lua_State *L) {
  request *r = oai_check_request(L, 1);
  lua_pushlstring(L, r->hdr.p ? r->hdr.p : "", r->hdr.len);
  return 1;
}

/* req:header(name) -> value or nil (name compared case-insensitively) */
int oai_request_header(lua_State *L) {
  request *r = oai_check_request(L, 1);
  size_t nl, vl = 0, i;
  const char *name = luaL_checklstring(L, 2, &nl);
  char low[64];
  const char *v;
  if (nl >= sizeof(low)) return 0;
  for (i = 0; i < nl; i++) low[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
  low[nl] = '\0';
  v = oai_find_header(&r->hdr, low, &vl);
  if (v == NULL) return 0;
  lua_pushlstring(L, v, vl);
  return 1;
}

