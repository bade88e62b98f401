/*
** fuzz_chunk: any bytes, split at newlines, as the data of the events of
** one stream through the chunk decoder (src/chunk.c): the fast path with
** its per-stream template, and the whole-chunk path.  Never crashes;
** leaves the Lua stack as it found it; every record starts with a known
** kind; and each event's records equal those of a fresh decoder that has
** seen the same metadata but keeps no template (tables compared by type).
*/
#include "fuzz_lua.h"

static void same_records(lua_State *S, int a, int na, int b, int nb) {
  int i;
  if (na != nb) abort();
  for (i = 1; i <= na; i++) {
    int ta, tb;
    lua_rawgeti(S, a, i);
    lua_rawgeti(S, b, i);
    ta = lua_type(S, -2);
    tb = lua_type(S, -1);
    if (ta != tb || (ta != LUA_TTABLE && !lua_rawequal(S, -2, -1))) abort();
    lua_pop(S, 2);
  }
}

static int run(lua_State *S) {
  const char *d = (const char *)lua_touserdata(S, 1);
  size_t len = (size_t)lua_tointeger(S, 2);
  const char *p = d, *e = d + len;
  static oai_chunk_state st, fresh;
  int raw;
  oai_chunk_free(&st);   /* a raised error may have left one */
  st.meta = 0;
  lua_settop(S, 2);
  lua_newtable(S);   /* 3: the records */
  lua_newtable(S);   /* 4: a fresh decoder's records */
  while (p <= e) {
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    size_t n1 = (size_t)((nl ? nl : e) - p);
    for (raw = 0; raw <= 1; raw++) {
      int n = 0, m = 0, top = lua_gettop(S);
      oai_chunk_free(&fresh);
      memset(&fresh, 0, sizeof fresh);
      fresh.meta = st.meta;
      oai_chunk_records(S, 3, &n, "message", 7, p, n1, &st, raw);
      if (lua_gettop(S) != top) abort();   /* nothing left on the stack */
      oai_chunk_records(S, 4, &m, "message", 7, p, n1, &fresh, raw);
      if (lua_gettop(S) != top) abort();
      same_records(S, 3, n, 4, m);
      /* every record starts with a known kind */
      if (n > 0) {
        lua_rawgeti(S, 3, 1);
        if (!lua_isnumber(S, -1) || lua_tointeger(S, -1) < 1 || lua_tointeger(S, -1) > 16) abort();
        lua_pop(S, 1);
      }
    }
    if (nl == NULL) break;
    p = nl + 1;
  }
  oai_chunk_free(&st);
  oai_chunk_free(&fresh);
  return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  fuzz_call(run, data, size);
  return 0;
}
