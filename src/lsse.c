/* lsse.c: placeholder until the SSE binding lands (being written now). */
#include "oai.h"

void oai_open_sse(lua_State *L) {
  (void)L;
}
