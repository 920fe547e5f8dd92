/* client: the client library's connection, event loop and dispatch.
 *
 * Owns the DEALER socket, the requests waiting for answers, the handlers,
 * and staying up: a ping to the broker every heartbeat, a new connection
 * when the broker has been silent too long, and registering again when a
 * ping shows the broker no longer knows our names (it restarted). Never
 * aborts on what comes from the wire: a message it cannot read is dropped
 * (and counted in the log). */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uuid/uuid.h>
#include <zmq.h>

#include "internal.h"
#include "names.h"              /* the broker's own topic rules (TP1), compiled in */

#define MAX_NAMES 16
#define NAME_LEN 64

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
    char *endpoints;
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

static void say(const ss_client_t *c, const char *fmt, const char *arg)
{
    if (c->opt.quiet)
        return;
    fprintf(stderr, "smartshop: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
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
    default: return "unknown status";
    }
}

const ss_error_t *ss_last_error(const ss_client_t *c) { return &c->last_error; }

/* --- the socket --- */

static int open_socket(ss_client_t *c)
{
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    if (!c->sock)
        return -1;
    int linger = 0, ivl = 1000, timeout = 3000;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl);
    zmq_setsockopt(c->sock, ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout);
    if (c->identity)
        zmq_setsockopt(c->sock, ZMQ_ROUTING_ID, c->identity, strlen(c->identity));
    if (c->opt.curve_server_key &&
        (zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, c->opt.curve_server_key, 40) < 0 ||
         zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, c->opt.curve_public_key, 40) < 0 ||
         zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, c->opt.curve_secret_key, 40) < 0)) {
        zmq_close(c->sock);
        c->sock = NULL;
        return -1;
    }
    char *list = strdup(c->endpoints), *save = NULL;
    int rc = list ? 0 : -1;
    for (char *ep = list ? strtok_r(list, ",", &save) : NULL; ep; ep = strtok_r(NULL, ",", &save)) {
        while (*ep == ' ')
            ep++;
        if (zmq_connect(c->sock, ep) < 0)
            rc = -1;
    }
    free(list);
    if (rc < 0) {
        zmq_close(c->sock);
        c->sock = NULL;
    }
    return rc;
}

static int send_text(ss_client_t *c, char *text)
{
    if (!text)
        return fail(c, SS_ENOMEM, "nomem", "out of memory building a message");
    int rc = zmq_send(c->sock, text, strlen(text), ZMQ_DONTWAIT);
    cJSON_free(text);
    if (rc < 0)
        return fail(c, SS_EZMQ, "unreachable", zmq_strerror(errno));
    return SS_OK;
}

static void send_register(ss_client_t *c, const char *type, const char *name, char id[37])
{
    send_text(c, msg_build(type, name, "broker", type, NULL, NULL, 0, id));
}

ss_client_t *ss_client_new(const char *endpoints, const ss_options_t *options)
{
    if (!endpoints || !*endpoints)
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
    bool some_keys = c->opt.curve_server_key || c->opt.curve_public_key || c->opt.curve_secret_key;
    bool all_keys = c->opt.curve_server_key && c->opt.curve_public_key && c->opt.curve_secret_key;
    if (some_keys && (!all_keys || strlen(c->opt.curve_server_key) != 40 ||
                      strlen(c->opt.curve_public_key) != 40 || strlen(c->opt.curve_secret_key) != 40)) {
        free(c);
        return NULL;                        /* CURVE needs all three keys, in Z85 */
    }
    c->endpoints = strdup(endpoints);
    c->identity = c->opt.identity ? strdup(c->opt.identity) : NULL;
    c->opt.identity = NULL;              /* the caller's string need not outlive this call */
    c->ctx = zmq_ctx_new();
    if (!c->endpoints || (options && options->identity && !c->identity) || !c->ctx ||
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
    if (c->sock)
        zmq_close(c->sock);
    if (c->ctx)
        zmq_ctx_term(c->ctx);
    free(c->endpoints);
    free(c->identity);
    free(c);
    *self_p = NULL;
}

static void send_subscribe(ss_client_t *c, const subscription_t *s);

/* The broker was silent too long: a fresh socket (ZeroMQ would reconnect
 * by itself, but a half-open TCP connection can stay silent for minutes),
 * then every name registered again. */
static void reconnect(ss_client_t *c, uint64_t now)
{
    if (now < c->next_reconnect_ms)
        return;
    say(c, "no word from the broker at %s; reconnecting", c->endpoints);
    zmq_close(c->sock);
    c->sock = NULL;
    if (open_socket(c) < 0) {
        say(c, "cannot reconnect to %s; will retry", c->endpoints);
    } else {
        char id[37];
        for (int i = 0; i < c->name_count; i++)
            send_register(c, "register", c->names[i], id);
        for (subscription_t *s = c->subscriptions; s; s = s->next)
            send_subscribe(c, s);
    }
    c->last_heard_ms = now;
    c->next_ping_ms = now;
    c->next_reconnect_ms = now + (uint64_t)c->backoff_ms;
    c->backoff_ms = c->backoff_ms * 2 > c->opt.reconnect_max_ms ? c->opt.reconnect_max_ms
                                                                 : c->backoff_ms * 2;
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
            p->status = strcmp(err->code, "timeout") == 0 ? SS_ETIMEOUT : SS_EREMOTE;
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
            send_register(c, "register", c->names[i], id);
        }
    }
    /* fewer subscriptions than ours: it restarted, or lost our connection */
    const cJSON *held = cJSON_GetObjectItemCaseSensitive(m->payload, "subscriptions");
    int broker_holds = cJSON_IsNumber(held) ? held->valueint : 0;     /* absent: none */
    if (c->subscription_count && broker_holds < c->subscription_count) {
        say(c, "the broker lost our subscriptions (it restarted?); subscribing again", "");
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
    send_text(c, msg_build("request", ss_name(c), "broker", "ping", NULL, NULL,
                           c->opt.dead_after_ms, c->ping_id));
}

int ss_client_next_timeout(ss_client_t *c)
{
    uint64_t now = now_ms(), next = c->next_ping_ms;
    for (pending_t *p = c->pending; p; p = p->next)
        if (!p->done && p->deadline_ms < next)
            next = p->deadline_ms;
    uint64_t dead_at = c->last_heard_ms + (uint64_t)c->opt.dead_after_ms;
    if (dead_at < c->next_reconnect_ms)
        dead_at = c->next_reconnect_ms;     /* no point waking before a reconnect may happen */
    if (dead_at < next)
        next = dead_at;
    return next <= now ? 0 : (int)(next - now);
}

int ss_client_process(ss_client_t *c, int timeout_ms)
{
    if (c->stopped)
        return SS_ESTOPPED;
    int wait = ss_client_next_timeout(c);
    if (timeout_ms >= 0 && timeout_ms < wait)
        wait = timeout_ms;
    zmq_pollitem_t item = {c->sock, 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, wait) < 0 && errno != EINTR)
        return fail(c, SS_EZMQ, "poll", zmq_strerror(errno));
    int handled = 0;
    for (;;) {
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
    }
    uint64_t now = now_ms();
    expire(c, now);
    if (now >= c->next_ping_ms)
        ping(c, now);
    if (now - c->last_heard_ms > (uint64_t)c->opt.dead_after_ms)
        reconnect(c, now);
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
    if (status == SS_EREMOTE || status == SS_ETIMEOUT)
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
    int rc = registration(c, "unregister", name, timeout_ms);
    for (int i = 0; i < c->name_count; i++) {
        if (strcmp(c->names[i], name) == 0) {
            memmove(c->names[i], c->names[i + 1], (size_t)(c->name_count - i - 1) * sizeof c->names[0]);
            c->name_count--;
            break;
        }
    }
    return rc;
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
    send_request(c, "request", ss_name(c), "broker", "subscribe", p, 5000, id);
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
