/*
** oai.h: what every Lua-facing C file of oai.core shares: the openers that
** core.c calls and the checked number accessor.  Each concept has its own
** header (json.h, chunk.h, http.h, sse.h).  Nothing here is exported from
** the shared object except luaopen_oai_core (core.c); the build uses
** -fvisibility=hidden.
*/
#ifndef OAI_H
#define OAI_H

#include "compat.h"

/* each opener adds its functions to the module table at the top of the stack */
void oai_open_json(lua_State *L);     /* json_encode, json_decode, null, array, object, base64 */
void oai_open_sse(lua_State *L);      /* sse */
void oai_open_records(lua_State *L);  /* record_kinds, record_arity */
void oai_open_request(lua_State *L);   /* request (and the easy-handle pool) */
void oai_open_multi(lua_State *L);     /* multi */
void oai_open_util(lua_State *L);     /* monotime, getdate, curl_info, sigint_*, file_kind */

/* util.c: the one way a Lua number becomes a C integer.  The value at idx
   must be a number within [lo, hi] (NaN never is; with integral, also a
   whole number); otherwise raises "<msg> (got <value>)".  The result may
   then be cast to any integer type covering [lo, hi]: converting NaN or an
   out-of-range double is undefined behaviour in C. */
lua_Number oai_checkrange(lua_State *L, int idx, lua_Number lo, lua_Number hi,
                          int integral, const char *msg);

#endif
