/*
** fuzz_chunk: any bytes, split at newlines, as the data of the events of
** one stream through the chunk decoder (src/chunk.c): the fast path with
** its per-stream template, and the whole-chunk path.  Never crashes;
** leaves the Lua stack as it found it; every record starts with a known
** kind; each event's records equal those of a fresh decoder that has seen
** the same metadata and holds the same waiting surrogate halves but keeps
** no template (tables compared by type); and, differential, the fast path's
** records equal the generic path's (whole chunks through records_from_chunk
** of lua/oai/records.lua), META aside: one rule for duplicate keys, invalid
** UTF-8 and surrogate pairs split over two events on both paths.  Until a
** chunk the generic path rejects: the fast path checks only the values it
** hands out (a bad value under a key it skips does not end the stream), so
** from there the two streams may differ.  Run from the repository root (it
** loads lua/oai/records.lua).
*/
#include <stdio.h>

#include "fuzz_lua.h"
#include "chunk.h"

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

/* records -> one sorted string, RAW records expanded by the generic path,
   META left out (the fast path sends it only when it changes), ERROR by
   its error only (the fast path adds the raw text) */
static const char NORMALIZE[] =
  "local core = ...\n"
  "core.monotime = function() return 0 end\n"
  "package.preload['oai.core'] = function() return core end\n"
  "package.preload['oai.native'] = function() return core end\n"
  "local s = dofile('lua/oai/records.lua')\n"
  "local enc, null, arity = core.json_encode, core.null, s.arity\n"
  "local function add(recs, o, j)\n"
  "  local k = o[j]\n"
  "  if k == 8 then return end\n"
  "  local r = { k }\n"
  "  for x = 1, k == 13 and 1 or arity[k] do\n"
  "    local v = o[j + x]\n"
  "    if type(v) == 'table' or v == null then v = enc(v) end\n"
  "    r[#r + 1] = tostring(v)\n"
  "  end\n"
  "  recs[#recs + 1] = table.concat(r, '|')\n"
  "end\n"
  "return function(out, n)\n"
  "  local recs, i = {}, 1\n"
  "  while i <= n do\n"
  "    local k = out[i]\n"
  "    if k == 16 then\n"
  "      local m = {}\n"
  "      local mn, j = s.records_from_chunk(out[i + 1], m, 0), 1\n"
  "      while j <= mn do add(recs, m, j); j = j + 1 + arity[m[j]] end\n"
  "    else add(recs, out, i) end\n"
  "    i = i + 1 + arity[k]\n"
  "  end\n"
  "  table.sort(recs)\n"
  "  return table.concat(recs, '\\n')\n"
  "end\n";

static int normalize_ref = LUA_NOREF;

/* the normalized records of table t (n slots) on top */
static void normalize(lua_State *S, int t, int n) {
  lua_rawgeti(S, LUA_REGISTRYINDEX, normalize_ref);
  lua_pushvalue(S, t);
  lua_pushinteger(S, n);
  lua_call(S, 2, 1);
}

static int run(lua_State *S) {
  const char *d = (const char *)lua_touserdata(S, 1);
  size_t len = (size_t)lua_tointeger(S, 2);
  const char *p = d, *e = d + len;
  static oai_chunk_state st[2], fresh;
  int raw, differential = 1;
  if (normalize_ref == LUA_NOREF) {
    if (luaL_loadbuffer(S, NORMALIZE, sizeof NORMALIZE - 1, "=normalize") != LUA_OK) abort();
    lua_newtable(S);
    oai_open_json(S);
    oai_open_records(S);   /* stream.lua reads the record kinds from the core */
    if (lua_pcall(S, 1, 1, 0) != LUA_OK) { fprintf(stderr, "%s\n", lua_tostring(S, -1)); abort(); }
    normalize_ref = luaL_ref(S, LUA_REGISTRYINDEX);
  }
  for (raw = 0; raw <= 1; raw++) {   /* a raised error may have left some */
    oai_chunk_free(&st[raw]);
    st[raw].meta = 0;
  }
  lua_settop(S, 2);
  lua_newtable(S);   /* 3: the fast path's records (raw 0) */
  lua_newtable(S);   /* 4: whole chunks (raw 1) */
  lua_newtable(S);   /* 5: a fresh decoder's records */
  while (p <= e) {
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    size_t n1 = (size_t)((nl ? nl : e) - p);
    int n[2];
    for (raw = 0; raw <= 1; raw++) {
      int m = 0, top = lua_gettop(S);
      oai_chunk_free(&fresh);
      memset(&fresh, 0, sizeof fresh);
      fresh.meta = st[raw].meta;
      fresh.nhalf = st[raw].nhalf;
      memcpy(fresh.half, st[raw].half, sizeof fresh.half);
      n[raw] = 0;
      oai_chunk_records(S, 3 + raw, &n[raw], "message", 7, p, n1, &st[raw], raw);
      if (lua_gettop(S) != top) abort();   /* nothing left on the stack */
      oai_chunk_records(S, 5, &m, "message", 7, p, n1, &fresh, raw);
      if (lua_gettop(S) != top) abort();
      same_records(S, 3 + raw, n[raw], 5, m);
      /* every record starts with a known kind */
      if (n[raw] > 0) {
        lua_rawgeti(S, 3 + raw, 1);
        if (!lua_isnumber(S, -1) || lua_tointeger(S, -1) < 1 || lua_tointeger(S, -1) > 16) abort();
        lua_pop(S, 1);
      }
    }
    /* the fast path and the generic path agree */
    if (n[1] > 0) {
      lua_rawgeti(S, 4, 1);
      if (lua_tointeger(S, -1) == 15) differential = 0;   /* BAD: see the top */
      lua_pop(S, 1);
    }
    if (differential) {
      normalize(S, 3, n[0]);
      normalize(S, 4, n[1]);
      if (!lua_rawequal(S, -1, -2)) {
        fprintf(stderr, "fast path:\n%s\ngeneric path:\n%s\nevent: %.*s\n",
                lua_tostring(S, -2), lua_tostring(S, -1), (int)n1, p);
        abort();
      }
      lua_pop(S, 2);
    }
    if (nl == NULL) break;
    p = nl + 1;
  }
  for (raw = 0; raw <= 1; raw++) oai_chunk_free(&st[raw]);
  oai_chunk_free(&fresh);
  return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  fuzz_call(run, data, size);
  return 0;
}
