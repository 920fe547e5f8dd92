/* deadletter: the bounded dead-letter ring. See deadletter.h. */
#include "deadletter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "reply.h"

deadletters_t *deadletters_new(size_t max_count, size_t max_bytes)
{
    deadletters_t *dl = calloc(1, sizeof *dl);
    if (!dl)
        return NULL;
    dl->ring = calloc(max_count ? max_count : 1, sizeof *dl->ring);
    if (!dl->ring) {
        free(dl);
        return NULL;
    }
    dl->cap = max_count ? max_count : 1;
    dl->max_bytes = max_bytes;
    dl->next_id = 1;
    return dl;
}

void deadletters_free(deadletters_t **self_p)
{
    deadletters_t *dl = *self_p;
    if (!dl)
        return;
    for (size_t i = 0; i < dl->cap; i++)
        free(dl->ring[i].bytes);
    free(dl->ring);
    free(dl);
    *self_p = NULL;
}

static void drop_oldest(deadletters_t *dl)
{
    deadletter_t *old = &dl->ring[dl->head];
    dl->bytes -= old->len;
    free(old->bytes);
    memset(old, 0, sizeof *old);
    dl->head = (dl->head + 1) % dl->cap;
    dl->count--;
    dl->dropped++;
}

static void copy_text(char *out, size_t cap, const char *text)
{
    snprintf(out, cap, "%s", text ? text : "");
}

void deadletters_add(deadletters_t *dl, bus_err_t code, const peer_t *from,
                     const envelope_t *env, const char *msg_id, const char *src,
                     const char *dst, const char *action)
{
    size_t len = env && env->len <= dl->max_bytes ? env->len : 0;
    while (dl->count > 0 && (dl->count == dl->cap || dl->bytes + len > dl->max_bytes))
        drop_oldest(dl);
    deadletter_t *d = &dl->ring[(dl->head + dl->count) % dl->cap];
    memset(d, 0, sizeof *d);
    d->id = dl->next_id++;
    d->code = code;
    reply_timestamp(d->at);
    if (from) {
        memcpy(d->from, from->id, from->id_len);
        d->from_len = from->id_len;
    }
    if (env) {
        reply_copy_plain(d->msg_id, sizeof d->msg_id, &env->f[EF_MSG_ID]);
        reply_copy_plain(d->src, sizeof d->src, &env->f[EF_SRC]);
        reply_copy_plain(d->dst, sizeof d->dst, &env->f[EF_DST]);
        reply_copy_plain(d->action, sizeof d->action, &env->f[EF_ACTION]);
        if (len && (d->bytes = malloc(len))) {
            memcpy(d->bytes, env->buf, len);
            d->len = len;
            dl->bytes += len;
        }
    }
    if (msg_id)
        copy_text(d->msg_id, sizeof d->msg_id, msg_id);
    if (src)
        copy_text(d->src, sizeof d->src, src);
    if (dst)
        copy_text(d->dst, sizeof d->dst, dst);
    if (action)
        copy_text(d->action, sizeof d->action, action);
    dl->count++;
}

static void add_or_null(cJSON *obj, const char *key, const char *value)
{
    if (*value)
        cJSON_AddStringToObject(obj, key, value);
    else
        cJSON_AddNullToObject(obj, key);
}

cJSON *deadletters_list(const deadletters_t *dl, size_t limit)
{
    cJSON *list = cJSON_CreateArray();
    for (size_t n = 0; n < dl->count && n < limit; n++) {
        const deadletter_t *d = &dl->ring[(dl->head + dl->count - 1 - n) % dl->cap];
        cJSON *item = cJSON_CreateObject();
        cJSON_AddNumberToObject(item, "id", (double)d->id);
        cJSON_AddStringToObject(item, "at", d->at);
        cJSON_AddStringToObject(item, "code", bus_err_name(d->code));
        add_or_null(item, "msg_id", d->msg_id);
        add_or_null(item, "src", d->src);
        add_or_null(item, "dst", d->dst);
        add_or_null(item, "action", d->action);
        cJSON_AddNumberToObject(item, "bytes", (double)d->len);
        cJSON_AddBoolToObject(item, "replayable", d->bytes != NULL);
        cJSON_AddItemToArray(list, item);
    }
    return list;
}

const deadletter_t *deadletters_find(const deadletters_t *dl, uint64_t id)
{
    for (size_t n = 0; n < dl->count; n++) {
        const deadletter_t *d = &dl->ring[(dl->head + n) % dl->cap];
        if (d->id == id)
            return d;
    }
    return NULL;
}
