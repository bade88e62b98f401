/*
** sse.c: incremental text/event-stream parser (see sse.h for the rules).
**
** Framing.  oai_sse_feed finds line ends with memchr and keeps the position
** of the next LF it found, so within one piece every byte is looked at once
** by the LF search and at most once by the CR search (which only covers the
** bytes before that LF); the last few bytes of a piece go through a plain
** loop instead, which is faster for tiny pieces.  (Two vectorised memchr
** passes measured about twice as fast as one portable word-at-a-time pass
** looking for both bytes.)  Each line, or each part of a line when it is
** split across pieces, goes through line_part(), a small state machine over
** the line's field name and value: complete lines are parsed in place,
** "data" values stream straight into the data buffer, and only the value of
** a split "event"/"id"/"retry" line is gathered in p->val.  Nothing else is
** copied.
*/
#include "sse.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* where the current line is (p->state) */
enum {
  LS_NAME,    /* in the field name; also the start of every line */
  LS_DATA,    /* in a data value: bytes go straight to the data buffer */
  LS_EVENT,   /* in an event/id/retry value: applied when the line ends */
  LS_ID,
  LS_RETRY,
  LS_SKIP     /* comment or a field we ignore: bytes are only counted */
};

/* buffers at most this big survive oai_sse_reset, bigger ones are freed */
#define KEEP_ON_RESET ((size_t)64 * 1024)

static const unsigned char bom_bytes[3] = { 0xEF, 0xBB, 0xBF };

void oai_sse_init(oai_sse *p, size_t max_event_bytes) {
  memset(p, 0, sizeof(*p));
  if (max_event_bytes == 0) max_event_bytes = OAI_SSE_DEFAULT_MAX;
  /* the headroom keeps every size computation below free of overflow */
  if (max_event_bytes > SIZE_MAX / 4) max_event_bytes = SIZE_MAX / 4;
  p->max = max_event_bytes;
}

static void keep_or_free(char **buf, size_t *cap) {
  if (*cap > KEEP_ON_RESET) {
    free(*buf);
    *buf = NULL;
    *cap = 0;
  }
}

void oai_sse_reset(oai_sse *p) {
  oai_sse old = *p;
  keep_or_free(&old.data, &old.data_cap);
  keep_or_free(&old.type, &old.type_cap);
  keep_or_free(&old.id, &old.id_cap);
  keep_or_free(&old.val, &old.val_cap);
  oai_sse_init(p, old.max);
  p->data = old.data; p->data_cap = old.data_cap;
  p->type = old.type; p->type_cap = old.type_cap;
  p->id = old.id; p->id_cap = old.id_cap;
  p->val = old.val; p->val_cap = old.val_cap;
}

void oai_sse_free(oai_sse *p) {
  size_t max = p->max;
  free(p->data);
  free(p->type);
  free(p->id);
  free(p->val);
  oai_sse_init(p, max);
}

/* make *buf hold at least need bytes.  Doubling, but no further than the
** most an event can use (max + 1: the data buffer's final LF), so a stream
** near the limit does not allocate twice the limit. */
static int grow(const oai_sse *p, char **buf, size_t *cap, size_t need) {
  size_t n = *cap < 64 ? 64 : *cap;
  char *nb;
  while (n < need) n *= 2;   /* need <= max + 1 <= SIZE_MAX / 4 + 1 */
  if (n > p->max + 1 && need <= p->max + 1) n = p->max + 1;
  nb = (char *)realloc(*buf, n);
  if (nb == NULL) return OAI_SSE_ENOMEM;
  *buf = nb;
  *cap = n;
  return 0;
}

/* the state for the part of a line after "name:" */
static unsigned char field_state(const char *name, size_t len) {
  switch (len) {
    case 2: if (memcmp(name, "id", 2) == 0) return LS_ID; break;
    case 4: if (memcmp(name, "data", 4) == 0) return LS_DATA; break;
    case 5:
      if (memcmp(name, "event", 5) == 0) return LS_EVENT;
      if (memcmp(name, "retry", 5) == 0) return LS_RETRY;
      break;
    default: break;
  }
  return LS_SKIP;
}

/* copy a value into a NUL-terminated buffer (event type, last event id) */
static int set_str(const oai_sse *p, char **buf, size_t *len, size_t *cap,
                   const char *s, size_t n) {
  if (n > 0) {
    if (n + 1 > *cap && grow(p, buf, cap, n + 1)) return OAI_SSE_ENOMEM;
    memcpy(*buf, s, n);
    (*buf)[n] = '\0';
  }
  *len = n;
  return 0;
}

/* retry: only a non-empty run of ASCII digits that fits in a long counts */
static void set_retry(oai_sse *p, const char *s, size_t n) {
  long v = 0;
  size_t i;
  if (n == 0) return;
  for (i = 0; i < n; i++) {
    int d = (unsigned char)s[i] - '0';
    if (d < 0 || d > 9) return;
    if (v > (LONG_MAX - d) / 10) return;
    v = v * 10 + d;
  }
  p->retry = v;
  p->has_retry = 1;
}

/* a blank line: emit the event, if there is one, and clear type and data */
static int dispatch(oai_sse *p, oai_sse_event_fn cb, void *ud) {
  oai_sse_event ev;
  if (p->data_len == 0) {
    p->type_len = 0;
    return 0;
  }
  /* the final LF becomes the NUL terminator */
  p->data[p->data_len - 1] = '\0';
  ev.data = p->data;
  ev.data_len = p->data_len - 1;
  if (p->type_len > 0) {
    ev.type = p->type;
    ev.type_len = p->type_len;
  } else {
    ev.type = "message";
    ev.type_len = 7;
  }
  if (p->id_len > 0) {
    ev.id = p->id;
    ev.id_len = p->id_len;
  } else {
    ev.id = "";
    ev.id_len = 0;
  }
  /* cleared before the call: the buffers stay intact while it runs, and the
  ** parser is consistent even if the callback never returns (longjmp) */
  p->data_len = 0;
  p->type_len = 0;
  return cb != NULL ? cb(ud, &ev) : 0;
}

/* a data line ended: its LF */
static int data_lf(oai_sse *p) {
  if (p->data_len + 1 > p->data_cap &&
      grow(p, &p->data, &p->data_cap, p->data_len + 1))
    return OAI_SSE_ENOMEM;
  p->data[p->data_len++] = '\n';
  return 0;
}

/* the current line just ended; (s, n) is the value of an event/id/retry line */
static int line_end(oai_sse *p, const char *s, size_t n,
                    oai_sse_event_fn cb, void *ud) {
  unsigned char st = p->state;
  size_t line_len = p->line_len;
  p->state = LS_NAME;
  p->line_len = 0;
  p->val_len = 0;
  p->space = 0;
  switch (st) {
    case LS_NAME:
      if (line_len == 0) return dispatch(p, cb, ud);
      /* no ':' on the line: the whole line is the name, the value is empty */
      st = field_state(p->name, p->name_len);
      p->name_len = 0;
      if (st == LS_DATA) return data_lf(p);
      if (st == LS_EVENT) p->type_len = 0;
      else if (st == LS_ID) p->id_len = 0;
      return 0;
    case LS_DATA:
      return data_lf(p);
    case LS_EVENT:
      return set_str(p, &p->type, &p->type_len, &p->type_cap, s, n);
    case LS_ID:
      if (n > 0 && memchr(s, '\0', n) != NULL) return 0;
      return set_str(p, &p->id, &p->id_len, &p->id_cap, s, n);
    case LS_RETRY:
      set_retry(p, s, n);
      return 0;
    default:
      return 0;
  }
}

/* bytes s[0..n) of the current line (no line end among them); end != 0 when
** the line ends right after them */
static int line_part(oai_sse *p, const char *s, size_t n, int end,
                     oai_sse_event_fn cb, void *ud) {
  size_t used;
  if (p->line_len == 0) p->data_start = p->data_len;
  /* the limit: this line so far + the data before it + the event type */
  used = p->data_start + p->type_len + p->line_len;
  if (used > p->max || n > p->max - used) return OAI_SSE_ETOOBIG;
  p->line_len += n;
  if (p->state == LS_NAME) {
    if (p->name_len == 0 && n >= 5 && memcmp(s, "data:", 5) == 0) {
      s += 5;   /* the common case, without the byte loop */
      n -= 5;
      p->state = LS_DATA;
      p->space = 1;
    } else {
      while (n > 0) {
        if (*s == ':') {
          s++;
          n--;
          p->state = field_state(p->name, p->name_len);
          p->space = 1;
          p->name_len = 0;
          break;
        }
        if (p->name_len == sizeof(p->name)) {
          p->state = LS_SKIP;   /* longer than every field name we know */
          p->name_len = 0;
          break;
        }
        p->name[p->name_len++] = *s++;
        n--;
      }
    }
  }
  if (p->space && n > 0) {
    /* the value's first byte: one space is dropped */
    if (*s == ' ') {
      s++;
      n--;
    }
    p->space = 0;
  }
  if (p->state == LS_DATA) {
    if (n > 0) {
      /* +1: room for the LF that ends the line */
      if (p->data_len + n + 1 > p->data_cap &&
          grow(p, &p->data, &p->data_cap, p->data_len + n + 1))
        return OAI_SSE_ENOMEM;
      memcpy(p->data + p->data_len, s, n);
      p->data_len += n;
    }
  } else if (p->state >= LS_EVENT && p->state <= LS_RETRY &&
             (!end || p->val_len > 0)) {
    /* a value split across pieces: gather it */
    if (n > 0) {
      if (p->val_len + n > p->val_cap &&
          grow(p, &p->val, &p->val_cap, p->val_len + n))
        return OAI_SSE_ENOMEM;
      memcpy(p->val + p->val_len, s, n);
      p->val_len += n;
    }
    s = p->val;
    n = p->val_len;
  }
  return end ? line_end(p, s, n, cb, ud) : 0;
}

int oai_sse_feed(oai_sse *p, const char *buf, size_t len,
                 oai_sse_event_fn cb, void *ud) {
  const char *end, *lf = NULL, *e;
  int rc;
  if (p->err != 0) return p->err;
  if (len == 0) return 0;
  if (p->bom < 3) {
    /* at the start of the stream: skip one BOM, possibly split */
    while (len > 0 && p->bom < 3 && (unsigned char)*buf == bom_bytes[p->bom]) {
      buf++;
      len--;
      p->bom++;
    }
    if (p->bom < 3) {
      size_t k = p->bom;
      if (len == 0) return 0;   /* all so far may still be a BOM */
      /* not a BOM: the bytes that looked like one start the first line */
      p->bom = 3;
      if (k > 0) {
        rc = line_part(p, (const char *)bom_bytes, k, 0, cb, ud);
        if (rc != 0) return p->err = rc;
      }
    }
    if (len == 0) return 0;
  }
  end = buf + len;
  if (p->cr) {
    /* the previous piece ended with CR: an LF here is the same line end */
    p->cr = 0;
    if (*buf == '\n' && ++buf == end) return 0;
  }
  while (buf < end) {
    if (end - buf <= 8) {
      /* a few bytes left (tiny pieces): one plain pass beats two calls */
      for (e = buf; e < end && *e != '\n' && *e != '\r'; e++) {}
    } else {
      /* the next LF (kept while ahead), then a CR before it, if any */
      if (lf == NULL || lf < buf) {
        lf = (const char *)memchr(buf, '\n', (size_t)(end - buf));
        if (lf == NULL) lf = end;
      }
      e = lf > buf ? (const char *)memchr(buf, '\r', (size_t)(lf - buf)) : NULL;
      if (e == NULL) e = lf;
    }
    if (e == end) {
      /* the line goes on in the next piece */
      rc = line_part(p, buf, (size_t)(end - buf), 0, cb, ud);
      if (rc != 0) return p->err = rc;
      return 0;
    }
    rc = line_part(p, buf, (size_t)(e - buf), 1, cb, ud);
    if (rc != 0) return p->err = rc;
    buf = e + 1;
    if (*e == '\r') {
      if (buf == end) p->cr = 1;
      else if (*buf == '\n') buf++;
    }
  }
  return 0;
}

int oai_sse_pending(const oai_sse *p) {
  return p->err != 0 || p->line_len > 0 || p->data_len > 0 ||
         p->type_len > 0 || (p->bom > 0 && p->bom < 3);
}

int oai_sse_retry(const oai_sse *p, long *ms) {
  if (!p->has_retry) return 0;
  if (ms != NULL) *ms = p->retry;
  return 1;
}

const char *oai_sse_strerror(int code) {
  switch (code) {
    case 0: return "oai.sse: no error";
    case OAI_SSE_ETOOBIG: return "oai.sse: event exceeds max_event_bytes";
    case OAI_SSE_ENOMEM: return "oai.sse: out of memory";
    default: return "oai.sse: stopped by the event callback";
  }
}
