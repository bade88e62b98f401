/*
** lsse.c: the Lua binding of the SSE parser (sse.c), type "oai.sse".
**
**   local p = oai.sse{ max_event_bytes = 8 * 1024 * 1024 }  -- table optional
**   local events, err = p:feed(bytes)  -- { {type=, data=, id=}, ... } | nil, err
**   p:retry() -> ms | nil;  p:pending() -> boolean;  p:reset();  p:close()
**
** An event's id is the last event id in effect, "" when none was ever set.
** When feed fails (the limit), the events parsed earlier in the same call
** are dropped with it, and every later feed fails the same way until reset.
**
** Why feed runs its parsing in a protected call: building the event tables
** allocates, so it can raise a memory error or run a finalizer, in the
** middle of oai_sse_feed.  A finalizer may even call close() on this very
** parser.  feed marks the parser busy while it parses: close() then only
** marks it closed and the memory is freed when feed is done, and a Lua error
** leaves a parser whose position in the stream is lost, so it is marked as
** such and re-raised, instead of silently skipping the rest of the piece.
*/
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "oai.h"
#include "chunk.h"

#define OAI_SSE_MT "oai.sse"

typedef struct lsse {
  oai_sse p;
  unsigned char open;   /* 0 once closed (or not yet initialised) */
  unsigned char busy;   /* 1 while feed parses; see above */
  unsigned char lost;   /* a feed was interrupted by a Lua error */
  oai_chunk_state chunk;     /* records(): chunk.c's per-stream state */
} lsse;

/* upvalues of the parsing closure: interned keys and common values, so an
** event table costs no string hashing beyond its data (and a new id) */
enum { UV_TYPE = 1, UV_DATA, UV_ID, UV_MESSAGE, UV_EMPTY, UV_COUNT = UV_EMPTY };

/* stack slots of the parsing closure (see sse_parse) */
enum { S_UD = 1, S_BYTES, S_EVENTS, S_LASTID };

typedef struct feed_ctx {
  lua_State *L;   /* valid only during this feed */
  int n;          /* events so far */
  int has_id;     /* S_LASTID holds the id string of the previous event */
  size_t id_len;  /* ... whose bytes are these: */
  const char *id;
} feed_ctx;

/* the parser at idx, open or closed; raises if it is not an oai.sse */
static lsse *to_sse(lua_State *L, int idx) {
  return (lsse *)luaL_checkudata(L, idx, OAI_SSE_MT);
}

/* the open parser at idx; raises if it is not one */
static lsse *check_sse(lua_State *L, int idx) {
  lsse *u = to_sse(L, idx);
  if (!u->open) luaL_error(L, "attempt to use a closed oai.sse");
  return u;
}

/* the parser's and the chunk decoder's buffers */
static void free_buffers(lsse *u) {
  oai_sse_free(&u->p);
  oai_chunk_free(&u->chunk);
}

static void sse_release(lsse *u) {
  u->open = 0;
  if (!u->busy) free_buffers(u);   /* else feed frees them when done */
}

/* push the message for a failed feed */
static void push_feed_error(lua_State *L, const lsse *u, int rc) {
  if (rc == OAI_SSE_ETOOBIG) {
    char num[32];
    snprintf(num, sizeof(num), "%lu", (unsigned long)u->p.max);
    lua_pushfstring(L, "%s (%s)", oai_sse_strerror(rc), num);
  } else {
    lua_pushstring(L, oai_sse_strerror(rc));
  }
}

/* oai_sse_event_fn: append {type=, data=, id=} to the events table */
static int push_event(void *ud, const oai_sse_event *ev) {
  feed_ctx *c = (feed_ctx *)ud;
  lua_State *L = c->L;
  lua_createtable(L, 0, 3);
  lua_pushvalue(L, lua_upvalueindex(UV_TYPE));
  if (ev->type_len == 7 && memcmp(ev->type, "message", 7) == 0)
    lua_pushvalue(L, lua_upvalueindex(UV_MESSAGE));
  else
    lua_pushlstring(L, ev->type, ev->type_len);
  lua_rawset(L, -3);
  lua_pushvalue(L, lua_upvalueindex(UV_DATA));
  lua_pushlstring(L, ev->data, ev->data_len);
  lua_rawset(L, -3);
  lua_pushvalue(L, lua_upvalueindex(UV_ID));
  if (ev->id_len == 0) {
    lua_pushvalue(L, lua_upvalueindex(UV_EMPTY));
  } else {
    /* the id rarely changes between events: reuse the previous string */
    if (!c->has_id || c->id_len != ev->id_len ||
        memcmp(c->id, ev->id, ev->id_len) != 0) {
      lua_pushlstring(L, ev->id, ev->id_len);
      lua_replace(L, S_LASTID);
      c->id = lua_tostring(L, S_LASTID);   /* anchored in S_LASTID */
      c->id_len = ev->id_len;
      c->has_id = 1;
    }
    lua_pushvalue(L, S_LASTID);
  }
  lua_rawset(L, -3);
  lua_rawseti(L, S_EVENTS, ++c->n);
  return 0;
}

/* the protected part of feed: (ud, bytes) -> events | nil, err */
static int sse_parse(lua_State *L) {
  lsse *u = (lsse *)lua_touserdata(L, S_UD);
  size_t len;
  const char *s = lua_tolstring(L, S_BYTES, &len);
  feed_ctx c;
  int rc;
  lua_settop(L, S_BYTES);
  lua_createtable(L, 0, 0);   /* S_EVENTS */
  lua_pushnil(L);             /* S_LASTID */
  c.L = L;
  c.n = 0;
  c.has_id = 0;
  c.id_len = 0;
  c.id = NULL;
  rc = oai_sse_feed(&u->p, s, len, push_event, &c);
  if (rc != 0) {
    lua_pushnil(L);
    push_feed_error(L, u, rc);
    return 2;
  }
  lua_settop(L, S_EVENTS);
  return 1;
}

/* p:feed(bytes) -> events | nil, err */
static int sse_feed(lua_State *L) {
  lsse *u = check_sse(L, 1);
  int status;
  luaL_checkstring(L, 2);
  if (u->busy)   /* only possible from a finalizer run by this feed */
    return luaL_error(L, "attempt to feed an oai.sse from inside its own feed");
  if (u->lost) {
    lua_pushnil(L);
    lua_pushliteral(L, "oai.sse: stream position lost (an earlier feed "
                       "raised an error); call reset()");
    return 2;
  }
  lua_settop(L, 2);
  /* the ud stays in slot 1, so u stays valid after the call */
  lua_pushvalue(L, lua_upvalueindex(1));   /* ud, bytes, parse */
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);                     /* ud, bytes, parse, ud, bytes */
  u->busy = 1;
  status = lua_pcall(L, 2, LUA_MULTRET, 0);
  u->busy = 0;
  if (status != LUA_OK) u->lost = 1;
  if (!u->open) free_buffers(u);   /* closed meanwhile */
  if (status != LUA_OK) return lua_error(L);
  return lua_gettop(L) - 2;                /* ud, bytes, results */
}

/* p:retry() -> last valid retry in ms (integer) | nil */
static int sse_retry(lua_State *L) {
  lsse *u = check_sse(L, 1);
  long ms;
  if (oai_sse_retry(&u->p, &ms)) lua_pushinteger(L, (lua_Integer)ms);
  else lua_pushnil(L);
  return 1;
}

/* p:pending() -> true if an event, a partial line or an error is left */
static int sse_pending(lua_State *L) {
  lsse *u = check_sse(L, 1);
  lua_pushboolean(L, u->lost || oai_sse_pending(&u->p));
  return 1;
}

/* p:reset() -> nothing; a fresh stream with the same limit */
static int sse_reset(lua_State *L) {
  lsse *u = check_sse(L, 1);
  if (u->busy)
    return luaL_error(L, "attempt to reset an oai.sse from inside its own feed");
  oai_sse_reset(&u->p);
  u->chunk.meta = 0;
  u->chunk.len = 0;
  u->chunk.nhalf = 0;
  u->lost = 0;
  return 0;
}

/* p:close() -> nothing; idempotent; also __gc and __close */
static int sse_close(lua_State *L) {
  lsse *u = to_sse(L, 1);
  if (u->open) sse_release(u);
  return 0;
}

/* tostring(p) -> "oai.sse (0x...)" | "oai.sse (closed)" */
static int sse_tostring(lua_State *L) {
  lsse *u = to_sse(L, 1);
  if (u->open) lua_pushfstring(L, "oai.sse (%p)", (void *)u);
  else lua_pushliteral(L, "oai.sse (closed)");
  return 1;
}

/* the max_event_bytes option of the table at idx; 0 when absent */
static size_t opt_max(lua_State *L, int idx) {
  size_t max = 0;
  int ok;
  lua_getfield(L, idx, "max_event_bytes");
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    return 0;
  }
  ok = lua_type(L, -1) == LUA_TNUMBER;
  /* limits past SIZE_MAX (32-bit hosts) behave like SIZE_MAX */
#if LUA_VERSION_NUM >= 503
  if (ok) {
    lua_Integer n = lua_tointegerx(L, -1, &ok);
    ok = ok && n > 0;
    if (ok) max = (unsigned long long)n > SIZE_MAX ? SIZE_MAX : (size_t)n;
  }
#else
  if (ok) {
    lua_Number d = lua_tonumber(L, -1);
    /* whole numbers up to 2^53, where doubles stop being exact */
    ok = d >= 1 && d <= 9007199254740992.0 && d == (lua_Number)(long long)d;
    if (ok) max = d > (lua_Number)SIZE_MAX ? SIZE_MAX : (size_t)d;
  }
#endif
  if (!ok)
    luaL_argerror(L, idx, "max_event_bytes must be a positive integer");
  lua_pop(L, 1);
  return max;
}

/* oai.sse([{max_event_bytes = n}]) -> parser | raises on bad options */
static int sse_new(lua_State *L) {
  size_t max = 0;
  lsse *u;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    max = opt_max(L, 1);
  }
  /* created closed and zeroed with its metatable, then initialised */
  u = (lsse *)lua_newuserdatauv(L, sizeof(lsse), 0);
  memset(u, 0, sizeof(*u));
  luaL_setmetatable(L, OAI_SSE_MT);
  oai_sse_init(&u->p, max);   /* allocates nothing, cannot fail */
  u->open = 1;
  return 1;
}

/* the protected part of records: (ud, bytes, out, flags, final) -> n, stop */
static int sse_records_parse(lua_State *L) {
  lsse *u = (lsse *)lua_touserdata(L, 1);
  size_t len;
  const char *s = lua_tolstring(L, 2, &len);
  int n = 0;
  int rc = oai_records_feed(L, &u->p, &u->chunk, s, len, lua_toboolean(L, 5), 3, &n,
                            (int)(lua_tointeger(L, 4) & 1));
  lua_pushinteger(L, n);
  lua_pushboolean(L, rc != 0);
  return 2;
}

/* p:records(bytes, out[, flags[, final]]) -> n, stop: the streaming hot
   path for transports written in Lua (oai.ngx): frames bytes and decodes
   each chat.completion.chunk into records out[1..n] (see chunk.c); stop
   after [DONE], an error event or a bad chunk.  flags 1: whole chunks.
   final: terminate an unterminated last event first.  Protected like feed:
   a close from a finalizer waits, a raised error marks the position lost. */
static int sse_records(lua_State *L) {
  lsse *u = check_sse(L, 1);
  int status, flags;
  luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  flags = lua_isnoneornil(L, 4) ? 0
    : (int)oai_checkrange(L, 4, 0, INT_MAX, 1, "oai.sse: records flags must be a non-negative integer");
  if (u->busy) return luaL_error(L, "attempt to feed an oai.sse from inside its own feed");
  if (u->lost) {
    lua_pushnil(L);
    lua_pushliteral(L, "oai.sse: stream position lost (an earlier feed raised an error); call reset()");
    return 2;
  }
  lua_settop(L, 5);
  lua_pushcfunction(L, sse_records_parse);
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, 3);
  lua_pushinteger(L, flags);   /* checked: the parse converts it back */
  lua_pushvalue(L, 5);
  u->busy = 1;
  status = lua_pcall(L, 5, 2, 0);
  u->busy = 0;
  if (status != LUA_OK) u->lost = 1;
  if (!u->open) free_buffers(u);   /* closed meanwhile */
  if (status != LUA_OK) return lua_error(L);
  return 2;
}

/* p:flush_records(out[, flags]) -> n: at the end of a body without [DONE],
   the records of what records() still holds (a lone UTF-16 high half becomes
   U+FFFD), in out[1..n] */
static int sse_flush_records(lua_State *L) {
  lsse *u = check_sse(L, 1);
  int n = 0;
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 3);
  oai_chunk_flush(L, 2, &n, &u->chunk, (int)(luaL_optinteger(L, 3, 0) & 1));
  lua_pushinteger(L, n);
  return 1;
}

static const luaL_Reg sse_methods[] = {
  {"records", sse_records},
  {"flush_records", sse_flush_records},
  {"retry", sse_retry},
  {"pending", sse_pending},
  {"reset", sse_reset},
  {"close", sse_close},
  {NULL, NULL}
};

static const luaL_Reg sse_meta[] = {
  {"__gc", sse_close},
#if LUA_VERSION_NUM >= 504
  {"__close", sse_close},
#endif
  {"__tostring", sse_tostring},
  {NULL, NULL}
};

/* module table on top: sets field sse */
void oai_open_sse(lua_State *L) {
  luaL_newmetatable(L, OAI_SSE_MT);          /* mod, mt */
  luaL_setfuncs(L, sse_meta, 0);
  luaL_newlib(L, sse_methods);               /* mod, mt, methods */
  /* feed with its parsing closure, which carries the interned strings */
  lua_pushliteral(L, "type");
  lua_pushliteral(L, "data");
  lua_pushliteral(L, "id");
  lua_pushliteral(L, "message");
  lua_pushliteral(L, "");
  lua_pushcclosure(L, sse_parse, UV_COUNT);  /* mod, mt, methods, parse */
  lua_pushcclosure(L, sse_feed, 1);          /* mod, mt, methods, feed */
  lua_setfield(L, -2, "feed");
  lua_setfield(L, -2, "__index");            /* mod, mt */
  lua_pop(L, 1);                             /* mod */
  lua_pushcfunction(L, sse_new);
  lua_setfield(L, -2, "sse");
}
