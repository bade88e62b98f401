/*
** compat.h: the few Lua 5.2-5.4 API names oai uses, mapped for Lua 5.1 and
** LuaJIT.  Our own shims (in the spirit of LPeg's lptypes.h), not a copy of
** any compatibility library.  LuaJIT already defines some of these names, so
** each one is guarded.
*/
#ifndef OAI_COMPAT_H
#define OAI_COMPAT_H

#include "lua.h"
#include "lauxlib.h"

#if LUA_VERSION_NUM < 502

#ifndef lua_rawlen
#define lua_rawlen(L, i) lua_objlen(L, (i))
#endif

#ifndef LUA_OK
#define LUA_OK 0
#endif

/* luaL_setfuncs with nup == 0 is all oai needs */
#define luaL_setfuncs(L, l, nup) oai_setfuncs(L, (l), (nup))
static inline void oai_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
  for (; l->name != NULL; l++) {
    int i;
    for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
    lua_pushcclosure(L, l->func, nup);
    lua_setfield(L, -(nup + 2), l->name);
  }
  lua_pop(L, nup);
}

#ifndef luaL_newlibtable
#define luaL_newlibtable(L, l) lua_createtable(L, 0, sizeof(l) / sizeof((l)[0]) - 1)
#endif
#ifndef luaL_newlib
#define luaL_newlib(L, l) (luaL_newlibtable(L, l), luaL_setfuncs(L, l, 0))
#endif

/* LuaJIT 2.1 has luaL_testudata; plain 5.1 does not */
#if !defined(LUAJIT_VERSION_NUM)
#define luaL_testudata(L, i, tn) oai_testudata(L, (i), (tn))
static inline void *oai_testudata(lua_State *L, int i, const char *tn) {
  void *p = lua_touserdata(L, i);
  if (p == NULL || !lua_getmetatable(L, i)) return NULL;
  luaL_getmetatable(L, tn);
  if (!lua_rawequal(L, -1, -2)) p = NULL;
  lua_pop(L, 2);
  return p;
}
#endif

#ifndef luaL_setmetatable
#define luaL_setmetatable(L, tn) (luaL_getmetatable(L, tn), lua_setmetatable(L, -2))
#endif

#endif /* LUA_VERSION_NUM < 502 */

#if LUA_VERSION_NUM < 504
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata(L, (sz))
#define luaL_pushfail(L) lua_pushnil(L)
#endif

#endif
