/* json_scan: RFC 8259 grammar, UTF-8 validity, depth, member ranges. */
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

int main(void)
{
    accepts_well_formed_objects();
    rejects_malformed_json();
    rejects_invalid_utf8();
    rejects_nul_bytes();
    tells_non_objects_apart();
    limits_depth();
    records_member_ranges();
    counts_too_many_members();
    return check_done("json_scan");
}
