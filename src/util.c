/*
** util.c: the small services the rest of oai.core shares: the checked
** number accessor (oai_checkrange), clocks, growable buffers, libcurl's
** stable error names, type registration, and the utilities the module
** exposes (monotime, getdate, curl_info, the SIGINT trap, file_kind).
** Also the `make asan` workaround: with OAI_SANITIZE_UNSET_PRELOAD the
** sanitizer runtime's LD_PRELOAD is dropped for the programs tests start.
*/
#if !defined(_POSIX_C_SOURCE) && !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L   /* clock_gettime, stat(2), S_ISFIFO, unsetenv */
#endif
#include <errno.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__unix__) || defined(__unix) || (defined(__APPLE__) && defined(__MACH__))
#include <sys/stat.h>
#define OAI_HAVE_STAT 1
#endif

#include "http.h"

lua_Number oai_checkrange(lua_State *L, int idx, lua_Number lo, lua_Number hi,
                          int integral, const char *msg) {
  lua_Number d = lua_tonumber(L, idx);
  /* written so that NaN fails every comparison */
  if (lua_isnumber(L, idx) && d >= lo && d <= hi && (!integral || d == floor(d))) return d;
  if (lua_type(L, idx) != LUA_TNUMBER)
    lua_pushfstring(L, "%s (got %s)", msg, luaL_typename(L, idx));
  else if (d != d)   /* printf says "nan" or "-nan" depending on the sign bit */
    lua_pushfstring(L, "%s (got nan)", msg);
  else if (d > DBL_MAX || d < -DBL_MAX)
    lua_pushfstring(L, "%s (got %sinf)", msg, d < 0 ? "-" : "");
  else {
    char num[64];   /* the same text on every Lua version */
    snprintf(num, sizeof num, "%.14g", (double)d);
    lua_pushfstring(L, "%s (got %s)", msg, num);
  }
  return (lua_Number)lua_error(L);
}

/* --------------------------------------------------------------- clocks */

double oai_monotime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* for the idle timeout, stamped on every received piece: a few ms of
   resolution is plenty, and the coarse clock costs much less */
double oai_monotime_coarse(void) {
#ifdef CLOCK_MONOTONIC_COARSE
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
#else
  return oai_monotime();
#endif
}

/* -------------------------------------------------------------- buffers */

int oai_buf_add(buf *b, const char *s, size_t n) {
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

void oai_buf_free(buf *b) {
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
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
const char *oai_curl_name(CURLcode c, const char *msg) {
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

/* ---------------------------------------------------------------- types */

void oai_new_type(lua_State *L, const char *name, const luaL_Reg *methods,
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

/* ------------------------------------------------ module-level functions */

/* monotime() -> seconds (float) from a monotonic clock */
static int l_monotime(lua_State *L) {
  lua_pushnumber(L, oai_monotime());
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

/* SIGINT as a flag, for CLIs that cancel the work in progress on Ctrl-C
   instead of dying; nothing else happens inside the handler */
static volatile sig_atomic_t sigint_seen = 0;
static void (*sigint_prev)(int) = SIG_DFL;
static int sigint_trapped = 0;

static void on_sigint(int sig) {
  (void)sig;
  sigint_seen = 1;
}

/* sigint_trap(on) -> nothing: on = true catches SIGINT into a flag,
   false restores the previous handler */
static int l_sigint_trap(lua_State *L) {
  int on = lua_toboolean(L, 1);
  if (on && !sigint_trapped) {
    sigint_prev = signal(SIGINT, on_sigint);
    sigint_trapped = 1;
  } else if (!on && sigint_trapped) {
    signal(SIGINT, sigint_prev == SIG_ERR ? SIG_DFL : sigint_prev);
    sigint_trapped = 0;
  }
  sigint_seen = 0;
  return 0;
}

/* sigint_take() -> true once for each SIGINT caught since the last call */
static int l_sigint_take(lua_State *L) {
  lua_pushboolean(L, sigint_seen != 0);
  sigint_seen = 0;
  return 1;
}

#if defined(OAI_HAVE_STAT)
/* file_kind(path) -> "file" | "directory" | "fifo" | "device" | "socket" |
   "other", or nil, message: what stat(2) says path is (symlinks followed),
   without opening it (opening a FIFO blocks until a writer appears) */
static int l_file_kind(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  const char *kind = "other";
  if (stat(path, &st) != 0) {
    int en = errno;
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", path, strerror(en));
    return 2;
  }
  if (S_ISREG(st.st_mode)) kind = "file";
  else if (S_ISDIR(st.st_mode)) kind = "directory";
  else if (S_ISFIFO(st.st_mode)) kind = "fifo";
  else if (S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) kind = "device";
#if defined(S_ISSOCK)
  else if (S_ISSOCK(st.st_mode)) kind = "socket";
#endif
  lua_pushstring(L, kind);
  return 1;
}
#endif

/* module table on top: sets monotime, getdate, curl_info, sigint_trap,
   sigint_take and file_kind */
void oai_open_util(lua_State *L) {
  static const luaL_Reg funcs[] = {
    { "monotime", l_monotime },
    { "getdate", l_getdate },
    { "curl_info", l_curl_info },
    { "sigint_trap", l_sigint_trap },
    { "sigint_take", l_sigint_take },
#if defined(OAI_HAVE_STAT)
    { "file_kind", l_file_kind },
#endif
    { NULL, NULL }
  };
#if defined(OAI_SANITIZE_UNSET_PRELOAD)
  /* `make asan` only: the interpreter needed the sanitizer runtime
     preloaded; the programs the tests start (nginx, curl, nvim) must not */
  unsetenv("LD_PRELOAD");
#endif
  luaL_setfuncs(L, funcs, 0);
}
