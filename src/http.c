/*
** http.c: libcurl's multi interface as two Lua types.
**
**   oai.multi    one curl multi handle (one per loop): drives transfers in
**                poll mode (multi:perform; on Linux over an epoll set that
**                libcurl's socket callback keeps, elsewhere curl_multi_poll)
**                or, for external event loops, in socket mode
**                (multi:socket_action + queued socket/timer changes)
**   oai.request  one easy handle: request options, captured status/headers,
**                the response body or the raw bytes of an event stream
**
** No Lua runs inside libcurl callbacks: the callbacks only append bytes to
** buffers owned by the request, record socket/timer changes in the multi, and
** link the request into the multi's "ready" list.  Lua collects the ready
** requests from the return value of perform/socket_action and drains them.
** Event streams are framed by the SSE parser when Lua drains (req:read), so
** the event data is decoded straight from the parser's buffer, never copied
** into an intermediate queue.
*/
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#ifdef __linux__
#include <errno.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#define OAI_EPOLL 1
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/tcp.h>      /* struct tcp_info (netinet/tcp.h hides it under c99) */
#define OAI_TCP_INFO 1
#endif

#include "oai.h"
#include "sse.h"

#define OAI_MULTI_MT "oai.multi"
#define OAI_REQUEST_MT "oai.request"

/* ---------------------------------------------------------------- buffers */

typedef struct buf {
  char *p;
  size_t len, cap;
} buf;

static int buf_add(buf *b, const char *s, size_t n) {
  if (n > b->cap - b->len) {
    size_t cap = b->cap ? b->cap : 256;   /* 2,000 streams hold 2,000 of each */
    char *np;
    while (cap - b->len < n) {
      if (cap > ((size_t)-1) / 2) return 0;
      cap *= 2;
    }
    np = (char *)realloc(b->p, cap);
    if (np == NULL) return 0;
    b->p = np;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  return 1;
}

static void buf_free(buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

/* ------------------------------------------------------------------ types */

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

static double monotime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* for the idle timeout, stamped on every received piece: a few ms of
   resolution is plenty, and the coarse clock costs much less */
static double monotime_coarse(void) {
#ifdef CLOCK_MONOTONIC_COARSE
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
#else
  return monotime();
#endif
}

/* ------------------------------------------------------ curl error names */

static const struct { CURLcode code; const char *name; } curl_names[] = {
  { CURLE_OK, "OK" },
  { CURLE_UNSUPPORTED_PROTOCOL, "UNSUPPORTED_PROTOCOL" },
  { CURLE_FAILED_INIT, "FAILED_INIT" },
  { CURLE_URL_MALFORMAT, "URL_MALFORMAT" },
  { CURLE_COULDNT_RESOLVE_PROXY, "COULDNT_RESOLVE_PROXY" },
  { CURLE_COULDNT_RESOLVE_HOST, "COULDNT_RESOLVE_HOST" },
  { CURLE_COULDNT_CONNECT, "COULDNT_CONNECT" },
  { CURLE_WEIRD_SERVER_REPLY, "WEIRD_SERVER_REPLY" },
  { CURLE_REMOTE_ACCESS_DENIED, "REMOTE_ACCESS_DENIED" },
  { CURLE_HTTP2, "HTTP2" },
  { CURLE_PARTIAL_FILE, "PARTIAL_FILE" },
  { CURLE_HTTP_RETURNED_ERROR, "HTTP_RETURNED_ERROR" },
  { CURLE_WRITE_ERROR, "WRITE_ERROR" },
  { CURLE_READ_ERROR, "READ_ERROR" },
  { CURLE_OUT_OF_MEMORY, "OUT_OF_MEMORY" },
  { CURLE_OPERATION_TIMEDOUT, "OPERATION_TIMEDOUT" },
  { CURLE_RANGE_ERROR, "RANGE_ERROR" },
  { CURLE_SSL_CONNECT_ERROR, "SSL_CONNECT_ERROR" },
  { CURLE_BAD_DOWNLOAD_RESUME, "BAD_DOWNLOAD_RESUME" },
  { CURLE_FUNCTION_NOT_FOUND, "FUNCTION_NOT_FOUND" },
  { CURLE_ABORTED_BY_CALLBACK, "ABORTED_BY_CALLBACK" },
  { CURLE_BAD_FUNCTION_ARGUMENT, "BAD_FUNCTION_ARGUMENT" },
  { CURLE_INTERFACE_FAILED, "INTERFACE_FAILED" },
  { CURLE_TOO_MANY_REDIRECTS, "TOO_MANY_REDIRECTS" },
  { CURLE_UNKNOWN_OPTION, "UNKNOWN_OPTION" },
  { CURLE_GOT_NOTHING, "GOT_NOTHING" },
  { CURLE_SSL_ENGINE_NOTFOUND, "SSL_ENGINE_NOTFOUND" },
  { CURLE_SSL_ENGINE_SETFAILED, "SSL_ENGINE_SETFAILED" },
  { CURLE_SEND_ERROR, "SEND_ERROR" },
  { CURLE_RECV_ERROR, "RECV_ERROR" },
  { CURLE_SSL_CERTPROBLEM, "SSL_CERTPROBLEM" },
  { CURLE_SSL_CIPHER, "SSL_CIPHER" },
  { CURLE_PEER_FAILED_VERIFICATION, "PEER_FAILED_VERIFICATION" },
  { CURLE_BAD_CONTENT_ENCODING, "BAD_CONTENT_ENCODING" },
  { CURLE_FILESIZE_EXCEEDED, "FILESIZE_EXCEEDED" },
  { CURLE_SEND_FAIL_REWIND, "SEND_FAIL_REWIND" },
  { CURLE_SSL_ENGINE_INITFAILED, "SSL_ENGINE_INITFAILED" },
  { CURLE_LOGIN_DENIED, "LOGIN_DENIED" },
  { CURLE_SSL_CACERT_BADFILE, "SSL_CACERT_BADFILE" },
  { CURLE_SSL_SHUTDOWN_FAILED, "SSL_SHUTDOWN_FAILED" },
  { CURLE_AGAIN, "AGAIN" },
  { CURLE_SSL_CRL_BADFILE, "SSL_CRL_BADFILE" },
  { CURLE_SSL_ISSUER_ERROR, "SSL_ISSUER_ERROR" },
  { CURLE_CHUNK_FAILED, "CHUNK_FAILED" },
  { CURLE_NO_CONNECTION_AVAILABLE, "NO_CONNECTION_AVAILABLE" },
  { CURLE_SSL_PINNEDPUBKEYNOTMATCH, "SSL_PINNEDPUBKEYNOTMATCH" },
  { CURLE_SSL_INVALIDCERTSTATUS, "SSL_INVALIDCERTSTATUS" },
  { CURLE_HTTP2_STREAM, "HTTP2_STREAM" },
  { CURLE_RECURSIVE_API_CALL, "RECURSIVE_API_CALL" },
  { CURLE_AUTH_ERROR, "AUTH_ERROR" },
  { CURLE_HTTP3, "HTTP3" },
  { CURLE_QUIC_CONNECT_ERROR, "QUIC_CONNECT_ERROR" },
  { CURLE_PROXY, "PROXY" },
  { CURLE_SSL_CLIENTCERT, "SSL_CLIENTCERT" },
#if LIBCURL_VERSION_NUM >= 0x074f00
  { CURLE_UNRECOVERABLE_POLL, "UNRECOVERABLE_POLL" },
#endif
};

/* SSL_CACERT was merged into PEER_FAILED_VERIFICATION in libcurl 7.62; the
   name users look for is SSL_CACERT when the CA is unknown */
static const char *curl_name(CURLcode c, const char *msg) {
  size_t i;
  if (c == CURLE_PEER_FAILED_VERIFICATION && msg != NULL
      && (strstr(msg, "certificate") != NULL && (strstr(msg, "issuer") != NULL
          || strstr(msg, "self-signed") != NULL || strstr(msg, "self signed") != NULL
          || strstr(msg, "verify") != NULL)))
    return strstr(msg, "subject name") != NULL || strstr(msg, "match") != NULL
           ? "PEER_FAILED_VERIFICATION" : "SSL_CACERT";
  for (i = 0; i < sizeof(curl_names) / sizeof(curl_names[0]); i++)
    if (curl_names[i].code == c) return curl_names[i].name;
  return "UNKNOWN";
}

/* ------------------------------------------------------------ ready list */

static void mark_ready(request *r) {
  multi *m = r->m;
  if (r->ready || m == NULL) return;
  r->ready = 1;
  r->next_ready = NULL;
  if (m->ready_tail) m->ready_tail->next_ready = r;
  else m->ready_head = r;
  m->ready_tail = r;
}

static void unlink_ready(multi *m, request *r) {
  request **pp;
  request *prev = NULL;
  if (!r->ready) return;
  for (pp = &m->ready_head; *pp != NULL; prev = *pp, pp = &(*pp)->next_ready) {
    if (*pp == r) {
      *pp = r->next_ready;
      if (m->ready_tail == r) m->ready_tail = prev;
      break;
    }
  }
  r->ready = 0;
  r->next_ready = NULL;
}

/* ------------------------------------------------------ curl callbacks */

static int looks_like_sse(const char *p, size_t n) {
  static const char *const starts[] = { "data", "event", "id", "retry", ":" };
  size_t i, k;
  while (n > 0 && (*p == ' ' || *p == '\r' || *p == '\n' || *p == '\t')) p++, n--;
  if (n >= 3 && (unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB
      && (unsigned char)p[2] == 0xBF) p += 3, n -= 3;
  for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
    k = strlen(starts[i]);
    if (n >= k && memcmp(p, starts[i], k) == 0) return 1;
  }
  return 0;
}

static const char *find_header(const buf *h, const char *name, size_t *vlen);
static int ieq(const char *a, const char *b, size_t n);

/* decide at the first body bytes whether they are an event stream: only for
   a stream request with a 2xx status, by content type, else by sniffing */
static void decide_body(request *r, const char *p, size_t n) {
  size_t ctlen = 0;
  const char *ct;
  r->body_mode = BODY_PLAIN;
  if (!r->want_sse || r->status < 200 || r->status > 299) return;
  ct = find_header(&r->hdr, "content-type", &ctlen);
  if (ct != NULL) {
    size_t i;
    char low[128];
    size_t k = ctlen < sizeof(low) - 1 ? ctlen : sizeof(low) - 1;
    for (i = 0; i < k; i++) low[i] = (char)((ct[i] >= 'A' && ct[i] <= 'Z') ? ct[i] + 32 : ct[i]);
    low[k] = '\0';
    if (strstr(low, "event-stream") != NULL) { r->body_mode = BODY_SSE; return; }
    if (strstr(low, "json") != NULL || strstr(low, "html") != NULL) return;
  }
  if (looks_like_sse(p, n)) r->body_mode = BODY_SSE;
}

/* We ask for identity (Accept-Encoding: identity) and decode nothing, as
   the cosocket transport: a body in any other Content-Encoding cannot be
   read, so it fails at its first byte, naming the encoding */
static int refuse_encoding(request *r) {
  size_t vl = 0, k;
  const char *v = find_header(&r->hdr, "content-encoding", &vl);
  if (v == NULL || vl == 0 || (vl == 8 && ieq(v, "identity", 8))) return 0;
  k = vl < sizeof(r->encoding) - 1 ? vl : sizeof(r->encoding) - 1;
  for (vl = 0; vl < k; vl++) {
    unsigned char c = (unsigned char)v[vl];
    r->encoding[vl] = (char)(c < 32 || c > 126 ? '?' : c);
  }
  r->encoding[k] = '\0';
  r->abort_reason = ABORT_ENCODING;
  return 1;
}

static size_t write_cb(char *p, size_t size, size_t nmemb, void *ud) {
  request *r = (request *)ud;
  size_t n = size * nmemb;
  if (r->abort_reason != ABORT_NONE) return 0;
  if (r->body_mode == BODY_UNDECIDED) {
    if (refuse_encoding(r)) return 0;
    decide_body(r, p, n);
  }
  if (r->body_mode == BODY_SSE && r->body.len >= SSE_HIGH_WATER) {
    /* Lua has not framed what came so far: let libcurl hold the rest (it
       delivers it again on unpause) rather than growing the buffer; a
       fast burst then stays in a small, warm buffer */
    r->paused = 1;
    return CURL_WRITEFUNC_PAUSE;
  }
  if (r->body_mode == BODY_PLAIN && r->max_body > 0 && r->received + n > r->max_body) {
    r->abort_reason = ABORT_TOO_BIG;
    return 0;
  }
  if (!buf_add(&r->body, p, n)) {
    r->abort_reason = ABORT_NOMEM;
    return 0;
  }
  r->received += n;
  r->last_rx = monotime_coarse();
  mark_ready(r);
  return n;
}

static size_t header_cb(char *p, size_t size, size_t nmemb, void *ud) {
  request *r = (request *)ud;
  size_t n = size * nmemb;
  r->last_rx = monotime_coarse();
  if (r->body_mode != BODY_UNDECIDED) return n;   /* trailers: ignored */
  if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {     /* a status line starts a response */
    const char *sp = memchr(p, ' ', n);
    r->hdr.len = 0;
    r->headers_done = 0;
    r->status = 0;
    if (sp != NULL) {
      long st = 0;
      size_t i = (size_t)(sp - p) + 1;
      while (i < n && p[i] >= '0' && p[i] <= '9' && st < 1000) st = st * 10 + (p[i++] - '0');
      r->status = st;
    }
    return n;
  }
  if ((n == 2 && p[0] == '\r' && p[1] == '\n') || (n == 1 && p[0] == '\n')) {
    if (r->status >= 200) {                         /* 1xx responses are skipped */
      r->headers_done = 1;
      mark_ready(r);
    }
    return n;
  }
  if (!buf_add(&r->hdr, p, n)) {
    r->abort_reason = ABORT_NOMEM;
    return 0;
  }
  return n;
}

/* While the response head comes in, libcurl calls back per complete header
   line only, so a server dripping a long line byte by byte would look idle.
   The kernel knows when the connection last received a byte: take that, from
   the transfer's own socket (its local port must match the one libcurl
   reports, so a socket closed and reused since is never read).  Linux only;
   elsewhere idleness in the head is counted per header line. */
static void stamp_from_socket(request *r) {
#ifdef OAI_TCP_INFO
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  struct tcp_info ti;
  socklen_t tl = sizeof ti;
  long port = 0;
  unsigned sport;
  double t;
  if (r->sock == CURL_SOCKET_BAD) return;
  if (curl_easy_getinfo(r->easy, CURLINFO_LOCAL_PORT, &port) != CURLE_OK || port <= 0) return;
  if (getsockname(r->sock, (struct sockaddr *)&ss, &sl) != 0) return;
  if (ss.ss_family == AF_INET) sport = ntohs(((struct sockaddr_in *)&ss)->sin_port);
  else if (ss.ss_family == AF_INET6) sport = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  else return;
  if ((long)sport != port) return;
  memset(&ti, 0, sizeof ti);
  if (getsockopt(r->sock, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0) return;
  t = monotime_coarse() - (double)ti.tcpi_last_data_recv / 1000.0;
  if (t > r->last_rx) r->last_rx = t;
#else
  (void)r;
#endif
}

/* CURLOPT_SOCKOPTFUNCTION: remembers the socket a new connection uses */
static int sockopt_cb(void *ud, curl_socket_t s, curlsocktype purpose) {
  request *r = (request *)ud;
  if (purpose == CURLSOCKTYPE_IPCXN) r->sock = s;
  return CURL_SOCKOPT_OK;
}

/* from the socket callbacks: the socket libcurl watches for transfer e */
static void note_socket(CURL *e, curl_socket_t s) {
  request *r = NULL;
  if (curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r) == CURLE_OK && r != NULL) r->sock = s;
}

/* libcurl calls this at least once a second while a transfer runs (the
   low-speed check keeps a 1 s timer alive): the exact idle timeout,
   "no byte for idle_ms", in the response head as in the body */
static int xferinfo_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
  request *r = (request *)ud;
  (void)dltotal; (void)dlnow; (void)ultotal; (void)ulnow;
  if (r->paused) {   /* waiting for Lua, not for the server */
    r->last_rx = monotime_coarse();
    return 0;
  }
  if (r->idle_ms > 0 && r->body_mode == BODY_UNDECIDED) stamp_from_socket(r);
  if (r->idle_ms > 0 && (monotime_coarse() - r->last_rx) * 1000 >= (double)r->idle_ms) {
    r->abort_reason = ABORT_IDLE;
    return 1;
  }
  return 0;
}

static int socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  multi *m = (multi *)userp;
  (void)socketp;
  if (what != CURL_POLL_REMOVE) note_socket(e, s);
  if (m->sock_n == m->sock_cap) {
    size_t cap = m->sock_cap ? m->sock_cap * 2 : 16;
    curl_socket_t *nf = (curl_socket_t *)realloc(m->sock_fd, cap * sizeof(*nf));
    int *nw;
    if (nf == NULL) { m->nomem = 1; return -1; }
    m->sock_fd = nf;
    nw = (int *)realloc(m->sock_what, cap * sizeof(*nw));
    if (nw == NULL) { m->nomem = 1; return -1; }
    m->sock_what = nw;
    m->sock_cap = cap;
  }
  m->sock_fd[m->sock_n] = s;
  m->sock_what[m->sock_n] = what;
  m->sock_n++;
  return 0;
}

static int timer_cb(CURLM *h, long timeout_ms, void *userp) {
  multi *m = (multi *)userp;
  (void)h;
  m->timer_ms = timeout_ms;
  m->timer_changed = 1;
  return 0;
}

#ifdef OAI_EPOLL
/* epoll mode: libcurl says which sockets to watch for what */
static int ep_socket_cb(CURL *e, curl_socket_t s, int what, void *userp, void *socketp) {
  multi *m = (multi *)userp;
  struct epoll_event ev;
  if (what == CURL_POLL_REMOVE) {
    /* the socket may be closed already; an error here changes nothing */
    epoll_ctl(m->epfd, EPOLL_CTL_DEL, s, NULL);
    return 0;
  }
  note_socket(e, s);
  memset(&ev, 0, sizeof ev);
  ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
  ev.data.fd = s;
  if (socketp != NULL || epoll_ctl(m->epfd, EPOLL_CTL_ADD, s, &ev) != 0) {
    if (epoll_ctl(m->epfd, EPOLL_CTL_MOD, s, &ev) != 0 && errno == ENOENT
        && epoll_ctl(m->epfd, EPOLL_CTL_ADD, s, &ev) != 0) return -1;
  }
  if (socketp == NULL) curl_multi_assign(m->handle, s, (void *)m);   /* "known" */
  return 0;
}

static int ep_timer_cb(CURLM *h, long timeout_ms, void *userp) {
  multi *m = (multi *)userp;
  (void)h;
  m->timer_at = timeout_ms < 0 ? -1.0 : monotime() + (double)timeout_ms / 1000.0;
  return 0;
}

/* wait up to t ms for sockets or libcurl's timer, and act on what is due */
static CURLMcode ep_perform(multi *m, lua_Number t) {
  struct epoll_event evs[64];
  int i, n, wait;
  CURLMcode mc = CURLM_OK;
  if (m->ready_head != NULL || t < 0) t = 0;
  if (m->timer_at >= 0) {
    double left = (m->timer_at - monotime()) * 1000.0;
    if (left < t) t = left > 0 ? left : 0;
  }
  wait = t > 2e9 ? 2000000000 : (int)(t + 0.999);   /* never wake before the timer */
  n = epoll_wait(m->epfd, evs, (int)(sizeof evs / sizeof evs[0]), wait);
  for (i = 0; i < n && mc == CURLM_OK; i++) {
    int mask = 0;
    if (evs[i].data.fd == m->wakefd) {
      unsigned long long x;
      if (read(m->wakefd, &x, sizeof x) < 0) { /* drained already */ }
      continue;
    }
    if (evs[i].events & EPOLLIN) mask |= CURL_CSELECT_IN;
    if (evs[i].events & EPOLLOUT) mask |= CURL_CSELECT_OUT;
    if (evs[i].events & (EPOLLERR | EPOLLHUP)) mask |= CURL_CSELECT_ERR;
    mc = curl_multi_socket_action(m->handle, evs[i].data.fd, mask, &m->running);
  }
  if (mc == CURLM_OK && m->timer_at >= 0 && monotime() >= m->timer_at) {
    m->timer_at = -1;   /* the action sets the next one */
    mc = curl_multi_socket_action(m->handle, CURL_SOCKET_TIMEOUT, 0, &m->running);
  }
  return mc;
}

/* switch a new poll-mode multi to epoll; stays on curl_multi_poll if the
   kernel says no */
static void ep_init(multi *m) {
  struct epoll_event ev;
  m->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (m->epfd < 0) return;
  m->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  memset(&ev, 0, sizeof ev);
  ev.events = EPOLLIN;
  ev.data.fd = m->wakefd;
  if (m->wakefd < 0 || epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->wakefd, &ev) != 0) {
    if (m->wakefd >= 0) close(m->wakefd);
    close(m->epfd);
    m->epfd = m->wakefd = -1;
    return;
  }
  curl_multi_setopt(m->handle, CURLMOPT_SOCKETFUNCTION, ep_socket_cb);
  curl_multi_setopt(m->handle, CURLMOPT_SOCKETDATA, (void *)m);
  curl_multi_setopt(m->handle, CURLMOPT_TIMERFUNCTION, ep_timer_cb);
  curl_multi_setopt(m->handle, CURLMOPT_TIMERDATA, (void *)m);
}
#endif

/* ------------------------------------------------------------- headers */

static int ieq(const char *a, const char *b, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) {
    int ca = (unsigned char)a[i], cb = (unsigned char)b[i];
    if (ca >= 'A' && ca <= 'Z') ca += 32;
    if (cb >= 'A' && cb <= 'Z') cb += 32;
    if (ca != cb) return 0;
  }
  return 1;
}

/* the value of header `name` (lowercase) in the captured lines, trimmed */
static const char *find_header(const buf *h, const char *name, size_t *vlen) {
  size_t nl = strlen(name), i = 0;
  while (i < h->len) {
    const char *line = h->p + i;
    const char *end = memchr(line, '\n', h->len - i);
    size_t ll = end ? (size_t)(end - line) : h->len - i;
    i += ll + 1;
    if (ll > nl && line[nl] == ':' && ieq(line, name, nl)) {
      const char *v = line + nl + 1;
      size_t vl = ll - nl - 1;
      while (vl > 0 && (*v == ' ' || *v == '\t')) v++, vl--;
      while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
      *vlen = vl;
      return v;
    }
  }
  return NULL;
}

/* -------------------------------------------------------------- request */

static request *check_request(lua_State *L, int idx) {
  request *r = (request *)luaL_checkudata(L, idx, OAI_REQUEST_MT);
  if (r->easy == NULL) luaL_error(L, "attempt to use a closed oai.request");
  return r;
}

static void request_detach(request *r, lua_State *L) {
  multi *m = r->m;
  if (m == NULL) return;
  unlink_ready(m, r);
  if (m->handle != NULL) curl_multi_remove_handle(m->handle, r->easy);
  if (r->prev) r->prev->next = r->next;
  else m->attached = r->next;
  if (r->next) r->next->prev = r->prev;
  r->next = r->prev = NULL;
  r->m = NULL;
  if (L != NULL && r->ref != LUA_NOREF) luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
  r->ref = LUA_NOREF;
}

/* ------------------------------------------------------ easy handle pool */

/* Closed requests give their easy handle back (curl_easy_reset keeps
   nothing of the old request but libcurl's caches); creating one costs more
   than the rest of a small request.  One pool per Lua state, in the
   registry; its __gc cleans the handles up. */
#define POOL_KEY "oai.easypool"
#ifndef POOL_MAX
#define POOL_MAX 32
#endif

typedef struct easypool {
  CURL *h[POOL_MAX];
  int n;
  int closed;   /* after __gc: handles given back are cleaned up at once */
} easypool;

static int pool_gc(lua_State *L) {
  easypool *p = (easypool *)lua_touserdata(L, 1);
  while (p->n > 0) curl_easy_cleanup(p->h[--p->n]);
  p->closed = 1;
  return 0;
}

static easypool *get_pool(lua_State *L) {
  easypool *p;
  lua_getfield(L, LUA_REGISTRYINDEX, POOL_KEY);
  p = (easypool *)lua_touserdata(L, -1);
  lua_pop(L, 1);   /* anchored in the registry */
  return p;
}

static CURL *easy_take(lua_State *L) {
  easypool *p = get_pool(L);
  if (p != NULL && !p->closed && p->n > 0) return p->h[--p->n];
  return curl_easy_init();
}

static void easy_give(lua_State *L, CURL *e) {
  easypool *p = get_pool(L);
  if (p != NULL && !p->closed && p->n < POOL_MAX) {
    curl_easy_reset(e);
    p->h[p->n++] = e;
  } else {
    curl_easy_cleanup(e);
  }
}

/* req:close() -> nothing; idempotent; also __gc and __close */
static int request_close(lua_State *L) {
  request *r = (request *)luaL_checkudata(L, 1, OAI_REQUEST_MT);
  if (r->easy == NULL) return 0;
  if (r->m != NULL) request_detach(r, L);
  easy_give(L, r->easy);
  r->easy = NULL;
  curl_slist_free_all(r->headers);
  r->headers = NULL;
  curl_slist_free_all(r->resolve);
  r->resolve = NULL;
  buf_free(&r->body);
  buf_free(&r->hdr);
  oai_sse_free(&r->sse);
  oai_chunk_free(&r->chunk);
  return 0;
}

static int opt_field(lua_State *L, int idx, const char *k) {
  lua_getfield(L, idx, k);
  return !lua_isnil(L, -1);
}

/* a limit in ms or bytes: 0 to 1e12 (and to LONG_MAX where long is 32 bits) */
static long opt_ms(lua_State *L, int idx, const char *k, long def) {
  long v = def;
  if (opt_field(L, idx, k)) {
    lua_Number hi = (lua_Number)LONG_MAX < 1e12 ? (lua_Number)LONG_MAX : 1e12;
    char num[64];
    snprintf(num, sizeof num, "%.14g", (double)hi);
    lua_pushfstring(L, "oai.request: option '%s' must be a non-negative number up to %s", k, num);
    v = (long)oai_checkrange(L, -2, 0, hi, 0, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return v;
}

static const char *opt_str(lua_State *L, int idx, const char *k) {
  const char *s = NULL;
  if (opt_field(L, idx, k)) {
    if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "oai.request: option '%s' must be a string", k);
    s = lua_tostring(L, -1);
  }
  lua_pop(L, 1);   /* the string stays alive in the options table */
  return s;
}

static int has_crlf(const char *s, size_t n) {
  return memchr(s, '\r', n) != NULL || memchr(s, '\n', n) != NULL || memchr(s, '\0', n) != NULL;
}

static void add_header(lua_State *L, request *r, const char *line) {
  struct curl_slist *nl = curl_slist_append(r->headers, line);
  if (nl == NULL) luaL_error(L, "oai.request: out of memory");
  r->headers = nl;
}

/* headers = { ["Name"] = "value", ... }: names and values must not contain
   CR, LF or NUL (header injection); the value is never put into the message */
static void set_headers(lua_State *L, request *r, int idx) {
  luaL_Buffer b;
  if (!opt_field(L, idx, "headers")) { lua_pop(L, 1); return; }
  if (!lua_istable(L, -1)) luaL_error(L, "oai.request: option 'headers' must be a table");
  lua_pushnil(L);
  while (lua_next(L, -2) != 0) {
    size_t kl, vl, i;
    const char *k, *v;
    if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L, "oai.request: header names and values must be strings");
    k = lua_tolstring(L, -2, &kl);
    v = lua_tolstring(L, -1, &vl);
    if (kl == 0) luaL_error(L, "oai.request: empty header name");
    for (i = 0; i < kl; i++)
      if (k[i] <= ' ' || k[i] == ':' || k[i] == 127)
        luaL_error(L, "oai.request: invalid character in header name '%s'", has_crlf(k, kl) ? "(contains CR/LF)" : k);
    if (has_crlf(v, vl)) luaL_error(L, "oai.request: header '%s' has a value containing CR, LF or NUL", k);
    if (kl == 15 && ieq(k, "accept-encoding", 15)) r->own_accept_encoding = 1;
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, k, kl);
    /* "Name;" is libcurl's spelling of a header with an empty value */
    if (vl == 0) luaL_addchar(&b, ';');
    else { luaL_addstring(&b, ": "); luaL_addlstring(&b, v, vl); }
    luaL_pushresult(&b);
    add_header(L, r, lua_tostring(L, -1));
    lua_pop(L, 2);   /* line, value */
  }
  lua_pop(L, 1);
}

#define SETOPT(opt, val) do { if (curl_easy_setopt(r->easy, opt, val) != CURLE_OK) \
  return luaL_error(L, "oai.request: libcurl refused option " #opt); } while (0)

/* request{url=, method=, headers=, body=, stream=, timeout_ms=,
   connect_timeout_ms=, idle_timeout_ms=, proxy=, ca_file=, verify=, resolve=,
   max_body_bytes=, max_event_bytes=} -> req | raises on misuse.
   0 disables a timeout or a limit. */
static int request_new(lua_State *L) {
  request *r;
  const char *url, *method, *s;
  size_t bodylen = 0;
  const char *body = NULL;
  long verify = 1;
  double t, ct, it;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  r = (request *)lua_newuserdatauv(L, sizeof(request), 0);
  memset(r, 0, sizeof(*r));
  r->ref = LUA_NOREF;
  r->sock = CURL_SOCKET_BAD;
  luaL_setmetatable(L, OAI_REQUEST_MT);
  oai_sse_init(&r->sse, 0);
  r->easy = easy_take(L);
  if (r->easy == NULL) return luaL_error(L, "oai.request: curl_easy_init failed");

  url = opt_str(L, 1, "url");
  if (url == NULL) return luaL_error(L, "oai.request: option 'url' is required");
  method = opt_str(L, 1, "method");
  if (method == NULL) method = "GET";

  SETOPT(CURLOPT_URL, url);
  SETOPT(CURLOPT_NOSIGNAL, 1L);
  SETOPT(CURLOPT_TCP_NODELAY, 1L);
  SETOPT(CURLOPT_FOLLOWLOCATION, 0L);
  SETOPT(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
  SETOPT(CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
  /* prefer multiplexing on an HTTP/2 connection being set up, but only
     where one can turn out to be HTTP/2 (TLS, ALPN): on cleartext HTTP
     libcurl would hold this transfer until another one to the same host
     has finished, so concurrent streams would run one after the other */
  SETOPT(CURLOPT_PIPEWAIT, ieq(url, "https://", 8) ? 1L : 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
  SETOPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
  SETOPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
  SETOPT(CURLOPT_ERRORBUFFER, r->errbuf);
  SETOPT(CURLOPT_WRITEFUNCTION, write_cb);
  SETOPT(CURLOPT_WRITEDATA, (void *)r);
  SETOPT(CURLOPT_HEADERFUNCTION, header_cb);
  SETOPT(CURLOPT_HEADERDATA, (void *)r);
  SETOPT(CURLOPT_PRIVATE, (void *)r);

  if (opt_field(L, 1, "body")) {
    if (lua_type(L, -1) != LUA_TSTRING) return luaL_error(L, "oai.request: option 'body' must be a string");
    body = lua_tolstring(L, -1, &bodylen);
  }
  lua_pop(L, 1);
  if (strcmp(method, "GET") == 0 && body == NULL) SETOPT(CURLOPT_HTTPGET, 1L);
  else {
    if (strcmp(method, "POST") != 0) {
      size_t i, ml = strlen(method);
      for (i = 0; i < ml; i++)
        if (!(method[i] >= 'A' && method[i] <= 'Z')) return luaL_error(L, "oai.request: invalid method");
      SETOPT(CURLOPT_CUSTOMREQUEST, method);
    }
    if (body != NULL || strcmp(method, "POST") == 0) {
      SETOPT(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)bodylen);
      SETOPT(CURLOPT_COPYPOSTFIELDS, body != NULL ? body : "");
    }
  }

  set_headers(L, r, 1);
  add_header(L, r, "Expect:");   /* no 100-continue round trip for big bodies */

  if (opt_field(L, 1, "stream")) r->want_sse = lua_toboolean(L, -1);
  lua_pop(L, 1);
  /* identity only, as the cosocket transport (which has no zlib): both
     accept the same bodies; a server that compresses anyway is refused
     with BAD_CONTENT_ENCODING (refuse_encoding) */
  if (!r->own_accept_encoding) add_header(L, r, "Accept-Encoding: identity");
  SETOPT(CURLOPT_HTTPHEADER, r->headers);

  t = (double)opt_ms(L, 1, "timeout_ms", 0);
  ct = (double)opt_ms(L, 1, "connect_timeout_ms", 0);
  it = (double)opt_ms(L, 1, "idle_timeout_ms", 0);
  if (t > 0) SETOPT(CURLOPT_TIMEOUT_MS, (long)t);
  if (ct > 0) SETOPT(CURLOPT_CONNECTTIMEOUT_MS, (long)ct);
  if (it > 0) {
    /* the low-speed check is only a backstop (it averages over seconds);
       the progress callback measures the time since the last byte */
    long secs = (long)((it + 999) / 1000);
    r->idle_ms = (long)it;
    SETOPT(CURLOPT_LOW_SPEED_LIMIT, 1L);
    SETOPT(CURLOPT_LOW_SPEED_TIME, secs < 1 ? 1L : secs);
    SETOPT(CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
    SETOPT(CURLOPT_XFERINFODATA, (void *)r);
    SETOPT(CURLOPT_NOPROGRESS, 0L);
    SETOPT(CURLOPT_SOCKOPTFUNCTION, sockopt_cb);
    SETOPT(CURLOPT_SOCKOPTDATA, (void *)r);
  }
  if (opt_field(L, 1, "resolve")) {
    /* {"host:port:address", ...}: pin names to addresses (tests, split DNS) */
    int i, n;
    if (!lua_istable(L, -1)) return luaL_error(L, "oai.request: option 'resolve' must be an array of strings");
    n = (int)lua_rawlen(L, -1);
    for (i = 1; i <= n; i++) {
      struct curl_slist *nl;
      size_t l;
      const char *e;
      lua_rawgeti(L, -1, i);
      e = lua_tolstring(L, -1, &l);
      if (e == NULL || has_crlf(e, l)) return luaL_error(L, "oai.request: option 'resolve' must be an array of strings");
      nl = curl_slist_append(r->resolve, e);
      if (nl == NULL) return luaL_error(L, "oai.request: out of memory");
      r->resolve = nl;
      lua_pop(L, 1);
    }
    SETOPT(CURLOPT_RESOLVE, r->resolve);
  }
  lua_pop(L, 1);
  if ((s = opt_str(L, 1, "proxy")) != NULL) SETOPT(CURLOPT_PROXY, s);
  if ((s = opt_str(L, 1, "ca_file")) != NULL) SETOPT(CURLOPT_CAINFO, s);
  if (opt_field(L, 1, "verify")) verify = lua_toboolean(L, -1);
  lua_pop(L, 1);
  SETOPT(CURLOPT_SSL_VERIFYPEER, verify);
  SETOPT(CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
  r->max_body = (size_t)opt_ms(L, 1, "max_body_bytes", 0);
  {
    long mx = opt_ms(L, 1, "max_event_bytes", 0);
    if (mx > 0) { oai_sse_free(&r->sse); oai_sse_init(&r->sse, (size_t)mx); }
  }
  return 1;
}

/* req:status() -> status code (integer) or nil before the headers are in */
static int request_status(lua_State *L) {
  request *r = check_request(L, 1);
  if (!r->headers_done) return 0;
  lua_pushinteger(L, (lua_Integer)r->status);
  return 1;
}

/* req:headers() -> { [lowercase name] = value, ... } (repeats joined with ", ") */
static int request_headers(lua_State *L) {
  request *r = check_request(L, 1);
  size_t i = 0;
  lua_newtable(L);
  while (i < r->hdr.len) {
    const char *line = r->hdr.p + i;
    const char *end = memchr(line, '\n', r->hdr.len - i);
    size_t ll = end ? (size_t)(end - line) : r->hdr.len - i;
    const char *colon = memchr(line, ':', ll);
    i += ll + 1;
    if (colon != NULL && colon > line) {
      size_t nl = (size_t)(colon - line), k;
      const char *v = colon + 1;
      size_t vl = ll - nl - 1;
      luaL_Buffer b;
      while (vl > 0 && (*v == ' ' || *v == '\t')) v++, vl--;
      while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == ' ' || v[vl - 1] == '\t')) vl--;
      luaL_buffinit(L, &b);
      for (k = 0; k < nl; k++) {
        char c = line[k];
        luaL_addchar(&b, (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c);
      }
      luaL_pushresult(&b);               /* t name */
      lua_pushvalue(L, -1);
      lua_rawget(L, -3);                 /* t name old */
      if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushlstring(L, v, vl);
      } else {
        lua_pushliteral(L, ", ");
        lua_pushlstring(L, v, vl);
        lua_concat(L, 3);
      }
      lua_rawset(L, -3);
    }
  }
  return 1;
}

/* req:raw_headers() -> the header lines of the final response, as sent */
static int request_raw_headers(lua_State *L) {
  request *r = check_request(L, 1);
  lua_pushlstring(L, r->hdr.p ? r->hdr.p : "", r->hdr.len);
  return 1;
}

/* req:header(name) -> value or nil (name compared case-insensitively) */
static int request_header(lua_State *L) {
  request *r = check_request(L, 1);
  size_t nl, vl = 0, i;
  const char *name = luaL_checklstring(L, 2, &nl);
  char low[64];
  const char *v;
  if (nl >= sizeof(low)) return 0;
  for (i = 0; i < nl; i++) low[i] = (char)((name[i] >= 'A' && name[i] <= 'Z') ? name[i] + 32 : name[i]);
  low[nl] = '\0';
  v = find_header(&r->hdr, low, &vl);
  if (v == NULL) return 0;
  lua_pushlstring(L, v, vl);
  return 1;
}

/* req:body() -> the whole plain body received so far (a copy; not consumed) */
static int request_body(lua_State *L) {
  request *r = check_request(L, 1);
  lua_pushlstring(L, r->body.p ? r->body.p : "", r->body.len);
  return 1;
}

/* req:is_sse() -> true if the response body is being read as an event
   stream, false if as a plain body, nil while no body byte has arrived */
static int request_is_sse(lua_State *L) {
  request *r = check_request(L, 1);
  if (r->body_mode == BODY_UNDECIDED) return 0;
  lua_pushboolean(L, r->body_mode == BODY_SSE);
  return 1;
}

typedef struct read_ctx {
  lua_State *L;
  int n;
} read_ctx;

static int push_event(void *ud, const oai_sse_event *ev) {
  read_ctx *c = (read_ctx *)ud;
  lua_State *L = c->L;
  lua_createtable(L, 0, 3);
  lua_pushlstring(L, ev->type, ev->type_len);
  lua_setfield(L, -2, "type");
  lua_pushlstring(L, ev->data, ev->data_len);
  lua_setfield(L, -2, "data");
  lua_pushlstring(L, ev->id, ev->id_len);
  lua_setfield(L, -2, "id");
  lua_rawseti(L, -2, ++c->n);
  return 0;
}

/* frame the raw bytes received since the last call; consumed bytes are
   dropped even when the parser fails (it is then unusable anyway) */
static int frame_pending(lua_State *L, request *r, oai_sse_event_fn fn, void *ud) {
  int rc;
  size_t n = r->body.len;
  if (n == 0) return 0;
  rc = oai_sse_feed(&r->sse, r->body.p, n, fn, ud);
  r->body.len = 0;
  if (r->paused && r->easy != NULL) {
    /* room again: libcurl may hand over what it held right here (our
       write callback only buffers), the rest comes with the next perform */
    r->paused = 0;
    curl_easy_pause(r->easy, CURLPAUSE_CONT);
  }
  (void)L;
  return rc;
}

/* req:read() -> array of {type=, data=, id=} events framed since the last
   call (possibly empty) | nil, err when the event size limit was exceeded */
static int request_read(lua_State *L) {
  request *r = check_request(L, 1);
  read_ctx c;
  int rc;
  if (r->body_mode != BODY_SSE) luaL_error(L, "oai.request: read() on a response that is not an event stream");
  lua_newtable(L);
  c.L = L;
  c.n = 0;
  rc = frame_pending(L, r, push_event, &c);
  if (rc != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, oai_sse_strerror(rc));
    return 2;
  }
  return 1;
}

typedef struct rec_ctx {
  lua_State *L;
  request *r;
  int t, n, raw;
} rec_ctx;

static int record_event(void *ud, const oai_sse_event *ev) {
  rec_ctx *c = (rec_ctx *)ud;
  return oai_chunk_records(c->L, c->t, &c->n, ev->type, ev->type_len, ev->data,
                           ev->data_len, &c->r->chunk, c->raw);
}

/* req:read_records(out, flags[, final]) -> n, stop: frames the bytes received since
   the last call and decodes each chunk into records (chunk.c) stored in
   out[1..n]; stop is true after [DONE], an error event or a bad chunk.
   flags: 1 = hand out whole decoded chunks (RAW records); final: end an
   unterminated last event first */
static int request_read_records(lua_State *L) {
  request *r = check_request(L, 1);
  rec_ctx c;
  int rc;
  luaL_checktype(L, 2, LUA_TTABLE);
  if (r->body_mode != BODY_SSE) luaL_error(L, "oai.request: read_records() on a response that is not an event stream");
  c.L = L;
  c.r = r;
  c.t = 2;
  c.n = 0;
  c.raw = lua_isnoneornil(L, 3) ? 0
    : (int)oai_checkrange(L, 3, 0, INT_MAX, 1, "oai.request: read_records flags must be a non-negative integer") & 1;
  if (lua_toboolean(L, 4) && oai_sse_pending(&r->sse)) {
    /* final: terminate an unterminated last event to see what it was */
    if (!buf_add(&r->body, "\n\n", 2)) return luaL_error(L, "oai.request: out of memory");
  }
  lua_settop(L, 3);
  rc = frame_pending(L, r, record_event, &c);
  if (rc < 0) {
    /* a parser failure (event size limit, memory) */
    lua_pushinteger(L, 15);
    lua_rawseti(L, 2, ++c.n);
    lua_pushliteral(L, "");
    lua_rawseti(L, 2, ++c.n);
    if (rc == OAI_SSE_ETOOBIG)
      lua_pushfstring(L, "%s (%d)", oai_sse_strerror(rc), (int)r->sse.max);
    else
      lua_pushstring(L, oai_sse_strerror(rc));
    lua_rawseti(L, 2, ++c.n);
  }
  lua_pushinteger(L, c.n);
  lua_pushboolean(L, rc != 0);
  return 2;
}

/* req:flush_records(out, flags) -> n: when the body ended without [DONE],
   the records of what the chunk decoder still holds (a UTF-16 high half that
   no low half followed becomes U+FFFD), in out[1..n] */
static int request_flush_records(lua_State *L) {
  request *r = check_request(L, 1);
  int n = 0;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3);
  oai_chunk_flush(L, 2, &n, &r->chunk, (int)(luaL_optinteger(L, 3, 0) & 1));
  lua_pushinteger(L, n);
  return 1;
}

/* req:pending() -> true if an event stream ended inside an event */
static int request_pending(lua_State *L) {
  request *r = check_request(L, 1);
  lua_pushboolean(L, r->body_mode == BODY_SSE && (r->body.len > 0 || oai_sse_pending(&r->sse)));
  return 1;
}

/* req:result() -> done, [ok, name, message]: done is false while running;
   once done, ok is true on success, else name is a stable libcurl error
   name (or BODY_TOO_LARGE / OUT_OF_MEMORY / CANCELED) and message a text */
static int request_result(lua_State *L) {
  request *r = check_request(L, 1);
  if (!r->done) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushboolean(L, 1);
  if (r->result == CURLE_OK && r->abort_reason == ABORT_NONE) {
    lua_pushboolean(L, 1);
    return 2;
  }
  lua_pushboolean(L, 0);
  switch (r->abort_reason) {
    case ABORT_TOO_BIG:
      lua_pushliteral(L, "BODY_TOO_LARGE");
      lua_pushfstring(L, "response body exceeds max_body_bytes (%d)", (int)r->max_body);
      return 4;
    case ABORT_NOMEM:
      lua_pushliteral(L, "OUT_OF_MEMORY");
      lua_pushliteral(L, "out of memory while receiving the response");
      return 4;
    case ABORT_IDLE:
      lua_pushliteral(L, "OPERATION_TIMEDOUT");
      lua_pushfstring(L, "no data received for %d ms (idle_timeout)", (int)r->idle_ms);
      return 4;
    case ABORT_CANCELED:
      lua_pushliteral(L, "CANCELED");
      lua_pushliteral(L, "request canceled");
      return 4;
    case ABORT_ENCODING:
      lua_pushliteral(L, "BAD_CONTENT_ENCODING");
      lua_pushfstring(L, "the server sent a body with Content-Encoding: %s;"
                      " oai asks for identity (Accept-Encoding: identity) and decodes none", r->encoding);
      return 4;
    default: break;
  }
  lua_pushstring(L, curl_name(r->result, r->errbuf));
  lua_pushstring(L, r->errbuf[0] ? r->errbuf : curl_easy_strerror(r->result));
  return 4;
}

/* req:info() -> {elapsed, connect_time, start_transfer, http_version,
   num_connects, local_port, primary_ip, received} */
static int request_info(lua_State *L) {
  request *r = check_request(L, 1);
  double d;
  long l;
  char *s = NULL;
  lua_createtable(L, 0, 8);
  if (curl_easy_getinfo(r->easy, CURLINFO_TOTAL_TIME, &d) == CURLE_OK) {
    lua_pushnumber(L, d);
    lua_setfield(L, -2, "elapsed");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_CONNECT_TIME, &d) == CURLE_OK) {
    lua_pushnumber(L, d);
    lua_setfield(L, -2, "connect_time");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_STARTTRANSFER_TIME, &d) == CURLE_OK) {
    lua_pushnumber(L, d);
    lua_setfield(L, -2, "start_transfer");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_HTTP_VERSION, &l) == CURLE_OK) {
    const char *v = l == CURL_HTTP_VERSION_2_0 ? "2" : l == CURL_HTTP_VERSION_1_1 ? "1.1"
                  : l == CURL_HTTP_VERSION_1_0 ? "1.0" : l == CURL_HTTP_VERSION_3 ? "3" : NULL;
    if (v != NULL) {
      lua_pushstring(L, v);
      lua_setfield(L, -2, "http_version");
    }
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_NUM_CONNECTS, &l) == CURLE_OK) {
    lua_pushinteger(L, (lua_Integer)l);
    lua_setfield(L, -2, "num_connects");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_LOCAL_PORT, &l) == CURLE_OK) {
    lua_pushinteger(L, (lua_Integer)l);
    lua_setfield(L, -2, "local_port");
  }
  if (curl_easy_getinfo(r->easy, CURLINFO_PRIMARY_IP, &s) == CURLE_OK && s != NULL) {
    lua_pushstring(L, s);
    lua_setfield(L, -2, "primary_ip");
  }
  lua_pushnumber(L, (lua_Number)r->received);
  lua_setfield(L, -2, "received");
  return 1;
}

/* req:cancel() -> nothing: stops the transfer now and releases its
   connection; the request then reads as done with CANCELED */
static int request_cancel(lua_State *L) {
  request *r = check_request(L, 1);
  if (r->m != NULL) request_detach(r, L);
  if (!r->done) {
    r->done = 1;
    r->abort_reason = ABORT_CANCELED;
  }
  return 0;
}

static int request_tostring(lua_State *L) {
  request *r = (request *)luaL_checkudata(L, 1, OAI_REQUEST_MT);
  if (r->easy == NULL) lua_pushliteral(L, "oai.request (closed)");
  else lua_pushfstring(L, "oai.request (%p)", (void *)r);
  return 1;
}

/* ---------------------------------------------------------------- multi */

static multi *check_multi(lua_State *L, int idx) {
  multi *m = (multi *)luaL_checkudata(L, idx, OAI_MULTI_MT);
  if (m->handle == NULL) luaL_error(L, "attempt to use a closed oai.multi");
  return m;
}

/* multi{socket_mode=false} -> multi */
static int multi_new(lua_State *L) {
  multi *m;
  int sockmode = 0;
  if (lua_istable(L, 1)) {
    lua_getfield(L, 1, "socket_mode");
    sockmode = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  m = (multi *)lua_newuserdatauv(L, sizeof(multi), 0);
  memset(m, 0, sizeof(*m));
  m->timer_ms = -1;
  m->epfd = m->wakefd = -1;
  m->timer_at = -1;
  luaL_setmetatable(L, OAI_MULTI_MT);
  m->handle = curl_multi_init();
  if (m->handle == NULL) return luaL_error(L, "oai.multi: curl_multi_init failed");
  curl_multi_setopt(m->handle, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
  curl_multi_setopt(m->handle, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
  curl_multi_setopt(m->handle, CURLMOPT_MAXCONNECTS, 64L);
  m->socket_mode = sockmode;
  if (sockmode) {
    curl_multi_setopt(m->handle, CURLMOPT_SOCKETFUNCTION, socket_cb);
    curl_multi_setopt(m->handle, CURLMOPT_SOCKETDATA, (void *)m);
    curl_multi_setopt(m->handle, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(m->handle, CURLMOPT_TIMERDATA, (void *)m);
  }
#ifdef OAI_EPOLL
  else if (getenv("OAI_NO_EPOLL") == NULL) ep_init(m);
#endif
  return 1;
}

/* multi:close() -> nothing; idempotent; detaches (and so cancels) every
   request it drives; also __gc and __close */
static int multi_close(lua_State *L) {
  multi *m = (multi *)luaL_checkudata(L, 1, OAI_MULTI_MT);
  if (m->handle == NULL) return 0;
  while (m->attached != NULL) {
    request *r = m->attached;
    request_detach(r, L);
    if (!r->done) {
      r->done = 1;
      r->abort_reason = ABORT_CANCELED;
    }
  }
  curl_multi_cleanup(m->handle);
  m->handle = NULL;
#ifdef OAI_EPOLL
  if (m->epfd >= 0) close(m->epfd);
  if (m->wakefd >= 0) close(m->wakefd);
  m->epfd = m->wakefd = -1;
#endif
  free(m->sock_fd);
  free(m->sock_what);
  m->sock_fd = NULL;
  m->sock_what = NULL;
  m->sock_n = m->sock_cap = 0;
  return 0;
}

/* multi:add(req) -> nothing | raises if req is already attached, finished
   or closed.  The multi pins req until it completes or is canceled. */
static int multi_add(lua_State *L) {
  multi *m = check_multi(L, 1);
  request *r = check_request(L, 2);
  CURLMcode mc;
  if (r->m != NULL) return luaL_error(L, "oai.multi: request is already running");
  if (r->started) return luaL_error(L, "oai.multi: a request can only be started once");
  r->t_start = monotime();
  r->last_rx = monotime_coarse();
  r->started = 1;
  /* link and pin first: libcurl may call the timer callback from inside
     curl_multi_add_handle, which only records the change */
  r->m = m;
  r->next = m->attached;
  r->prev = NULL;
  if (m->attached) m->attached->prev = r;
  m->attached = r;
  lua_pushvalue(L, 2);
  r->ref = luaL_ref(L, LUA_REGISTRYINDEX);
  mc = curl_multi_add_handle(m->handle, r->easy);
  if (mc != CURLM_OK) {
    request_detach(r, L);
    r->started = 0;
    return luaL_error(L, "oai.multi: %s", curl_multi_strerror(mc));
  }
  return 0;
}

/* multi:remove(req) -> nothing: detaches req (as req:cancel()) */
static int multi_remove(lua_State *L) {
  multi *m = check_multi(L, 1);
  request *r = check_request(L, 2);
  if (r->m == m) {
    request_detach(r, L);
    if (!r->done) {
      r->done = 1;
      r->abort_reason = ABORT_CANCELED;
    }
  }
  return 0;
}

/* collect finished transfers, then push the ready list as an array */
static int push_ready(lua_State *L, multi *m, int running) {
  CURLMsg *msg;
  int left, n = 0;
  while ((msg = curl_multi_info_read(m->handle, &left)) != NULL) {
    request *r = NULL;
    if (msg->msg != CURLMSG_DONE) continue;
    curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
    if (r == NULL) continue;
    r->done = 1;
    r->result = msg->data.result;
    if (r->status == 0) {
      long code = 0;
      curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
      if (code > 0 && r->headers_done) r->status = code;
    }
    mark_ready(r);
    /* the handle stays in the multi (its connection is already back in
       the pool) until the request is closed: removing 50 handles costs
       milliseconds, and closing happens in task code, which a game loop's
       step budget spreads over frames */
  }
  lua_pushinteger(L, running);
  lua_newtable(L);
  while (m->ready_head != NULL) {
    request *r = m->ready_head;
    m->ready_head = r->next_ready;
    if (m->ready_head == NULL) m->ready_tail = NULL;
    r->ready = 0;
    r->next_ready = NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, r->ref);
    lua_rawseti(L, -2, ++n);
    if (r->done && r->ref != LUA_NOREF) {
      /* unpin: a finished request lives as long as Lua holds it */
      luaL_unref(L, LUA_REGISTRYINDEX, r->ref);
      r->ref = LUA_NOREF;
    }
  }
  return 2;
}

/* multi:perform(timeout_ms) -> running, ready: performs, and if nothing is
   ready waits up to timeout_ms (0 never waits) for activity or wakeup();
   ready is an array of requests with news (headers, data, completion) */
static int multi_perform(lua_State *L) {
  multi *m = check_multi(L, 1);
  /* NaN would reach an (int) cast; infinity waits as long as allowed */
  lua_Number t = lua_isnoneornil(L, 2) ? 0
    : oai_checkrange(L, 2, 0, HUGE_VAL, 0, "oai.multi: perform timeout_ms must be a non-negative number");
  int running = 0;
  CURLMcode mc;
  if (m->socket_mode) return luaL_error(L, "oai.multi: perform() on a multi in socket mode");
#ifdef OAI_EPOLL
  if (m->epfd >= 0) {
    mc = ep_perform(m, t);
    if (mc != CURLM_OK) return luaL_error(L, "oai.multi: %s", curl_multi_strerror(mc));
    return push_ready(L, m, m->running);
  }
#endif
  if (m->ready_head == NULL && t > 0) {
    /* libcurl's own pattern, one perform per poll: the poll returns at once
       when something is due without socket activity (a request just added
       or unpaused, TLS data already buffered: libcurl's timer is then 0),
       so a perform before it would only walk every transfer once more */
    int numfds = 0;
    mc = curl_multi_poll(m->handle, NULL, 0, t > 2e9 ? 2000000000 : (int)t, &numfds);
    if (mc != CURLM_OK) return luaL_error(L, "oai.multi: %s", curl_multi_strerror(mc));
  }
  mc = curl_multi_perform(m->handle, &running);
  if (mc != CURLM_OK) return luaL_error(L, "oai.multi: %s", curl_multi_strerror(mc));
  return push_ready(L, m, running);
}

/* multi:wakeup() -> nothing: makes a waiting perform() return early */
static int multi_wakeup(lua_State *L) {
  multi *m = check_multi(L, 1);
#ifdef OAI_EPOLL
  if (m->epfd >= 0) {
    unsigned long long one = 1;
    if (write(m->wakefd, &one, sizeof one) < 0) { /* already signalled */ }
    return 0;
  }
#endif
  curl_multi_wakeup(m->handle);
  return 0;
}

/* multi:timeout() -> ms until libcurl wants to be called (-1: no timeout) */
static int multi_timeout(lua_State *L) {
  multi *m = check_multi(L, 1);
  long ms = -1;
  curl_multi_timeout(m->handle, &ms);
  lua_pushinteger(L, (lua_Integer)ms);
  return 1;
}

/* multi:count() -> number of running requests */
static int multi_count(lua_State *L) {
  multi *m = check_multi(L, 1);
  int n = 0;
  request *r;
  for (r = m->attached; r != NULL; r = r->next) if (!r->done) n++;
  lua_pushinteger(L, n);
  return 1;
}

/* multi:socket_changes() -> changes, timer: changes is a flat array
   {fd1, what1, fd2, what2, ...} (what: 1 in, 2 out, 3 both, 4 remove)
   queued since the last call; timer is the new timeout in ms (-1: delete)
   or nil if unchanged */
static int multi_socket_changes(lua_State *L) {
  multi *m = check_multi(L, 1);
  size_t i;
  if (m->nomem) {
    m->nomem = 0;
    return luaL_error(L, "oai.multi: out of memory in socket callback");
  }
  lua_createtable(L, (int)(m->sock_n * 2), 0);
  for (i = 0; i < m->sock_n; i++) {
    lua_pushinteger(L, (lua_Integer)m->sock_fd[i]);
    lua_rawseti(L, -2, (int)(2 * i + 1));
    lua_pushinteger(L, (lua_Integer)m->sock_what[i]);
    lua_rawseti(L, -2, (int)(2 * i + 2));
  }
  m->sock_n = 0;
  if (m->timer_changed) {
    m->timer_changed = 0;
    lua_pushinteger(L, (lua_Integer)m->timer_ms);
  } else lua_pushnil(L);
  return 2;
}

/* multi:socket_action(fd, events) -> running, ready: fd nil means the
   timer fired; events: 1 readable, 2 writable, 4 error (bit mask) */
static int multi_socket_action(lua_State *L) {
  multi *m = check_multi(L, 1);
  curl_socket_t fd = CURL_SOCKET_TIMEOUT;
  int ev = lua_isnoneornil(L, 3) ? 0
    : (int)oai_checkrange(L, 3, 0, 7, 1, "oai.multi: socket_action events must be an integer from 0 to 7");
  int mask = 0, running = 0;
  CURLMcode mc;
  if (!lua_isnoneornil(L, 2))
    fd = (curl_socket_t)oai_checkrange(L, 2, 0, INT_MAX, 1, "oai.multi: socket_action fd must be a non-negative integer");
  if (ev & 1) mask |= CURL_CSELECT_IN;
  if (ev & 2) mask |= CURL_CSELECT_OUT;
  if (ev & 4) mask |= CURL_CSELECT_ERR;
  mc = curl_multi_socket_action(m->handle, fd, mask, &running);
  if (mc != CURLM_OK) return luaL_error(L, "oai.multi: %s", curl_multi_strerror(mc));
  return push_ready(L, m, running);
}

static int multi_tostring(lua_State *L) {
  multi *m = (multi *)luaL_checkudata(L, 1, OAI_MULTI_MT);
  if (m->handle == NULL) lua_pushliteral(L, "oai.multi (closed)");
  else lua_pushfstring(L, "oai.multi (%p)", (void *)m);
  return 1;
}

/* ------------------------------------------------------------ utilities */

/* monotime() -> seconds (float) from a monotonic clock */
static int l_monotime(lua_State *L) {
  lua_pushnumber(L, monotime());
  return 1;
}

/* getdate(text) -> unix time of an HTTP date | nil */
static int l_getdate(lua_State *L) {
  time_t t = curl_getdate(luaL_checkstring(L, 1), NULL);
  if (t == (time_t)-1) return 0;
  lua_pushnumber(L, (lua_Number)t);
  return 1;
}

/* curl_info() -> {version=, ssl=, http2=, async_dns=, threaded_resolver=} */
static int l_curl_info(lua_State *L) {
  curl_version_info_data *d = curl_version_info(CURLVERSION_NOW);
  lua_createtable(L, 0, 5);
  lua_pushstring(L, d->version);
  lua_setfield(L, -2, "version");
  lua_pushstring(L, d->ssl_version ? d->ssl_version : "");
  lua_setfield(L, -2, "ssl");
  lua_pushboolean(L, (d->features & CURL_VERSION_HTTP2) != 0);
  lua_setfield(L, -2, "http2");
  lua_pushboolean(L, (d->features & CURL_VERSION_ASYNCHDNS) != 0);
  lua_setfield(L, -2, "async_dns");
  return 1;
}

static const luaL_Reg request_methods[] = {
  { "status", request_status },
  { "headers", request_headers },
  { "header", request_header },
  { "raw_headers", request_raw_headers },
  { "body", request_body },
  { "is_sse", request_is_sse },
  { "read", request_read },
  { "read_records", request_read_records },
  { "pending", request_pending },
  { "flush_records", request_flush_records },
  { "result", request_result },
  { "info", request_info },
  { "cancel", request_cancel },
  { "close", request_close },
  { NULL, NULL }
};

static const luaL_Reg multi_methods[] = {
  { "add", multi_add },
  { "remove", multi_remove },
  { "perform", multi_perform },
  { "wakeup", multi_wakeup },
  { "timeout", multi_timeout },
  { "count", multi_count },
  { "socket_changes", multi_socket_changes },
  { "socket_action", multi_socket_action },
  { "close", multi_close },
  { NULL, NULL }
};

static void new_type(lua_State *L, const char *name, const luaL_Reg *methods,
                     lua_CFunction close, lua_CFunction tostr) {
  luaL_newmetatable(L, name);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, close);
  lua_setfield(L, -2, "__close");
  lua_pushcfunction(L, tostr);
  lua_setfield(L, -2, "__tostring");
  lua_pushstring(L, name);
  lua_setfield(L, -2, "__name");
  lua_pop(L, 1);
}

void oai_open_http(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "multi", multi_new },
    { "request", request_new },
    { "monotime", l_monotime },
    { "getdate", l_getdate },
    { "curl_info", l_curl_info },
    { NULL, NULL }
  };
  /* not thread-safe, and only the first call does anything */
  curl_global_init(CURL_GLOBAL_DEFAULT);
  {
    easypool *p = (easypool *)lua_newuserdatauv(L, sizeof(easypool), 0);
    memset(p, 0, sizeof(*p));
    lua_newtable(L);
    lua_pushcfunction(L, pool_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, POOL_KEY);
  }
  new_type(L, OAI_MULTI_MT, multi_methods, multi_close, multi_tostring);
  new_type(L, OAI_REQUEST_MT, request_methods, request_close, request_tostring);
  luaL_setfuncs(L, funcs, 0);
}
