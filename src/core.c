/*
** core.c: luaopen_oai_core, the only symbol oai.core exports: the module
** table, filled by each concept's opener.
*/
#include "oai.h"

#if defined(__GNUC__)
#define OAI_EXPORT __attribute__((visibility("default")))
#else
#define OAI_EXPORT
#endif

OAI_EXPORT int luaopen_oai_core(lua_State *L);

/* require "oai.core" -> the module table */
OAI_EXPORT int luaopen_oai_core(lua_State *L) {
  lua_newtable(L);
  oai_open_util(L);      /* first: drops the sanitizer's LD_PRELOAD (make asan) */
  oai_open_json(L);
  oai_open_sse(L);
  oai_open_records(L);
  oai_open_request(L);
  oai_open_multi(L);
  lua_pushliteral(L, "0.1.0");
  lua_setfield(L, -2, "version");
  return 1;
}
