/*
** scan.h: the JSON span scanner of the chunk fast path (scan.c).  It only
** finds where values start and end in a chunk's text; nothing is decoded.
*/
#ifndef OAI_SCAN_H
#define OAI_SCAN_H

#include <stddef.h>
#include <string.h>

#define GIVE_UP (-1)

typedef struct span {
  const char *p;
  size_t n;
  int plain;    /* 1: a string to push as is (no escapes, valid UTF-8);
                   -1: a string not checked yet; 0: anything else */
} span;

typedef struct sc {
  const char *p, *e;
} sc;

/* one member of an object */
typedef struct member {
  span key;     /* without quotes; never contains escapes */
  span val;
} member;

static inline void ws(sc *s) {
  while (s->p < s->e && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t')) s->p++;
}

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }

static inline int key_is(const span *k, const char *lit, size_t n) {
  return k->n == n && memcmp(k->p, lit, n) == 0;
}
#define KEY(k, lit) key_is(k, lit, sizeof(lit) - 1)

static inline int is_null(const span *v) { return v->n == 4 && memcmp(v->p, "null", 4) == 0; }
static inline int is_str(const span *v) { return v->n >= 2 && v->p[0] == '"'; }

/* s at a '"': past the closing quote; 0 if unterminated or a raw control */
int scan_string(sc *s);
/* skip one value, leaving its span in *v; 0 if malformed */
int scan_value(sc *s, span *v, int depth);
/* the key of the next member: s at '{' when *first, else just after a
   value; leaves s after the ':'.  1 with *key set, 0 after the closing '}',
   GIVE_UP on anything unexpected (escaped keys included) */
int scan_key(sc *s, span *key, int *first);
/* after a member's value: a ',' or the '}' must follow (1), else GIVE_UP */
int scan_after(sc *s);
/* iterate the members of an object (s at '{' when *first): 1 with *m
   filled, 0 at the end, GIVE_UP on anything unexpected */
int scan_member(sc *s, member *m, int *first);
/* valid UTF-8 and no escapes: the bytes between the quotes are the value */
int scan_plain(const char *p, size_t n);

#endif
