/* luamsg: envelopes between C and Lua. See luamsg.h. */
#include "luamsg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "json_scan.h"
#include "lua_json.h"
#include "sandbox.h"

#define VIEW_METATABLE "smartshop.msg"

/* The state's one view, in the registry under this address (lua_rawgetp:
 * no string to intern on every message). */
static const char view_key;


/* The fields a view has, in view_keys order. */
#define VIEW_KEY_COUNT 13

typedef struct {
    const envelope_t *env;      /* NULL outside the call it was passed to */
    const char *payload_text;   /* the string msg.payload_json gave in this call (kept
                                   alive in user value 2), or NULL */
    bool cached;                /* user value 1 or 2 holds this message's payload */
    int ref;                    /* the view in the registry (an array slot: no hash) */
    const void *key_ptr[VIEW_KEY_COUNT]; /* the keys' interned strings, by address:
                                            a read is told by one compare a key */
    struct {
        const char *text;       /* the last string read of each field (kept alive in
                                   user value UV_LAST + field), or NULL */
        size_t len;
    } last[EF__COUNT];
} view_t;

/* The view's user values: 1 msg.payload, 2 msg.payload_json, then the
 * last string read of each envelope field. */
#define UV_LAST 3
#define UV_COUNT (UV_LAST + EF__COUNT)
/* Longest string kept as a field's last: Lua interns strings up to 40
 * bytes (names, types, actions); longer ones are made anew, as before. */
#define LAST_MAX_LEN 40

void luamsg_push_decoded(lua_State *L, const char *json, size_t len)
{
    /* msg:table() in a loop is one VM instruction a decode: charged by
     * length, and refused (raised, not nil) by the state's memory cap;
     * read in place from the frame's checked bytes (lua_json.c) */
    lua_json_push_checked(L, json, len);
}

/* A string field: its bytes, or, if it has escapes, its decoded value. */
static void push_string_field(lua_State *L, const env_value_t *v)
{
    if (v->kind != JSON_STRING) {
        lua_pushnil(L);
    } else if (!v->escaped) {
        lua_pushlstring(L, v->ptr, v->len);
    } else {
        /* the quotes around the content are in the frame: decode them too */
        luamsg_push_decoded(L, v->ptr - 1, v->len + 2);
    }
}

/* A string field of the view at stack index 1: the string pushed the
 * last time this field was read, if the bytes are the same (a compare
 * instead of Lua hashing them to find its interned string: dst and action
 * repeat from message to message), else a new one, kept as the last. */
static void push_name_field(lua_State *L, view_t *view, env_field_t f)
{
    const env_value_t *v = &view->env->f[f];
    if (v->kind != JSON_STRING || v->escaped || v->len > LAST_MAX_LEN) {
        push_string_field(L, v);
        return;
    }
    if (view->last[f].text && view->last[f].len == v->len &&
        memcmp(view->last[f].text, v->ptr, v->len) == 0) {
        lua_getiuservalue(L, 1, UV_LAST + (int)f);
        return;
    }
    lua_pushlstring(L, v->ptr, v->len);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, UV_LAST + (int)f);
    view->last[f].text = lua_tostring(L, -1);
    view->last[f].len = v->len;
}

/* The view these methods were made for (their upvalue 1), if argument 1
 * is it: the metatable is hidden (__metatable), so nothing else reaches
 * them, but msg.table can be called on anything. */
static view_t *checked_view(lua_State *L)
{
    view_t *view = lua_touserdata(L, lua_upvalueindex(1));
    if (lua_touserdata(L, 1) != view)
        luaL_error(L, "expected the message (msg:table())");
    if (!view->env)
        luaL_error(L, "a message is valid only during the hook it was passed to "
                      "(copy the fields you need to keep)");
    return view;
}

/* msg:table(): the whole message as a fresh Lua table, to change and return. */
static int view_table(lua_State *L)
{
    const view_t *view = checked_view(L);
    luamsg_push_decoded(L, view->env->buf, view->env->len);
    return 1;
}

/* The fields a view has. A read finds its key by the address of the key's
 * string: Lua interns short strings, so equal names are one object (the
 * view's __index holds them as upvalues, after the view, and after them
 * the names of the message types, pushed for msg.type without a hash). */
typedef enum { K_STRING, K_PAYLOAD, K_PAYLOAD_JSON, K_TTL_MS, K_RAW, K_TABLE } view_key_kind_t;

static const struct {
    const char *name;
    size_t len;
    view_key_kind_t kind;
    env_field_t field;          /* for K_STRING */
} view_keys[] = {
    /* the most read first: a read compares the keys in this order */
    {"type", 4, K_STRING, EF_TYPE},   {"dst", 3, K_STRING, EF_DST},
    {"src", 3, K_STRING, EF_SRC},     {"action", 6, K_STRING, EF_ACTION},
    {"payload", 7, K_PAYLOAD, 0},     {"payload_json", 12, K_PAYLOAD_JSON, 0},
    {"msg_id", 6, K_STRING, EF_MSG_ID}, {"correlation_id", 14, K_STRING, EF_CORRELATION_ID},
    {"timestamp", 9, K_STRING, EF_TIMESTAMP}, {"ttl_ms", 6, K_TTL_MS, 0},
    {"raw", 3, K_RAW, 0},             {"table", 5, K_TABLE, 0},
    {"topic", 5, K_STRING, EF_TOPIC},
};
_Static_assert(sizeof view_keys / sizeof view_keys[0] == VIEW_KEY_COUNT, "one address per key");
#define UPVALUE_TYPE_NAMES (2 + VIEW_KEY_COUNT)  /* + msg_type_t */

/* msg.payload: decoded once per message, cached in user value 1 */
static void push_payload(lua_State *L, const envelope_t *env)
{
    lua_getiuservalue(L, 1, 1);
    if (!lua_isnil(L, -1))
        return;
    lua_pop(L, 1);
    const env_value_t *p = &env->f[EF_PAYLOAD];
    if (p->kind == JSON_ABSENT || p->kind == JSON_NULL) {
        lua_pushnil(L);
        return;
    }
    const char *from = p->kind == JSON_STRING ? p->ptr - 1 : p->ptr;
    size_t len = p->kind == JSON_STRING ? p->len + 2 : p->len;
    luamsg_push_decoded(L, from, len);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 1);
    ((view_t *)lua_touserdata(L, 1))->cached = true;
}

/* msg.payload_json: the payload's bytes as they came, not decoded. The
 * string is remembered (and kept alive) for the call, so that
 * bus.json(msg.payload_json) need not check it again. */
static void push_payload_json(lua_State *L, view_t *view)
{
    if (view->payload_text) {            /* read before in this call: the same string */
        lua_getiuservalue(L, 1, 2);
        return;
    }
    const env_value_t *p = &view->env->f[EF_PAYLOAD];
    if (p->kind == JSON_ABSENT)
        lua_pushliteral(L, "null");
    else if (p->kind == JSON_STRING)
        lua_pushlstring(L, p->ptr - 1, p->len + 2);
    else
        lua_pushlstring(L, p->ptr, p->len);
    view->payload_text = lua_tostring(L, -1);
    view->cached = true;
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, 1, 2);
}

static int view_index(lua_State *L)
{
    view_t *view = *(view_t **)lua_getextraspace(L);
    if (lua_touserdata(L, 1) != view || !view->env)
        view = checked_view(L);             /* raises */
    const envelope_t *env = view->env;
    const void *key = lua_topointer(L, 2);
    for (size_t i = 0; i < VIEW_KEY_COUNT; i++) {
        if (view->key_ptr[i] != key)
            continue;
        switch (view_keys[i].kind) {
        case K_STRING:
            if (view_keys[i].field == EF_TYPE && env->type != MT_NONE &&
                env_is_plain_string(&env->f[EF_TYPE]))
                lua_pushvalue(L, lua_upvalueindex(UPVALUE_TYPE_NAMES + (int)env->type));
            else
                push_name_field(L, view, view_keys[i].field);
            break;
        case K_PAYLOAD: push_payload(L, env); break;
        case K_PAYLOAD_JSON: push_payload_json(L, view); break;
        case K_TTL_MS:
            if (env->ttl_ms)
                lua_pushinteger(L, env->ttl_ms);
            else
                lua_pushnil(L);
            break;
        case K_RAW: lua_pushlstring(L, env->buf, env->len); break;
        case K_TABLE:
            lua_pushvalue(L, lua_upvalueindex(1));
            lua_pushcclosure(L, view_table, 1);
            break;
        }
        return 1;
    }
    luaL_checklstring(L, 2, NULL);          /* msg[1]: an error, as it always was */
    lua_pushnil(L);
    return 1;
}

static int view_newindex(lua_State *L)
{
    return luaL_error(L, "a message is read-only: return msg:table() with your changes instead");
}

static int view_tostring(lua_State *L)
{
    view_t *view = lua_touserdata(L, lua_upvalueindex(1));
    if (view->env && lua_touserdata(L, 1) == view)
        lua_pushlstring(L, view->env->buf, view->env->len);
    else
        lua_pushliteral(L, "message (released)");
    return 1;
}

/* --- JSON text as a value: bus.json(text) --- */

static bool is_json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The text without JSON's whitespace around it. */
static void trim_ws(const char **text, size_t *len)
{
    while (*len && is_json_ws((*text)[0]))
        (*text)++, (*len)--;
    while (*len && is_json_ws((*text)[*len - 1]))
        (*len)--;
}

/* json(text) -> a value that is sent as the JSON text itself. Upvalue 1:
 * the state's message view. */
static int raw_json_new(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *trimmed = text;
    const view_t *view = lua_touserdata(L, lua_upvalueindex(1));
    /* the very string msg.payload_json gave in this call is a payload the
     * broker checked already: the same object, so the same bytes */
    if (!(view->env && view->payload_text == text)) {
        sandbox_charge(L, (double)len / SANDBOX_SCAN_BYTES_PER_UNIT, "bus.json");
        trim_ws(&trimmed, &len);
        const char *why = NULL;
        if (!json_scan_member_value(trimmed, len, &why))
            return luaL_error(L, "bus.json: not a payload the broker can send: %s", why);
    }
    if (trimmed == text && len == lua_rawlen(L, 1))
        lua_pushvalue(L, 1);
    else
        lua_pushlstring(L, trimmed, len);
    lua_json_wrap_raw(L);
    return 1;
}

void luamsg_push_json_maker(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &view_key);
    lua_pushcclosure(L, raw_json_new, 1);
}

void luamsg_init(lua_State *L)
{
    lua_json_init_raw(L);

    view_t *view = lua_newuserdatauv(L, sizeof *view, UV_COUNT);
    memset(view->last, 0, sizeof view->last);
    view->env = NULL;
    view->payload_text = NULL;
    view->cached = false;
    /* its methods hold the view itself (upvalue 1): checked by a compare */
    luaL_newmetatable(L, VIEW_METATABLE);
    static const struct { const char *name; lua_CFunction fn; } methods[] = {
        {"__newindex", view_newindex}, {"__tostring", view_tostring},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        lua_pushvalue(L, -2);
        lua_pushcclosure(L, methods[i].fn, 1);
        lua_setfield(L, -2, methods[i].name);
    }
    lua_pushvalue(L, -2);
    for (size_t i = 0; i < VIEW_KEY_COUNT; i++) {
        lua_pushlstring(L, view_keys[i].name, view_keys[i].len);
        view->key_ptr[i] = lua_topointer(L, -1);    /* kept alive as an upvalue */
    }
    for (int t = 0; t < MT__COUNT; t++)
        lua_pushstring(L, msg_type_name((msg_type_t)t));
    lua_pushcclosure(L, view_index, UPVALUE_TYPE_NAMES - 1 + MT__COUNT);
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "message");
    lua_setfield(L, -2, "__metatable");   /* scripts cannot reach the methods */
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    view->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &view_key);
    /* for luamsg_release, which must not call Lua (it runs after the
     * protected call, whatever happened in it); the view is anchored in
     * the registry, and userdata never move */
    *(view_t **)lua_getextraspace(L) = view;
}

void luamsg_push(lua_State *L, const envelope_t *env)
{
    view_t *view = *(view_t **)lua_getextraspace(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, view->ref);
    view->env = env;
    view->payload_text = NULL;
    if (view->cached) {
        lua_pushnil(L);
        lua_setiuservalue(L, -2, 1);      /* forget the last message's payload */
        lua_pushnil(L);
        lua_setiuservalue(L, -2, 2);      /* and its payload_json */
        view->cached = false;
    }
}

void luamsg_release(lua_State *L)
{
    /* plain C: the cached payload and payload_json strings stay referenced
     * (user values) until the next luamsg_push clears them */
    view_t *view = *(view_t **)lua_getextraspace(L);
    if (view) {
        view->env = NULL;
        view->payload_text = NULL;
    }
}

bool luamsg_encode_text(lua_State *L, int index, luamsg_text_t *out, char *err, size_t errlen)
{
    index = lua_absindex(L, index);
    memset(out, 0, sizeof *out);
    out->text = lua_json_raw(L, index, &out->len);
    if (out->text)
        return true;                        /* held by the value itself */
    lua_json_text_t *t = &out->owned;
    lua_pushcfunction(L, lua_json_encode_send);     /* light: nothing allocated */
    lua_pushvalue(L, index);
    lua_pushlightuserdata(L, t);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        const sandbox_t *sb = sandbox_of(L);
        if (sandbox_over_budget(sb))        /* an allocation refused for it says "not enough memory" */
            snprintf(err, errlen, "cannot encode the message: instruction budget exhausted%s%s",
                     sandbox_refusal(sb)[0] ? "; refused: " : "", sandbox_refusal(sb));
        else
            snprintf(err, errlen, "cannot encode the message: %s",
                     lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error");
        lua_pop(L, 1);
        lua_json_text_free(L, t);
        return false;
    }
    /* lua_json copies a Lua string's bytes as they are and nests as deep
     * as a table goes: what it could not vouch for is scanned, and refused
     * here as the broker would refuse it as bad_json from anyone else */
    const char *why = NULL;
    if (t->unsure && !json_scan_member_value(t->data, t->len, &why)) {
        snprintf(err, errlen, "cannot send the encoded value: %s", why);
        lua_json_text_free(L, t);
        return false;
    }
    out->text = t->data;
    out->len = t->len;
    return true;
}

void luamsg_text_free(lua_State *L, luamsg_text_t *t)
{
    lua_json_text_free(L, &t->owned);
    t->text = NULL;
}

char *luamsg_encode(lua_State *L, int index, size_t *len, char *err, size_t errlen)
{
    luamsg_text_t t;
    if (!luamsg_encode_text(L, index, &t, err, errlen))
        return NULL;
    char *copy = malloc(t.len + 1);
    if (copy) {
        memcpy(copy, t.text, t.len);
        copy[t.len] = '\0';
        *len = t.len;
    } else {
        snprintf(err, errlen, "out of memory");
    }
    luamsg_text_free(L, &t);
    return copy;
}
