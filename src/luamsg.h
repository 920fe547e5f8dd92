/* luamsg: a message as Lua code sees it, and back.
 *
 * The one place where envelopes cross between C and Lua. A hook gets a
 * light view (one userdata reused for every message) whose fields are
 * read from the frame's bytes when Lua asks: a hook that reads msg.dst
 * costs a string push, and the payload is decoded with lua-cjson only when
 * read. The view is valid only during the call it was passed to.
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

/* Sets up the view's metatable in a state (once, after sandbox_new). */
void luamsg_init(lua_State *L);

/* Pushes the view of `env`. Call luamsg_release() when the call returns. */
void luamsg_push(lua_State *L, const envelope_t *env);

/* Detaches the view from the envelope it showed. Plain C, no Lua call:
 * safe after sandbox_protected() returns, whatever happened inside. */
void luamsg_release(lua_State *L);

/* Encodes the Lua value at `index` as JSON with lua-cjson (a bus.json()
 * value as its text), checked to be valid JSON in UTF-8. Returns a
 * malloc'd text (caller frees) or NULL with the reason in `err`. */
char *luamsg_encode(lua_State *L, int index, size_t *len, char *err, size_t errlen);

/* Pushes the function behind bus.json(text): checks that the text is one
 * JSON value and returns a value that is sent as that text, unencoded. */
void luamsg_push_json_maker(lua_State *L);

/* The JSON text of a bus.json() value at `index`, or NULL if it is not
 * one. The text lives as long as the value. */
const char *luamsg_raw_json(lua_State *L, int index, size_t *len);

/* Pushes a bus.json() value holding `text` as it is, unchecked: for text
 * the caller knows to be one JSON value (lua_json.c: an integer too large
 * for Lua, kept as its digits). */
void luamsg_push_raw_json(lua_State *L, const char *text, size_t len);

/* Pushes a JSON text decoded with lua-cjson (nil if it does not decode). */
void luamsg_push_decoded(lua_State *L, const char *json, size_t len);

#endif
