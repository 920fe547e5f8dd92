/* luamsg: a message as Lua code sees it, and back.
 *
 * The one place where envelopes cross between C and Lua. A hook gets a
 * light view (one userdata reused for every message) whose fields are
 * read from the frame's bytes when Lua asks: a hook that reads msg.dst
 * costs a string push, and the payload is decoded with lua-cjson only when
 * read. The view is valid only during the call it was passed to. */
#ifndef SMARTSHOP_LUAMSG_H
#define SMARTSHOP_LUAMSG_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

#include "envelope.h"

/* Sets up the view's metatable in a state (once, after sandbox_new). */
void luamsg_init(lua_State *L);

/* Pushes the view of `env`. Call luamsg_release() when the call returns. */
void luamsg_push(lua_State *L, const envelope_t *env);

/* True if the value at `index` is the very payload table the view decoded
 * for this call (so a handler that returns msg.payload unchanged can have
 * its bytes forwarded instead of re-encoded). Call before luamsg_release. */
bool luamsg_is_view_payload(lua_State *L, int index);

/* Detaches the view from the envelope it showed. */
void luamsg_release(lua_State *L);

/* Encodes the Lua table at `index` as JSON with lua-cjson. Returns a
 * malloc'd text (caller frees) or NULL with the reason in `err`. */
char *luamsg_encode(lua_State *L, int index, size_t *len, char *err, size_t errlen);

/* Pushes a JSON text decoded with lua-cjson (nil if it does not decode). */
void luamsg_push_decoded(lua_State *L, const char *json, size_t len);

#endif
