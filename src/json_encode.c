/*
** json_encode.c: JSON encode (requests), base64, and the null/array/object
** marks; also registers the codec's Lua functions (oai_open_json).
**
** Encode: compact text, object keys in sorted byte order (same value, same
** bytes), integers exact, floats shortest round-trip, strings checked to be
** UTF-8.  Errors raise with the path to the bad value.  The decoder is in
** json_decode.c.
**
** Scratch memory lives in userdata (freed by the collector), so a Lua error
** at any point (including out of memory) leaks nothing.
*/
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oai.h"
#include "json.h"

#define ENCODE_MAX_DEPTH 128
#define SCRATCH_MT "oai.json.scratch"
#define BOX_KEY "oai.json.box"     /* registry slot of the state's encoder box */

/* ------------------------------------------------------- scratch memory */

typedef struct keyent {
  const char *s;
  size_t n;
} keyent;

typedef struct seg {      /* one step of the path to the value being encoded */
  const char *key;        /* NULL: an array index */
  size_t klen;
  lua_Integer index;
} seg;

/* the encoder's heap memory: one box per Lua state, kept in the registry
   and reused (no allocation per encode); its __gc frees it, so an error in
   the middle of an encode leaks nothing */
typedef struct jbox {
  char *out;
  size_t cap;
  keyent *keys;           /* a stack of key lists, one segment per object level */
  size_t capkeys;
  int busy;               /* an encode is using it (a finalizer may encode too) */
} jbox;

typedef struct encoder {
  jbox *b;
  size_t len;
  size_t nkeys;
  const void *tables[ENCODE_MAX_DEPTH + 1];
  seg path[ENCODE_MAX_DEPTH + 1];
  lua_State *L;
} encoder;

static int scratch_gc(lua_State *L) {
  jbox *b = (jbox *)luaL_checkudata(L, 1, SCRATCH_MT);
  free(b->out);
  free(b->keys);
  b->out = NULL;
  b->keys = NULL;
  b->cap = b->capkeys = 0;
  return 0;
}

static jbox *new_box(lua_State *L) {
  jbox *b = (jbox *)lua_newuserdatauv(L, sizeof(jbox), 0);
  memset(b, 0, sizeof(*b));
  luaL_setmetatable(L, SCRATCH_MT);
  return b;
}

static void grow(encoder *e, size_t need) {
  jbox *b = e->b;
  size_t cap = b->cap ? b->cap : 1024;
  char *p;
  while (cap - e->len < need) {
    if (cap > ((size_t)-1) / 2) luaL_error(e->L, "oai.json.encode: out of memory");
    cap *= 2;
  }
  p = (char *)realloc(b->out, cap);
  if (p == NULL) luaL_error(e->L, "oai.json.encode: out of memory");
  b->out = p;   /* in the box at once: an error right after must not leak */
  b->cap = cap;
}

#define PUTC(e, c) do { if ((e)->len == (e)->b->cap) grow((e), 1); (e)->b->out[(e)->len++] = (char)(c); } while (0)

static void put(encoder *e, const char *s, size_t n) {
  if (e->b->cap - e->len < n) grow(e, n);
  memcpy(e->b->out + e->len, s, n);
  e->len += n;
}

/* ---------------------------------------------------------------- encode */

static const char hexd[] = "0123456789abcdef";

static int is_ident(const char *s, size_t n) {
  size_t i;
  if (n == 0 || n > 64) return 0;
  for (i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (i > 0 && c >= '0' && c <= '9')))
      return 0;
  }
  return 1;
}

/* raise "oai.json.encode: <path>: <msg>" for the value at path depth d */
static void fail(encoder *e, int d, const char *msg) {
  lua_State *L = e->L;
  luaL_Buffer b;
  int i;
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "oai.json.encode: ");
  for (i = 1; i <= d; i++) {
    seg *s = &e->path[i];
    if (s->key == NULL) {
      char num[32];
      snprintf(num, sizeof(num), "[%lld]", (long long)s->index);
      luaL_addstring(&b, num);
    } else if (is_ident(s->key, s->klen)) {
      if (i > 1) luaL_addchar(&b, '.');
      luaL_addlstring(&b, s->key, s->klen);
    } else {
      size_t k, n = s->klen > 40 ? 40 : s->klen;
      luaL_addstring(&b, "[\"");
      for (k = 0; k < n; k++) {
        unsigned char c = (unsigned char)s->key[k];
        if (c < 0x20 || c == '"' || c == '\\' || c >= 0x7F) luaL_addchar(&b, '?');
        else luaL_addchar(&b, (char)c);
      }
      if (s->klen > n) luaL_addstring(&b, "...");
      luaL_addstring(&b, "\"]");
    }
  }
  if (d > 0) luaL_addstring(&b, ": ");
  luaL_addstring(&b, msg);
  luaL_pushresult(&b);
  lua_error(L);
}

static void encode_string(encoder *e, const char *s, size_t n, int d, const char *what) {
  const unsigned char *p = (const unsigned char *)s, *end = p + n;
  if (e->b->cap - e->len < n + 2) grow(e, n + 2);
  e->b->out[e->len++] = '"';
  while (p < end) {
    const unsigned char *run = p;
    /* copy runs of plain ASCII at once */
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') p++;
    if (p > run) put(e, (const char *)run, (size_t)(p - run));
    if (p == end) break;
    if (*p >= 0x80) {
      size_t k = oai_utf8_len(p, (size_t)(end - p));
      if (k == 0) fail(e, d, what);
      put(e, (const char *)p, k);
      p += k;
      continue;
    }
    switch (*p) {
      case '"': put(e, "\\\"", 2); break;
      case '\\': put(e, "\\\\", 2); break;
      case '\b': put(e, "\\b", 2); break;
      case '\f': put(e, "\\f", 2); break;
      case '\n': put(e, "\\n", 2); break;
      case '\r': put(e, "\\r", 2); break;
      case '\t': put(e, "\\t", 2); break;
      default: {
        char u[6];
        u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
        u[4] = hexd[*p >> 4]; u[5] = hexd[*p & 15];
        put(e, u, 6);
      }
    }
    p++;
  }
  PUTC(e, '"');
}

/* C-locale formatting: a locale with a decimal comma must not leak in */
static void fix_decimal_point(char *buf) {
  char *c;
  for (c = buf; *c; c++) if (*c == ',') *c = '.';
}

static void encode_number(encoder *e, int idx, int d) {
  lua_State *L = e->L;
  char buf[64];
  lua_Number x;
#if LUA_VERSION_NUM >= 503
  if (lua_isinteger(L, idx)) {
    int n = snprintf(buf, sizeof(buf), LUA_INTEGER_FMT, (LUAI_UACINT)lua_tointeger(L, idx));
    put(e, buf, (size_t)n);
    return;
  }
#endif
  x = lua_tonumber(L, idx);
  if (x != x) fail(e, d, "cannot encode NaN");
  if (x == HUGE_VAL) fail(e, d, "cannot encode inf");
  if (x == -HUGE_VAL) fail(e, d, "cannot encode -inf");
  if (x == floor(x) && x >= -9223372036854775808.0 && x < 9223372036854775808.0) {
    /* integral: written as an integer (exact in this range) */
    if (x == 0 && signbit(x)) { put(e, "-0", 2); return; }
    snprintf(buf, sizeof(buf), "%.0f", (double)x);
  } else {
    /* for normal doubles %.15g is the shortest form whenever it round-trips
       (DBL_DIG is 15); subnormals can need fewer digits than that */
    int prec = fabs(x) < 2.2250738585072014e-308 ? 1 : 15;
    for (; prec <= 17; prec++) {
      snprintf(buf, sizeof(buf), "%.*g", prec, (double)x);
      if (strtod(buf, NULL) == (double)x) break;
    }
  }
  fix_decimal_point(buf);
  put(e, buf, strlen(buf));
}

static int cmp_keys(const void *a, const void *b) {
  const keyent *x = (const keyent *)a, *y = (const keyent *)b;
  size_t n = x->n < y->n ? x->n : y->n;
  int c = memcmp(x->s, y->s, n);
  if (c != 0) return c;
  return x->n < y->n ? -1 : x->n > y->n;
}

static void encode_value(encoder *e, int idx, int d);

static int marked(lua_State *L, int idx, const char *mt) {
  int r;
  if (!lua_getmetatable(L, idx)) return 0;
  luaL_getmetatable(L, mt);
  r = lua_rawequal(L, -1, -2);
  lua_pop(L, 2);
  return r;
}

static void encode_table(encoder *e, int idx, int d) {
  lua_State *L = e->L;
  const void *ptr = lua_topointer(L, idx);
  int i, is_arr = marked(L, idx, OAI_ARRAY_MT), is_obj = !is_arr && marked(L, idx, OAI_OBJECT_MT);
  size_t nint = 0, nstr = 0, base;
  lua_Integer maxi = 0;
  if (d >= ENCODE_MAX_DEPTH) fail(e, d, "nesting deeper than 128");
  for (i = 0; i < d; i++)
    if (e->tables[i] == ptr) fail(e, d, "cycle detected");
  e->tables[d] = ptr;
  luaL_checkstack(L, 6, "oai.json.encode");
  /* classify the keys; remember string keys for sorting */
  base = e->nkeys;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    int kt = lua_type(L, -2);
    lua_pop(L, 1);
    if (kt == LUA_TSTRING) {
      size_t kl;
      const char *k = lua_tolstring(L, -1, &kl);
      if (e->nkeys == e->b->capkeys) {
        size_t cap = e->b->capkeys ? e->b->capkeys * 2 : 32;
        keyent *nk = (keyent *)realloc(e->b->keys, cap * sizeof(keyent));
        if (nk == NULL) luaL_error(L, "oai.json.encode: out of memory");
        e->b->keys = nk;
        e->b->capkeys = cap;
      }
      e->b->keys[e->nkeys].s = k;
      e->b->keys[e->nkeys].n = kl;
      e->nkeys++;
      nstr++;
    } else if (kt == LUA_TNUMBER) {
      lua_Number kn = lua_tonumber(L, -1);
      lua_Integer ki;
#if LUA_VERSION_NUM >= 503
      if (lua_isinteger(L, -1)) ki = lua_tointeger(L, -1);
      else
#endif
      {
        if (kn != floor(kn) || kn < 1 || kn > 9007199254740992.0) {
          lua_pop(L, 1);
          e->nkeys = base;
          fail(e, d, kn == floor(kn) ? "integer key out of array range" : "key of type number (not an integer)");
        }
        ki = (lua_Integer)kn;
      }
      if (ki < 1) { lua_pop(L, 1); e->nkeys = base; fail(e, d, "integer key out of array range"); }
      if (ki > maxi) maxi = ki;
      nint++;
    } else {
      char msg[64];
      lua_pop(L, 1);
      e->nkeys = base;
      snprintf(msg, sizeof(msg), "key of type %s", lua_typename(L, kt));
      fail(e, d, msg);
    }
  }
  if (nint > 0 && nstr > 0) { e->nkeys = base; fail(e, d, "table mixes integer and string keys"); }
  if (is_obj && nint > 0) { e->nkeys = base; fail(e, d, "integer key in a table marked as an object"); }
  if (is_arr && nstr > 0) { e->nkeys = base; fail(e, d, "string key in a table marked as an array"); }
  if (nint > 0 || (is_arr && nstr == 0)) {
    lua_Integer k;
    if ((lua_Integer)nint != maxi) {
      /* find the first hole for the message */
      char msg[64];
      for (k = 1; k <= maxi; k++) {
        lua_rawgeti(L, idx, (int)k);
        if (lua_isnil(L, -1)) { lua_pop(L, 1); break; }
        lua_pop(L, 1);
      }
      snprintf(msg, sizeof(msg), "array has a hole at index %lld", (long long)k);
      fail(e, d, msg);
    }
    PUTC(e, '[');
    for (k = 1; k <= maxi; k++) {
      if (k > 1) PUTC(e, ',');
      lua_rawgeti(L, idx, (int)k);
      e->path[d + 1].key = NULL;
      e->path[d + 1].index = k;
      encode_value(e, lua_gettop(L), d + 1);
      lua_pop(L, 1);
    }
    PUTC(e, ']');
    return;
  }
  /* object: keys sorted by bytes */
  {
    size_t n = e->nkeys - base, j;
    if (n > 16) qsort(e->b->keys + base, n, sizeof(keyent), cmp_keys);
    else {   /* a few keys (the usual case): insertion sort, no calls */
      keyent *k = e->b->keys + base;
      size_t a, b2;
      for (a = 1; a < n; a++) {
        keyent t = k[a];
        for (b2 = a; b2 > 0 && cmp_keys(&k[b2 - 1], &t) > 0; b2--) k[b2] = k[b2 - 1];
        k[b2] = t;
      }
    }
    PUTC(e, '{');
    for (j = 0; j < n; j++) {
      keyent k = e->b->keys[base + j];   /* copy: the array may move */
      if (j > 0) PUTC(e, ',');
      e->path[d + 1].key = k.s;
      e->path[d + 1].klen = k.n;
      encode_string(e, k.s, k.n, d + 1, "invalid UTF-8 in key");
      PUTC(e, ':');
      lua_pushlstring(L, k.s, k.n);
      lua_rawget(L, idx);
      encode_value(e, lua_gettop(L), d + 1);
      lua_pop(L, 1);
    }
    PUTC(e, '}');
    e->nkeys = base;
  }
}

static void encode_value(encoder *e, int idx, int d) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
      size_t n;
      const char *s = lua_tolstring(L, idx, &n);
      encode_string(e, s, n, d, "invalid UTF-8 in string");
      break;
    }
    case LUA_TNUMBER: encode_number(e, idx, d); break;
    case LUA_TBOOLEAN:
      if (lua_toboolean(L, idx)) put(e, "true", 4);
      else put(e, "false", 5);
      break;
    case LUA_TTABLE: encode_table(e, idx, d); break;
    case LUA_TLIGHTUSERDATA:
      if (lua_touserdata(L, idx) == NULL) { put(e, "null", 4); break; }
      fail(e, d, "cannot encode a light userdata");
      break;
    case LUA_TNIL: fail(e, d, "cannot encode nil"); break;
    case LUA_TFUNCTION: fail(e, d, "cannot encode a function"); break;
    case LUA_TTHREAD: fail(e, d, "cannot encode a thread"); break;
    default: fail(e, d, "cannot encode a userdata"); break;
  }
}

void oai_json_encode_push(lua_State *L, int idx) {
  encoder e;
  jbox *b;
  idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
  lua_getfield(L, LUA_REGISTRYINDEX, BOX_KEY);   /* the state's box */
  b = (jbox *)luaL_testudata(L, -1, SCRATCH_MT);
  if (b == NULL || b->busy) {
    /* none yet; or busy: an encode raised (leaving it marked) or a
       finalizer encodes while another encode runs.  A new box replaces it
       (a running encode keeps the old one alive on its stack). */
    lua_pop(L, 1);
    b = new_box(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, BOX_KEY);
  }
  e.b = b;
  e.len = 0;
  e.nkeys = 0;
  e.L = L;
  b->busy = 1;
  encode_value(&e, idx, 0);
  b->busy = 0;
  lua_pushlstring(L, b->out ? b->out : "", e.len);
  if (b->cap > 1024 * 1024) {   /* do not hold a huge buffer forever */
    free(b->out);
    b->out = NULL;
    b->cap = 0;
  }
  lua_remove(L, -2);   /* the box */
}

/* json_encode(value) -> string | raises with the path to the bad value */
static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  lua_settop(L, 1);
  oai_json_encode_push(L, 1);
  return 1;
}


/* ------------------------------------------------------------- markers */

static int mark(lua_State *L, const char *mt, const char *fname) {
  if (lua_isnoneornil(L, 1)) {
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1)) {
      luaL_getmetatable(L, mt);
      if (!lua_rawequal(L, -1, -2))
        return luaL_error(L, "oai.%s: the table already has another metatable", fname);
      lua_pop(L, 2);
      return 1;
    }
  }
  luaL_setmetatable(L, mt);
  return 1;
}

/* array([t]) -> t marked to encode as a JSON array ([] when empty) */
static int l_array(lua_State *L) { return mark(L, OAI_ARRAY_MT, "array"); }

/* object([t]) -> t marked to encode as a JSON object ({} when empty) */
static int l_object(lua_State *L) { return mark(L, OAI_OBJECT_MT, "object"); }

/* ------------------------------------------------------------- base64 */

/* base64(bytes) -> RFC 4648 base64 text with padding */
static int l_base64(lua_State *L) {
  static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t n, i, o = 0, outn;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  char *out;
  if (n > ((size_t)-1) / 4 * 3 - 3) return luaL_error(L, "oai.base64: input too large");
  outn = (n + 2) / 3 * 4;
  out = (char *)lua_newuserdatauv(L, outn > 0 ? outn : 1, 0);   /* scratch, collected */
  for (i = 0; i + 2 < n; i += 3) {
    unsigned v = ((unsigned)s[i] << 16) | ((unsigned)s[i + 1] << 8) | s[i + 2];
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = tab[(v >> 6) & 63];
    out[o++] = tab[v & 63];
  }
  if (i < n) {
    unsigned v = (unsigned)s[i] << 16;
    if (i + 1 < n) v |= (unsigned)s[i + 1] << 8;
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
    out[o++] = '=';
  }
  lua_pushlstring(L, out, o);
  return 1;
}

void oai_open_json(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "json_encode", l_encode },
    { "json_decode", oai_json_l_decode },
    { "array", l_array },
    { "object", l_object },
    { "base64", l_base64 },
    { NULL, NULL }
  };
  luaL_newmetatable(L, SCRATCH_MT);
  lua_pushcfunction(L, scratch_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  luaL_newmetatable(L, OAI_ARRAY_MT);
  lua_pushliteral(L, "array");
  lua_setfield(L, -2, "__jsontype");
  lua_pop(L, 1);
  luaL_newmetatable(L, OAI_OBJECT_MT);
  lua_pushliteral(L, "object");
  lua_setfield(L, -2, "__jsontype");
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "null");
}
