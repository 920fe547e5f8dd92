/* names: syntax and reserved names for service names. */
#include "names.h"

#include <string.h>

/* 2: may start a name (letter, digit); 1: may follow (also . _ : -). A
 * table: names are checked on every message. */
const unsigned char names__chars[256] = {
    ['0' ... '9'] = 2, ['A' ... 'Z'] = 2, ['a' ... 'z'] = 2,
    ['.'] = 1, ['_'] = 1, [':'] = 1, ['-'] = 1,
};

static bool has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

bool names__is_reserved(const char *s, size_t len)
{
    return name_equals(s, len, "broker") || name_equals(s, len, "broadcast") ||
           has_prefix(s, len, "broker.") || has_prefix(s, len, "smartshop.");
}

/* The length of the token at s (up to '.' or `end`). */
static size_t token_at(const char *s, const char *end)
{
    const char *t = s;
    while (t < end && *t != '.')
        t++;
    return (size_t)(t - s);
}

static bool is_token(const char *s, size_t n, char c)
{
    return n == 1 && s[0] == c;
}

bool topic_matches(const char *pattern, const char *topic, size_t len)
{
    const char *p = pattern, *pend = pattern + strlen(pattern), *t = topic, *tend = topic + len;
    for (;;) {
        size_t pn = token_at(p, pend), tn = token_at(t, tend);
        if (is_token(p, pn, '>'))
            return t < tend;
        if (!is_token(p, pn, '*') && (pn != tn || memcmp(p, t, pn) != 0))
            return false;
        p += pn;
        t += tn;
        if (p == pend || t == tend)
            return p == pend && t == tend;
        p++;
        t++;
    }
}

bool topic_pattern_within(const char *inner, const char *outer)
{
    const char *i = inner, *iend = inner + strlen(inner), *o = outer, *oend = outer + strlen(outer);
    for (;;) {
        size_t in = token_at(i, iend), on = token_at(o, oend);
        if (is_token(o, on, '>'))
            return true;                    /* inner has a token here: all of it is within */
        if (is_token(i, in, '>'))
            return false;
        if (!is_token(o, on, '*') && (is_token(i, in, '*') || in != on || memcmp(i, o, in) != 0))
            return false;
        i += in;
        o += on;
        if (i == iend || o == oend)
            return i == iend && o == oend;
        i++;
        o++;
    }
}

bool topic_is_valid(const char *text, size_t len, bool pattern, const char **why)
{
    if (len == 0 || len > TOPIC_MAX_LEN) {
        *why = "a topic is 1 to 255 bytes";
        return false;
    }
    size_t tokens = 0, start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && text[i] != '.')
            continue;
        size_t n = i - start;
        const char *tok = text + start;
        start = i + 1;
        if (n == 0) {
            *why = "a topic's tokens are not empty (no leading, trailing or double dots)";
            return false;
        }
        if (++tokens > TOPIC_MAX_TOKENS) {
            *why = "a topic has at most 16 tokens";
            return false;
        }
        if (n == 1 && (tok[0] == '*' || tok[0] == '>')) {
            if (!pattern) {
                *why = "a published topic has no wildcards ('*', '>')";
                return false;
            }
            if (tok[0] == '>' && i != len) {
                *why = "'>' may only be a pattern's last token";
                return false;
            }
            continue;
        }
        for (size_t k = 0; k < n; k++) {
            unsigned char c = (unsigned char)tok[k];
            if (!names__chars[c]) {
                *why = c == '*' || c == '>'
                           ? "a wildcard is a whole token ('order.*', not 'order.a*')"
                           : "a topic's tokens hold letters, digits and _ : - only";
                return false;
            }
        }
    }
    return true;
}
