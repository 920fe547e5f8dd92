/* names: syntax and reserved names for service names. */
#include "names.h"

#include <string.h>

/* 2: may start a name (letter, digit); 1: may follow (also . _ : -). A
 * table: names are checked on every message. */
static const unsigned char name_chars[256] = {
    ['0' ... '9'] = 2, ['A' ... 'Z'] = 2, ['a' ... 'z'] = 2,
    ['.'] = 1, ['_'] = 1, [':'] = 1, ['-'] = 1,
};

#if defined(__SSE2__)
#include <emmintrin.h>

/* Whether each of the 16 bytes of v may follow in a name, as bits. A range
 * test is an add and a signed compare: x is in [lo, lo+n) exactly when
 * x - lo + 0x80, as a signed byte, is below n - 128. */
static inline unsigned name_char_bits(__m128i v)
{
#define IN_RANGE(x, lo, n) _mm_cmplt_epi8(_mm_add_epi8((x), _mm_set1_epi8((char)(0x80 - (lo)))), \
                                          _mm_set1_epi8((char)(-128 + (n))))
    __m128i letter = IN_RANGE(_mm_or_si128(v, _mm_set1_epi8(0x20)), 'a', 26);   /* A-Z a-z */
    __m128i digit_colon = IN_RANGE(v, '0', 11);                                 /* 0-9 : */
    __m128i dash_dot = IN_RANGE(v, '-', 2);                                     /* - . */
    __m128i underscore = _mm_cmpeq_epi8(v, _mm_set1_epi8('_'));
#undef IN_RANGE
    return (unsigned)_mm_movemask_epi8(
        _mm_or_si128(_mm_or_si128(letter, digit_colon), _mm_or_si128(dash_dot, underscore)));
}
#endif

bool name_is_valid(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN || name_chars[(unsigned char)s[0]] != 2)
        return false;
#if defined(__SSE2__)
    /* 16 bytes at a time (names on the wire are 8-20 bytes: a byte loop
     * was ~5 instructions a byte, twice a message); the loads overlap
     * rather than reach outside s[0..len) */
    if (len >= 16) {
        for (size_t i = 0;; i += 16) {
            if (i + 16 > len)
                i = len - 16;
            if (name_char_bits(_mm_loadu_si128((const __m128i *)(const void *)(s + i))) != 0xFFFF)
                return false;
            if (i + 16 == len)
                return true;
        }
    }
    if (len >= 8) {
        __m128i v = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)(const void *)s),
                                       _mm_loadl_epi64((const __m128i *)(const void *)(s + len - 8)));
        return name_char_bits(v) == 0xFFFF;
    }
#endif
    for (size_t i = 1; i < len; i++)
        if (!name_chars[(unsigned char)s[i]])
            return false;
    return true;
}

static bool has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

bool name_is_reserved(const char *s, size_t len)
{
    if (len == 0 || (s[0] != 'b' && s[0] != 's'))
        return false;       /* the common case, decided by one byte */
    return name_equals(s, len, "broker") || name_equals(s, len, "broadcast") ||
           has_prefix(s, len, "broker.") || has_prefix(s, len, "smartshop.");
}
