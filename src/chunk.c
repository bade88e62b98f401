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
**
** Values are decoded leniently (json.c's OAI_JSON_LENIENT): servers send
** invalid UTF-8 and split a surrogate pair over two chunks, and one bad
** character must not end the stream.  Invalid UTF-8 (each maximal subpart)
** and lone surrogates become U+FFFD, in keys too; a high half ending one
** text delta (content, reasoning, refusal, tool arguments) waits in the
** state for the low half starting the next delta of the same field, choice
** and tool call, and the whole character goes out with the second piece
** (fix_text); a half still waiting at [DONE] goes out as U+FFFD.  The fast
** path and the generic path (fix_table, on the decoded chunk) apply the same
** rules, and for duplicate keys both keep the last, as JSON.parse does.
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
  oai_chunk_state *st;
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

/* push the value of span v; 0 (message pushed instead) if invalid.  flags:
   OAI_JSON_MARK_EDGES for text fields */
static int push_value(lua_State *L, const span *v, int flags) {
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
  return oai_json_decode_push_ex(L, v->p, v->n, OAI_JSON_LENIENT | flags, NULL);
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
  if (!push_value(o->L, v, 0)) return 0;
  put_top(o);
  return 1;
}

static int put_lit(out *o, const char *s, size_t n) {
  lua_pushlstring(o->L, s, n);
  put_top(o);
  return 1;
}

/* ------------------------------------------------- split surrogate pairs */

/* the text fields whose halves are joined across chunks; F_NONE: a field
   whose halves cannot be (a tool call without an index) */
enum { F_NONE, F_CONTENT, F_REASONING_CONTENT, F_REASONING, F_REFUSAL, F_ARGS };

#define FFFD "\xEF\xBF\xBD"

/* a mark (json.c: a lone half's WTF-8 form) of a half in [lo, hi] at p */
static int is_mark(const unsigned char *p, unsigned lo, unsigned hi) {
  return p[0] == 0xED && p[1] >= lo && p[1] <= hi;
}
#define HIGH_MARK(p) is_mark(p, 0xA0, 0xAF)
#define LOW_MARK(p) is_mark(p, 0xB0, 0xBF)

static unsigned mark_unit(const unsigned char *p) {
  return 0xD000u | ((unsigned)(p[1] & 0x3F) << 6) | (unsigned)(p[2] & 0x3F);
}

/* the text on top of the stack, of field f in choice idx (tool call tool):
   a low half at its start joins the waiting high half (else U+FFFD); a
   waiting half without its low half becomes U+FFFD before the text; a high
   half at its end waits (U+FFFD if it cannot).  Texts without marks and
   with no half waiting are left alone (the hot path: two byte tests). */
static void fix_text(lua_State *L, oai_chunk_state *st, int f, double idx, double tool) {
  size_t n, a = 0, b;
  const unsigned char *s = (const unsigned char *)lua_tolstring(L, -1, &n);
  int i, h = -1, head, tail;
  luaL_Buffer B;
  if (n == 0) return;   /* an empty delta neither joins nor ends a half */
  head = n >= 3 && LOW_MARK(s);
  tail = n >= 3 && HIGH_MARK(s + n - 3) && (!head || n >= 6);
  if (f != F_NONE)
    for (i = 0; i < st->nhalf; i++)
      if (st->half[i].field == f && st->half[i].idx == idx && st->half[i].tool == tool) { h = i; break; }
  if (h < 0 && !head && !tail) return;
  b = tail ? n - 3 : n;
  luaL_buffinit(L, &B);   /* the text stays below the buffer: s stays valid */
  if (head) {
    a = 3;
    if (h >= 0) {
      unsigned cp = 0x10000u + ((st->half[h].hi - 0xD800u) << 10) + (mark_unit(s) - 0xDC00u);
      char u[4];
      u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
      u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F));
      luaL_addlstring(&B, u, 4);
    } else luaL_addlstring(&B, FFFD, 3);
  } else if (h >= 0) luaL_addlstring(&B, FFFD, 3);
  if (h >= 0) st->half[h] = st->half[--st->nhalf];
  luaL_addlstring(&B, (const char *)s + a, b - a);
  if (tail) {
    if (f != F_NONE && st->nhalf < OAI_CHUNK_HALVES) {
      oai_half *w = &st->half[st->nhalf++];
      w->field = f; w->idx = idx; w->tool = tool;
      w->hi = mark_unit(s + n - 3);
    } else luaL_addlstring(&B, FFFD, 3);
  }
  luaL_pushresult(&B);
  lua_remove(L, -2);
}

/* every mark left in the string on top (outside the text fields) ->
   U+FFFD; 1 if the string was replaced */
static int unmark_string(lua_State *L) {
  size_t n, i, run = 0;
  const unsigned char *s = (const unsigned char *)lua_tolstring(L, -1, &n);
  luaL_Buffer B;
  for (i = 0; i + 2 < n; i++) if (is_mark(s + i, 0xA0, 0xBF)) break;
  if (i + 2 >= n) return 0;
  luaL_buffinit(L, &B);
  for (; i + 2 < n; i++) {
    if (is_mark(s + i, 0xA0, 0xBF)) {
      luaL_addlstring(&B, (const char *)s + run, i - run);
      luaL_addlstring(&B, FFFD, 3);
      run = i + 3;
      i += 2;
    }
  }
  luaL_addlstring(&B, (const char *)s + run, n - run);
  luaL_pushresult(&B);
  lua_remove(L, -2);
  return 1;
}

/* unmark_string over every string value in the table on top (keys never
   hold marks: json.c replaces lone halves in keys at once) */
static void unmark_table(lua_State *L) {
  luaL_checkstack(L, 6, "oai: records");
  lua_pushnil(L);
  while (lua_next(L, -2)) {          /* t k v */
    if (lua_type(L, -1) == LUA_TTABLE) unmark_table(L);
    else if (lua_type(L, -1) == LUA_TSTRING && unmark_string(L)) {
      lua_pushvalue(L, -2);          /* t k v' k */
      lua_insert(L, -2);             /* t k k v' */
      lua_rawset(L, -4);             /* t k: an existing key, so next() goes on */
      continue;
    }
    lua_pop(L, 1);
  }
}

/* t[name] on top if it is of type ty (1), else nothing pushed (0) */
static int raw_field(lua_State *L, int t, const char *name, int ty) {
  lua_pushstring(L, name);
  lua_rawget(L, t);
  if (lua_type(L, -1) == ty) return 1;
  lua_pop(L, 1);
  return 0;
}

/* t[name], a string, through fix_text */
static void fix_field(lua_State *L, oai_chunk_state *st, int t, const char *name, int f,
                      double idx, double tool) {
  if (!raw_field(L, t, name, LUA_TSTRING)) return;
  fix_text(L, st, f, idx, tool);
  lua_pushstring(L, name);
  lua_insert(L, -2);
  lua_rawset(L, t);
}

/* the generic path's version of the text rules: the decoded chunk on top,
   its text fields found where records_from_chunk (stream.lua) finds them;
   then (marks > 0) any other lone half -> U+FFFD */
static void fix_table(lua_State *L, oai_chunk_state *st, int marks) {
  int c = lua_gettop(L);
  luaL_checkstack(L, 12, "oai: records");
  if (lua_istable(L, c) && raw_field(L, c, "choices", LUA_TTABLE)) {
    int chs = c + 1, pos, npos = (int)lua_rawlen(L, chs);
    for (pos = 1; pos <= npos; pos++) {
      int ch = c + 2, d;
      double idx = pos - 1;
      lua_rawgeti(L, chs, pos);
      if (lua_istable(L, ch)) {
        if (raw_field(L, ch, "index", LUA_TNUMBER)) { idx = (double)lua_tonumber(L, -1); lua_pop(L, 1); }
        if (raw_field(L, ch, "delta", LUA_TTABLE)) {
          d = ch + 1;
          fix_field(L, st, d, "reasoning_content", F_REASONING_CONTENT, idx, -1);
          fix_field(L, st, d, "reasoning", F_REASONING, idx, -1);
          fix_field(L, st, d, "content", F_CONTENT, idx, -1);
          fix_field(L, st, d, "refusal", F_REFUSAL, idx, -1);
          if (raw_field(L, d, "tool_calls", LUA_TTABLE)) {
            int tcs = d + 1, tp, ntp = (int)lua_rawlen(L, tcs);
            for (tp = 1; tp <= ntp; tp++) {
              int tc = tcs + 1;
              lua_rawgeti(L, tcs, tp);
              if (lua_istable(L, tc) && raw_field(L, tc, "function", LUA_TTABLE)) {
                double ti = -1;
                int f = F_NONE;
                if (raw_field(L, tc, "index", LUA_TNUMBER)) {
                  ti = (double)lua_tonumber(L, -1);
                  if (ti != -1) f = F_ARGS;   /* as put_text: -1 stands for none */
                  lua_pop(L, 1);
                }
                fix_field(L, st, tc + 1, "arguments", f, idx, ti);
              }
              lua_settop(L, tcs);
            }
          }
        }
      }
      lua_settop(L, chs);
    }
  }
  lua_settop(L, c);
  if (marks > 0 && lua_istable(L, c)) unmark_table(L);
  else if (marks > 0 && lua_type(L, c) == LUA_TSTRING) unmark_string(L);
}

/* a choice or tool-call index for fix_text */
static double span_number(lua_State *L, const out *o, int slot) {
  double x;
  lua_rawgeti(L, o->t, slot);
  x = lua_type(L, -1) == LUA_TNUMBER ? (double)lua_tonumber(L, -1) : -1;
  lua_pop(L, 1);
  return x;
}

/* a text field's value into the next slot, through fix_text; idx_slot is
   the record's choice index slot (tool_slot: its tool-call index, or 0) */
static int put_text(out *o, const span *v, int f, int idx_slot, int tool_slot) {
  lua_State *L = o->L;
  size_t n;
  const unsigned char *s;
  if (!push_value(L, v, OAI_JSON_MARK_EDGES)) return 0;
  s = (const unsigned char *)lua_tolstring(L, -1, &n);
  if (o->st->nhalf > 0 || (n >= 3 && (s[0] == 0xED || s[n - 3] == 0xED))) {
    double tool = -1;
    if (tool_slot != 0) {
      tool = span_number(L, o, tool_slot);
      if (tool == -1) f = F_NONE;   /* no tool-call index: nothing to join by */
    }
    fix_text(L, o->st, f, span_number(L, o, idx_slot), tool);
  }
  put_top(o);
  return 1;
}

/* an index as Lua would have decoded it: an integer when it is one */
static void push_index(lua_State *L, double x) {
  if (x >= -2147483647.0 && x <= 2147483647.0 && x == (double)(int)x)
    lua_pushinteger(L, (lua_Integer)(int)x);
  else lua_pushnumber(L, (lua_Number)x);
}

/* the halves still waiting at [DONE], each as one U+FFFD of its field:
   records, or (raw) one chunk table per half */
static void flush_halves(out *o, int raw) {
  lua_State *L = o->L;
  oai_chunk_state *st = o->st;
  int i;
  static const char *const names[] = { "", "content", "reasoning_content", "reasoning", "refusal", "arguments" };
  for (i = 0; i < st->nhalf; i++) {
    const oai_half *w = &st->half[i];
    if (raw) {
      lua_createtable(L, 0, 1);                 /* chunk */
      lua_createtable(L, 1, 0);                 /* chunk choices */
      lua_createtable(L, 0, 2);                 /* chunk choices choice */
      push_index(L, w->idx);
      lua_setfield(L, -2, "index");
      lua_createtable(L, 0, 1);                 /* ... choice delta */
      if (w->field == F_ARGS) {
        lua_createtable(L, 1, 0);               /* ... delta tool_calls */
        lua_createtable(L, 0, 2);               /* ... tool_calls call */
        push_index(L, w->tool);
        lua_setfield(L, -2, "index");
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, FFFD);
        lua_setfield(L, -2, "arguments");
        lua_setfield(L, -2, "function");
        lua_rawseti(L, -2, 1);
        lua_setfield(L, -2, "tool_calls");
      } else {
        lua_pushliteral(L, FFFD);
        lua_setfield(L, -2, names[w->field]);
      }
      lua_setfield(L, -2, "delta");
      lua_rawseti(L, -2, 1);
      lua_setfield(L, -2, "choices");
      put_int(o, K_RAW);
      put_top(o);
      continue;
    }
    put_int(o, w->field == F_CONTENT ? K_CONTENT : w->field == F_REFUSAL ? K_REFUSAL
               : w->field == F_ARGS ? K_TOOL : K_REASONING);
    push_index(L, w->idx);
    put_top(o);
    if (w->field == F_ARGS) {
      lua_pushinteger(L, 1);
      put_top(o);
      push_index(L, w->tool);
      put_top(o);
      put_nil(o); put_nil(o); put_nil(o);
    }
    put_lit(o, FFFD, 3);
    if (w->field == F_REASONING_CONTENT || w->field == F_REASONING)
      put_lit(o, names[w->field], strlen(names[w->field]));
  }
  st->nhalf = 0;
}

/* ------------------------------------------------------------ chunks */

typedef struct extras {
  member m[MAX_EXTRA];
  int n;
} extras;

/* 0 (give up) when full, or for a key that is not valid UTF-8: the
   generic path decodes the chunk, so the key gets json.c's lenient rule
   (each invalid subpart -> U+FFFD) there, as everywhere in a stream.  Only
   extras' keys are handed out as they are; known keys are ASCII.  Null
   values are kept (not handed out) so that a duplicate key is seen. */
static int add_extra(extras *x, const member *m) {
  if (x->n == MAX_EXTRA || !plain_string(m->key.p, m->key.n)) return 0;
  x->m[x->n++] = *m;
  return 1;
}

static int cmp_key(const member *a, const member *b) {
  size_t n = a->key.n < b->key.n ? a->key.n : b->key.n;
  int c = memcmp(a->key.p, b->key.p, n);
  if (c != 0) return c;
  return a->key.n < b->key.n ? -1 : a->key.n > b->key.n;
}

/* insertion sort: a handful at most; 0 if a key is there twice (the
   generic path keeps the last of duplicate keys, as JSON.parse does) */
static int sort_extras(extras *x) {
  int i, j;
  for (i = 1; i < x->n; i++) {
    member t = x->m[i];
    for (j = i; j > 0 && cmp_key(&x->m[j - 1], &t) > 0; j--) x->m[j] = x->m[j - 1];
    if (j > 0 && cmp_key(&x->m[j - 1], &t) == 0) return 0;
    x->m[j] = t;
  }
  return 1;
}

/* emit extras of one level: [idx] name value, for each; GIVE_UP on a
   duplicate key */
static int put_extras(out *o, extras *x, int kind, const span *idx) {
  int i;
  if (!sort_extras(x)) return GIVE_UP;
  for (i = 0; i < x->n; i++) {
    if (is_null(&x->m[i].val)) continue;
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
  int first = 1, r, k;
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
  k = o->n;   /* kind; idx, pos and the tool-call index follow */
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
    if (!put_text(o, &args, F_ARGS, k + 1, k + 3)) return 0;
  } else if (args.p != NULL && args.p[0] == '{') {
    /* arguments sent as a JSON object: re-encoded to the usual string */
    if (!oai_json_decode_push_ex(L, args.p, args.n, OAI_JSON_LENIENT, NULL)) return 0;
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
  int has_delta = 0, seen_delta = 0;
  extras cx, dx;
  char posbuf[16];
  cx.n = dx.n = 0;
  while ((r = next_key(s, &key, &first)) == 1) {
    if (KEY(&key, "delta")) {
      /* a second delta replaces the first (last wins): the generic path */
      if (seen_delta++) return GIVE_UP;
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
      if (!put_span(o, &idx) || !put_text(o, &rc, F_REASONING_CONTENT, o->n, 0)) return 0;
      put_lit(o, "reasoning_content", 17);
    }
    if (rs.p && is_str(&rs)) {
      put_int(o, K_REASONING);
      if (!put_span(o, &idx) || !put_text(o, &rs, F_REASONING, o->n, 0)) return 0;
      put_lit(o, "reasoning", 9);
    }
    if (content.p && is_str(&content)) {
      put_int(o, K_CONTENT);
      if (!put_span(o, &idx) || !put_text(o, &content, F_CONTENT, o->n, 0)) return 0;
      o->cp = content.p; o->cn = content.n;
      o->ip = idx.p == posbuf ? NULL : idx.p; o->in = idx.n;
    }
    if (refusal.p && is_str(&refusal)) {
      put_int(o, K_REFUSAL);
      if (!put_span(o, &idx) || !put_text(o, &refusal, F_REFUSAL, o->n, 0)) return 0;
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
    if ((r = put_extras(o, &dx, K_DELTA_EXTRA, &idx)) != 1) return r;
  }
  if (logprobs.p && !is_null(&logprobs)) {
    put_int(o, K_LOGPROBS);
    if (!put_span(o, &idx) || !put_span(o, &logprobs)) return 0;
  }
  if ((r = put_extras(o, &cx, K_CHOICE_EXTRA, &idx)) != 1) return r;
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
  int first = 1, r, start = o->n, seen_choices = 0;
  span id = { NULL, 0, 0 }, object = { NULL, 0, 0 }, created = { NULL, 0, 0 }, model = { NULL, 0, 0 };
  span fp = { NULL, 0, 0 }, usage = { NULL, 0, 0 }, err = { NULL, 0, 0 };
  extras tx;
  tx.n = 0;
  s.p = d; s.e = d + len;
  while ((r = next_key(&s, &key, &first)) == 1) {
    if (KEY(&key, "choices")) {
      /* descended into, each choice emitted as it ends; a second choices
         replaces the first (last wins): the generic path */
      if (seen_choices++) return GIVE_UP;
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
  if (!put_span(o, &idx) || !put_text(o, &text, F_CONTENT, o->n, 0)) return 0;
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

/* The records of the halves still waiting when a stream's body ended
   without [DONE] (each one U+FFFD of its field, as at [DONE]); appended to
   the table at index t, n slots used. */
void oai_chunk_flush(lua_State *L, int t, int *n, oai_chunk_state *st, int raw) {
  out o;
  if (st->nhalf == 0) return;
  o.L = L; o.t = t; o.n = *n; o.st = st;
  o.other = o.contents = 0;
  o.cp = o.ip = NULL;
  o.cn = o.in = 0;
  luaL_checkstack(L, 8, "oai: records");
  flush_halves(&o, raw);
  *n = o.n;
}

void oai_chunk_free(oai_chunk_state *st) {
  free(st->tpl);
  st->tpl = NULL;
  st->len = st->tpl_cap = 0;
  st->nhalf = 0;
}

/* Append the records of one event to the table at index t (n slots used);
   returns 1 when the stream is over ([DONE], an error or a bad chunk). */
int oai_chunk_records(lua_State *L, int t, int *n, const char *type, size_t type_len,
                      const char *d, size_t len, oai_chunk_state *st, int raw) {
  out o;
  const char *p = d, *e = d + len;
  int start = *n, r, marks = 0;
  o.L = L; o.t = t; o.n = *n; o.st = st;
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
    if (st->nhalf > 0) flush_halves(&o, raw);
    put_int(&o, K_DONE);
    *n = o.n;
    return 1;
  }
  if (!raw) {
    int top = lua_gettop(L), nhalf = st->nhalf;
    oai_half saved[OAI_CHUNK_HALVES];
    /* fix_text may change the waiting halves before the fast path gives up:
       the generic path must start from the same state (a copy only while
       halves wait, which is rare) */
    if (nhalf > 0) memcpy(saved, st->half, sizeof saved);
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
    st->nhalf = nhalf;
    if (nhalf > 0) memcpy(st->half, saved, sizeof saved);
    if (r == 0) {
      /* a value failed the decoder: say which, from a full decode */
      if (oai_json_decode_push_ex(L, d, len, OAI_JSON_LENIENT, NULL)) {
        lua_pop(L, 1);
        lua_pushliteral(L, "invalid value in chunk");
      }
      /* the message on top */
      put_int(&o, K_BAD);
      put_lit(&o, d, len);
      put_top(&o);
      lua_settop(L, top);
      *n = o.n;
      return 1;
    }
  }
  if (!oai_json_decode_push_ex(L, d, len, OAI_JSON_LENIENT | OAI_JSON_MARK_EDGES, &marks)) {
    /* the decoder's message (reason and byte offset) on top */
    put_int(&o, K_BAD);
    put_lit(&o, d, len);
    put_top(&o);
    *n = o.n;
    return 1;
  }
  if (marks > 0 || st->nhalf > 0) fix_table(L, st, marks);
  put_int(&o, K_RAW);
  put_top(&o);
  *n = o.n;
  return 0;
}
