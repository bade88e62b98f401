/*
** fuzz_json_encode: the input is a small program that builds a Lua value
** (strings of any bytes, numbers of any bits, nested tables, marks, null,
** functions, self references); it is encoded under pcall.  Errors are fine,
** crashes and sanitizer reports are not; what encodes must decode.
*/
#include "fuzz_lua.h"

typedef struct prog {
  const unsigned char *p, *e;
} prog;

static int build(lua_State *S, prog *g, int depth) {
  unsigned op;
  if (g->p >= g->e || depth > 140) { lua_pushinteger(S, 0); return 1; }
  op = *g->p++ % 10;
  switch (op) {
    case 0: {
      size_t n = g->p < g->e ? *g->p++ % 16 : 0;
      if (n > (size_t)(g->e - g->p)) n = (size_t)(g->e - g->p);
      lua_pushlstring(S, (const char *)g->p, n);
      g->p += n;
      return 1;
    }
    case 1: {
      double x = 0;
      size_t n = (size_t)(g->e - g->p) < sizeof(x) ? (size_t)(g->e - g->p) : sizeof(x);
      memcpy(&x, g->p, n);
      g->p += n;
      lua_pushnumber(S, (lua_Number)x);
      return 1;
    }
    case 2: lua_pushinteger(S, (lua_Integer)(g->p < g->e ? (signed char)*g->p++ : 0)); return 1;
    case 3: lua_pushlightuserdata(S, NULL); return 1;
    case 4: lua_pushboolean(S, g->p < g->e && (*g->p++ & 1)); return 1;
    case 5: lua_pushcfunction(S, luaopen_base); return 1;
    case 6: case 7: case 8: {      /* a table with up to 8 members */
      int n = g->p < g->e ? *g->p++ % 9 : 0, i;
      luaL_checkstack(S, 4, "fuzz");
      lua_newtable(S);
      if (op == 7) luaL_setmetatable(S, OAI_ARRAY_MT);
      for (i = 1; i <= n; i++) {
        unsigned kind = g->p < g->e ? *g->p++ % 4 : 0;
        if (kind == 0) lua_pushinteger(S, i);
        else if (kind == 1) build(S, g, depth + 1);   /* any key */
        else if (kind == 2) lua_pushinteger(S, i + 1);
        else { char k[4] = "k"; k[1] = (char)('a' + i); k[2] = 0; lua_pushstring(S, k); }
        if (lua_isnil(S, -1) || (lua_type(S, -1) == LUA_TNUMBER && lua_tonumber(S, -1) != lua_tonumber(S, -1))) {
          lua_pop(S, 1);
          continue;
        }
        if (g->p < g->e && *g->p == 0xFF) { g->p++; lua_pushvalue(S, -2); }   /* self reference */
        else build(S, g, depth + 1);
        lua_rawset(S, -3);
      }
      return 1;
    }
    default: lua_pushstring(S, "x"); return 1;
  }
}

static int run(lua_State *S) {
  prog g;
  size_t n;
  const char *t;
  g.p = (const unsigned char *)lua_touserdata(S, 1);
  g.e = g.p + (size_t)lua_tointeger(S, 2);
  build(S, &g, 0);
  oai_json_encode_push(S, -1);
  t = lua_tolstring(S, -1, &n);
  if (!oai_json_decode_push(S, t, n)) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  fuzz_call(run, data, size);
  return 0;
}
