/* json_scan: a validating single-pass JSON scanner for the envelope.
 * See json_scan.h for why it exists and what it must never do.
 *
 * Cost: every message goes through here once, so the common path is kept
 * short (docs/performance.md): compact JSON (no whitespace), short ASCII
 * strings. Whitespace, escapes, non-ASCII text and errors take slower,
 * out-of-line paths that check the same rules. The top-level loop and the
 * inline fast paths are in json_scan_top.h (envelope.c runs them too);
 * the scan position is passed and returned, never stored in a struct, so
 * it stays in a register (NULL: failed, with the reason in *why). */
#include "json_scan.h"

#include <string.h>

#include "json_scan_top.h"


static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

js_pos_t json_scan__ws(js_pos_t p, js_pos_t end)
{
    while (p < end && is_ws(*p))
        p++;
    return p;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The value of the \uXXXX escape at p (p[0] == '\\'), or -1. */
static long u_escape(js_pos_t p, js_pos_t end)
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

/* One UTF-8 sequence starting at p (first byte >= 0x80), per Unicode
 * table 3-7: no overlong forms, no surrogates, nothing above U+10FFFF. */
static js_pos_t scan_utf8(js_pos_t p, js_pos_t end, const char **why)
{
    size_t left = (size_t)(end - p);
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
    else return js_fail(why, "invalid UTF-8");

    if (left < n || !in_range(p[1], lo, hi))
        return js_fail(why, "invalid UTF-8");
    for (size_t i = 2; i < n; i++)
        if (!in_range(p[i], 0x80, 0xBF))
            return js_fail(why, "invalid UTF-8");
    return p + n;
}

/* The first byte in [p, end) that is not plain, or end. Whole blocks
 * first, then 8 bytes, then one at a time: no load ever reaches past end. */
static inline js_pos_t skip_plain(js_pos_t p, js_pos_t end)
{
    while (end - p >= JS_PLAIN_BLOCK) {
        size_t plain = js_plain_run(p);
        p += plain;
        if (plain < JS_PLAIN_BLOCK)
            return p;
    }
    if (JS_PLAIN_BLOCK > 8 && end - p >= 8) {
        size_t plain = js_plain_run8(p);
        p += plain;
        if (plain < 8)
            return p;
    }
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\')
        p++;
    return p;
}

/* The byte at p inside a string is an escape, a control character or
 * the start of a UTF-8 sequence: checks it and moves past it. */
static js_pos_t scan_string_special(js_pos_t p, js_pos_t end, bool *escaped, const char **why)
{
    unsigned char c = *p;
    if (c == '\\') {
        *escaped = true;
        if (end - p < 2)
            return js_fail(why, "unterminated string");
        switch (p[1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            return p + 2;
        case 'u': {
            /* a surrogate escape must come as a pair (as I-JSON, RFC
             * 7493, asks): a lone one decodes to no character, and
             * lua-cjson refuses it, so a policy would see nothing where
             * a lenient receiver reads text (docs/protocol.md E1) */
            long v = u_escape(p, end);
            if (v < 0)
                return js_fail(why, "bad \\u escape");
            if (v >= 0xDC00 && v <= 0xDFFF)
                return js_fail(why, "unpaired surrogate escape");
            if (v >= 0xD800 && v <= 0xDBFF) {
                long low = u_escape(p + 6, end);
                if (low < 0xDC00 || low > 0xDFFF)
                    return js_fail(why, "unpaired surrogate escape");
                p += 6;
            }
            return p + 6;
        }
        default:
            return js_fail(why, "bad escape in string");
        }
    }
    if (c < 0x20)
        return js_fail(why, "control character in string");
    /* c >= 0x80 (skip_plain stops on nothing else). Text that is not
     * ASCII comes in runs: check the whole run here. */
    do {
        if (!(p = scan_utf8(p, end, why)))
            return NULL;
    } while (p < end && *p >= 0x80);
    return p;
}

/* The rest of a string from p (where js_string() stopped) to after the
 * closing quote. Out of line: most strings never get here, and the inline
 * part stays small without it. */
js_pos_t json_scan__string_rest(js_pos_t p, js_pos_t end, bool *escaped, const char **why)
{
    for (;;) {
        p = skip_plain(p, end);
        if (p == end)
            return js_fail(why, "unterminated string");
        if (*p == '"')
            return p + 1;
        if (!(p = scan_string_special(p, end, escaped, why)))
            return NULL;
    }
}

/* The digits from p on; NULL if there are none. */
static js_pos_t scan_digits(js_pos_t p, js_pos_t end)
{
    js_pos_t from = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p > from ? p : NULL;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static js_pos_t scan_number(js_pos_t p, js_pos_t end, const char **why)
{
    if (p < end && *p == '-')
        p++;
    if (p >= end)
        return js_fail(why, "bad number");
    if (*p == '0')
        p++;
    else if (!(p = scan_digits(p, end)))
        return js_fail(why, "bad number");
    if (p < end && *p == '.') {
        if (!(p = scan_digits(p + 1, end)))
            return js_fail(why, "bad number");
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!(p = scan_digits(p, end)))
            return js_fail(why, "bad number");
    }
    return p;
}

/* Inline: with the word a constant, the compare is a load or two. */
static inline __attribute__((always_inline)) js_pos_t scan_literal(js_pos_t p, js_pos_t end, const char *word, size_t n, const char **why)
{
    if ((size_t)(end - p) < n || memcmp(p, word, n) != 0)
        return js_fail(why, "bad literal");
    return p + n;
}


/* One value; p is on its first byte (or at the end). */
js_pos_t json_scan__value(js_pos_t p, js_pos_t end, int depth, json_kind_t *kind,
                          bool *escaped, const char **why)
{
    switch (p < end ? *p : -1) {
    case '"': *kind = JSON_STRING; return js_string(p, end, js_blocks_end(p, end), p, escaped, why);
    case '{': *kind = JSON_OBJECT; return json_scan__container(p, end, depth + 1, '}', why);
    case '[': *kind = JSON_ARRAY; return json_scan__container(p, end, depth + 1, ']', why);
    case 't': *kind = JSON_TRUE; return scan_literal(p, end, "true", 4, why);
    case 'f': *kind = JSON_FALSE; return scan_literal(p, end, "false", 5, why);
    case 'n': *kind = JSON_NULL; return scan_literal(p, end, "null", 4, why);
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9':
        *kind = JSON_NUMBER;
        return scan_number(p, end, why);
    case -1:
        return js_fail(why, "expected a value");
    default:
        return js_fail(why, "unexpected character");
    }
}

/* Object or array from its opening bracket; `close` is '}' or ']'. The
 * depth limit keeps the recursion (and the stack) bounded. */
js_pos_t json_scan__container(js_pos_t p, js_pos_t end, int depth, unsigned char close,
                              const char **why)
{
    if (depth > JSON_SCAN_MAX_DEPTH)
        return js_fail(why, "nesting too deep");
    js_pos_t from = p, blocks = js_blocks_end(p, end);
    p = js_ws(p + 1, end);
    if (p < end && *p == close)
        return p + 1;
    /* as the top-level loop: the byte compact JSON has next, then whitespace */
    for (;;) {
        json_kind_t kind;
        bool escaped = false;
        if (close == '}') {
            if (JS_UNLIKELY(p == end || *p != '"')) {
                p = js_ws(p, end);
                if (p == end || *p != '"')
                    return js_fail(why, "expected a member name");
            }
            if (!(p = js_string(p, end, blocks, from, &escaped, why)))
                return NULL;
            if (JS_UNLIKELY(p == end || *p != ':')) {
                p = js_ws(p, end);
                if (p == end || *p != ':')
                    return js_fail(why, "expected ':'");
            }
            p++;
        }
        if (JS_LIKELY(p < end && *p == '"'))   /* most values: the string case inline */
            p = js_string(p, end, blocks, from, &escaped, why);
        else
            p = json_scan__value(js_ws(p, end), end, depth, &kind, &escaped, why);
        if (!p)
            return NULL;
        if (JS_UNLIKELY(p == end || (*p != ',' && *p != close)))
            p = js_ws(p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == close)
            return p + 1;
        return js_fail(why, p == end ? "unterminated object or array"
                                     : "expected ',' or a closing bracket");
    }
}

/* A top-level value that does not start with '{': valid JSON that is not
 * an object is a different error from invalid JSON, so tell them apart. */
json_scan_result_t json_scan__not_object(js_pos_t p, js_pos_t end, const char **why)
{
    json_kind_t kind;
    bool escaped = false;
    if (!(p = json_scan__value(p, end, 0, &kind, &escaped, why)))
        return JSON_SCAN_BAD_JSON;
    if (js_ws(p, end) != end)
        return js_fail(why, "trailing data after the JSON value"), JSON_SCAN_BAD_JSON;
    *why = "not a JSON object";
    return JSON_SCAN_NOT_OBJECT;
}

/* json_scan_object's member handler: ctx is the json_object_t. */
static inline __attribute__((always_inline)) void record_member(void *ctx, const char *buf,
                                                                   const json_member_t *m)
{
    json_object_t *out = ctx;
    out->members[out->count++] = *m;
}

json_scan_result_t json_scan_object(const char *buf, size_t len,
                                    json_object_t *out, const char **why)
{
    const char *reason;
    out->count = 0;
    json_scan_result_t result = json_scan_top(buf, len, record_member, out, &reason);
    if (why)
        *why = reason;
    return result;
}

bool json_scan_member_value(const char *buf, size_t len, const char **why)
{
    js_pos_t p = (js_pos_t)buf, end = p + len;
    const char *reason = NULL;
    json_kind_t kind;
    bool escaped = false;
    if (len > UINT32_MAX)
        reason = "message too large to scan";
    else if ((p = json_scan__value(js_ws(p, end), end, 1, &kind, &escaped, &reason)) &&
             js_ws(p, end) != end)
        reason = "trailing data after the JSON value";
    if (why)
        *why = reason;
    return reason == NULL;
}
