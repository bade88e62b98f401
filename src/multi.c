/*
** multi.c: oai.multi, one libcurl multi handle (one per loop) and its three
** ways to wait.  Poll mode (multi:perform): on Linux over an epoll set that
** libcurl's socket callback keeps, acting on the ready sockets only;
** elsewhere (or with OAI_NO_EPOLL) curl_multi_poll + curl_multi_perform.
** Socket mode, for external event loops: multi:socket_action, with the
** socket/timer changes libcurl asks for queued for Lua (socket_changes).
** Also the ready list: the requests with news, linked in by the callbacks
** (which run no Lua) and handed to Lua by perform/socket_action.
*/
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <errno.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#define OAI_EPOLL 1
#endif

#include "http.h"

/* ------------------------------------------------------------ ready list */

void oai_mark_ready(request *r) {
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

/* out of its multi: off the ready list and the attached list, unpinned */
void oai_request_detach(request *r, lua_State *L) {
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

/* ------------------------------------------------------ socket callbacks */

/* from the socket callbacks: the socket libcurl watches for transfer e */
static void note_socket(CURL *e, curl_socket_t s) {
  request *r = NULL;
  if (curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&r) == CURLE_OK && r != NULL) r->sock = s;
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
  m->timer_at = timeout_ms < 0 ? -1.0 : oai_monotime() + (double)timeout_ms / 1000.0;
  return 0;
}

/* wait up to t ms for sockets or libcurl's timer, and act on what is due */
static CURLMcode ep_perform(multi *m, lua_Number t) {
  struct epoll_event evs[64];
  int i, n, wait;
  CURLMcode mc = CURLM_OK;
  if (m->ready_head != NULL || t < 0) t = 0;
  if (m->timer_at >= 0) {
    double left = (m->timer_at - oai_monotime()) * 1000.0;
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
  if (mc == CURLM_OK && m->timer_at >= 0 && oai_monotime() >= m->timer_at) {
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
    oai_request_detach(r, L);
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
  request *r = oai_check_request(L, 2);
  CURLMcode mc;
  if (r->m != NULL) return luaL_error(L, "oai.multi: request is already running");
  if (r->started) return luaL_error(L, "oai.multi: a request can only be started once");
  r->t_start = oai_monotime();
  r->last_rx = oai_monotime_coarse();
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
    oai_request_detach(r, L);
    r->started = 0;
    return luaL_error(L, "oai.multi: %s", curl_multi_strerror(mc));
  }
  return 0;
}

/* multi:remove(req) -> nothing: detaches req (as req:cancel()) */
static int multi_remove(lua_State *L) {
  multi *m = check_multi(L, 1);
  request *r = oai_check_request(L, 2);
  if (r->m == m) {
    oai_request_detach(r, L);
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
    oai_mark_ready(r);
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

/* module table on top: sets multi */
void oai_open_multi(lua_State *L) {
  oai_new_type(L, OAI_MULTI_MT, multi_methods, multi_close, multi_tostring);
  lua_pushcfunction(L, multi_new);
  lua_setfield(L, -2, "multi");
}
