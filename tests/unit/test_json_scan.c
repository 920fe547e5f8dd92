/* json_scan: RFC 8259 grammar, UTF-8 validity, depth, member ranges. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "json_scan.h"

static json_scan_result_t scan(const char *text)
{
    json_object_t obj;
    return json_scan_object(text, strlen(text), &obj, NULL);
}

static void accepts_well_formed_objects(void)
{
    CHECK_EQ_INT(scan("{}"), JSON_SCAN_OK);
    CHECK_EQ_INT(scan(" \t\r\n{ } \n"), JSON_SCAN_OK);
    CHECK_EQ_INT(scan("{\"a\":1,\"b\":-0.5e+10,\"c\":[true,false,null],\"d\":{\"e\":\"\\u00e9\\n\"}}"), JSON_SCAN_OK);
    CHECK_EQ_INT(scan("{\"s\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}"), JSON_SCAN_OK);
    CHECK_EQ_INT(scan("{\"s\":\"\\ud83d\\ude00\"}"), JSON_SCAN_OK);   /* a surrogate pair */
    CHECK_EQ_INT(scan("{\"n\":0}"), JSON_SCAN_OK);
    CHECK_EQ_INT(scan("{\"n\":[]}"), JSON_SCAN_OK);
}

static void rejects_malformed_json(void)
{
    const char *bad[] = {
        "", " ", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{,}", "{\"a\":1 \"b\":2}",
        "{\"a\":01}", "{\"a\":1.}", "{\"a\":.5}", "{\"a\":-}", "{\"a\":1e}", "{\"a\":+1}",
        "{\"a\":tru}", "{\"a\":nul}", "{\"a\":True}", "{\"a\":\"x}", "{\"a\":\"\\x\"}",
        "{\"a\":\"\\u12g4\"}", "{\"a\":\"\t\"}", "{\"a\":[1,2}", "{\"a\":[1,]}", "{a:1}",
        "{\"a\":1}x", "{\"a\":1}{}", "{'a':1}", "{\"a\":NaN}", "{\"a\":Infinity}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        json_scan_result_t r = scan(bad[i]);
        if (r != JSON_SCAN_BAD_JSON)
            fprintf(stderr, "accepted: %s\n", bad[i]);
        CHECK_EQ_INT(r, JSON_SCAN_BAD_JSON);
    }
}

static void rejects_invalid_utf8(void)
{
    const char *bad[] = {
        "{\"a\":\"\x80\"}",             /* lone continuation byte */
        "{\"a\":\"\xc0\xaf\"}",         /* overlong '/' */
        "{\"a\":\"\xe0\x80\xaf\"}",     /* overlong 3-byte */
        "{\"a\":\"\xed\xa0\x80\"}",     /* UTF-16 surrogate U+D800 */
        "{\"a\":\"\xf4\x90\x80\x80\"}", /* above U+10FFFF */
        "{\"a\":\"\xc3\"}",             /* truncated */
        "{\"a\":\"\xff\"}",
        "{\"\xc3\x28\":1}",             /* bad UTF-8 in a key */
        "{\"a\":\"\\ud800\"}",           /* lone high surrogate escape */
        "{\"a\":\"\\udc00\"}",           /* lone low surrogate escape */
        "{\"a\":\"\\ud800\\u0041\"}",    /* high surrogate, then no low one */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_EQ_INT(scan(bad[i]), JSON_SCAN_BAD_JSON);
}

static void rejects_nul_bytes(void)
{
    const char text[] = "{\"a\":\"x\0y\"}";
    json_object_t obj;
    CHECK_EQ_INT(json_scan_object(text, sizeof text - 1, &obj, NULL), JSON_SCAN_BAD_JSON);
}

static void tells_non_objects_apart(void)
{
    CHECK_EQ_INT(scan("[1,2]"), JSON_SCAN_NOT_OBJECT);
    CHECK_EQ_INT(scan("\"text\""), JSON_SCAN_NOT_OBJECT);
    CHECK_EQ_INT(scan("42"), JSON_SCAN_NOT_OBJECT);
    CHECK_EQ_INT(scan("[1,2"), JSON_SCAN_BAD_JSON);
}

static void limits_depth(void)
{
    char deep[400];
    int n = 0;
    n += sprintf(deep + n, "{\"a\":");
    for (int i = 0; i < 63; i++)
        deep[n++] = '[';
    for (int i = 0; i < 63; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    CHECK_EQ_INT(scan(deep), JSON_SCAN_OK);          /* depth 64 */
    n = sprintf(deep, "{\"a\":");
    for (int i = 0; i < 64; i++)
        deep[n++] = '[';
    for (int i = 0; i < 64; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    deep[n] = '\0';
    const char *why = NULL;
    json_object_t obj;
    CHECK_EQ_INT(json_scan_object(deep, strlen(deep), &obj, &why), JSON_SCAN_BAD_JSON);
    CHECK(why && strstr(why, "deep"));
}

static void records_member_ranges(void)
{
    const char *text = "{ \"type\" : \"request\", \"payload\": {\"k\": [1, 2]}, \"esc\":\"a\\\"b\", \"n\":12 }";
    json_object_t obj;
    CHECK_EQ_INT(json_scan_object(text, strlen(text), &obj, NULL), JSON_SCAN_OK);
    CHECK_EQ_INT(obj.count, 4);
    CHECK(obj.members[0].kind == JSON_STRING);
    CHECK(memcmp(text + obj.members[0].key_off, "type", 4) == 0 && obj.members[0].key_len == 4);
    CHECK(memcmp(text + obj.members[0].val_off, "request", 7) == 0 && obj.members[0].val_len == 7);
    CHECK(obj.members[1].kind == JSON_OBJECT);
    CHECK(obj.members[1].val_len == strlen("{\"k\": [1, 2]}"));
    CHECK(memcmp(text + obj.members[1].val_off, "{\"k\": [1, 2]}", obj.members[1].val_len) == 0);
    CHECK(obj.members[2].val_escaped && !obj.members[2].key_escaped);
    CHECK(obj.members[3].kind == JSON_NUMBER && obj.members[3].val_len == 2);
}

static void counts_too_many_members(void)
{
    char text[2000];
    int n = sprintf(text, "{");
    for (int i = 0; i < JSON_SCAN_MAX_MEMBERS + 1; i++)
        n += sprintf(text + n, "%s\"k%d\":%d", i ? "," : "", i, i);
    sprintf(text + n, "}");
    CHECK_EQ_INT(scan(text), JSON_SCAN_TOO_MANY);
}

/* The scanner reads strings a block (8 or 16 bytes) at a time: the tests
 * below put every kind of byte at every position of strings of many
 * lengths, and end the input at every distance from them. Each text is
 * scanned from a heap copy of exactly its length, so that under ASan a
 * read past the end stops the test. */
static json_scan_result_t scan_exact(const char *text, size_t len, json_object_t *obj,
                                     const char **why)
{
    char *copy = malloc(len ? len : 1);
    memcpy(copy, text, len);
    json_scan_result_t r = json_scan_object(copy, len, obj, why);
    free(copy);
    return r;
}

static const char *why_of(const char *text, size_t len)
{
    json_object_t obj;
    const char *why = NULL;
    scan_exact(text, len, &obj, &why);
    return why ? why : "";
}

/* A string body of n plain bytes (no escape letters after a backslash). */
static void plain_body(char *body, size_t n)
{
    static const char plain[] = "xyz XYZ-019_.:~";
    for (size_t i = 0; i < n; i++)
        body[i] = plain[i % (sizeof plain - 1)];
}

/* {"k":"<body>"} then pad spaces; checks the verdict, the reason and, when
 * accepted, the value's range and escaped flag. */
static void check_value(const char *body, size_t n, size_t pad, json_scan_result_t want,
                        const char *want_why, bool want_escaped)
{
    char text[256];
    size_t len = 0;
    memcpy(text, "{\"k\":\"", 6), len = 6;
    memcpy(text + len, body, n), len += n;
    memcpy(text + len, "\"}", 2), len += 2;
    memset(text + len, ' ', pad), len += pad;
    json_object_t obj;
    const char *why = NULL;
    json_scan_result_t r = scan_exact(text, len, &obj, &why);
    CHECK_EQ_INT(r, want);
    if (want_why)
        CHECK(why && strcmp(why, want_why) == 0);
    if (r != want || (want_why && (!why || strcmp(why, want_why) != 0)))
        fprintf(stderr, "  value of %zu bytes + %zu pad: got %d (%s)\n", n, pad, (int)r, why ? why : "-");
    if (want == JSON_SCAN_OK && r == JSON_SCAN_OK) {
        CHECK_EQ_INT(obj.count, 1);
        CHECK(obj.members[0].kind == JSON_STRING);
        CHECK_EQ_INT(obj.members[0].val_off, 6);
        CHECK_EQ_INT(obj.members[0].val_len, n);
        CHECK(obj.members[0].val_escaped == want_escaped && !obj.members[0].key_escaped);
    }
}

/* The same body as a key: {"<body>":1}. */
static void check_key(const char *body, size_t n, json_scan_result_t want, const char *want_why,
                      bool want_escaped)
{
    char text[256];
    size_t len = 0;
    text[len++] = '{';
    text[len++] = '"';
    memcpy(text + len, body, n), len += n;
    memcpy(text + len, "\":1}", 4), len += 4;
    json_object_t obj;
    const char *why = NULL;
    CHECK_EQ_INT(scan_exact(text, len, &obj, &why), want);
    if (want_why)
        CHECK(why && strcmp(why, want_why) == 0);
    if (want == JSON_SCAN_OK) {
        CHECK(obj.members[0].key_off == 2 && obj.members[0].key_len == n);
        CHECK(obj.members[0].key_escaped == want_escaped);
        CHECK(obj.members[0].kind == JSON_NUMBER && obj.members[0].val_len == 1);
    }
}

static void finds_a_special_byte_at_every_position(void)
{
    static const struct {
        const char *bytes;
        size_t n;
        json_scan_result_t want;
        const char *why;   /* NULL: accepted, or the reason depends on the position */
        bool escaped;
    } cases[] = {
        {"\x7f", 1, JSON_SCAN_OK, NULL, false},              /* DEL is plain */
        {" ", 1, JSON_SCAN_OK, NULL, false},
        {"\xc3\xa9", 2, JSON_SCAN_OK, NULL, false},
        {"\xe2\x82\xac", 3, JSON_SCAN_OK, NULL, false},
        {"\xf0\x9f\x98\x80", 4, JSON_SCAN_OK, NULL, false},
        {"\\n", 2, JSON_SCAN_OK, NULL, true},
        {"\\\"", 2, JSON_SCAN_OK, NULL, true},
        {"\\\\", 2, JSON_SCAN_OK, NULL, true},
        {"\\u00e9", 6, JSON_SCAN_OK, NULL, true},
        {"\\ud83d\\ude00", 12, JSON_SCAN_OK, NULL, true},
        {"\x01", 1, JSON_SCAN_BAD_JSON, "control character in string", false},
        {"\x1f", 1, JSON_SCAN_BAD_JSON, "control character in string", false},
        {"\0", 1, JSON_SCAN_BAD_JSON, "control character in string", false},
        {"\x80", 1, JSON_SCAN_BAD_JSON, "invalid UTF-8", false},
        {"\xff", 1, JSON_SCAN_BAD_JSON, "invalid UTF-8", false},
        {"\\x", 2, JSON_SCAN_BAD_JSON, "bad escape in string", false},
        {"\\u00g9", 6, JSON_SCAN_BAD_JSON, "bad \\u escape", false},
        {"\\udc00", 6, JSON_SCAN_BAD_JSON, "unpaired surrogate escape", false},
        {"\"", 1, JSON_SCAN_BAD_JSON, NULL, false},          /* ends the string early */
    };
    char body[64];
    for (size_t len = 0; len <= 40; len++) {
        plain_body(body, len);
        for (size_t pad = 0; pad <= 17; pad++)
            check_value(body, len, pad, JSON_SCAN_OK, NULL, false);
        check_key(body, len, JSON_SCAN_OK, NULL, false);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            for (size_t at = 0; at + cases[c].n <= len; at++) {
                plain_body(body, len);
                memcpy(body + at, cases[c].bytes, cases[c].n);
                for (size_t pad = 0; pad <= 17; pad++)
                    check_value(body, len, pad, cases[c].want, cases[c].why, cases[c].escaped);
                check_key(body, len, cases[c].want, cases[c].why, cases[c].escaped);
            }
        }
    }
}

/* A string that is the whole input, or runs into its end, at every length:
 * whatever follows, the scanner must stop at the end. */
static void stops_at_the_end_of_the_input(void)
{
    static const struct {
        const char *tail;   /* after the plain body */
        size_t n;
        json_scan_result_t want;
        const char *why;
    } cases[] = {
        {"\"", 1, JSON_SCAN_NOT_OBJECT, "not a JSON object"},
        {"", 0, JSON_SCAN_BAD_JSON, "unterminated string"},
        {"\\", 1, JSON_SCAN_BAD_JSON, "unterminated string"},
        {"\\\"", 2, JSON_SCAN_BAD_JSON, "unterminated string"},
        {"\\n", 2, JSON_SCAN_BAD_JSON, "unterminated string"},
        {"\\u00", 4, JSON_SCAN_BAD_JSON, "bad \\u escape"},
        {"\\ud83d", 6, JSON_SCAN_BAD_JSON, "unpaired surrogate escape"},
        {"\\ud83d\\ude0", 11, JSON_SCAN_BAD_JSON, "unpaired surrogate escape"},
        {"\xc3", 1, JSON_SCAN_BAD_JSON, "invalid UTF-8"},
        {"\xe2\x82", 2, JSON_SCAN_BAD_JSON, "invalid UTF-8"},
        {"\xf0\x9f\x98", 3, JSON_SCAN_BAD_JSON, "invalid UTF-8"},
        {"\xc3\xa9", 2, JSON_SCAN_BAD_JSON, "unterminated string"},
        {"\x7f", 1, JSON_SCAN_BAD_JSON, "unterminated string"},
    };
    char text[128];
    for (size_t len = 0; len <= 40; len++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            /* as the whole text: "<body><tail> */
            text[0] = '"';
            plain_body(text + 1, len);
            memcpy(text + 1 + len, cases[c].tail, cases[c].n);
            size_t n = 1 + len + cases[c].n;
            CHECK_EQ_INT(scan_exact(text, n, &(json_object_t){0}, NULL), cases[c].want);
            CHECK(strcmp(why_of(text, n), cases[c].why) == 0);
            /* as a value: {"k":"<body><tail> (never closed) */
            memcpy(text, "{\"k\":\"", 6);
            plain_body(text + 6, len);
            memcpy(text + 6 + len, cases[c].tail, cases[c].n);
            n = 6 + len + cases[c].n;
            const char *why = why_of(text, n);
            CHECK(strcmp(why, cases[c].want == JSON_SCAN_NOT_OBJECT ? "unterminated object" : cases[c].why) == 0);
        }
    }
}

static void rejects_invalid_utf8_at_every_position(void)
{
    static const struct {
        const char *bytes;
        size_t n;
        bool valid;
    } seqs[] = {
        {"\x80", 1, false}, {"\xbf", 1, false}, {"\xc0\xaf", 2, false}, {"\xc1\xbf", 2, false},
        {"\xc3\x28", 2, false}, {"\xe0\x80\xaf", 3, false}, {"\xe0\x9f\xbf", 3, false},
        {"\xed\xa0\x80", 3, false}, {"\xe2\x82\x28", 3, false}, {"\xf0\x8f\xbf\xbf", 4, false},
        {"\xf4\x90\x80\x80", 4, false}, {"\xf5\x80\x80\x80", 4, false}, {"\xf8\x88\x80\x80", 4, false},
        {"\xfe", 1, false}, {"\xff", 1, false}, {"\xc3\xa9\x80", 3, false},
        {"\xc2\x80", 2, true}, {"\xdf\xbf", 2, true}, {"\xe0\xa0\x80", 3, true},
        {"\xed\x9f\xbf", 3, true}, {"\xee\x80\x80", 3, true}, {"\xef\xbf\xbf", 3, true},
        {"\xf0\x90\x80\x80", 4, true}, {"\xf4\x8f\xbf\xbf", 4, true},
        {"\xe6\x97\xa5\xe6\x9c\xac", 6, true},   /* a run: two characters */
    };
    enum { LEN = 100 };
    char body[LEN];
    for (size_t k = 0; k < sizeof seqs / sizeof seqs[0]; k++) {
        for (size_t at = 0; at + seqs[k].n <= LEN; at++) {
            plain_body(body, LEN);
            memcpy(body + at, seqs[k].bytes, seqs[k].n);
            check_value(body, LEN, at % 3, seqs[k].valid ? JSON_SCAN_OK : JSON_SCAN_BAD_JSON,
                        seqs[k].valid ? NULL : "invalid UTF-8", false);
        }
    }
}

static void rejects_every_control_character(void)
{
    char body[40];
    for (int c = 0; c < 0x20; c++) {
        for (size_t at = 0; at < sizeof body; at++) {
            plain_body(body, sizeof body);
            body[at] = (char)c;
            check_value(body, sizeof body, 0, JSON_SCAN_BAD_JSON, "control character in string", false);
            check_key(body, sizeof body, JSON_SCAN_BAD_JSON, "control character in string", false);
        }
    }
}

/* Escapes straddling every block boundary of a 48-byte value. */
static void reads_escapes_across_block_boundaries(void)
{
    static const char *good[] = {"\\n", "\\/", "\\\"", "\\\\", "\\u00e9", "\\uFFFF",
                                 "\\ud83d\\ude00", "\\u00e9\\n\\t\\\"\\\\"};
    static const struct {
        const char *esc;
        const char *why;
    } bad[] = {
        {"\\x", "bad escape in string"}, {"\\u00g9", "bad \\u escape"}, {"\\U00e9", "bad escape in string"},
        {"\\ud83d\\u0041", "unpaired surrogate escape"}, {"\\ud83dx", "unpaired surrogate escape"},
        {"\\udfff", "unpaired surrogate escape"},
    };
    enum { LEN = 48 };
    char body[LEN];
    for (size_t g = 0; g < sizeof good / sizeof good[0]; g++) {
        size_t n = strlen(good[g]);
        for (size_t at = 0; at + n <= LEN; at++) {
            plain_body(body, LEN);
            memcpy(body + at, good[g], n);
            check_value(body, LEN, at % 2, JSON_SCAN_OK, NULL, true);
            check_key(body, LEN, JSON_SCAN_OK, NULL, true);
        }
    }
    for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
        size_t n = strlen(bad[b].esc);
        for (size_t at = 0; at + n <= LEN; at++) {
            plain_body(body, LEN);
            memcpy(body + at, bad[b].esc, n);
            check_value(body, LEN, 0, JSON_SCAN_BAD_JSON, bad[b].why, false);
        }
    }
}

/* The reasons are part of the error replies: each one where it belongs. */
static void explains_each_error(void)
{
    static const struct {
        const char *text;
        const char *why;
    } cases[] = {
        {"", "expected a value"},
        {"   ", "expected a value"},
        {"{", "expected a member name"},
        {"{ ", "expected a member name"},
        {"{1:2}", "expected a member name"},
        {"{\"a\":1,}", "expected a member name"},
        {"{\"a\"", "expected ':'"},
        {"{\"a\" 1}", "expected ':'"},
        {"{\"a\":", "expected a value"},
        {"{\"a\": }", "unexpected character"},
        {"{\"a\":x}", "unexpected character"},
        {"{\"a\":1", "unterminated object"},
        {"{\"a\":1 ", "unterminated object"},
        {"{\"a\":1 x", "expected ',' or '}'"},
        {"{\"a\":1]", "expected ',' or '}'"},
        {"{\"a\":[1", "unterminated object or array"},
        {"{\"a\":[1 x", "expected ',' or a closing bracket"},
        {"{\"a\":[1}", "expected ',' or a closing bracket"},
        {"{\"a\":[", "expected a value"},
        {"{\"a\":{", "expected a member name"},
        {"{\"a\":{\"b\"", "expected ':'"},
        {"{\"a\":{\"b\":1,", "expected a member name"},
        {"{\"a\":{\"b\":1", "unterminated object or array"},
        {"{\"a\":tru}", "bad literal"},
        {"{\"a\":nul", "bad literal"},
        {"{\"a\":-}", "bad number"},
        {"{\"a\":1.}", "bad number"},
        {"{\"a\":1e+}", "bad number"},
        {"{\"a\":-", "bad number"},
        {"{} x", "trailing data after the JSON value"},
        {"{}}", "trailing data after the JSON value"},
        {"[1] 2", "trailing data after the JSON value"},
        {"[1]", "not a JSON object"},
        {" \"s\" ", "not a JSON object"},
        {"-0.5e-3", "not a JSON object"},
        {"nul", "bad literal"},
        {"\"abc", "unterminated string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *why = why_of(cases[i].text, strlen(cases[i].text));
        if (strcmp(why, cases[i].why) != 0)
            fprintf(stderr, "  %s: '%s', expected '%s'\n", cases[i].text, why, cases[i].why);
        CHECK(strcmp(why, cases[i].why) == 0);
    }
    json_object_t obj;
    const char *why = "unset";
    CHECK_EQ_INT(scan_exact("{\"a\":1}", 7, &obj, &why), JSON_SCAN_OK);
    CHECK(why == NULL);
}

/* Whitespace, in all four kinds, between every two tokens. */
static void skips_whitespace_between_all_tokens(void)
{
    static const char *tokens[] = {"{", "\"a\"", ":", "\"b\"", ",", "\"c\"", ":", "[", "1", ",",
                                   "{", "\"d\"", ":", "null", "}", ",", "true", "]", ",", "\"e\"",
                                   ":", "-2.5e3", "}"};
    static const char *spaces[] = {"", " ", "\t", "\n", "\r", " \r\n\t "};
    for (size_t w = 0; w < sizeof spaces / sizeof spaces[0]; w++) {
        char text[256];
        size_t len = 0;
        for (size_t t = 0; t < sizeof tokens / sizeof tokens[0]; t++) {
            len += (size_t)sprintf(text + len, "%s%s", spaces[w], tokens[t]);
        }
        len += (size_t)sprintf(text + len, "%s", spaces[w]);
        json_object_t obj;
        CHECK_EQ_INT(scan_exact(text, len, &obj, NULL), JSON_SCAN_OK);
        CHECK_EQ_INT(obj.count, 3);
        CHECK(obj.members[0].key_len == 1 && text[obj.members[0].key_off] == 'a');
        CHECK(obj.members[0].val_len == 1 && text[obj.members[0].val_off] == 'b');
        CHECK(obj.members[1].kind == JSON_ARRAY && text[obj.members[1].val_off] == '[' &&
              text[obj.members[1].val_off + obj.members[1].val_len - 1] == ']');
        CHECK(obj.members[2].kind == JSON_NUMBER && obj.members[2].val_len == 6 &&
              memcmp(text + obj.members[2].val_off, "-2.5e3", 6) == 0);
    }
}

/* Past the limit members are counted, not kept: the first 64 stay right. */
static void keeps_the_first_members_when_too_many(void)
{
    char text[2000];
    int n = sprintf(text, "{");
    for (int i = 0; i < JSON_SCAN_MAX_MEMBERS + 3; i++)
        n += sprintf(text + n, "%s\"k%d\":\"v%d\"", i ? "," : "", i, i);
    n += sprintf(text + n, "}");
    json_object_t obj;
    CHECK_EQ_INT(scan_exact(text, (size_t)n, &obj, NULL), JSON_SCAN_TOO_MANY);
    CHECK_EQ_INT(obj.count, JSON_SCAN_MAX_MEMBERS);
    const json_member_t *last = &obj.members[JSON_SCAN_MAX_MEMBERS - 1];
    CHECK(last->key_len == 3 && memcmp(text + last->key_off, "k63", 3) == 0);
    CHECK(last->val_len == 3 && memcmp(text + last->val_off, "v63", 3) == 0);
    /* a malformed member past the limit still makes it bad JSON */
    text[n - 2] = '\x01';
    CHECK_EQ_INT(scan_exact(text, (size_t)n, &obj, NULL), JSON_SCAN_BAD_JSON);
}

/* A payload checked on its own is held to the depth it has inside a
 * message: what json_scan_member_value() accepts, an envelope carrying it
 * as a member's value is accepted with, and the other way round. */
static void checks_a_member_value_at_its_depth(void)
{
    for (int depth = 60; depth <= 66; depth++) {
        char value[200], message[300];
        int n = 0;
        for (int i = 0; i < depth; i++)
            value[n++] = '[';
        for (int i = 0; i < depth; i++)
            value[n++] = ']';
        value[n] = '\0';
        snprintf(message, sizeof message, "{\"msg_id\":\"m\",\"payload\":%s}", value);
        json_object_t obj;
        bool in_message = json_scan_object(message, strlen(message), &obj, NULL) == JSON_SCAN_OK;
        const char *why = NULL;
        CHECK_EQ_INT(json_scan_member_value(value, (size_t)n, &why), in_message);
        CHECK(in_message || (why && strcmp(why, "nesting too deep") == 0));
    }
    const char *why = NULL;
    const char *spaced = " {\"a\":[1,\"\xc3\xa9\"]} ";
    CHECK(json_scan_member_value(spaced, strlen(spaced), &why) && why == NULL);
    CHECK(json_scan_member_value("\"text\"", 6, &why));
    CHECK(!json_scan_member_value("\"\xff\"", 3, &why) && why != NULL);
    CHECK(!json_scan_member_value("1 2", 3, &why) && strcmp(why, "trailing data after the JSON value") == 0);
    CHECK(!json_scan_member_value("", 0, &why) && strcmp(why, "expected a value") == 0);
}

int main(void)
{
    checks_a_member_value_at_its_depth();
    accepts_well_formed_objects();
    rejects_malformed_json();
    rejects_invalid_utf8();
    rejects_nul_bytes();
    tells_non_objects_apart();
    limits_depth();
    records_member_ranges();
    counts_too_many_members();
    finds_a_special_byte_at_every_position();
    stops_at_the_end_of_the_input();
    rejects_invalid_utf8_at_every_position();
    rejects_every_control_character();
    reads_escapes_across_block_boundaries();
    explains_each_error();
    skips_whitespace_between_all_tokens();
    keeps_the_first_members_when_too_many();
    return check_done("json_scan");
}
