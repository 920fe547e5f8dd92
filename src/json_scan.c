/* json_scan: a validating single-pass JSON scanner for the envelope.
 * See json_scan.h for why it exists and what it must never do.
 *
 * Cost: every message goes through here once, so the common path is kept
 * short (docs/performance.md): compact JSON (no whitespace), short ASCII
 * strings. Whitespace, escapes, non-ASCII text and errors take slower,
 * out-of-line paths that check the same rules. */
#include "json_scan.h"

#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

typedef struct {
    const unsigned char *start, *p, *end;
    const char *why;
} scanner_t;

static bool fail(scanner_t *s, const char *why)
{
    if (!s->why)
        s->why = why;
    return false;
}

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

static __attribute__((noinline)) int skip_ws_slow(scanner_t *s)
{
    while (s->p < s->end && is_ws(*s->p))
        s->p++;
    return s->p < s->end ? *s->p : -1;
}

/* Skips whitespace; returns the byte s->p is then on, or -1 at the end.
 * Clients send compact JSON, so the test for "no whitespace here" (any
 * byte above ' ') is inline and the loop is not. */
static inline int peek(scanner_t *s)
{
    if (LIKELY(s->p < s->end && *s->p > ' '))
        return *s->p;
    return skip_ws_slow(s);
}

/* Whether the next byte after whitespace is c; if so, moves past it.
 * For punctuation, which in compact JSON comes right away. */
static inline bool accept(scanner_t *s, unsigned char c)
{
    if (LIKELY(s->p < s->end && *s->p == c)) {
        s->p++;
        return true;
    }
    if (peek(s) != c)
        return false;
    s->p++;
    return true;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The value of the \uXXXX escape at p (p[0] == '\\'), or -1. */
static long u_escape(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 6 || p[0] != '\\' || p[1] != 'u')
        return -1;
    long v = 0;
    for (int i = 2; i < 6; i++) {
        if (!is_hex(p[i]))
            return -1;
        unsigned char c = p[i];
        v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

static bool in_range(unsigned char c, unsigned char lo, unsigned char hi)
{
    return c >= lo && c <= hi;
}

/* One UTF-8 sequence starting at s->p (first byte >= 0x80), per Unicode
 * table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool scan_utf8(scanner_t *s)
{
    const unsigned char *p = s->p;
    size_t left = (size_t)(s->end - p);
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF; /* bounds of the second byte */

    if (in_range(c, 0xC2, 0xDF)) n = 2;
    else if (c == 0xE0) { n = 3; lo = 0xA0; }
    else if (in_range(c, 0xE1, 0xEC) || c == 0xEE || c == 0xEF) n = 3;
    else if (c == 0xED) { n = 3; hi = 0x9F; }
    else if (c == 0xF0) { n = 4; lo = 0x90; }
    else if (in_range(c, 0xF1, 0xF3)) n = 4;
    else if (c == 0xF4) { n = 4; hi = 0x8F; }
    else return fail(s, "invalid UTF-8");

    if (left < n || !in_range(p[1], lo, hi))
        return fail(s, "invalid UTF-8");
    for (size_t i = 2; i < n; i++)
        if (!in_range(p[i], 0x80, 0xBF))
            return fail(s, "invalid UTF-8");
    s->p += n;
    return true;
}

/* How many of the 8 bytes at p are plain: printable ASCII other than '"'
 * and '\\' (the bytes a string can hold with nothing to check). Eight at
 * a time, because string bytes are most of every message: a byte loop
 * costs ~13 instructions a byte here, this ~2 (docs/performance.md). */
static inline size_t plain_run8(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    uint64_t quote = x ^ (ones * '"'), backslash = x ^ (ones * '\\');
    uint64_t special = ((x - ones * 0x20) & ~x)          /* < 0x20 (or >= 0x80: below) */
                       | ((quote - ones) & ~quote)        /* == '"' */
                       | ((backslash - ones) & ~backslash) /* == '\\' */
                       | x;                               /* >= 0x80 */
    special &= highs;
    if (!special)
        return 8;
    return (size_t)__builtin_ctzll(special) / 8;   /* the first special byte (little-endian) */
}

#if defined(__SSE2__)
/* The same, 16 bytes at a time with SSE2 (every x86-64): half the
 * instructions a byte again, and most keys and short values end within
 * the first 16. */
#define PLAIN_BLOCK 16
static inline size_t plain_run(const unsigned char *p)
{
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    __m128i special = _mm_or_si128(
        _mm_or_si128(_mm_cmpeq_epi8(x, _mm_set1_epi8('"')), _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'))),
        _mm_cmplt_epi8(x, _mm_set1_epi8(0x20)));   /* signed: < 0x20, and >= 0x80 too */
    /* bit 16 stands for "none in these 16": a count of 16 without a branch */
    return (size_t)__builtin_ctz((unsigned)_mm_movemask_epi8(special) | 1u << 16);
}
#else
#define PLAIN_BLOCK 8
#define plain_run plain_run8
#endif

/* The first byte in [p, end) that is not plain, or end. Whole blocks
 * first, then 8 bytes, then one at a time: no load ever reaches past end. */
static inline const unsigned char *skip_plain(const unsigned char *p, const unsigned char *end)
{
    while (end - p >= PLAIN_BLOCK) {
        size_t plain = plain_run(p);
        p += plain;
        if (plain < PLAIN_BLOCK)
            return p;
    }
    if (PLAIN_BLOCK > 8 && end - p >= 8) {
        size_t plain = plain_run8(p);
        p += plain;
        if (plain < 8)
            return p;
    }
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
        p++;
    return p;
}

/* The byte at s->p inside a string is an escape, a control character or
 * the start of a UTF-8 sequence: checks it and moves past it. */
static bool scan_string_special(scanner_t *s, bool *escaped)
{
    unsigned char c = *s->p;
    if (c == '\\') {
        *escaped = true;
        if (s->end - s->p < 2)
            return fail(s, "unterminated string");
        switch (s->p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            s->p += 2;
            return true;
        case 'u': {
            /* a surrogate escape must come as a pair (as I-JSON, RFC
             * 7493, asks): a lone one decodes to no character, and
             * lua-cjson refuses it, so a policy would see nothing where
             * a lenient receiver reads text (docs/protocol.md E1) */
            long v = u_escape(s->p, s->end);
            if (v < 0)
                return fail(s, "bad \\u escape");
            if (v >= 0xDC00 && v <= 0xDFFF)
                return fail(s, "unpaired surrogate escape");
            if (v >= 0xD800 && v <= 0xDBFF) {
                long low = u_escape(s->p + 6, s->end);
                if (low < 0xDC00 || low > 0xDFFF)
                    return fail(s, "unpaired surrogate escape");
                s->p += 6;
            }
            s->p += 6;
            return true;
        }
        default:
            return fail(s, "bad escape in string");
        }
    }
    if (c < 0x20)
        return fail(s, "control character in string");
    /* c >= 0x80 (skip_plain stops on nothing else). Text that is not
     * ASCII comes in runs: check the whole run here. */
    do {
        if (!scan_utf8(s))
            return false;
    } while (s->p < s->end && *s->p >= 0x80);
    return true;
}

/* The rest of a string from s->p (where scan_string() stopped) to after
 * the closing quote. Out of line: most strings never get here, and the
 * inline part stays small without it. */
static __attribute__((noinline)) bool scan_string_rest(scanner_t *s, bool *escaped)
{
    for (;;) {
        s->p = skip_plain(s->p, s->end);
        if (s->p == s->end)
            return fail(s, "unterminated string");
        if (*s->p == '"') {
            s->p++;
            return true;
        }
        if (!scan_string_special(s, escaped))
            return false;
    }
}

/* A string starting at the opening quote. Leaves s->p after the closing
 * quote; sets *escaped if any escape was present. Inline, and only for
 * the common string: plain bytes, then the quote, with a whole block
 * left to read. Anything else goes on in scan_string_rest(). */
static inline __attribute__((always_inline)) bool scan_string(scanner_t *s, bool *escaped)
{
    const unsigned char *p = s->p + 1;   /* after the opening quote */
    while (s->end - p >= PLAIN_BLOCK) {
        size_t plain = plain_run(p);
        p += plain;
        if (plain < PLAIN_BLOCK) {
            if (LIKELY(*p == '"')) {
                s->p = p + 1;
                return true;
            }
            break;
        }
    }
    s->p = p;
    return scan_string_rest(s, escaped);
}

/* The digits from p on; NULL if there are none. */
static const unsigned char *scan_digits(const unsigned char *p, const unsigned char *end)
{
    const unsigned char *from = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p > from ? p : NULL;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool scan_number(scanner_t *s)
{
    const unsigned char *p = s->p, *end = s->end;
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return fail(s, "bad number");
    if (*p == '0')
        p++;
    else if (!(p = scan_digits(p, end)))
        return fail(s, "bad number");
    if (p < end && *p == '.') {
        if (!(p = scan_digits(p + 1, end)))
            return fail(s, "bad number");
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!(p = scan_digits(p, end)))
            return fail(s, "bad number");
    }
    s->p = p;
    return true;
}

static bool scan_literal(scanner_t *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return fail(s, "bad literal");
    s->p += n;
    return true;
}

static bool scan_container(scanner_t *s, int depth, unsigned char close);

/* One value; s->p is on its first byte, c (-1 at the end: see peek()). */
static bool scan_value_at(scanner_t *s, int c, int depth, json_kind_t *kind, bool *escaped)
{
    switch (c) {
    case '"': *kind = JSON_STRING; return scan_string(s, escaped);
    case '{': *kind = JSON_OBJECT; return scan_container(s, depth + 1, '}');
    case '[': *kind = JSON_ARRAY; return scan_container(s, depth + 1, ']');
    case 't': *kind = JSON_TRUE; return scan_literal(s, "true", 4);
    case 'f': *kind = JSON_FALSE; return scan_literal(s, "false", 5);
    case 'n': *kind = JSON_NULL; return scan_literal(s, "null", 4);
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        *kind = JSON_NUMBER;
        return scan_number(s);
    case -1:
        return fail(s, "expected a value");
    default:
        return fail(s, "unexpected character");
    }
}

/* Object or array after its opening bracket; `close` is '}' or ']'. The
 * depth limit keeps the recursion (and the stack) bounded. */
static bool scan_container(scanner_t *s, int depth, unsigned char close)
{
    if (depth > JSON_SCAN_MAX_DEPTH)
        return fail(s, "nesting too deep");
    s->p++;
    if (accept(s, close))
        return true;
    for (;;) {
        json_kind_t kind;
        bool escaped = false;
        if (close == '}') {
            if (peek(s) != '"')
                return fail(s, "expected a member name");
            if (!scan_string(s, &escaped))
                return false;
            if (!accept(s, ':'))
                return fail(s, "expected ':'");
        }
        int c = peek(s);
        if (c == '"') {   /* most values: the string case inline */
            if (!scan_string(s, &escaped))
                return false;
        } else if (!scan_value_at(s, c, depth, &kind, &escaped)) {
            return false;
        }
        if (accept(s, ','))
            continue;
        if (accept(s, close))
            return true;
        return fail(s, s->p == s->end ? "unterminated object or array"
                                      : "expected ',' or a closing bracket");
    }
}

/* The top-level object: like scan_container, but records each member. */
static json_scan_result_t scan_top_object(scanner_t *s, json_object_t *out)
{
    const unsigned char *start = s->start;
    json_member_t spare;   /* members past the limit: scanned and counted, not kept */
    bool too_many = false;
    s->p++;
    if (accept(s, '}'))
        return JSON_SCAN_OK;
    for (int n = 0;;) {
        json_member_t *m = n < JSON_SCAN_MAX_MEMBERS ? &out->members[n] : &spare;
        m->key_escaped = m->val_escaped = false;
        if (peek(s) != '"')
            return fail(s, "expected a member name"), JSON_SCAN_BAD_JSON;
        const unsigned char *kstart = s->p;
        if (!scan_string(s, &m->key_escaped))
            return JSON_SCAN_BAD_JSON;
        m->key_off = (uint32_t)(kstart + 1 - start);   /* between the quotes */
        m->key_len = (uint32_t)(s->p - kstart - 2);
        if (!accept(s, ':'))
            return fail(s, "expected ':'"), JSON_SCAN_BAD_JSON;
        int c = peek(s);
        const unsigned char *vstart = s->p;
        if (c == '"') {   /* most values: the string case inline */
            m->kind = JSON_STRING;
            if (!scan_string(s, &m->val_escaped))
                return JSON_SCAN_BAD_JSON;
            m->val_off = (uint32_t)(vstart + 1 - start);   /* between the quotes */
            m->val_len = (uint32_t)(s->p - vstart - 2);
        } else {
            if (!scan_value_at(s, c, 1, &m->kind, &m->val_escaped))
                return JSON_SCAN_BAD_JSON;
            m->val_off = (uint32_t)(vstart - start);
            m->val_len = (uint32_t)(s->p - vstart);
        }
        if (m == &spare)
            too_many = true;
        else
            out->count = ++n;
        if (accept(s, ','))
            continue;
        if (accept(s, '}'))
            return too_many ? JSON_SCAN_TOO_MANY : JSON_SCAN_OK;
        return fail(s, s->p == s->end ? "unterminated object" : "expected ',' or '}'"),
               JSON_SCAN_BAD_JSON;
    }
}

json_scan_result_t json_scan_object(const char *buf, size_t len,
                                    json_object_t *out, const char **why)
{
    scanner_t s = {(const unsigned char *)buf, (const unsigned char *)buf,
                   (const unsigned char *)buf + len, 0};
    json_scan_result_t result;
    out->count = 0;
    if (len > UINT32_MAX) {
        s.why = "message too large to scan";
        result = JSON_SCAN_BAD_JSON;
        goto done;
    }
    int c = peek(&s);
    if (c == '{') {
        result = scan_top_object(&s, out);
    } else {
        /* Valid JSON that is not an object is a different error from
         * invalid JSON: tell them apart. */
        json_kind_t kind;
        bool escaped = false;
        result = scan_value_at(&s, c, 0, &kind, &escaped) ? JSON_SCAN_NOT_OBJECT : JSON_SCAN_BAD_JSON;
    }
    if (result != JSON_SCAN_BAD_JSON && peek(&s) >= 0) {
        fail(&s, "trailing data after the JSON value");
        result = JSON_SCAN_BAD_JSON;
    }
done:
    if (why)
        *why = s.why ? s.why : (result == JSON_SCAN_NOT_OBJECT ? "not a JSON object"
                                : result == JSON_SCAN_TOO_MANY ? "too many top-level members" : NULL);
    return result;
}

bool json_scan_member_value(const char *buf, size_t len, const char **why)
{
    scanner_t s = {(const unsigned char *)buf, (const unsigned char *)buf,
                   (const unsigned char *)buf + len, 0};
    json_kind_t kind;
    bool escaped = false;
    if (len > UINT32_MAX)
        fail(&s, "message too large to scan");
    else if (scan_value_at(&s, peek(&s), 1, &kind, &escaped) && peek(&s) >= 0)
        fail(&s, "trailing data after the JSON value");
    if (why)
        *why = s.why;
    return s.why == NULL;
}
