/*
** chunk.c: the streaming hot path.  One chat.completion.chunk (the data of
** one SSE event) -> the few values Lua needs, appended as records to a flat
** array, without building the chunk table.
**
** A record is a kind followed by a fixed number of slots, as chunk.h
** lists them (lua/oai/stream.lua also has a generic path,
** records_from_chunk, that builds the same records from a decoded chunk).
** The scanner (scan.c) only finds the spans of values; every value handed
** to Lua is either a plain string pushed straight from the input (no escapes,
** valid UTF-8) or decoded by the strict decoder of json_decode.c.  Shapes it does
** not expect (escaped keys, odd types, deep nesting) make it give up on the
** chunk, which is then decoded whole and handed over as a RAW record for
** the generic path: never a wrong or lost value.
**
** Per stream (oai_chunk_state), the last chunk whose only record was one
** CONTENT is kept as a template: a chunk equal to it outside the content
** string has the same records with its own text (same_shape), found
** without scanning the rest again.
**
** Values are decoded leniently (json_decode.c's OAI_JSON_LENIENT) and text values
** go through text.c's rules (split surrogate pairs joined, lone halves
** U+FFFD), on the fast path and the generic path alike; for duplicate keys
** both keep the last, as JSON.parse does.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "json.h"
#include "scan.h"

#define MAX_EXTRA 16

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

/* ------------------------------------------------------------- pushing */

/* push the value of span v; 0 (message pushed instead) if invalid.  flags:
   OAI_JSON_MARK_EDGES for text fields */
static int push_value(lua_State *L, const span *v, int flags) {
  if (v->plain == 1 || (v->plain == -1 && scan_plain(v->p + 1, v->n - 2))) {
    lua_pushlstring(L, v->p + 1, v->n - 2);
    return 1;
  }
  if (is_str(v) && scan_plain(v->p + 1, v->n - 2)) {
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
  if (k == OAI_K_CONTENT) o->contents++;
  else if (k != OAI_K_META) o->other++;
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
    oai_text_fix(L, o->st, f, span_number(L, o, idx_slot), tool);
  }
  put_top(o);
  return 1;
}

/* an index as Lua would have decoded it: an integer when it is one */
/* ------------------------------------------------------------ chunks */

typedef struct extras {
  member m[MAX_EXTRA];
  int n;
} extras;

/* 0 (give up) when full, or for a key that is not valid UTF-8: the
   generic path decodes the chunk, so the key gets json_decode.c's lenient rule
   (each invalid subpart -> U+FFFD) there, as everywhere in a stream.  Only
   extras' keys are handed out as they are; known keys are ASCII.  Null
   values are kept (not handed out) so that a duplicate key is seen. */
static int add_extra(extras *x, const member *m) {
  if (x->n == MAX_EXTRA || !scan_plain(m->key.p, m->key.n)) return 0;
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
  while ((r = scan_member(&s, &m, &first)) == 1) {
    if (KEY(&m.key, "index")) ti = m.val;
    else if (KEY(&m.key, "id")) id = m.val;
    else if (KEY(&m.key, "type")) type = m.val;
    else if (KEY(&m.key, "function")) fn = m.val;
  }
  if (r == GIVE_UP) return GIVE_UP;
  if (fn.p != NULL && fn.p[0] == '{') {
    first = 1;
    s.p = fn.p; s.e = fn.p + fn.n;
    while ((r = scan_member(&s, &m, &first)) == 1) {
      if (KEY(&m.key, "name")) name = m.val;
      else if (KEY(&m.key, "arguments")) args = m.val;
    }
    if (r == GIVE_UP) return GIVE_UP;
  }
  put_int(o, OAI_K_TOOL);
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
  while ((r = scan_key(s, &key, &first)) == 1) {
    if (KEY(&key, "delta")) {
      /* a second delta replaces the first (last wins): the generic path */
      if (seen_delta++) return GIVE_UP;
      ws(s);
      if (s->p < s->e && *s->p == '{') {
        int dfirst = 1;
        has_delta = 1;
        while ((r = scan_member(s, &m, &dfirst)) == 1) {
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
        if (!scan_value(s, &v, 1) || !is_null(&v)) return GIVE_UP;
      }
    } else {
      m.key = key;
      if (!scan_value(s, &m.val, 1)) return GIVE_UP;
      if (KEY(&key, "index")) idx = m.val;
      else if (KEY(&key, "finish_reason")) finish = m.val;
      else if (KEY(&key, "logprobs")) logprobs = m.val;
      else if (!add_extra(&cx, &m)) return GIVE_UP;
    }
    if (scan_after(s) != 1) return GIVE_UP;
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
      put_int(o, OAI_K_ROLE);
      if (!put_span(o, &idx) || !put_span(o, &role)) return 0;
    }
    if (rc.p && is_str(&rc)) {
      put_int(o, OAI_K_REASONING);
      if (!put_span(o, &idx) || !put_text(o, &rc, F_REASONING_CONTENT, o->n, 0)) return 0;
      put_lit(o, "reasoning_content", 17);
    }
    if (rs.p && is_str(&rs)) {
      put_int(o, OAI_K_REASONING);
      if (!put_span(o, &idx) || !put_text(o, &rs, F_REASONING, o->n, 0)) return 0;
      put_lit(o, "reasoning", 9);
    }
    if (content.p && is_str(&content)) {
      put_int(o, OAI_K_CONTENT);
      if (!put_span(o, &idx) || !put_text(o, &content, F_CONTENT, o->n, 0)) return 0;
      o->cp = content.p; o->cn = content.n;
      o->ip = idx.p == posbuf ? NULL : idx.p; o->in = idx.n;
    }
    if (refusal.p && is_str(&refusal)) {
      put_int(o, OAI_K_REFUSAL);
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
        if (!scan_value(&t, &tc, 1)) return GIVE_UP;
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
    if ((r = put_extras(o, &dx, OAI_K_DELTA_EXTRA, &idx)) != 1) return r;
  }
  if (logprobs.p && !is_null(&logprobs)) {
    put_int(o, OAI_K_LOGPROBS);
    if (!put_span(o, &idx) || !put_span(o, &logprobs)) return 0;
  }
  if ((r = put_extras(o, &cx, OAI_K_CHOICE_EXTRA, &idx)) != 1) return r;
  if (finish.p && nonempty_str(&finish)) {
    put_int(o, OAI_K_FINISH);
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
  while ((r = scan_key(&s, &key, &first)) == 1) {
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
        if (!scan_value(&s, &v, 1) || !is_null(&v)) return GIVE_UP;
      }
    } else {
      m.key = key;
      if (!scan_value(&s, &m.val, 1)) return GIVE_UP;
      if (KEY(&key, "id")) id = m.val;
      else if (KEY(&key, "object")) object = m.val;
      else if (KEY(&key, "created")) created = m.val;
      else if (KEY(&key, "model")) model = m.val;
      else if (KEY(&key, "system_fingerprint")) fp = m.val;
      else if (KEY(&key, "usage")) usage = m.val;
      else if (KEY(&key, "error")) err = m.val;
      else if (!add_extra(&tx, &m)) return GIVE_UP;
    }
    if (scan_after(&s) != 1) return GIVE_UP;
  }
  if (r == GIVE_UP) return GIVE_UP;
  ws(&s);
  if (s.p != s.e) return GIVE_UP;
  if (err.p != NULL && !is_null(&err)) {
    o->n = start;   /* an error chunk is only its error */
    put_int(o, OAI_K_ERROR);
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
      put_int(o, OAI_K_META);
      for (i = 0; i < 5; i++) {
        if (vals[i]->p == NULL || is_null(vals[i])) put_nil(o);
        else if (!put_span(o, vals[i])) return 0;
      }
    }
  }
  if (usage.p != NULL && usage.p[0] == '{') {
    put_int(o, OAI_K_USAGE);
    if (!put_span(o, &usage)) return 0;
  } else if (usage.p != NULL && !is_null(&usage)) return GIVE_UP;
  return put_extras(o, &tx, OAI_K_TOP_EXTRA, NULL);
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
  if (!scan_string(&s)) return 0;
  ce = (size_t)(s.p - d);
  if (ce + tail != len || memcmp(s.p, st->tpl + st->ce, tail) != 0) return 0;
  idx.p = d + (st->is < st->cs ? st->is : st->is - st->ce + ce);
  idx.n = st->in;
  idx.plain = 0;
  text.p = d + st->cs; text.n = ce - st->cs; text.plain = -1;
  put_int(o, OAI_K_CONTENT);
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
  if (st->nhalf > 0) oai_text_flush(L, st, t, n, raw);
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
    put_int(&o, OAI_K_ERROR);
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
    if (st->nhalf > 0) oai_text_flush(L, st, o.t, &o.n, raw);
    put_int(&o, OAI_K_DONE);
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
      put_int(&o, OAI_K_BAD);
      put_lit(&o, d, len);
      put_top(&o);
      lua_settop(L, top);
      *n = o.n;
      return 1;
    }
  }
  if (!oai_json_decode_push_ex(L, d, len, OAI_JSON_LENIENT | OAI_JSON_MARK_EDGES, &marks)) {
    /* the decoder's message (reason and byte offset) on top */
    put_int(&o, OAI_K_BAD);
    put_lit(&o, d, len);
    put_top(&o);
    *n = o.n;
    return 1;
  }
  if (marks > 0 || st->nhalf > 0) oai_text_fix_table(L, st, marks);
  put_int(&o, OAI_K_RAW);
  put_top(&o);
  *n = o.n;
  return 0;
}
