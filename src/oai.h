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

#endif
