/*
** scan.c: the JSON span scanner of the chunk fast path (see scan.h): finds
** the spans of values in a chunk's text without decoding them, and tells
** whether a string's bytes are its value (scan_plain).  Shapes it does not
** expect make chunk.c give up on the chunk (GIVE_UP), never guess.
*/
#include <string.h>

#include "scan.h"

#define MAX_DEPTH 64

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
int scan_string(sc *s) {
  const char *p = s->p + 1, *e = s->e;
  for (;;) {
    p = str_run(p, e);
    if (p >= e) return 0;
    if (*p == '"') { s->p = p + 1; return 1; }
    if (*p != '\\' || p + 1 >= e) return 0;
    p += 2;
  }
}

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
int scan_value(sc *s, span *v, int depth) {
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
          if (s->p >= s->e || *s->p != '"' || !scan_string(s)) return 0;
          ws(s);
          if (s->p >= s->e || *s->p != ':') return 0;
          s->p++;
        }
        if (!scan_value(s, &dummy, depth + 1)) return 0;
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

/* the key of the next member: s at '{' when *first, else just after a
   value; leaves s after the ':'.  1 with *key set, 0 after the closing '}',
   GIVE_UP on anything unexpected (escaped keys included) */
int scan_key(sc *s, span *key, int *first) {
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
int scan_after(sc *s) {
  ws(s);
  if (s->p < s->e && *s->p != ',' && *s->p != '}') return GIVE_UP;
  return 1;
}

/* returns 1 with *m filled, 0 at the end, GIVE_UP on anything unexpected */
int scan_member(sc *s, member *m, int *first) {
  int r = scan_key(s, &m->key, first);
  if (r != 1) return r;
  if (!scan_value(s, &m->val, 1)) return GIVE_UP;
  return scan_after(s);
}

/* valid UTF-8 and no escapes: the bytes between the quotes are the value */
int scan_plain(const char *p, size_t n) {
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
