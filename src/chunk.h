/*
** chunk.h: the record protocol, stated once.  A stream's chunks become
** records in a flat Lua array: a kind, then a fixed number of slots (its
** arity).  The kinds and arities below are the only definition; the core
** hands them to Lua as core.record_kinds and core.record_arity (records.c).
** Also the chunk decoder's per-stream state (chunk.c, text.c) and the one
** feed -> records path both stream transports use (records.c).
*/
#ifndef OAI_CHUNK_H
#define OAI_CHUNK_H

#include "compat.h"
#include "sse.h"

/* X(name, kind, arity): the slots after the kind are listed beside it */
#define OAI_RECORD_KINDS(X) \
  X(CONTENT, 1, 2)        /* idx text */ \
  X(REASONING, 2, 3)      /* idx text field */ \
  X(REFUSAL, 3, 2)        /* idx text */ \
  X(TOOL, 4, 7)           /* idx pos index id type name args */ \
  X(FINISH, 5, 2)         /* idx reason */ \
  X(ROLE, 6, 2)           /* idx role */ \
  X(USAGE, 7, 1)          /* usage */ \
  X(META, 8, 5)           /* id created model fingerprint object */ \
  X(LOGPROBS, 9, 2)       /* idx logprobs */ \
  X(DELTA_EXTRA, 10, 3)   /* idx name value */ \
  X(CHOICE_EXTRA, 11, 3)  /* idx name value */ \
  X(TOP_EXTRA, 12, 2)     /* name value */ \
  X(ERROR, 13, 2)         /* error raw */ \
  X(DONE, 14, 0)          /* (the stream is over) */ \
  X(BAD, 15, 2)           /* raw message */ \
  X(RAW, 16, 1)           /* chunk (a whole decoded chunk, for the generic path) */

#define OAI_RECORD_ENUM(name, kind, arity) OAI_K_##name = kind,
enum { OAI_RECORD_KINDS(OAI_RECORD_ENUM) OAI_K_COUNT = 16 };
#undef OAI_RECORD_ENUM

/* The chunk decoder's state, per stream, zeroed at its start and released
   with oai_chunk_free: the metadata last handed out, the UTF-16 high halves
   waiting for their low halves (text.c), and the last chunk that was
   nothing but one content delta, kept as a template (a stream's chunks
   usually differ only in that text). */
#define OAI_CHUNK_TEMPLATE_MAX 4096
#define OAI_CHUNK_HALVES 8

/* the text fields whose halves are joined across chunks; F_NONE: a field
   whose halves cannot be (a tool call without an index) */
enum { F_NONE, F_CONTENT, F_REASONING_CONTENT, F_REASONING, F_REFUSAL, F_ARGS };

typedef struct oai_half {       /* a high surrogate half that ended a text delta */
  double idx, tool;             /* choice index, tool-call index (-1: none) */
  int field;                    /* F_CONTENT .. F_ARGS */
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

/* chunk.c: one event (type, data) -> records appended to the table at
   index t (*n slots used); 1 when the stream is over ([DONE], an error
   event or a bad chunk).  raw: hand out whole decoded chunks (RAW). */
int oai_chunk_records(lua_State *L, int t, int *n, const char *type, size_t type_len,
                      const char *d, size_t len, oai_chunk_state *st, int raw);
/* chunk.c: the records of what the state still holds at the end of a body
   without [DONE] (each waiting half as one U+FFFD of its field) */
void oai_chunk_flush(lua_State *L, int t, int *n, oai_chunk_state *st, int raw);
void oai_chunk_free(oai_chunk_state *st);

/* text.c: the text rules of a stream (split UTF-16 pairs, lone halves) */
void oai_text_fix(lua_State *L, oai_chunk_state *st, int f, double idx, double tool);
void oai_text_fix_table(lua_State *L, oai_chunk_state *st, int marks);
void oai_text_flush(lua_State *L, oai_chunk_state *st, int t, int *n, int raw);

/* records.c: frame len bytes at s with the SSE parser p and append each
   event's records to the table at t (*n slots used); final: then end an
   unterminated last event.  Returns 0, or > 0 when the stream is over, or
   the parser's error (< 0, see sse.h) after appending a BAD record that
   names it. */
int oai_records_feed(lua_State *L, oai_sse *p, oai_chunk_state *st, const char *s,
                     size_t len, int final, int t, int *n, int raw);

#endif
