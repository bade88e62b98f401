/*
** fuzz_json_decode: any bytes through oai.json.decode.  Never crashes; when
** the input decodes, encode -> decode -> encode is stable byte for byte.
*/
#include <stdlib.h>
#include <string.h>

#include "lualib.h"
#include "oai.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static lua_State *L;

static int roundtrip(lua_State *S) {
  size_t n1, n2;
  const char *t1, *t2;
  oai_json_encode_push(S, 1);                 /* 2: first encoding */
  t1 = lua_tolstring(S, 2, &n1);
  if (!oai_json_decode_push(S, t1, n1)) abort();   /* 3 */
  oai_json_encode_push(S, 3);                 /* 4 */
  t2 = lua_tolstring(S, 4, &n2);
  if (n1 != n2 || memcmp(t1, t2, n1) != 0) abort();
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
  if (oai_json_decode_push(L, (const char *)data, size)) {
    lua_pushcfunction(L, roundtrip);
    lua_insert(L, -2);
    /* decoded values are valid UTF-8 and finite: encoding must not fail */
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) abort();
  } else {
    lua_pop(L, 1);
  }
  lua_settop(L, 0);
  return 0;
}
