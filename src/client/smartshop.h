/* smartshop.h: the C client library of the Smartshop bus (libsmartshop).
 *
 * A service or client in a few lines: connect, register names, send
 * requests (blocking or with a callback), serve actions, publish events and
 * broadcasts. Envelopes, frames, msg_ids (libuuid), timestamps, heartbeats
 * and reconnection are the library's business. Payloads are cJSON values.
 *
 * Ownership, in one rule: what you pass in stays yours (the library copies
 * it); what a function hands you through `**out` is yours to free
 * (cJSON_Delete); what a callback receives is valid during the callback.
 *
 * One ss_client_t belongs to one thread at a time. Run it with
 * ss_client_run(), or from your own poll loop with ss_client_fd() and
 * ss_client_process(). docs/c-api.md has every function with an example. */
#ifndef SMARTSHOP_H
#define SMARTSHOP_H

#include <cjson/cJSON.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifndef SMARTSHOP_API
#define SMARTSHOP_API
#endif

#define SMARTSHOP_CLIENT_VERSION "0.1.0"

/* Return codes: 0 is success, failures are negative. */
typedef enum {
    SS_OK = 0,
    SS_EINVAL = -1,     /* a bad argument (NULL, a malformed name, ...) */
    SS_ETIMEOUT = -2,   /* no answer within the timeout */
    SS_EREMOTE = -3,    /* the broker or the service answered with an error:
                           ss_last_error() has its code and message */
    SS_ENOMEM = -4,
    SS_EZMQ = -5,       /* a ZeroMQ call failed (ss_last_error says which) */
    SS_ESTOPPED = -6,   /* ss_client_stop() was called */
    SS_EBROKER_LOST = -7 /* with several endpoints: the broker this request went
                            to was lost and the client moved to the next one;
                            the request may or may not have been handled
                            (code broker_lost, docs/protocol.md CF3) */
} ss_status_t;

/* An error reply's payload, or a local failure, in one shape. */
typedef struct {
    char code[64];      /* e.g. "no_such_service", "timeout", "service_error" */
    char message[256];
} ss_error_t;

typedef struct ss_client ss_client_t;

/* A received message: read it with the accessors below. */
typedef struct ss_msg ss_msg_t;

typedef struct {
    const char *identity;        /* ZeroMQ routing identity; NULL: one per connection,
                                    chosen by ZeroMQ (the usual choice) */
    int heartbeat_ms;            /* ping the broker this often (default 1000) */
    int dead_after_ms;           /* no word from the broker this long: reconnect
                                    (default 3500) */
    int reconnect_max_ms;        /* backoff between reconnects grows to this (default 5000) */
    bool quiet;                  /* no log lines on stderr (default false: one line per
                                    reconnect) */
    /* CURVE (docs/security.md): all three, as 40-character Z85 text, or
     * none for plain mode. */
    const char *curve_server_key;   /* the broker's public key */
    const char *curve_public_key;   /* this client's key pair */
    const char *curve_secret_key;
} ss_options_t;

/* --- the client --- */

/* Connects to a broker. `endpoints` is one endpoint, or several separated
 * by commas: a failover list (docs/protocol.md section 10b), used one at a
 * time in order; when the broker in use is lost the client moves to the
 * next, registers its names and subscribes its topics again there, and
 * fails the requests that were waiting with SS_EBROKER_LOST. With CURVE an
 * endpoint may carry its broker's public key: "tcp://host:5555#<key>".
 * NULL: $SMARTSHOP_ENDPOINT, else tcp://127.0.0.1:5555. `options` may be
 * NULL for the defaults. Returns NULL on failure (bad endpoint, no memory). */
SMARTSHOP_API ss_client_t *ss_client_new(const char *endpoints, const ss_options_t *options);

/* What ss_on_failover's callback is told (valid during the call). */
typedef struct {
    const char *from;            /* the endpoint given up */
    const char *to;              /* the endpoint now in use */
    const char *reason;          /* "disconnected", "unreachable", "handshake_failed",
                                    "silent" (dead_after_ms without a word) */
    int failed_requests;         /* waiting requests just failed with SS_EBROKER_LOST */
} ss_failover_t;

typedef void(ss_failover_fn)(ss_client_t *c, const ss_failover_t *event, void *arg);

/* Calls `fn` after each move to the next endpoint (NULL: none). With one
 * endpoint there are no moves. */
SMARTSHOP_API int ss_on_failover(ss_client_t *c, ss_failover_fn *fn, void *arg);

/* The endpoint in use now (without its "#key"). */
SMARTSHOP_API const char *ss_client_endpoint(const ss_client_t *c);

/* Closes the connection and frees everything; sets *self_p to NULL. */
SMARTSHOP_API void ss_client_destroy(ss_client_t **self_p);

/* Registers `name` (and remembers it, to register again after a broker
 * restart). Waits up to timeout_ms for the broker's answer. */
SMARTSHOP_API int ss_register(ss_client_t *c, const char *name, int timeout_ms);

/* Drops a registered name. */
SMARTSHOP_API int ss_unregister(ss_client_t *c, const char *name, int timeout_ms);

/* The name this client sends as: the first registered name, else the one
 * set with ss_set_name(), else "c-<random>". */
SMARTSHOP_API const char *ss_name(const ss_client_t *c);
SMARTSHOP_API int ss_set_name(ss_client_t *c, const char *name);

/* The last failure's code and message (for SS_EREMOTE: the error reply's). */
SMARTSHOP_API const ss_error_t *ss_last_error(const ss_client_t *c);

/* A short text for a status code. */
SMARTSHOP_API const char *ss_strerror(int status);

/* --- requests --- */

/* Sends a request and waits for its answer. On SS_OK, *response (if not
 * NULL) gets the response payload (yours to cJSON_Delete; may be a JSON
 * null). Meanwhile, messages for this client's handlers are served. */
SMARTSHOP_API int ss_request(ss_client_t *c, const char *dst, const char *action, const cJSON *payload,
               int timeout_ms, cJSON **response);

/* Called once per async request: with the response (err NULL), or with the
 * error (response NULL): the broker's or service's error reply, or
 * "timeout" when timeout_ms passed with no answer. */
typedef void(ss_response_fn)(ss_client_t *c, const ss_msg_t *response, const ss_error_t *err,
                             void *arg);

/* Sends a request and returns at once; `fn` is called from
 * ss_client_process() when the answer comes. */
SMARTSHOP_API int ss_request_async(ss_client_t *c, const char *dst, const char *action, const cJSON *payload,
                     int timeout_ms, ss_response_fn *fn, void *arg);

/* --- serving --- */

/* Handles a request: return the response payload (the library sends and
 * frees it; NULL sends a JSON null), or fill `err` (err->code non-empty)
 * to answer with an error instead. */
typedef cJSON *(ss_handler_fn)(ss_client_t *c, const ss_msg_t *request, ss_error_t *err,
                               void *arg);

/* Serves requests for `action` (NULL: any action without a handler of its
 * own; the first such catch-all registered wins) with `fn`. A request nobody handles is answered with an error. */
SMARTSHOP_API int ss_handle(ss_client_t *c, const char *action, ss_handler_fn *fn, void *arg);

/* Receives events (and broadcasts) for `action` (NULL: any). */
typedef void(ss_event_fn)(ss_client_t *c, const ss_msg_t *event, void *arg);
SMARTSHOP_API int ss_on_event(ss_client_t *c, const char *action, ss_event_fn *fn, void *arg);

/* Sends an event to `dst` (a service name, or "broadcast"). */
SMARTSHOP_API int ss_publish(ss_client_t *c, const char *dst, const char *action, const cJSON *payload);

/* Sends an event to every registered peer but this one. */
SMARTSHOP_API int ss_broadcast(ss_client_t *c, const char *action, const cJSON *payload);

/* --- topics (docs/protocol.md section 8a) --- */

/* Sends an event on `topic` ("order.created": no wildcards) to whoever
 * subscribed to a matching pattern; nobody listening is not an error. */
SMARTSHOP_API int ss_publish_topic(ss_client_t *c, const char *topic, const char *action,
                                   const cJSON *payload);

/* Subscribes to `pattern` ("order.*", "store.12.>"), in queue group
 * `group` (NULL: none; in a group, one member of the group gets each
 * event), and calls `fn` for each matching topic event. Waits up to
 * timeout_ms for the broker's answer; SS_EREMOTE with code bad_topic or
 * limit_exceeded if refused. The library subscribes again by itself after
 * a reconnect or a broker restart. */
SMARTSHOP_API int ss_subscribe(ss_client_t *c, const char *pattern, const char *group,
                               ss_event_fn *fn, void *arg, int timeout_ms);

/* Drops that subscription (and its callback). */
SMARTSHOP_API int ss_unsubscribe(ss_client_t *c, const char *pattern, const char *group,
                                 int timeout_ms);

/* --- running --- */

/* Handles what has arrived, timeouts, heartbeats and reconnects, waiting
 * up to timeout_ms (0: do not wait; -1: until something happens). Returns
 * the number of messages handled, or a negative status. */
SMARTSHOP_API int ss_client_process(ss_client_t *c, int timeout_ms);

/* ss_client_process() until ss_client_stop(). Returns SS_OK after a stop. */
SMARTSHOP_API int ss_client_run(ss_client_t *c);

/* Makes ss_client_run() (and a waiting ss_request()) return, for good:
 * afterwards they return SS_ESTOPPED at once. Safe to call from a handler,
 * a signal handler or another thread. */
SMARTSHOP_API void ss_client_stop(ss_client_t *c);

/* For your own poll loop: a descriptor that becomes readable when the
 * client may have work (ZeroMQ's ZMQ_FD: edge-triggered; after it fires,
 * call ss_client_process(c, 0)), and the most milliseconds you may wait
 * before calling ss_client_process() anyway (timers, heartbeats). */
SMARTSHOP_API int ss_client_fd(ss_client_t *c);
SMARTSHOP_API int ss_client_next_timeout(ss_client_t *c);

/* The ZeroMQ socket itself, for zmq_poll(). */
SMARTSHOP_API void *ss_client_socket(ss_client_t *c);

/* --- reading a message --- */

SMARTSHOP_API const char *ss_msg_id(const ss_msg_t *m);
SMARTSHOP_API const char *ss_msg_type(const ss_msg_t *m);
SMARTSHOP_API const char *ss_msg_src(const ss_msg_t *m);
SMARTSHOP_API const char *ss_msg_dst(const ss_msg_t *m);
SMARTSHOP_API const char *ss_msg_action(const ss_msg_t *m);
SMARTSHOP_API const char *ss_msg_correlation_id(const ss_msg_t *m);   /* NULL if none */
SMARTSHOP_API const char *ss_msg_topic(const ss_msg_t *m);   /* NULL: an event to a dst */
SMARTSHOP_API const cJSON *ss_msg_payload(const ss_msg_t *m);         /* NULL if none */
/* The whole message as it came (valid during the callback). */
SMARTSHOP_API const cJSON *ss_msg_json(const ss_msg_t *m);

#ifdef __cplusplus
}
#endif

#endif
