/*
** chunk.c: the streaming hot path.  One chat.completion.chunk (the data of
** one SSE event) -> the few values Lua needs, appended as records to a flat
** array, without building the chunk table.
**
** A record is a kind followed by a fixed number of slots (lua/oai/stream.lua
** has the same table and a generic path, records_from_chunk, that builds the
** same records from a decoded chunk):
**   1 CONTENT idx text            2 REASONING idx text field
**   3 REFUSAL idx text            4 TOOL idx pos index id type name args
**   5 FINISH idx reason           6 ROLE idx role
**   7 USAGE usage                 8 META id created model fingerprint object
**   9 LOGPROBS idx logprobs      10 DELTA_EXTRA idx name value
**  11 CHOICE_EXTRA idx name value 12 TOP_EXTRA name value
**  13 ERROR error raw            14 DONE
**  15 BAD raw message            16 RAW chunk
** The scanner below only finds the spans of values; every value handed to
** Lua is either a plain string pushed straight from the input (no escapes,
** valid UTF-8) or decoded by the strict decoder of json.c.  Shapes it does
** not expect (escaped keys, odd types, deep nesting) make it give up on the
** chunk, which is then decoded whole and handed over as a RAW record for
** the generic path: never a wrong or lost value.
**
** Per stream (oai_chunk_state), the last chunk whose only record was one
** CONTENT is kept as a template: a chunk equal to it outside the content
** string has the same records with its own text (same_shape), found
** without scanning the rest again.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "oai.h"

enum {
  K_CONTENT = 1, K_REASONING, K_REFUSAL, K_TOOL, K_FINISH, K_ROLE, K_USAGE, K_META,
  K_LOGPROBS, K_DELTA_EXTRA, K_CHOICE_EXTRA, K_TOP_EXTRA, K_ERROR, K_DONE, K_BAD, K_RAW
};

#define MAX_EXTRA 16
#define MAX_DEPTH 64
#define GIVE_UP (-1)

typedef struct span {
  const char *p;
  size_t n;
  int plain;    /* 1: a string to push as is (no escapes, valid UTF-8);
                   -1: a string not checked yet; 0: anything else */
} span;

typedef struct out {
  lua_State *L;
  int t;      /* stack index of the records table */
  int n;      /* records slots used */
  int other;  /* records other than META and CONTENT put so far (put_int) */
  int contents;             /* CONTENT records put so far (put_int) */
  const char *cp, *ip;      /* the last CONTENT record's value and index spans */
  size_t cn, in;
} out;

/* ------------------------------------------------------------ scanning */

typedef struct sc {
  const char *p, *e;
} sc;

static void ws(sc *s) {
  while (s->p < s->e && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

/* bytes that end the fast run through a string: '"', '\\' and controls */
static const unsigned char STR_STOP[256] = {
  1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1, 1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,
  0,0,1,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,
  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,1,0,0,0,
  0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0, 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0
};   /* 128..255: 0 (UTF-8 is checked when a value is pushed) */

/* the first byte in [p, e) that STR_STOP marks, or e; four at a time */
static const char *str_run(const char *p, const char *e) {
  while (e - p >= 4) {
    if (STR_STOP[(unsigned char)p[0]]) return p;
    if (STR_STOP[(unsigned char)p[1]]) return p + 1;
    if (STR_STOP[(unsigned char)p[2]]) return p + 2;
    if (STR_STOP[(unsigned char)p[3]]) return p + 3;
    p += 4;
  }
  while (p < e && !STR_STOP[(unsigned char)*p]) p++;
  return p;
}

/* s at a '"': past the closing quote; 0 if unterminated or a raw control */
static int skip_string(sc *s) {
  const char *p = s->p + 1, *e = s->e;
  for (;;) {
    p = str_run(p, e);
    if (p >= e) return 0;
    if (*p == '"') { s->p = p + 1; return 1; }
    if (*p != '\\' || p + 1 >= e) return 0;
    p += 2;
  }
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int skip_number(sc *s) {
  const char *p = s->p, *e = s->e;
  if (p < e && *p == '-') p++;
  if (p >= e) return 0;
  if (*p == '0') p++;
  else if (is_digit(*p)) { while (p < e && is_digit(*p)) p++; }
  else return 0;
  if (p < e && *p == '.') {
    p++;
    if (p >= e || !is_digit(*p)) return 0;
    while (p < e && is_digit(*p)) p++;
  }
  if (p < e && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < e && (*p == '+' || *p == '-')) p++;
    if (p >= e || !is_digit(*p)) return 0;
    while (p < e && is_digit(*p)) p++;
  }
  s->p = p;
  return 1;
}

static int skip_lit(sc *s, const char *lit, size_t n) {
  if ((size_t)(s->e - s->p) < n || memcmp(s->p, lit, n) != 0) return 0;
  s->p += n;
  return 1;
}

/* skip one value, leaving its span in *v; 0 if malformed */
static int skip_value(sc *s, span *v, int depth) {
  const char *start;
  ws(s);
  start = s->p;
  v->plain = 0;
  if (s->p >= s->e) return 0;
  switch (*s->p) {
    case '"': {
      /* memchr to the closing quote (one not escaped by an odd run of
         backslashes); whether the value can be pushed as is is decided
         only for values that are pushed (push_value) */
      const char *q = s->p + 1;
      /* short values without escapes (most deltas) end within the first
         bytes: a table run finds the quote; the rest go on with memchr */
      const char *r = str_run(q, s->e - q > 24 ? q + 24 : s->e);
      if (r < s->e && *r == '"') {
        s->p = r + 1;
        v->plain = -1;
        break;
      }
      for (;;) {
        const char *b;
        q = (const char *)memchr(q, '"', (size_t)(s->e - q));
        if (q == NULL) return 0;
        b = q;
        while (b > s->p + 1 && b[-1] == '\\') b--;
        if (((q - b) & 1) == 0) break;
        q++;
      }
      s->p = q + 1;
      v->plain = -1;
      break;
    }
    case '{': case '[': {
      char close = *s->p == '{' ? '}' : ']';
      int obj = close == '}';
      span dummy;
      if (depth >= MAX_DEPTH) return 0;
      s->p++;
      ws(s);
      if (s->p < s->e && *s->p == close) { s->p++; break; }
      for (;;) {
        if (obj) {
          ws(s);
          if (s->p >= s->e || *s->p != '"' || !skip_string(s)) return 0;
          ws(s);
          if (s->p >= s->e || *s->p != ':') return 0;
          s->p++;
        }
        if (!skip_value(s, &dummy, depth + 1)) return 0;
        ws(s);
        if (s->p >= s->e) return 0;
        if (*s->p == ',') { s->p++; continue; }
        if (*s->p == close) { s->p++; break; }
        return 0;
      }
      break;
    }
    case 't': if (!skip_lit(s, "true", 4)) return 0; break;
    case 'f': if (!skip_lit(s, "false", 5)) return 0; break;
    case 'n': if (!skip_lit(s, "null", 4)) return 0; break;
    default:
      if (!skip_number(s)) return 0;
  }
  v->p = start;
  v->n = (size_t)(s->p - start);
  return 1;
}

/* iterate the members of an object: call with s at '{' (first) */
typedef struct member {
  span key;     /* without quotes; never contains escapes */
  span val;
} member;

/* the key of the next member: s at '{' when *first, else just after a
   value; leaves s after the ':'.  1 with *key set, 0 after the closing '}',
   GIVE_UP on anything unexpected (escaped keys included) */
static int next_key(sc *s, span *key, int *first) {
  ws(s);
  if (*first) {
    if (s->p >= s->e || *s->p != '{') return GIVE_UP;
    s->p++;
    ws(s);
    *first = 0;
    if (s->p < s->e && *s->p == '}') { s->p++; return 0; }
  } else {
    if (s->p >= s->e) return GIVE_UP;
    if (*s->p == '}') { s->p++; return 0; }
    if (*s->p != ',') return GIVE_UP;
    s->p++;
    ws(s);
  }
  if (s->p >= s->e || *s->p != '"') return GIVE_UP;
  {
    /* keys with escapes (or anything else odd) go the generic way */
    const char *k = s->p + 1, *q = str_run(k, s->e);
    if (q >= s->e || *q != '"') return GIVE_UP;
    key->p = k;
    key->n = (size_t)(q - k);
    key->plain = 0;
    s->p = q + 1;
  }
  ws(s);
  if (s->p >= s->e || *s->p != ':') return GIVE_UP;
  s->p++;
  return 1;
}

/* after a member's value: a ',' or the '}' must follow */
static int after_value(sc *s) {
  ws(s);
  if (s->p < s->e && *s->p != ',' && *s->p != '}') return GIVE_UP;
  return 1;
}

/* returns 1 with *m filled, 0 at the end, GIVE_UP on anything unexpected */
static int next_member(sc *s, member *m, int *first) {
  int r = next_key(s, &m->key, first);
  if (r != 1) return r;
  if (!skip_value(s, &m->val, 1)) return GIVE_UP;
  return after_value(s);
}

static int key_is(const span *k, const char *lit, size_t n) {
  return k->n == n && memcmp(k->p, lit, n) == 0;
}
#define KEY(k, lit) key_is(k, lit, sizeof(lit) - 1)

static int is_null(const span *v) { return v->n == 4 && memcmp(v->p, "null", 4) == 0; }
static int is_str(const span *v) { return v->n >= 2 && v->p[0] == '"'; }

/* ------------------------------------------------------------- pushing */

/* valid UTF-8 and no escapes: the bytes between the quotes are the value */
static int plain_string(const char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = (unsigned char)p[i];
    if (c < 0x80) {
      if (c == '\\' || c < 0x20) return 0;
      i++;
    } else {
      size_t len, k;
      unsigned cp;
      if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
      else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
      else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
      else return 0;
      if (i + len > n) return 0;
      for (k = 1; k < len; k++) {
        unsigned char cc = (unsigned char)p[i + k];
        if ((cc & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (cc & 0x3F);
      }
      if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
          || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
      i += len;
    }
  }
  return 1;
}

/* push the value of span v; 0 (message pushed instead) if invalid */
static int push_value(lua_State *L, const span *v) {
  if (v->plain == 1 || (v->plain == -1 && plain_string(v->p + 1, v->n - 2))) {
    lua_pushlstring(L, v->p + 1, v->n - 2);
    return 1;
  }
  if (is_str(v) && plain_string(v->p + 1, v->n - 2)) {
    lua_pushlstring(L, v->p + 1, v->n - 2);
    return 1;
  }
  if (v->n > 0 && v->n < 19 && (is_digit(v->p[0]) || v->p[0] == '-')) {
    /* small integers (index, created, token counts) without strtod */
    size_t i = v->p[0] == '-' ? 1 : 0;
    lua_Integer x = 0;
    if (i < v->n && !(v->p[i] == '0' && v->n > i + 1)) {
      for (; i < v->n && is_digit(v->p[i]); i++) x = x * 10 + (v->p[i] - '0');
      if (i == v->n && (v->p[0] != '-' || v->n > 1) && !(v->p[0] == '-' && x == 0)) {
        lua_pushinteger(L, v->p[0] == '-' ? -x : x);
        return 1;
      }
    }
  }
  return oai_json_decode_push(L, v->p, v->n);
}

static void put_int(out *o, lua_Integer k) {   /* a record's kind */
  if (k == K_CONTENT) o->contents++;
  else if (k != K_META) o->other++;
  lua_pushinteger(o->L, k);
  lua_rawseti(o->L, o->t, ++o->n);
}

static void put_top(out *o) {   /* the value on top of the stack */
  lua_rawseti(o->L, o->t, ++o->n);
}

static void put_nil(out *o) {
  lua_pushnil(o->L);
  lua_rawseti(o->L, o->t, ++o->n);
}

/* push span into the next slot; 0 if invalid (error message left on stack) */
static int put_span(out *o, const span *v) {
  if (!push_value(o->L, v)) return 0;
  put_top(o);
  return 1;
}

static int put_lit(out *o, const char *s, size_t n) {
  lua_pushlstring(o->L, s, n);
  put_top(o);
  return 1;
}

/* ------------------------------------------------------------ chunks */

typedef struct extras {
  member m[MAX_EXTRA];
  int n;
} extras;

static int add_extra(extras *x, const member *m) {
  if (is_null(&m->val)) return 1;
  if (x->n == MAX_EXTRA) return 0;
  x->m[x->n++] = *m;
  return 1;
}

static int cmp_key(const member *a, const member *b) {
  size_t n = a->key.n < b->key.n ? a->key.n : b->key.n;
  int c = memcmp(a->key.p, b->key.p, n);
  if (c != 0) return c;
  return a->key.n < b->key.n ? -1 : a->key.n > b->key.n;
}

static void sort_extras(extras *x) {   /* insertion sort: a handful at most */
  int i, j;
  for (i = 1; i < x->n; i++) {
    member t = x->m[i];
    for (j = i; j > 0 && cmp_key(&x->m[j - 1], &t) > 0; j--) x->m[j] = x->m[j - 1];
    x->m[j] = t;
  }
}

/* emit extras of one level: [idx] name value, for each */
static int put_extras(out *o, extras *x, int kind, const span *idx) {
  int i;
  sort_extras(x);
  for (i = 0; i < x->n; i++) {
    put_int(o, kind);
    if (idx != NULL && !put_span(o, idx)) return 0;
    put_lit(o, x->m[i].key.p, x->m[i].key.n);
    if (!put_span(o, &x->m[i].val)) return 0;
  }
  return 1;
}

static int nonempty_str(const span *v) { return is_str(v) && v->n > 2; }

/* one tool-call delta; pos is its 1-based position in the delta's array */
static int put_tool(out *o, const span *idx, int pos, const span *tc) {
  sc s;
  member m;
  int first = 1, r;
  span ti = { NULL, 0, 0 }, id = { NULL, 0, 0 }, type = { NULL, 0, 0 }, fn = { NULL, 0, 0 };
  span name = { NULL, 0, 0 }, args = { NULL, 0, 0 };
  lua_State *L = o->L;
  s.p = tc->p; s.e = tc->p + tc->n;
  while ((r = next_member(&s, &m, &first)) == 1) {
    if (KEY(&m.key, "index")) ti = m.val;
    else if (KEY(&m.key, "id")) id = m.val;
    else if (KEY(&m.key, "type")) type = m.val;
    else if (KEY(&m.key, "function")) fn = m.val;
  }
  if (r == GIVE_UP) return GIVE_UP;
  if (fn.p != NULL && fn.p[0] == '{') {
    first = 1;
    s.p = fn.p; s.e = fn.p + fn.n;
    while ((r = next_member(&s, &m, &first)) == 1) {
      if (KEY(&m.key, "name")) name = m.val;
      else if (KEY(&m.key, "arguments")) args = m.val;
    }
    if (r == GIVE_UP) return GIVE_UP;
  }
  put_int(o, K_TOOL);
  if (!put_span(o, idx)) return 0;
  lua_pushinteger(o->L, pos);
  put_top(o);
  if (ti.p != NULL && (is_digit(ti.p[0]) || ti.p[0] == '-')) { if (!put_span(o, &ti)) return 0; }
  else if (ti.p != NULL && !is_null(&ti)) return GIVE_UP;
  else put_nil(o);
  if (id.p != NULL && nonempty_str(&id)) { if (!put_span(o, &id)) return 0; } else put_nil(o);
  if (type.p != NULL && nonempty_str(&type)) { if (!put_span(o, &type)) return 0; } else put_nil(o);
  if (name.p != NULL && nonempty_str(&name)) { if (!put_span(o, &name)) return 0; } else put_nil(o);
  if (args.p != NULL && is_str(&args)) {
    if (!put_span(o, &args)) return 0;
  } else if (args.p != NULL && args.p[0] == '{') {
    /* arguments sent as a JSON object: re-encoded to the usual string */
    if (!oai_json_decode_push(L, args.p, args.n)) return 0;
    oai_json_encode_push(L, -1);
    lua_remove(L, -2);
    put_top(o);
  } else put_nil(o);
  return 1;
}

/* one choice, parsed in place (s at its '{'): its delta is descended into
   rather than skipped and scanned again */
static int put_choice(out *o, sc *sp, int pos) {
  sc *s = sp;
  member m;
  int first = 1, r;
  span key;
  span idx = { NULL, 0, 0 }, finish = { NULL, 0, 0 }, logprobs = { NULL, 0, 0 };
  span role = { NULL, 0, 0 }, content = { NULL, 0, 0 }, rc = { NULL, 0, 0 }, rs = { NULL, 0, 0 };
  span refusal = { NULL, 0, 0 }, tools = { NULL, 0, 0 };
  int has_delta = 0;
  extras cx, dx;
  char posbuf[16];
  cx.n = dx.n = 0;
  while ((r = next_key(s, &key, &first)) == 1) {
    if (KEY(&key, "delta")) {
      ws(s);
      if (s->p < s->e && *s->p == '{') {
        int dfirst = 1;
        has_delta = 1;
        while ((r = next_member(s, &m, &dfirst)) == 1) {
          if (KEY(&m.key, "content")) content = m.val;
          else if (KEY(&m.key, "role")) role = m.val;
          else if (KEY(&m.key, "reasoning_content")) rc = m.val;
          else if (KEY(&m.key, "reasoning")) rs = m.val;
          else if (KEY(&m.key, "refusal")) refusal = m.val;
          else if (KEY(&m.key, "tool_calls")) tools = m.val;
          else if (!add_extra(&dx, &m)) return GIVE_UP;
        }
        if (r == GIVE_UP) return GIVE_UP;
      } else {
        span v;
        if (!skip_value(s, &v, 1) || !is_null(&v)) return GIVE_UP;
      }
    } else {
      m.key = key;
      if (!skip_value(s, &m.val, 1)) return GIVE_UP;
      if (KEY(&key, "index")) idx = m.val;
      else if (KEY(&key, "finish_reason")) finish = m.val;
      else if (KEY(&key, "logprobs")) logprobs = m.val;
      else if (!add_extra(&cx, &m)) return GIVE_UP;
    }
    if (after_value(s) != 1) return GIVE_UP;
  }
  if (r == GIVE_UP) return GIVE_UP;
  if (idx.p == NULL || !(is_digit(idx.p[0]) || idx.p[0] == '-')) {
    /* no numeric index: the position (0-based), as the generic path does */
    idx.n = (size_t)sprintf(posbuf, "%d", pos - 1);
    idx.p = posbuf;
    idx.plain = 0;
  }
  if (has_delta) {
    if (role.p && nonempty_str(&role)) {
      put_int(o, K_ROLE);
      if (!put_span(o, &idx) || !put_span(o, &role)) return 0;
    }
    if (rc.p && is_str(&rc)) {
      put_int(o, K_REASONING);
      if (!put_span(o, &idx) || !put_span(o, &rc)) return 0;
      put_lit(o, "reasoning_content", 17);
    }
    if (rs.p && is_str(&rs)) {
      put_int(o, K_REASONING);
      if (!put_span(o, &idx) || !put_span(o, &rs)) return 0;
      put_lit(o, "reasoning", 9);
    }
    if (content.p && is_str(&content)) {
      put_int(o, K_CONTENT);
      if (!put_span(o, &idx) || !put_span(o, &content)) return 0;
      o->cp = content.p; o->cn = content.n;
      o->ip = idx.p == posbuf ? NULL : idx.p; o->in = idx.n;
    }
    if (refusal.p && is_str(&refusal)) {
      put_int(o, K_REFUSAL);
      if (!put_span(o, &idx) || !put_span(o, &refusal)) return 0;
    }
    if (tools.p && tools.p[0] == '[') {
      sc t;
      span tc;
      int tpos = 0;
      t.p = tools.p + 1; t.e = tools.p + tools.n;
      ws(&t);
      if (t.p < t.e && *t.p == ']') t.p++;
      else for (;;) {
        if (!skip_value(&t, &tc, 1)) return GIVE_UP;
        tpos++;
        if (tc.p[0] != '{') return GIVE_UP;
        r = put_tool(o, &idx, tpos, &tc);
        if (r != 1) return r;
        ws(&t);
        if (t.p < t.e && *t.p == ',') { t.p++; continue; }
        if (t.p < t.e && *t.p == ']') break;
        return GIVE_UP;
      }
    } else if (tools.p && !is_null(&tools)) return GIVE_UP;
    if (!put_extras(o, &dx, K_DELTA_EXTRA, &idx)) return 0;
  }
  if (logprobs.p && !is_null(&logprobs)) {
    put_int(o, K_LOGPROBS);
    if (!put_span(o, &idx) || !put_span(o, &logprobs)) return 0;
  }
  if (!put_extras(o, &cx, K_CHOICE_EXTRA, &idx)) return 0;
  if (finish.p && nonempty_str(&finish)) {
    put_int(o, K_FINISH);
    if (!put_span(o, &idx) || !put_span(o, &finish)) return 0;
  }
  return 1;
}

static unsigned long long fnv(unsigned long long h, const span *v) {
  size_t i;
  if (v->p == NULL) return h * 1099511628211ULL;
  for (i = 0; i < v->n; i++) h = (h ^ (unsigned char)v->p[i]) * 1099511628211ULL;
  return (h ^ 0xff) * 1099511628211ULL;
}

/* the fast path over one chunk: 1 ok, 0 invalid value (message on the
   stack), GIVE_UP for the generic path */
static int fast_chunk(out *o, const char *d, size_t len, unsigned long long *meta) {
  sc s;
  member m;
  span key;
  int first = 1, r, start = o->n;
  span id = { NULL, 0, 0 }, object = { NULL, 0, 0 }, created = { NULL, 0, 0 }, model = { NULL, 0, 0 };
  span fp = { NULL, 0, 0 }, usage = { NULL, 0, 0 }, err = { NULL, 0, 0 };
  extras tx;
  tx.n = 0;
  s.p = d; s.e = d + len;
  while ((r = next_key(&s, &key, &first)) == 1) {
    if (KEY(&key, "choices")) {
      /* descended into, each choice emitted as it ends */
      ws(&s);
      if (s.p < s.e && *s.p == '[') {
        int pos = 0;
        s.p++;
        ws(&s);
        if (s.p < s.e && *s.p == ']') s.p++;
        else for (;;) {
          ws(&s);
          if (s.p >= s.e || *s.p != '{') return GIVE_UP;
          r = put_choice(o, &s, ++pos);
          if (r != 1) return r;
          ws(&s);
          if (s.p < s.e && *s.p == ',') { s.p++; continue; }
          if (s.p < s.e && *s.p == ']') { s.p++; break; }
          return GIVE_UP;
        }
      } else {
        span v;
        if (!skip_value(&s, &v, 1) || !is_null(&v)) return GIVE_UP;
      }
    } else {
      m.key = key;
      if (!skip_value(&s, &m.val, 1)) return GIVE_UP;
      if (KEY(&key, "id")) id = m.val;
      else if (KEY(&key, "object")) object = m.val;
      else if (KEY(&key, "created")) created = m.val;
      else if (KEY(&key, "model")) model = m.val;
      else if (KEY(&key, "system_fingerprint")) fp = m.val;
      else if (KEY(&key, "usage")) usage = m.val;
      else if (KEY(&key, "error")) err = m.val;
      else if (!add_extra(&tx, &m)) return GIVE_UP;
    }
    if (after_value(&s) != 1) return GIVE_UP;
  }
  if (r == GIVE_UP) return GIVE_UP;
  ws(&s);
  if (s.p != s.e) return GIVE_UP;
  if (err.p != NULL && !is_null(&err)) {
    o->n = start;   /* an error chunk is only its error */
    put_int(o, K_ERROR);
    if (!put_span(o, &err)) return 0;
    put_lit(o, d, len);
    return 1;
  }
  if (id.p || created.p || model.p || fp.p) {
    /* the accumulator keeps the first id, created and model and the latest
       fingerprint: META goes out for the first chunk that has them and
       again only when the fingerprint changes (hashing just that) */
    unsigned long long h = fnv(14695981039346656037ULL, &fp) | 1u;
    if (h != *meta) {
      const span *vals[5];
      int i;
      vals[0] = &id; vals[1] = &created; vals[2] = &model; vals[3] = &fp; vals[4] = &object;
      *meta = h;
      put_int(o, K_META);
      for (i = 0; i < 5; i++) {
        if (vals[i]->p == NULL || is_null(vals[i])) put_nil(o);
        else if (!put_span(o, vals[i])) return 0;
      }
    }
  }
  if (usage.p != NULL && usage.p[0] == '{') {
    put_int(o, K_USAGE);
    if (!put_span(o, &usage)) return 0;
  } else if (usage.p != NULL && !is_null(&usage)) return GIVE_UP;
  return put_extras(o, &tx, K_TOP_EXTRA, NULL);
}

/* A chunk equal to the template outside its content string has the same
   records as the template's chunk with this text: CONTENT idx text.  (The
   metadata, and so the META decision, are in the equal bytes.)  1 when
   put, 0 when the chunk differs or its text needs the full path. */
static int same_shape(out *o, const oai_chunk_state *st, const char *d, size_t len) {
  size_t tail = st->len - st->ce, ce;
  sc s;
  span idx, text;
  if (len < st->cs + 2 + tail || memcmp(d, st->tpl, st->cs + 1) != 0) return 0;
  s.p = d + st->cs; s.e = d + len - tail;
  if (!skip_string(&s)) return 0;
  ce = (size_t)(s.p - d);
  if (ce + tail != len || memcmp(s.p, st->tpl + st->ce, tail) != 0) return 0;
  idx.p = d + (st->is < st->cs ? st->is : st->is - st->ce + ce);
  idx.n = st->in;
  idx.plain = 0;
  text.p = d + st->cs; text.n = ce - st->cs; text.plain = -1;
  put_int(o, K_CONTENT);
  if (!put_span(o, &idx) || !put_span(o, &text)) return 0;
  return 1;
}

/* after the full path: keep this chunk as the template if its only
   records were one CONTENT (and perhaps META) */
static void keep_template(oai_chunk_state *st, const out *o, const char *d, size_t len) {
  st->len = 0;
  if (o->other != 0 || o->contents != 1 || o->ip == NULL || len > OAI_CHUNK_TEMPLATE_MAX) return;
  if (len > st->tpl_cap) {
    /* no template (the full path for every chunk) if memory is short */
    char *p = (char *)realloc(st->tpl, len);
    if (p == NULL) return;
    st->tpl = p;
    st->tpl_cap = len;
  }
  memcpy(st->tpl, d, len);
  st->cs = (size_t)(o->cp - d);
  st->ce = st->cs + o->cn;
  st->is = (size_t)(o->ip - d);
  st->in = o->in;
  st->len = len;
}

void oai_chunk_free(oai_chunk_state *st) {
  free(st->tpl);
  st->tpl = NULL;
  st->len = st->tpl_cap = 0;
}

/* Append the records of one event to the table at index t (n slots used);
   returns 1 when the stream is over ([DONE], an error or a bad chunk). */
int oai_chunk_records(lua_State *L, int t, int *n, const char *type, size_t type_len,
                      const char *d, size_t len, oai_chunk_state *st, int raw) {
  out o;
  const char *p = d, *e = d + len;
  int start = *n, r;
  o.L = L; o.t = t; o.n = *n;
  o.other = o.contents = 0;
  o.cp = o.ip = NULL;
  o.cn = o.in = 0;
  luaL_checkstack(L, 8, "oai: records");
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) e--;
  if (type_len == 5 && memcmp(type, "error", 5) == 0) {
    put_int(&o, K_ERROR);
    if (oai_json_decode_push(L, d, len) && lua_istable(L, -1)) {
      lua_getfield(L, -1, "error");
      if (lua_istable(L, -1)) lua_remove(L, -2);
      else lua_pop(L, 1);
    } else {
      lua_pop(L, 1);
      lua_createtable(L, 0, 1);
      lua_pushlstring(L, d, len);
      lua_setfield(L, -2, "message");
    }
    put_top(&o);
    put_lit(&o, d, len);
    *n = o.n;
    return 1;
  }
  if (p == e || *p == ':') { *n = o.n; return 0; }    /* empty data, "data: : keepalive" */
  if (e - p == 6 && memcmp(p, "[DONE]", 6) == 0) {
    put_int(&o, K_DONE);
    *n = o.n;
    return 1;
  }
  if (!raw) {
    int top = lua_gettop(L);
    if (st->len != 0) {
      if (same_shape(&o, st, d, len)) { *n = o.n; return 0; }
      lua_settop(L, top);
      o.n = start;
      o.other = o.contents = 0;
    }
    r = fast_chunk(&o, d, len, &st->meta);
    if (r == 1) {
      keep_template(st, &o, d, len);
      *n = o.n;
      return 0;
    }
    st->len = 0;
    lua_settop(L, top);
    o.n = start;   /* drop this chunk's records: it goes the generic way */
    if (r == 0) {
      /* a value failed the strict decoder: say which, from a full decode */
      if (oai_json_decode_push(L, d, len)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "invalid value in chunk");
      }
      put_int(&o, K_BAD);
      put_lit(&o, d, len);
      lua_pushvalue(L, -2);
      put_top(&o);
      lua_settop(L, top);
      *n = o.n;
      return 1;
    }
  }
  if (!oai_json_decode_push(L, d, len)) {
    put_int(&o, K_BAD);
    put_lit(&o, d, len);
    lua_pushvalue(L, -2);
    put_top(&o);
    lua_pop(L, 1);
    *n = o.n;
    return 1;
  }
  put_int(&o, K_RAW);
  put_top(&o);
  *n = o.n;
  return 0;
}
