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

#include "bytes16.h"

#define NAME_MAX_LEN 64
#define TOPIC_MAX_LEN 255        /* bytes, a topic or a pattern */
#define TOPIC_MAX_TOKENS 16

/* Whether `text` is a valid topic (docs/protocol.md TP1): dot-separated
 * tokens of a name's characters but '.', and, if `pattern`, the wildcards
 * '*' (one token) and '>' (one or more, last only). On false, *why says
 * what is wrong, for an error reply. */
bool topic_is_valid(const char *text, size_t len, bool pattern, const char **why);

/* Whether the valid `topic` (len bytes) matches the valid `pattern`. */
bool topic_matches(const char *pattern, const char *topic, size_t len);

/* Whether every topic `inner` matches is matched by `outer` too (both
 * valid patterns): "order.created" and "order.*" are within "order.>". */
bool topic_pattern_within(const char *inner, const char *outer);

/* 2: may start a name (letter, digit); 1: may follow (also . _ : -).
 * Internal to name_is_valid; in names.c. */
extern const unsigned char names__chars[256];

#if defined(__SSE2__)
/* Whether each of the 16 bytes of v may follow in a name, as bits. */
static inline unsigned names__char_bits(__m128i v)
{
    __m128i letter = bytes16_in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 26);   /* A-Z a-z */
    /* - . / 0-9 : are one range (0x2D-0x3A): one range test and not '/',
     * rather than two range tests (a constant and an add fewer) */
    __m128i punct_digit = _mm_andnot_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('/')),
                                           bytes16_in_range(v, '-', 14));
    __m128i underscore = _mm_cmpeq_epi8(v, _mm_set1_epi8('_'));
    return (unsigned)_mm_movemask_epi8(
        _mm_or_si128(letter, _mm_or_si128(punct_digit, underscore)));
}
#endif

/* True if `s[0..len)` is a well-formed name. Inline: src and dst are
 * checked on every message, and the call was a fifth of the cost. */
static inline bool name_is_valid(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN || names__chars[(unsigned char)s[0]] != 2)
        return false;
#if defined(__SSE2__)
    /* 16 bytes at a time (names on the wire are 8-20 bytes: a byte loop
     * was ~5 instructions a byte, twice a message) */
    if (len >= 8)
        return bytes16_all(s, len, names__char_bits);
#endif
    for (size_t i = 1; i < len; i++)
        if (!names__chars[(unsigned char)s[i]])
            return false;
    return true;
}


/* True if `s[0..len)` equals the NUL-terminated `word`. Inline: with a
 * literal word the compiler turns it into a length test and a load or two. */
static inline bool name_equals(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(s, word, len) == 0;
}

/* True for "broker", "broadcast", and names under "broker." or "smartshop.".
 * The common case, decided by one byte, inline; the rest in names.c. */
bool names__is_reserved(const char *s, size_t len);
static inline bool name_is_reserved(const char *s, size_t len)
{
    if (len == 0 || (s[0] != 'b' && s[0] != 's'))
        return false;
    return names__is_reserved(s, len);
}

#endif
