/* internal: what the client library's files share, never installed. */
#ifndef SMARTSHOP_CLIENT_INTERNAL_H
#define SMARTSHOP_CLIENT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "smartshop.h"

struct ss_msg {
    cJSON *json;                 /* the whole message */
    const char *id, *type, *src, *dst, *action, *correlation_id, *topic;
    const cJSON *payload;
};

/* Parses one received frame. Returns 0, or -1 if it is not an envelope. */
int msg_parse(ss_msg_t *m, const char *data, size_t len);
void msg_release(ss_msg_t *m);

/* Builds an envelope (the caller frees the text with cJSON_free) and
 * writes its new msg_id into id_out. Any of dst, action, correlation_id
 * and payload may be NULL. ttl_ms 0 leaves ttl_ms out. */
char *msg_build(const char *type, const char *src, const char *dst, const char *action,
                const cJSON *payload, const char *correlation_id, int ttl_ms, char id_out[37]);

/* An event on `topic` (docs/protocol.md TP2): like msg_build's, with a
 * topic instead of a dst. */
char *msg_build_topic_event(const char *src, const char *topic, const char *action,
                            const cJSON *payload, char id_out[37]);

/* Fills an ss_error_t. */
void error_set(ss_error_t *err, const char *code, const char *message);

/* Fills an ss_error_t from an error reply's payload {code, message}. */
void error_from_payload(ss_error_t *err, const cJSON *payload);

uint64_t now_ms(void);

#endif
