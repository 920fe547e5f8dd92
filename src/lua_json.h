/* lua_json: JSON for Lua services that keeps data as it was
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

#include <lua.h>

/* Deepest nesting json.encode writes (a message's payload may nest 63). */
#define LUA_JSON_MAX_DEPTH 64

/* Makes the state's `json` global and the registry's SANDBOX_JSON_DECODE
 * and SANDBOX_JSON_ENCODE (what luamsg.c decodes payloads and encodes
 * answers with) this codec: json.encode, json.decode, json.null,
 * json.array([t]) (marks t, or a new table, as an array). Call inside a protected body. */
void lua_json_install(lua_State *L);

/* The Lua functions themselves: decode(text) -> value (raises on bad
 * JSON); encode(value) -> text (raises on what JSON cannot hold). */
int lua_json_decode(lua_State *L);
int lua_json_encode(lua_State *L);

#endif
