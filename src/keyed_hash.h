/* keyed_hash: the hash every uthash table of the broker uses, keyed with a
 * random per-process secret (docs/security.md, "Shares and keyed hashes").
 *
 * uthash's own hash (Jenkins' HASH_JEN) has no key: anyone can compute it,
 * so a peer can choose msg_ids or names that all fall into one bucket and
 * turn every lookup into a walk of the whole table. With SipHash-2-4
 * (libsodium's crypto_shorthash) under a key read from getrandom(2) at
 * start, where a key lands cannot be predicted from outside the process.
 *
 * Include this header instead of <uthash.h>, always: it defines
 * HASH_FUNCTION before uthash.h reads it. */
#ifndef SMARTSHOP_KEYED_HASH_H
#define SMARTSHOP_KEYED_HASH_H

#ifdef UTHASH_H
#error "uthash.h was included before keyed_hash.h: include keyed_hash.h instead"
#endif

#include <stddef.h>
#include <stdint.h>

#include <sodium/crypto_shorthash.h>

/* The process's key; set from getrandom(2) before main (keyed_hash.c). */
extern unsigned char keyed_hash_key[crypto_shorthash_KEYBYTES];

/* The keyed hash of `len` bytes, as uthash keys them (32 bits). */
static inline unsigned keyed_hash(const void *key, size_t len)
{
    uint64_t out;
    crypto_shorthash((unsigned char *)&out, (const unsigned char *)key, len, keyed_hash_key);
    return (unsigned)(out ^ (out >> 32));
}

#define HASH_FUNCTION(keyptr, keylen, hashv) ((hashv) = keyed_hash((keyptr), (keylen)))

#include <uthash.h>

#endif
