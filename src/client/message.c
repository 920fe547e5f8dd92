/* message: envelopes of the client library: building them (cJSON, libuuid,
 * ISO-8601 UTC timestamps) and reading received ones. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <uuid/uuid.h>

#include "internal.h"
#include "../iso_time.h"
#include "../msg_id.h"

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void add_string_or_null(cJSON *obj, const char *key, const char *value)
{
    if (value)
        cJSON_AddStringToObject(obj, key, value);
    else
        cJSON_AddNullToObject(obj, key);
}

char *msg_build(const char *type, const char *src, const char *dst, const char *action,
                const cJSON *payload, const char *correlation_id, int ttl_ms, char id_out[37])
{
    char ts[32];
    msg_id_new(id_out);
    iso_time_now(ts);
    cJSON *msg = cJSON_CreateObject();
    if (!msg)
        return NULL;
    cJSON_AddStringToObject(msg, "msg_id", id_out);
    cJSON_AddStringToObject(msg, "type", type);
    cJSON_AddStringToObject(msg, "src", src);
    add_string_or_null(msg, "dst", dst);
    add_string_or_null(msg, "action", action);
    cJSON_AddItemToObject(msg, "payload", payload ? cJSON_Duplicate(payload, 1) : cJSON_CreateNull());
    add_string_or_null(msg, "correlation_id", correlation_id);
    cJSON_AddStringToObject(msg, "timestamp", ts);
    if (ttl_ms > 0)
        cJSON_AddNumberToObject(msg, "ttl_ms", ttl_ms > 300000 ? 300000 : ttl_ms);
    char *text = cJSON_PrintUnformatted(msg);
    cJSON_Delete(msg);
    return text;
}

char *msg_build_topic_event(const char *src, const char *topic, const char *action,
                            const cJSON *payload, char id_out[37])
{
    char *text = msg_build("event", src, NULL, action, payload, NULL, 0, id_out);
    cJSON *msg = text ? cJSON_Parse(text) : NULL;
    cJSON_free(text);
    if (!msg)
        return NULL;
    cJSON_AddStringToObject(msg, "topic", topic);
    text = cJSON_PrintUnformatted(msg);
    cJSON_Delete(msg);
    return text;
}

static const char *string_field(const cJSON *obj, const char *key)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(item) ? item->valuestring : NULL;
}

int msg_parse(ss_msg_t *m, const char *data, size_t len)
{
    memset(m, 0, sizeof *m);
    m->json = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(m->json)) {
        cJSON_Delete(m->json);
        m->json = NULL;
        return -1;
    }
    m->id = string_field(m->json, "msg_id");
    m->type = string_field(m->json, "type");
    m->src = string_field(m->json, "src");
    m->dst = string_field(m->json, "dst");
    m->action = string_field(m->json, "action");
    m->correlation_id = string_field(m->json, "correlation_id");
    m->topic = string_field(m->json, "topic");
    m->payload = cJSON_GetObjectItemCaseSensitive(m->json, "payload");
    if (!m->id || !m->type) {
        msg_release(m);
        return -1;
    }
    return 0;
}

void msg_release(ss_msg_t *m)
{
    cJSON_Delete(m->json);
    m->json = NULL;
}

void error_set(ss_error_t *err, const char *code, const char *message)
{
    snprintf(err->code, sizeof err->code, "%s", code ? code : "");
    snprintf(err->message, sizeof err->message, "%s", message ? message : "");
}

void error_from_payload(ss_error_t *err, const cJSON *payload)
{
    error_set(err, string_field(payload, "code") ? string_field(payload, "code") : "error",
              string_field(payload, "message"));
}

const char *ss_msg_id(const ss_msg_t *m) { return m->id; }
const char *ss_msg_type(const ss_msg_t *m) { return m->type; }
const char *ss_msg_src(const ss_msg_t *m) { return m->src; }
const char *ss_msg_dst(const ss_msg_t *m) { return m->dst; }
const char *ss_msg_action(const ss_msg_t *m) { return m->action; }
const char *ss_msg_correlation_id(const ss_msg_t *m) { return m->correlation_id; }
const char *ss_msg_topic(const ss_msg_t *m) { return m->topic; }
const cJSON *ss_msg_payload(const ss_msg_t *m) { return m->payload; }
const cJSON *ss_msg_json(const ss_msg_t *m) { return m->json; }
