/*
** records.c: the record protocol's two faces.  To Lua: the kinds and their
** arity from chunk.h, as core.record_kinds ({CONTENT = 1, ...}) and
** core.record_arity (kind -> number of slots after the kind).  To the
** transports: oai_records_feed, the one path from received bytes to
** records (SSE framing -> chunk decoder -> end of body -> BAD on a parser
** failure) that req:read_records (request.c) and p:records (lsse.c) share.
*/
#include <stdio.h>

#include "oai.h"
#include "chunk.h"

typedef struct feed_ctx {
  lua_State *L;
  oai_chunk_state *st;
  int t, n, raw;
} feed_ctx;

/* oai_sse_event_fn: one event's records; nonzero stops the parser */
static int record_event(void *ud, const oai_sse_event *ev) {
  feed_ctx *c = (feed_ctx *)ud;
  return oai_chunk_records(c->L, c->t, &c->n, ev->type, ev->type_len, ev->data,
                           ev->data_len, c->st, c->raw);
}

int oai_records_feed(lua_State *L, oai_sse *p, oai_chunk_state *st, const char *s,
                     size_t len, int final, int t, int *n, int raw) {
  feed_ctx c;
  int rc;
  c.L = L;
  c.st = st;
  c.t = t;
  c.n = *n;
  c.raw = raw;
  rc = oai_sse_feed(p, s, len, record_event, &c);
  if (rc == 0 && final && oai_sse_pending(p))
    rc = oai_sse_feed(p, "\n\n", 2, record_event, &c);   /* end the last event */
  if (rc < 0) {
    /* the parser failed (event size limit, memory): a BAD record says so */
    lua_pushinteger(L, OAI_K_BAD);
    lua_rawseti(L, t, ++c.n);
    lua_pushliteral(L, "");
    lua_rawseti(L, t, ++c.n);
    if (rc == OAI_SSE_ETOOBIG) {
      char num[32];
      snprintf(num, sizeof(num), "%lu", (unsigned long)p->max);
      lua_pushfstring(L, "%s (%s)", oai_sse_strerror(rc), num);
    } else {
      lua_pushstring(L, oai_sse_strerror(rc));
    }
    lua_rawseti(L, t, ++c.n);
  }
  *n = c.n;
  return rc;
}

/* module table on top: sets record_kinds and record_arity */
void oai_open_records(lua_State *L) {
#define OAI_RECORD_SETKIND(name, kind, arity) \
  lua_pushinteger(L, kind); lua_setfield(L, -2, #name);
#define OAI_RECORD_SETARITY(name, kind, arity) \
  lua_pushinteger(L, arity); lua_rawseti(L, -2, kind);
  lua_createtable(L, 0, OAI_K_COUNT);
  OAI_RECORD_KINDS(OAI_RECORD_SETKIND)
  lua_setfield(L, -2, "record_kinds");
  lua_createtable(L, OAI_K_COUNT, 0);
  OAI_RECORD_KINDS(OAI_RECORD_SETARITY)
  lua_setfield(L, -2, "record_arity");
#undef OAI_RECORD_SETKIND
#undef OAI_RECORD_SETARITY
}
