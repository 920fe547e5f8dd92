/* reply: messages the broker itself makes. See reply.h. */
#include "reply.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uuid/uuid.h>

#include "iso_time.h"
#include "msg_id.h"
#include "names.h"

void reply_new_uuid(char out[37])
{
    msg_id_new(out);
}

void reply_timestamp(char out[32])
{
    iso_time_now(out);
}

void reply_copy_plain(char *out, size_t cap, const env_value_t *v)
{
    if (env_is_plain_string(v) && v->len < cap) {
        memcpy(out, v->ptr, v->len);
        out[v->len] = '\0';
    } else {
        out[0] = '\0';
    }
}

static void add_string_or_null(cJSON *obj, const char *key, const char *value)
{
    if (value && *value)
        cJSON_AddStringToObject(obj, key, value);
    else
        cJSON_AddNullToObject(obj, key);
}

/* The common envelope of every broker-made message; takes `payload`. */
static char *build(const char *type, const char *dst, const char *action,
                   const char *correlation_id, cJSON *payload, size_t *len)
{
    char id[37], ts[32];
    cJSON *msg = cJSON_CreateObject();
    if (!msg) {
        cJSON_Delete(payload);
        return NULL;
    }
    reply_new_uuid(id);
    reply_timestamp(ts);
    cJSON_AddStringToObject(msg, "msg_id", id);
    cJSON_AddStringToObject(msg, "type", type);
    cJSON_AddStringToObject(msg, "src", "broker");
    add_string_or_null(msg, "dst", dst);
    add_string_or_null(msg, "action", action);
    if (payload)
        cJSON_AddItemToObject(msg, "payload", payload);
    else
        cJSON_AddNullToObject(msg, "payload");
    add_string_or_null(msg, "correlation_id", correlation_id);
    cJSON_AddStringToObject(msg, "timestamp", ts);
    char *text = cJSON_PrintUnformatted(msg);
    cJSON_Delete(msg);
    if (text)
        *len = strlen(text);
    return text;
}

char *reply_error_retry(const char *dst, const char *action, const char *correlation_id,
                        bus_err_t code, const char *text, uint64_t retry_after_ms, size_t *len)
{
    cJSON *payload = cJSON_CreateObject();
    if (!payload)
        return NULL;
    cJSON_AddStringToObject(payload, "code", bus_err_name(code));
    cJSON_AddStringToObject(payload, "message", text ? text : bus_err_name(code));
    if (retry_after_ms)
        cJSON_AddNumberToObject(payload, "retry_after_ms", (double)retry_after_ms);
    return build("error", dst, action, correlation_id, payload, len);
}

char *reply_error(const char *dst, const char *action, const char *correlation_id,
                  bus_err_t code, const char *text, size_t *len)
{
    return reply_error_retry(dst, action, correlation_id, code, text, 0, len);
}

char *reply_error_about(const envelope_t *about, bus_err_t code, const char *text, size_t *len)
{
    return reply_error_about_retry(about, code, text, 0, len);
}

char *reply_error_about_retry(const envelope_t *about, bus_err_t code, const char *text,
                              uint64_t retry_after_ms, size_t *len)
{
    char dst[NAME_MAX_LEN + 1] = "", action[MSG_ID_MAX_LEN + 1] = "",
         corr[MSG_ID_MAX_LEN + 1] = "";
    if (about) {
        const env_value_t *src = &about->f[EF_SRC];
        if (env_is_plain_string(src) && name_is_valid(src->ptr, src->len))
            reply_copy_plain(dst, sizeof dst, src);
        reply_copy_plain(action, sizeof action, &about->f[EF_ACTION]);
        if (about->msg_id_ok)
            reply_copy_plain(corr, sizeof corr, &about->f[EF_MSG_ID]);
    }
    return reply_error_retry(dst, action, corr, code, text, retry_after_ms, len);
}

char *reply_response(const char *dst, const char *action, const char *correlation_id,
                     cJSON *payload, size_t *len)
{
    return build("response", dst, action, correlation_id, payload, len);
}

char *reply_response_around(const char *dst, const char *action, const char *correlation_id,
                            size_t *len, size_t *at)
{
    /* a raw item prints as it is; cJSON writes any other control byte as
     * \u0001, so the only byte 1 in the text is the payload's place */
    cJSON *marker = cJSON_CreateRaw("\x01");
    if (!marker)
        return NULL;
    size_t with_marker = 0;
    char *text = build("response", dst, action, correlation_id, marker, &with_marker);
    if (!text)
        return NULL;
    char *place = memchr(text, 1, with_marker);
    if (!place) {
        reply_free(text);
        return NULL;
    }
    memmove(place, place + 1, with_marker - (size_t)(place - text));   /* with the NUL */
    *at = (size_t)(place - text);
    *len = with_marker - 1;
    return text;
}

void reply_free(char *text)
{
    cJSON_free(text);
}
