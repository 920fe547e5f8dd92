/* lua_json: JSON for Lua services and policies that keeps data as it was
 * (docs/lua-services.md, "JSON fidelity").
 *
 * Debian's lua-cjson 2.1.0 decodes every number as a float (integers past
 * 2^53 lose digits, it writes 14 significant digits) and cannot tell an
 * empty array from an empty object (`[]` comes back as `{}`); it has no
 * empty_array_mt. This codec closes both gaps:
 *
 *   decode: integers (no fraction, no exponent) within Lua's 64-bit range
 *           are Lua integers; larger ones are bus.json values that keep
 *           their digits (as are numbers past a double's range); other
 *           numbers are floats. Arrays are tables with
 *           the json.array metatable, so an empty one stays an array.
 *   encode: integers exactly, floats in the fewest digits that read back
 *           the same (a whole float keeps a ".0"), a table with the
 *           json.array metatable as an array (even when empty), json.null
 *           (lua-cjson's, a NULL light userdata) as null, a bus.json value
 *           as its text (at any depth); other tables as lua-cjson
 *           does (keys 1..n: an array, holes as null unless excessively
 *           sparse; else an object, number keys as strings).
 *
 * The text to decode is first checked by the broker's own scanner
 * (json_scan.c: RFC 8259, UTF-8, nesting as a message allows), so the
 * parser here reads valid JSON only. Both directions charge the call's
 * instruction budget as lua-cjson's wrappers do (sandbox.h) and allocate
 * only through the state (the memory cap applies; nothing is malloc'd).
 * Differentially fuzzed against lua-cjson: tests/fuzz/fuzz_lua_json.c. */
#ifndef SMARTSHOP_LUA_JSON_H
#define SMARTSHOP_LUA_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include <lua.h>

/* Deepest nesting json.encode writes (a message's payload may nest 63). */
#define LUA_JSON_MAX_DEPTH 64

/* Makes the state's `json` global this codec (luamsg.c decodes payloads
 * and encodes answers with it too): json.encode, json.decode, json.null,
 * json.array([t]) (marks t, or a new table, as an array). Call inside a protected body. */
void lua_json_install(lua_State *L);

/* Pushes the value of `text`, JSON the broker checked already (a payload
 * or field of a parsed envelope: json_scan said it is valid), read from
 * those bytes in place: no copy into a Lua string, no protected call.
 * Charges the budget by length; raises on memory (the state's cap). For
 * use inside a protected body or a C function Lua called. */
void lua_json_push_checked(lua_State *L, const char *text, size_t len);

/* The same without the charge: for a part of a text whose whole length
 * the call was charged for already (a payload's member, read lazily). */
void lua_json_push_charged(lua_State *L, const char *text, size_t len);

/* The Lua functions themselves: decode(text) -> value (raises on bad
 * JSON); encode(value) -> text (raises on what JSON cannot hold). */
int lua_json_decode(lua_State *L);
int lua_json_encode(lua_State *L);

/* bus.json() values: JSON text that is sent as it is, unencoded.
 * lua_json_init_raw sets up their metatable (once per state: luamsg_init
 * calls it). lua_json_wrap_raw replaces the string on top of the stack,
 * which the caller knows to be one JSON value, with such a value;
 * lua_json_push_raw pushes one holding `text`. lua_json_raw gives the text
 * of the value at `index` (it lives as long as the value), or NULL if it
 * is not one. */
void lua_json_init_raw(lua_State *L);
void lua_json_wrap_raw(lua_State *L);
void lua_json_push_raw(lua_State *L, const char *text, size_t len);
const char *lua_json_raw(lua_State *L, int index, size_t *len);

/* What lua_json_encode_send wrote. Start it zeroed. */
typedef struct {
    char *data;                 /* a block of the state's allocator (its memory cap
                                   counts it): lua_json_text_free, also after an error */
    size_t len, cap;
    bool unsure;                /* false: valid JSON in UTF-8 that may stand as a
                                   payload (json_scan_member_value would accept it);
                                   true: the caller must scan it */
} lua_json_text_t;

/* A lua_CFunction for a protected call: encode(value, out) with `out` a
 * light userdata (lua_json_text_t *); fills *out, returns nothing. Raises
 * as json.encode does. No Lua object is made for the text (nothing for
 * the collector; no string copy). Plain ASCII strings, numbers, booleans,
 * nulls and tables nested less deep than a payload may be come out
 * `unsure = false`: what luamsg.c sends without scanning it again. */
int lua_json_encode_send(lua_State *L);

/* Frees what lua_json_encode_send allocated (plain C, no Lua call). */
void lua_json_text_free(lua_State *L, lua_json_text_t *t);

#endif
