/* envelope: protocol rules for one message. See envelope.h. */
#include "envelope.h"

#include <string.h>

#include "bytes16.h"
#include "json_scan_top.h"
#include "names.h"


static const char *const type_names[MT__COUNT] = {
    [MT_NONE] = "unknown",     [MT_REGISTER] = "register",
    [MT_UNREGISTER] = "unregister", [MT_REQUEST] = "request",
    [MT_RESPONSE] = "response", [MT_EVENT] = "event",
    [MT_ERROR] = "error",
};

const char *msg_type_name(msg_type_t type)
{
    return (unsigned)type < MT__COUNT ? type_names[type] : "unknown";
}

bool env_is_plain_string(const env_value_t *v)
{
    return v->kind == JSON_STRING && !v->escaped;
}

bool env_equals(const env_value_t *v, const char *word)
{
    return env_is_plain_string(v) && name_equals(v->ptr, v->len, word);
}

#if defined(__SSE2__)
/* The bytes of v that are printable ASCII (0x21-0x7E), as bits. */
static inline unsigned printable_bits(__m128i v)
{
    return (unsigned)_mm_movemask_epi8(bytes16_in_range(v, 0x21, 94));
}
#endif

/* Whether all 8 bytes at p are printable ASCII (0x21-0x7E): the classic
 * "has a byte less than / more than n" word tricks, exact for these n. */
static bool printable8(const char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t below = (x - ones * 0x21) & ~x;         /* a byte < 0x21 */
    uint64_t above = (x + ones * (127 - 0x7E)) | x;  /* a byte > 0x7E */
    return ((below | above) & highs) == 0;
}

/* Inline here: envelope_parse checks one or two ids a message. */
static inline __attribute__((always_inline)) bool id_is_valid(const env_value_t *v)
{
    if (!env_is_plain_string(v) || v->len == 0 || v->len > MSG_ID_MAX_LEN)
        return false;
    const char *s = v->ptr;
    uint32_t len = v->len;
#if defined(__SSE2__)
    /* every message has one or two ids of 10-40 bytes: 16 bytes at a time */
    if (len >= 8)
        return bytes16_all(s, len, printable_bits);
#endif
    if (len >= 8) {
        /* 8-byte words, the last overlapping rather than reaching past
         * the id (without SSE2) */
        for (uint32_t i = 0; i + 8 < len; i += 8)
            if (!printable8(s + i))
                return false;
        return printable8(s + len - 8);
    }
    for (uint32_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7E)
            return false;
    }
    return true;
}

bool env_id_is_valid(const env_value_t *v)
{
    return id_is_valid(v);
}

/* Which envelope field a top-level key names, or -1. Dispatches on the
 * length first: this runs for every member of every message. */
static inline __attribute__((always_inline)) int field_of_key(const char *key, uint32_t len)
{
    /* constant-length compares: the compiler turns each into a load or two */
#define KEY_IS(word) (memcmp(key, word, sizeof word - 1) == 0)
    switch (len) {
    case 1: return key[0] == 'v' ? EF_V : -1;
    case 3: return KEY_IS("src") ? EF_SRC : KEY_IS("dst") ? EF_DST : -1;
    case 4: return KEY_IS("type") ? EF_TYPE : -1;
    case 5: return KEY_IS("topic") ? EF_TOPIC : -1;
    case 6: return KEY_IS("msg_id") ? EF_MSG_ID : KEY_IS("action") ? EF_ACTION
                 : KEY_IS("ttl_ms") ? EF_TTL_MS : -1;
    case 7: return KEY_IS("payload") ? EF_PAYLOAD : -1;
    case 9: return KEY_IS("timestamp") ? EF_TIMESTAMP : -1;
    case 14: return KEY_IS("correlation_id") ? EF_CORRELATION_ID : -1;
    default: return -1;
    }
#undef KEY_IS
}

/* A small non-negative JSON integer (digits only), or -1. */
static long small_integer(const env_value_t *v, long max)
{
    if (v->kind != JSON_NUMBER || v->len == 0 || v->len > 9)
        return -1;
    long n = 0;
    for (uint32_t i = 0; i < v->len; i++) {
        if (v->ptr[i] < '0' || v->ptr[i] > '9')
            return -1;
        n = n * 10 + (v->ptr[i] - '0');
    }
    return n <= max ? n : -1;
}

static msg_type_t type_of(const env_value_t *v)
{
    if (!env_is_plain_string(v))
        return MT_NONE;
    /* by length first, as field_of_key: this runs for every message */
#define TYPE_IS(word) (memcmp(v->ptr, word, sizeof word - 1) == 0)
    switch (v->len) {
    case 5: return TYPE_IS("event") ? MT_EVENT : TYPE_IS("error") ? MT_ERROR : MT_NONE;
    case 7: return TYPE_IS("request") ? MT_REQUEST : MT_NONE;
    case 8: return TYPE_IS("response") ? MT_RESPONSE : TYPE_IS("register") ? MT_REGISTER : MT_NONE;
    case 10: return TYPE_IS("unregister") ? MT_UNREGISTER : MT_NONE;
    default: return MT_NONE;
    }
#undef TYPE_IS
}

/* Gathers the envelope fields from the members, one at a time: as
 * envelope_parse scans them, or from a json_object_t (envelope_read).
 * Rejects escaped and duplicated top-level keys (E3). */
typedef struct {
    envelope_t *env;
    bus_err_t err;
    const char *why;
    int unknown_count;
    struct { uint32_t off, len; } unknown[JSON_SCAN_MAX_MEMBERS];   /* keys not in field_names */
} collector_t;

/* env all zero but buf and len. Field by field, not memset: gcc makes
 * that a `rep stos`, ~45 instructions a message under callgrind. */
static inline void envelope_clear(envelope_t *env, const char *buf, size_t len)
{
    env->buf = buf;
    env->len = len;
#if defined(__SSE2__)
    /* 16 bytes a store: half the stores of the fields' 3 each (their
     * padding is zeroed too). All zero is every field absent. */
    _Static_assert(JSON_ABSENT == 0 && sizeof env->f % 8 == 0, "fields clear as zero bytes");
#pragma GCC unroll 16
    for (size_t i = 0; i + 16 <= sizeof env->f; i += 16)
        _mm_storeu_si128((__m128i *)(void *)((char *)env->f + i), _mm_setzero_si128());
    if (sizeof env->f % 16)
        memset((char *)env->f + sizeof env->f - 8, 0, 8);
#else
#pragma GCC unroll 10
    for (int i = 0; i < EF__COUNT; i++)
        env->f[i] = (env_value_t){NULL, 0, JSON_ABSENT, false};
#endif
    env->type = MT_NONE;
    env->ttl_ms = 0;
    env->msg_id_ok = false;
}

static void collector_init(collector_t *c, envelope_t *env, const char *buf, size_t len)
{
    envelope_clear(env, buf, len);
    c->env = env;
    c->err = ERR_NONE;
    c->why = NULL;
    c->unknown_count = 0;
}

static inline __attribute__((always_inline)) void collect_member(void *ctx, const char *buf,
                                                                    const json_member_t *m)
{
    collector_t *c = ctx;
    envelope_t *env = c->env;
    const char *key = buf + m->key_off;
    if (m->key_escaped) {
        c->why = "top-level keys must not contain escapes";
        c->err = ERR_BAD_ENVELOPE;
        return;
    }
    int fid = field_of_key(key, m->key_len);
    if (JS_LIKELY(fid >= 0)) {
        if (env->f[fid].kind != JSON_ABSENT) {
            /* a duplicated field is unreadable: forget it (no correlation) */
            c->why = "duplicated top-level key";
            c->err = ERR_BAD_ENVELOPE;
            env->f[fid].kind = JSON_NULL;
            return;
        }
        env->f[fid] = (env_value_t){buf + m->val_off, m->val_len, m->kind, m->val_escaped};
        return;
    }
    /* an unknown key can only repeat another unknown key */
    for (int j = 0; j < c->unknown_count; j++) {
        if (c->unknown[j].len == m->key_len &&
            memcmp(buf + c->unknown[j].off, key, m->key_len) == 0) {
            c->why = "duplicated top-level key";
            c->err = ERR_BAD_ENVELOPE;
        }
    }
    c->unknown[c->unknown_count].off = m->key_off;
    c->unknown[c->unknown_count].len = m->key_len;
    c->unknown_count++;
}

static bool is_string_or_null_or_absent(const env_value_t *v)
{
    return v->kind == JSON_ABSENT || v->kind == JSON_NULL || v->kind == JSON_STRING;
}

/* src and dst: names (N1, N2); dst may also be broker or broadcast. */
static inline __attribute__((always_inline)) bus_err_t check_name_field(const env_value_t *v, bool is_dst,
                                                                        const char **why)
{
    if (v->kind != JSON_STRING) {
        *why = is_dst ? "dst must be a string" : "src must be a string";
        return ERR_BAD_ENVELOPE;
    }
    if (v->escaped || !name_is_valid(v->ptr, v->len)) {
        *why = is_dst ? "dst is not a valid name" : "src is not a valid name";
        return ERR_BAD_NAME;
    }
    /* A reserved src is well-formed (the broker's own messages carry
     * src "broker"); refusing it from peers is the router's rule (N2, S1). */
    if (!is_dst || !name_is_reserved(v->ptr, v->len))   /* the common case first */
        return ERR_NONE;
    if (name_equals(v->ptr, v->len, "broker") || name_equals(v->ptr, v->len, "broadcast"))
        return ERR_NONE;   /* reserved, but addressable */
    *why = "dst is a reserved name";
    return ERR_RESERVED_NAME;
}

/* Required fields and JSON types per message type (E4, V1). */
static bus_err_t check_fields(envelope_t *env, const char **why)
{
    const env_value_t *f = env->f;
    if (f[EF_MSG_ID].kind == JSON_ABSENT)
        return *why = "msg_id is missing", ERR_BAD_ENVELOPE;
    if (!env->msg_id_ok)
        return *why = "msg_id must be 1-128 printable ASCII characters", ERR_BAD_ENVELOPE;
    if (f[EF_V].kind != JSON_ABSENT) {
        long v = small_integer(&f[EF_V], 1000000);
        if (v != 1)
            return *why = "this broker speaks protocol version 1", ERR_UNSUPPORTED_VERSION;
    }
    if (f[EF_TYPE].kind != JSON_STRING)
        return *why = "type is missing or not a string", ERR_BAD_ENVELOPE;
    env->type = type_of(&f[EF_TYPE]);
    if (env->type == MT_NONE)
        return *why = "unknown type", ERR_BAD_ENVELOPE;

    bus_err_t err = check_name_field(&f[EF_SRC], false, why);
    if (err)
        return err;

    /* TP2: an event may name a topic instead of a dst */
    bool has_topic = f[EF_TOPIC].kind != JSON_ABSENT && f[EF_TOPIC].kind != JSON_NULL;
    if (has_topic) {
        if (env->type != MT_EVENT)
            return *why = "only an event has a topic", ERR_BAD_ENVELOPE;
        if (f[EF_TOPIC].kind != JSON_STRING || f[EF_TOPIC].escaped ||
            !topic_is_valid(f[EF_TOPIC].ptr, f[EF_TOPIC].len, false, why)) {
            if (f[EF_TOPIC].kind != JSON_STRING || f[EF_TOPIC].escaped)
                *why = "topic must be a string without escapes";
            return ERR_BAD_ENVELOPE;
        }
        if (f[EF_DST].kind != JSON_ABSENT && f[EF_DST].kind != JSON_NULL)
            return *why = "an event names a dst or a topic, not both", ERR_BAD_ENVELOPE;
    }
    bool needs_dst = env->type != MT_REGISTER && env->type != MT_UNREGISTER && !has_topic;
    if (needs_dst) {
        if (f[EF_DST].kind == JSON_ABSENT)
            return *why = "dst is missing", ERR_BAD_ENVELOPE;
        if ((err = check_name_field(&f[EF_DST], true, why)))
            return err;
    }   /* register/unregister: dst is not read (the seed sends "broker") */

    if (env->type == MT_REQUEST) {
        if (f[EF_ACTION].kind != JSON_STRING)
            return *why = "a request needs an action string", ERR_BAD_ENVELOPE;
    } else if (!is_string_or_null_or_absent(&f[EF_ACTION])) {
        return *why = "action must be a string", ERR_BAD_ENVELOPE;
    }

    if (env->type == MT_RESPONSE || env->type == MT_ERROR) {
        if (!id_is_valid(&f[EF_CORRELATION_ID]))
            return *why = "a response needs a correlation_id (1-128 printable ASCII)", ERR_BAD_ENVELOPE;
    } else if (f[EF_CORRELATION_ID].kind == JSON_STRING) {
        if (!id_is_valid(&f[EF_CORRELATION_ID]))
            return *why = "correlation_id must be 1-128 printable ASCII characters", ERR_BAD_ENVELOPE;
    } else if (!is_string_or_null_or_absent(&f[EF_CORRELATION_ID])) {
        return *why = "correlation_id must be a string or null", ERR_BAD_ENVELOPE;
    }

    if (!is_string_or_null_or_absent(&f[EF_TIMESTAMP]))
        return *why = "timestamp must be a string", ERR_BAD_ENVELOPE;

    if (env->type == MT_REQUEST && f[EF_TTL_MS].kind != JSON_ABSENT) {   /* D1 */
        long ttl = small_integer(&f[EF_TTL_MS], TTL_MS_MAX);
        if (ttl < 1)
            return *why = "ttl_ms must be an integer from 1 to 300000", ERR_BAD_ENVELOPE;
        env->ttl_ms = (uint32_t)ttl;
    }
    return ERR_NONE;
}


/* The rules once the members are collected. */
static bus_err_t envelope_finish(collector_t *c, bool too_many, const char **why)
{
    envelope_t *env = c->env;
    *why = c->why;
    /* with too many members, the first ones are still read: msg_id may be
     * among them, for the error's correlation_id */
    env->msg_id_ok = id_is_valid(&env->f[EF_MSG_ID]);
    if (too_many) {
        *why = "more than 64 top-level members";
        return ERR_BAD_ENVELOPE;
    }
    if (c->err)
        return c->err;
    return check_fields(env, why);
}

bus_err_t envelope_parse(envelope_t *env, const char *buf, size_t len, const char **why)
{
    collector_t c;
    collector_init(&c, env, buf, len);
    /* one pass: each member goes to collect_member as it is scanned */
    json_scan_result_t scanned = json_scan_top(buf, len, collect_member, &c, why);
    if (scanned == JSON_SCAN_BAD_JSON || scanned == JSON_SCAN_NOT_OBJECT) {
        /* what was collected before the error is not an envelope */
        envelope_clear(env, buf, len);
        return scanned == JSON_SCAN_BAD_JSON ? ERR_BAD_JSON : ERR_BAD_ENVELOPE;
    }
    return envelope_finish(&c, scanned == JSON_SCAN_TOO_MANY, why);
}

bus_err_t envelope_read(envelope_t *env, const char *buf, size_t len, const json_object_t *obj,
                        bool too_many, const char **why)
{
    collector_t c;
    collector_init(&c, env, buf, len);
    for (int i = 0; i < obj->count; i++)
        collect_member(&c, buf, &obj->members[i]);
    return envelope_finish(&c, too_many, why);
}

void envelope_rebase(envelope_t *env, const char *buf)
{
    for (int i = 0; i < EF__COUNT; i++)
        if (env->f[i].kind != JSON_ABSENT)
            env->f[i].ptr = buf + (env->f[i].ptr - env->buf);
    env->buf = buf;
}
