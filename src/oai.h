/*
** oai.h: declarations shared between the C files of oai.core.  Nothing here
** is exported from the shared object except luaopen_oai_core (core.c); the
** build uses -fvisibility=hidden.
*/
#ifndef OAI_H
#define OAI_H

#include "compat.h"

/* registry names of the metatables that mark tables for the JSON encoder */
#define OAI_ARRAY_MT "oai.array"
#define OAI_OBJECT_MT "oai.object"

/* each opener adds its functions to the module table at the top of the stack */
void oai_open_json(lua_State *L);   /* json_encode, json_decode, null, array, object, base64 */
void oai_open_sse(lua_State *L);    /* sse */
void oai_open_http(lua_State *L);   /* multi, request, monotime, getdate, curl_info */

/* core.c: the one way a Lua number becomes a C integer.  The value at idx
   must be a number within [lo, hi] (NaN never is; with integral, also a
   whole number); otherwise raises "<msg> (got <value>)".  The result may
   then be cast to any integer type covering [lo, hi]: converting NaN or an
   out-of-range double is undefined behaviour in C. */
lua_Number oai_checkrange(lua_State *L, int idx, lua_Number lo, lua_Number hi,
                          int integral, const char *msg);

/* json.c: decode s[0..len) and push the value (returns 1), or push an
   error message (returns 0); encode the value at idx and push the text
   (raises with the path to an unencodable value) */
int oai_json_decode_push(lua_State *L, const char *s, size_t len);
/* the same for stream chunks: flags OAI_JSON_LENIENT (invalid UTF-8 and
   lone surrogates -> U+FFFD) and OAI_JSON_MARK_EDGES (a lone half at the
   start or end of a string value kept as its WTF-8 "mark"); *marks (if not
   NULL) gets the number of marks left */
#define OAI_JSON_LENIENT 1
#define OAI_JSON_MARK_EDGES 2
int oai_json_decode_push_ex(lua_State *L, const char *s, size_t len, int flags, int *marks);
void oai_json_encode_push(lua_State *L, int idx);

/* chunk.c: one chat.completion.chunk -> records (see lua/oai/stream.lua).
   The state is per stream, zeroed at its start and released with
   oai_chunk_free: the metadata last handed out, and the last chunk that
   was nothing but one content delta, kept as a template (a stream's
   chunks usually differ only in that text). */
#define OAI_CHUNK_TEMPLATE_MAX 4096
#define OAI_CHUNK_HALVES 8
typedef struct oai_half {       /* a high surrogate half that ended a text delta */
  double idx, tool;             /* choice index, tool-call index (-1: none) */
  int field;                    /* chunk.c's F_CONTENT .. F_ARGS */
  unsigned hi;                  /* the half, 0xD800..0xDBFF */
} oai_half;
typedef struct oai_chunk_state {
  oai_half half[OAI_CHUNK_HALVES];   /* halves waiting for their low half */
  int nhalf;
  unsigned long long meta;      /* hash of the last chunk metadata handed out */
  char *tpl;                    /* the template (malloc'ed), tpl_cap bytes */
  size_t len, tpl_cap;          /* template length, 0: none */
  size_t cs, ce;                /* its content value: opening quote, after closing quote */
  size_t is, in;                /* its choice index value: offset, length */
} oai_chunk_state;
int oai_chunk_records(lua_State *L, int t, int *n, const char *type, size_t type_len,
                      const char *d, size_t len, oai_chunk_state *st, int raw);
void oai_chunk_flush(lua_State *L, int t, int *n, oai_chunk_state *st, int raw);
void oai_chunk_free(oai_chunk_state *st);

#endif
