/* msg_writer: broker-written messages without a scan. See msg_writer.h. */
#include "msg_writer.h"

#include <string.h>

/* The keys, by env_field_t: the order a message is written in. */
#define KEY(word) {word, sizeof word - 1}
static const struct {
    const char *text;
    size_t len;
} keys[EF__COUNT] = {
    [EF_MSG_ID] = KEY("msg_id"),   [EF_TYPE] = KEY("type"),     [EF_SRC] = KEY("src"),
    [EF_DST] = KEY("dst"),         [EF_ACTION] = KEY("action"), [EF_PAYLOAD] = KEY("payload"),
    [EF_CORRELATION_ID] = KEY("correlation_id"),                [EF_TIMESTAMP] = KEY("timestamp"),
    [EF_TTL_MS] = KEY("ttl_ms"),   [EF_V] = KEY("v"),           [EF_TOPIC] = KEY("topic"),
};
#undef KEY

msg_field_t msg_plain(const char *s)
{
    return (msg_field_t){s, strlen(s), JSON_STRING, false};
}

msg_field_t msg_null(void)
{
    return (msg_field_t){"null", 4, JSON_NULL, false};
}

msg_field_t msg_copy(const env_value_t *v)
{
    if (v->kind == JSON_ABSENT || v->kind == JSON_NULL)
        return msg_null();      /* also a field read as duplicated (its bytes are not a value) */
    return (msg_field_t){v->ptr, v->len, v->kind, v->escaped};
}

static json_kind_t kind_of_text(const char *text)
{
    switch (text[0]) {
    case '"': return JSON_STRING;
    case '{': return JSON_OBJECT;
    case '[': return JSON_ARRAY;
    case 't': return JSON_TRUE;
    case 'f': return JSON_FALSE;
    case 'n': return JSON_NULL;
    default: return JSON_NUMBER;
    }
}

msg_field_t msg_json(const char *text, size_t len)
{
    json_kind_t kind = kind_of_text(text);
    if (kind == JSON_STRING)   /* written as content between quotes, like a read string */
        return (msg_field_t){text + 1, len - 2, kind, memchr(text, '\\', len) != NULL};
    return (msg_field_t){text, len, kind, false};
}

static char *put(char *at, const char *s, size_t n)
{
    memcpy(at, s, n);
    return at + n;
}

bus_err_t msg_write(zmq_msg_t *frame, const msg_field_t fields[EF__COUNT], envelope_t *env,
                    const char **why)
{
    /* the exact size first: the text is written once, into the frame */
    size_t size = 2, count = 0;   /* { } */
    for (int i = 0; i < EF__COUNT; i++) {
        const msg_field_t *f = &fields[i];
        if (f->kind == JSON_ABSENT)
            continue;
        size += (count++ ? 1 : 0) + keys[i].len + 3 + f->len + (f->kind == JSON_STRING ? 2 : 0);
    }
    if (zmq_msg_init_size(frame, size) < 0) {
        *why = "out of memory";
        return ERR_INTERNAL;
    }
    char *start = zmq_msg_data(frame), *at = start;
    json_object_t obj;
    obj.count = 0;
    *at++ = '{';
    for (int i = 0; i < EF__COUNT; i++) {
        const msg_field_t *f = &fields[i];
        if (f->kind == JSON_ABSENT)
            continue;
        if (obj.count)
            *at++ = ',';
        json_member_t *m = &obj.members[obj.count++];
        size_t key_len = keys[i].len;
        *at++ = '"';
        m->key_off = (uint32_t)(at - start);
        m->key_len = (uint32_t)key_len;
        m->key_escaped = false;
        at = put(at, keys[i].text, key_len);
        at = put(at, "\":", 2);
        if (f->kind == JSON_STRING)
            *at++ = '"';
        m->val_off = (uint32_t)(at - start);
        m->val_len = (uint32_t)f->len;
        m->kind = f->kind;
        m->val_escaped = f->escaped;
        at = put(at, f->ptr, f->len);
        if (f->kind == JSON_STRING)
            *at++ = '"';
    }
    *at++ = '}';
    bus_err_t err = envelope_read(env, start, size, &obj, false, why);
    if (err != ERR_NONE) {
        zmq_msg_close(frame);
        zmq_msg_init(frame);
    }
    return err;
}
