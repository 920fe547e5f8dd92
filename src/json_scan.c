/* json_scan: a validating single-pass JSON scanner for the envelope.
 * See json_scan.h for why it exists and what it must never do. */
#include "json_scan.h"

#include <string.h>

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

static void skip_ws(scanner_t *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\n' || *s->p == '\r' || *s->p == '\t'))
        s->p++;
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
static size_t plain_run8(const unsigned char *p)
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

/* A string starting at the opening quote. Leaves s->p after the closing
 * quote; reports whether any escape was present. */
static bool scan_string(scanner_t *s, bool *escaped)
{
    s->p++; /* opening quote */
    while (s->p < s->end) {
        if (s->end - s->p >= 8) {
            size_t plain = plain_run8(s->p);
            s->p += plain;
            if (plain == 8)
                continue;
        }
        unsigned char c = *s->p;
        if (c == '"') {
            s->p++;
            return true;
        }
        if (c == '\\') {
            *escaped = true;
            if (s->end - s->p < 2)
                break;
            switch (s->p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                s->p += 2;
                break;
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
                break;
            }
            default:
                return fail(s, "bad escape in string");
            }
        } else if (c < 0x20) {
            return fail(s, "control character in string");
        } else if (c < 0x80) {
            s->p++;
        } else if (!scan_utf8(s)) {
            return false;
        }
    }
    return fail(s, "unterminated string");
}

static bool scan_digits(scanner_t *s)
{
    const unsigned char *from = s->p;
    while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
        s->p++;
    return s->p > from;
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool scan_number(scanner_t *s)
{
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p >= s->end)
        return fail(s, "bad number");
    if (*s->p == '0')
        s->p++;
    else if (!scan_digits(s))
        return fail(s, "bad number");
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (!scan_digits(s))
            return fail(s, "bad number");
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (!scan_digits(s))
            return fail(s, "bad number");
    }
    return true;
}

static bool scan_literal(scanner_t *s, const char *word, size_t n)
{
    if ((size_t)(s->end - s->p) < n)
        return fail(s, "bad literal");
    for (size_t i = 0; i < n; i++)
        if (s->p[i] != (unsigned char)word[i])
            return fail(s, "bad literal");
    s->p += n;
    return true;
}

static bool scan_value(scanner_t *s, int depth, json_kind_t *kind, bool *escaped);

/* Object or array after its opening bracket; `close` is '}' or ']'. */
static bool scan_container(scanner_t *s, int depth, unsigned char close)
{
    if (depth > JSON_SCAN_MAX_DEPTH)
        return fail(s, "nesting too deep");
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == close) {
        s->p++;
        return true;
    }
    for (;;) {
        json_kind_t kind;
        bool escaped = false;
        if (close == '}') {
            skip_ws(s);
            if (s->p >= s->end || *s->p != '"')
                return fail(s, "expected a member name");
            if (!scan_string(s, &escaped))
                return false;
            skip_ws(s);
            if (s->p >= s->end || *s->p != ':')
                return fail(s, "expected ':'");
            s->p++;
        }
        if (!scan_value(s, depth, &kind, &escaped))
            return false;
        skip_ws(s);
        if (s->p >= s->end)
            return fail(s, "unterminated object or array");
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p == close) {
            s->p++;
            return true;
        }
        return fail(s, "expected ',' or a closing bracket");
    }
}

static bool scan_value(scanner_t *s, int depth, json_kind_t *kind, bool *escaped)
{
    skip_ws(s);
    if (s->p >= s->end)
        return fail(s, "expected a value");
    switch (*s->p) {
    case '"': *kind = JSON_STRING; return scan_string(s, escaped);
    case '{': *kind = JSON_OBJECT; return scan_container(s, depth + 1, '}');
    case '[': *kind = JSON_ARRAY; return scan_container(s, depth + 1, ']');
    case 't': *kind = JSON_TRUE; return scan_literal(s, "true", 4);
    case 'f': *kind = JSON_FALSE; return scan_literal(s, "false", 5);
    case 'n': *kind = JSON_NULL; return scan_literal(s, "null", 4);
    default:
        if (*s->p == '-' || (*s->p >= '0' && *s->p <= '9')) {
            *kind = JSON_NUMBER;
            return scan_number(s);
        }
        return fail(s, "unexpected character");
    }
}

/* The top-level object: like scan_container, but records each member. */
static json_scan_result_t scan_top_object(scanner_t *s, json_object_t *out)
{
    bool too_many = false;
    s->p++;
    skip_ws(s);
    if (s->p < s->end && *s->p == '}') {
        s->p++;
        return JSON_SCAN_OK;
    }
    for (;;) {
        json_member_t m = {0};
        skip_ws(s);
        if (s->p >= s->end || *s->p != '"')
            return fail(s, "expected a member name"), JSON_SCAN_BAD_JSON;
        m.key_off = (uint32_t)(s->p - s->start + 1);
        if (!scan_string(s, &m.key_escaped))
            return JSON_SCAN_BAD_JSON;
        m.key_len = (uint32_t)(s->p - s->start - 1) - m.key_off;
        skip_ws(s);
        if (s->p >= s->end || *s->p != ':')
            return fail(s, "expected ':'"), JSON_SCAN_BAD_JSON;
        s->p++;
        skip_ws(s);
        const unsigned char *vstart = s->p;
        if (!scan_value(s, 1, &m.kind, &m.val_escaped))
            return JSON_SCAN_BAD_JSON;
        if (m.kind == JSON_STRING) {
            m.val_off = (uint32_t)(vstart - s->start + 1);
            m.val_len = (uint32_t)(s->p - vstart - 2);
        } else {
            m.val_off = (uint32_t)(vstart - s->start);
            m.val_len = (uint32_t)(s->p - vstart);
        }
        if (out->count < JSON_SCAN_MAX_MEMBERS)
            out->members[out->count++] = m;
        else
            too_many = true;
        skip_ws(s);
        if (s->p >= s->end)
            return fail(s, "unterminated object"), JSON_SCAN_BAD_JSON;
        if (*s->p == ',') {
            s->p++;
            continue;
        }
        if (*s->p == '}') {
            s->p++;
            return too_many ? JSON_SCAN_TOO_MANY : JSON_SCAN_OK;
        }
        return fail(s, "expected ',' or '}'"), JSON_SCAN_BAD_JSON;
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
    skip_ws(&s);
    if (s.p < s.end && *s.p == '{') {
        result = scan_top_object(&s, out);
    } else {
        /* Valid JSON that is not an object is a different error from
         * invalid JSON: tell them apart. */
        json_kind_t kind;
        bool escaped = false;
        result = scan_value(&s, 0, &kind, &escaped) ? JSON_SCAN_NOT_OBJECT : JSON_SCAN_BAD_JSON;
    }
    if (result != JSON_SCAN_BAD_JSON) {
        skip_ws(&s);
        if (s.p != s.end) {
            fail(&s, "trailing data after the JSON value");
            result = JSON_SCAN_BAD_JSON;
        }
    }
done:
    if (why)
        *why = s.why ? s.why : (result == JSON_SCAN_NOT_OBJECT ? "not a JSON object"
                                : result == JSON_SCAN_TOO_MANY ? "too many top-level members" : NULL);
    return result;
}
