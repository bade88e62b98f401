/*
** fuzz_lua.h: the Lua side shared by the libFuzzer targets that need Lua
** (json decode/encode, chunk).  One state for the whole run with oai's JSON
** functions registered; each input goes to run(S) as (lightuserdata, size)
** under lua_pcall, so a memory error raised by Lua is not a crash.  What
** run finds wrong it reports with abort().
*/
#ifndef FUZZ_LUA_H
#define FUZZ_LUA_H

#include <stdlib.h>
#include <string.h>

#include "lualib.h"
#include "oai.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void fuzz_call(lua_CFunction run, const unsigned char *data, size_t size) {
  static lua_State *L;
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
  lua_pcall(L, 2, 0, 0);
  lua_settop(L, 0);
}

#endif
