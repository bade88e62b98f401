/*
** fuzz_json_decode: any bytes through oai.json.decode.  Never crashes; when
** the input decodes, encode -> decode -> encode is stable byte for byte.
*/
#include "fuzz_lua.h"

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

static int run(lua_State *S) {
  const char *d = (const char *)lua_touserdata(S, 1);
  size_t len = (size_t)lua_tointeger(S, 2);
  if (oai_json_decode_push(S, d, len)) {
    lua_pushcfunction(S, roundtrip);
    lua_insert(S, -2);
    /* decoded values are valid UTF-8 and finite: encoding must not fail */
    if (lua_pcall(S, 1, 0, 0) != LUA_OK) abort();
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  fuzz_call(run, data, size);
  return 0;
}
