/* msg_id: new msg_ids, version-4 UUIDs from one libuuid seed and a
 * counter. Shared by the broker and the client library, header-only so
 * the client needs nothing of the core.
 *
 * Why not uuid_generate_random for each: it reseeds and reads the
 * kernel's random source on every call, some 15,000 instructions here,
 * more than the rest of a message's path (docs/performance.md). Ids made
 * this way are unique (the counter never repeats within a thread's run,
 * the seed differs between threads and runs) but not unpredictable;
 * nothing relies on that: who may answer a request is checked by
 * connection (protocol T4), not by knowing its id. */
#ifndef SMARTSHOP_MSG_ID_H
#define SMARTSHOP_MSG_ID_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include <uuid/uuid.h>

/* splitmix64: spreads a counter's bits over the whole word. */
static inline uint64_t msg_id_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* A new UUID, lowercase, into out[37]. */
static inline void msg_id_new(char out[37])
{
    static __thread uint64_t seed[2], counter;
    static __thread bool seeded;
    if (!seeded) {
        uuid_t random;
        uuid_generate_random(random);
        memcpy(seed, random, sizeof seed);
        seeded = true;
    }
    counter++;
    uint64_t words[2] = {seed[0] ^ msg_id_mix(counter), seed[1] ^ msg_id_mix(counter ^ seed[0])};
    uuid_t id;
    memcpy(id, words, sizeof id);
    id[6] = (unsigned char)((id[6] & 0x0f) | 0x40);   /* version 4 */
    id[8] = (unsigned char)((id[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
    uuid_unparse_lower(id, out);
}

#endif
