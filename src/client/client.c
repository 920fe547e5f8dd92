/* client: the client library's connection, event loop and dispatch.
 *
 * Owns the DEALER socket, the requests waiting for answers, the handlers,
 * and staying up: a ping to the broker every heartbeat, a new connection
 * when the broker has been silent too long, and registering again when a
 * ping shows the broker no longer knows our names (it restarted). With
 * several endpoints, failover (docs/protocol.md section 10b): one
 * connection at a time, a socket monitor to learn at once that it closed
 * or cannot be made, then the next endpoint, every name and topic again,
 * and the waiting requests failed with broker_lost. Never aborts on what
 * comes from the wire: a message it cannot read is dropped (and counted in
 * the log). */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uuid/uuid.h>
#include <zmq.h>

#include "internal.h"
#include "names.h"              /* the broker's own topic rules (TP1), compiled in */

#define MAX_NAMES 16
#define NAME_LEN 64
#define MAX_ENDPOINTS 16
#define KEY_LEN 40
/* frames kept while a new connection is not up yet, to go to the next
 * broker if this one never answers (ZeroMQ's own send queue holds 1000) */
#define MAX_UNSENT 1000
#define DEFAULT_ENDPOINT "tcp://127.0.0.1:5555"

/* One broker of the failover list. */
typedef struct {
    char *address;               /* what zmq_connect takes */
    char server_key[KEY_LEN + 1];/* its CURVE key ("#key" or the options'); "" plain */
} endpoint_t;

typedef struct pending {
    struct pending *next;
    char msg_id[37];
    uint64_t deadline_ms;
    ss_response_fn *fn;          /* async: called once */
    void *arg;
    /* blocking: the answer is left here for the waiting call */
    bool blocking, done;
    int status;
    cJSON *payload;
    ss_error_t err;
} pending_t;

/* A topic subscription: subscribed again after a reconnect or restart. */
typedef struct subscription {
    struct subscription *next;
    char pattern[256];
    char group[NAME_LEN + 1];    /* "" for none */
    ss_event_fn *fn;
    void *arg;
} subscription_t;

typedef struct handler {
    struct handler *next;
    char *action;                /* NULL: any */
    ss_handler_fn *on_request;
    ss_event_fn *on_event;
    void *arg;
} handler_t;

struct ss_client {
    void *ctx, *sock;
    endpoint_t endpoints[MAX_ENDPOINTS];
    int endpoint_count, current;     /* current: the one in use */
    /* failover state (endpoint_count > 1 only) */
    void *monitor;                   /* PAIR reading sock's monitor events */
    unsigned socket_serial;          /* names each monitor's inproc endpoint */
    bool handshaken;                 /* sock completed a handshake: what it sent
                                        may have reached the broker */
    const char *lost;                /* why sock's broker is lost, or NULL */
    char **unsent;                   /* frames sent before the handshake */
    int unsent_count, unsent_cap;
    bool unsent_overflow;            /* more than MAX_UNSENT: not all kept */
    ss_failover_fn *on_failover;
    void *failover_arg;
    char public_key[KEY_LEN + 1], secret_key[KEY_LEN + 1];   /* our copies */
    ss_options_t opt;
    char names[MAX_NAMES][NAME_LEN + 1];
    int name_count;
    char send_as[NAME_LEN + 1];
    pending_t *pending;
    handler_t *handlers;
    subscription_t *subscriptions;
    int subscription_count;
    uint64_t last_heard_ms, next_ping_ms, next_reconnect_ms;
    int backoff_ms;
    char ping_id[37];
    char *identity;              /* our copy of options->identity */
    ss_error_t last_error;
    atomic_int stopped;
};

static void say(const ss_client_t *c, const char *fmt, ...)
{
    if (c->opt.quiet)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "smartshop: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static int fail(ss_client_t *c, int status, const char *code, const char *message)
{
    error_set(&c->last_error, code, message);
    return status;
}

const char *ss_strerror(int status)
{
    switch (status) {
    case SS_OK: return "ok";
    case SS_EINVAL: return "invalid argument";
    case SS_ETIMEOUT: return "timed out";
    case SS_EREMOTE: return "the broker or service answered with an error";
    case SS_ENOMEM: return "out of memory";
    case SS_EZMQ: return "ZeroMQ call failed";
    case SS_ESTOPPED: return "stopped";
    case SS_EBROKER_LOST: return "the broker was lost; the client moved to the next one";
    default: return "unknown status";
    }
}

const ss_error_t *ss_last_error(const ss_client_t *c) { return &c->last_error; }

/* --- the socket --- */

static const char *current_endpoint(const ss_client_t *c)
{
    return c->endpoints[c->current].address;
}

/* Watches sock for what failover needs to know at once. */
static int open_monitor(ss_client_t *c)
{
    char addr[80];
    snprintf(addr, sizeof addr, "inproc://smartshop-monitor-%p-%u", (void *)c, ++c->socket_serial);
    int events = ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_CONNECT_RETRIED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |
                 ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                 ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    if (zmq_socket_monitor(c->sock, addr, events) < 0)
        return -1;
    c->monitor = zmq_socket(c->ctx, ZMQ_PAIR);
    int linger = 0;
    if (!c->monitor || zmq_setsockopt(c->monitor, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_connect(c->monitor, addr) < 0)
        return -1;
    return 0;
}

static void close_socket(ss_client_t *c)
{
    if (c->monitor) {
        zmq_socket_monitor(c->sock, NULL, 0);
        zmq_close(c->monitor);
        c->monitor = NULL;
    }
    if (c->sock)
        zmq_close(c->sock);
    c->sock = NULL;
}

/* A DEALER connected to the endpoint in use (one only: a list is for
 * failover, never spread over). */
static int open_socket(ss_client_t *c)
{
    const endpoint_t *ep = &c->endpoints[c->current];
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock)
        return -1;
    int linger = 0, ivl = 1000, timeout = 3000;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout);
    if (c->identity)
        zmq_setsockopt(c->sock, ZMQ_ROUTING_ID, c->identity, strlen(c->identity));
    c->handshaken = false;
    c->lost = NULL;
    if ((ep->server_key[0] &&
         (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, ep->server_key, KEY_LEN) < 0 ||
          zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, c->opt.curve_public_key, KEY_LEN) < 0 ||
          zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, c->opt.curve_secret_key, KEY_LEN) < 0)) ||
        (c->endpoint_count > 1 && open_monitor(c) < 0) ||      /* before connect: no event missed */
        zmq_connect(c->sock, ep->address) < 0) {
        close_socket(c);
        return -1;
    }
    return 0;
}

static void free_unsent(ss_client_t *c)
{
    for (int i = 0; i < c->unsent_count; i++)
        cJSON_free(c->unsent[i]);
    c->unsent_count = 0;
    c->unsent_overflow = false;
}

/* Before the handshake nothing has left the process: keep the frame (no
 * copy: the text itself) so that it can go to the next broker instead. */
static bool keep_unsent(ss_client_t *c, char *text)
{
    if (c->endpoint_count < 2 || c->handshaken)
        return false;
    if (c->unsent_count == c->unsent_cap) {
        int cap = c->unsent_cap ? c->unsent_cap * 2 : 16;
        char **grown = cap <= MAX_UNSENT ? realloc(c->unsent, (size_t)cap * sizeof *grown) : NULL;
        if (!grown) {
            c->unsent_overflow = true;
            return false;
        }
        c->unsent = grown;
        c->unsent_cap = cap;
    }
    c->unsent[c->unsent_count++] = text;
    return true;
}

static int send_frame(ss_client_t *c, char *text, bool keep)
{
    if (!text)
        return fail(c, SS_ENOMEM, "nomem", "out of memory building a message");
    if (!c->sock) {                          /* no endpoint could be opened (failover) */
        cJSON_free(text);
        return fail(c, SS_EZMQ, "unreachable", "no connection to any broker");
    }
    int rc = zmq_send(c->sock, text, strlen(text), ZMQ_DONTWAIT);
    int err = errno;
    if (rc < 0 || !keep || !keep_unsent(c, text))
        cJSON_free(text);
    if (rc < 0)
        return fail(c, SS_EZMQ, "unreachable", zmq_strerror(err));
    return SS_OK;
}

/* What the application sends: kept for the next broker until the handshake. */
static int send_text(ss_client_t *c, char *text) { return send_frame(c, text, true); }

/* What the library sends by itself (pings, registering again): made anew
 * for each connection, never carried over. */
static int send_own(ss_client_t *c, char *text) { return send_frame(c, text, false); }

static void send_register(ss_client_t *c, const char *type, const char *name, char id[37])
{
    send_text(c, msg_build(type, name, "broker", type, NULL, NULL, 0, id));
}

/* Splits the list into endpoints, "#key" suffixes into their server keys. */
static int parse_endpoints(ss_client_t *c, const char *list)
{
    char *copy = strdup(list), *save = NULL;
    if (!copy)
        return -1;
    int rc = 0;
    for (char *ep = strtok_r(copy, ",", &save); ep && rc == 0; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        size_t len = strlen(ep);
        while (len && ep[len - 1] == ' ')
            ep[--len] = '\0';
        if (!len)
            continue;
        char *hash = strchr(ep, '#');
        const char *key = c->opt.curve_server_key, *scheme = strstr(ep, "://");
        if (hash) {
            *hash = '\0';
            key = hash + 1;
        }
        /* CURVE needs a server key for every endpoint, plain mode none */
        if (c->endpoint_count == MAX_ENDPOINTS || (key && strlen(key) != KEY_LEN) ||
            (key != NULL) != (c->opt.curve_public_key != NULL) || !scheme || !scheme[3]) {
            rc = -1;
            break;
        }
        endpoint_t *e = &c->endpoints[c->endpoint_count];
        snprintf(e->server_key, sizeof e->server_key, "%s", key ? key : "");
        if (!(e->address = strdup(ep)))
            rc = -1;
        else
            c->endpoint_count++;
    }
    free(copy);
    return rc == 0 && c->endpoint_count > 0 ? 0 : -1;
}

ss_client_t *ss_client_new(const char *endpoints, const ss_options_t *options)
{
    if (!endpoints) {
        const char *env = getenv("SMARTSHOP_ENDPOINT");
        endpoints = env && *env ? env : DEFAULT_ENDPOINT;
    }
    if (!*endpoints)
        return NULL;
    ss_client_t *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    if (options)
        c->opt = *options;
    if (c->opt.heartbeat_ms <= 0)
        c->opt.heartbeat_ms = 1000;
    if (c->opt.dead_after_ms <= 0)
        c->opt.dead_after_ms = 3500;
    if (c->opt.reconnect_max_ms <= 0)
        c->opt.reconnect_max_ms = 5000;
    /* CURVE: the client's key pair, and a server key in the options or on
     * every endpoint ("#key"), each as 40 characters of Z85 */
    bool pair = c->opt.curve_public_key && c->opt.curve_secret_key;
    if ((c->opt.curve_public_key || c->opt.curve_secret_key) &&
        (!pair || strlen(c->opt.curve_public_key) != KEY_LEN ||
         strlen(c->opt.curve_secret_key) != KEY_LEN)) {
        free(c);
        return NULL;
    }
    c->identity = c->opt.identity ? strdup(c->opt.identity) : NULL;
    c->opt.identity = NULL;              /* the caller's strings need not outlive this call */
    int parsed = parse_endpoints(c, endpoints);
    c->opt.curve_server_key = NULL;      /* kept per endpoint */
    if (pair) {
        snprintf(c->public_key, sizeof c->public_key, "%s", c->opt.curve_public_key);
        snprintf(c->secret_key, sizeof c->secret_key, "%s", c->opt.curve_secret_key);
        c->opt.curve_public_key = c->public_key;
        c->opt.curve_secret_key = c->secret_key;
    }
    c->ctx = parsed == 0 ? zmq_ctx_new() : NULL;
    if (parsed < 0 || (options && options->identity && !c->identity) || !c->ctx ||
        open_socket(c) < 0) {
        ss_client_destroy(&c);
        return NULL;
    }
    uuid_t id;
    char text[37];
    uuid_generate_random(id);
    uuid_unparse_lower(id, text);
    snprintf(c->send_as, sizeof c->send_as, "c-%.8s", text);
    c->backoff_ms = 100;
    c->last_heard_ms = now_ms();
    c->next_ping_ms = c->last_heard_ms;      /* first ping at once */
    return c;
}

void ss_client_destroy(ss_client_t **self_p)
{
    ss_client_t *c = *self_p;
    if (!c)
        return;
    while (c->pending) {
        pending_t *p = c->pending;
        c->pending = p->next;
        cJSON_Delete(p->payload);
        free(p);
    }
    while (c->subscriptions) {
        subscription_t *s = c->subscriptions;
        c->subscriptions = s->next;
        free(s);
    }
    while (c->handlers) {
        handler_t *h = c->handlers;
        c->handlers = h->next;
        free(h->action);
        free(h);
    }
    close_socket(c);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free_unsent(c);
    free(c->unsent);
    for (int i = 0; i < c->endpoint_count; i++)
        free(c->endpoints[i].address);
    free(c->identity);
    free(c);
    *self_p = NULL;
}

int ss_on_failover(ss_client_t *c, ss_failover_fn *fn, void *arg)
{
    c->on_failover = fn;
    c->failover_arg = arg;
    return SS_OK;
}

const char *ss_client_endpoint(const ss_client_t *c) { return current_endpoint(c); }

static void send_subscribe(ss_client_t *c, const subscription_t *s);

static void register_everything(ss_client_t *c)
{
    char id[37];
    for (int i = 0; i < c->name_count; i++)
        send_own(c, msg_build("register", c->names[i], "broker", "register", NULL, NULL, 0, id));
    for (subscription_t *s = c->subscriptions; s; s = s->next)
        send_subscribe(c, s);
}

static void back_off(ss_client_t *c, uint64_t now)
{
    c->last_heard_ms = now;
    c->next_ping_ms = now;
    c->next_reconnect_ms = now + (uint64_t)c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > c->opt.reconnect_max_ms ? c->opt.reconnect_max_ms
                                                                 : c->backoff_ms * 2;
}

/* One endpoint: the broker was silent too long: a fresh socket (ZeroMQ
 * would reconnect by itself, but a half-open TCP connection can stay
 * silent for minutes), then every name registered again. */
static void reconnect(ss_client_t *c, uint64_t now)
{
    if (now < c->next_reconnect_ms)
        return;
    say(c, "no word from the broker at %s; reconnecting", current_endpoint(c));
    close_socket(c);
    if (open_socket(c) < 0)
        say(c, "cannot reconnect to %s; will retry", current_endpoint(c));
    else
        register_everything(c);
    back_off(c, now);
}

static int fail_waiting(ss_client_t *c, const char *from, const char *reason);

/* Several endpoints: the broker in use is lost (or was never reached):
 * the next one, every name and topic again there, and the requests that
 * were waiting failed with broker_lost (CF3), unless nothing ever left for
 * the lost broker: then what was sent goes to the next one instead. */
static void failover(ss_client_t *c, uint64_t now, const char *reason)
{
    if (now < c->next_reconnect_ms)
        return;
    bool reached = c->handshaken || c->unsent_overflow;
    char **carried = c->unsent;
    int carried_count = reached ? 0 : c->unsent_count;
    if (reached)
        free_unsent(c);
    c->unsent = NULL;
    c->unsent_count = c->unsent_cap = 0;
    c->unsent_overflow = false;
    int from = c->current;
    close_socket(c);
    c->ping_id[0] = '\0';
    c->current = (c->current + 1) % c->endpoint_count;
    say(c, "lost the broker at %s (%s); moving to %s", c->endpoints[from].address, reason,
        current_endpoint(c));
    bool opened = open_socket(c) == 0;
    if (opened)
        register_everything(c);
    for (int i = 0; i < carried_count; i++) {
        if (opened)
            send_text(c, carried[i]);       /* kept again until this one's handshake */
        else
            cJSON_free(carried[i]);
    }
    free(carried);
    if (!opened) {
        say(c, "cannot connect to %s; will try the next", current_endpoint(c));
        c->lost = "unreachable";
    }
    back_off(c, now);
    int failed = reached ? fail_waiting(c, c->endpoints[from].address, reason) : 0;
    if (c->on_failover) {
        ss_failover_t ev = {c->endpoints[from].address, current_endpoint(c), reason, failed};
        c->on_failover(c, &ev, c->failover_arg);
    }
}

/* Monitor events since the last look: a handshake, or the broker lost. */
static void read_monitor(ss_client_t *c)
{
    for (;;) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, c->monitor, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            return;
        }
        uint16_t event = 0;
        if (zmq_msg_size(&frame) >= sizeof event)
            memcpy(&event, zmq_msg_data(&frame), sizeof event);
        while (zmq_msg_more(&frame))                   /* the endpoint's address */
            zmq_msg_recv(&frame, c->monitor, 0);
        zmq_msg_close(&frame);
        if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            c->handshaken = true;
            free_unsent(c);
        } else if (event == ZMQ_EVENT_DISCONNECTED) {
            c->lost = "disconnected";
        } else if (event == ZMQ_EVENT_CONNECT_RETRIED) {
            if (!c->lost)
                c->lost = "unreachable";
        } else if (event & (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                            ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)) {
            c->lost = "handshake_failed";
        }
    }
}

/* --- names --- */

static bool holds(const ss_client_t *c, const char *name)
{
    for (int i = 0; i < c->name_count; i++)
        if (strcmp(c->names[i], name) == 0)
            return true;
    return false;
}

const char *ss_name(const ss_client_t *c)
{
    return c->name_count ? c->names[0] : c->send_as;
}

int ss_set_name(ss_client_t *c, const char *name)
{
    if (!name || !*name || strlen(name) > NAME_LEN)
        return fail(c, SS_EINVAL, "bad_name", "a name is 1 to 64 characters");
    snprintf(c->send_as, sizeof c->send_as, "%s", name);
    return SS_OK;
}

/* --- waiting for answers --- */

static pending_t *add_pending(ss_client_t *c, const char *msg_id, int timeout_ms)
{
    pending_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    snprintf(p->msg_id, sizeof p->msg_id, "%s", msg_id);
    p->deadline_ms = now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 1);
    p->next = c->pending;
    c->pending = p;
    return p;
}

static pending_t *take_pending(ss_client_t *c, const char *msg_id)
{
    for (pending_t **pp = &c->pending; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->msg_id, msg_id) == 0) {
            pending_t *p = *pp;
            *pp = p->next;
            p->next = NULL;
            return p;
        }
    }
    return NULL;
}

/* Settles a pending request: a blocking one keeps the result for its
 * caller (and stays owned by it); an async one calls back and is freed. */
static void settle(ss_client_t *c, pending_t *p, const ss_msg_t *answer, const ss_error_t *err)
{
    if (p->blocking) {
        p->done = true;
        if (err) {
            p->status = strcmp(err->code, "timeout") == 0       ? SS_ETIMEOUT
                        : strcmp(err->code, "broker_lost") == 0 ? SS_EBROKER_LOST
                                                                : SS_EREMOTE;
            p->err = *err;
        } else {
            p->status = SS_OK;
            p->payload = answer && answer->payload ? cJSON_Duplicate(answer->payload, 1) : cJSON_CreateNull();
        }
        return;
    }
    if (p->fn)
        p->fn(c, err ? NULL : answer, err, p->arg);
    free(p);
}

/* Blocking waits keep their entry until their caller takes it. */
static pending_t *find_blocking(ss_client_t *c, pending_t *p)
{
    for (pending_t *q = c->pending; q; q = q->next)
        if (q == p)
            return q;
    return NULL;
}

/* Every request waiting for an answer from the lost broker: broker_lost
 * (CF3). The list is taken first, so that requests a callback makes on the
 * new connection are not failed with them. Returns how many. */
static int fail_waiting(ss_client_t *c, const char *from, const char *reason)
{
    ss_error_t err;
    snprintf(err.code, sizeof err.code, "broker_lost");
    snprintf(err.message, sizeof err.message,
             "lost the broker at %s (%s) while waiting; the request may or may not have been "
             "handled", from, reason);
    pending_t *list = c->pending;
    c->pending = NULL;
    int failed = 0;
    while (list) {
        pending_t *p = list;
        list = p->next;
        p->next = NULL;
        if (p->done) {                        /* settled, its caller not back yet */
            p->next = c->pending;
            c->pending = p;
            continue;
        }
        failed++;
        if (p->blocking) {
            p->next = c->pending;
            c->pending = p;
        }
        settle(c, p, NULL, &err);
    }
    return failed;
}

static void expire(ss_client_t *c, uint64_t now)
{
    for (pending_t **pp = &c->pending; *pp;) {
        pending_t *p = *pp;
        if (p->done || p->deadline_ms > now) {
            pp = &p->next;
            continue;
        }
        ss_error_t err;
        error_set(&err, "timeout", "no answer within the timeout");
        if (p->blocking) {
            settle(c, p, NULL, &err);
            pp = &p->next;
        } else {
            *pp = p->next;
            settle(c, p, NULL, &err);
        }
    }
}

/* --- dispatch --- */

static handler_t *find_handler(ss_client_t *c, const char *action, bool for_requests)
{
    handler_t *any = NULL;
    /* the list is newest first: the last named handler wins, and for the
     * catch-all the one registered first (the last one met here) */
    for (handler_t *h = c->handlers; h; h = h->next) {
        if (for_requests ? !h->on_request : !h->on_event)
            continue;
        if (!h->action)
            any = h;
        else if (action && strcmp(h->action, action) == 0)
            return h;
    }
    return any;
}

/* Answers a request: from the name it was addressed to, if we hold it. */
static void answer(ss_client_t *c, const ss_msg_t *req, const cJSON *payload, const ss_error_t *err)
{
    const char *src = req->dst && holds(c, req->dst) ? req->dst : ss_name(c);
    char id[37];
    if (err) {
        cJSON *body = cJSON_CreateObject();
        cJSON_AddStringToObject(body, "code", err->code);
        cJSON_AddStringToObject(body, "message", err->message);
        send_text(c, msg_build("error", src, req->src, req->action, body, req->id, 0, id));
        cJSON_Delete(body);
    } else {
        send_text(c, msg_build("response", src, req->src, req->action, payload, req->id, 0, id));
    }
}

static void serve(ss_client_t *c, const ss_msg_t *req)
{
    handler_t *h = find_handler(c, req->action, true);
    ss_error_t err;
    memset(&err, 0, sizeof err);
    if (!h) {
        error_set(&err, "unknown_action", "this service has no handler for that action");
        answer(c, req, NULL, &err);
        return;
    }
    cJSON *payload = h->on_request(c, req, &err, h->arg);
    answer(c, req, payload, err.code[0] ? &err : NULL);
    cJSON_Delete(payload);
}

/* A ping's answer: re-register the names the broker has forgotten. */
static void check_ping(ss_client_t *c, const ss_msg_t *m)
{
    const cJSON *known = cJSON_GetObjectItemCaseSensitive(m->payload, "registered");
    for (int i = 0; i < c->name_count; i++) {
        bool found = false;
        const cJSON *item;
        cJSON_ArrayForEach(item, known)
            if (cJSON_IsString(item) && strcmp(item->valuestring, c->names[i]) == 0)
                found = true;
        if (!found) {
            char id[37];
            say(c, "the broker does not know %s (it restarted?); registering again", c->names[i]);
            send_own(c, msg_build("register", c->names[i], "broker", "register", NULL, NULL, 0, id));
        }
    }
    /* fewer subscriptions than ours: it restarted, or lost our connection */
    const cJSON *held = cJSON_GetObjectItemCaseSensitive(m->payload, "subscriptions");
    int broker_holds = cJSON_IsNumber(held) ? held->valueint : 0;     /* absent: none */
    if (c->subscription_count && broker_holds < c->subscription_count) {
        say(c, "the broker lost our subscriptions (it restarted?); subscribing again");
        for (subscription_t *s = c->subscriptions; s; s = s->next)
            send_subscribe(c, s);
    }
}

/* A topic event: every subscription of ours it matches. */
static bool dispatch_topic(ss_client_t *c, const ss_msg_t *m)
{
    bool any = false;
    for (subscription_t *s = c->subscriptions; s; s = s->next) {
        if (topic_matches(s->pattern, m->topic, strlen(m->topic))) {
            s->fn(c, m, s->arg);
            any = true;
        }
    }
    return any;
}

static void dispatch(ss_client_t *c, const ss_msg_t *m)
{
    bool is_answer = strcmp(m->type, "response") == 0 || strcmp(m->type, "error") == 0;
    if (is_answer && m->correlation_id) {
        if (strcmp(m->correlation_id, c->ping_id) == 0) {
            c->ping_id[0] = '\0';
            if (strcmp(m->type, "response") == 0)
                check_ping(c, m);
            return;
        }
        pending_t *p = take_pending(c, m->correlation_id);
        if (p) {
            ss_error_t err;
            if (strcmp(m->type, "error") == 0)
                error_from_payload(&err, m->payload);
            if (p->blocking) {                 /* back in the list, for its caller */
                p->next = c->pending;
                c->pending = p;
            }
            settle(c, p, m, strcmp(m->type, "error") == 0 ? &err : NULL);
        }
        return;                                 /* late answers are dropped */
    }
    if (strcmp(m->type, "request") == 0) {
        serve(c, m);
    } else if (strcmp(m->type, "event") == 0) {
        if (m->topic && dispatch_topic(c, m))
            return;
        handler_t *h = find_handler(c, m->action, false);
        if (h)
            h->on_event(c, m, h->arg);
    }
}

static void ping(ss_client_t *c, uint64_t now)
{
    c->next_ping_ms = now + (uint64_t)c->opt.heartbeat_ms;
    send_own(c, msg_build("request", ss_name(c), "broker", "ping", NULL, NULL,
                           c->opt.dead_after_ms, c->ping_id));
}

int ss_client_next_timeout(ss_client_t *c)
{
    uint64_t now = now_ms(), next = c->next_ping_ms;
    for (pending_t *p = c->pending; p; p = p->next)
        if (!p->done && p->deadline_ms < next)
            next = p->deadline_ms;
    uint64_t dead_at = c->last_heard_ms + (uint64_t)c->opt.dead_after_ms;
    if (c->lost || !c->sock)
        dead_at = now;                      /* a failover is due */
    if (dead_at < c->next_reconnect_ms)
        dead_at = c->next_reconnect_ms;     /* no point waking before a reconnect may happen */
    if (dead_at < next)
        next = dead_at;
    return next <= now ? 0 : (int)(next - now);
}

/* Reads and dispatches what has arrived. Returns the count, or
 * SS_ESTOPPED. */
static int drain(ss_client_t *c)
{
    int handled = 0;
    while (c->sock) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        /* the last frame is the message (seed troubleshooting #2) */
        int more = 0;
        size_t more_size = sizeof more;
        int rc;
        do {
            rc = zmq_msg_recv(&frame, c->sock, ZMQ_DONTWAIT);
            zmq_getsockopt(c->sock, ZMQ_RCVMORE, &more, &more_size);
        } while (rc >= 0 && more);
        if (rc < 0) {
            zmq_msg_close(&frame);
            break;
        }
        c->last_heard_ms = now_ms();
        c->backoff_ms = 100;
        void *sock = c->sock;
        ss_msg_t m;
        if (msg_parse(&m, zmq_msg_data(&frame), zmq_msg_size(&frame)) == 0) {
            dispatch(c, &m);
            msg_release(&m);
            handled++;
            c->last_heard_ms = now_ms();    /* a slow handler is not the broker's silence */
        }
        zmq_msg_close(&frame);
        if (c->stopped)
            return SS_ESTOPPED;
        if (c->sock != sock)                /* a nested call failed over: a new socket */
            break;
    }
    return handled;
}

int ss_client_process(ss_client_t *c, int timeout_ms)
{
    if (c->stopped)
        return SS_ESTOPPED;
    int wait = ss_client_next_timeout(c);
    if (timeout_ms >= 0 && timeout_ms < wait)
        wait = timeout_ms;
    zmq_pollitem_t items[2] = {{c->sock, 0, ZMQ_POLLIN, 0}, {c->monitor, 0, ZMQ_POLLIN, 0}};
    int count = !c->sock ? 0 : c->monitor ? 2 : 1;
    if (zmq_poll(count ? items : NULL, count, wait) < 0 && errno != EINTR)
        return fail(c, SS_EZMQ, "poll", zmq_strerror(errno));
    int handled = drain(c);
    if (handled < 0)
        return handled;
    if (c->monitor) {
        read_monitor(c);
        if (c->lost) {                      /* what came before the loss is still ours */
            int more = drain(c);
            if (more < 0)
                return more;
            handled += more;
        }
    }
    uint64_t now = now_ms();
    expire(c, now);
    if (now >= c->next_ping_ms && c->sock)
        ping(c, now);
    if (c->endpoint_count > 1) {
        if (c->lost || !c->sock)
            failover(c, now, c->lost ? c->lost : "unreachable");
        else if (now - c->last_heard_ms > (uint64_t)c->opt.dead_after_ms)
            failover(c, now, "silent");
    } else if (now - c->last_heard_ms > (uint64_t)c->opt.dead_after_ms) {
        reconnect(c, now);
    }
    return handled;
}

int ss_client_run(ss_client_t *c)
{
    while (!c->stopped) {
        int rc = ss_client_process(c, -1);
        if (rc < 0 && rc != SS_ESTOPPED)
            return rc;
    }
    return SS_OK;
}

void ss_client_stop(ss_client_t *c) { c->stopped = 1; }

int ss_client_fd(ss_client_t *c)
{
    int fd = -1;
    size_t size = sizeof fd;
    if (c->sock)
        zmq_getsockopt(c->sock, ZMQ_FD, &fd, &size);
    return fd;
}

void *ss_client_socket(ss_client_t *c) { return c->sock; }

/* --- requests --- */

/* Waits for a blocking entry's answer; takes the entry. */
static int wait_for(ss_client_t *c, pending_t *p, cJSON **result)
{
    while (!p->done) {
        int rc = ss_client_process(c, -1);
        if (rc == SS_ESTOPPED || (rc < 0 && rc != SS_EZMQ))
            break;
    }
    pending_t *mine = find_blocking(c, p);
    if (mine)
        take_pending(c, p->msg_id);
    int status = p->done ? p->status : SS_ESTOPPED;
    if (status == SS_OK && result)
        *result = p->payload;
    else
        cJSON_Delete(p->payload);
    if (status == SS_EREMOTE || status == SS_ETIMEOUT || status == SS_EBROKER_LOST)
        c->last_error = p->err;
    free(p);
    return status;
}

static int send_request(ss_client_t *c, const char *type, const char *src, const char *dst,
                        const char *action, const cJSON *payload, int timeout_ms, char id[37])
{
    return send_text(c, msg_build(type, src, dst, action, payload, NULL,
                                  strcmp(type, "request") == 0 ? timeout_ms : 0, id));
}

/* Sends a request and files it as waiting for its answer. */
static int start_request(ss_client_t *c, const char *dst, const char *action,
                         const cJSON *payload, int timeout_ms, pending_t **out)
{
    char id[37];
    int rc = send_request(c, "request", ss_name(c), dst, action, payload, timeout_ms, id);
    if (rc != SS_OK)
        return rc;
    if (!(*out = add_pending(c, id, timeout_ms)))
        return fail(c, SS_ENOMEM, "nomem", "out of memory");
    return SS_OK;
}

int ss_request(ss_client_t *c, const char *dst, const char *action, const cJSON *payload,
               int timeout_ms, cJSON **response)
{
    if (!dst || !action || timeout_ms <= 0)
        return fail(c, SS_EINVAL, "invalid", "ss_request needs dst, action and a timeout");
    pending_t *p;
    int rc = start_request(c, dst, action, payload, timeout_ms, &p);
    if (rc != SS_OK)
        return rc;
    p->blocking = true;
    return wait_for(c, p, response);
}

int ss_request_async(ss_client_t *c, const char *dst, const char *action, const cJSON *payload,
                     int timeout_ms, ss_response_fn *fn, void *arg)
{
    if (!dst || !action || timeout_ms <= 0 || !fn)
        return fail(c, SS_EINVAL, "invalid", "ss_request_async needs dst, action, a timeout and fn");
    pending_t *p;
    int rc = start_request(c, dst, action, payload, timeout_ms, &p);
    if (rc != SS_OK)
        return rc;
    p->fn = fn;
    p->arg = arg;
    return SS_OK;
}

/* register/unregister: sent and waited for like a request */
static int registration(ss_client_t *c, const char *type, const char *name, int timeout_ms)
{
    if (!name || !*name || strlen(name) > NAME_LEN || timeout_ms <= 0)
        return fail(c, SS_EINVAL, "bad_name", "a name is 1 to 64 characters; timeout > 0");
    char id[37];
    send_register(c, type, name, id);
    pending_t *p = add_pending(c, id, timeout_ms);
    if (!p)
        return fail(c, SS_ENOMEM, "nomem", "out of memory");
    p->blocking = true;
    return wait_for(c, p, NULL);
}

int ss_register(ss_client_t *c, const char *name, int timeout_ms)
{
    if (!name || !*name)
        return fail(c, SS_EINVAL, "bad_name", "a name is 1 to 64 characters");
    if (c->name_count == MAX_NAMES && !holds(c, name))
        return fail(c, SS_EINVAL, "too_many_names", "at most 16 names per client");
    int rc = registration(c, "register", name, timeout_ms);
    if (rc == SS_OK && !holds(c, name))
        snprintf(c->names[c->name_count++], NAME_LEN + 1, "%s", name);
    return rc;
}

int ss_unregister(ss_client_t *c, const char *name, int timeout_ms)
{
    if (!name || !*name)
        return fail(c, SS_EINVAL, "bad_name", "a name is 1 to 64 characters");
    /* forgotten first, whatever the answer: a failover while waiting must
     * not register it again on the next broker */
    for (int i = 0; i < c->name_count; i++) {
        if (strcmp(c->names[i], name) == 0) {
            memmove(c->names[i], c->names[i + 1], (size_t)(c->name_count - i - 1) * sizeof c->names[0]);
            c->name_count--;
            break;
        }
    }
    return registration(c, "unregister", name, timeout_ms);
}

/* --- serving and events --- */

static int add_handler(ss_client_t *c, const char *action, ss_handler_fn *req, ss_event_fn *ev,
                       void *arg)
{
    handler_t *h = calloc(1, sizeof *h);
    if (!h || (action && !(h->action = strdup(action)))) {
        free(h);
        return fail(c, SS_ENOMEM, "nomem", "out of memory");
    }
    h->on_request = req;
    h->on_event = ev;
    h->arg = arg;
    h->next = c->handlers;
    c->handlers = h;
    return SS_OK;
}

int ss_handle(ss_client_t *c, const char *action, ss_handler_fn *fn, void *arg)
{
    if (!fn)
        return fail(c, SS_EINVAL, "invalid", "ss_handle needs a handler");
    return add_handler(c, action, fn, NULL, arg);
}

int ss_on_event(ss_client_t *c, const char *action, ss_event_fn *fn, void *arg)
{
    if (!fn)
        return fail(c, SS_EINVAL, "invalid", "ss_on_event needs a handler");
    return add_handler(c, action, NULL, fn, arg);
}

int ss_publish(ss_client_t *c, const char *dst, const char *action, const cJSON *payload)
{
    if (!dst || !action)
        return fail(c, SS_EINVAL, "invalid", "ss_publish needs dst and action");
    char id[37];
    return send_request(c, "event", ss_name(c), dst, action, payload, 0, id);
}

int ss_broadcast(ss_client_t *c, const char *action, const cJSON *payload)
{
    return ss_publish(c, "broadcast", action, payload);
}

/* --- topics --- */

int ss_publish_topic(ss_client_t *c, const char *topic, const char *action, const cJSON *payload)
{
    if (!topic || !action)
        return fail(c, SS_EINVAL, "invalid", "ss_publish_topic needs a topic and an action");
    const char *why;
    if (!topic_is_valid(topic, strlen(topic), false, &why))
        return fail(c, SS_EINVAL, "bad_topic", "not a topic: dot-separated tokens of letters, "
                                               "digits, _ : -, no wildcards (docs/protocol.md TP1)");
    char id[37];
    return send_text(c, msg_build_topic_event(ss_name(c), topic, action, payload, id));
}

static cJSON *subscription_payload(const char *pattern, const char *group)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "topic", pattern);
    if (group && *group)
        cJSON_AddStringToObject(p, "group", group);
    return p;
}

/* Fire and forget: its answer finds no pending entry and is dropped. */
static void send_subscribe(ss_client_t *c, const subscription_t *s)
{
    char id[37];
    cJSON *p = subscription_payload(s->pattern, s->group);
    send_own(c, msg_build("request", ss_name(c), "broker", "subscribe", p, NULL, 5000, id));
    cJSON_Delete(p);
}

/* subscribe or unsubscribe, waited for; an answer {"status":"error"} is
 * SS_EREMOTE with its code. */
static int subscription_call(ss_client_t *c, const char *action, const char *pattern,
                             const char *group, int timeout_ms)
{
    if (!pattern || !*pattern || strlen(pattern) > 255 || (group && strlen(group) > NAME_LEN) ||
        timeout_ms <= 0)
        return fail(c, SS_EINVAL, "bad_topic", "a pattern is 1 to 255 bytes, a group a name; timeout > 0");
    cJSON *p = subscription_payload(pattern, group), *answer = NULL;
    int rc = ss_request(c, "broker", action, p, timeout_ms, &answer);
    cJSON_Delete(p);
    if (rc == SS_OK) {
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(answer, "status");
        if (!cJSON_IsString(status) || strcmp(status->valuestring, "ok") != 0) {
            error_from_payload(&c->last_error, answer);
            rc = SS_EREMOTE;
        }
    }
    cJSON_Delete(answer);
    return rc;
}

static subscription_t **find_subscription(ss_client_t *c, const char *pattern, const char *group)
{
    subscription_t **s = &c->subscriptions;
    for (; *s; s = &(*s)->next)
        if (strcmp((*s)->pattern, pattern) == 0 && strcmp((*s)->group, group ? group : "") == 0)
            break;
    return s;
}

int ss_subscribe(ss_client_t *c, const char *pattern, const char *group, ss_event_fn *fn,
                 void *arg, int timeout_ms)
{
    if (!fn)
        return fail(c, SS_EINVAL, "invalid", "ss_subscribe needs a callback");
    int rc = subscription_call(c, "subscribe", pattern, group, timeout_ms);
    if (rc != SS_OK)
        return rc;
    subscription_t **at = find_subscription(c, pattern, group);
    if (!*at) {
        if (!(*at = calloc(1, sizeof **at)))
            return fail(c, SS_ENOMEM, "nomem", "out of memory");
        snprintf((*at)->pattern, sizeof (*at)->pattern, "%s", pattern);
        snprintf((*at)->group, sizeof (*at)->group, "%s", group ? group : "");
        c->subscription_count++;
    }
    (*at)->fn = fn;
    (*at)->arg = arg;
    return SS_OK;
}

int ss_unsubscribe(ss_client_t *c, const char *pattern, const char *group, int timeout_ms)
{
    int rc = subscription_call(c, "unsubscribe", pattern, group, timeout_ms);
    subscription_t **at = pattern ? find_subscription(c, pattern, group) : NULL;
    if (at && *at) {
        subscription_t *gone = *at;
        *at = gone->next;
        free(gone);
        c->subscription_count--;
    }
    return rc;
}
