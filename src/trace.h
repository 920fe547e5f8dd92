/* trace: operators watching requests, answers, errors and events live
 * (the broker actions trace / untrace, `smartshop-ctl trace`).
 *
 * A tracer is a connection that asked for copies of what matches its
 * filter: kinds (request, response, error, event), a service (the one a
 * request was routed to, or the dst it was sent to), an action, a src, an
 * error code. Each copy is an event from "broker" with action "trace"
 * whose payload says what happened and holds the message itself.
 *
 * Bounded: at most TRACE_MAX_TRACERS tracers; each gets at most its rate
 * (default TRACE_DEFAULT_RATE, at most TRACE_MAX_RATE) copies a second:
 * when more match, the rest of that second are skipped and counted in
 * the next copy's "skipped" (a sample, not a flood). A message over
 * TRACE_MESSAGE_MAX bytes is described but not copied. Costs nothing on
 * the message path while nobody traces (trace_active). Sends nothing
 * itself: the caller's `send` does. */
#ifndef SMARTSHOP_TRACE_H
#define SMARTSHOP_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"
#include "registry.h"

#define TRACE_MAX_TRACERS 8
#define TRACE_DEFAULT_RATE 100
#define TRACE_MAX_RATE 1000
#define TRACE_MESSAGE_MAX (64u << 10)
#define TRACE_CODE_MAX 64

typedef enum {
    TRACE_REQUEST = 1,          /* a request handed to an instance */
    TRACE_RESPONSE = 2,         /* an answer of type response reached its requester */
    TRACE_ERROR = 4,            /* an error answer, a refusal, a timeout, an instance gone */
    TRACE_EVENT = 8,            /* an event (to a service, broadcast or a topic) */
    TRACE_ALL = 15
} trace_kind_t;

typedef struct trace trace_t;

/* Text as it came: bytes and length (NULL: absent). */
typedef struct {
    const char *ptr;
    size_t len;
} trace_text_t;

/* One thing that happened, as the router saw it. */
typedef struct {
    trace_kind_t kind;
    trace_text_t service;       /* routed to (requests and their answers) */
    trace_text_t dst, src, action, msg_id, correlation_id, topic;
    trace_text_t code;          /* errors: the code */
    const char *why;            /* errors the broker made: its message (or NULL) */
    const char *peer;           /* who sent it (peer_label), or NULL */
    const char *to;             /* who it went to (peer_label), or NULL */
    int64_t latency_us;         /* answers: since the request arrived; -1: none */
    const char *message;        /* the message's JSON, or NULL (not kept) */
    size_t message_len;
} trace_point_t;

trace_t *trace_new(void);
void trace_free(trace_t **self_p);

/* Starts (or replaces) `peer`'s trace from the JSON object `filter`
 * (len bytes; NULL: everything): {"kinds": [..], "service", "action",
 * "src", "code", "rate"}. Copies go to `dst` (the tracer's src). Returns
 * 0, or -1 with what is wrong in *why. */
int trace_start(trace_t *t, peer_t *peer, const char *dst, const char *filter, size_t len,
                const char **why);

/* Stops `peer`'s trace; false if it had none. */
bool trace_stop(trace_t *t, const peer_t *peer);

/* Whether anyone traces: the message path asks this first, and builds
 * no trace_point_t while nobody does. */
bool trace_active(const trace_t *t);

/* A copy of `p` for every tracer whose filter matches, through
 * send(ctx, tracer, text, len) (`text` is the caller's only during the
 * call). `now_ms` is the broker's clock, for the rates. */
void trace_offer(trace_t *t, const trace_point_t *p, uint64_t now_ms,
                 void (*send)(void *ctx, peer_t *to, const char *text, size_t len), void *ctx);

/* The trace a connection holds, as the trace action's answer shows it,
 * into a cJSON object; false if none. */
struct cJSON;
bool trace_describe(const trace_t *t, const peer_t *peer, struct cJSON *out);

#endif
