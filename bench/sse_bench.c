/*
** sse_bench.c: framing throughput of the SSE parser alone, without Lua.
**
**   cc -O2 -Isrc bench/sse_bench.c src/sse.c -o /tmp/sse_bench && /tmp/sse_bench
**
** The stream is 20,000 chat.completion.chunk events and "data: [DONE]", fed
** in 16 KiB pieces, in 1-byte pieces and (for scale) 1 KiB pieces; the
** callback only counts events and data bytes.  For reference, the first row
** is a bare memchr over the same bytes for every LF: the least a framer
** that looks at every line end can do.  CPU time via clock(); best and
** median of several runs.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sse.h"

#define EVENTS 20000
#define RUNS 9

typedef struct counts {
  size_t events, bytes;
} counts;

static int count_event(void *ud, const oai_sse_event *ev) {
  counts *c = (counts *)ud;
  c->events++;
  c->bytes += ev->data_len;
  return 0;
}

static char *make_stream(size_t *len) {
  static const char *words[] = { " the", " quick", " brown", " fox", " jumps",
                                 " over", " a", " lazy", " dog", "." };
  size_t cap = (size_t)EVENTS * 320, n = 0;
  char *s = (char *)malloc(cap);
  int i;
  if (s == NULL) abort();
  for (i = 0; i < EVENTS; i++) {
    n += (size_t)sprintf(s + n,
      "data: {\"id\":\"chatcmpl-9x8Yz7AbCdEfGhIjKlMnOpQrStUv\",\"object\":"
      "\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\","
      "\"system_fingerprint\":\"fp_x\",\"choices\":[{\"index\":0,\"delta\":"
      "{\"content\":\"%s\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n",
      words[i % 10]);
  }
  n += (size_t)sprintf(s + n, "data: [DONE]\n\n");
  *len = n;
  return s;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* seconds for one pass over the stream in pieces of `piece` bytes (0: memchr) */
static double one_run(const char *s, size_t len, size_t piece, counts *c) {
  clock_t t0 = clock();
  if (piece == 0) {
    const char *p = s, *end = s + len;
    while ((p = (const char *)memchr(p, '\n', (size_t)(end - p))) != NULL) {
      c->events++;
      p++;
    }
  } else {
    oai_sse sse;
    size_t at;
    oai_sse_init(&sse, 0);
    for (at = 0; at < len; at += piece) {
      size_t k = len - at < piece ? len - at : piece;
      if (oai_sse_feed(&sse, s + at, k, count_event, c) != 0) abort();
    }
    if (oai_sse_pending(&sse)) abort();
    oai_sse_free(&sse);
  }
  return (double)(clock() - t0) / CLOCKS_PER_SEC;
}

static void bench(const char *name, const char *s, size_t len, size_t piece) {
  double t[RUNS];
  int i, reps = 1;
  counts c;
  /* repeat passes until one run takes at least 50 ms */
  for (;;) {
    double took = 0;
    memset(&c, 0, sizeof(c));
    for (i = 0; i < reps; i++) took += one_run(s, len, piece, &c);
    if (took >= 0.05 || reps >= 1 << 16) break;
    reps *= 2;
  }
  if (piece != 0 && c.events != (size_t)reps * (EVENTS + 1)) {
    fprintf(stderr, "%s: %lu events, expected %lu\n", name,
            (unsigned long)c.events, (unsigned long)reps * (EVENTS + 1));
    abort();
  }
  for (i = 0; i < RUNS; i++) {
    int r;
    t[i] = 0;
    for (r = 0; r < reps; r++) t[i] += one_run(s, len, piece, &c);
    t[i] /= reps;
  }
  qsort(t, RUNS, sizeof(t[0]), cmp_double);
  printf("%-22s %10.1f %12.1f %10.1f\n", name,
         len / t[0] / 1e6, len / t[RUNS / 2] / 1e6,
         t[0] / (EVENTS + 1) * 1e9);
}

int main(void) {
  size_t len;
  char *s = make_stream(&len);
  printf("stream: %d events + [DONE], %.2f MB, %lu bytes/event\n\n", EVENTS,
         len / 1e6, (unsigned long)(len / (EVENTS + 1)));
  printf("%-22s %10s %12s %10s\n", "C, pieces of", "best MB/s", "median MB/s",
         "ns/event");
  bench("memchr LF only (ref)", s, len, 0);
  bench("16 KiB", s, len, 16384);
  bench("1 KiB", s, len, 1024);
  bench("1 byte", s, len, 1);
  free(s);
  return 0;
}
