/* envelope: required fields, JSON types, names, escapes, duplicates. */
#include <string.h>

#include "check.h"
#include "envelope.h"
#include "names.h"

static bus_err_t parse(const char *text, envelope_t *env)
{
    const char *why;
    return envelope_parse(env, text, strlen(text), &why);
}

static bus_err_t code_of(const char *text)
{
    envelope_t env;
    return parse(text, &env);
}

#define BASE "\"msg_id\":\"m1\",\"src\":\"svc-a\""

static void reads_the_seed_envelope(void)
{
    envelope_t env;
    const char *text = "{\"msg_id\":\"uuid-1\",\"type\":\"request\",\"src\":\"service-a\","
                       "\"dst\":\"service-b\",\"action\":\"get_info\",\"payload\":{\"key\":\"value\"},"
                       "\"correlation_id\":null,\"timestamp\":\"2026-01-01T00:00:00Z\"}";
    CHECK_EQ_INT(parse(text, &env), ERR_NONE);
    CHECK_EQ_INT(env.type, MT_REQUEST);
    CHECK(env_equals(&env.f[EF_DST], "service-b"));
    CHECK(env_equals(&env.f[EF_SRC], "service-a"));
    CHECK(env.f[EF_PAYLOAD].kind == JSON_OBJECT);
    CHECK(env.msg_id_ok);
}

static void requires_fields_per_type(void)
{
    CHECK_EQ_INT(code_of("{\"type\":\"register\",\"msg_id\":\"m1\",\"src\":\"a\"}"), ERR_NONE);
    CHECK_EQ_INT(code_of("{\"type\":\"register\",\"src\":\"a\"}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{\"type\":\"register\",\"msg_id\":\"m1\"}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"request\",\"dst\":\"b\"}"), ERR_BAD_ENVELOPE);     /* no action */
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"request\",\"action\":\"x\"}"), ERR_BAD_ENVELOPE);  /* no dst */
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"response\",\"dst\":\"b\"}"), ERR_BAD_ENVELOPE);    /* no correlation */
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"response\",\"dst\":\"b\",\"correlation_id\":\"m0\"}"), ERR_NONE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"event\",\"dst\":\"broadcast\"}"), ERR_NONE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"gossip\",\"dst\":\"b\"}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("[1]"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{\"msg_id\":\"m1\""), ERR_BAD_JSON);
}

static void checks_json_types(void)
{
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"request\",\"dst\":\"b\",\"action\":7}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{\"msg_id\":5,\"src\":\"a\",\"type\":\"register\"}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"event\",\"dst\":[\"b\"]}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"event\",\"dst\":\"b\",\"timestamp\":1}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"event\",\"dst\":\"b\",\"correlation_id\":{}}"), ERR_BAD_ENVELOPE);
}

static void checks_ttl_and_version(void)
{
    envelope_t env;
    CHECK_EQ_INT(parse("{" BASE ",\"type\":\"request\",\"dst\":\"b\",\"action\":\"x\",\"ttl_ms\":250}", &env), ERR_NONE);
    CHECK_EQ_INT(env.ttl_ms, 250);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"request\",\"dst\":\"b\",\"action\":\"x\",\"ttl_ms\":0}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"request\",\"dst\":\"b\",\"action\":\"x\",\"ttl_ms\":300001}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"request\",\"dst\":\"b\",\"action\":\"x\",\"ttl_ms\":1.5}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"request\",\"dst\":\"b\",\"action\":\"x\",\"ttl_ms\":\"9\"}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"register\",\"v\":1}"), ERR_NONE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"register\",\"v\":2}"), ERR_UNSUPPORTED_VERSION);
}

static void checks_names(void)
{
    CHECK_EQ_INT(code_of("{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"ok.name_1:x-y\"}"), ERR_NONE);
    CHECK_EQ_INT(code_of("{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"\"}"), ERR_BAD_NAME);
    CHECK_EQ_INT(code_of("{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"-lead\"}"), ERR_BAD_NAME);
    CHECK_EQ_INT(code_of("{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"sp ace\"}"), ERR_BAD_NAME);
    CHECK_EQ_INT(code_of("{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"caf\xc3\xa9\"}"), ERR_BAD_NAME);
    CHECK_EQ_INT(code_of("{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"a\\u0000b\"}"), ERR_BAD_NAME);
    CHECK_EQ_INT(code_of("{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"\\u0062roker\"}"), ERR_BAD_NAME);
    /* a reserved src is well-formed; the router refuses it from peers */
    CHECK_EQ_INT(code_of("{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"broker\"}"), ERR_NONE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"event\",\"dst\":\"smartshop.x\"}"), ERR_RESERVED_NAME);
    char long_name[100];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';
    char text[300];
    snprintf(text, sizeof text, "{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"%s\"}", long_name);
    CHECK_EQ_INT(code_of(text), ERR_BAD_NAME);
    long_name[64] = '\0';
    snprintf(text, sizeof text, "{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"%s\"}", long_name);
    CHECK_EQ_INT(code_of(text), ERR_NONE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"request\",\"dst\":\"broker\",\"action\":\"ping\"}"), ERR_NONE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"request\",\"dst\":\"broker.x\",\"action\":\"ping\"}"), ERR_RESERVED_NAME);
}

static void refuses_duplicate_and_escaped_keys(void)
{
    envelope_t env;
    CHECK_EQ_INT(parse("{" BASE ",\"type\":\"register\",\"src\":\"b\"}", &env), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"register\",\"\\u0073rc\":\"b\"}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{" BASE ",\"type\":\"register\",\"x\":1,\"x\":2}"), ERR_BAD_ENVELOPE);
    /* a duplicated msg_id leaves nothing to correlate with */
    CHECK_EQ_INT(parse("{\"msg_id\":\"a\",\"msg_id\":\"b\",\"type\":\"register\",\"src\":\"s\"}", &env), ERR_BAD_ENVELOPE);
    CHECK(!env.msg_id_ok);
}

static void checks_ids(void)
{
    envelope_t env;
    CHECK_EQ_INT(parse("{\"msg_id\":\"has space\",\"type\":\"register\",\"src\":\"a\"}", &env), ERR_BAD_ENVELOPE);
    CHECK(!env.msg_id_ok);
    CHECK_EQ_INT(code_of("{\"msg_id\":\"\",\"type\":\"register\",\"src\":\"a\"}"), ERR_BAD_ENVELOPE);
    CHECK_EQ_INT(code_of("{\"msg_id\":\"a\\\"b\",\"type\":\"register\",\"src\":\"a\"}"), ERR_BAD_ENVELOPE);
    char text[400], id[140];
    memset(id, 'x', 129);
    id[129] = '\0';
    snprintf(text, sizeof text, "{\"msg_id\":\"%s\",\"type\":\"register\",\"src\":\"a\"}", id);
    CHECK_EQ_INT(code_of(text), ERR_BAD_ENVELOPE);
}

/* Every length an id or a name may have, with one byte it may not hold at
 * every position: the checks go 8 or 16 bytes at a time, and each word
 * (the last one overlapping) must be looked at. */
static void checks_every_byte_of_ids_and_names(void)
{
    const char bad_in_id[] = {' ', 0x7f};               /* allowed in JSON, not in an id */
    const char *bad_in_name[] = {" ", "/", "@", "\xc3\xa9", "~"};
    char id[MSG_ID_MAX_LEN + 1], text[600];
    for (int len = 1; len <= MSG_ID_MAX_LEN; len++) {
        memset(id, 'k', (size_t)len);
        id[len] = '\0';
        snprintf(text, sizeof text, "{\"msg_id\":\"%s\",\"type\":\"register\",\"src\":\"a\"}", id);
        CHECK_EQ_INT(code_of(text), ERR_NONE);
        for (int at = 0; at < len; at++)
            for (size_t b = 0; b < sizeof bad_in_id; b++) {
                id[at] = bad_in_id[b];
                snprintf(text, sizeof text, "{\"msg_id\":\"%s\",\"type\":\"register\",\"src\":\"a\"}", id);
                CHECK_EQ_INT(code_of(text), ERR_BAD_ENVELOPE);
                id[at] = 'k';
            }
    }
    char name[NAME_MAX_LEN + 3];
    for (int len = 1; len <= NAME_MAX_LEN; len++) {
        memset(name, 'n', (size_t)len);
        name[len] = '\0';
        snprintf(text, sizeof text, "{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"%s\"}", name);
        CHECK_EQ_INT(code_of(text), ERR_NONE);
        for (int at = 1; at < len; at++)
            for (size_t b = 0; b < sizeof bad_in_name / sizeof *bad_in_name; b++) {
                char bad[NAME_MAX_LEN + 8];
                snprintf(bad, sizeof bad, "%.*s%s%s", at, name, bad_in_name[b], name + at + 1);
                snprintf(text, sizeof text, "{\"msg_id\":\"m\",\"type\":\"register\",\"src\":\"%s\"}", bad);
                CHECK_EQ_INT(code_of(text), ERR_BAD_NAME);
            }
    }
}

/* name_is_valid against the rule, byte by byte: every byte value at
 * every position of every length (the vector range tests have edges). */
static bool name_rule(const char *s, size_t len)
{
    if (len == 0 || len > NAME_MAX_LEN)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != ':' && c != '-')))
            return false;
    }
    return true;
}

static void names_match_the_rule_for_every_byte(void)
{
    char name[NAME_MAX_LEN + 1];
    for (size_t len = 1; len <= NAME_MAX_LEN; len++) {
        memset(name, 'n', len);
        for (size_t at = 0; at < len; at++) {
            for (int c = 0; c < 256; c++) {
                name[at] = (char)c;
                if (name_is_valid(name, len) != name_rule(name, len)) {
                    fprintf(stderr, "  name of %zu bytes, byte 0x%02x at %zu\n", len, c, at);
                    CHECK(false);
                }
            }
            name[at] = 'n';
        }
    }
    memset(name, 'n', sizeof name);
    CHECK(!name_is_valid(name, NAME_MAX_LEN + 1));
}

static void keeps_unknown_fields(void)
{
    envelope_t env;
    CHECK_EQ_INT(parse("{" BASE ",\"type\":\"event\",\"dst\":\"b\",\"trace\":{\"id\":[1]}}", &env), ERR_NONE);
}

int main(void)
{
    reads_the_seed_envelope();
    requires_fields_per_type();
    checks_json_types();
    checks_ttl_and_version();
    checks_names();
    refuses_duplicate_and_escaped_keys();
    checks_ids();
    checks_every_byte_of_ids_and_names();
    names_match_the_rule_for_every_byte();
    keeps_unknown_fields();
    return check_done("envelope");
}
