/* Unit tests for msg_writer: what it writes is the JSON it says, its
 * member table is exactly the one the scanner finds in that text, and the
 * envelope rules apply to what it writes as to what comes off the wire. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "envelope.h"
#include "msg_writer.h"

static void check_members_match_scan(const char *text, size_t len, const envelope_t *written)
{
    envelope_t scanned;
    const char *why = NULL;
    CHECK_EQ_INT(envelope_parse(&scanned, text, len, &why), ERR_NONE);
    for (int i = 0; i < EF__COUNT; i++) {
        const env_value_t *a = &written->f[i], *b = &scanned.f[i];
        CHECK_EQ_INT(a->kind, b->kind);
        CHECK_EQ_INT(a->len, b->len);
        CHECK_EQ_INT(a->escaped, b->escaped);
        if (a->kind != JSON_ABSENT)
            CHECK_EQ_INT(a->ptr - written->buf, b->ptr - scanned.buf);
    }
    CHECK_EQ_INT(written->type, scanned.type);
}

static void test_a_response_reads_back_as_scanned(void)
{
    const char *request = "{\"msg_id\":\"req-1\",\"type\":\"request\",\"src\":\"client-a\","
                          "\"dst\":\"echo\",\"action\":\"say \\\"hi\\\"\",\"payload\":{\"x\":[1,2]}}";
    envelope_t req;
    const char *why = NULL;
    CHECK_EQ_INT(envelope_parse(&req, request, strlen(request), &why), ERR_NONE);

    const char *payloads[] = {"{\"a\":\"b\"}", "\"text with \\\"escapes\\\"\"", "\"plain\"",
                              "[true,null]", "-12.5e3", "null", "false", NULL};
    for (int i = 0; i <= 7; i++) {
        const char *p = payloads[i];
        msg_field_t fields[EF__COUNT] = {
            [EF_MSG_ID] = msg_plain("0b7f1c52-6d0e-4f43-9a43-7b1c3f0f6a11"),
            [EF_TYPE] = msg_plain("response"),
            [EF_SRC] = msg_plain("echo"),
            [EF_DST] = msg_copy(&req.f[EF_SRC]),
            [EF_ACTION] = msg_copy(&req.f[EF_ACTION]),
            [EF_PAYLOAD] = p ? msg_json(p, strlen(p)) : msg_null(),
            [EF_CORRELATION_ID] = msg_copy(&req.f[EF_MSG_ID]),
            [EF_TIMESTAMP] = msg_plain("2026-11-25T10:00:00.000Z"),
        };
        zmq_msg_t frame;
        envelope_t env;
        CHECK_EQ_INT(msg_write(&frame, fields, &env, &why), ERR_NONE);
        const char *text = zmq_msg_data(&frame);
        size_t len = zmq_msg_size(&frame);
        char expected[512];
        snprintf(expected, sizeof expected,
                 "{\"msg_id\":\"0b7f1c52-6d0e-4f43-9a43-7b1c3f0f6a11\",\"type\":\"response\","
                 "\"src\":\"echo\",\"dst\":\"client-a\",\"action\":\"say \\\"hi\\\"\","
                 "\"payload\":%s,\"correlation_id\":\"req-1\","
                 "\"timestamp\":\"2026-11-25T10:00:00.000Z\"}", p ? p : "null");
        CHECK_EQ_INT(len, strlen(expected));
        CHECK(len == strlen(expected) && memcmp(text, expected, len) == 0);
        CHECK_EQ_INT(env.type, MT_RESPONSE);
        CHECK(env.buf == text);
        check_members_match_scan(text, len, &env);
        zmq_msg_close(&frame);
    }
}

static void test_absent_fields_are_left_out(void)
{
    msg_field_t fields[EF__COUNT] = {
        [EF_MSG_ID] = msg_plain("e-1"),
        [EF_TYPE] = msg_plain("event"),
        [EF_SRC] = msg_plain("svc"),
        [EF_DST] = msg_plain("other"),
    };
    zmq_msg_t frame;
    envelope_t env;
    const char *why = NULL;
    CHECK_EQ_INT(msg_write(&frame, fields, &env, &why), ERR_NONE);
    const char *expected = "{\"msg_id\":\"e-1\",\"type\":\"event\",\"src\":\"svc\",\"dst\":\"other\"}";
    CHECK_EQ_INT(zmq_msg_size(&frame), strlen(expected));
    CHECK(memcmp(zmq_msg_data(&frame), expected, strlen(expected)) == 0);
    CHECK_EQ_INT(env.f[EF_PAYLOAD].kind, JSON_ABSENT);
    zmq_msg_close(&frame);
}

static void test_the_rules_apply(void)
{
    /* a response without a correlation_id breaks E4: refused, frame empty */
    msg_field_t fields[EF__COUNT] = {
        [EF_MSG_ID] = msg_plain("r-1"),
        [EF_TYPE] = msg_plain("response"),
        [EF_SRC] = msg_plain("svc"),
        [EF_DST] = msg_plain("client"),
    };
    zmq_msg_t frame;
    envelope_t env;
    const char *why = NULL;
    CHECK_EQ_INT(msg_write(&frame, fields, &env, &why), ERR_BAD_ENVELOPE);
    CHECK(why != NULL);
    CHECK_EQ_INT(zmq_msg_size(&frame), 0);
    zmq_msg_close(&frame);

    /* a dst that is not a name (N1) */
    fields[EF_TYPE] = msg_plain("event");
    fields[EF_DST] = msg_plain("no spaces allowed");
    CHECK_EQ_INT(msg_write(&frame, fields, &env, &why), ERR_BAD_NAME);
    zmq_msg_close(&frame);
}

static void test_rebase_follows_a_copy(void)
{
    const char *text = "{\"msg_id\":\"m-1\",\"type\":\"event\",\"src\":\"a\",\"dst\":\"b\",\"payload\":[1]}";
    envelope_t env;
    const char *why = NULL;
    CHECK_EQ_INT(envelope_parse(&env, text, strlen(text), &why), ERR_NONE);
    char *copy = strdup(text);
    envelope_rebase(&env, copy);
    CHECK(env.buf == copy);
    CHECK(env.f[EF_SRC].ptr == copy + (strstr(text, "\"a\"") - text) + 1);
    CHECK(env.f[EF_PAYLOAD].ptr == copy + (strstr(text, "[1]") - text));
    CHECK_EQ_INT(env.f[EF_CORRELATION_ID].kind, JSON_ABSENT);
    free(copy);
}

int main(void)
{
    test_a_response_reads_back_as_scanned();
    test_absent_fields_are_left_out();
    test_the_rules_apply();
    test_rebase_follows_a_copy();
    return check_done("msg_writer");
}
