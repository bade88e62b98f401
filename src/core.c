/*
** core.c: luaopen_oai_core, the only symbol oai.core exports.
*/
#if !defined(_POSIX_C_SOURCE) && !defined(_WIN32)
#define _POSIX_C_SOURCE 200809L   /* stat(2), S_ISFIFO, unsetenv */
#endif
#if defined(OAI_SANITIZE_UNSET_PRELOAD)
#include <stdlib.h>
#endif
#include <errno.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#if defined(__unix__) || defined(__unix) || (defined(__APPLE__) && defined(__MACH__))
#include <sys/stat.h>
#define OAI_HAVE_STAT 1
#endif

#include "oai.h"

#if defined(__GNUC__)
#define OAI_EXPORT __attribute__((visibility("default")))
#else
#define OAI_EXPORT
#endif

OAI_EXPORT int luaopen_oai_core(lua_State *L);

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

/* require "oai.core" -> the module table */
OAI_EXPORT int luaopen_oai_core(lua_State *L) {
#if defined(OAI_SANITIZE_UNSET_PRELOAD)
  /* `make asan` only: the interpreter needed the sanitizer runtime
     preloaded; the programs the tests start (nginx, curl, nvim) must not */
  unsetenv("LD_PRELOAD");
#endif
  lua_newtable(L);
  oai_open_json(L);
  oai_open_sse(L);
  oai_open_http(L);
  lua_pushcfunction(L, l_sigint_trap);
  lua_setfield(L, -2, "sigint_trap");
  lua_pushcfunction(L, l_sigint_take);
  lua_setfield(L, -2, "sigint_take");
#if defined(OAI_HAVE_STAT)
  lua_pushcfunction(L, l_file_kind);
  lua_setfield(L, -2, "file_kind");
#endif
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "version");
  return 1;
}
