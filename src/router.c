/* router: the message path. See router.h; the rules it applies are
 * numbered in docs/protocol.md. */
#include "router.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "auth.h"
#include "deadletter.h"
#include "inflight.h"
#include "json_scan.h"
#include "log.h"
#include "metrics.h"
#include "policy.h"
#include "reply.h"
#include "topics.h"
#include "trace.h"

/* Added to the time left before the broker exits in retry_after_ms. */
#define STOP_RETRY_MARGIN_MS 200

struct router {
    const config_t *cfg;
    router_transport_t wire;    /* remote peers' messages leave here */
    router_clock_t clock_us;
    router_hosts_t hosts;       /* hosted Lua services, dst "broker" */
    registry_t *registry;
    inflight_table_t *inflight;
    topics_t *topics;           /* topic subscriptions (docs/protocol.md TP1-TP5) */
    deadletters_t *dead;        /* refused and undelivered messages */
    metrics_t *metrics;
    metric_series_t *routing;   /* the series of the request being routed now (refusals) */
    trace_t *trace;             /* operators' traces (broker actions trace, untrace) */
    auth_t *auth;               /* NULL in plain mode (not owned) */
    policy_t *policy;           /* NULL when running without a policy file (not owned) */
    int watchers;               /* peers that asked for a copy of every event */
    bool stopping;              /* new requests get shutting_down */
    uint64_t stop_ends_us;      /* by when the broker will have exited (retry_after_ms) */
    uint64_t started_ms;
    stats_t stats;
    bus_hooks_t bus;            /* the other brokers (X1-X13; ctx NULL: none) */
    struct router_bus *crossing; /* what crosses: the bus peer, seqs (below) */
};

router_t *router_new(const config_t *cfg, auth_t *auth, router_transport_t transport,
                     router_clock_t clock)
{
    router_t *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cfg = cfg;
    r->auth = auth;
    r->wire = transport;
    r->clock_us = clock;
    r->started_ms = clock() / 1000;
    r->registry = registry_new();
    r->inflight = inflight_table_new(cfg->max_inflight, cfg->max_inflight_per_peer,
                                     cfg->max_inflight_per_instance);
    r->dead = deadletters_new(cfg->dead_letters, cfg->dead_letter_bytes, cfg->dead_letter_share);
    r->metrics = metrics_new();
    r->trace = trace_new();
    r->topics = topics_new((topics_limits_t){cfg->max_subscriptions_per_peer,
                                             cfg->max_subscriptions, 4096});
    if (!r->registry || !r->inflight || !r->dead || !r->metrics || !r->topics || !r->trace)
        router_free(&r);
    return r;
}

void router_free(router_t **self_p)
{
    router_t *r = *self_p;
    if (!r)
        return;
    router_bus_stop(r);
    inflight_table_free(&r->inflight);
    topics_free(&r->topics);
    deadletters_free(&r->dead);
    metrics_free(&r->metrics);          /* after the requests that point at its series */
    trace_free(&r->trace);
    registry_free(&r->registry);
    free(r);
    *self_p = NULL;
}

void router_set_hosts(router_t *r, router_hosts_t hosts) { r->hosts = hosts; }
void router_set_policy(router_t *r, policy_t *policy) { r->policy = policy; }
void router_set_stopping(router_t *r) { r->stopping = true; }

void router_set_stop_ends(router_t *r, uint64_t at_us) { r->stop_ends_us = at_us; }

/* D5: what shutting_down tells the requester: wait this long, then send
 * again (its connection comes back to the next broker by itself). */
static uint64_t retry_after_ms(const router_t *r, bus_err_t code)
{
    if (code != ERR_SHUTTING_DOWN || !r->stop_ends_us)
        return 0;
    uint64_t now = r->clock_us();
    return (r->stop_ends_us > now ? (r->stop_ends_us - now) / 1000 : 0) + STOP_RETRY_MARGIN_MS;
}

void router_set_watching(router_t *r, peer_t *peer, bool watching)
{
    if (peer->watching != watching)
        r->watchers += watching ? 1 : -1;
    peer->watching = watching;
}

registry_t *router_registry(const router_t *r) { return r->registry; }
inflight_table_t *router_inflight(const router_t *r) { return r->inflight; }
topics_t *router_topics(const router_t *r) { return r->topics; }
deadletters_t *router_dead(const router_t *r) { return r->dead; }
metrics_t *router_metrics(const router_t *r) { return r->metrics; }
trace_t *router_trace(const router_t *r) { return r->trace; }
uint64_t router_now_ms(const router_t *r) { return r->clock_us() / 1000; }
policy_t *router_policy(const router_t *r) { return r->policy; }
auth_t *router_auth(const router_t *r) { return r->auth; }
const config_t *router_config(const router_t *r) { return r->cfg; }
const stats_t *router_stats(const router_t *r) { return &r->stats; }
size_t router_inflight_count(const router_t *r) { return inflight_count(r->inflight); }
uint64_t router_started_ms(const router_t *r) { return r->started_ms; }

static log_ratelimit_t send_failures_limit;
/* Lines any peer can cause at will (registering, leaving, being refused)
 * are bounded per call site, so that one client cannot flood the journal
 * and push the broker's later warnings out of it (docs/security.md). */
#define PEER_EVENT_LINES_PER_MINUTE 120
static log_ratelimit_t register_lines, unregister_lines, gone_lines, stranger_lines;

/* "#12/inventory@127.0.0.1", "my-id#12@127.0.0.1": the identity only when
 * a person can read it (libzmq's own are 5 bytes of binary), then the
 * connection's number in order of arrival, its first name and its
 * address, so that a log line says which peer without a hex dump; one
 * word, for whoever reads the log by words. */
const char *peer_label(const peer_t *peer, char buf[2 * PEER_ID_MAX + 3])
{
    const size_t cap = 2 * PEER_ID_MAX + 3;
    if (peer->kind == PEER_LUA) {       /* never to be mistaken for a connection */
        snprintf(buf, cap, "(hosted) %.*s", peer->id_len, (const char *)peer->id);
        return buf;
    }
    bool printable = peer->id_len > 0;
    for (int i = 0; i < peer->id_len; i++)
        if (peer->id[i] < 0x21 || peer->id[i] > 0x7e)
            printable = false;
    size_t n = 0;
    if (printable) {
        memcpy(buf, peer->id, peer->id_len);
        n = peer->id_len;
    }
    const char *name = peer->name_count ? peer->names[0] : "";
    snprintf(buf + n, cap - n, "#%llu%s%s%s%s", (unsigned long long)peer->serial,
             *name ? "/" : "", name, peer->addr[0] ? "@" : "", peer->addr);
    return buf;
}

/* --- delivery --- */

static void free_text(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* Hands a message to a peer: onto the wire, or into a hosted Lua service's
 * queue, with its envelope when known (`env` may be NULL) so that the
 * service need not read it again. On success the message is consumed.
 * Returns 0, or -1 with errno EAGAIN (its queue is full) or EHOSTUNREACH
 * (gone). */
static int deliver_to_bus(router_t *r, zmq_msg_t *data, const envelope_t *env);
/* R2, R3: a restored record whose connection has not been seen since the
 * restart. Plain mode: its identity is all there is to know, so a send
 * that libzmq takes (the identity is connected: ZMQ_ROUTER_MANDATORY)
 * means it is back; one that finds no such identity means "not yet", a
 * busy peer rather than a gone one. Under CURVE a send by identity could
 * reach whoever connected with it under another key: nothing goes out
 * until a message with the record's key adopts it. */
static int deliver_restored(router_t *r, peer_t *to, zmq_msg_t *data)
{
    if (r->auth) {
        errno = EAGAIN;
        return -1;
    }
    if (r->wire.send(r->wire.ctx, to, data) == 0) {
        registry_adopt(r->registry, to);
        return 0;
    }
    if (errno == EHOSTUNREACH)
        errno = EAGAIN;
    return -1;
}

static int deliver(router_t *r, peer_t *to, zmq_msg_t *data, const envelope_t *env)
{
    int rc;
    if (to->kind == PEER_REMOTE) {     /* one test, as without a bus */
        rc = __builtin_expect(to->restored, 0) ? deliver_restored(r, to, data)
                                               : r->wire.send(r->wire.ctx, to, data);
    } else if (to->kind == PEER_BUS) {
        rc = deliver_to_bus(r, data, env);
    } else if (!r->hosts.enqueue) {
        errno = EHOSTUNREACH;
        rc = -1;
    } else {
        rc = r->hosts.enqueue(r->hosts.lua_ctx, to, data, env);
    }
    to->msgs_out += rc == 0;
    return rc;
}

int router_send_made(router_t *r, peer_t *to, const char *text, size_t len, msg_type_t type)
{
    zmq_msg_t data;
    if (zmq_msg_init_size(&data, len) < 0)
        return -1;
    memcpy(zmq_msg_data(&data), text, len);
    if (deliver(r, to, &data, NULL) < 0) {
        int why = errno;
        zmq_msg_close(&data);
        char label[2 * PEER_ID_MAX + 3];
        log_limited(&send_failures_limit, 10, LOG_LEVEL_WARN,
                    "could not send a %s to peer %s: %s", msg_type_name(type),
                    peer_label(to, label), zmq_strerror(why));
        errno = why;
        return -1;
    }
    r->stats.out[type]++;
    return 0;
}

static void send_error_text(router_t *r, peer_t *to, char *text, size_t len,
                            msg_type_t about_type, bus_err_t code)
{
    if (!text) {
        log_error("out of memory building a %s error", bus_err_name(code));
        return;
    }
    r->stats.errors[code]++;
    r->stats.errored[about_type]++;
    router_send_made(r, to, text, len, MT_ERROR);
    reply_free(text);
}

/* --- how requests end --- */

/* One request's end, as note_outcome takes it. */
typedef struct {
    metrics_outcome_t outcome;
    metric_series_t *series;    /* its series */
    const inflight_t *rec;      /* its record in flight, if it was handed over */
    const envelope_t *request;  /* the request, if the router still has it (refusals) */
    const envelope_t *answer;   /* the answer (ok, error), only while its bytes are
                                   there (`message`): delivery hands them over */
    const char *code;           /* the error's code ("" for ok) */
    size_t code_len;
    const char *why;            /* the broker's message, for its own errors */
    peer_t *requester, *handler;
    uint64_t latency_us;        /* answers: from arrival to the answer */
    const char *message;        /* the answer or refused request, for traces (or NULL) */
    size_t message_len;
} request_outcome_t;

static trace_text_t env_text(const envelope_t *env, env_field_t f)
{
    const env_value_t *v = env ? &env->f[f] : NULL;
    if (!v || !env_is_plain_string(v))
        return (trace_text_t){NULL, 0};
    return (trace_text_t){v->ptr, v->len};
}

static trace_text_t c_text(const char *s)
{
    return s && *s ? (trace_text_t){s, strlen(s)} : (trace_text_t){NULL, 0};
}

static void send_trace_copy(void *ctx, peer_t *to, const char *text, size_t len)
{
    router_send_made(ctx, to, text, len, MT_EVENT);
}

/* The trace of a request's end (only called while someone traces). */
static void trace_outcome(router_t *r, const request_outcome_t *o)
{
    char from[2 * PEER_ID_MAX + 3], to[2 * PEER_ID_MAX + 3];
    const envelope_t *req = o->request;
    trace_point_t p = {
        .kind = o->outcome == METRICS_OK ? TRACE_RESPONSE : TRACE_ERROR,
        /* the name it went to; for a refusal, its series' (none: "_none") */
        .service = o->rec ? c_text(o->rec->service)
                          : c_text(o->series->key[0] == '_' ? NULL : o->series->key),
        .dst = o->rec ? c_text(o->rec->dst) : env_text(req, EF_DST),
        .src = o->rec ? c_text(o->rec->src) : env_text(req, EF_SRC),
        .action = o->rec ? c_text(o->rec->action) : env_text(req, EF_ACTION),
        .msg_id = o->answer ? env_text(o->answer, EF_MSG_ID) : env_text(req, EF_MSG_ID),
        .correlation_id = o->rec ? c_text(o->rec->msg_id) : (trace_text_t){NULL, 0},
        .code = {o->code_len ? o->code : NULL, o->code_len},
        .why = o->why,
        .peer = o->handler && o->answer ? peer_label(o->handler, from)
                : o->requester && !o->answer ? peer_label(o->requester, from) : NULL,
        .to = o->requester && o->answer ? peer_label(o->requester, to) : NULL,
        .latency_us = o->rec ? (int64_t)o->latency_us : -1,
        /* a refused request: itself as it came (smartshop-ctl record keeps it) */
        .message = o->message ? o->message : req ? req->buf : NULL,
        .message_len = o->message ? o->message_len : req ? req->len : 0,
    };
    trace_offer(r->trace, &p, r->clock_us() / 1000, send_trace_copy, r);
}

/* on_outcome(o) for a request that was handed over (refusals are the
 * broker's or the policy's own doing, not the service's). */
static void policy_outcome(router_t *r, const request_outcome_t *o)
{
    static const outcome_kind_t kinds[METRICS_OUTCOMES] = {
        [METRICS_OK] = OUTCOME_OK, [METRICS_ERROR] = OUTCOME_ERROR,
        [METRICS_TIMEOUT] = OUTCOME_TIMEOUT, [METRICS_GONE] = OUTCOME_GONE,
    };
    char code[METRICS_CODE_MAX_LEN + 1];
    size_t n = o->code_len < sizeof code - 1 ? o->code_len : sizeof code - 1;
    memcpy(code, o->code, n);
    code[n] = '\0';
    policy_outcome_t out = {
        .service = o->rec->service,
        .instance = o->handler ? o->handler->id : NULL,
        .instance_len = o->handler ? o->handler->id_len : 0,
        .action = o->rec->action,
        .kind = kinds[o->outcome],
        .code = n ? code : NULL,
        .latency_ms = (double)(o->latency_us ? o->latency_us
                                             : r->clock_us() - o->rec->started_us) / 1000.0,
    };
    policy_on_outcome(r->policy, &out);
}

/* Every request ends here exactly once, whatever ended it: answered ok,
 * answered with an error, timed out, its instance gone (or the broker
 * stopping), or refused by the broker before it was handed over. The
 * metrics, the traces and the policy's on_outcome hook (a
 * request that was handed over) read it here and nowhere else. */
static void note_outcome(router_t *r, const request_outcome_t *o)
{
    metrics_outcome(r->metrics, o->series, o->outcome, o->code, o->code_len, o->latency_us);
    if (trace_active(r->trace))
        trace_outcome(r, o);
    if (o->rec && o->outcome != METRICS_REFUSED && policy_has(r->policy, HOOK_ON_OUTCOME))
        policy_outcome(r, o);
}

/* An error answer's code, copied: the answer's bytes go to its requester
 * before the outcome is noted. */
typedef struct {
    char text[METRICS_CODE_MAX_LEN + 1];
    size_t len;
} answer_code_t;

/* The "code" of an error answer's payload; service_error if it has none
 * (an error without a code is one), "(other)" if it is too long. */
static void read_answer_code(const envelope_t *env, answer_code_t *out)
{
    const env_value_t *p = &env->f[EF_PAYLOAD];
    json_object_t obj;
    const char *code = bus_err_name(ERR_SERVICE_ERROR);
    size_t len = strlen(code);
    if (p->kind == JSON_OBJECT && json_scan_object(p->ptr, p->len, &obj, NULL) == JSON_SCAN_OK) {
        for (int i = 0; i < obj.count; i++) {
            const json_member_t *m = &obj.members[i];
            if (m->key_len == 4 && memcmp(p->ptr + m->key_off, "code", 4) == 0 &&
                m->kind == JSON_STRING && !m->val_escaped && m->val_len > 0) {
                code = p->ptr + m->val_off;
                len = m->val_len;
                break;
            }
        }
    }
    if (len > METRICS_CODE_MAX_LEN) {
        code = METRICS_OTHER_ACTION;
        len = strlen(code);
    }
    memcpy(out->text, code, len);
    out->text[len] = '\0';
    out->len = len;
}

/* A request's answer, delivered or dropped (its requester gone): `type`
 * and `code` read before the answer left; `message` its bytes, if they
 * are still there (for traces). */
static void note_answer(router_t *r, const inflight_t *rec, msg_type_t type,
                        const answer_code_t *code, const envelope_t *answer, zmq_msg_t *message)
{
    request_outcome_t o = {.series = rec->series, .rec = rec,
                           .answer = message ? answer : NULL,
                           .requester = rec->requester, .handler = rec->handler, .code = "",
                           .message = message ? zmq_msg_data(message) : NULL,
                           .message_len = message ? zmq_msg_size(message) : 0};
    o.outcome = type == MT_ERROR ? METRICS_ERROR : METRICS_OK;
    if (o.outcome == METRICS_ERROR) {
        o.code = code->text;
        o.code_len = code->len;
    }
    o.latency_us = r->clock_us() - rec->started_us;
    note_outcome(r, &o);
}

/* A request the broker ended itself (timeout, service_gone, shutting_down). */
static void note_failed(router_t *r, const inflight_t *rec, bus_err_t code, const char *why)
{
    const char *name = bus_err_name(code);
    request_outcome_t o = {.outcome = metrics_outcome_of_code(code), .series = rec->series,
                           .rec = rec, .code = name, .code_len = strlen(name), .why = why,
                           .requester = rec->requester, .handler = rec->handler};
    note_outcome(r, &o);
}

static log_ratelimit_t refused_lines;

/* A request refused before it was handed over: no_such_service, denied,
 * busy, a bound, a bad envelope... Said in the log too (bounded: any
 * peer can cause these at will). */
static void note_refused(router_t *r, peer_t *sender, const envelope_t *req, bus_err_t code,
                         const char *why)
{
    metric_series_t *series = r->routing;
    if (!series) {
        const env_value_t *dst = &req->f[EF_DST];
        bool served = env_is_plain_string(dst) && registry_find_service(r->registry, dst->ptr, dst->len);
        series = metrics_series_of(r->metrics, served ? dst->ptr : NULL, served ? dst->len : 0, dst,
                                   &req->f[EF_ACTION], r->cfg->metrics_max_series);
    }
    const char *name = bus_err_name(code);
    request_outcome_t o = {.outcome = METRICS_REFUSED, .series = series, .request = req,
                           .code = name, .code_len = strlen(name), .why = why,
                           .requester = sender, .message = req->buf, .message_len = req->len};
    note_outcome(r, &o);
    bool peer_caused = code == ERR_NO_SUCH_SERVICE || code == ERR_DENIED;
    if (log_enabled(peer_caused ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG)) {
        char label[2 * PEER_ID_MAX + 3], dst[NAME_MAX_LEN + 1], action[MSG_ID_MAX_LEN + 1];
        reply_copy_plain(dst, sizeof dst, &req->f[EF_DST]);
        reply_copy_plain(action, sizeof action, &req->f[EF_ACTION]);
        peer_label(sender, label);
        log_fields_t f = {.peer = label, .service = *dst ? dst : NULL, .code = name};
        log_limited_with(&refused_lines, PEER_EVENT_LINES_PER_MINUTE,
                         peer_caused ? LOG_LEVEL_INFO : LOG_LEVEL_DEBUG, &f,
                         "request from peer %s to %s (action %s) answered %s: %s", label,
                         *dst ? dst : "?", *action ? action : "?", name, why ? why : "");
    }
}

void router_send_error(router_t *r, peer_t *to, const envelope_t *about,
                       bus_err_t code, const char *why)
{
    /* a request answered with an error here was never handed over: it
     * ends now (the broker's own requests are no series: B1) */
    if (about && about->type == MT_REQUEST && !env_equals(&about->f[EF_DST], "broker"))
        note_refused(r, to, about, code, why);
    size_t len = 0;
    char *text = reply_error_about_retry(about, code, why, retry_after_ms(r, code), &len);
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char label[2 * PEER_ID_MAX + 3];
        log_debug("error %s to peer %s: %s", bus_err_name(code), peer_label(to, label),
                  why ? why : "");
    }
    if (about && about->type != MT_NONE)
        deadletters_add(r->dead, code, to, about, NULL, NULL, NULL, NULL);
    send_error_text(r, to, text, len, about ? about->type : MT_NONE, code);
}

/* An error to the requester of a request in flight (timeout, service_gone). */
static bool aim_at_origin(router_t *r, const inflight_t *rec);

static void fail_request(router_t *r, inflight_t *rec, bus_err_t code, const char *why)
{
    /* the origin broker owns the deadline of a request that crossed (X4) */
    if (rec->requester && rec->requester->kind == PEER_BUS &&
        (code == ERR_TIMEOUT || !aim_at_origin(r, rec)))
        return;
    note_failed(r, rec, code, why);
    deadletters_add(r->dead, code, rec->requester, NULL, rec->msg_id, rec->src, rec->dst,
                    rec->action);
    if (!rec->requester)
        return;
    size_t len = 0;
    char *text = reply_error_retry(rec->src, rec->action, rec->msg_id, code, why,
                                   retry_after_ms(r, code), &len);
    send_error_text(r, rec->requester, text, len, MT_REQUEST, code);
}

/* --- peers and their connections --- */

void router_peer_gone(router_t *r, peer_t *peer)
{
    char label[2 * PEER_ID_MAX + 3];
    peer_label(peer, label);
    /* off the bus first: new requests for its names go elsewhere (X8) */
    if (r->bus.ctx)
        for (int i = 0; i < peer->name_count; i++)
            r->bus.holds(r->bus.ctx, peer->names[i], strlen(peer->names[i]), -1);
    while (peer->handling) {
        inflight_t *rec = peer->handling;
        fail_request(r, rec, ERR_SERVICE_GONE, "the instance handling this request disconnected");
        inflight_remove(r->inflight, &rec);
    }
    while (peer->waiting)
        inflight_forget_requester(peer->waiting);
    if (peer->watching)
        r->watchers--;
    trace_stop(r->trace, peer);
    topics_remove_owner(r->topics, peer);
    if (policy_has(r->policy, HOOK_ON_UNREGISTER))
        for (int i = 0; i < peer->name_count; i++)
            policy_on_unregister(r->policy, peer->names[i], peer);
    if (peer->name_count > 0) {
        char names[256] = "";
        for (int i = 0; i < peer->name_count; i++) {
            size_t used = strlen(names);
            snprintf(names + used, sizeof names - used, "%s%s", i ? "," : "", peer->names[i]);
        }
        log_fields_t f = {.peer = label, .service = names};
        log_limited_with(&gone_lines, PEER_EVENT_LINES_PER_MINUTE, LOG_LEVEL_INFO, &f,
                         peer->kind == PEER_LUA ? "Lua service %s unloaded; unregistered %s"
                                                : "peer %s disconnected; unregistered %s",
                         label, names);
    } else {
        log_debug("peer %s disconnected", label);
    }
    registry_remove_peer(r->registry, &peer);
}

/* Answers a connection the broker keeps no record of, straight back on
 * the identity the message came with. */
static void answer_stranger(router_t *r, wire_msg_t *m, bus_err_t code, const char *why)
{
    size_t len = 0;
    char *text = reply_error_about(NULL, code, why, &len);
    zmq_msg_t data;
    if (text && zmq_msg_init_size(&data, len) == 0) {
        memcpy(zmq_msg_data(&data), text, len);
        r->stats.errors[code]++;
        if (r->wire.send_back(r->wire.ctx, m, &data) == 0)
            r->stats.out[MT_ERROR]++;
        zmq_msg_close(&data);
    }
    reply_free(text);
    log_limited(&stranger_lines, PEER_EVENT_LINES_PER_MINUTE, LOG_LEVEL_WARN,
                "refused a message from a connection without a record: %s", why);
}

/* The key ZAP accepted for the connection a message came on (auth.c sets
 * it as the message's User-Id), or "" in plain mode. */
static const char *key_of_message(router_t *r, wire_msg_t *m)
{
    if (!r->auth)
        return "";
    const char *key = zmq_msg_gets(&m->data, "User-Id");
    return key ? key : "";
}

/* Whether `peer`, a record found by descriptor or identity, is the
 * connection this message came on: same identity, and under CURVE the
 * same key. Anything else means that record's connection is gone, even if
 * the socket monitor has not said so yet (a descriptor's number is reused
 * at once, and an identity is free again as soon as its connection ends). */
static bool same_connection(const peer_t *peer, const void *id, size_t id_len, const char *key)
{
    return peer->id_len == id_len && memcmp(peer->id, id, id_len) == 0 &&
           strcmp(peer->key, key) == 0;
}

/* The peer record for the connection a message came on, or NULL if the
 * message was answered (or dropped) without one. What a message may do is
 * decided from this record, and this record only ever comes from the
 * connection: its descriptor, its routing identity and, under CURVE, the
 * key it authenticated with. Hosted services are in a table of their own
 * that no identity from the wire reaches (registry.h). */
static peer_t *peer_of_message(router_t *r, wire_msg_t *m)
{
    const void *id = zmq_msg_data(&m->id);
    size_t id_len = zmq_msg_size(&m->id);
    if (id_len == 0 || id_len > PEER_ID_MAX) {
        /* libzmq takes identities of any length from a raw ZMTP peer */
        answer_stranger(r, m, ERR_BAD_FRAMES, "routing identity longer than 255 bytes");
        return NULL;
    }
    const char *key = key_of_message(r, m);
    if (r->auth && !*key) {
        answer_stranger(r, m, ERR_DENIED, "no authenticated key on this connection");
        return NULL;
    }
    peer_t *on_fd = registry_peer_on_fd(r->registry, m->fd);
    if (on_fd && same_connection(on_fd, id, id_len, key))
        return on_fd;                           /* the common case */
    if (on_fd) {
        registry_fd_mark_stale(r->registry, m->fd);
        router_peer_gone(r, on_fd);
    }
    peer_t *peer = registry_find_peer(r->registry, id, id_len);
    if (peer && peer->restored) {
        /* R3: a restored record is adopted by its identity with the key
         * that registered it, and by nothing else until its grace ends */
        if (strcmp(peer->key, key) != 0) {
            answer_stranger(r, m, ERR_DENIED, "this identity's registrations were restored "
                            "after a broker restart for another key");
            return NULL;
        }
        registry_adopt(r->registry, peer);
    }
    if (peer) {
        bool other_key = strcmp(peer->key, key) != 0;
        bool other_fd = m->fd >= 0 && peer->fd != m->fd;
        if (other_key || (other_fd && peer->fd >= 0)) {
            /* same identity on a new connection: the old one is gone, and
             * its registrations with it (L1) */
            if (peer->fd >= 0)
                registry_fd_mark_stale(r->registry, peer->fd);
            router_peer_gone(r, peer);
            peer = NULL;
        } else if (other_fd) {
            registry_set_fd(r->registry, peer, m->fd);   /* its descriptor was unknown */
        }
    }
    if (!peer && registry_peer_count(r->registry) >= r->cfg->max_peers) {
        answer_stranger(r, m, ERR_LIMIT_EXCEEDED, "the broker has as many connections as it may");
        return NULL;
    }
    if (!peer) {
        peer = registry_add_peer(r->registry, id, id_len, PEER_REMOTE, m->fd);
        if (peer) {
            snprintf(peer->key, sizeof peer->key, "%s", key);
            /* where it connects from (libzmq's metadata: TCP only), for
             * peers and the logs; once per connection */
            const char *addr = zmq_msg_gets(&m->data, "Peer-Address");
            if (addr)
                snprintf(peer->addr, sizeof peer->addr, "%s", addr);
        }
    }
    return peer;
}

/* --- the rules --- */

/* S1, S2: a peer that registered names sends as one of them; a peer that
 * registered nothing may use a name nobody holds. */
static bool src_allowed(router_t *r, peer_t *peer, const env_value_t *src)
{
    if (peer->name_count > 0)
        return peer_holds(peer, src->ptr, src->len);
    /* a client that registers nothing sends as one name, message after
     * message: a compare instead of a keyed hash while nobody registers */
    uint64_t gen = registry_generation(r->registry);
    if (peer->free_src_known && peer->free_src_gen == gen && peer->free_src_len == src->len &&
        memcmp(peer->free_src, src->ptr, src->len) == 0)
        return true;
    if (registry_find_service(r->registry, src->ptr, src->len))
        return false;
    peer->free_src_known = src->len <= sizeof peer->free_src;
    if (peer->free_src_known) {
        peer->free_src_len = (uint8_t)src->len;
        peer->free_src_gen = gen;
        memcpy(peer->free_src, src->ptr, src->len);
    }
    return true;
}

static void answer_registration(router_t *r, peer_t *peer, const envelope_t *env,
                                const char *action)
{
    char name[NAME_MAX_LEN + 1], corr[MSG_ID_MAX_LEN + 1];
    reply_copy_plain(name, sizeof name, &env->f[EF_SRC]);
    reply_copy_plain(corr, sizeof corr, &env->f[EF_MSG_ID]);
    cJSON *payload = cJSON_CreateObject();
    if (payload) {
        cJSON_AddStringToObject(payload, "status", "ok");
        cJSON_AddStringToObject(payload, "name", name);
    }
    size_t len = 0;
    char *text = reply_response(name, action, corr, payload, &len);
    if (text)
        router_send_made(r, peer, text, len, MT_RESPONSE);
    reply_free(text);
}

/* With CURVE (N3, docs/security.md): a key registers only the names the
 * allow list gives it, and never a name that peers with another key hold.
 * Lua services are in-process and trusted. Returns true if refused. */
static bool refuse_by_key(router_t *r, peer_t *peer, const envelope_t *env)
{
    char name[NAME_MAX_LEN + 1];
    reply_copy_plain(name, sizeof name, &env->f[EF_SRC]);
    if (!auth_may_register(r->auth, peer->key, name)) {
        router_send_error(r, peer, env, ERR_DENIED, "your key may not register that name");
        return true;
    }
    service_t *svc = registry_find_service(r->registry, name, strlen(name));
    for (int i = 0; svc && i < svc->count; i++) {
        const peer_t *holder = svc->instances[i];
        if (holder->kind == PEER_REMOTE && strcmp(holder->key, peer->key) != 0) {
            router_send_error(r, peer, env, ERR_NAME_TAKEN, "a peer with another key holds that name");
            return true;
        }
    }
    return false;
}

static void handle_register(router_t *r, peer_t *peer, const envelope_t *env)
{
    const env_value_t *name = &env->f[EF_SRC];
    if (peer_holds(peer, name->ptr, name->len)) {
        answer_registration(r, peer, env, "register");      /* idempotent (T1) */
        return;
    }
    if (policy_has(r->policy, HOOK_ON_REGISTER)) {
        char text[NAME_MAX_LEN + 1], reason[512];
        reply_copy_plain(text, sizeof text, name);
        policy_verdict_t verdict = policy_on_register(r->policy, text, peer, reason, sizeof reason);
        if (verdict == POLICY_REJECT || verdict == POLICY_FAIL) {
            router_send_error(r, peer, env, verdict == POLICY_REJECT ? ERR_DENIED : ERR_POLICY_ERROR,
                              verdict == POLICY_REJECT ? reason : "the policy's on_register hook failed");
            return;
        }
    }
    if (r->auth && peer->kind == PEER_REMOTE && refuse_by_key(r, peer, env))
        return;
    if ((size_t)peer->name_count >= r->cfg->max_names_per_peer) {
        router_send_error(r, peer, env, ERR_LIMIT_EXCEEDED, "this connection holds as many names as it may");
        return;
    }
    if (!registry_find_service(r->registry, name->ptr, name->len) &&
        registry_service_count(r->registry) >= r->cfg->max_services) {
        router_send_error(r, peer, env, ERR_LIMIT_EXCEEDED, "the broker holds as many service names as it may");
        return;
    }
    if (registry_register(r->registry, peer, name->ptr, name->len) < 0) {
        router_send_error(r, peer, env, ERR_INTERNAL, "out of memory");
        return;
    }
    if (r->bus.ctx)
        r->bus.holds(r->bus.ctx, name->ptr, name->len, +1);
    char label[2 * PEER_ID_MAX + 3];
    char text[NAME_MAX_LEN + 1];
    reply_copy_plain(text, sizeof text, name);
    log_fields_t f = {.peer = peer_label(peer, label), .service = text};
    log_limited_with(&register_lines, PEER_EVENT_LINES_PER_MINUTE, LOG_LEVEL_INFO, &f,
                     "registered %s (peer %s)", text, label);
    answer_registration(r, peer, env, "register");
}

static void handle_unregister(router_t *r, peer_t *peer, const envelope_t *env)
{
    const env_value_t *name = &env->f[EF_SRC];
    if (registry_unregister(r->registry, peer, name->ptr, name->len) < 0) {
        router_send_error(r, peer, env, ERR_NOT_REGISTERED, "this connection has not registered that name");
        return;
    }
    if (r->bus.ctx)
        r->bus.holds(r->bus.ctx, name->ptr, name->len, -1);
    char label[2 * PEER_ID_MAX + 3], text[NAME_MAX_LEN + 1];
    reply_copy_plain(text, sizeof text, name);
    log_fields_t f = {.peer = peer_label(peer, label), .service = text};
    log_limited_with(&unregister_lines, PEER_EVENT_LINES_PER_MINUTE, LOG_LEVEL_INFO, &f,
                     "unregistered %s (peer %s)", text, label);
    if (policy_has(r->policy, HOOK_ON_UNREGISTER)) {
        reply_copy_plain(text, sizeof text, name);
        policy_on_unregister(r->policy, text, peer);
    }
    answer_registration(r, peer, env, "unregister");
}

/* What a request's record in flight needs besides its envelope. */
typedef struct {
    unsigned id_hash;           /* inflight_hash() of its msg_id */
    metric_series_t *series;    /* its metrics series (may be NULL) */
    const char *bus_origin;     /* came over the bus: the broker that asked; else NULL */
    uint64_t bus_seq;
} tracking_t;

static bool cross_request(router_t *r, peer_t *peer, wire_msg_t *m, const envelope_t *env,
                          const char *name, const tracking_t *track, bus_err_t *err);
static peer_t *bus_peer(router_t *r);
static bool cross_event(router_t *r, peer_t *peer, zmq_msg_t *data, const envelope_t *env,
                        const char *name, bus_err_t *err);
static void cross_once(router_t *r, bus_send_fn send, zmq_msg_t *data,
                       uint64_t *counter);

/* Hands `data` to one live instance of service `name` (`known`: that
 * service, if the caller has looked it up; or to `instance`,
 * if a policy chose one), round-robin, skipping instances whose queue is
 * full or that hold their share of the in-flight table, and dropping those
 * found gone. A request (`track` not NULL) is recorded in flight first.
 * Returns the chosen instance, or NULL with *err set (no_such_service,
 * busy), or with *err ERR_NONE when the sender was answered here already:
 * a bound of the in-flight table refused the request, and only this
 * function knows which (refuse_delivery then sends nothing). */
static peer_t *deliver_to_service(router_t *r, peer_t *sender, zmq_msg_t *data,
                                  const envelope_t *env, const char *name, size_t len,
                                  service_t *known, peer_t *instance, const tracking_t *track,
                                  bus_err_t *err)
{
    static log_ratelimit_t refusals_limit;
    int busy_tries = 0, share_tries = 0;
    char why[200];
    bus_err_t code = ERR_BUSY;
    for (;;) {
        /* looked up again after a try: a gone instance may take its service with it */
        service_t *svc = known ? known : registry_find_service(r->registry, name, len);
        known = NULL;
        if (!svc) {
            *err = busy_tries ? ERR_BUSY : ERR_NO_SUCH_SERVICE;
            return NULL;
        }
        if (busy_tries >= (instance ? 1 : svc->count)) {
            *err = ERR_BUSY;
            if (share_tries == 0)
                return NULL;    /* queues full: refuse_delivery says so */
            snprintf(why, sizeof why, instance
                     ? "the instance of %s the policy chose has %zu requests in flight, the most "
                       "one instance may"
                     : share_tries == busy_tries
                     ? "every instance of %s has %zu requests in flight, the most one instance may"
                     : "every instance of %s has a full queue or %zu requests in flight, the most "
                       "one instance may", name, inflight_limits(r->inflight).per_handler);
            goto answered;
        }
        peer_t *to = instance ? instance : service_next_instance(svc);
        inflight_t *rec = NULL;
        if (track) {
            uint64_t ttl = env->ttl_ms ? env->ttl_ms : r->cfg->request_timeout_ms;
            uint64_t now_us = r->clock_us();     /* one clock read for both */
            switch (inflight_add(r->inflight, env, track->id_hash, sender, to,
                                 now_us / 1000 + ttl, &rec)) {
            case INFLIGHT_ADDED:
                break;
            case INFLIGHT_HANDLER_SHARE:
                busy_tries++;                 /* like a full queue: the next instance */
                share_tries++;
                continue;
            case INFLIGHT_REQUESTER_SHARE:
                snprintf(why, sizeof why, "this connection has %zu requests in flight, the most "
                         "one connection may; retry when some are answered",
                         inflight_limits(r->inflight).per_requester);
                goto answered;
            case INFLIGHT_TABLE_FULL:
                snprintf(why, sizeof why, "the broker has %zu requests in flight, the most it may; "
                         "retry later", inflight_limits(r->inflight).limit);
                goto answered;
            case INFLIGHT_NO_MEMORY:
                code = ERR_INTERNAL;
                snprintf(why, sizeof why, "out of memory recording the request");
                goto answered;
            }
            rec->series = track->series;
            rec->started_us = now_us;
            memcpy(rec->service, name, len);        /* the name it went to, for on_outcome */
            rec->service[len] = '\0';
            if (track->bus_origin) {
                rec->bus_seq = track->bus_seq;
                snprintf(rec->bus_origin, sizeof rec->bus_origin, "%s", track->bus_origin);
            }
        }
        if (deliver(r, to, data, env) == 0)
            return to;
        int errno_was = errno;
        if (rec)
            inflight_remove(r->inflight, &rec);
        if (errno_was == EAGAIN) {
            busy_tries++;
        } else if (to == sender) {
            /* the sender asked a name it holds itself and is gone already:
             * its record is still in use up the stack; the monitor drops it */
            *err = ERR_NO_SUCH_SERVICE;
            return NULL;
        } else {
            router_peer_gone(r, to);      /* EHOSTUNREACH: connection gone */
            instance = NULL;
        }
    }
answered:;
    char label[2 * PEER_ID_MAX + 3];
    log_limited(&refusals_limit, 10, LOG_LEVEL_WARN, "refused a request from peer %s to %s: %s",
                peer_label(sender, label), name, why);
    router_send_error(r, sender, env, code, why);
    *err = ERR_NONE;
    return NULL;
}

/* The services a request or event goes to: dst, unless route() says
 * (in filter()'s call already, if `ahead` was taken there). */
static bool choose_route(router_t *r, peer_t *peer, const envelope_t *env, route_t *route,
                         const policy_route_ahead_t *ahead)
{
    const env_value_t *dst = &env->f[EF_DST];
    if (policy_has(r->policy, HOOK_ROUTE)) {
        char err[512];
        policy_verdict_t verdict = ahead->taken ? ahead->verdict
                                                : policy_route(r->policy, env, route, err, sizeof err);
        if (ahead->taken && verdict == POLICY_DECIDED) {
            route->count = ahead->route.count;
            route->instance = ahead->route.instance;
            memcpy(route->names, ahead->route.names, sizeof route->names[0] * (size_t)route->count);
        }
        if (verdict == POLICY_FAIL) {
            router_send_error(r, peer, env, ERR_POLICY_ERROR, "the policy's route hook failed");
            return false;
        }
        if (verdict == POLICY_DECIDED)
            return true;
    }
    route->count = 1;
    route->instance = NULL;
    memcpy(route->names[0], dst->ptr, dst->len);
    route->names[0][dst->len] = '\0';
    return true;
}

/* Whether every instance of `name` is a restored record not back yet. */
static bool only_restored(router_t *r, const char *name)
{
    service_t *svc = registry_find_service(r->registry, name, strlen(name));
    for (int i = 0; svc && i < svc->count; i++)
        if (!svc->instances[i]->restored)
            return false;
    return svc != NULL;
}

static void refuse_delivery(router_t *r, peer_t *peer, const envelope_t *env,
                            const route_t *route, bus_err_t err)
{
    char why[160];
    const char *name = route->names[0];
    if (err == ERR_NONE)
        return;                 /* answered by deliver_to_service */
    if (err == ERR_NO_SUCH_SERVICE)
        snprintf(why, sizeof why, "no service named %s is registered", name);
    else if (err == ERR_BUSY && registry_restored_count(r->registry) > 0 &&
             only_restored(r, name))
        snprintf(why, sizeof why, "%s was restored after a broker restart and has not "
                 "reconnected yet; retry", name);
    else if (err == ERR_BUSY)
        snprintf(why, sizeof why, "%s cannot take more messages now", name);
    else
        snprintf(why, sizeof why, "could not record the request");
    router_send_error(r, peer, env, err, why);
}

/* B5 for a request: the frame as it came, kept while tracing is on, since
 * delivery consumes it. Returns whether `copy` holds it. */
static bool trace_keep_frame(router_t *r, zmq_msg_t *frame, zmq_msg_t *copy)
{
    if (!trace_active(r->trace))
        return false;
    zmq_msg_init(copy);
    zmq_msg_copy(copy, frame);
    return true;
}

/* The request `copy` (trace_keep_frame) from `from`, handed to `to` as
 * service `name` (NULL `to`: refused, which on_outcome traces); closes
 * the copy. */
static void trace_handed_over(router_t *r, peer_t *from, peer_t *to, const char *name,
                              const envelope_t *env, zmq_msg_t *copy)
{
    if (to) {
        char from_label[2 * PEER_ID_MAX + 3], to_label[2 * PEER_ID_MAX + 3];
        trace_point_t p = {.kind = TRACE_REQUEST, .service = c_text(name),
                           .dst = env_text(env, EF_DST), .src = env_text(env, EF_SRC),
                           .action = env_text(env, EF_ACTION), .msg_id = env_text(env, EF_MSG_ID),
                           .peer = peer_label(from, from_label), .to = peer_label(to, to_label),
                           .latency_us = -1, .message = zmq_msg_data(copy),
                           .message_len = zmq_msg_size(copy)};
        trace_offer(r->trace, &p, r->clock_us() / 1000, send_trace_copy, r);
    }
    zmq_msg_close(copy);
}

/* inflight_hash() of a request's msg_id, once a message: route_comes_next
 * asks before filter() runs and handle_request after it. Kept with a copy
 * of the bytes it hashed, so that a filter() that rewrote the message (a
 * new buffer; its msg_id must be the same) is hashed again only if the
 * bytes differ. On the stack of one message's route_message. */
typedef struct {
    bool known;
    uint32_t len;
    unsigned hash;
    char bytes[MSG_ID_MAX_LEN];
} id_hash_t;

static unsigned id_hash_of(id_hash_t *memo, const env_value_t *id)
{
    if (memo->known && memo->len == id->len && memcmp(memo->bytes, id->ptr, id->len) == 0)
        return memo->hash;
    unsigned h = inflight_hash(id->ptr, id->len);
    memo->known = id->len <= sizeof memo->bytes;
    if (memo->known) {
        memo->len = id->len;
        memo->hash = h;
        memcpy(memo->bytes, id->ptr, id->len);
    }
    return h;
}

/* The first of a route's names that is a registered service, and its
 * index in *at (NULL and route->count if none is): where the request goes
 * unless every instance refuses, and the name its metrics series is
 * kept under. */
static service_t *first_served(router_t *r, const route_t *route, int *at)
{
    for (int i = 0; i < route->count; i++) {
        service_t *svc = registry_find_service(r->registry, route->names[i], strlen(route->names[i]));
        if (svc) {
            *at = i;
            return svc;
        }
    }
    *at = route->count;
    return NULL;
}

static void handle_request(router_t *r, peer_t *peer, wire_msg_t *m, const envelope_t *env,
                           const policy_route_ahead_t *ahead, id_hash_t *id_memo)
{
    const env_value_t *dst = &env->f[EF_DST];
    if (env_equals(dst, "broker")) {
        if (r->hosts.broker_request)
            r->hosts.broker_request(r->hosts.broker_ctx, peer, env);
        else
            router_send_error(r, peer, env, ERR_UNKNOWN_ACTION, "this broker has no broker service");
        return;
    }
    if (env_equals(dst, "broadcast")) {
        router_send_error(r, peer, env, ERR_BAD_ENVELOPE, "broadcast carries events only");
        return;
    }
    if (r->stopping) {
        router_send_error(r, peer, env, ERR_SHUTTING_DOWN, "the broker is shutting down");
        return;
    }
    const env_value_t *id = &env->f[EF_MSG_ID];
    tracking_t track = {.id_hash = id_hash_of(id_memo, id)};
    if (inflight_find_hashed(r->inflight, id->ptr, id->len, track.id_hash)) {
        router_send_error(r, peer, env, ERR_DUPLICATE_MSG_ID, "a request with this msg_id is in flight");
        return;
    }
    route_t route;
    if (!choose_route(r, peer, env, &route, ahead))
        return;
    /* a list of names is an order of preference: the first with a live
     * instance takes the request, so it still gets exactly one answer;
     * its series is that name's (as routed) and dst's (as addressed) */
    int at;
    service_t *served = first_served(r, &route, &at);
    track.series = metrics_series_of(r->metrics, served ? route.names[at] : NULL,
                                     served ? strlen(route.names[at]) : 0, dst,
                                     &env->f[EF_ACTION], r->cfg->metrics_max_series);
    metric_series_t *outer = r->routing;
    r->routing = track.series;          /* for a refusal on the way (note_refused) */
    zmq_msg_t copy;
    bool traced = trace_keep_frame(r, &m->data, &copy);
    bus_err_t err = ERR_NO_SUCH_SERVICE;
    peer_t *to = NULL;
    const char *name = NULL;
    /* the names before the first served one have no service: none to try
     * (when none is served, each is tried and refused as before) */
    for (int i = served ? at : 0; i < route.count && !to; i++) {
        name = route.names[i];
        to = deliver_to_service(r, peer, &m->data, env, name, strlen(name),
                                i == at ? served : NULL, route.instance, &track, &err);
        if (!to && err != ERR_NO_SUCH_SERVICE)
            break;
    }
    /* held nowhere here: local first, then the other brokers (X2) */
    if (!to && err == ERR_NO_SUCH_SERVICE && r->bus.ctx && !route.instance &&
        cross_request(r, peer, m, env, route.names[0], &track, &err)) {
        to = bus_peer(r);
        name = route.names[0];
    }
    if (to) {
        r->stats.out[MT_REQUEST]++;
        metrics_handed_over(r->metrics, track.series);
    } else {
        refuse_delivery(r, peer, env, &route, err);
    }
    r->routing = outer;
    if (traced)
        trace_handed_over(r, peer, to, name, env, &copy);
}

/* T4: an answer goes back to whoever sent the request, and only from the
 * instance the request was handed to. */
static void handle_answer(router_t *r, peer_t *peer, wire_msg_t *m, const envelope_t *env)
{
    const env_value_t *corr = &env->f[EF_CORRELATION_ID];
    inflight_t *rec = inflight_find(r->inflight, corr->ptr, corr->len);
    if (!rec) {
        r->stats.late_or_unknown++;
        router_send_error(r, peer, env, ERR_UNKNOWN_REQUEST,
                          peer->name_count == 0
                              ? "no request in flight has this correlation_id; this broker "
                                "does not know you (it may have restarted): register again"
                              : "no request in flight has this correlation_id (already "
                                "answered, timed out, or never sent)");
        return;
    }
    if (rec->handler != peer) {
        r->stats.not_yours++;
        router_send_error(r, peer, env, ERR_NOT_YOUR_REQUEST,
                          "that request was handed to another instance");
        return;
    }
    /* the request ends with its answer, even one its requester is gone
     * for (the service did its part) */
    answer_code_t code = {"", 0};
    if (env->type == MT_ERROR)
        read_answer_code(env, &code);
    if (!rec->requester) {
        r->stats.requester_gone++;
        note_answer(r, rec, env->type, &code, env, &m->data);
        deadletters_add(r->dead, ERR_REQUESTER_GONE, peer, env, NULL, NULL, NULL, NULL);
        inflight_remove(r->inflight, &rec);
        return;
    }
    zmq_msg_t copy;                     /* for a trace: delivery consumes the frame */
    bool traced = trace_active(r->trace);
    if (traced) {
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, &m->data);
    }
    msg_type_t type = env->type;        /* env points into the frame delivery hands over */
    if (deliver(r, rec->requester, &m->data, env) == 0) {
        r->stats.out[type]++;
        note_answer(r, rec, type, &code, env, traced ? &copy : NULL);
        inflight_remove(r->inflight, &rec);
        if (traced)
            zmq_msg_close(&copy);
        return;
    }
    if (traced)
        zmq_msg_close(&copy);
    if (errno == EAGAIN) {
        router_send_error(r, peer, env, ERR_BUSY, "the requester cannot take more messages now; retry");
        return;
    }
    note_answer(r, rec, type, &code, env, &m->data);
    r->stats.requester_gone++;
    deadletters_add(r->dead, ERR_REQUESTER_GONE, peer, env, NULL, NULL, NULL, NULL);
    peer_t *requester = rec->requester;
    inflight_remove(r->inflight, &rec);
    router_peer_gone(r, requester);
}

/* T5: dst "broadcast" reaches every registered connection but the sender's,
 * each once. */
static void broadcast(router_t *r, peer_t *sender, wire_msg_t *m, const envelope_t *env)
{
    peer_t *peer, *next, *gone[64];
    int gone_count = 0;
    for (peer = registry_next_peer(r->registry, NULL); peer; peer = next) {
        next = registry_next_peer(r->registry, peer);
        if (peer == sender || peer->name_count == 0)
            continue;
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, &m->data);
        if (deliver(r, peer, &copy, env) == 0) {
            r->stats.out[MT_EVENT]++;
            continue;
        }
        r->stats.broadcast_undelivered++;
        if (errno == EHOSTUNREACH && gone_count < 64)
            gone[gone_count++] = peer;
        zmq_msg_close(&copy);
    }
    for (int i = 0; i < gone_count; i++)
        router_peer_gone(r, gone[i]);
    /* once, from the broker it entered at; never again from the others (X6) */
    if (r->bus.ctx && sender->kind != PEER_BUS)
        cross_once(r, r->bus.broadcast, &m->data, &r->stats.bus.broadcasts_out);
}

/* A copy of an event for every connection that asked to watch (the
 * broker action watch); costs nothing while nobody watches. */
static void copy_to_watchers(router_t *r, peer_t *sender, wire_msg_t *m, const envelope_t *env)
{
    for (peer_t *peer = registry_next_peer(r->registry, NULL); peer;
         peer = registry_next_peer(r->registry, peer)) {
        if (!peer->watching || peer == sender)
            continue;
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, &m->data);
        if (deliver(r, peer, &copy, env) == 0)
            r->stats.out[MT_EVENT]++;
        else
            zmq_msg_close(&copy);
    }
}

/* TP3: a topic event reaches each subscribing connection once (one member
 * of each queue group), never its sender; nobody subscribed is no error. */
typedef struct {
    router_t *r;
    wire_msg_t *m;
    const envelope_t *env;
    peer_t *gone[64];
    int gone_count;
} publish_t;

static void deliver_topic_copy(void *owner, void *ctx)
{
    publish_t *pub = ctx;
    peer_t *to = owner;
    zmq_msg_t copy;
    zmq_msg_init(&copy);
    zmq_msg_copy(&copy, &pub->m->data);
    if (deliver(pub->r, to, &copy, pub->env) == 0) {
        pub->r->stats.out[MT_EVENT]++;
        return;
    }
    pub->r->stats.topic_undelivered++;
    if (errno == EHOSTUNREACH && pub->gone_count < 64)
        pub->gone[pub->gone_count++] = to;  /* dropped after: not while matching */
    zmq_msg_close(&copy);
}

static void publish(router_t *r, peer_t *sender, wire_msg_t *m, const envelope_t *env)
{
    const env_value_t *topic = &env->f[EF_TOPIC];
    publish_t pub = {.r = r, .m = m, .env = env};
    size_t reached = topics_publish(r->topics, topic->ptr, topic->len, sender, deliver_topic_copy, &pub);
    if (reached == 0)
        r->stats.topic_unmatched++;
    metrics_topic(r->metrics, topic->ptr, topic->len, reached);
    for (int i = 0; i < pub.gone_count; i++)
        router_peer_gone(r, pub.gone[i]);
    if (r->bus.ctx && sender->kind != PEER_BUS)
        cross_once(r, r->bus.topic, &m->data, &r->stats.bus.topics_out);
}

/* B3 and B5 for an event that entered here, or arrived from another
 * broker (`peer` the bus): copies before it is routed. */
static void observe_event(router_t *r, peer_t *peer, wire_msg_t *m, const envelope_t *env)
{
    if (r->watchers > 0)
        copy_to_watchers(r, peer, m, env);
    if (trace_active(r->trace)) {
        char from[2 * PEER_ID_MAX + 3];
        trace_point_t p = {.kind = TRACE_EVENT, .dst = env_text(env, EF_DST),
                           .src = env_text(env, EF_SRC), .action = env_text(env, EF_ACTION),
                           .msg_id = env_text(env, EF_MSG_ID), .topic = env_text(env, EF_TOPIC),
                           .peer = peer_label(peer, from), .latency_us = -1,
                           .message = zmq_msg_data(&m->data), .message_len = zmq_msg_size(&m->data)};
        trace_offer(r->trace, &p, r->clock_us() / 1000, send_trace_copy, r);
    }
}

static void handle_event(router_t *r, peer_t *peer, wire_msg_t *m, const envelope_t *env,
                         const policy_route_ahead_t *ahead)
{
    const env_value_t *dst = &env->f[EF_DST];
    observe_event(r, peer, m, env);
    if (env->f[EF_TOPIC].kind == JSON_STRING) {
        const env_value_t *topic = &env->f[EF_TOPIC];
        if (r->auth && peer->kind == PEER_REMOTE &&
            !auth_may_publish(r->auth, peer->key, topic->ptr, topic->len)) {
            router_send_error(r, peer, env, ERR_DENIED, "your key may not publish on that topic");
            return;
        }
        publish(r, peer, m, env);
        return;
    }
    if (env_equals(dst, "broadcast")) {
        broadcast(r, peer, m, env);
        return;
    }
    if (env_equals(dst, "broker")) {
        router_send_error(r, peer, env, ERR_BAD_ENVELOPE, "the broker service takes requests only");
        return;
    }
    route_t route;
    if (!choose_route(r, peer, env, &route, ahead))
        return;
    /* a list of names fans the event out: one instance of each gets it */
    bus_err_t err = ERR_NONE;
    int delivered = 0;
    for (int i = 0; i < route.count; i++) {
        const char *name = route.names[i];
        zmq_msg_t copy;
        zmq_msg_init(&copy);
        zmq_msg_copy(&copy, &m->data);
        bus_err_t this_err = ERR_NONE;
        if (deliver_to_service(r, peer, &copy, env, name, strlen(name), NULL, route.instance, NULL,
                               &this_err)) {
            r->stats.out[MT_EVENT]++;
            delivered++;
        } else if (this_err == ERR_NO_SUCH_SERVICE && r->bus.ctx && !route.instance &&
                   peer->kind != PEER_BUS && cross_event(r, peer, &copy, env, name, &this_err)) {
            delivered++;
        } else if (!err) {
            err = this_err;
        }
        zmq_msg_close(&copy);
    }
    if (!delivered)
        refuse_delivery(r, peer, env, &route, err);
}

/* filter(msg): the policy may refuse the message or hand back a changed
 * one, which then replaces it (re-encoded, checked again, and still from
 * the same sender: msg_id, type and src must not change). Returns false if
 * the message was answered and must go no further. */
static bool apply_filter(router_t *r, peer_t *peer, wire_msg_t *m, envelope_t *env,
                         policy_route_ahead_t *ahead)
{
    char *text = NULL, reason[512];
    size_t len = 0;
    switch (ahead ? policy_filter_route(r->policy, env, &text, &len, reason, sizeof reason, ahead)
                  : policy_filter(r->policy, env, &text, &len, reason, sizeof reason)) {
    case POLICY_PASS:
        return true;
    case POLICY_REJECT:
        router_send_error(r, peer, env, policy_refusal_code(r->policy), reason);
        return false;
    case POLICY_FAIL:
        router_send_error(r, peer, env, ERR_POLICY_ERROR, "the policy's filter hook failed");
        return false;
    case POLICY_DECIDED:
        break;
    }
    envelope_t changed;
    const char *why = NULL;
    bus_err_t err = len > r->cfg->max_message_bytes ? ERR_TOO_LARGE : ERR_NONE;
    if (err)
        why = "the rewritten message is over --max-message-bytes";
    else
        err = envelope_parse(&changed, text, len, &why);
    const env_field_t kept[] = {EF_MSG_ID, EF_TYPE, EF_SRC};
    for (size_t i = 0; !err && i < sizeof kept / sizeof kept[0]; i++) {
        const env_value_t *a = &env->f[kept[i]], *c = &changed.f[kept[i]];
        if (a->len != c->len || memcmp(a->ptr, c->ptr, a->len) != 0) {
            err = ERR_POLICY_ERROR;
            why = "filter() may not change msg_id, type or src";
        }
    }
    if (err) {
        log_limited(&send_failures_limit, 20, LOG_LEVEL_WARN,
                    "policy filter() returned a message the broker refuses: %s", why);
        router_send_error(r, peer, env, ERR_POLICY_ERROR, "the policy's filter hook returned a bad message");
        free(text);
        return false;
    }
    /* the frame now owns the new text; `changed` points into it */
    zmq_msg_close(&m->data);
    zmq_msg_init_data(&m->data, text, len, free_text, NULL);
    *env = changed;
    return true;
}

/* Answers too_large for a message over --max-message-bytes (E2). */
static bool refuse_too_large(router_t *r, peer_t *peer, size_t len)
{
    if (len <= r->cfg->max_message_bytes)
        return false;
    char why[128];
    snprintf(why, sizeof why, "message of %zu bytes is over the limit of %zu",
             len, r->cfg->max_message_bytes);
    r->stats.in[MT_NONE]++;
    router_send_error(r, peer, NULL, ERR_TOO_LARGE, why);
    return true;
}

/* True if, should filter() pass it unchanged, handle_request or
 * handle_event would ask route() where `env` goes next: then both run in
 * one call into the policy (policy_filter_route). The same tests as
 * theirs, in their order. */
static bool route_comes_next(const router_t *r, const envelope_t *env, id_hash_t *id_memo)
{
    const env_value_t *dst = &env->f[EF_DST];
    if (!policy_has(r->policy, HOOK_ROUTE) || env_equals(dst, "broker") || env_equals(dst, "broadcast"))
        return false;
    if (env->type == MT_EVENT)
        return env->f[EF_TOPIC].kind != JSON_STRING;
    if (env->type != MT_REQUEST || r->stopping)
        return false;
    const env_value_t *id = &env->f[EF_MSG_ID];
    return !inflight_find_hashed(r->inflight, id->ptr, id->len, id_hash_of(id_memo, id));
}

/* The rules after the envelope is read: who may send it, the policy's
 * say, and where it goes. */
static void route_message(router_t *r, peer_t *peer, wire_msg_t *m, envelope_t *env)
{
    const env_value_t *src = &env->f[EF_SRC];
    if (name_is_reserved(src->ptr, src->len)) {
        router_send_error(r, peer, env, ERR_RESERVED_NAME, "src is a reserved name");
        return;
    }
    if (env->type == MT_REGISTER) {
        handle_register(r, peer, env);
        return;
    }
    if (env->type == MT_UNREGISTER) {
        handle_unregister(r, peer, env);
        return;
    }
    if (!src_allowed(r, peer, src)) {
        router_send_error(r, peer, env, ERR_SPOOFED_SRC,
                          peer->name_count ? "src is not a name this connection registered"
                                           : "src is a name another connection registered");
        return;
    }
    if (policy_has(r->policy, HOOK_AUTHORIZE)) {
        char reason[512];
        policy_verdict_t verdict = policy_authorize(r->policy, env, peer, reason, sizeof reason);
        if (verdict == POLICY_REJECT || verdict == POLICY_FAIL) {
            router_send_error(r, peer, env,
                              verdict == POLICY_REJECT ? policy_refusal_code(r->policy) : ERR_POLICY_ERROR,
                              verdict == POLICY_REJECT ? reason : "the policy's authorize hook failed");
            return;
        }
    }
    policy_route_ahead_t ahead;         /* not zeroed: its route is 2 KB */
    ahead.taken = false;
    id_hash_t id_memo;                  /* not zeroed either: only `known` is read first */
    id_memo.known = false;
    if (policy_has(r->policy, HOOK_FILTER) &&
        !apply_filter(r, peer, m, env, route_comes_next(r, env, &id_memo) ? &ahead : NULL))
        return;
    switch (env->type) {
    case MT_REQUEST:
        handle_request(r, peer, m, env, &ahead, &id_memo);
        break;
    case MT_RESPONSE:
    case MT_ERROR:
        handle_answer(r, peer, m, env);
        break;
    case MT_EVENT:
        handle_event(r, peer, m, env, &ahead);
        break;
    default:
        break;
    }
}

void router_read(const router_t *r, const wire_msg_t *m, router_read_t *rd)
{
    size_t len = m->bad_frames ? 0 : zmq_msg_size((zmq_msg_t *)&m->data);
    rd->read = !m->bad_frames && len <= r->cfg->max_message_bytes;
    rd->why = NULL;
    rd->err = rd->read ? envelope_parse(&rd->env, zmq_msg_data((zmq_msg_t *)&m->data), len, &rd->why)
                     : ERR_NONE;
}

/* A message read with router_read, from `peer`. */
static void handle_from(router_t *r, peer_t *peer, wire_msg_t *m, router_read_t *rd)
{
    /* for peers: one clock read a message (vDSO, no system call) */
    peer->msgs_in++;
    peer->seen_ms = r->clock_us() / 1000;
    if (!peer->since_ms)
        peer->since_ms = peer->seen_ms;
    if (m->bad_frames) {
        r->stats.in[MT_NONE]++;
        router_send_error(r, peer, NULL, ERR_BAD_FRAMES,
                          "expected one JSON frame, optionally after an empty delimiter");
        return;
    }
    if (!rd->read) {
        refuse_too_large(r, peer, zmq_msg_size(&m->data));
        return;
    }
    r->stats.in[rd->env.type]++;
    if (rd->err) {
        router_send_error(r, peer, rd->err == ERR_BAD_JSON ? NULL : &rd->env, rd->err, rd->why);
        return;
    }
    route_message(r, peer, m, &rd->env);
}

void router_handle_read(router_t *r, wire_msg_t *m, router_read_t *rd)
{
    peer_t *peer = peer_of_message(r, m);
    if (!peer)
        return;
    peer->delimiter = m->delimiter;
    handle_from(r, peer, m, rd);
}

void router_inject_made(router_t *r, peer_t *from, zmq_msg_t *data, envelope_t *env)
{
    if (refuse_too_large(r, from, zmq_msg_size(data))) {
        zmq_msg_close(data);
        zmq_msg_init(data);
        return;
    }
    wire_msg_t m = {.delimiter = false, .bad_frames = false, .fd = -1, .injected = true};
    zmq_msg_init(&m.id);
    zmq_msg_init(&m.data);
    zmq_msg_move(&m.data, data);
    envelope_rebase(env, zmq_msg_data(&m.data));
    r->stats.in[env->type]++;
    route_message(r, from, &m, env);
    wire_msg_close(&m);
}

void router_inject_frame(router_t *r, peer_t *from, zmq_msg_t *data)
{
    /* from the record it was made for: no identity to look up */
    wire_msg_t m = {.delimiter = false, .bad_frames = false, .fd = -1, .injected = true};
    zmq_msg_init(&m.id);
    zmq_msg_init(&m.data);
    zmq_msg_move(&m.data, data);
    router_read_t rd;
    router_read(r, &m, &rd);
    handle_from(r, from, &m, &rd);
    wire_msg_close(&m);
}

void router_inject(router_t *r, peer_t *from, const char *text, size_t len)
{
    zmq_msg_t data;
    if (zmq_msg_init_size(&data, len) < 0)
        return;
    memcpy(zmq_msg_data(&data), text, len);
    router_inject_frame(r, from, &data);
    zmq_msg_close(&data);
}

void router_expire(router_t *r, uint64_t now_ms)
{
    inflight_t *rec;
    while ((rec = inflight_expired(r->inflight, now_ms))) {
        fail_request(r, rec, ERR_TIMEOUT, "no answer before the request's deadline");
        inflight_remove(r->inflight, &rec);
    }
}

void router_fail_all(router_t *r, bus_err_t code, const char *why)
{
    while (inflight_count(r->inflight) > 0) {
        inflight_t *rec = inflight_first(r->inflight);
        fail_request(r, rec, code, why);
        inflight_remove(r->inflight, &rec);
    }
}

/* --- across brokers (docs/protocol.md X1-X13) ---
 *
 * The other brokers are one peer of kind PEER_BUS, kept here and not in
 * the registry: the handler of a request that left on the bus, and the
 * requester of one that came over it. What is sent to it goes to the
 * broker and request named by `reply`, set before each use. */

#define CROSSED_EVENTS 1024     /* events awaiting a possible "nobody" (power of 2) */

/* An event that crossed, until a "nobody" about it might come back. */
typedef struct {
    uint64_t seq;
    peer_kind_t kind;
    uint8_t id_len;
    uint8_t id[PEER_ID_MAX];
    char src[NAME_MAX_LEN + 1], action[MSG_ID_MAX_LEN + 1], msg_id[MSG_ID_MAX_LEN + 1];
    char name[NAME_MAX_LEN + 1];
} crossed_event_t;

struct router_bus {
    peer_t peer;
    uint64_t seq;                       /* the last seq given to a crossing */
    struct {                            /* where deliver_to_bus sends */
        char origin[65];
        char kind;
        uint64_t seq;
        char msg_id[MSG_ID_MAX_LEN + 1];
    } reply;
    crossed_event_t *events;            /* ring of CROSSED_EVENTS */
};

int router_bus_start(router_t *r, bus_hooks_t hooks)
{
    struct router_bus *rb = calloc(1, sizeof *rb);
    if (!rb || !(rb->events = calloc(CROSSED_EVENTS, sizeof *rb->events))) {
        free(rb);
        return -1;
    }
    rb->peer.kind = PEER_BUS;
    rb->peer.fd = -1;
    memcpy(rb->peer.id, "(bus)", 5);
    rb->peer.id_len = 5;
    r->crossing = rb;
    r->bus = hooks;
    /* names held already (restored from the state file) are offered too */
    for (peer_t *p = registry_next_peer(r->registry, NULL); p; p = registry_next_peer(r->registry, p))
        for (int i = 0; i < p->name_count; i++)
            hooks.holds(hooks.ctx, p->names[i], strlen(p->names[i]), +1);
    return 0;
}

void router_bus_stop(router_t *r)
{
    if (!r->crossing)
        return;
    peer_t *bus = &r->crossing->peer;   /* no record may point at it once freed */
    while (bus->handling) {
        inflight_t *rec = bus->handling;
        inflight_remove(r->inflight, &rec);
    }
    while (bus->waiting) {
        inflight_t *rec = bus->waiting;
        inflight_remove(r->inflight, &rec);
    }
    free(r->crossing->events);
    free(r->crossing);
    r->crossing = NULL;
    r->bus = (bus_hooks_t){0};
}

static void aim(router_t *r, const char *origin, char kind, uint64_t seq, const char *msg_id)
{
    struct router_bus *rb = r->crossing;
    snprintf(rb->reply.origin, sizeof rb->reply.origin, "%s", origin);
    rb->reply.kind = kind;
    rb->reply.seq = seq;
    snprintf(rb->reply.msg_id, sizeof rb->reply.msg_id, "%s", msg_id);
}

/* Points the bus peer at the broker a record's request came from. False
 * if the bus is gone (stopped). */
static bool aim_at_origin(router_t *r, const inflight_t *rec)
{
    if (!r->crossing)
        return false;
    aim(r, rec->bus_origin, 'r', rec->bus_seq, rec->msg_id);
    return true;
}

/* deliver() to the bus peer: the bytes to the broker `reply` names. An
 * answer (`env` given) is aimed at the origin of the request it answers
 * here, so that the answer path needs no test of its own; an error the
 * router makes (`env` NULL) goes where the caller aimed. The frame is
 * consumed on success, as deliver() promises; a failure is EAGAIN, never
 * "gone": the bus peer is not a connection to drop. */
static int deliver_to_bus(router_t *r, zmq_msg_t *data, const envelope_t *env)
{
    struct router_bus *rb = r->crossing;
    if (!rb) {
        errno = EAGAIN;
        return -1;
    }
    if (env && (env->type == MT_RESPONSE || env->type == MT_ERROR)) {
        const env_value_t *corr = &env->f[EF_CORRELATION_ID];
        inflight_t *rec = inflight_find(r->inflight, corr->ptr, corr->len);
        if (rec && rec->requester == &rb->peer)
            aim_at_origin(r, rec);
    }
    int rc = r->bus.answer(r->bus.ctx, rb->reply.origin, rb->reply.kind,
                                 rb->reply.seq, rb->reply.msg_id, strlen(rb->reply.msg_id),
                                 zmq_msg_data(data), zmq_msg_size(data));
    if (rc < 0) {
        r->stats.bus.unreachable++;
        errno = EAGAIN;             /* not the bus peer's end: never "gone" */
        return -1;
    }
    r->stats.bus.answers_out++;
    zmq_msg_close(data);
    zmq_msg_init(data);
    return 0;
}

/* A request no local instance holds: recorded here (this broker owns its
 * fate: X3, X4) and published to whichever broker holds `name`. False with
 * *err when it could not leave (then the caller answers). */
static bool cross_request(router_t *r, peer_t *peer, wire_msg_t *m, const envelope_t *env,
                          const char *name, const tracking_t *track, bus_err_t *err)
{
    struct router_bus *rb = r->crossing;
    if (peer->kind == PEER_BUS)
        return false;                   /* from the bus: delivered here or nowhere (X6) */
    uint64_t ttl = env->ttl_ms ? env->ttl_ms : r->cfg->request_timeout_ms;
    uint64_t now_us = r->clock_us();
    inflight_t *rec = NULL;
    const char *why = NULL;
    switch (inflight_add(r->inflight, env, track->id_hash, peer, &rb->peer, now_us / 1000 + ttl,
                         &rec)) {
    case INFLIGHT_ADDED: break;
    case INFLIGHT_REQUESTER_SHARE:
        why = "this connection has as many requests in flight as one connection may; retry when "
              "some are answered";
        break;
    case INFLIGHT_TABLE_FULL:
        why = "the broker has as many requests in flight as it may; retry later";
        break;
    default:
        why = "could not record the request";
        break;
    }
    if (!rec) {
        router_send_error(r, peer, env, why[0] == 'c' ? ERR_INTERNAL : ERR_BUSY, why);
        *err = ERR_NONE;
        return false;
    }
    rec->series = track->series;
    rec->started_us = now_us;
    rec->bus_seq = ++rb->seq;
    int rc = r->bus.request(r->bus.ctx, name, rec->bus_seq, rec->msg_id,
                                  strlen(rec->msg_id), zmq_msg_data(&m->data),
                                  zmq_msg_size(&m->data));
    if (rc == 0) {
        r->stats.bus.requests_out++;
        return true;
    }
    inflight_remove(r->inflight, &rec);
    char text[200];
    if (rc == -2) {
        snprintf(text, sizeof text, "no instance of %s here, and the message is over the bus's "
                 "max_payload", name);
        router_send_error(r, peer, env, ERR_TOO_LARGE, text);
    } else {
        r->stats.bus.unreachable++;
        snprintf(text, sizeof text, "no instance of %s here, and the other brokers are "
                 "unreachable now", name);
        router_send_error(r, peer, env, ERR_NO_SUCH_SERVICE, text);
    }
    *err = ERR_NONE;
    return false;
}

/* An event no local instance holds: published with a reply subject only to
 * hear "nobody" (X5), remembered in a ring for that. */
static bool cross_event(router_t *r, peer_t *peer, zmq_msg_t *data, const envelope_t *env,
                        const char *name, bus_err_t *err)
{
    struct router_bus *rb = r->crossing;
    uint64_t seq = ++rb->seq;
    crossed_event_t *e = &rb->events[seq & (CROSSED_EVENTS - 1)];
    e->seq = seq;
    e->kind = peer->kind;
    e->id_len = peer->id_len;
    memcpy(e->id, peer->id, peer->id_len);
    reply_copy_plain(e->src, sizeof e->src, &env->f[EF_SRC]);
    reply_copy_plain(e->action, sizeof e->action, &env->f[EF_ACTION]);
    reply_copy_plain(e->msg_id, sizeof e->msg_id, &env->f[EF_MSG_ID]);
    snprintf(e->name, sizeof e->name, "%s", name);
    int rc = r->bus.event(r->bus.ctx, name, seq, e->msg_id, strlen(e->msg_id),
                                zmq_msg_data(data), zmq_msg_size(data));
    if (rc == 0) {
        r->stats.bus.events_out++;
        return true;
    }
    e->seq = 0;
    if (rc == -1)
        r->stats.bus.unreachable++;
    *err = rc == -2 ? ERR_TOO_LARGE : ERR_NO_SUCH_SERVICE;
    return false;
}

static void cross_once(router_t *r, bus_send_fn send, zmq_msg_t *data,
                       uint64_t *counter)
{
    if (send(r->bus.ctx, zmq_msg_data(data), zmq_msg_size(data)) == 0)
        (*counter)++;
    else
        r->stats.bus.unreachable++;
}

/* Reads an arrival's bytes into a frame of its own, with its envelope.
 * False (counted) if they are not one valid envelope of type `type`
 * (MT_NONE: a response or an error; the
 * brokers trust each other's checks, not each other's bytes: X9). */
static bool read_arrival(router_t *r, const void *data, size_t len, msg_type_t type,
                         wire_msg_t *m, envelope_t *env)
{
    *m = (wire_msg_t){.delimiter = false, .bad_frames = false, .fd = -1, .injected = true};
    zmq_msg_init(&m->id);
    const char *why = NULL;
    if (len > r->cfg->max_message_bytes || zmq_msg_init_size(&m->data, len) < 0) {
        zmq_msg_init(&m->data);
        r->stats.bus.refused++;
        return false;
    }
    memcpy(zmq_msg_data(&m->data), data, len);
    if (envelope_parse(env, zmq_msg_data(&m->data), len, &why) != ERR_NONE ||
        (type == MT_NONE ? env->type != MT_RESPONSE && env->type != MT_ERROR : env->type != type)) {
        r->stats.bus.refused++;
        return false;
    }
    return true;
}

void router_bus_request(router_t *r, const char *origin, uint64_t seq, const char *name,
                        const void *data, size_t len)
{
    wire_msg_t m;
    envelope_t env;
    if (!r->crossing)
        return;
    if (read_arrival(r, data, len, MT_REQUEST, &m, &env)) {
        peer_t *bus = &r->crossing->peer;
        char msg_id[MSG_ID_MAX_LEN + 1];
        reply_copy_plain(msg_id, sizeof msg_id, &env.f[EF_MSG_ID]);
        aim(r, origin, 'r', seq, msg_id);
        r->stats.bus.requests_in++;
        r->stats.in[MT_REQUEST]++;
        const env_value_t *id = &env.f[EF_MSG_ID];
        tracking_t track = {.id_hash = inflight_hash(id->ptr, id->len), .bus_origin = origin,
                            .bus_seq = seq};
        bus_err_t err = ERR_NO_SUCH_SERVICE;
        char why[200];
        peer_t *to = NULL;
        zmq_msg_t copy;
        bool traced = trace_keep_frame(r, &m.data, &copy);
        if (r->stopping) {
            router_send_error(r, bus, &env, ERR_SHUTTING_DOWN, "the broker holding the service "
                              "is shutting down");
        } else if (inflight_find_hashed(r->inflight, id->ptr, id->len, track.id_hash)) {
            router_send_error(r, bus, &env, ERR_DUPLICATE_MSG_ID, "a request with this msg_id "
                              "is in flight at the broker holding the service");
        } else if ((to = deliver_to_service(r, bus, &m.data, &env, name, strlen(name), NULL,
                                            NULL, &track, &err))) {
            r->stats.out[MT_REQUEST]++;
        } else if (err == ERR_NO_SUCH_SERVICE) {
            /* its last instance went before the bus knew: handed to nobody */
            snprintf(why, sizeof why, "no service named %s is registered (its last instance "
                     "left broker %s)", name, r->cfg->broker_id);
            router_send_error(r, bus, &env, ERR_NO_SUCH_SERVICE, why);
        } else if (err == ERR_BUSY) {
            snprintf(why, sizeof why, "%s cannot take more messages now", name);
            router_send_error(r, bus, &env, ERR_BUSY, why);
        }
        if (traced)                     /* B5 at the broker that hands it over */
            trace_handed_over(r, bus, to, name, &env, &copy);
    }
    wire_msg_close(&m);
}

void router_bus_event(router_t *r, const char *origin, uint64_t seq, const char *name,
                      const void *data, size_t len)
{
    wire_msg_t m;
    envelope_t env;
    if (!r->crossing)
        return;
    if (read_arrival(r, data, len, MT_EVENT, &m, &env)) {
        peer_t *bus = &r->crossing->peer;
        r->stats.bus.events_in++;
        r->stats.in[MT_EVENT]++;
        observe_event(r, bus, &m, &env);
        bus_err_t err = ERR_NONE;
        if (deliver_to_service(r, bus, &m.data, &env, name, strlen(name), NULL, NULL, NULL, &err)) {
            r->stats.out[MT_EVENT]++;
        } else if (err == ERR_NO_SUCH_SERVICE) {
            char msg_id[MSG_ID_MAX_LEN + 1];
            reply_copy_plain(msg_id, sizeof msg_id, &env.f[EF_MSG_ID]);
            r->bus.answer(r->bus.ctx, origin, 'e', seq, msg_id, strlen(msg_id), "", 0);
        }
    }
    wire_msg_close(&m);
}

void router_bus_broadcast(router_t *r, const void *data, size_t len, bool topic)
{
    wire_msg_t m;
    envelope_t env;
    if (!r->crossing)
        return;
    if (read_arrival(r, data, len, MT_EVENT, &m, &env) &&
        (topic ? env.f[EF_TOPIC].kind == JSON_STRING : env_equals(&env.f[EF_DST], "broadcast"))) {
        r->stats.in[MT_EVENT]++;
        observe_event(r, &r->crossing->peer, &m, &env);
        if (topic) {
            r->stats.bus.topics_in++;
            publish(r, &r->crossing->peer, &m, &env);
        } else {
            r->stats.bus.broadcasts_in++;
            broadcast(r, &r->crossing->peer, &m, &env);
        }
    }
    wire_msg_close(&m);
}

/* "Nobody took it" about an event that crossed: its sender hears
 * no_such_service, as for a name held nowhere on one broker (T5). */
static void event_reached_nobody(router_t *r, uint64_t seq)
{
    crossed_event_t *e = &r->crossing->events[seq & (CROSSED_EVENTS - 1)];
    if (e->seq != seq) {
        r->stats.bus.late++;
        return;
    }
    e->seq = 0;
    peer_t *to = e->kind == PEER_LUA ? registry_find_hosted(r->registry, e->id, e->id_len)
                                     : registry_find_peer(r->registry, e->id, e->id_len);
    if (!to)
        return;
    char why[160];
    snprintf(why, sizeof why, "no service named %s is registered on any broker", e->name);
    size_t len = 0;
    char *text = reply_error(e->src, e->action, e->msg_id, ERR_NO_SUCH_SERVICE, why, &len);
    send_error_text(r, to, text, len, MT_EVENT, ERR_NO_SUCH_SERVICE);
}

void router_bus_reply(router_t *r, char kind, uint64_t seq, const char *msg_id, size_t id_len,
                      const void *data, size_t len, bool nobody)
{
    if (!r->crossing)
        return;
    if (kind == 'e') {
        if (nobody || len == 0)
            event_reached_nobody(r, seq);
        return;
    }
    inflight_t *rec = inflight_find(r->inflight, msg_id, id_len);
    if (!rec || rec->handler != &r->crossing->peer || rec->bus_seq != seq) {
        r->stats.bus.late++;            /* answered, timed out, or another request's (X4) */
        return;
    }
    if (nobody) {
        r->stats.bus.no_responders++;
        char why[160];
        snprintf(why, sizeof why, "no service named %s is registered on any broker", rec->dst);
        fail_request(r, rec, ERR_NO_SUCH_SERVICE, why);
        inflight_remove(r->inflight, &rec);
        return;
    }
    wire_msg_t m;
    envelope_t env;
    const env_value_t *corr = &env.f[EF_CORRELATION_ID];
    if (read_arrival(r, data, len, MT_NONE, &m, &env) &&
        corr->len == id_len && memcmp(corr->ptr, msg_id, id_len) == 0) {
        r->stats.bus.answers_in++;
        r->stats.in[env.type]++;
        answer_code_t code = {"", 0};   /* read before delivery hands the bytes over */
        if (env.type == MT_ERROR)
            read_answer_code(&env, &code);
        if (!rec->requester) {
            r->stats.requester_gone++;
            note_answer(r, rec, env.type, &code, &env, &m.data);
            inflight_remove(r->inflight, &rec);
        } else if (deliver(r, rec->requester, &m.data, &env) == 0) {
            r->stats.out[env.type]++;
            note_answer(r, rec, env.type, &code, &env, NULL);
            inflight_remove(r->inflight, &rec);
        } else {
            /* its queue is full or it is gone: the answer is lost, as on
             * one broker when a requester cannot take it (D3) */
            r->stats.requester_gone++;
            note_answer(r, rec, env.type, &code, &env, &m.data);
            deadletters_add(r->dead, ERR_REQUESTER_GONE, rec->requester, &env, NULL, NULL, NULL,
                            NULL);
            inflight_remove(r->inflight, &rec);
        }
    }
    wire_msg_close(&m);
}

void router_bus_refused(router_t *r)
{
    r->stats.bus.refused++;
}

bool router_bus_active(const router_t *r)
{
    return r->crossing != NULL;
}

void router_bus_describe(const router_t *r, cJSON *into)
{
    if (r->bus.describe)
        r->bus.describe(r->bus.ctx, into);
#define BUS_COUNT(field) cJSON_AddNumberToObject(into, #field, (double)r->stats.bus.field)
    BUS_COUNT(requests_out); BUS_COUNT(requests_in); BUS_COUNT(events_out); BUS_COUNT(events_in);
    BUS_COUNT(broadcasts_out); BUS_COUNT(broadcasts_in); BUS_COUNT(topics_out);
    BUS_COUNT(topics_in); BUS_COUNT(answers_out); BUS_COUNT(answers_in);
    BUS_COUNT(no_responders); BUS_COUNT(unreachable); BUS_COUNT(late); BUS_COUNT(refused);
#undef BUS_COUNT
}

size_t router_bus_remote(const router_t *r, char *out, size_t cap)
{
    return r->bus.remote ? r->bus.remote(r->bus.ctx, out, cap) : 0;
}

void router_bus_each_remote(const router_t *r, bus_remote_fn fn, void *arg)
{
    if (r->bus.each_remote)
        r->bus.each_remote(r->bus.ctx, fn, arg);
}

static peer_t *bus_peer(router_t *r)
{
    return &r->crossing->peer;
}

/* --- restored registrations (docs/protocol.md R1-R5) --- */

/* The event a silent restored peer gets when its grace period ends: the
 * one message that tells whether its identity is connected. */
static char *restored_notice(const peer_t *peer, size_t *len)
{
    char id[37], ts[32];
    reply_new_uuid(id);
    reply_timestamp(ts);
    cJSON *m = cJSON_CreateObject();
    cJSON *payload = cJSON_CreateObject();
    cJSON *names = cJSON_AddArrayToObject(payload, "names");
    for (int i = 0; i < peer->name_count; i++)
        cJSON_AddItemToArray(names, cJSON_CreateString(peer->names[i]));
    cJSON_AddStringToObject(payload, "message", "the broker restarted and kept your registrations");
    cJSON_AddStringToObject(m, "msg_id", id);
    cJSON_AddStringToObject(m, "type", "event");
    cJSON_AddStringToObject(m, "src", "broker");
    cJSON_AddStringToObject(m, "dst", peer->name_count ? peer->names[0] : "");
    cJSON_AddStringToObject(m, "action", "restored");
    cJSON_AddItemToObject(m, "payload", payload);
    cJSON_AddNullToObject(m, "correlation_id");
    cJSON_AddStringToObject(m, "timestamp", ts);
    char *text = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    *len = text ? strlen(text) : 0;
    return text;
}

size_t router_restored_expire(router_t *r)
{
    size_t dropped = 0;
    peer_t *peer, *next;
    for (peer = registry_next_peer(r->registry, NULL); peer; peer = next) {
        next = registry_next_peer(r->registry, peer);
        if (!peer->restored)
            continue;
        if (!r->auth) {
            size_t len = 0;
            char *text = restored_notice(peer, &len);
            zmq_msg_t data;
            bool sent = false;
            if (text && zmq_msg_init_size(&data, len) == 0) {
                memcpy(zmq_msg_data(&data), text, len);
                sent = deliver(r, peer, &data, NULL) == 0;
                if (sent)
                    r->stats.out[MT_EVENT]++;
                else
                    zmq_msg_close(&data);
            }
            free(text);
            if (sent)
                continue;               /* it is back: adopted */
        }
        char label[2 * PEER_ID_MAX + 3];
        log_info("restored peer %s did not come back within --restore-grace-ms: dropping its "
                 "registrations", peer_label(peer, label));
        router_peer_gone(r, peer);
        dropped++;
    }
    return dropped;
}
