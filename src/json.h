/*
** json.h: the JSON codec's interface inside the core (json_encode.c,
** json_decode.c), and the UTF-8 rule both sides share.
*/
#ifndef OAI_JSON_H
#define OAI_JSON_H

#include "compat.h"

/* registry names of the metatables that mark tables for the JSON encoder */
#define OAI_ARRAY_MT "oai.array"
#define OAI_OBJECT_MT "oai.object"

/* json_decode.c: decode s[0..len) and push the value (returns 1), or push
   an error message (returns 0) */
int oai_json_decode_push(lua_State *L, const char *s, size_t len);
/* the same for stream chunks: flags OAI_JSON_LENIENT (invalid UTF-8 and
   lone surrogates -> U+FFFD) and OAI_JSON_MARK_EDGES (a lone half at the
   start or end of a string value kept as its WTF-8 "mark"); *marks (if not
   NULL) gets the number of marks left */
#define OAI_JSON_LENIENT 1
#define OAI_JSON_MARK_EDGES 2
int oai_json_decode_push_ex(lua_State *L, const char *s, size_t len, int flags, int *marks);
/* json_decode(text) -> value | nil, err (registered by oai_open_json) */
int oai_json_l_decode(lua_State *L);

/* json_encode.c: encode the value at idx and push the text (raises with
   the path to an unencodable value) */
void oai_json_encode_push(lua_State *L, int idx);

/* length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid;
   inline: both sides call it per character */
static inline size_t oai_utf8_len(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF) {
    if (n < 2 || (p[1] & 0xC0) != 0x80) return 0;
    return 2;
  }
  if (c >= 0xE0 && c <= 0xEF) {
    if (n < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && p[1] < 0xA0) return 0;            /* overlong */
    if (c == 0xED && p[1] >= 0xA0) return 0;           /* surrogates */
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (n < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
    if (c == 0xF0 && p[1] < 0x90) return 0;            /* overlong */
    if (c == 0xF4 && p[1] >= 0x90) return 0;           /* > U+10FFFF */
    return 4;
  }
  return 0;
}

#endif
