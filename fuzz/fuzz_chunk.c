/*
** fuzz_chunk: any bytes as the data of one stream event through the chunk
** decoder (src/chunk.c), fast path and whole-chunk path.  Never crashes;
** leaves the Lua stack as it found it; the record count stays consistent.
*/
#include <stdlib.h>
#include <string.h>

#include "lualib.h"
#include "oai.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static lua_State *L;

static int run(lua_State *S) {
  const char *d = (const char *)lua_touserdata(S, 1);
  size_t len = (size_t)lua_tointeger(S, 2);
  unsigned long long meta = 0;
  int n = 0, raw, top;
  lua_settop(S, 2);
  lua_newtable(S);   /* 3: the records */
  for (raw = 0; raw <= 1; raw++) {
    n = 0;
    top = lua_gettop(S);
    oai_chunk_records(S, 3, &n, "message", 7, d, len, &meta, raw);
    if (lua_gettop(S) != top) abort();   /* nothing left on the stack */
    if (n < 0 || (n > 0 && lua_type(S, 3) != LUA_TTABLE)) abort();
    /* every record starts with a known kind */
    if (n > 0) {
      lua_rawgeti(S, 3, 1);
      if (!lua_isnumber(S, -1) || lua_tointeger(S, -1) < 1 || lua_tointeger(S, -1) > 16) abort();
      lua_pop(S, 1);
    }
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  if (L == NULL) {
    L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    oai_open_json(L);
    lua_pop(L, 1);
  }
  lua_pushcfunction(L, run);
  lua_pushlightuserdata(L, (void *)data);
  lua_pushinteger(L, (lua_Integer)size);
  /* memory errors may raise; anything else is a bug found by the sanitizers */
  lua_pcall(L, 2, 0, 0);
  lua_settop(L, 0);
  return 0;
}
