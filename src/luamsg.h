/* luamsg: a message as Lua code sees it, and back.
 *
 * The one place where envelopes cross between C and Lua. A hook gets a
 * light view (one userdata reused for every message) whose fields are
 * read from the frame's bytes when Lua asks: a hook that reads msg.dst
 * costs a string push, and the payload is decoded (lua_json.c, from the
 * frame's bytes) only when read. The view is valid only during the call it was passed to.
 *
 * Every function here but luamsg_release calls Lua: use them inside a
 * sandbox_protected() body (or a C function Lua called). Decoding is
 * charged to the call's budget by length. */
#ifndef SMARTSHOP_LUAMSG_H
#define SMARTSHOP_LUAMSG_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "envelope.h"
#include "lua_json.h"

/* Sets up the view's metatable in a state (once, after sandbox_new). */
void luamsg_init(lua_State *L);

/* Pushes the view of `env`. Call luamsg_release() when the call returns.
 * The body of a call that pushes a view must do it before any Lua code
 * runs. */
void luamsg_push(lua_State *L, const envelope_t *env);

/* Before sandbox_protected, for a call whose body pushes a view (plain C):
 * the view stays as it is until luamsg_push, instead of being made
 * unreadable first (what every other call does; sandbox_protected calls
 * luamsg.c for it). Only saves work: forgetting it is safe. */
void luamsg_will_push(lua_State *L, bool lazy);

/* Detaches the view from the envelope it showed. Plain C, no Lua call:
 * safe after sandbox_protected() returns, whatever happened inside (a
 * view kept past its call raises when read, in any later call). */
void luamsg_release(lua_State *L);

/* The envelope's string fields that hooks of this state have read from
 * messages of type t so far, as bits (1u << env_field_t); *other is set
 * if they read any other key (msg.raw, msg.ttl_ms ...; msg.payload is
 * told by luamsg_payload_key), a payload proxy was settled, or they read
 * more payload members than a key holds; *payload if they read
 * msg.payload (then luamsg_payload_key tells what of it).
 * Only grows while the state lives. Plain C. */
unsigned luamsg_fields_read(lua_State *L, msg_type_t t, bool *other, bool *payload);

/* With `lazy` (luamsg_will_push), msg.payload in that call, if an object,
 * is a proxy: a table that reads each member from the frame's bytes when
 * asked, so that what the call read of it is known (luamsg_payload_key).
 * It is the same as the decoded payload to everything but next, rawget,
 * rawlen, getmetatable and C code that walks tables; the caller settles
 * it (luamsg_settle: decodes the rest into it, a plain table from then)
 * before any of those, before the call's table results are read, and
 * before code that may store anything runs (luamsg_whole_payloads): policy.c
 * does, for the calls it watches. luamsg_release takes an unsettled
 * proxy's metatable away. luamsg_settle may raise (memory): in
 * a protected call or a C function Lua called. */
void luamsg_settle(lua_State *L);

/* Settles this call's proxy, if any, and gives msg.payload decoded whole
 * for the rest of the call: for a call found to be one that may store. */
void luamsg_whole_payloads(lua_State *L);

/* Whether this call has a proxy not yet settled (plain C). */
bool luamsg_payload_pending(lua_State *L);

/* The part of a decision's key that msg.payload of env gives, for the
 * hooks of its type as they read it so far: nothing (*len 0) if they
 * never read it; else the members read from proxies (each: absent, or
 * its JSON text), or the payload's whole text where it was not an object
 * a proxy stands for. Bytes at out[0..*len); false if more than `cap`.
 * Plain C. */
bool luamsg_payload_key(lua_State *L, const envelope_t *env, unsigned char *out, size_t cap,
                        size_t *len);

/* Whether `fn` (lua_topointer of a function) is the C function that
 * reads a field into a view: Lua calls it as a metamethod for a field
 * read the first time; what it reads, luamsg_fields_read tells. */
bool luamsg_is_reader(lua_State *L, const void *fn);

/* Encodes the Lua value at `index` as JSON with lua_json.c (a bus.json()
 * value as its text), valid JSON in UTF-8 that may stand as a payload.
 * Returns a malloc'd text (caller frees) or NULL with the reason in `err`. */
char *luamsg_encode(lua_State *L, int index, size_t *len, char *err, size_t errlen);

/* The same without the copy: `text` is the value's own (a bus.json()
 * value: valid while it is) or a block of the state's allocator. Returns
 * false with the reason in `err`. Free with luamsg_text_free (plain C). */
typedef struct {
    const char *text;
    size_t len;
    lua_json_text_t owned;
} luamsg_text_t;
bool luamsg_encode_text(lua_State *L, int index, luamsg_text_t *out, char *err, size_t errlen);
void luamsg_text_free(lua_State *L, luamsg_text_t *t);

/* Pushes the function behind bus.json(text): checks that the text is one
 * JSON value and returns a value that is sent as that text, unencoded. */
void luamsg_push_json_maker(lua_State *L);

/* Pushes the value of a JSON text the broker checked (a read envelope's
 * payload, field or whole text), decoded by lua_json.c; raises if it does
 * not fit in the memory left. */
void luamsg_push_decoded(lua_State *L, const char *json, size_t len);

#endif
