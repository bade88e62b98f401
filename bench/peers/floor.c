/* The floor: the least a client can do with libcurl.  It sends the same
 * requests as the other peers and only counts the body bytes and newlines
 * it receives (no SSE parsing, no JSON), so its CPU time is what libcurl and
 * the kernel cost on their own.
 *
 *   floor stream URL STREAMS CHUNKS DELAY_MS   STREAMS concurrent streams (multi_socket + epoll)
 *   floor chat URL REQUESTS                    sequential non-streamed requests (one easy handle)
 *
 * Prints: body_bytes=B lines=L requests=R   (R = responses that ended with status 200) */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

typedef struct {
  long long bytes, lines;
} Count;

static const char STREAM_BODY[] =
  "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"stream\":true}";
static const char CHAT_BODY[] =
  "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
  Count *c = (Count *)ud;
  size_t len = size * n;
  const char *s = p, *end = p + len;
  c->bytes += (long long)len;
  while (s < end && (s = memchr(s, '\n', (size_t)(end - s))) != NULL) {
    c->lines++;
    s++;
  }
  return len;
}

static CURL *new_easy(const char *url, struct curl_slist *headers, const char *body, Count *c) {
  CURL *e = curl_easy_init();
  if (!e) { fprintf(stderr, "floor: curl_easy_init failed\n"); exit(1); }
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  return e;
}

static int run_chat(const char *url, int requests) {
  Count c = { 0, 0 };
  int ok = 0, i;
  struct curl_slist *h = NULL;
  CURL *e;
  h = curl_slist_append(h, "Content-Type: application/json");
  h = curl_slist_append(h, "Authorization: Bearer sk-bench");
  e = new_easy(url, h, CHAT_BODY, &c);
  for (i = 0; i < requests; i++) {
    long status = 0;
    CURLcode rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (rc == CURLE_OK && status == 200) ok++;
    else fprintf(stderr, "floor: request %d: %s, status %ld\n", i, curl_easy_strerror(rc), status);
  }
  curl_easy_cleanup(e);
  curl_slist_free_all(h);
  printf("body_bytes=%lld lines=%lld requests=%d\n", c.bytes, c.lines, ok);
  return 0;
}

/* Streams run on curl's multi_socket API over epoll: each wakeup touches only
 * the sockets that are ready (curl_multi_perform would visit every transfer). */
typedef struct {
  CURLM *m;
  int ep;
  long timeout_ms;
} Loop;

static int on_socket(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp) {
  Loop *lp = (Loop *)ud;
  struct epoll_event ev;
  (void)e;
  memset(&ev, 0, sizeof ev);
  ev.data.fd = fd;
  if (what == CURL_POLL_REMOVE) {
    epoll_ctl(lp->ep, EPOLL_CTL_DEL, fd, NULL);
    curl_multi_assign(lp->m, fd, NULL);
    return 0;
  }
  ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
  if (sockp) {
    epoll_ctl(lp->ep, EPOLL_CTL_MOD, fd, &ev);
  } else {
    epoll_ctl(lp->ep, EPOLL_CTL_ADD, fd, &ev);
    curl_multi_assign(lp->m, fd, lp); /* any non-NULL pointer: "already added" */
  }
  return 0;
}

static int on_timer(CURLM *m, long timeout_ms, void *ud) {
  (void)m;
  ((Loop *)ud)->timeout_ms = timeout_ms;
  return 0;
}

static int drain(Loop *lp) {
  CURLMsg *msg;
  int left, ok = 0;
  while ((msg = curl_multi_info_read(lp->m, &left)) != NULL) {
    if (msg->msg == CURLMSG_DONE) {
      long status = 0;
      curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &status);
      if (msg->data.result == CURLE_OK && status == 200) ok++;
      else fprintf(stderr, "floor: %s, status %ld\n", curl_easy_strerror(msg->data.result), status);
      curl_multi_remove_handle(lp->m, msg->easy_handle);
      curl_easy_cleanup(msg->easy_handle);
    }
  }
  return ok;
}

static int run_streams(const char *url, int streams, int chunks, int delay) {
  Count c = { 0, 0 };
  char hc[64], hd[64];
  int ok = 0, running = 1, i, n;
  struct curl_slist *h = NULL;
  struct epoll_event evs[256];
  Loop lp;
  lp.m = curl_multi_init();
  lp.ep = epoll_create1(0);
  lp.timeout_ms = -1;
  h = curl_slist_append(h, "Content-Type: application/json");
  h = curl_slist_append(h, "Authorization: Bearer sk-bench");
  h = curl_slist_append(h, "Accept: text/event-stream");
  h = curl_slist_append(h, "x-test-bench: 1");
  snprintf(hc, sizeof hc, "x-test-chunks: %d", chunks);
  snprintf(hd, sizeof hd, "x-test-chunk-delay-ms: %d", delay);
  h = curl_slist_append(h, hc);
  h = curl_slist_append(h, hd);
  curl_multi_setopt(lp.m, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(lp.m, CURLMOPT_SOCKETDATA, &lp);
  curl_multi_setopt(lp.m, CURLMOPT_TIMERFUNCTION, on_timer);
  curl_multi_setopt(lp.m, CURLMOPT_TIMERDATA, &lp);
  for (i = 0; i < streams; i++) curl_multi_add_handle(lp.m, new_easy(url, h, STREAM_BODY, &c));
  while (running) {
    n = epoll_wait(lp.ep, evs, 256, lp.timeout_ms < 0 ? 1000 : (int)lp.timeout_ms);
    if (n <= 0) {
      curl_multi_socket_action(lp.m, CURL_SOCKET_TIMEOUT, 0, &running);
    } else {
      for (i = 0; i < n; i++) {
        int what = (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR) ? CURL_CSELECT_IN : 0)
                 | (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0);
        curl_multi_socket_action(lp.m, evs[i].data.fd, what, &running);
      }
    }
    ok += drain(&lp);
  }
  ok += drain(&lp);
  curl_multi_cleanup(lp.m);
  close(lp.ep);
  curl_slist_free_all(h);
  printf("body_bytes=%lld lines=%lld requests=%d\n", c.bytes, c.lines, ok);
  return 0;
}

int main(int argc, char **argv) {
  char url[1024];
  int rc;
  if (argc < 4) {
    fprintf(stderr, "usage: floor stream URL STREAMS CHUNKS DELAY_MS | floor chat URL REQUESTS\n");
    return 2;
  }
  snprintf(url, sizeof url, "%s/chat/completions", argv[2]);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  if (strcmp(argv[1], "chat") == 0) {
    rc = run_chat(url, atoi(argv[3]));
  } else if (argc >= 6) {
    rc = run_streams(url, atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
  } else {
    fprintf(stderr, "floor: stream needs STREAMS CHUNKS DELAY_MS\n");
    rc = 2;
  }
  curl_global_cleanup();
  return rc;
}
