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
    size_t key_len;
    unsigned char key[PCACHE_KEY_MAX];
    int verdict, code;
    size_t text_len;
    char text[PCACHE_TEXT_MAX + 1];
} slot_t;

typedef struct {
    uint32_t lookups, hits;     /* in the current window */
    uint32_t resting;           /* calls left before the class is tried again */
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

static bool put_bytes(pcache_key_t *key, const void *p, size_t n)
{
    if (key->len + n > PCACHE_KEY_MAX)
        return false;
    memcpy(key->bytes + key->len, p, n);
    key->len += n;
    return true;
}

/* Eight bytes at a time, multiply and fold (a collision only evicts:
 * keys are compared whole). */
static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    return h ^ (h >> 29);
}

bool policy_cache_key(pcache_key_t *key, int hook, const envelope_t *env, unsigned fields)
{
    key->len = 0;
    unsigned char head[6] = {(unsigned char)hook, (unsigned char)env->type,
                             (unsigned char)fields, (unsigned char)(fields >> 8),
                             (unsigned char)(fields >> 16), (unsigned char)(fields >> 24)};
    put_bytes(key, head, sizeof head);
    for (unsigned todo = fields; todo; todo &= todo - 1) {
        const env_value_t *v = &env->f[__builtin_ctz(todo)];
        /* kind, escapes and length first: each field's bytes stand alone */
        unsigned char meta[6] = {(unsigned char)v->kind, (unsigned char)v->escaped,
                                 (unsigned char)v->len, (unsigned char)(v->len >> 8),
                                 (unsigned char)(v->len >> 16), (unsigned char)(v->len >> 24)};
        bool has_bytes = v->kind != JSON_ABSENT && v->ptr;
        if (!put_bytes(key, meta, sizeof meta) || (has_bytes && !put_bytes(key, v->ptr, v->len)))
            return false;
    }
    key->hash = hash_bytes(key->bytes, key->len);
    return true;
}

static slot_t *slot_of(policy_cache_t *c, const pcache_key_t *key)
{
    return &c->slots[key->hash & (PCACHE_SLOTS - 1)];
}

bool policy_cache_get(policy_cache_t *c, const pcache_key_t *key, uint64_t reg_gen,
                      pcache_decision_t *out)
{
    const slot_t *s = slot_of(c, key);
    if (s->epoch != c->epoch || s->hash != key->hash || s->key_len != key->len ||
        memcmp(s->key, key->bytes, key->len) != 0 || (s->uses_registry && s->reg_gen != reg_gen)) {
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

void policy_cache_put(policy_cache_t *c, const pcache_key_t *key, bool uses_registry,
                      uint64_t reg_gen, const pcache_decision_t *d)
{
    if (d->text_len > PCACHE_TEXT_MAX)
        return;
    slot_t *s = slot_of(c, key);
    s->hash = key->hash;
    s->epoch = c->epoch;
    s->uses_registry = uses_registry;
    s->reg_gen = reg_gen;
    s->key_len = key->len;
    memcpy(s->key, key->bytes, key->len);
    s->verdict = d->verdict;
    s->code = d->code;
    s->text_len = d->text_len;
    if (d->text_len)
        memcpy(s->text, d->text, d->text_len);
    s->text[d->text_len] = '\0';
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
