/* luamsg: envelopes between C and Lua. See luamsg.h. */
#include "luamsg.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "json_scan.h"
#include "lua_json.h"
#include "sandbox.h"

/* The state's one view, in the registry under this address (lua_rawgetp:
 * no string to intern on every message). */
static const char view_key;


/* The fields a view has, in view_keys order. */
#define VIEW_KEY_COUNT 13

/* How many payload members, of what length, a type's hooks may read from
 * proxies (luamsg_payload_key) with their decisions still kept. */
#define PAYLOAD_KEYS_MAX 8
#define PAYLOAD_KEY_MAX 32

/* How a read is served. The view is a userdata whose metatable's __index
 * is, during a call, a plain table of fields kept for the message's type:
 * a field found there costs the VM one table lookup, no call into C (a
 * call into C from __index costs ~450 instructions with the budget's hook
 * on). What is not there falls to that table's own __index, view_index
 * (C), which pushes the value and stores it in the table. Before each
 * call luamsg_push brings the table of the message's type up to date for
 * the fields that hooks read from messages of that type before (the
 * fields of a message are the same few, message after message, and most
 * of their values too: a field whose bytes have not changed is left as it
 * is). Before a call that does not push a view, the view gets a
 * metatable whose __index is an empty table (luamsg_enter, from
 * sandbox_protected), so that a view kept past its call finds nothing
 * there and view_index raises; a call that pushes a view gives it its
 * type's metatable first thing, before any Lua code runs (no swap at all
 * while messages of one type follow each other). A script
 * never reaches these tables (the metatable is hidden; msg is read-only). */
typedef struct {
    const envelope_t *env;      /* NULL outside the call it was passed to */
    const char *payload_text;   /* the string msg.payload_json gave in this call (kept
                                   alive in the fields table), or NULL */
    int ref;                    /* the view in the registry (an array slot: no hash) */
    int armed;                  /* the type whose metatable the view has, or -1 */
    bool will_push;             /* the next call pushes a view (luamsg_will_push) */
    const void *fields[MT__COUNT]; /* the fields tables, by address */
    uint16_t filled[MT__COUNT]; /* the keys set in each, by view_keys index */
    uint16_t guess[MT__COUNT];  /* the keys to bring up to date before a call */
    uint32_t ever_fields[MT__COUNT]; /* the string fields hooks ever read from messages
                                   of each type, as 1u << env_field_t (luamsg_fields_read) */
    bool ever_other[MT__COUNT]; /* and whether they read any other key, or a payload
                                   whole (for a payload proxy: was settled) */
    bool ever_payload[MT__COUNT]; /* whether they read msg.payload */
    /* the payload members hooks read from proxies (luamsg_payload_key):
     * the same few, so kept in the order first read */
    uint8_t pkey_count[MT__COUNT];
    uint8_t pkey_len[MT__COUNT][PAYLOAD_KEYS_MAX];
    char pkeys[MT__COUNT][PAYLOAD_KEYS_MAX][PAYLOAD_KEY_MAX];
    bool lazy;                  /* this call's payload may be a proxy (luamsg_will_push) */
    bool proxy_live;            /* UV_PROXY is this call's proxy, not yet settled */
    const void *proxy;          /* it, by address */
    const void *proxy_reader;   /* payload_index's closure (luamsg_is_reader) */
    json_object_t members;      /* the live proxy's payload: its members */
    const void *reader;         /* view_index's closure (luamsg_is_reader) */
    const void *key_ptr[VIEW_KEY_COUNT]; /* the keys' interned strings, by address:
                                            a read is told by one compare a key */
    struct {
        const char *text;       /* a string field's value in the fields table (kept
                                   alive there), or NULL */
        size_t len;
    } held[MT__COUNT][VIEW_KEY_COUNT];
} view_t;

/* The view's user values. Its metatable is, during a call, the one of the
 * message's type (its __index: that type's fields table), else the
 * released one (__index: a table with nothing but msg.table). */
#define UV_FIELDS 1                     /* + type: the fields tables */
#define UV_META (UV_FIELDS + MT__COUNT) /* + type: the metatables; + MT__COUNT: released */
#define UV_KEYS (UV_META + MT__COUNT + 1) /* + key index: the keys' strings */
#define UV_TYPES (UV_KEYS + VIEW_KEY_COUNT) /* + type: the names of the types */
#define UV_PROXY (UV_TYPES + MT__COUNT) /* this call's payload proxy, or nil */
#define UV_PROXY_MT (UV_PROXY + 1)      /* the proxies' metatable */
#define UV_COUNT UV_PROXY_MT

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
    if (!v->escaped) {
        lua_pushlstring(L, v->ptr, v->len);
    } else {
        size_t len;             /* the quotes around the content too */
        const char *text = env_value_json(v, &len);
        luamsg_push_decoded(L, text, len);
    }
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
 * string: Lua interns short strings, so equal names are one object. */
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
_Static_assert(VIEW_KEY_COUNT <= 16, "a key set fits in 16 bits");

/* The keys brought up to date before a call: cheap to push and the same
 * few message after message (a payload is decoded only when read). */
#define GUESSABLE(kind) ((kind) == K_STRING || (kind) == K_TTL_MS)

/* --- msg.payload as a proxy, in a call the decision cache watches ---
 *
 * A kept decision must depend on nothing the key does not hold. A hook
 * that reads msg.payload.drop depends on that one member, not on the
 * whole payload: in a watched call (policy.c) an object payload is an
 * empty table whose __index reads the member asked for from the frame's
 * bytes (decoded by lua_json.c as the whole payload would be: the same
 * values) and keeps it in the table, so a second read finds the same
 * value. Which members hooks read is noted by type (luamsg_payload_key).
 *
 * What a plain table would show that an empty one does not (next, #,
 * rawget, rawlen, getmetatable, encoding, any C function that is not
 * known to leave tables alone, a call that may store the table where it
 * outlives the bytes) first settles the proxy: the rest of its members
 * are decoded into it and its metatable is taken away, so that from then
 * on it is what msg.payload was before proxies (luamsg_settle; policy.c
 * calls it for those). The type's decisions then depend on the payload
 * whole and are not kept. */

/* The members of the object at [text, text+len), if a proxy can stand
 * for it: at most JSON_SCAN_MAX_MEMBERS members (each handed on, so a
 * repeated one's last is seen), no escapes in their names (compared as
 * bytes). Fills `out`. */
static bool proxy_members(const char *text, size_t len, json_object_t *out)
{
    if (json_scan_object(text, len, out, NULL) != JSON_SCAN_OK)
        return false;
    for (int i = 0; i < out->count; i++) {
        if (out->members[i].key_escaped)
            return false;
    }
    return true;
}

/* The last member of `obj` (in `text`) named key[0..klen), or NULL. */
static const json_member_t *member_named(const json_object_t *obj, const char *text,
                                         const char *key, size_t klen)
{
    for (int i = obj->count - 1; i >= 0; i--) {
        const json_member_t *m = &obj->members[i];
        if (m->key_len == klen && memcmp(text + m->key_off, key, klen) == 0)
            return m;
    }
    return NULL;
}

/* A member's value as JSON text (a string's with its quotes). */
static const char *member_json(const json_member_t *m, const char *text, size_t *len)
{
    bool quoted = m->kind == JSON_STRING;
    *len = m->val_len + (quoted ? 2u : 0u);
    return text + m->val_off - (quoted ? 1 : 0);
}

/* The payload's text, of the message the view shows. */
static const char *payload_text_of(const view_t *view, size_t *len)
{
    return env_value_json(&view->env->f[EF_PAYLOAD], len);
}

/* Pushes a proxy for the payload p (an object) at [text, text+len) if
 * one can stand for it; false (nothing pushed) if not. Charged as its
 * decode is. */
static bool push_proxy(lua_State *L, view_t *view, int vi, const env_value_t *p,
                       const char *text, size_t len)
{
    if (p->kind != JSON_OBJECT || view->proxy_live || !proxy_members(text, len, &view->members))
        return false;
    sandbox_charge(L, (double)len / SANDBOX_DECODE_BYTES_PER_UNIT, "json.decode");
    lua_createtable(L, 0, 2);
    lua_getiuservalue(L, vi, UV_PROXY_MT);
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, vi, UV_PROXY);
    view->proxy = lua_topointer(L, -1);
    view->proxy_live = true;
    return true;
}

/* Notes that hooks of type t read member key[0..klen) of a proxy. */
static void note_member(view_t *view, int t, const char *key, size_t klen)
{
    if (view->ever_other[t])
        return;                             /* not kept for this type anyway */
    for (int i = 0; i < view->pkey_count[t]; i++) {
        if (view->pkey_len[t][i] == klen && memcmp(view->pkeys[t][i], key, klen) == 0)
            return;
    }
    if (view->pkey_count[t] == PAYLOAD_KEYS_MAX || klen > PAYLOAD_KEY_MAX) {
        view->ever_other[t] = true;         /* more than a key holds */
        return;
    }
    memcpy(view->pkeys[t][view->pkey_count[t]], key, klen);
    view->pkey_len[t][view->pkey_count[t]++] = (uint8_t)klen;
}

/* Whether the value at `index` is this call's live proxy. */
static bool is_live_proxy(lua_State *L, const view_t *view, int index)
{
    return view->proxy_live && view->env && lua_topointer(L, index) == view->proxy;
}

/* __index of a proxy: the member asked for. Upvalue 1: the view. A proxy
 * is settled before the bytes it reads go (luamsg_settle, luamsg_release). */
static int payload_index(lua_State *L)
{
    view_t *view = lua_touserdata(L, lua_upvalueindex(1));
    if (!is_live_proxy(L, view, 1))
        return luaL_error(L, "a payload was read after its message's call");
    if (lua_type(L, 2) != LUA_TSTRING) {
        lua_pushnil(L);                     /* an object's names are strings */
        return 1;
    }
    size_t klen, len;
    const char *key = lua_tolstring(L, 2, &klen);
    note_member(view, view->env->type, key, klen);
    const char *text = payload_text_of(view, &len);
    const json_member_t *m = member_named(&view->members, text, key, klen);
    if (!m) {
        lua_pushnil(L);
        return 1;
    }
    size_t vlen;
    const char *value = member_json(m, text, &vlen);
    lua_settop(L, 2);
    lua_json_push_charged(L, value, vlen);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 3);
    lua_rawset(L, 1);                       /* the same value at the next read */
    return 1;
}

/* __len and __newindex of a proxy: what a whole table does. */
static int payload_len(lua_State *L)
{
    luamsg_settle(L);                       /* a proxy is only ever the live one */
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 1));
    return 1;
}

static int payload_newindex(lua_State *L)
{
    luamsg_settle(L);
    lua_settop(L, 3);
    lua_rawset(L, 1);
    return 0;
}

void luamsg_settle(lua_State *L)
{
    view_t *view = *(view_t **)lua_getextraspace(L);
    if (!view || !view->proxy_live || !view->env)
        return;
    luaL_checkstack(L, 6, "settling a payload");
    lua_rawgeti(L, LUA_REGISTRYINDEX, view->ref);
    lua_getiuservalue(L, -1, UV_PROXY);
    int proxy = lua_gettop(L);
    size_t len;
    const char *text = payload_text_of(view, &len);
    lua_json_push_charged(L, text, len);    /* the whole payload, a plain table */
    int whole = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, whole)) {
        lua_pushvalue(L, -2);
        if (lua_rawget(L, proxy) == LUA_TNIL) {   /* a member read already stays as read */
            lua_pushvalue(L, -3);
            lua_pushvalue(L, -3);
            lua_rawset(L, proxy);
        }
        lua_pop(L, 2);
    }
    lua_pushnil(L);
    lua_setmetatable(L, proxy);
    view->proxy_live = false;
    view->ever_other[view->env->type] = true;    /* read whole: its decisions not kept */
    lua_settop(L, proxy - 2);
}

void luamsg_whole_payloads(lua_State *L)
{
    view_t *view = *(view_t **)lua_getextraspace(L);
    if (!view)
        return;
    luamsg_settle(L);
    view->lazy = false;
}

bool luamsg_payload_pending(lua_State *L)
{
    const view_t *view = *(view_t **)lua_getextraspace(L);
    return view && view->proxy_live;
}

/* The key part of one member: 'a' (absent), or 'p', its length (4
 * bytes) and its JSON text. False if it does not fit. */
static bool put_bytes(unsigned char *out, size_t cap, size_t *at, char tag, const char *bytes,
                      size_t n)
{
    if (*at + 1 + (bytes ? 4 + n : 0) > cap)
        return false;
    out[(*at)++] = (unsigned char)tag;
    if (bytes) {
        uint32_t n32 = (uint32_t)n;
        memcpy(out + *at, &n32, 4);
        memcpy(out + *at + 4, bytes, n);
        *at += 4 + n;
    }
    return true;
}

bool luamsg_payload_key(lua_State *L, const envelope_t *env, unsigned char *out, size_t cap,
                        size_t *len)
{
    view_t *view = *(view_t **)lua_getextraspace(L);
    int t = env->type;
    *len = 0;
    if (!view || !view->ever_payload[t])
        return true;                        /* not read: not in the key */
    const env_value_t *p = &env->f[EF_PAYLOAD];
    if (p->kind == JSON_ABSENT || p->kind == JSON_NULL)
        return put_bytes(out, cap, len, 'n', NULL, 0);      /* msg.payload is nil */
    size_t tlen;
    const char *text = env_value_json(p, &tlen);
    /* a proxy's reads (the members in view->pkeys), or, where the hooks
     * were given a plain table, the payload whole */
    json_object_t members, *obj = &members;
    if (p->kind != JSON_OBJECT || !proxy_members(text, tlen, obj))
        return put_bytes(out, cap, len, 'w', text, tlen);
    if (!put_bytes(out, cap, len, 'o', NULL, 0) ||
        !put_bytes(out, cap, len, (char)view->pkey_count[t], NULL, 0))
        return false;
    for (int i = 0; i < view->pkey_count[t]; i++) {
        const json_member_t *m = member_named(obj, text, view->pkeys[t][i], view->pkey_len[t][i]);
        size_t vlen = 0;
        const char *value = m ? member_json(m, text, &vlen) : NULL;
        if (!put_bytes(out, cap, len, m ? 'p' : 'a', value, vlen))
            return false;
    }
    return true;
}

/* Pushes the value of key i of the view at `vi`; false (nothing pushed)
 * if the message has no such field. */
static bool push_key_value(lua_State *L, view_t *view, int vi, size_t i)
{
    const envelope_t *env = view->env;
    switch (view_keys[i].kind) {
    case K_STRING: {
        const env_value_t *v = &env->f[view_keys[i].field];
        if (v->kind != JSON_STRING)
            return false;
        if (view_keys[i].field == EF_TYPE && env->type != MT_NONE && !v->escaped)
            lua_getiuservalue(L, vi, UV_TYPES + (int)env->type);     /* names made once */
        else
            push_string_field(L, v);
        return true;
    }
    case K_PAYLOAD: {
        const env_value_t *p = &env->f[EF_PAYLOAD];
        if (p->kind == JSON_ABSENT || p->kind == JSON_NULL)
            return false;
        size_t len;
        const char *text = env_value_json(p, &len);
        if (!(view->lazy && push_proxy(L, view, vi, p, text, len)))
            luamsg_push_decoded(L, text, len);
        return true;
    }
    case K_PAYLOAD_JSON: {
        /* the payload's bytes as they came, not decoded; remembered (and
         * kept alive in the fields table) for the call, so that
         * bus.json(msg.payload_json) need not check it again */
        const env_value_t *p = &env->f[EF_PAYLOAD];
        if (p->kind == JSON_ABSENT) {
            lua_pushliteral(L, "null");
        } else {
            size_t len;
            const char *text = env_value_json(p, &len);
            lua_pushlstring(L, text, len);
        }
        view->payload_text = lua_tostring(L, -1);
        return true;
    }
    case K_TTL_MS:
        if (!env->ttl_ms)
            return false;
        lua_pushinteger(L, env->ttl_ms);
        return true;
    case K_RAW:
        lua_pushlstring(L, env->buf, env->len);
        return true;
    case K_TABLE:
        break;                  /* in every fields table for good (luamsg_init) */
    }
    return false;
}

/* Whether the fields table of type t holds key i's value for this message
 * already: a plain string field with the same bytes. */
static bool held_still(const view_t *view, int t, size_t i)
{
    if (view_keys[i].kind != K_STRING)
        return false;
    const env_value_t *v = &view->env->f[view_keys[i].field];
    const char *text = view->held[t][i].text;
    return text && v->kind == JSON_STRING && !v->escaped && view->held[t][i].len == v->len &&
           memcmp(text, v->ptr, v->len) == 0;
}

/* Sets key i of the fields table at `fi` (type t) to the value on top
 * (popped) and notes it. */
static void hold(lua_State *L, view_t *view, int fi, int t, size_t i)
{
    const envelope_t *env = view->env;
    bool plain = view_keys[i].kind == K_STRING &&
                 !env->f[view_keys[i].field].escaped;
    view->held[t][i].text = plain ? lua_tostring(L, -1) : NULL;
    view->held[t][i].len = plain ? env->f[view_keys[i].field].len : 0;
    lua_rawset(L, fi);
    view->filled[t] |= (uint16_t)(1u << i);
}

/* __index of a fields table: a key not in it. Upvalue 1: the view. */
static int view_index(lua_State *L)
{
    view_t *view = lua_touserdata(L, lua_upvalueindex(1));
    if (!view->env || lua_topointer(L, 1) != view->fields[view->env->type]) {
        lua_settop(L, 0);
        lua_pushvalue(L, lua_upvalueindex(1));
        checked_view(L);                    /* raises: released */
    }
    const void *key = lua_topointer(L, 2);
    for (size_t i = 0; i < VIEW_KEY_COUNT; i++) {
        if (view->key_ptr[i] != key)
            continue;
        if (view_keys[i].kind == K_STRING)
            view->ever_fields[view->env->type] |= 1u << view_keys[i].field;
        else if (view_keys[i].kind == K_PAYLOAD)
            view->ever_payload[view->env->type] = true;     /* what of it: the proxy tells */
        else
            view->ever_other[view->env->type] = true;
        lua_settop(L, 2);
        lua_pushvalue(L, lua_upvalueindex(1));                  /* 3: the view */
        if (!push_key_value(L, view, 3, i)) {
            lua_pushnil(L);
            return 1;
        }
        /* kept for the rest of the call, and brought up to date for the
         * next message of this type */
        int t = view->env->type;
        lua_pushvalue(L, 2);
        lua_pushvalue(L, -2);
        hold(L, view, 1, t, i);
        if (GUESSABLE(view_keys[i].kind))
            view->guess[t] |= (uint16_t)(1u << i);
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

static void luamsg_enter(lua_State *L);

void luamsg_init(lua_State *L)
{
    lua_json_init_raw(L);

    view_t *view = lua_newuserdatauv(L, sizeof *view, UV_COUNT);
    memset(view, 0, sizeof *view);
    view->armed = -1;
    int vi = lua_gettop(L);
    for (size_t i = 0; i < VIEW_KEY_COUNT; i++) {
        lua_pushlstring(L, view_keys[i].name, view_keys[i].len);
        view->key_ptr[i] = lua_topointer(L, -1);    /* kept alive as a user value */
        lua_setiuservalue(L, vi, UV_KEYS + (int)i);
    }
    for (int t = 0; t < MT__COUNT; t++) {
        lua_pushstring(L, msg_type_name((msg_type_t)t));
        lua_setiuservalue(L, vi, UV_TYPES + t);
    }
    /* the fields tables (one a type, and the empty one) share a metatable
     * whose __index holds the view itself (upvalue 1): checked by a compare */
    lua_createtable(L, 0, 1);
    int fields_mt = lua_gettop(L);
    lua_pushvalue(L, vi);
    lua_pushcclosure(L, view_index, 1);
    view->reader = lua_topointer(L, -1);            /* anchored by fields_mt */
    lua_setfield(L, fields_mt, "__index");
    lua_pushvalue(L, vi);
    lua_pushcclosure(L, view_table, 1);             /* msg:table(), in each for good */
    int table_fn = lua_gettop(L);
    static const struct { const char *name; lua_CFunction fn; } methods[] = {
        {"__newindex", view_newindex}, {"__tostring", view_tostring},
    };
    for (int t = 0; t <= MT__COUNT; t++) {          /* MT__COUNT: released */
        lua_createtable(L, 0, t < MT__COUNT ? 8 : 1);
        lua_pushvalue(L, fields_mt);
        lua_setmetatable(L, -2);
        lua_pushliteral(L, "table");
        lua_pushvalue(L, table_fn);
        lua_rawset(L, -3);
        int fields = lua_gettop(L);
        if (t < MT__COUNT)
            view->fields[t] = lua_topointer(L, fields);
        lua_createtable(L, 0, 4);                   /* the view's metatable for it */
        for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
            lua_pushvalue(L, vi);
            lua_pushcclosure(L, methods[i].fn, 1);
            lua_setfield(L, -2, methods[i].name);
        }
        lua_pushvalue(L, fields);
        lua_setfield(L, -2, "__index");
        lua_pushliteral(L, "message");
        lua_setfield(L, -2, "__metatable");         /* scripts cannot reach the methods */
        lua_setiuservalue(L, vi, UV_META + t);
        if (t < MT__COUNT)
            lua_setiuservalue(L, vi, UV_FIELDS + t);
        else
            lua_pop(L, 1);                          /* held by its metatable */
    }
    /* the payload proxies' metatable: no __name, no __metatable (a
     * proxy is settled before anything could see either) */
    static const struct { const char *name; lua_CFunction fn; } proxy_methods[] = {
        {"__index", payload_index}, {"__len", payload_len}, {"__newindex", payload_newindex},
    };
    lua_createtable(L, 0, 3);
    for (size_t i = 0; i < sizeof proxy_methods / sizeof proxy_methods[0]; i++) {
        lua_pushvalue(L, vi);
        lua_pushcclosure(L, proxy_methods[i].fn, 1);
        if (proxy_methods[i].fn == payload_index)
            view->proxy_reader = lua_topointer(L, -1);  /* anchored by the metatable */
        lua_setfield(L, -2, proxy_methods[i].name);
    }
    lua_setiuservalue(L, vi, UV_PROXY_MT);
    lua_getiuservalue(L, vi, UV_META + MT__COUNT);
    lua_setmetatable(L, vi);
    lua_settop(L, vi);
    lua_pushvalue(L, -1);
    view->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &view_key);
    /* for luamsg_release, which must not call Lua (it runs after the
     * protected call, whatever happened in it); the view is anchored in
     * the registry, and userdata never move */
    *(view_t **)lua_getextraspace(L) = view;
    sandbox_set_on_enter(sandbox_of(L), luamsg_enter);
}

/* Gives the view at `vi` the metatable of type t (MT__COUNT: the released
 * one). lua_setmetatable on a userdata allocates nothing and, with no
 * __gc in these metatables, cannot raise. */
static void set_meta(lua_State *L, int vi, int t)
{
    lua_getiuservalue(L, vi, UV_META + t);
    lua_setmetatable(L, vi);
}

/* Empties, in the fields table of type t, what is not worth keeping for
 * the next message of that type (what hooks read lazily: payload, raw;
 * and a field the next message may lack is checked at the next push). An
 * existing key set to nil: nothing allocated, cannot raise. */
static void drop_lazy(lua_State *L, view_t *view, int vi, int t)
{
    unsigned lazy = view->filled[t] & ~view->guess[t];
    if (!lazy)
        return;
    lua_getiuservalue(L, vi, UV_FIELDS + t);
    for (; lazy; lazy &= lazy - 1) {
        int i = __builtin_ctz(lazy);
        lua_getiuservalue(L, vi, UV_KEYS + i);
        lua_pushnil(L);
        lua_rawset(L, -3);
        view->held[t][i].text = NULL;
    }
    lua_pop(L, 1);
    view->filled[t] &= view->guess[t];
}

void luamsg_push(lua_State *L, const envelope_t *env)
{
    view_t *view = *(view_t **)lua_getextraspace(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, view->ref);
    int vi = lua_gettop(L);
    int t = env->type;
    view->env = env;
    view->payload_text = NULL;
    drop_lazy(L, view, vi, t);              /* what the last call of this type read lazily */
    /* the fields table of this type, brought up to date: the keys hooks
     * read before, where the value changed or is gone */
    int fi = 0;                             /* the fields table, once pushed */
    for (unsigned todo = view->guess[t]; todo; todo &= todo - 1) {
        int i = __builtin_ctz(todo);
        if (held_still(view, t, (size_t)i))
            continue;
        if (!fi) {
            lua_getiuservalue(L, vi, UV_FIELDS + t);
            fi = lua_gettop(L);
        }
        lua_getiuservalue(L, vi, UV_KEYS + i);
        if (push_key_value(L, view, vi, (size_t)i)) {
            hold(L, view, fi, t, (size_t)i);
        } else if (view->filled[t] & (1u << i)) {
            lua_pushnil(L);                 /* absent from this message */
            lua_rawset(L, fi);
            view->filled[t] &= (uint16_t)~(1u << i);
            view->held[t][i].text = NULL;
        } else {
            lua_pop(L, 1);
        }
    }
    if (fi)
        lua_settop(L, vi);
    if (view->armed != t) {
        set_meta(L, vi, t);
        view->armed = t;
    }
}

unsigned luamsg_fields_read(lua_State *L, msg_type_t t, bool *other, bool *payload)
{
    /* msg.table is in every fields table from the start (never read through
     * view_index): calling it is a C function the caller sees called */
    const view_t *view = *(view_t **)lua_getextraspace(L);
    *other = view && view->ever_other[t];
    *payload = view && view->ever_payload[t];
    return view ? view->ever_fields[t] : 0;
}

bool luamsg_is_reader(lua_State *L, const void *fn)
{
    const view_t *view = *(view_t **)lua_getextraspace(L);
    return view && (fn == view->reader || fn == view->proxy_reader);
}

void luamsg_release(lua_State *L)
{
    view_t *view = *(view_t **)lua_getextraspace(L);
    if (!view)
        return;
    if (view->proxy_live && lua_checkstack(L, 3)) {
        /* not settled: the call stored nothing (policy.c settles before
         * anything that may store runs), so nothing holds it; taking its
         * metatable away only makes sure (no allocation here) */
        lua_rawgeti(L, LUA_REGISTRYINDEX, view->ref);
        lua_getiuservalue(L, -1, UV_PROXY);
        lua_pushnil(L);
        lua_setmetatable(L, -2);
        lua_pop(L, 2);
    }
    view->proxy_live = false;
    view->lazy = false;
    view->env = NULL;
    view->payload_text = NULL;
}

void luamsg_will_push(lua_State *L, bool lazy)
{
    view_t *view = *(view_t **)lua_getextraspace(L);
    if (view) {
        view->will_push = true;
        view->lazy = lazy;
    }
}

/* sandbox_protected's on_enter: plain C, with calls that cannot raise. A
 * call that will not push a view finds it released (and one that will
 * gets its type's metatable from luamsg_push, first thing). */
static void luamsg_enter(lua_State *L)
{
    view_t *view = *(view_t **)lua_getextraspace(L);
    if (!view)
        return;
    bool pushing = view->will_push;
    view->will_push = false;
    if (pushing || view->armed < 0 || !lua_checkstack(L, 3))
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, view->ref);
    set_meta(L, lua_gettop(L), MT__COUNT);
    view->armed = -1;
    lua_pop(L, 1);
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
