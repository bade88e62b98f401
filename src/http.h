/*
** http.h: the libcurl side of oai.core, shared by its files.
**
**   multi.c    oai.multi: one curl multi handle (one per loop) and its wait
**              modes: poll (multi:perform; on Linux over an epoll set that
**              libcurl's socket callback keeps, elsewhere curl_multi_poll)
**              or, for external event loops, socket mode
**              (multi:socket_action + queued socket/timer changes)
**   request.c  oai.request: one easy handle (taken from a per-state pool):
**              request options, the response body or the raw bytes of an
**              event stream, the outcome
**   headers.c  the header store: request headers checked and set, response
**              headers captured and read back
**   util.c     clocks, growable buffers, libcurl's error names, the types'
**              metatables
**
** No Lua runs inside libcurl callbacks: the callbacks only append bytes to
** buffers owned by the request, record socket/timer changes in the multi, and
** link the request into the multi's "ready" list.  Lua collects the ready
** requests from the return value of perform/socket_action and drains them.
** Event streams are framed by the SSE parser when Lua drains (req:read), so
** the event data is decoded straight from the parser's buffer, never copied
** into an intermediate queue.
*/
#ifndef OAI_HTTP_H
#define OAI_HTTP_H

#include <curl/curl.h>

#include "oai.h"
#include "chunk.h"

#define OAI_MULTI_MT "oai.multi"
#define OAI_REQUEST_MT "oai.request"

/* a growable byte buffer (util.c) */
typedef struct buf {
  char *p;
  size_t len, cap;
} buf;
int oai_buf_add(buf *b, const char *s, size_t n);   /* 0: out of memory */
void oai_buf_free(buf *b);

enum { BODY_UNDECIDED, BODY_PLAIN, BODY_SSE };

/* unframed event-stream bytes buffered before the transfer is paused */
#define SSE_HIGH_WATER (64 * 1024)
enum { ABORT_NONE, ABORT_TOO_BIG, ABORT_NOMEM, ABORT_CANCELED, ABORT_IDLE, ABORT_ENCODING };

typedef struct multi multi;

typedef struct request {
  CURL *easy;
  multi *m;                    /* the multi driving it, or NULL */
  struct request *next, *prev; /* in m's list of attached requests */
  struct request *next_ready;  /* in m's ready list */
  int ready;                   /* linked into the ready list */
  int ref;                     /* registry ref pinning it while attached */
  struct curl_slist *headers;
  struct curl_slist *resolve;  /* CURLOPT_RESOLVE entries */
  buf body;                    /* plain body, or raw event-stream bytes not yet framed */
  buf hdr;                     /* header lines of the final response */
  long status;
  int headers_done;
  int body_mode;               /* BODY_* */
  int want_sse;                /* request asked for an event stream */
  int own_accept_encoding;     /* the caller set Accept-Encoding */
  int started;                 /* added to a multi at least once */
  int done;
  CURLcode result;
  int abort_reason;
  int paused;                  /* receiving paused until Lua frames what it has */
  size_t max_body;
  size_t received;             /* body bytes received in total */
  double t_start;
  double last_rx;              /* monotonic time of the last byte received */
  long idle_ms;                /* idle timeout, 0 = none */
  curl_socket_t sock;          /* a socket this transfer used (checked before use) */
  oai_sse sse;
  oai_chunk_state chunk;        /* chunk.c's per-stream state */
  char errbuf[CURL_ERROR_SIZE];
  char encoding[64];           /* the Content-Encoding refused (ABORT_ENCODING) */
} request;

struct multi {
  CURLM *handle;
  request *attached;           /* doubly linked list */
  request *ready_head, *ready_tail;
  int socket_mode;
  /* socket mode: changes queued by the callbacks, drained by socket_changes */
  curl_socket_t *sock_fd;
  int *sock_what;
  size_t sock_n, sock_cap;
  long timer_ms;
  int timer_changed;
  int nomem;
  /* poll mode on Linux: perform() waits on an epoll set that the socket
     callback keeps, and acts on the ready sockets only (curl_multi_poll and
     curl_multi_perform both walk every transfer on every wakeup) */
  int epfd;                    /* -1: curl_multi_poll + curl_multi_perform */
  int wakefd;                  /* eventfd for wakeup() */
  double timer_at;             /* when libcurl wants its timeout action; < 0 none */
  int running;
};

/* util.c */
double oai_monotime(void);          /* seconds from a monotonic clock */
double oai_monotime_coarse(void);   /* the same, a few ms coarse and cheaper */
const char *oai_curl_name(CURLcode c, const char *msg);   /* stable error name */
/* register a type: metatable name, methods as __index, close as __gc and
   __close, tostr as __tostring */
void oai_new_type(lua_State *L, const char *name, const luaL_Reg *methods,
                  lua_CFunction close, lua_CFunction tostr);

/* multi.c */
void oai_mark_ready(request *r);              /* link r into its multi's ready list */
void oai_request_detach(request *r, lua_State *L);   /* out of its multi, unpinned */

/* request.c */
request *oai_check_request(lua_State *L, int idx);

/* headers.c */
int oai_ieq(const char *a, const char *b, size_t n);   /* ASCII case-insensitive */
/* the value of header `name` (lowercase) in the captured lines, trimmed */
const char *oai_find_header(const buf *h, const char *name, size_t *vlen);
/* CURLOPT_HEADERFUNCTION: captures the final response's status and headers */
size_t oai_header_cb(char *p, size_t size, size_t nmemb, void *ud);
/* the request options' headers table (at idx) -> r->headers, checked */
void oai_set_headers(lua_State *L, request *r, int idx);
void oai_add_header(lua_State *L, request *r, const char *line);
int oai_has_crlf(const char *s, size_t n);    /* CR, LF or NUL in s[0..n) */
int oai_request_headers(lua_State *L);       /* req:headers() */
int oai_request_header(lua_State *L);        /* req:header(name) */
int oai_request_raw_headers(lua_State *L);   /* req:raw_headers() */

#endif
