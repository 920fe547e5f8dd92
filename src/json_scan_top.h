/* json_scan_top: the scanner's top-level object loop and the inline fast
 * paths it runs on, as an inline "template" over what to do with each
 * member. Internal: included by json_scan.c (json_scan_object records the
 * members) and envelope.c (envelope_parse collects the envelope fields as
 * each member is scanned, instead of in a second pass over a member array:
 * ~15 Ir a member saved, and the scan position stays in a register).
 *
 * The grammar is written once, here and in json_scan.c; the same rules as
 * json_scan.h states (never read outside [buf, buf+len), RFC 8259, E1).
 * Position-passing style: every step takes the position and returns the
 * next one, or NULL with the reason in *why. */
#ifndef SMARTSHOP_JSON_SCAN_TOP_H
#define SMARTSHOP_JSON_SCAN_TOP_H

#include <string.h>

#include "json_scan.h"
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define JS_LIKELY(x) __builtin_expect(!!(x), 1)
#define JS_UNLIKELY(x) __builtin_expect(!!(x), 0)

typedef const unsigned char *js_pos_t;

/* Out of line, in json_scan.c: whitespace, the rest of a string after
 * its first special byte, any value but a string, an object or array
 * after its opening bracket, and a top-level value that is not an object. */
js_pos_t json_scan__ws(js_pos_t p, js_pos_t end);
js_pos_t json_scan__string_rest(js_pos_t p, js_pos_t end, bool *escaped, const char **why);
js_pos_t json_scan__value(js_pos_t p, js_pos_t end, int depth, json_kind_t *kind,
                          bool *escaped, const char **why);
js_pos_t json_scan__container(js_pos_t p, js_pos_t end, int depth, unsigned char close,
                              const char **why);
json_scan_result_t json_scan__not_object(js_pos_t p, js_pos_t end, const char **why);

/* Skips whitespace. Clients send compact JSON, so "no whitespace here"
 * (the end, or any byte above ' ') is decided inline. */
static inline js_pos_t js_ws(js_pos_t p, js_pos_t end)
{
    if (JS_LIKELY(p == end || *p > ' '))
        return p;
    return json_scan__ws(p, end);
}

/* How many of the 8 bytes at p are plain: printable ASCII other than '"'
 * and '\\' (the bytes a string can hold with nothing to check). Eight at
 * a time, because string bytes are most of every message: a byte loop
 * costs ~13 instructions a byte here, this ~2 (docs/performance.md). */
static inline uint64_t js_special_bits8(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    uint64_t special = ((x - ones * 0x20) & ~x)          /* < 0x20 (or >= 0x80: below) */
                       | ((quote - ones) & ~quote)        /* == '"' */
                       | ((backslash - ones) & ~backslash) /* == '\\' */
                       | x;                               /* >= 0x80 */
    return special & highs;   /* the high bit of each special byte */
}
static inline size_t js_plain_run8(const unsigned char *p)
{
    uint64_t special = js_special_bits8(p);
    if (!special)
        return 8;
    return (size_t)__builtin_ctzll(special) / 8;   /* the first special byte (little-endian) */
}

#if defined(__SSE2__)
/* The same, 16 bytes at a time with SSE2 (every x86-64): half the
 * instructions a byte again, and most keys and short values end within
 * the first 16. */
#define JS_PLAIN_BLOCK 16
static inline unsigned js_special_mask(const unsigned char *p)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    /* x ^ 2 is above 0x20 as a signed byte exactly when x is none of '"'
     * (0x22 becomes 0x20), below 0x20 or at least 0x80: three tests in one
     * compare; then not '\\'. The plain bytes, inverted as bits: as a
     * less-than, gcc inverts the vector (a zero register and a compare
     * more in every block), and needs a fourth constant register. */
    __m128i plain = _mm_andnot_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('\\')),
                                     _mm_cmpgt_epi8(_mm_xor_si128(x, _mm_set1_epi8(2)),
                                                    _mm_set1_epi8(0x20)));
    return (unsigned)_mm_movemask_epi8(plain) ^ 0xFFFFu;
}
static inline size_t js_plain_run(const unsigned char *p)
{
    /* bit 16 stands for "none in these 16": a count of 16 without a branch */
    return (size_t)__builtin_ctz(js_special_mask(p) | 1u << 16);
}
#else
#define JS_PLAIN_BLOCK 8
#define js_plain_run js_plain_run8
#endif

/* Where no whole block is left to read from (p < blocks: 16 bytes are),
 * for the block loops to test one compare instead of a difference. From
 * `from` on, a position known to lie in [buf, end). */
static inline js_pos_t js_blocks_end(js_pos_t from, js_pos_t end)
{
    return end - from >= JS_PLAIN_BLOCK - 1 ? end - (JS_PLAIN_BLOCK - 1) : from;
}

/* A string from its opening quote to after the closing one; sets
 * *escaped if it holds an escape. Inline only for the common string:
 * plain bytes, then the quote, read a block at a time (near the end of
 * the buffer, from its last block). Anything else goes on out of line,
 * with the same checks. `from`: a position known to lie in [buf, p], as
 * for js_blocks_end; the last block is read only if it starts there. */
static inline __attribute__((always_inline)) js_pos_t
js_string(js_pos_t p, js_pos_t end, js_pos_t blocks, js_pos_t from, bool *escaped,
          const char **why)
{
    p++;   /* the opening quote */
#if defined(__SSE2__)
    while (p < blocks) {
        unsigned special = js_special_mask(p);
        if (special) {
            p += __builtin_ctz(special);
            if (JS_LIKELY(*p == '"'))
                return p + 1;
            break;
        }
        p += JS_PLAIN_BLOCK;
    }
    /* Near the end (the last member of a message, often): the last whole
     * block, shifted to start at p, rather than the byte loop (~50 Ir for
     * a timestamp). p >= blocks, the end less than a block away: the shift
     * is 1 to 15, and the bits left are those of [p, end). */
    if (p >= blocks && end - from >= JS_PLAIN_BLOCK && p < end) {
        js_pos_t last = end - JS_PLAIN_BLOCK;
        unsigned special = js_special_mask(last) >> (p - last);
        if (JS_LIKELY(special)) {
            p += __builtin_ctz(special);
            if (JS_LIKELY(*p == '"'))
                return p + 1;
        }   /* none: unterminated, which the out-of-line path reports */
    }
#else
    while (p < blocks) {
        size_t plain = js_plain_run(p);
        p += plain;
        if (plain < JS_PLAIN_BLOCK) {
            if (JS_LIKELY(*p == '"'))
                return p + 1;
            break;
        }
    }
    /* as above, 8 bytes: a shift of 1 to 7 bytes */
    if (p >= blocks && end - from >= JS_PLAIN_BLOCK && p < end) {
        js_pos_t last = end - JS_PLAIN_BLOCK;
        uint64_t special = js_special_bits8(last) >> (8 * (size_t)(p - last));
        if (JS_LIKELY(special)) {
            p += __builtin_ctzll(special) / 8;
            if (JS_LIKELY(*p == '"'))
                return p + 1;
        }
    }
#endif
    return json_scan__string_rest(p, end, escaped, why);
}

static inline js_pos_t js_fail(const char **why, const char *reason)
{
    *why = reason;
    return NULL;
}

/* Called for each of the first JSON_SCAN_MAX_MEMBERS members, in order. */
typedef void js_member_fn(void *ctx, const char *buf, const json_member_t *m);

/* Validates buf[0..len) as one JSON text, as json_scan_object() (same
 * results, same reasons in *why, NULL on JSON_SCAN_OK), handing each
 * top-level member to on_member as it is scanned. Always inline, with
 * on_member a static inline function: the compiler then inlines it too,
 * and the member never exists in memory. */
static inline __attribute__((always_inline)) json_scan_result_t
json_scan_top(const char *buf, size_t len, js_member_fn *on_member, void *ctx, const char **why)
{
    js_pos_t start = (js_pos_t)buf, end = start + len, p;
    if (JS_UNLIKELY(len > UINT32_MAX))
        return js_fail(why, "message too large to scan"), JSON_SCAN_BAD_JSON;
    js_pos_t blocks = js_blocks_end(start, end);
    p = js_ws(start, end);
    if (JS_UNLIKELY(p == end || *p != '{'))
        return json_scan__not_object(p, end, why);
    int n = 0;
    p = js_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        /* each step tests for the byte compact JSON has next, and only
         * then for whitespace before it */
        for (;;) {
            /* not fields of a json_member_t: their addresses go to the
             * slow paths, which would keep the whole member in memory */
            bool key_escaped = false, val_escaped = false;
            json_kind_t kind;
            uint32_t val_off, val_len;
            if (JS_UNLIKELY(p == end || *p != '"')) {
                p = js_ws(p, end);
                if (p == end || *p != '"')
                    return js_fail(why, "expected a member name"), JSON_SCAN_BAD_JSON;
            }
            js_pos_t k = p;
            if (!(p = js_string(p, end, blocks, start, &key_escaped, why)))
                return JSON_SCAN_BAD_JSON;
            uint32_t key_len = (uint32_t)(p - k - 2);   /* between the quotes */
            if (JS_UNLIKELY(p == end || *p != ':')) {
                p = js_ws(p, end);
                if (p == end || *p != ':')
                    return js_fail(why, "expected ':'"), JSON_SCAN_BAD_JSON;
            }
            p++;
            js_pos_t v = p;
            if (JS_LIKELY(p < end && *p == '"')) {   /* most values: the string case inline */
                kind = JSON_STRING;
                if (!(p = js_string(p, end, blocks, start, &val_escaped, why)))
                    return JSON_SCAN_BAD_JSON;
            } else if (JS_LIKELY(p < end && *p == '{')) {   /* the payload, mostly: straight there */
                kind = JSON_OBJECT;
                if (!(p = json_scan__container(p, end, 2, '}', why)))
                    return JSON_SCAN_BAD_JSON;
            } else {
                v = p = js_ws(p, end);
                if (!(p = json_scan__value(p, end, 1, &kind, &val_escaped, why)))
                    return JSON_SCAN_BAD_JSON;
            }
            if (kind == JSON_STRING) {
                val_off = (uint32_t)(v + 1 - start);   /* between the quotes */
                val_len = (uint32_t)(p - v - 2);
            } else {
                val_off = (uint32_t)(v - start);
                val_len = (uint32_t)(p - v);
            }
            /* members past the limit: scanned and counted, not handed on */
            if (JS_LIKELY(n < JSON_SCAN_MAX_MEMBERS)) {
                json_member_t m = {(uint32_t)(k + 1 - start), key_len,
                                   val_off, val_len, kind, key_escaped, val_escaped};
                on_member(ctx, buf, &m);
            }
            n++;
            if (JS_LIKELY(p < end && *p == ',')) {
                p++;
                continue;
            }
            p = js_ws(p, end);
            if (p < end && *p == ',') {
                p++;
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            return js_fail(why, p == end ? "unterminated object" : "expected ',' or '}'"),
                   JSON_SCAN_BAD_JSON;
        }
    }
    if (JS_UNLIKELY(js_ws(p, end) != end))
        return js_fail(why, "trailing data after the JSON value"), JSON_SCAN_BAD_JSON;
    if (JS_UNLIKELY(n > JSON_SCAN_MAX_MEMBERS))
        return js_fail(why, "too many top-level members"), JSON_SCAN_TOO_MANY;
    *why = NULL;
    return JSON_SCAN_OK;
}

#endif
