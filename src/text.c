/*
** text.c: the text rules of a stream.  Servers send invalid UTF-8 and split
** a surrogate pair over two chunks, and one bad character must not end the
** stream.  json_decode.c decodes stream values leniently: invalid UTF-8 (each
** maximal subpart) and lone surrogates become U+FFFD, except that with
** OAI_JSON_MARK_EDGES a lone half at the very start or end of a string is
** kept as its WTF-8 "mark".  Here a high half ending one text delta
** (content, reasoning, refusal, tool arguments) waits in the stream's state
** for the low half starting the next delta of the same field, choice and
** tool call, and the whole character goes out with the second piece
** (oai_text_fix); a half still waiting at the end goes out as U+FFFD
** (oai_text_flush); every other mark becomes U+FFFD.  The fast path
** (chunk.c, per text value) and the generic path (oai_text_fix_table, on
** the decoded chunk) apply the same rules.
*/
#include <string.h>

#include "chunk.h"

#define FFFD "\xEF\xBF\xBD"

/* a mark (json_decode.c: a lone half's WTF-8 form) of a half in [lo, hi] at p */
static int is_mark(const unsigned char *p, unsigned lo, unsigned hi) {
  return p[0] == 0xED && p[1] >= lo && p[1] <= hi;
}
#define HIGH_MARK(p) is_mark(p, 0xA0, 0xAF)
#define LOW_MARK(p) is_mark(p, 0xB0, 0xBF)

static unsigned mark_unit(const unsigned char *p) {
  return 0xD000u | ((unsigned)(p[1] & 0x3F) << 6) | (unsigned)(p[2] & 0x3F);
}

/* the text on top of the stack, of field f in choice idx (tool call tool):
   a low half at its start joins the waiting high half (else U+FFFD); a
   waiting half without its low half becomes U+FFFD before the text; a high
   half at its end waits (U+FFFD if it cannot).  Texts without marks and
   with no half waiting are left alone (the hot path: two byte tests). */
void oai_text_fix(lua_State *L, oai_chunk_state *st, int f, double idx, double tool) {
  size_t n, a = 0, b;
  const unsigned char *s = (const unsigned char *)lua_tolstring(L, -1, &n);
  int i, h = -1, head, tail;
  luaL_Buffer B;
  if (n == 0) return;   /* an empty delta neither joins nor ends a half */
  head = n >= 3 && LOW_MARK(s);
  tail = n >= 3 && HIGH_MARK(s + n - 3) && (!head || n >= 6);
  if (f != F_NONE)
    for (i = 0; i < st->nhalf; i++)
      if (st->half[i].field == f && st->half[i].idx == idx && st->half[i].tool == tool) { h = i; break; }
  if (h < 0 && !head && !tail) return;
  b = tail ? n - 3 : n;
  luaL_buffinit(L, &B);   /* the text stays below the buffer: s stays valid */
  if (head) {
    a = 3;
    if (h >= 0) {
      unsigned cp = 0x10000u + ((st->half[h].hi - 0xD800u) << 10) + (mark_unit(s) - 0xDC00u);
      char u[4];
      u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
      u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F));
      luaL_addlstring(&B, u, 4);
    } else luaL_addlstring(&B, FFFD, 3);
  } else if (h >= 0) luaL_addlstring(&B, FFFD, 3);
  if (h >= 0) st->half[h] = st->half[--st->nhalf];
  luaL_addlstring(&B, (const char *)s + a, b - a);
  if (tail) {
    if (f != F_NONE && st->nhalf < OAI_CHUNK_HALVES) {
      oai_half *w = &st->half[st->nhalf++];
      w->field = f; w->idx = idx; w->tool = tool;
      w->hi = mark_unit(s + n - 3);
    } else luaL_addlstring(&B, FFFD, 3);
  }
  luaL_pushresult(&B);
  lua_remove(L, -2);
}

/* every mark left in the string on top (outside the text fields) ->
   U+FFFD; 1 if the string was replaced */
static int unmark_string(lua_State *L) {
  size_t n, i, run = 0;
  const unsigned char *s = (const unsigned char *)lua_tolstring(L, -1, &n);
  luaL_Buffer B;
  for (i = 0; i + 2 < n; i++) if (is_mark(s + i, 0xA0, 0xBF)) break;
  if (i + 2 >= n) return 0;
  luaL_buffinit(L, &B);
  for (; i + 2 < n; i++) {
    if (is_mark(s + i, 0xA0, 0xBF)) {
      luaL_addlstring(&B, (const char *)s + run, i - run);
      luaL_addlstring(&B, FFFD, 3);
      run = i + 3;
      i += 2;
    }
  }
  luaL_addlstring(&B, (const char *)s + run, n - run);
  luaL_pushresult(&B);
  lua_remove(L, -2);
  return 1;
}

/* unmark_string over every string value in the table on top (keys never
   hold marks: json_decode.c replaces lone halves in keys at once) */
static void unmark_table(lua_State *L) {
  luaL_checkstack(L, 6, "oai: records");
  lua_pushnil(L);
  while (lua_next(L, -2)) {          /* t k v */
    if (lua_type(L, -1) == LUA_TTABLE) unmark_table(L);
    else if (lua_type(L, -1) == LUA_TSTRING && unmark_string(L)) {
      lua_pushvalue(L, -2);          /* t k v' k */
      lua_insert(L, -2);             /* t k k v' */
      lua_rawset(L, -4);             /* t k: an existing key, so next() goes on */
      continue;
    }
    lua_pop(L, 1);
  }
}

/* t[name] on top if it is of type ty (1), else nothing pushed (0) */
static int raw_field(lua_State *L, int t, const char *name, int ty) {
  lua_pushstring(L, name);
  lua_rawget(L, t);
  if (lua_type(L, -1) == ty) return 1;
  lua_pop(L, 1);
  return 0;
}

/* t[name], a string, through oai_text_fix */
static void fix_field(lua_State *L, oai_chunk_state *st, int t, const char *name, int f,
                      double idx, double tool) {
  if (!raw_field(L, t, name, LUA_TSTRING)) return;
  oai_text_fix(L, st, f, idx, tool);
  lua_pushstring(L, name);
  lua_insert(L, -2);
  lua_rawset(L, t);
}

/* the generic path's version of the text rules: the decoded chunk on top,
   its text fields found where records_from_chunk (stream.lua) finds them;
   then (marks > 0) any other lone half -> U+FFFD */
void oai_text_fix_table(lua_State *L, oai_chunk_state *st, int marks) {
  int c = lua_gettop(L);
  luaL_checkstack(L, 12, "oai: records");
  if (lua_istable(L, c) && raw_field(L, c, "choices", LUA_TTABLE)) {
    int chs = c + 1, pos, npos = (int)lua_rawlen(L, chs);
    for (pos = 1; pos <= npos; pos++) {
      int ch = c + 2, d;
      double idx = pos - 1;
      lua_rawgeti(L, chs, pos);
      if (lua_istable(L, ch)) {
        if (raw_field(L, ch, "index", LUA_TNUMBER)) { idx = (double)lua_tonumber(L, -1); lua_pop(L, 1); }
        if (raw_field(L, ch, "delta", LUA_TTABLE)) {
          d = ch + 1;
          fix_field(L, st, d, "reasoning_content", F_REASONING_CONTENT, idx, -1);
          fix_field(L, st, d, "reasoning", F_REASONING, idx, -1);
          fix_field(L, st, d, "content", F_CONTENT, idx, -1);
          fix_field(L, st, d, "refusal", F_REFUSAL, idx, -1);
          if (raw_field(L, d, "tool_calls", LUA_TTABLE)) {
            int tcs = d + 1, tp, ntp = (int)lua_rawlen(L, tcs);
            for (tp = 1; tp <= ntp; tp++) {
              int tc = tcs + 1;
              lua_rawgeti(L, tcs, tp);
              if (lua_istable(L, tc) && raw_field(L, tc, "function", LUA_TTABLE)) {
                double ti = -1;
                int f = F_NONE;
                if (raw_field(L, tc, "index", LUA_TNUMBER)) {
                  ti = (double)lua_tonumber(L, -1);
                  if (ti != -1) f = F_ARGS;   /* as put_text: -1 stands for none */
                  lua_pop(L, 1);
                }
                fix_field(L, st, tc + 1, "arguments", f, idx, ti);
              }
              lua_settop(L, tcs);
            }
          }
        }
      }
      lua_settop(L, chs);
    }
  }
  lua_settop(L, c);
  if (marks > 0 && lua_istable(L, c)) unmark_table(L);
  else if (marks > 0 && lua_type(L, c) == LUA_TSTRING) unmark_string(L);
}

/* an index as Lua would have decoded it: an integer when it is one */
static void push_index(lua_State *L, double x) {
  if (x >= -2147483647.0 && x <= 2147483647.0 && x == (double)(int)x)
    lua_pushinteger(L, (lua_Integer)(int)x);
  else lua_pushnumber(L, (lua_Number)x);
}

/* the halves still waiting at [DONE], each as one U+FFFD of its field:
   records, or (raw) one chunk table per half */

/* the value on top into the next slot of the records table at t */
static void put_top(lua_State *L, int t, int *n) {
  lua_rawseti(L, t, ++*n);
}

/* The halves still waiting at the end of a stream ([DONE], or a body that
   ended without it), each as one U+FFFD of its field: records appended to
   the table at t (*n slots used), or (raw) one RAW chunk table per half. */
void oai_text_flush(lua_State *L, oai_chunk_state *st, int t, int *n, int raw) {
  int i;
  static const char *const names[] = { "", "content", "reasoning_content", "reasoning", "refusal", "arguments" };
  luaL_checkstack(L, 8, "oai: records");
  for (i = 0; i < st->nhalf; i++) {
    const oai_half *w = &st->half[i];
    if (raw) {
      lua_createtable(L, 0, 1);                 /* chunk */
      lua_createtable(L, 1, 0);                 /* chunk choices */
      lua_createtable(L, 0, 2);                 /* chunk choices choice */
      push_index(L, w->idx);
      lua_setfield(L, -2, "index");
      lua_createtable(L, 0, 1);                 /* ... choice delta */
      if (w->field == F_ARGS) {
        lua_createtable(L, 1, 0);               /* ... delta tool_calls */
        lua_createtable(L, 0, 2);               /* ... tool_calls call */
        push_index(L, w->tool);
        lua_setfield(L, -2, "index");
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, FFFD);
        lua_setfield(L, -2, "arguments");
        lua_setfield(L, -2, "function");
        lua_rawseti(L, -2, 1);
        lua_setfield(L, -2, "tool_calls");
      } else {
        lua_pushliteral(L, FFFD);
        lua_setfield(L, -2, names[w->field]);
      }
      lua_setfield(L, -2, "delta");
      lua_rawseti(L, -2, 1);
      lua_setfield(L, -2, "choices");
      lua_pushinteger(L, OAI_K_RAW);
      put_top(L, t, n);
      put_top(L, t, n);   /* the chunk, now on top again */
      continue;
    }
    lua_pushinteger(L, w->field == F_CONTENT ? OAI_K_CONTENT : w->field == F_REFUSAL ? OAI_K_REFUSAL
                       : w->field == F_ARGS ? OAI_K_TOOL : OAI_K_REASONING);
    put_top(L, t, n);
    push_index(L, w->idx);
    put_top(L, t, n);
    if (w->field == F_ARGS) {
      lua_pushinteger(L, 1);
      put_top(L, t, n);
      push_index(L, w->tool);
      put_top(L, t, n);
      lua_pushnil(L); put_top(L, t, n);
      lua_pushnil(L); put_top(L, t, n);
      lua_pushnil(L); put_top(L, t, n);
    }
    lua_pushliteral(L, FFFD);
    put_top(L, t, n);
    if (w->field == F_REASONING_CONTENT || w->field == F_REASONING) {
      lua_pushstring(L, names[w->field]);
      put_top(L, t, n);
    }
  }
  st->nhalf = 0;
}
