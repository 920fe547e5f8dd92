/* keyed_hash: the process's hash key. See keyed_hash.h. */
#include "keyed_hash.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

unsigned char keyed_hash_key[crypto_shorthash_KEYBYTES];

/* Runs before main (and before any test's or fuzzer's code), so that no
 * table is ever filled under another key: a key that changed would lose
 * every entry already in it. The broker refuses to run without a key
 * rather than fall back to a predictable one. */
__attribute__((constructor)) static void keyed_hash_seed(void)
{
    size_t got = 0;
    while (got < sizeof keyed_hash_key) {
        ssize_t n = getrandom(keyed_hash_key + got, sizeof keyed_hash_key - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "smartshop: getrandom failed, no key for the hash tables: %s\n",
                    n < 0 ? strerror(errno) : "no bytes");
            abort();
        }
        got += (size_t)n;
    }
}
