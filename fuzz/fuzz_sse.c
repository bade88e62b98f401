/*
** fuzz_sse.c: libFuzzer target for the SSE parser (src/sse.c alone).
**
** Input: byte 0 picks the limit (even: the default; odd: a small
** max_event_bytes, 1..509, to drive the ETOOBIG path), bytes 1-2 seed the choice of
** split points and of when a callback stops, the rest is the stream.
**
** Properties, any failure abort()s:
**  - fed whole, in random pieces (empty ones included) and byte by byte, the
**    parser gives the same events, the same result code and the same retry;
**    pending() too, unless the feed failed (the limit trips on the same line
**    in every run, but with the line cut at different places);
**  - all of that equals a naive whole-input transcription of the WHATWG rules
**    (ref_parse below), limit included;
**  - each event's strings are NUL-terminated;
**  - after oai_sse_reset the parser gives the same results again;
**  - a callback returning nonzero stops feeding with that value, after
**    exactly the events seen so far, and the parser stays stopped.
*/
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* what a run produced */
typedef struct run {
  unsigned char *ev;     /* events as (len, bytes) x 3, concatenated */
  size_t ev_len, ev_cap;
  size_t count;          /* number of events */
  size_t stop_after;     /* callback returns 7 after this many events; 0: never */
  int rc;                /* first nonzero feed result, 0 if none */
  int pending;
  int has_retry;
  long retry;
} run;

static void put(run *r, const void *s, size_t n) {
  if (r->ev_len + n > r->ev_cap) {
    size_t cap = r->ev_cap ? r->ev_cap : 256;
    while (cap < r->ev_len + n) cap *= 2;
    r->ev = (unsigned char *)realloc(r->ev, cap);
    if (r->ev == NULL) abort();
    r->ev_cap = cap;
  }
  if (n > 0) memcpy(r->ev + r->ev_len, s, n);
  r->ev_len += n;
}

static void put_str(run *r, const char *s, size_t n) {
  put(r, &n, sizeof(n));
  put(r, s, n);
}

static void record(run *r, const char *type, size_t type_len,
                   const char *d, size_t data_len,
                   const char *id, size_t id_len) {
  put_str(r, type, type_len);
  put_str(r, d, data_len);
  put_str(r, id, id_len);
  r->count++;
}

static int on_event(void *ud, const oai_sse_event *ev) {
  run *r = (run *)ud;
  if (ev->type[ev->type_len] != '\0' || ev->data[ev->data_len] != '\0' ||
      ev->id[ev->id_len] != '\0' || ev->type_len == 0)
    abort();
  record(r, ev->type, ev->type_len, ev->data, ev->data_len, ev->id, ev->id_len);
  if (r->stop_after != 0 && r->count == r->stop_after) return 7;
  return 0;
}

static void finish(run *r, const oai_sse *p) {
  r->pending = oai_sse_pending(p);
  r->has_retry = oai_sse_retry(p, &r->retry);
}

/* xorshift, seeded from the input, for piece sizes */
static uint32_t next_rand(uint32_t *s) {
  uint32_t x = *s;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *s = x;
}

static void feed_piece(oai_sse *p, run *r, const char *s, size_t n) {
  int rc = oai_sse_feed(p, s, n, on_event, r);
  if (r->rc == 0) r->rc = rc;
  else if (rc != r->rc) abort();   /* errors are sticky */
}

static void feed_whole(oai_sse *p, run *r, const char *s, size_t n) {
  feed_piece(p, r, s, n);
  finish(r, p);
}

static void feed_split(oai_sse *p, run *r, const char *s, size_t n,
                       uint32_t seed) {
  size_t at = 0;
  if (seed == 0) seed = 0x9e3779b9u;
  while (at < n) {
    uint32_t x = next_rand(&seed);
    size_t k;
    switch (x & 3) {
      case 0: k = 0; break;                      /* empty pieces are legal */
      case 1: k = 1 + (x >> 8) % 4; break;       /* tiny: splits CRLF, BOM */
      case 2: k = 1 + (x >> 8) % 32; break;
      default: k = 1 + (x >> 8) % 512; break;
    }
    if (k > n - at) k = n - at;
    feed_piece(p, r, s + at, k);
    at += k;
  }
  finish(r, p);
}

static void feed_bytes(oai_sse *p, run *r, const char *s, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) feed_piece(p, r, s + i, 1);
  finish(r, p);
}

/* the WHATWG algorithm written out plainly over the whole input, with the
** limit rule of sse.h; a trailing partial BOM is not a line yet, so the
** limit does not apply to it */
static void ref_parse(run *r, const unsigned char *s, size_t n, size_t max) {
  unsigned char *dbuf = NULL, *tbuf = NULL, *ibuf = NULL;
  size_t dlen = 0, tlen = 0, ilen = 0, pos = 0;
  dbuf = (unsigned char *)malloc(n + 2);
  tbuf = (unsigned char *)malloc(n + 1);
  ibuf = (unsigned char *)malloc(n + 1);
  if (dbuf == NULL || tbuf == NULL || ibuf == NULL) abort();
  if (n >= 3 && s[0] == 0xEF && s[1] == 0xBB && s[2] == 0xBF) pos = 3;
  else if (n < 3 && memcmp(s, "\xEF\xBB\xBF", n) == 0) {
    r->pending = n > 0;
    pos = n;
  }
  while (pos < n) {
    size_t e = pos, i, colon, vstart, vlen;
    const unsigned char *line = s + pos;
    size_t len;
    while (e < n && s[e] != '\r' && s[e] != '\n') e++;
    len = e - pos;
    if (dlen + tlen + len > max) {
      r->rc = OAI_SSE_ETOOBIG;
      r->pending = 1;
      break;
    }
    if (e == n) {   /* unterminated: never processed */
      r->pending = 1;
      break;
    }
    pos = e + 1;
    if (s[e] == '\r' && pos < n && s[pos] == '\n') pos++;
    if (len == 0) {
      if (dlen == 0) {
        tlen = 0;
        continue;
      }
      if (tlen == 0) record(r, "message", 7, (const char *)dbuf, dlen - 1,
                            (const char *)ibuf, ilen);
      else record(r, (const char *)tbuf, tlen, (const char *)dbuf, dlen - 1,
                  (const char *)ibuf, ilen);
      dlen = tlen = 0;
      continue;
    }
    if (line[0] == ':') continue;
    for (colon = 0; colon < len && line[colon] != ':'; colon++) {}
    vstart = colon < len ? colon + 1 : len;
    if (vstart < len && line[vstart] == ' ') vstart++;
    vlen = len - vstart;
    if (colon == 4 && memcmp(line, "data", 4) == 0) {
      memcpy(dbuf + dlen, line + vstart, vlen);
      dlen += vlen;
      dbuf[dlen++] = '\n';
    } else if (colon == 5 && memcmp(line, "event", 5) == 0) {
      memcpy(tbuf, line + vstart, vlen);
      tlen = vlen;
    } else if (colon == 2 && memcmp(line, "id", 2) == 0) {
      if (vlen == 0 || memchr(line + vstart, 0, vlen) == NULL) {
        memcpy(ibuf, line + vstart, vlen);
        ilen = vlen;
      }
    } else if (colon == 5 && memcmp(line, "retry", 5) == 0 && vlen > 0) {
      long v = 0;
      int ok = 1;
      for (i = vstart; i < len && ok; i++) {
        int d = line[i] - '0';
        if (d < 0 || d > 9 || v > (LONG_MAX - d) / 10) ok = 0;
        else v = v * 10 + d;
      }
      if (ok) {
        r->retry = v;
        r->has_retry = 1;
      }
    }
  }
  if (r->rc == 0 && (dlen > 0 || tlen > 0)) r->pending = 1;
  free(dbuf);
  free(tbuf);
  free(ibuf);
}

static void same(const run *a, const run *b, int check_pending) {
  if (a->count != b->count || a->ev_len != b->ev_len ||
      (a->ev_len > 0 && memcmp(a->ev, b->ev, a->ev_len) != 0))
    abort();
  if (a->rc != b->rc) abort();
  if (a->has_retry != b->has_retry) abort();
  if (a->has_retry && a->retry != b->retry) abort();
  if (check_pending && a->rc == 0 && a->pending != b->pending) abort();
  if (a->rc != 0 && (!a->pending || !b->pending)) abort();
}

static void drop(run *r) {
  free(r->ev);
  memset(r, 0, sizeof(*r));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  oai_sse p, q;
  run whole, ref, split, bytes, again, stopped;
  size_t max, n;
  const char *s;
  uint32_t seed;
  if (size < 3) return 0;
  max = (data[0] & 1) ? 1 + (size_t)(data[0] >> 1) * 4 : 0;   /* 1..509 */
  seed = (uint32_t)data[1] << 8 | data[2];
  s = (const char *)data + 3;
  n = size - 3;
  memset(&whole, 0, sizeof(whole));
  ref = split = bytes = again = stopped = whole;

  oai_sse_init(&p, max);
  feed_whole(&p, &whole, s, n);
  ref_parse(&ref, (const unsigned char *)s, n, p.max);
  same(&whole, &ref, 1);

  oai_sse_init(&q, max);
  feed_split(&q, &split, s, n, seed);
  same(&whole, &split, 1);
  oai_sse_free(&q);
  oai_sse_free(&q);   /* idempotent */

  feed_bytes(&q, &bytes, s, n);   /* a freed parser is a fresh one */
  same(&whole, &bytes, 1);

  oai_sse_reset(&p);
  feed_split(&p, &again, s, n, seed ^ 0x5a5au);
  same(&whole, &again, 1);

  /* stop in the callback after k events, if there are that many */
  if (whole.count > 0) {
    size_t k = 1 + seed % whole.count, i, off = 0;
    oai_sse_reset(&p);
    stopped.stop_after = k;
    feed_split(&p, &stopped, s, n, seed);
    if (stopped.count != k || stopped.rc != 7 || !stopped.pending) abort();
    for (i = 0; i < 3 * k; i++) {   /* the first k events of the whole run */
      size_t len;
      memcpy(&len, whole.ev + off, sizeof(len));
      off += sizeof(len) + len;
    }
    if (stopped.ev_len != off || memcmp(stopped.ev, whole.ev, off) != 0) abort();
    if (oai_sse_feed(&p, "\n\n", 2, on_event, &stopped) != 7) abort();
  }

  oai_sse_free(&p);
  oai_sse_free(&q);
  drop(&whole);
  drop(&ref);
  drop(&split);
  drop(&bytes);
  drop(&again);
  drop(&stopped);
  return 0;
}
