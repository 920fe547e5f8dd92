/* names: the rules for service names (docs/protocol.md N1, N2).
 *
 * A name is 1..64 bytes of [A-Za-z0-9._:-], the first a letter or digit,
 * written without JSON escapes, so that no escape, NUL or look-alike can
 * reach a comparison. Pure functions; no state. */
#ifndef SMARTSHOP_NAMES_H
#define SMARTSHOP_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#define NAME_MAX_LEN 64

/* True if `s[0..len)` is a well-formed name. */
bool name_is_valid(const char *s, size_t len);

/* True for "broker", "broadcast", and names under "broker." or "smartshop.". */
bool name_is_reserved(const char *s, size_t len);

/* True if `s[0..len)` equals the NUL-terminated `word`. Inline: with a
 * literal word the compiler turns it into a length test and a load or two. */
static inline bool name_equals(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

#endif
