/* trace: filters, their errors, matching, the rate and its skipped count,
 * the bound on tracers, and the copy itself. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "trace.h"

typedef struct {
    int count;
    char last[8192];
    peer_t *to;
} sent_t;

static void record(void *ctx, peer_t *to, const char *text, size_t len)
{
    sent_t *s = ctx;
    s->count++;
    s->to = to;
    snprintf(s->last, sizeof s->last, "%.*s", (int)len, text);
}

static trace_text_t T(const char *s)
{
    return (trace_text_t){s, strlen(s)};
}

static const char MESSAGE[] = "{\"msg_id\":\"m1\",\"type\":\"request\",\"payload\":{\"sku\":\"A1\"}}";

static trace_point_t point(trace_kind_t kind, const char *service, const char *dst,
                           const char *code)
{
    trace_point_t p = {.kind = kind, .service = T(service), .dst = T(dst), .src = T("pos-1"),
                       .action = T("price"), .latency_us = -1, .message = MESSAGE,
                       .message_len = sizeof MESSAGE - 1};
    if (code)
        p.code = T(code);
    return p;
}

static int start(trace_t *t, peer_t *peer, const char *filter, const char **why)
{
    return trace_start(t, peer, "ops", filter, filter ? strlen(filter) : 0, why);
}

int main(void)
{
    trace_t *t = trace_new();
    peer_t a = {.id_len = 1, .id = "a"}, others[TRACE_MAX_TRACERS + 1];
    const char *why = NULL;
    sent_t s = {0};

    /* nobody traces: nothing is sent, and the message path can ask first */
    CHECK(!trace_active(t));
    trace_point_t p = point(TRACE_REQUEST, "checkout-canary", "checkout", NULL);
    trace_offer(t, &p, 1000, record, &s);
    CHECK_EQ_INT(s.count, 0);

    /* filters that are not: refused, with a reason */
    CHECK(start(t, &a, "[1]", &why) < 0 && why);
    CHECK(start(t, &a, "{\"kinds\":[\"everything\"]}", &why) < 0 && strstr(why, "kinds"));
    CHECK(start(t, &a, "{\"kinds\":[]}", &why) < 0);
    CHECK(start(t, &a, "{\"rate\":0}", &why) < 0 && strstr(why, "rate"));
    CHECK(start(t, &a, "{\"rate\":5000}", &why) < 0);
    CHECK(start(t, &a, "{\"service\":7}", &why) < 0);
    CHECK(start(t, &a, "{\"code\":\"denied\",\"kinds\":[\"request\"]}", &why) < 0);
    CHECK(!trace_active(t));

    /* a service matches as routed or as addressed */
    CHECK_EQ_INT(start(t, &a, "{\"service\":\"checkout\",\"rate\":3}", &why), 0);
    CHECK(trace_active(t));
    trace_offer(t, &p, 1000, record, &s);                    /* dst checkout */
    CHECK_EQ_INT(s.count, 1);
    CHECK(s.to == &a);
    trace_point_t canary = point(TRACE_RESPONSE, "checkout", "shop", NULL);
    trace_offer(t, &canary, 1000, record, &s);               /* routed to checkout */
    CHECK_EQ_INT(s.count, 2);
    trace_point_t other = point(TRACE_REQUEST, "cart", "cart", NULL);
    trace_offer(t, &other, 1000, record, &s);
    CHECK_EQ_INT(s.count, 2);

    /* the copy: an event from broker to the tracer, the message inside */
    cJSON *copy = cJSON_Parse(s.last);
    CHECK(copy != NULL);
    CHECK(!strcmp(cJSON_GetObjectItem(copy, "type")->valuestring, "event"));
    CHECK(!strcmp(cJSON_GetObjectItem(copy, "src")->valuestring, "broker"));
    CHECK(!strcmp(cJSON_GetObjectItem(copy, "dst")->valuestring, "ops"));
    CHECK(!strcmp(cJSON_GetObjectItem(copy, "action")->valuestring, "trace"));
    cJSON *payload = cJSON_GetObjectItem(copy, "payload");
    CHECK(!strcmp(cJSON_GetObjectItem(payload, "kind")->valuestring, "response"));
    CHECK(!strcmp(cJSON_GetObjectItem(payload, "service")->valuestring, "checkout"));
    cJSON *message = cJSON_GetObjectItem(payload, "message");
    CHECK(message && !strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(message, "payload"), "sku")->valuestring, "A1"));
    cJSON_Delete(copy);

    /* the rate: 3 a second; the rest are skipped and counted in the next */
    trace_offer(t, &p, 1100, record, &s);
    CHECK_EQ_INT(s.count, 3);
    for (int i = 0; i < 5; i++)
        trace_offer(t, &p, 1200, record, &s);
    CHECK_EQ_INT(s.count, 3);
    /* sent again (smartshop-ctl does so each second), the trace keeps its window */
    CHECK_EQ_INT(start(t, &a, "{\"service\":\"checkout\",\"rate\":3}", &why), 0);
    trace_offer(t, &p, 1500, record, &s);
    CHECK_EQ_INT(s.count, 3);
    trace_offer(t, &p, 2100, record, &s);
    CHECK_EQ_INT(s.count, 4);
    copy = cJSON_Parse(s.last);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(copy, "payload"), "skipped")->valuedouble, 6);
    cJSON_Delete(copy);

    /* a code: errors with that code only */
    CHECK_EQ_INT(start(t, &a, "{\"code\":\"no_such_service\"}", &why), 0);
    cJSON *described = cJSON_CreateObject();
    CHECK(trace_describe(t, &a, described));
    char *text = cJSON_PrintUnformatted(described);
    CHECK(!strcmp(text, "{\"kinds\":[\"error\"],\"code\":\"no_such_service\",\"rate\":100}"));
    cJSON_free(text);
    cJSON_Delete(described);
    int before = s.count;
    trace_point_t denied = point(TRACE_ERROR, "", "inventory", "denied");
    trace_point_t missing = point(TRACE_ERROR, "", "inventry", "no_such_service");
    trace_offer(t, &denied, 5000, record, &s);
    trace_offer(t, &p, 5000, record, &s);
    trace_offer(t, &missing, 5000, record, &s);
    CHECK_EQ_INT(s.count, before + 1);

    /* a message too large is described, not copied */
    static char big[TRACE_MESSAGE_MAX + 64];
    memset(big, ' ', sizeof big);
    missing.message = big;
    missing.message_len = sizeof big;
    trace_offer(t, &missing, 6000, record, &s);
    copy = cJSON_Parse(s.last);
    payload = cJSON_GetObjectItem(copy, "payload");
    CHECK(cJSON_GetObjectItem(payload, "message") == NULL);
    CHECK_EQ_INT(cJSON_GetObjectItem(payload, "message_bytes")->valuedouble, sizeof big);
    cJSON_Delete(copy);

    /* at most TRACE_MAX_TRACERS connections trace */
    for (int i = 0; i < TRACE_MAX_TRACERS; i++) {
        others[i] = (peer_t){.id_len = 1};
        int rc = start(t, &others[i], NULL, &why);
        CHECK_EQ_INT(rc, i < TRACE_MAX_TRACERS - 1 ? 0 : -1);   /* `a` holds one */
    }
    CHECK(trace_stop(t, &a));
    CHECK(!trace_stop(t, &a));
    CHECK_EQ_INT(start(t, &others[TRACE_MAX_TRACERS - 1], NULL, &why), 0);
    for (int i = 0; i < TRACE_MAX_TRACERS; i++)
        CHECK(trace_stop(t, &others[i]));
    CHECK(!trace_active(t));
    trace_free(&t);
    CHECK(t == NULL);
    return check_done("trace");
}
