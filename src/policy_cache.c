/* policy_cache: kept decisions of pure policy hooks. See policy_cache.h. */
#include "policy_cache.h"

#include <stdlib.h>
#include <string.h>

/* A class rests when fewer than a quarter of a window's lookups hit
 * (then a miss costs the watch for nothing); it is tried again after. */
#define WINDOW 1024
#define REST_CALLS 65536

typedef struct {
    uint64_t hash;
    uint32_t epoch;             /* valid while the cache's epoch is this */
    bool uses_registry;
    uint64_t reg_gen;
    int hook, type;
    unsigned fields;
    size_t key_len;             /* per field: field_meta (a word), then its bytes */
    unsigned char key[PCACHE_KEY_MAX];
    int verdict, code;
    size_t text_len;
    char text[PCACHE_TEXT_MAX + 1];
} slot_t;

typedef struct {
    uint32_t lookups, hits;     /* in the current window */
    uint32_t resting;           /* calls left before the class is tried again */
    uint32_t last;              /* the slot of its last hit or put: a steady stream's
                                 * next key is most often the same (no hash then) */
} class_t;

struct policy_cache {
    uint32_t epoch;             /* from 1: a zeroed slot is never valid */
    uint64_t hits, misses;
    class_t classes[PCACHE_CLASSES];
    slot_t slots[PCACHE_SLOTS];
};

policy_cache_t *policy_cache_new(void)
{
    policy_cache_t *c = calloc(1, sizeof *c);
    if (c)
        c->epoch = 1;
    return c;
}

void policy_cache_free(policy_cache_t **self_p)
{
    free(*self_p);
    *self_p = NULL;
}

void policy_cache_forget(policy_cache_t *c)
{
    if (++c->epoch == 0) {          /* after 2^32 forgets: clear for real */
        memset(c->slots, 0, sizeof c->slots);
        c->epoch = 1;
    }
}

/* Multiply and fold, eight bytes at a time (a collision only evicts:
 * keys are compared whole). */
static inline uint64_t mix(uint64_t h, uint64_t w)
{
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    return h ^ (h >> 32);
}

#define FIELD_META 8            /* kind, escaped, 0, 0, length as 4 bytes: one word */

static bool has_bytes(const env_value_t *v)
{
    return v->kind != JSON_ABSENT && v->ptr;
}

/* Folds n bytes into h, a word at a time (the last one padded). */
static inline uint64_t mix_bytes(uint64_t h, const unsigned char *p, size_t n)
{
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = mix(h, w);
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    return mix(h, w ^ 0x80);
}

static uint64_t key_hash(int hook, const envelope_t *env, unsigned fields,
                         const pcache_tail_t *tail)
{
    uint64_t h = mix(0x9E3779B97F4A7C15ull,
                     (uint64_t)(unsigned)hook | (uint64_t)env->type << 8 | (uint64_t)fields << 32);
    for (unsigned todo = fields; todo; todo &= todo - 1) {
        const env_value_t *v = &env->f[__builtin_ctz(todo)];
        h = mix(h, (uint64_t)v->kind | (uint64_t)v->escaped << 8 | (uint64_t)v->len << 32);
        if (has_bytes(v))
            h = mix_bytes(h, (const unsigned char *)v->ptr, v->len);
    }
    return tail && tail->len ? mix_bytes(h, tail->bytes, tail->len) : h;
}

size_t policy_cache_slot(int hook, const envelope_t *env, unsigned fields,
                         const pcache_tail_t *tail)
{
    return (size_t)(key_hash(hook, env, fields, tail) & (PCACHE_SLOTS - 1));
}

static inline uint64_t field_meta(const env_value_t *v)
{
    return (uint64_t)(unsigned char)v->kind | (uint64_t)(unsigned char)v->escaped << 8 |
           (uint64_t)v->len << 32;
}

/* Whether the first and the last `w` bytes (w <= 8, w <= n) of a[0..n)
 * and b[0..n) are the same: two loads each, overlapping when n < 2w. */
static inline bool same_ends(const unsigned char *a, const unsigned char *b, size_t n, size_t w)
{
    uint64_t a0 = 0, b0 = 0, a1 = 0, b1 = 0;
    memcpy(&a0, a, w);
    memcpy(&b0, b, w);
    memcpy(&a1, a + n - w, w);
    memcpy(&b1, b + n - w, w);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
}

/* a[0..n) == b[0..n). Names are short, and a call to memcmp costs more
 * than their compare: up to 16 bytes, the first and the last word of the
 * size that fits (no load outside [0, n)). */
static inline bool same_bytes(const unsigned char *a, const unsigned char *b, size_t n)
{
    if (n > 16)
        return memcmp(a, b, n) == 0;
    if (n >= 8)
        return same_ends(a, b, n, 8);
    if (n >= 4)
        return same_ends(a, b, n, 4);
    /* 1 to 3 bytes: the first, the middle and the last cover them all */
    return n == 0 || (a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1]);
}

/* Whether the slot holds the key of (hook, env, fields, tail), byte for
 * byte: the fields, then a tail that is not empty (its length, then its
 * bytes; the fields' part has the length their values give, so a key
 * without one is never read as one with one). */
static bool key_matches(const slot_t *s, int hook, const envelope_t *env, unsigned fields,
                        const pcache_tail_t *tail)
{
    if (s->hook != hook || s->type != (int)env->type || s->fields != fields)
        return false;
    size_t at = 0;
    for (unsigned todo = fields; todo; todo &= todo - 1) {
        const env_value_t *v = &env->f[__builtin_ctz(todo)];
        size_t n = has_bytes(v) ? v->len : 0;
        uint64_t meta;
        if (at + FIELD_META + n > s->key_len)
            return false;
        memcpy(&meta, s->key + at, FIELD_META);
        if (meta != field_meta(v) ||
            (n && !same_bytes(s->key + at + FIELD_META, (const unsigned char *)v->ptr, n)))
            return false;
        at += FIELD_META + n;
    }
    size_t n = tail ? tail->len : 0;
    if (!n)
        return at == s->key_len;
    uint64_t len = n;
    return at + sizeof len + n == s->key_len && memcmp(s->key + at, &len, sizeof len) == 0 &&
           memcmp(s->key + at + sizeof len, tail->bytes, n) == 0;
}

/* Writes the key into the slot; false if it is too long. */
static bool key_write(slot_t *s, int hook, const envelope_t *env, unsigned fields,
                      const pcache_tail_t *tail)
{
    size_t at = 0;
    for (unsigned todo = fields; todo; todo &= todo - 1) {
        const env_value_t *v = &env->f[__builtin_ctz(todo)];
        size_t n = has_bytes(v) ? v->len : 0;
        if (at + FIELD_META + n > PCACHE_KEY_MAX)
            return false;
        uint64_t meta = field_meta(v);
        memcpy(s->key + at, &meta, FIELD_META);
        if (n)
            memcpy(s->key + at + FIELD_META, v->ptr, n);
        at += FIELD_META + n;
    }
    size_t n = tail ? tail->len : 0;
    uint64_t len = n;
    if (n && at + sizeof len + n > PCACHE_KEY_MAX)
        return false;
    if (n) {
        memcpy(s->key + at, &len, sizeof len);
        memcpy(s->key + at + sizeof len, tail->bytes, n);
        at += sizeof len + n;
    }
    s->hook = hook;
    s->type = (int)env->type;
    s->fields = fields;
    s->key_len = at;
    return true;
}

bool policy_cache_get(policy_cache_t *c, int hook, const envelope_t *env, unsigned fields,
                      const pcache_tail_t *tail, uint64_t reg_gen, pcache_decision_t *out)
{
    class_t *k = &c->classes[pcache_class(hook, env->type)];
    const slot_t *s = &c->slots[k->last];
    if (s->epoch != c->epoch || !key_matches(s, hook, env, fields, tail)) {
        uint64_t h = key_hash(hook, env, fields, tail);
        s = &c->slots[h & (PCACHE_SLOTS - 1)];
        if (s->epoch != c->epoch || s->hash != h || !key_matches(s, hook, env, fields, tail)) {
            c->misses++;
            return false;
        }
        k->last = (uint32_t)(h & (PCACHE_SLOTS - 1));
    }
    if (s->uses_registry && s->reg_gen != reg_gen) {
        c->misses++;
        return false;
    }
    c->hits++;
    out->verdict = s->verdict;
    out->code = s->code;
    out->text = s->text;
    out->text_len = s->text_len;
    return true;
}

void policy_cache_put(policy_cache_t *c, int hook, const envelope_t *env, unsigned fields,
                      const pcache_tail_t *tail, bool uses_registry, uint64_t reg_gen,
                      const pcache_decision_t *d)
{
    if (d->text_len > PCACHE_TEXT_MAX)
        return;
    uint64_t h = key_hash(hook, env, fields, tail);
    slot_t *s = &c->slots[h & (PCACHE_SLOTS - 1)];
    s->epoch = 0;                           /* invalid until whole */
    if (!key_write(s, hook, env, fields, tail))
        return;
    s->hash = h;
    s->uses_registry = uses_registry;
    s->reg_gen = reg_gen;
    s->verdict = d->verdict;
    s->code = d->code;
    s->text_len = d->text_len;
    if (d->text_len)
        memcpy(s->text, d->text, d->text_len);
    s->text[d->text_len] = '\0';
    s->epoch = c->epoch;
    c->classes[pcache_class(hook, env->type)].last = (uint32_t)(h & (PCACHE_SLOTS - 1));
}

bool policy_cache_worth(policy_cache_t *c, unsigned cls)
{
    class_t *k = &c->classes[cls % PCACHE_CLASSES];
    if (!k->resting)
        return true;
    k->resting--;
    return false;
}

void policy_cache_note(policy_cache_t *c, unsigned cls, bool hit)
{
    class_t *k = &c->classes[cls % PCACHE_CLASSES];
    k->lookups++;
    k->hits += hit;
    if (k->lookups < WINDOW)
        return;
    if (k->hits < WINDOW / 4)
        k->resting = REST_CALLS;
    k->lookups = k->hits = 0;
}

uint64_t policy_cache_hits(const policy_cache_t *c)
{
    return c->hits;
}

uint64_t policy_cache_misses(const policy_cache_t *c)
{
    return c->misses;
}
