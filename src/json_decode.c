/*
** json_decode.c: JSON decode (responses, stream chunks).
**
** Strict RFC 8259, errors return nil plus the byte offset; nesting is
** limited so no input can overflow the C stack.  Stream chunks (chunk.c)
** are decoded leniently (OAI_JSON_LENIENT): each maximal invalid UTF-8
** subpart and each lone \u surrogate becomes U+FFFD (the WHATWG rule), and
** with OAI_JSON_MARK_EDGES a lone surrogate half at the very start (low) or
** end (high) of a string value is kept as its 3-byte WTF-8 form (a "mark",
** ED A0..BF xx, never valid UTF-8) for text.c to join with the other half
** from the neighbouring chunk.
**
** The scratch buffer for unescaped strings lives in a userdata (freed by
** the collector), so a Lua error at any point leaks nothing.
*/
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define DECODE_MAX_DEPTH 512


/* the length (>= 1) of the maximal subpart of the ill-formed sequence at p
   (n bytes left): what the WHATWG decoder replaces with one U+FFFD */
static size_t utf8_bad_len(const unsigned char *p, size_t n) {
  unsigned c = p[0], lo = 0x80, hi = 0xBF;
  size_t need, i;
  if (c >= 0xC2 && c <= 0xDF) need = 1;
  else if (c >= 0xE0 && c <= 0xEF) {
    need = 2;
    if (c == 0xE0) lo = 0xA0; else if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    need = 3;
    if (c == 0xF0) lo = 0x90; else if (c == 0xF4) hi = 0x8F;
  } else return 1;
  for (i = 1; i <= need && i < n; i++) {
    if (p[i] < lo || p[i] > hi) break;
    lo = 0x80; hi = 0xBF;
  }
  return i;   /* only called on an ill-formed sequence, so i <= need */
}

/* ---------------------------------------------------------------- decode */

typedef struct decoder {
  const char *s, *p, *e;
  char *scratch;          /* unescaped strings; as long as the input, so never short */
  lua_State *L;
  const char *err;
  const char *errp;
  int depth;
  int flags;              /* OAI_JSON_LENIENT, OAI_JSON_MARK_EDGES */
  int marks;              /* marks left in string values (MARK_EDGES) */
} decoder;

static int derr(decoder *D, const char *at, const char *msg) {
  D->err = msg;
  D->errp = at;
  return 0;
}

static void skip_ws(decoder *D) {
  const char *p = D->p, *e = D->e;
  while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
  D->p = p;
}

static int decode_value(decoder *D);

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  int i;
  for (i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return 0;
  }
  *out = v;
  return 1;
}

static char *put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) *o++ = (char)cp;
  else if (cp < 0x800) { *o++ = (char)(0xC0 | (cp >> 6)); *o++ = (char)(0x80 | (cp & 0x3F)); }
  else if (cp < 0x10000) {
    *o++ = (char)(0xE0 | (cp >> 12)); *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *o++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *o++ = (char)(0xF0 | (cp >> 18)); *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *o++ = (char)(0x80 | ((cp >> 6) & 0x3F)); *o++ = (char)(0x80 | (cp & 0x3F));
  }
  return o;
}

#define FFFD "\xEF\xBF\xBD"

/* at the opening quote: push the string (key: an object key, never marked) */
static int decode_string(decoder *D, int key) {
  const char *p = D->p + 1, *e = D->e, *start = p;
  int lenient = D->flags & OAI_JSON_LENIENT;
  int mark = !key && (D->flags & OAI_JSON_MARK_EDGES);
  char *o;
  /* fast path: no escapes */
  for (;;) {
    if (p >= e) return derr(D, p, "unterminated string");
    if (*p == '"') {
      lua_pushlstring(D->L, start, (size_t)(p - start));
      D->p = p + 1;
      return 1;
    }
    if (*p == '\\') break;
    if ((unsigned char)*p < 0x20) return derr(D, p, "control character in string");
    if ((unsigned char)*p >= 0x80) {
      size_t k = oai_utf8_len((const unsigned char *)p, (size_t)(e - p));
      if (k == 0) {
        if (!lenient) return derr(D, p, "invalid UTF-8 in string");
        break;   /* replaced below */
      }
      p += k;
    } else p++;
  }
  /* escapes (or, lenient, invalid UTF-8): unescape into the scratch buffer
     (strict: an escape is never shorter than what it stands for, so the
     input's length is enough; lenient: a byte may become 3, see
     oai_json_decode_push_ex) */
  o = D->scratch;
  memcpy(o, start, (size_t)(p - start));
  o += p - start;
  for (;;) {
    const char *run = p;
    while (p < e && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) {
      if ((unsigned char)*p >= 0x80) {
        size_t k = oai_utf8_len((const unsigned char *)p, (size_t)(e - p));
        if (k == 0) {
          if (!lenient) return derr(D, p, "invalid UTF-8 in string");
          if (p > run) { memcpy(o, run, (size_t)(p - run)); o += p - run; }
          memcpy(o, FFFD, 3); o += 3;
          p += utf8_bad_len((const unsigned char *)p, (size_t)(e - p));
          run = p;
          continue;
        }
        p += k;
      } else p++;
    }
    if (p > run) { memcpy(o, run, (size_t)(p - run)); o += p - run; }
    if (p >= e) return derr(D, p, "unterminated string");
    if (*p == '"') break;
    if ((unsigned char)*p < 0x20) return derr(D, p, "control character in string");
    if (p + 1 >= e) return derr(D, p, "unterminated string");
    switch (p[1]) {
      case '"': *o++ = '"'; p += 2; break;
      case '\\': *o++ = '\\'; p += 2; break;
      case '/': *o++ = '/'; p += 2; break;
      case 'b': *o++ = '\b'; p += 2; break;
      case 'f': *o++ = '\f'; p += 2; break;
      case 'n': *o++ = '\n'; p += 2; break;
      case 'r': *o++ = '\r'; p += 2; break;
      case 't': *o++ = '\t'; p += 2; break;
      case 'u': {
        unsigned cp, lo;
        if (e - p < 6 || !hex4(p + 2, &cp)) return derr(D, p, "invalid \\u escape");
        if (cp >= 0xDC00 && cp <= 0xDFFF) {
          if (!lenient) return derr(D, p, "lone surrogate in \\u escape");
          if (mark && o == D->scratch) D->marks++;   /* a low half first: kept */
          else cp = 0xFFFD;
        } else if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (e - p < 12 || p[6] != '\\' || p[7] != 'u' || !hex4(p + 8, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
            if (!lenient) return derr(D, p, "lone surrogate in \\u escape");
            if (mark && p + 6 < e && p[6] == '"') D->marks++;   /* a high half last: kept */
            else cp = 0xFFFD;
          } else {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
          }
        }
        o = put_utf8(o, cp);
        p += 6;
        break;
      }
      default: return derr(D, p, "invalid escape in string");
    }
  }
  lua_pushlstring(D->L, D->scratch, (size_t)(o - D->scratch));
  D->p = p + 1;
  return 1;
}

static int is_dig(char c) { return c >= '0' && c <= '9'; }

static int decode_number(decoder *D) {
  const char *p = D->p, *e = D->e, *start = p;
  int neg = 0, isint = 1;
  if (p < e && *p == '-') { neg = 1; p++; }
  if (p >= e || !is_dig(*p)) return derr(D, start, "invalid number");
  if (*p == '0') {
    p++;
    if (p < e && is_dig(*p)) return derr(D, start, "leading zero in number");
  } else while (p < e && is_dig(*p)) p++;
  if (p < e && *p == '.') {
    isint = 0;
    p++;
    if (p >= e || !is_dig(*p)) return derr(D, p, "digit expected after '.'");
    while (p < e && is_dig(*p)) p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    isint = 0;
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (p >= e || !is_dig(*p)) return derr(D, p, "digit expected in exponent");
    while (p < e && is_dig(*p)) p++;
  }
  D->p = p;
#if LUA_VERSION_NUM >= 503
  if (isint && !(neg && p - start == 2 && start[1] == '0')) {
    /* an integer that fits stays an integer */
    const char *q = start + neg;
    lua_Unsigned v = 0, lim = neg ? (lua_Unsigned)LUA_MAXINTEGER + 1u : (lua_Unsigned)LUA_MAXINTEGER;
    int ok = 1;
    for (; q < p; q++) {
      unsigned dgt = (unsigned)(*q - '0');
      if (v > (lim - dgt) / 10) { ok = 0; break; }
      v = v * 10 + dgt;
    }
    if (ok) {
      lua_pushinteger(D->L, neg ? (lua_Integer)(0u - v) : (lua_Integer)v);
      return 1;
    }
  }
#else
  (void)isint;
#endif
  {
    char buf[128];
    char *tmp = buf, *endp;
    size_t n = (size_t)(p - start), i;
    double x;
    char dp = localeconv()->decimal_point[0];
    if (n >= sizeof(buf)) {
      tmp = (char *)lua_newuserdatauv(D->L, n + 1, 0);   /* collected, never leaked */
    }
    memcpy(tmp, start, n);
    tmp[n] = '\0';
    if (dp != '.') for (i = 0; i < n; i++) if (tmp[i] == '.') tmp[i] = dp;
    errno = 0;
    x = strtod(tmp, &endp);
    if (tmp != buf) lua_pop(D->L, 1);
    if (x == HUGE_VAL || x == -HUGE_VAL) return derr(D, start, "number out of range");
    if (isint && x == 0 && neg) x = -0.0;
    lua_pushnumber(D->L, (lua_Number)x);
  }
  return 1;
}

static int decode_lit(decoder *D, const char *lit, size_t n) {
  if ((size_t)(D->e - D->p) < n || memcmp(D->p, lit, n) != 0) return derr(D, D->p, "invalid literal");
  D->p += n;
  return 1;
}

static int decode_value(decoder *D) {
  lua_State *L = D->L;
  skip_ws(D);
  if (D->p >= D->e) return derr(D, D->p, "unexpected end of input");
  switch (*D->p) {
    case '"': return decode_string(D, 0);
    case '{': {
      if (++D->depth > DECODE_MAX_DEPTH) return derr(D, D->p, "nesting deeper than 512");
      luaL_checkstack(L, 4, "oai.json.decode");
      D->p++;
      lua_newtable(L);
      skip_ws(D);
      if (D->p < D->e && *D->p == '}') { D->p++; D->depth--; return 1; }
      for (;;) {
        skip_ws(D);
        if (D->p >= D->e) return derr(D, D->p, "unexpected end of input");
        if (*D->p != '"') return derr(D, D->p, "expected a string key");
        if (!decode_string(D, 1)) return 0;
        skip_ws(D);
        if (D->p >= D->e || *D->p != ':') return derr(D, D->p, "expected ':' after object key");
        D->p++;
        if (!decode_value(D)) return 0;
        lua_rawset(L, -3);
        skip_ws(D);
        if (D->p >= D->e) return derr(D, D->p, "unexpected end of input");
        if (*D->p == ',') { D->p++; continue; }
        if (*D->p == '}') { D->p++; break; }
        return derr(D, D->p, "expected ',' or '}' after object member");
      }
      D->depth--;
      return 1;
    }
    case '[': {
      int n = 0;
      if (++D->depth > DECODE_MAX_DEPTH) return derr(D, D->p, "nesting deeper than 512");
      luaL_checkstack(L, 4, "oai.json.decode");
      D->p++;
      lua_newtable(L);
      skip_ws(D);
      if (D->p < D->e && *D->p == ']') {
        D->p++;
        D->depth--;
        luaL_setmetatable(L, OAI_ARRAY_MT);   /* encodes back as [] */
        return 1;
      }
      for (;;) {
        if (!decode_value(D)) return 0;
        lua_rawseti(L, -2, ++n);
        skip_ws(D);
        if (D->p >= D->e) return derr(D, D->p, "unexpected end of input");
        if (*D->p == ',') { D->p++; continue; }
        if (*D->p == ']') { D->p++; break; }
        return derr(D, D->p, "expected ',' or ']' after array element");
      }
      D->depth--;
      return 1;
    }
    case 't': if (!decode_lit(D, "true", 4)) return 0; lua_pushboolean(L, 1); return 1;
    case 'f': if (!decode_lit(D, "false", 5)) return 0; lua_pushboolean(L, 0); return 1;
    case 'n': if (!decode_lit(D, "null", 4)) return 0; lua_pushlightuserdata(L, NULL); return 1;
    default:
      if (*D->p == '-' || is_dig(*D->p)) return decode_number(D);
      return derr(D, D->p, "unexpected character");
  }
}

int oai_json_decode_push_ex(lua_State *L, const char *s, size_t len, int flags, int *marks) {
  decoder D;
  int top = lua_gettop(L), boxed = 0;
  D.s = D.p = s;
  D.e = s + len;
  D.L = L;
  D.err = NULL;
  D.errp = s;
  D.depth = 0;
  D.scratch = NULL;
  D.flags = flags;
  D.marks = 0;
  if (flags & OAI_JSON_LENIENT) {
    /* an invalid byte may become a 3-byte U+FFFD: scratch for 3x the input
       when there is a byte that could need it (or an escape) */
    size_t i;
    for (i = 0; i < len; i++) if ((unsigned char)s[i] >= 0x80 || s[i] == '\\') break;
    if (i < len) {
      D.scratch = (char *)lua_newuserdatauv(L, len * 3, 0);
      boxed = 1;
    }
  } else if (memchr(s, '\\', len) != NULL) {
    /* scratch for unescaping, collected with the box: never leaked */
    D.scratch = (char *)lua_newuserdatauv(L, len, 0);
    boxed = 1;
  }
  if (decode_value(&D)) {
    skip_ws(&D);
    if (D.p == D.e) {
      if (boxed) lua_remove(L, -2);
      if (marks != NULL) *marks = D.marks;
      return 1;
    }
    derr(&D, D.p, "trailing characters after the value");
  }
  lua_settop(L, top);
  lua_pushfstring(L, "oai.json.decode: at byte %d: %s", (int)(D.errp - s) + 1, D.err);
  return 0;
}

int oai_json_decode_push(lua_State *L, const char *s, size_t len) {
  return oai_json_decode_push_ex(L, s, len, 0, NULL);
}

/* json_decode(text) -> value | nil, err (err names the byte offset) */
int oai_json_l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  if (oai_json_decode_push(L, s, len)) return 1;
  luaL_pushfail(L);
  lua_insert(L, -2);
  return 2;
}
