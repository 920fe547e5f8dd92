/* policy_cache: the decisions of policy hooks that depend on nothing but
 * the message's names, kept for the next message with the same ones.
 *
 * policy.c decides what may be kept (docs/policies.md, "The decision
 * cache"): a filter() or route() call whose code stored nothing and
 * called nothing but functions known to be pure, for a message type
 * whose hooks read only the envelope's name fields. This module only
 * stores: a fixed table of slots (no allocation after policy_cache_new,
 * bytes bounded), each found by the exact bytes of its key, so a
 * collision evicts and never answers for another key. Plain C. */
#ifndef SMARTSHOP_POLICY_CACHE_H
#define SMARTSHOP_POLICY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "envelope.h"

#define PCACHE_SLOTS 1024       /* a power of two */
#define PCACHE_KEY_MAX 320      /* a key's bytes: the names a hook read */
#define PCACHE_TEXT_MAX 160     /* a kept refusal's reason or route's name */
#define PCACHE_CLASSES 64       /* hook x message type, for the hit rate */

typedef struct policy_cache policy_cache_t;

/* A kept decision: the caller's verdict and code (small ints it gives
 * meaning to) and a text (a reason, a name) of at most PCACHE_TEXT_MAX. */
typedef struct {
    int verdict;
    int code;
    const char *text;
    size_t text_len;
} pcache_decision_t;

policy_cache_t *policy_cache_new(void);
void policy_cache_free(policy_cache_t **self_p);

/* Forgets every decision kept (O(1)): something a hook may read changed. */
void policy_cache_forget(policy_cache_t *c);

/* A decision is asked for by (hook, env's type, the values of env's
 * fields in `fields`, bits 1u << env_field_t, and `tail`: more bytes the
 * caller derives from the message, such as the payload members a hook
 * read; NULL for none): its key, compared whole (kinds, escapes, lengths
 * and bytes). */
typedef struct {
    const unsigned char *bytes;
    size_t len;
} pcache_tail_t;

/* The decision kept for that key, if one is and, for one that asked the
 * registry (uses_registry at put), the registry is still at `reg_gen`.
 * `out->text` is valid until the next put. */
bool policy_cache_get(policy_cache_t *c, int hook, const envelope_t *env, unsigned fields,
                      const pcache_tail_t *tail, uint64_t reg_gen, pcache_decision_t *out);

/* Keeps `d` for that key (evicting what held its slot); nothing if the key
 * (PCACHE_KEY_MAX) or the text (PCACHE_TEXT_MAX) is too long. */
void policy_cache_put(policy_cache_t *c, int hook, const envelope_t *env, unsigned fields,
                      const pcache_tail_t *tail, bool uses_registry, uint64_t reg_gen,
                      const pcache_decision_t *d);

/* The slot that key lands in (for tests: keys that share one evict each
 * other). */
size_t policy_cache_slot(int hook, const envelope_t *env, unsigned fields,
                         const pcache_tail_t *tail);

/* The class of (hook, type): what the hit rate is counted by, and each
 * class's last hit is looked at first. */
static inline unsigned pcache_class(int hook, msg_type_t type)
{
    return (unsigned)(hook * MT__COUNT + (int)type) % PCACHE_CLASSES;
}

/* Whether keeping decisions of class `cls` (hook x type) pays: it does
 * until a window of lookups mostly misses (every message with new
 * names); then the class rests for a while and is tried again. */
bool policy_cache_worth(policy_cache_t *c, unsigned cls);
void policy_cache_note(policy_cache_t *c, unsigned cls, bool hit);

/* Lookups that found a decision, and those that did not. */
uint64_t policy_cache_hits(const policy_cache_t *c);
uint64_t policy_cache_misses(const policy_cache_t *c);

#endif
