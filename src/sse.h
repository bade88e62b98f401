/*
** sse.h: incremental parser for the "text/event-stream" format, following
** the WHATWG HTML "event stream interpretation" rules.  Pure C99: no Lua, no
** I/O, no globals, so it can be fuzzed alone and fed from inside a libcurl
** write callback.
**
** Feeding.  Bytes may arrive in pieces of any size (also zero); the events
** that come out are exactly those of feeding the whole stream at once.
** Lines end at CRLF, LF or CR, also when a CR ends one piece and its LF
** starts the next.  One UTF-8 BOM (EF BB BF) at the very start of the stream
** is skipped, also when split across pieces; a BOM anywhere else is ordinary
** bytes.
**
** Lines.  An empty line dispatches.  A line starting with ':' is a comment.
** Otherwise the field name is the text before the first ':' (the whole line
** when there is none, with an empty value) and the value is the text after
** it, minus one leading space if there is one.  Fields: "data" appends the
** value and a LF to the data buffer; "event" sets the event type; "id" sets
** the last event id, unless the value contains a NUL byte; "retry" sets the
** reconnection time when the value is non-empty, all ASCII digits and fits
** in a long; any other field is ignored.
**
** Dispatch.  With an empty data buffer nothing is dispatched and the event
** type is cleared.  Otherwise the data's final LF is dropped and the event
** goes to the callback with its type ("message" when none was set), its data
** and the last event id in effect ("" when no id was ever set, as in the
** WHATWG model).  Type and data are then cleared; the last event id stays.
** At the end of the stream an unterminated event is not dispatched:
** oai_sse_pending() says whether one was left, so a transport can report a
** truncated stream.
**
** Bytes.  Values are passed through exactly as received: no UTF-8
** validation and no U+FFFD replacement (the WHATWG model decodes the stream
** as UTF-8 first; here that is left to the consumer).  Data may contain NUL
** bytes, so always use the lengths.
**
** Memory.  malloc/realloc/free only, no allocation until bytes arrive.
** Complete lines are parsed straight from the caller's buffer; "data" values
** are copied once, into the data buffer, even when their line is split
** across pieces.  Only the value of an "event", "id" or "retry" line split
** across pieces is held in a small side buffer until its line ends.
**
** Size limit.  An event may take at most max_event_bytes, counted as the
** bytes of the current line so far (also before its end has arrived) plus
** the data buffer plus the event type.  Past it, oai_sse_feed fails with
** OAI_SSE_ETOOBIG instead of growing without bound, and the limit trips at
** the same point of the stream however it is split.
**
** Errors are sticky: after oai_sse_feed returned nonzero (a limit, memory or
** callback stop), every later feed returns the same code without looking
** at its bytes, until oai_sse_reset().
*/
#ifndef OAI_SSE_H
#define OAI_SSE_H

#include <stddef.h>

#define OAI_SSE_DEFAULT_MAX ((size_t)8 * 1024 * 1024)

/* error codes of oai_sse_feed; callbacks that stop feeding should return
** a positive value, so it cannot be mistaken for one of these */
#define OAI_SSE_ETOOBIG (-1)   /* an event exceeded max_event_bytes */
#define OAI_SSE_ENOMEM (-2)    /* malloc/realloc failed */

/* one dispatched event.  The pointers are valid only during the callback.
** Each string is followed by a NUL byte that is not counted in its length
** (handy for decoders), but may itself contain NUL bytes. */
typedef struct oai_sse_event {
  const char *type;   /* "message" unless an event: field set another type */
  size_t type_len;
  const char *data;   /* data lines joined with LF */
  size_t data_len;
  const char *id;     /* last event id in effect; "" if none was ever set */
  size_t id_len;
} oai_sse_event;

/* called for each dispatched event; return 0 to go on, or a positive value
** to stop: oai_sse_feed then returns that value at once, the rest of its
** piece is not parsed, and the parser stays stopped until reset.  It must
** not feed, reset or free the parser that called it. */
typedef int (*oai_sse_event_fn)(void *ud, const oai_sse_event *ev);

/* The state is public so it can be embedded in another struct (a request, a
** userdata); treat the fields as private and use the functions below. */
typedef struct oai_sse {
  size_t max;           /* max_event_bytes */
  char *data;           /* data buffer (value + LF per data line) */
  size_t data_len, data_cap;
  char *type;           /* event type buffer, NUL-terminated when set */
  size_t type_len, type_cap;
  char *id;             /* last event id buffer, NUL-terminated when set */
  size_t id_len, id_cap;
  char *val;            /* value of an event/id/retry line split across pieces */
  size_t val_len, val_cap;
  size_t line_len;      /* bytes of the current line seen so far */
  size_t data_start;    /* data_len when the current line began */
  long retry;           /* last valid retry value, if has_retry */
  int err;              /* sticky result of a failed feed, 0 if none */
  unsigned char state;  /* where the current line is (sse.c: LS_*) */
  unsigned char space;  /* after ':', before the value's first byte */
  unsigned char name_len;
  unsigned char bom;    /* BOM bytes matched at stream start; 3 once past it */
  unsigned char cr;     /* the last piece ended with CR: skip one leading LF */
  unsigned char has_retry;
  char name[5];         /* field name so far of a line split before its ':' */
} oai_sse;

/* a fresh parser; max_event_bytes 0 means OAI_SSE_DEFAULT_MAX.  Allocates
** nothing, cannot fail. */
void oai_sse_init(oai_sse *p, size_t max_event_bytes);

/* back to a fresh stream (a BOM is allowed again, no last event id, no retry,
** no error); keeps max_event_bytes and small buffers for reuse */
void oai_sse_reset(oai_sse *p);

/* release all memory; idempotent; the parser is then as after oai_sse_init
** (same limit) and may be fed again */
void oai_sse_free(oai_sse *p);

/* parse len bytes of the stream, calling cb(ud, ev) for each dispatched
** event.  Returns 0, OAI_SSE_ETOOBIG, OAI_SSE_ENOMEM or the callback's
** nonzero value.  cb may be NULL to drop events. */
int oai_sse_feed(oai_sse *p, const char *buf, size_t len,
                 oai_sse_event_fn cb, void *ud);

/* 1 if the stream so far does not end cleanly: part of a line, a data or
** event type not yet dispatched, or an unfinished BOM is buffered, or the
** parser is in an error state (something was dropped); else 0 */
int oai_sse_pending(const oai_sse *p);

/* 1 and *ms = the last valid retry value, if one was seen; else 0 */
int oai_sse_retry(const oai_sse *p, long *ms);

/* a static message for a code returned by oai_sse_feed */
const char *oai_sse_strerror(int code);

#endif
