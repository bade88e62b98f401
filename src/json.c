/* json.c: placeholder until the JSON codec lands (being written now). */
#include "oai.h"

void oai_open_json(lua_State *L) {
  (void)L;
}
