/* fuzz_common: what the fuzz targets share (tests/fuzz/, docs/fuzzing.md).
 *
 * FUZZ_ASSERT    abort with a message on a broken invariant (libFuzzer then
 *                saves the input as a crash-* reproducer).
 * fz_utf8_ok     an independent UTF-8 validator (Unicode table 3-7), written
 *                differently from src/json_scan.c on purpose (decode, then
 *                range-check the code point).
 * fz_reference   a verdict on one JSON text from cJSON, plus the checks cJSON
 *                does not do, so that the scanner can be compared with it in
 *                BOTH directions (see docs/fuzzing.md, "The oracle").
 * fz_check_scan  json_scan_object() on a buffer, compared with the reference:
 *                the verdict, the member list, every byte range.
 *
 * Header-only (static functions) so each target is one translation unit
 * plus the sources under test. */
#ifndef SMARTSHOP_FUZZ_COMMON_H
#define SMARTSHOP_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "json_scan.h"

#define FUZZ_ASSERT(cond, ...)                                                    \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "\n%s:%d: invariant broken: %s\n  ", __FILE__, __LINE__, \
                    #cond);                                                       \
            fprintf(stderr, __VA_ARGS__);                                         \
            fprintf(stderr, "\n");                                                \
            abort();                                                              \
        }                                                                         \
    } while (0)

/* ---- independent checks ------------------------------------------------ */

/* Valid UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF). */
static inline bool fz_utf8_ok(const unsigned char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) { need = 1; cp = c & 0x1F; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { need = 2; cp = c & 0x0F; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { need = 3; cp = c & 0x07; min = 0x10000; }
        else return false;
        if (n - i - 1 < need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += need + 1;
    }
    return true;
}

static inline bool fz_is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline bool fz_is_hex(unsigned char c)
{
    return fz_is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
static inline unsigned fz_hex_val(unsigned char c)
{
    return fz_is_digit(c) ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* RFC 8259 number grammar on exactly [p, p+n), as a little state machine. */
static inline bool fz_number_ok(const unsigned char *p, size_t n)
{
    enum { START, MINUS, ZERO, INT, DOT, FRAC, E, ESIGN, EXP } st = START;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        switch (st) {
        case START: if (c == '-') st = MINUS; else if (c == '0') st = ZERO;
                    else if (fz_is_digit(c)) st = INT; else return false; break;
        case MINUS: if (c == '0') st = ZERO; else if (fz_is_digit(c)) st = INT;
                    else return false; break;
        case ZERO:  if (c == '.') st = DOT; else if (c == 'e' || c == 'E') st = E;
                    else return false; break;
        case INT:   if (fz_is_digit(c)) st = INT; else if (c == '.') st = DOT;
                    else if (c == 'e' || c == 'E') st = E; else return false; break;
        case DOT:   if (fz_is_digit(c)) st = FRAC; else return false; break;
        case FRAC:  if (fz_is_digit(c)) st = FRAC; else if (c == 'e' || c == 'E') st = E;
                    else return false; break;
        case E:     if (c == '+' || c == '-') st = ESIGN; else if (fz_is_digit(c)) st = EXP;
                    else return false; break;
        case ESIGN: if (fz_is_digit(c)) st = EXP; else return false; break;
        case EXP:   if (fz_is_digit(c)) st = EXP; else return false; break;
        }
    }
    return st == ZERO || st == INT || st == FRAC || st == EXP;
}

/* ---- the reference verdict --------------------------------------------- */

/* What cJSON and the side checks say about one buffer. */
typedef struct {
    cJSON *root;          /* cJSON's tree of the normalised text, or NULL */
    bool utf8_ok;         /* the whole buffer is valid UTF-8 */
    bool no_ctl;          /* no byte < 0x20 in strings, none but \t \n \r outside */
    bool no_bom;          /* does not start with EF BB BF (cJSON skips one) */
    bool numbers_ok;      /* every number token is RFC 8259 */
    bool escapes_ok;      /* every \u in a string has four hex digits (cJSON
                             reads "\uFFF#" as U+0000: parse_hex4 returns 0) */
    int depth;            /* container nesting of the tree (top object = 1) */
    bool lone_surrogate;  /* a \u escape of a surrogate, not in a high+low pair */
} fz_reference_t;

/* A copy of the buffer for cJSON: NUL-terminated, and with every \u escape
 * of a UTF-16 surrogate (D800-DFFF) rewritten to \u0041.
 *
 * Why: RFC 8259's grammar allows any \uXXXX (section 8.2 only warns that
 * lone surrogates are unpredictable); json_scan follows the grammar and
 * accepts them, cJSON rejects a lone or mis-paired surrogate. The rewrite
 * changes four hex digits into four others inside what looks like a string
 * escape, so it can neither make invalid JSON valid nor valid invalid; it
 * only takes cJSON's one stricter rule out of the comparison. Whether a
 * surrogate escape was left unpaired is noted (ref->lone_surrogate).
 *
 * While at it, notes any \u escape without four hex digits (cJSON takes
 * them), and checks each number token (a maximal run of [-+.0-9eE]
 * starting with '-' or a digit, outside strings) against the RFC grammar:
 * cJSON hands numbers to strtod, which takes 01, 1., -01, 1.e5. */
static inline char *fz_normalise(const uint8_t *data, size_t size, fz_reference_t *ref)
{
    char *copy = malloc(size + 1);
    if (!copy)
        abort();
    memcpy(copy, data, size);
    copy[size] = '\0';
    bool in_string = false, pending_high = false;
    size_t high_end = 0;
    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)copy[i];
        /* cJSON takes raw control characters in strings, and any byte
         * <= 0x20 as whitespace */
        if (c < 0x20 && (in_string || (c != '\t' && c != '\n' && c != '\r')))
            ref->no_ctl = false;
        if (in_string) {
            /* a high surrogate escape not followed at once by a low one */
            if (pending_high && !(c == '\\' && i + 1 < size && copy[i + 1] == 'u')) {
                ref->lone_surrogate = true;
                pending_high = false;
            }
            if (c == '"') {
                in_string = false;
            } else if (c == '\\' && i + 1 < size) {
                if (copy[i + 1] == 'u' && i + 5 < size && fz_is_hex(copy[i + 2]) &&
                    fz_is_hex(copy[i + 3]) && fz_is_hex(copy[i + 4]) && fz_is_hex(copy[i + 5])) {
                    unsigned v = fz_hex_val(copy[i + 2]) << 12 | fz_hex_val(copy[i + 3]) << 8 |
                                 fz_hex_val(copy[i + 4]) << 4 | fz_hex_val(copy[i + 5]);
                    bool low = v >= 0xDC00 && v <= 0xDFFF;
                    if (pending_high && !(low && i == high_end))
                        ref->lone_surrogate = true;
                    if (low && !(pending_high && i == high_end))
                        ref->lone_surrogate = true;
                    pending_high = v >= 0xD800 && v <= 0xDBFF;
                    high_end = i + 6;
                    if (v >= 0xD800 && v <= 0xDFFF)
                        memcpy(copy + i + 2, "0041", 4);
                    i += 5;
                    continue;
                } else {
                    if (copy[i + 1] == 'u')
                        ref->escapes_ok = false;
                    i += 1;
                }
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '-' || fz_is_digit(c)) {
            size_t j = i;
            while (j < size && (fz_is_digit(data[j]) || data[j] == '-' || data[j] == '+' ||
                                data[j] == '.' || data[j] == 'e' || data[j] == 'E'))
                j++;
            if (!fz_number_ok(data + i, j - i))
                ref->numbers_ok = false;
            i = j - 1;
        }
    }
    return copy;
}

static inline int fz_depth(const cJSON *item)
{
    if (!cJSON_IsObject(item) && !cJSON_IsArray(item))
        return 0;
    int deepest = 0;
    for (const cJSON *c = item->child; c; c = c->next) {
        int d = fz_depth(c);
        if (d > deepest)
            deepest = d;
    }
    return deepest + 1;
}

static inline void fz_reference(const uint8_t *data, size_t size, fz_reference_t *ref)
{
    memset(ref, 0, sizeof *ref);
    ref->numbers_ok = true;
    ref->escapes_ok = true;
    ref->utf8_ok = fz_utf8_ok(data, size);
    ref->no_ctl = true;
    ref->no_bom = !(size >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF);
    char *copy = fz_normalise(data, size, ref);
    /* require_null_terminated: the whole buffer (but whitespace) is the value;
     * the length given includes the NUL. */
    ref->root = cJSON_ParseWithLengthOpts(copy, size + 1, NULL, 1);
    free(copy);
    ref->depth = ref->root ? fz_depth(ref->root) : 0;
}

/* The conditions under which "well-formed per RFC 8259 + E1" is exactly
 * "cJSON parses the normalised text": cJSON's laxities all excluded. */
static inline bool fz_reference_ok(const fz_reference_t *ref)
{
    return ref->root && ref->utf8_ok && ref->no_ctl && ref->no_bom && ref->numbers_ok &&
           ref->escapes_ok &&
           ref->depth <= JSON_SCAN_MAX_DEPTH;
}

static inline json_kind_t fz_kind_of(const cJSON *item)
{
    if (cJSON_IsString(item)) return JSON_STRING;
    if (cJSON_IsNumber(item)) return JSON_NUMBER;
    if (cJSON_IsObject(item)) return JSON_OBJECT;
    if (cJSON_IsArray(item)) return JSON_ARRAY;
    if (cJSON_IsTrue(item)) return JSON_TRUE;
    if (cJSON_IsFalse(item)) return JSON_FALSE;
    if (cJSON_IsNull(item)) return JSON_NULL;
    return JSON_ABSENT;
}

static inline bool fz_has_byte(const char *p, size_t n, char c)
{
    return n && memchr(p, c, n) != NULL;
}

/* ---- json_scan against the reference ----------------------------------- */

/* Scans data[0..size) and checks every claim json_scan.h makes; returns
 * the result. `ref` must come from fz_reference() on the same bytes. */
static inline json_scan_result_t fz_check_scan(const uint8_t *data, size_t size, const fz_reference_t *ref)
{
    const char *buf = (const char *)data;
    json_object_t obj;
    const char *why = (const char *)1;   /* must be overwritten */
    memset(&obj, 0xA5, sizeof obj);      /* garbage, as on a real stack */
    json_scan_result_t r = json_scan_object(buf, size, &obj, &why);

    FUZZ_ASSERT(r == JSON_SCAN_OK || r == JSON_SCAN_BAD_JSON || r == JSON_SCAN_NOT_OBJECT ||
                r == JSON_SCAN_TOO_MANY, "result %d", (int)r);
    FUZZ_ASSERT(why != (const char *)1, "why not set");
    FUZZ_ASSERT(r == JSON_SCAN_OK || why != NULL, "result %d without a why", (int)r);
    FUZZ_ASSERT(obj.count >= 0 && obj.count <= JSON_SCAN_MAX_MEMBERS, "count %d", obj.count);

    /* Both directions, on the normalised text; see fz_normalise(). */
    bool scan_ok = r != JSON_SCAN_BAD_JSON;
    bool ref_ok = fz_reference_ok(ref);
    FUZZ_ASSERT(!scan_ok || ref->root, "json_scan accepts (%d) what cJSON rejects", (int)r);
    FUZZ_ASSERT(!scan_ok || ref->utf8_ok, "json_scan accepts invalid UTF-8");
    FUZZ_ASSERT(!scan_ok || ref->no_ctl, "json_scan accepts a raw control character");
    FUZZ_ASSERT(!scan_ok || ref->no_bom, "json_scan accepts a byte order mark");
    FUZZ_ASSERT(!scan_ok || ref->numbers_ok, "json_scan accepts a number RFC 8259 does not");
    FUZZ_ASSERT(!scan_ok || ref->escapes_ok, "json_scan accepts a \\u escape without 4 hex digits");
    FUZZ_ASSERT(!scan_ok || ref->depth <= JSON_SCAN_MAX_DEPTH, "json_scan accepts depth %d",
                ref->depth);
    /* Lone surrogate escapes: RFC 8259's grammar allows them, E1 refuses
     * them (as I-JSON does): both directions, exactly. */
    FUZZ_ASSERT(!scan_ok || !ref->lone_surrogate, "json_scan accepts a lone surrogate escape");
    FUZZ_ASSERT(scan_ok || !ref_ok || ref->lone_surrogate,
                "json_scan rejects well-formed JSON (depth %d): %s", ref->depth, why ? why : "(null)");
    if (!scan_ok)
        return r;

    bool is_object = cJSON_IsObject(ref->root);
    FUZZ_ASSERT((r == JSON_SCAN_NOT_OBJECT) == !is_object, "NOT_OBJECT vs cJSON type %d",
                ref->root->type);
    if (!is_object)
        return r;
    int n = cJSON_GetArraySize(ref->root);
    FUZZ_ASSERT((r == JSON_SCAN_TOO_MANY) == (n > JSON_SCAN_MAX_MEMBERS), "TOO_MANY with %d", n);
    FUZZ_ASSERT(obj.count == (n > JSON_SCAN_MAX_MEMBERS ? JSON_SCAN_MAX_MEMBERS : n),
                "count %d for %d members", obj.count, n);

    /* Each member: ranges inside the buffer, bracketed by quotes for
     * strings, escape flags true, and the same key, kind and (unescaped)
     * text as cJSON's. */
    const cJSON *child = ref->root->child;
    for (int i = 0; i < obj.count; i++, child = child->next) {
        const json_member_t *m = &obj.members[i];
        FUZZ_ASSERT(child, "member %d has no cJSON counterpart", i);
        FUZZ_ASSERT((size_t)m->key_off >= 1 && (size_t)m->key_off + m->key_len < size,
                    "member %d key range %u+%u of %zu", i, m->key_off, m->key_len, size);
        FUZZ_ASSERT(buf[m->key_off - 1] == '"' && buf[m->key_off + m->key_len] == '"',
                    "member %d key not between quotes", i);
        FUZZ_ASSERT(m->key_escaped == fz_has_byte(buf + m->key_off, m->key_len, '\\'),
                    "member %d key_escaped %d", i, m->key_escaped);
        FUZZ_ASSERT((size_t)m->val_off + m->val_len <= size, "member %d value range %u+%u of %zu",
                    i, m->val_off, m->val_len, size);
        FUZZ_ASSERT(m->kind == fz_kind_of(child), "member %d kind %d, cJSON type %d", i,
                    (int)m->kind, child->type);
        if (!m->key_escaped)
            FUZZ_ASSERT(strlen(child->string) == m->key_len &&
                            memcmp(child->string, buf + m->key_off, m->key_len) == 0,
                        "member %d key differs from cJSON's", i);
        if (m->kind == JSON_STRING) {
            FUZZ_ASSERT(m->val_off >= 1 && (size_t)m->val_off + m->val_len < size &&
                            buf[m->val_off - 1] == '"' && buf[m->val_off + m->val_len] == '"',
                        "member %d string value not between quotes", i);
            FUZZ_ASSERT(m->val_escaped == fz_has_byte(buf + m->val_off, m->val_len, '\\'),
                        "member %d val_escaped %d", i, m->val_escaped);
            if (!m->val_escaped)
                FUZZ_ASSERT(strlen(child->valuestring) == m->val_len &&
                                memcmp(child->valuestring, buf + m->val_off, m->val_len) == 0,
                            "member %d string differs from cJSON's", i);
        } else {
            FUZZ_ASSERT(!m->val_escaped, "member %d: val_escaped on a non-string", i);
            FUZZ_ASSERT(m->val_len > 0, "member %d: empty non-string value", i);
            /* the recorded text is itself exactly one JSON value */
            json_object_t inner;
            json_scan_result_t ir = json_scan_object(buf + m->val_off, m->val_len, &inner, NULL);
            FUZZ_ASSERT(ir != JSON_SCAN_BAD_JSON && (ir == JSON_SCAN_NOT_OBJECT) ==
                            (m->kind != JSON_OBJECT),
                        "member %d value text rescans as %d", i, (int)ir);
        }
    }
    return r;
}

#endif
