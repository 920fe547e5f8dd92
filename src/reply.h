/* reply: builds the messages the broker itself sends (errors, responses of
 * the broker service), with cJSON so escaping is never hand-rolled.
 *
 * Off the hot path: forwarded messages are never rebuilt. Every function
 * returns a malloc'd JSON text (free with reply_free) or NULL on
 * allocation failure. */
#ifndef SMARTSHOP_REPLY_H
#define SMARTSHOP_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "envelope.h"
#include "errors.h"

/* An error about `about` (which may be NULL or only partly read): dst is
 * its src, action its action, correlation_id its msg_id, each only if
 * readable, else null (T6). */
char *reply_error_about(const envelope_t *about, bus_err_t code, const char *text, size_t *len);

/* An error with the given fields; NULL or "" fields become null. */
char *reply_error(const char *dst, const char *action, const char *correlation_id,
                  bus_err_t code, const char *text, size_t *len);

/* The same with "retry_after_ms" in the payload (0: none): when the
 * sender should send again (shutting_down, D5). */
char *reply_error_about_retry(const envelope_t *about, bus_err_t code, const char *text,
                              uint64_t retry_after_ms, size_t *len);
char *reply_error_retry(const char *dst, const char *action, const char *correlation_id,
                        bus_err_t code, const char *text, uint64_t retry_after_ms, size_t *len);

/* A response from "broker". Takes ownership of `payload`. */
char *reply_response(const char *dst, const char *action, const char *correlation_id,
                     cJSON *payload, size_t *len);

/* A response from "broker" whose payload the caller writes itself (a long
 * listing, spliced in without a cJSON tree): the envelope's text, with the
 * payload's place at byte *at; the payload goes between text[0..*at) and
 * text[*at..*len). */
char *reply_response_around(const char *dst, const char *action, const char *correlation_id,
                            size_t *len, size_t *at);

void reply_free(char *text);

/* A new random UUID, lowercase, into out[37]. */
void reply_new_uuid(char out[37]);

/* Now as ISO-8601 UTC with milliseconds, into out[32]. */
void reply_timestamp(char out[32]);

/* Copies a plain string field into out[cap], or "" if it is absent,
 * escaped, or too long. */
void reply_copy_plain(char *out, size_t cap, const env_value_t *v);

#endif
