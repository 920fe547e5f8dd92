/* bytes16: whether every byte of a short run belongs to a class, 16 bytes
 * at a time with SSE2. The id check (envelope.c) and the name check
 * (names.h) both run on every message and share this loop. SSE2 only:
 * callers keep a portable path of their own. */
#ifndef SMARTSHOP_BYTES16_H
#define SMARTSHOP_BYTES16_H

#if defined(__SSE2__)
#include <emmintrin.h>
#include <stdbool.h>
#include <stddef.h>

/* The bytes of v in [lo, lo+n) as 0xFF, the others as 0: a range test is
 * an add and a signed compare, x - lo + 0x80 being below n - 128 exactly
 * for those. */
static inline __m128i bytes16_in_range(__m128i v, unsigned char lo, int n)
{
    return _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8((char)(0x80 - lo))),
                          _mm_set1_epi8((char)(-128 + n)));
}

/* One bit a byte of v (as _mm_movemask_epi8): set if it is in the class. */
typedef unsigned bytes16_class_fn(__m128i v);

/* Whether every byte of s[0..len), len >= 8, is in the class: 16 bytes a
 * load, the last load overlapping the one before; 8-15 bytes as the first
 * and the last 8 in one vector. No load reaches outside s[0..len). Always
 * inline, with in_class a static inline function: the test inlines too. */
static inline __attribute__((always_inline)) bool
bytes16_all(const char *s, size_t len, bytes16_class_fn *in_class)
{
    if (len < 16)
        return in_class(_mm_unpacklo_epi64(
                   _mm_loadl_epi64((const __m128i *)(const void *)s),
                   _mm_loadl_epi64((const __m128i *)(const void *)(s + len - 8)))) == 0xFFFF;
    for (size_t i = 0;; i += 16) {
        if (i + 16 > len)
            i = len - 16;
        if (in_class(_mm_loadu_si128((const __m128i *)(const void *)(s + i))) != 0xFFFF)
            return false;
        if (i + 16 == len)
            return true;
    }
}
#endif

#endif
