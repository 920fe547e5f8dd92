/* lua_json: a faithful JSON codec for Lua services. See lua_json.h. */
#include "lua_json.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "json_scan.h"
#include "sandbox.h"

/* --- bus.json() values: JSON text sent as it is --- */

#define RAW_METATABLE "smartshop.json"

/* What a bus.json() userdata holds, so that it is told apart from other
 * userdata by a compare, not by a metatable lookup by name. */
typedef struct {
    const void *magic;          /* &raw_magic */
} raw_json_t;
static const char raw_magic;

static int raw_tostring(lua_State *L)
{
    luaL_checkudata(L, 1, RAW_METATABLE);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

void lua_json_init_raw(lua_State *L)
{
    luaL_newmetatable(L, RAW_METATABLE);
    lua_pushcfunction(L, raw_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "json");
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

void lua_json_wrap_raw(lua_State *L)
{
    raw_json_t *raw = lua_newuserdatauv(L, sizeof *raw, 1);
    raw->magic = &raw_magic;
    lua_rotate(L, -2, 1);                   /* the string on top */
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, RAW_METATABLE);
}

void lua_json_push_raw(lua_State *L, const char *text, size_t len)
{
    lua_pushlstring(L, text, len);
    lua_json_wrap_raw(L);
}

const char *lua_json_raw(lua_State *L, int index, size_t *len)
{
    const raw_json_t *raw = lua_touserdata(L, index);
    if (lua_type(L, index) != LUA_TUSERDATA || lua_rawlen(L, index) != sizeof *raw ||
        raw->magic != &raw_magic)
        return NULL;
    lua_getiuservalue(L, index, 1);
    const char *text = lua_tolstring(L, -1, len);
    lua_pop(L, 1);          /* the userdata still holds the string */
    return text;
}

/* The array metatable, in the registry under this address. */
static const char array_mt_key;

static void push_array_mt(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &array_mt_key);
}

/* --- decode: valid JSON (json_scan said so) to Lua values --- */

typedef struct {
    const char *p, *end;
} reader_t;

static void skip_ws(reader_t *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static unsigned hex4(const char *p)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v = v * 16 + (unsigned)(c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static void add_utf8(luaL_Buffer *b, unsigned cp)
{
    char out[4];
    size_t n;
    if (cp < 0x80) {
        out[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        out[0] = (char)(0xF0 | cp >> 18), out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), out[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    luaL_addlstring(b, out, n);
}

/* Pushes the string at r->p (the opening quote). */
static void read_string(lua_State *L, reader_t *r)
{
    const char *s = ++r->p;
    /* valid JSON: the first quote ends the string unless a backslash
     * comes before it (memchr: a word at a time, not a byte) */
    const char *q = memchr(s, '"', (size_t)(r->end - s));
    if (!memchr(s, '\\', (size_t)(q - s))) {   /* no escapes: the bytes themselves */
        lua_pushlstring(L, s, (size_t)(q - s));
        r->p = q + 1;
        return;
    }
    q = s;
    while (*q != '"' && *q != '\\')
        q++;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (;;) {
        luaL_addlstring(&b, s, (size_t)(q - s));
        if (*q == '"')
            break;
        char c = q[1];
        q += 2;
        switch (c) {
        case 'b': luaL_addchar(&b, '\b'); break;
        case 'f': luaL_addchar(&b, '\f'); break;
        case 'n': luaL_addchar(&b, '\n'); break;
        case 'r': luaL_addchar(&b, '\r'); break;
        case 't': luaL_addchar(&b, '\t'); break;
        case 'u': {
            unsigned cp = hex4(q);
            q += 4;
            if (cp >= 0xD800 && cp < 0xDC00) {  /* the scanner checked the pair */
                unsigned lo = hex4(q + 2);
                q += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            add_utf8(&b, cp);
            break;
        }
        default: luaL_addchar(&b, c); break;    /* " \ / */
        }
        s = q;
        while (*q != '"' && *q != '\\')
            q++;
    }
    luaL_pushresult(&b);
    r->p = q + 1;
}

/* Pushes the number at r->p: an integer if it is one and fits in 64 bits
 * (signed), its text (a bus.json value) if it is a larger integer, else a
 * float. */
static void read_number(lua_State *L, reader_t *r)
{
    const char *s = r->p, *q = s;
    bool integral = true;
    if (*q == '-')
        q++;
    while (q < r->end && ((*q >= '0' && *q <= '9') || *q == '.' || *q == 'e' || *q == 'E' ||
                          *q == '+' || *q == '-')) {
        if (*q == '.' || *q == 'e' || *q == 'E')
            integral = false;
        q++;
    }
    r->p = q;
    size_t len = (size_t)(q - s);
    char tmp[64];
    if (integral && !(len == 2 && s[0] == '-' && s[1] == '0')) {
        /* digits only (and a sign): at most 19 digits always fit */
        size_t digits = len - (s[0] == '-');
        if (digits <= 18) {
            int64_t v = 0;
            for (const char *d = s + (s[0] == '-'); d < q; d++)
                v = v * 10 + (*d - '0');
            lua_pushinteger(L, s[0] == '-' ? -v : v);
            return;
        }
        if (len < sizeof tmp) {
            memcpy(tmp, s, len);
            tmp[len] = '\0';
            errno = 0;
            long long v = strtoll(tmp, NULL, 10);
            if (errno == 0) {
                lua_pushinteger(L, (lua_Integer)v);
                return;
            }
        }
        lua_json_push_raw(L, s, len);   /* beyond 64 bits: its digits, kept */
        return;
    }
    double v;
    if (len < sizeof tmp) {
        memcpy(tmp, s, len);
        tmp[len] = '\0';
        v = strtod(tmp, NULL);
    } else {                                /* a long literal: strtod needs it terminated */
        luaL_Buffer b;
        char *copy = luaL_buffinitsize(L, &b, len + 1);
        memcpy(copy, s, len);
        copy[len] = '\0';
        v = strtod(copy, NULL);
        lua_pop(L, 1);                      /* the buffer's box */
    }
    if (isinf(v))                           /* 1e400: no double holds it, keep its text */
        lua_json_push_raw(L, s, len);
    else
        lua_pushnumber(L, v);
}

static void read_value(lua_State *L, reader_t *r, int depth);

/* Values are read onto the stack first, at most GATHER_MAX at a time,
 * and the table is made with their count (no rehash as it grows): an
 * object's keys and values, or an array's values, are then set in the
 * order read (a repeated key: the last wins, as in lua-cjson). */
#define GATHER_MAX 64

/* Sets the n key/value pairs above the table at `t` into it, popping them. */
static void flush_pairs(lua_State *L, int t, int n)
{
    for (int i = 0; i < n; i++) {
        lua_pushvalue(L, t + 1 + 2 * i);
        lua_pushvalue(L, t + 2 + 2 * i);
        lua_rawset(L, t);
    }
    lua_settop(L, t);
}

static void read_array(lua_State *L, reader_t *r, int depth)
{
    r->p++;
    skip_ws(r);
    if (*r->p == ']') {
        r->p++;
        lua_createtable(L, 0, 0);
        push_array_mt(L);
        lua_setmetatable(L, -2);
        return;
    }
    luaL_checkstack(L, GATHER_MAX + 4, "json.decode: nesting too deep");
    int base = lua_gettop(L);       /* the values go above it */
    int n = 0, t = 0;               /* t: the table, once made */
    lua_Integer next = 1;
    bool more = true;
    while (more) {
        read_value(L, r, depth + 1);
        n++;
        skip_ws(r);
        more = *r->p++ != ']';
        if (more)
            skip_ws(r);
        if (n == GATHER_MAX || !more) {
            if (!t) {
                lua_createtable(L, more ? 2 * n : n, 0);
                push_array_mt(L);
                lua_setmetatable(L, -2);
                lua_insert(L, base + 1);
                t = base + 1;
            }
            for (int i = 0; i < n; i++) {
                lua_pushvalue(L, t + 1 + i);
                lua_rawseti(L, t, next + i);
            }
            lua_settop(L, t);
            next += n;
            n = 0;
        }
    }
}

static void read_object(lua_State *L, reader_t *r, int depth)
{
    r->p++;
    skip_ws(r);
    if (*r->p == '}') {
        r->p++;
        lua_createtable(L, 0, 0);
        return;
    }
    luaL_checkstack(L, 2 * GATHER_MAX + 4, "json.decode: nesting too deep");
    int base = lua_gettop(L);
    int n = 0, t = 0;
    bool more = true;
    while (more) {
        read_string(L, r);
        skip_ws(r);
        r->p++;                             /* ':' */
        read_value(L, r, depth + 1);
        n++;
        skip_ws(r);
        more = *r->p++ != '}';
        if (more)
            skip_ws(r);
        if (n == GATHER_MAX || !more) {
            if (!t) {
                lua_createtable(L, 0, more ? 2 * n : n);
                lua_insert(L, base + 1);
                t = base + 1;
            }
            flush_pairs(L, t, n);
            n = 0;
        }
    }
}

static void read_value(lua_State *L, reader_t *r, int depth)
{
    luaL_checkstack(L, 4, "json.decode: nesting too deep");
    skip_ws(r);
    switch (*r->p) {
    case '{': read_object(L, r, depth); break;
    case '[': read_array(L, r, depth); break;
    case '"': read_string(L, r); break;
    case 't': lua_pushboolean(L, 1), r->p += 4; break;
    case 'f': lua_pushboolean(L, 0), r->p += 5; break;
    case 'n': lua_pushlightuserdata(L, NULL), r->p += 4; break;
    default: read_number(L, r); break;
    }
}

void lua_json_push_checked(lua_State *L, const char *text, size_t len)
{
    sandbox_charge(L, (double)len / SANDBOX_DECODE_BYTES_PER_UNIT, "json.decode");
    lua_json_push_charged(L, text, len);
}

void lua_json_push_charged(lua_State *L, const char *text, size_t len)
{
    reader_t r = {text, text + len};
    read_value(L, &r, 0);
}

int lua_json_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *why = NULL;
    sandbox_json_decode_check(L, text, len);
    if (!json_scan_member_value(text, len, &why))
        return luaL_error(L, "json.decode: %s", why ? why : "not JSON");
    reader_t r = {text, text + len};
    read_value(L, &r, 0);
    return 1;
}

/* --- encode --- */

/* Excessively sparse, as lua-cjson's defaults say (ratio 2, safe 10). */
static bool too_sparse(lua_Integer max, lua_Integer items)
{
    return max > 10 && max > 2 * items;
}

/* The output, in a userdata at a fixed stack slot: allocated through the
 * state (capped, charged) and collected if an error ends the call. A
 * luaL_Buffer would not do: it must stay at the top of the stack, and the
 * walk pushes keys and values. */
typedef struct {
    lua_State *L;
    int slot;
    char *data;
    size_t len, cap;
    double visited, charged;    /* instructions' worth of the values written, charged */
    bool unsure;                /* wrote what may not be a payload the scanner accepts
                                   (non-ASCII bytes, a bus.json value, deep nesting) */
    lua_json_text_t *owned;     /* lua_json_encode_send: the text is a block of the
                                   state's allocator, not a box (no object to collect) */
} writer_t;

static void grow(writer_t *w, size_t need)
{
    size_t cap = w->cap ? w->cap : 256;
    while (cap - w->len < need)
        cap *= 2;
    /* said as what it is, before the allocator refuses it */
    const sandbox_t *sb = sandbox_of(w->L);
    size_t left = sandbox_memory_left(sb);
    if (cap > left)
        luaL_error(w->L, "json.encode: the text needs more than %f bytes, more than the memory "
                         "left (%f)", (double)(w->len + need), (double)left);
    if (w->owned) {
        /* the state's allocator: counted against its cap and charged as
         * any allocation; the caller frees it, also after an error */
        void *ud;
        lua_Alloc alloc = lua_getallocf(w->L, &ud);
        char *bigger = alloc(ud, w->data, w->cap, cap);
        if (!bigger)
            luaL_error(w->L, "not enough memory");
        w->owned->data = w->data = bigger;
        w->owned->cap = w->cap = cap;
        return;
    }
    char *bigger = lua_newuserdatauv(w->L, cap, 0);
    if (w->len)
        memcpy(bigger, w->data, w->len);
    lua_replace(w->L, w->slot);
    w->data = bigger;
    w->cap = cap;
}

static void add(writer_t *w, const char *s, size_t n)
{
    if (w->cap - w->len < n)
        grow(w, n);
    memcpy(w->data + w->len, s, n);
    w->len += n;
}

static void add_char(writer_t *w, char c)
{
    if (w->cap == w->len)
        grow(w, 1);
    w->data[w->len++] = c;
}

static void add_str(writer_t *w, const char *s)
{
    add(w, s, strlen(s));
}

/* Charged per value written: 4 instructions' worth, as lua-cjson's wrapper
 * charges; a table 32 more (its walk, ~300 ns measured: a tree of shared
 * tables must stop at the budget within its time). */
#define ENCODE_UNITS_PER_VALUE 4
#define ENCODE_UNITS_PER_TABLE 32

static void charge_visits(lua_State *L, writer_t *w, bool last)
{
    if (w->visited - w->charged >= 4096 || last) {
        sandbox_charge(L, w->visited - w->charged, "json.encode");
        w->charged = w->visited;
    }
}

/* Whether any of the 8 bytes in v is < 0x20, '"', '\\' or >= 0x80 (exact
 * as a yes/no: the usual "has a zero byte" tests). */
static inline bool word_special(uint64_t v)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = v ^ (ones * '"'), slash = v ^ (ones * '\\');
    return (((v - ones * 0x20) & ~v) | ((quote - ones) & ~quote) | ((slash - ones) & ~slash) |
            v) & highs;
}

/* The bytes a string holds as they are: not < 0x20, '"', '\\', nor >= 0x80
 * (those are copied too, but the scanner judges them). */
static const bool plain_byte[256] = {
    [0x20] = 1, [0x21] = 1, [0x23 ... 0x5B] = 1, [0x5D ... 0x7F] = 1,
};

static void write_string(writer_t *w, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    if (w->cap - w->len < len + 2)
        grow(w, len + 2);
    add_char(w, '"');
    size_t start = 0, i = 0;
    while (i < len) {
        size_t stop = len;
        uint64_t v;
        if (len - i >= 8) {
            memcpy(&v, s + i, 8);
            if (!word_special(v)) {
                i += 8;                     /* 8 plain bytes */
                continue;
            }
            stop = i + 8;
        } else if (len >= 8) {
            memcpy(&v, s + len - 8, 8);     /* the last 8, some seen already */
            if (!word_special(v))
                break;
        }
        for (; i < stop; i++) {
            unsigned char c = (unsigned char)s[i];
            if (plain_byte[c])
                continue;
            if (c >= 0x80) {                /* copied as it is: the scanner judges it */
                w->unsure = true;
                continue;
            }
            add(w, s + start, i - start);
            start = i + 1;
            add_char(w, '\\');
            switch (c) {
            case '"': add_char(w, '"'); break;
            case '\\': add_char(w, '\\'); break;
            case '\n': add_char(w, 'n'); break;
            case '\r': add_char(w, 'r'); break;
            case '\t': add_char(w, 't'); break;
            case '\b': add_char(w, 'b'); break;
            case '\f': add_char(w, 'f'); break;
            default: {
                char u[5] = {'u', '0', '0', hex[c >> 4], hex[c & 15]};
                add(w, u, 5);
            }
            }
        }
    }
    add(w, s + start, len - start);
    add_char(w, '"');
}

/* An integer's digits (snprintf's %lld costs ten times this). */
static int format_int(int64_t v, char out[24])
{
    char tmp[24];
    int n = 0, k = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        out[k++] = '-';
    while (n)
        out[k++] = tmp[--n];
    return k;
}

/* A float in the fewest significant digits (15..17) that read back as
 * the same double; a whole one keeps ".0" so that it decodes as a float. */
static int format_float(lua_State *L, double v, char out[40])
{
    if (!isfinite(v))
        return luaL_error(L, "json.encode: cannot encode %s (JSON has no NaN or infinity)",
                          isnan(v) ? "NaN" : "an infinity");
    int n = 0;
    for (int digits = 15; digits <= 17; digits++) {
        n = snprintf(out, 40, "%.*g", digits, v);
        if (strtod(out, NULL) == v)
            break;
    }
    if (!strpbrk(out, ".eE")) {
        out[n++] = '.';
        out[n++] = '0';
        out[n] = '\0';
    }
    return n;
}

static void write_number(lua_State *L, writer_t *w, int index)
{
    char out[40];
    int n;
    if (lua_isinteger(L, index))
        n = format_int((int64_t)lua_tointeger(L, index), out);
    else
        n = format_float(L, (double)lua_tonumber(L, index), out);
    add(w, out, (size_t)n);
}

static void write_value(lua_State *L, writer_t *w, int index, int depth);

/* Whether the table at `index` is written as an array, and its length:
 * marked (the json.array metatable), or keys exactly positive integers
 * (lua-cjson's rule). */
static bool array_length(lua_State *L, int index, lua_Integer *len)
{
    if (lua_getmetatable(L, index)) {
        push_array_mt(L);
        bool marked = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (marked) {
            *len = (lua_Integer)lua_rawlen(L, index);
            return true;
        }
    }
    lua_Integer max = 0, items = 0;
    lua_pushnil(L);
    while (lua_next(L, index)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return false;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k > max)
            max = k;
        items++;
    }
    if (items == 0)
        return false;                       /* {}: an object, as lua-cjson writes it */
    if (too_sparse(max, items))
        luaL_error(L, "json.encode: cannot encode an excessively sparse array");
    *len = max;
    return true;
}

static void write_key(lua_State *L, writer_t *w, int key)
{
    size_t len;
    if (lua_type(L, key) == LUA_TSTRING) {
        const char *s = lua_tolstring(L, key, &len);
        write_string(w, s, len);
        return;
    }
    if (lua_type(L, key) != LUA_TNUMBER)
        luaL_error(L, "json.encode: cannot encode a table key that is a %s",
                   luaL_typename(L, key));
    char out[40];
    int n;
    if (lua_isinteger(L, key))
        n = format_int((int64_t)lua_tointeger(L, key), out);
    else
        n = format_float(L, (double)lua_tonumber(L, key), out);
    write_string(w, out, (size_t)n);
}

static void write_table(lua_State *L, writer_t *w, int index, int depth)
{
    if (depth >= LUA_JSON_MAX_DEPTH)
        luaL_error(L, "json.encode: tables nested more than %d deep", LUA_JSON_MAX_DEPTH);
    luaL_checkstack(L, 6, "json.encode: nesting too deep");
    if (depth >= LUA_JSON_MAX_DEPTH - 2)
        w->unsure = true;                   /* near the scanner's limit for a payload */
    lua_Integer n;
    if (array_length(L, index, &n)) {
        add_char(w, '[');
        for (lua_Integer i = 1; i <= n; i++) {
            if (i > 1)
                add_char(w, ',');
            lua_rawgeti(L, index, i);
            write_value(L, w, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        add_char(w, ']');
        return;
    }
    add_char(w, '{');
    bool first = true;
    lua_pushnil(L);
    while (lua_next(L, index)) {
        if (!first)
            add_char(w, ',');
        first = false;
        write_key(L, w, lua_gettop(L) - 1);
        add_char(w, ':');
        write_value(L, w, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    add_char(w, '}');
}

static void write_value(lua_State *L, writer_t *w, int index, int depth)
{
    int type = lua_type(L, index);
    w->visited += type == LUA_TTABLE ? ENCODE_UNITS_PER_VALUE + ENCODE_UNITS_PER_TABLE
                                     : ENCODE_UNITS_PER_VALUE;
    charge_visits(L, w, false);
    switch (type) {
    case LUA_TNIL: add_str(w, "null"); break;
    case LUA_TBOOLEAN: add_str(w, lua_toboolean(L, index) ? "true" : "false"); break;
    case LUA_TNUMBER: write_number(L, w, index); break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, index, &len);
        write_string(w, s, len);
        break;
    }
    case LUA_TTABLE: write_table(L, w, index, depth); break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, index) == NULL) {
            add_str(w, "null");
            break;
        }
        /* fall through */
    default: {
        size_t len;
        const char *raw = lua_json_raw(L, index, &len);
        if (!raw)
            luaL_error(L, "json.encode: cannot encode a %s", luaL_typename(L, index));
        add(w, raw, len);
        w->unsure = true;                   /* its nesting adds to the depth here */
    }
    }
}

int lua_json_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    lua_pushnil(L);                         /* slot 2: the output's box */
    writer_t w = {.L = L, .slot = 2};
    write_value(L, &w, 1, 0);
    charge_visits(L, &w, true);
    sandbox_charge(L, (double)w.len / SANDBOX_SCAN_BYTES_PER_UNIT, "json.encode");
    lua_pushlstring(L, w.data ? w.data : "", w.len);
    return 1;
}

int lua_json_encode_send(lua_State *L)
{
    lua_json_text_t *out = lua_touserdata(L, 2);
    lua_settop(L, 1);
    writer_t w = {.L = L, .owned = out};
    write_value(L, &w, 1, 0);
    charge_visits(L, &w, true);
    sandbox_charge(L, (double)w.len / SANDBOX_SCAN_BYTES_PER_UNIT, "json.encode");
    out->len = w.len;
    out->unsure = w.unsure;
    return 0;
}

void lua_json_text_free(lua_State *L, lua_json_text_t *t)
{
    if (t->data) {
        void *ud;
        lua_Alloc alloc = lua_getallocf(L, &ud);
        alloc(ud, t->data, t->cap, 0);
    }
    t->data = NULL;
    t->cap = t->len = 0;
}

/* json.array([t]): t (or a new table) marked as an array. */
static int json_array(lua_State *L)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_settop(L, 1);
    }
    push_array_mt(L);
    lua_setmetatable(L, 1);
    return 1;
}

void lua_json_install(lua_State *L)
{
    lua_newtable(L);                        /* the array metatable */
    lua_pushliteral(L, "json.array");
    lua_setfield(L, -2, "__name");
    lua_rawsetp(L, LUA_REGISTRYINDEX, &array_mt_key);


    lua_getglobal(L, "json");               /* sandbox.c made it: replace its functions */
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushlightuserdata(L, NULL);
        lua_setfield(L, -2, "null");
        lua_pushvalue(L, -1);
        lua_setglobal(L, "json");
    }
    lua_pushcfunction(L, lua_json_decode);
    lua_setfield(L, -2, "decode");
    lua_pushcfunction(L, lua_json_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, json_array);
    lua_setfield(L, -2, "array");
    lua_pop(L, 1);
}
