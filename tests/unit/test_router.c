/* test_router: the message path driven message by message, with no socket.
 *
 * The router gets a recording transport (every message it sends lands in
 * `sent`, and a peer can be made full or gone), a clock the test sets,
 * and a fake host for hosted Lua services. Each test sends envelopes "from
 * the wire" as broker.c would (router_read, router_handle_read) and looks
 * at what came out: the src rules (S1, S2), request tracking (T3, T4),
 * deadlines (D1), broadcast (T5), and peers vanishing mid-delivery. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config.h"
#include "inflight.h"
#include "log.h"
#include "registry.h"
#include "router.h"

/* --- the recording transport and the clock --- */

#define SENT_MAX 256

typedef struct {
    char to[64];                /* the peer's identity */
    char text[2048];
} sent_t;

static sent_t sent[SENT_MAX];
static int sent_count;
static char full_id[64];        /* this peer's queue is full: EAGAIN */
static char gone_id[64];        /* this peer's connection is gone: EHOSTUNREACH */
static int hosted_count;        /* messages the fake Lua host took */
static int broker_requests;
static uint64_t now_us = 1000000000;

static uint64_t test_clock(void)
{
    return now_us;
}

static bool is(const peer_t *p, const char *id)
{
    return p->id_len == strlen(id) && memcmp(p->id, id, p->id_len) == 0;
}

static void record(const char *to, size_t to_len, zmq_msg_t *data)
{
    if (sent_count == SENT_MAX)
        return;
    sent_t *s = &sent[sent_count++];
    snprintf(s->to, sizeof s->to, "%.*s", (int)to_len, to);
    snprintf(s->text, sizeof s->text, "%.*s", (int)zmq_msg_size(data), (char *)zmq_msg_data(data));
}

static int fake_send(void *ctx, peer_t *to, zmq_msg_t *data)
{
    (void)ctx;
    if (*full_id && is(to, full_id)) {
        errno = EAGAIN;
        return -1;
    }
    if (*gone_id && is(to, gone_id)) {
        errno = EHOSTUNREACH;
        return -1;
    }
    record((const char *)to->id, to->id_len, data);
    zmq_msg_close(data);
    zmq_msg_init(data);
    return 0;
}

static int fake_send_back(void *ctx, wire_msg_t *m, zmq_msg_t *data)
{
    (void)ctx;
    record(zmq_msg_data(&m->id), zmq_msg_size(&m->id), data);
    return 0;
}

static int fake_enqueue(void *ctx, peer_t *to, zmq_msg_t *data, const envelope_t *env)
{
    (void)ctx;
    (void)env;
    hosted_count++;
    return fake_send(NULL, to, data);
}

static void fake_broker_request(void *ctx, peer_t *from, const envelope_t *env)
{
    router_send_made(ctx, from, "{\"pong\":1}", 10, MT_RESPONSE);
    broker_requests++;
}

/* --- driving it --- */

static config_t cfg;

static router_t *fresh(void)
{
    sent_count = 0;
    full_id[0] = gone_id[0] = '\0';
    hosted_count = broker_requests = 0;
    router_t *r = router_new(&cfg, NULL, (router_transport_t){NULL, fake_send, fake_send_back},
                             test_clock);
    CHECK(r != NULL);
    router_set_hosts(r, (router_hosts_t){.enqueue = fake_enqueue, .broker_ctx = r,
                                         .broker_request = fake_broker_request});
    return r;
}

/* `text` arrives from the connection with identity `id` on descriptor `fd`. */
static void arrive_on(router_t *r, const char *id, int fd, const char *text)
{
    wire_msg_t m = {.fd = fd};
    zmq_msg_init_size(&m.id, strlen(id));
    memcpy(zmq_msg_data(&m.id), id, strlen(id));
    zmq_msg_init_size(&m.data, strlen(text));
    memcpy(zmq_msg_data(&m.data), text, strlen(text));
    router_read_t rd;
    router_read(r, &m, &rd);
    router_handle_read(r, &m, &rd);
    wire_msg_close(&m);
}

/* Descriptors by identity: one connection each, as libzmq would give. */
static int fd_of(const char *id)
{
    int fd = 10;
    for (const char *c = id; *c; c++)
        fd = fd * 31 % 1000 + (unsigned char)*c;
    return fd;
}

static void arrive(router_t *r, const char *id, const char *text)
{
    arrive_on(r, id, fd_of(id), text);
}

static void send_msg(router_t *r, const char *id, const char *type, const char *msg_id,
                     const char *src, const char *dst, const char *extra)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\"msg_id\":\"%s\",\"type\":\"%s\",\"src\":\"%s\",\"dst\":\"%s\",\"action\":\"do\","
             "\"timestamp\":\"2026-12-02T00:00:00.000Z\"%s}",
             msg_id, type, src, dst, extra ? extra : "");
    arrive(r, id, text);
}

static void register_as(router_t *r, const char *id, const char *name)
{
    char msg_id[80];
    snprintf(msg_id, sizeof msg_id, "reg-%s-%s", id, name);
    send_msg(r, id, "register", msg_id, name, "broker", NULL);
}

static void request(router_t *r, const char *id, const char *msg_id, const char *src,
                    const char *dst, const char *extra)
{
    send_msg(r, id, "request", msg_id, src, dst, extra);
}

static void answer(router_t *r, const char *id, const char *src, const char *corr)
{
    char extra[128];
    snprintf(extra, sizeof extra, ",\"correlation_id\":\"%s\"", corr);
    char msg_id[80];
    snprintf(msg_id, sizeof msg_id, "ans-%s", corr);
    send_msg(r, id, "response", msg_id, src, "c", extra);
}

static peer_t *peer(router_t *r, const char *id)
{
    return registry_find_peer(router_registry(r), id, strlen(id));
}

/* How many messages went to `to` since `from`, holding `needle`. */
static int count_to(int from, const char *to, const char *needle)
{
    int n = 0;
    for (int i = from; i < sent_count; i++)
        if (strcmp(sent[i].to, to) == 0 && (!needle || strstr(sent[i].text, needle)))
            n++;
    return n;
}

/* The last message sent, if it went to `to` and holds `needle`. */
static bool last_is(const char *to, const char *needle)
{
    if (sent_count == 0)
        return false;
    const sent_t *s = &sent[sent_count - 1];
    bool ok = strcmp(s->to, to) == 0 && strstr(s->text, needle) != NULL;
    if (!ok)
        fprintf(stderr, "  last sent to %s: %s (wanted %s, %s)\n", s->to, s->text, to, needle);
    return ok;
}

#define ERROR_CODE(code) "\"code\":\"" code "\""

/* --- the tests --- */

static void registers_and_answers_registration(void)
{
    router_t *r = fresh();
    register_as(r, "S", "svc");
    CHECK(last_is("S", "\"status\":\"ok\""));
    CHECK(peer(r, "S") && peer_holds(peer(r, "S"), "svc", 3));
    register_as(r, "S", "svc");                     /* idempotent (T1) */
    CHECK(last_is("S", "\"status\":\"ok\""));
    CHECK_EQ_INT(peer(r, "S")->name_count, 1);
    CHECK_EQ_INT(router_stats(r)->in[MT_REGISTER], 2);
    router_free(&r);
    CHECK(r == NULL);
}

static void src_rules(void)
{
    router_t *r = fresh();
    register_as(r, "S", "svc");
    register_as(r, "T", "other");
    /* S1: a peer holding names sends as one of them */
    request(r, "S", "m1", "other", "other", NULL);
    CHECK(last_is("S", ERROR_CODE("spoofed_src")));
    /* S2: a peer holding none may not use a name another holds */
    request(r, "C", "m2", "svc", "other", NULL);
    CHECK(last_is("C", ERROR_CODE("spoofed_src")));
    /* and may use any name nobody holds */
    int before = sent_count;
    request(r, "C", "m3", "anyone", "other", NULL);
    CHECK_EQ_INT(count_to(before, "T", "\"msg_id\":\"m3\""), 1);
    /* reserved names are nobody's src */
    request(r, "C", "m4", "broker", "svc", NULL);
    CHECK(last_is("C", ERROR_CODE("reserved_name")));
    CHECK_EQ_INT(router_stats(r)->errors[ERR_SPOOFED_SRC], 2);
    router_free(&r);
}

static void request_response_round_trip(void)
{
    router_t *r = fresh();
    register_as(r, "S", "svc");
    int before = sent_count;
    const char *req = "{\"msg_id\":\"q1\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"svc\","
                      "\"action\":\"get\",\"payload\":{\"k\":[1,2]},"
                      "\"timestamp\":\"2026-12-02T00:00:00.000Z\"}";
    arrive(r, "C", req);
    CHECK_EQ_INT(sent_count, before + 1);
    CHECK(strcmp(sent[before].to, "S") == 0 && strcmp(sent[before].text, req) == 0);  /* as sent */
    CHECK_EQ_INT(router_inflight_count(r), 1);
    /* T3: a second request with the same msg_id while the first is in flight */
    arrive(r, "C", req);
    CHECK(last_is("C", ERROR_CODE("duplicate_msg_id")));
    /* T4: only the instance it was handed to may answer */
    register_as(r, "S2", "svc");
    answer(r, "S2", "svc", "q1");
    CHECK(last_is("S2", ERROR_CODE("not_your_request")));
    answer(r, "S", "svc", "nope");
    CHECK(last_is("S", ERROR_CODE("unknown_request")));
    now_us += 2500;
    answer(r, "S", "svc", "q1");
    CHECK(last_is("C", "\"correlation_id\":\"q1\""));
    CHECK_EQ_INT(router_inflight_count(r), 0);
    answer(r, "S", "svc", "q1");                   /* answered already */
    CHECK(last_is("S", ERROR_CODE("unknown_request")));
    CHECK_EQ_INT(router_stats(r)->late_or_unknown, 2);
    CHECK_EQ_INT(router_stats(r)->not_yours, 1);
    router_free(&r);
}

static void no_such_service_and_round_robin(void)
{
    router_t *r = fresh();
    request(r, "C", "m1", "c", "ghost", NULL);
    CHECK(last_is("C", ERROR_CODE("no_such_service")));
    register_as(r, "A", "svc");
    register_as(r, "B", "svc");
    int before = sent_count;
    for (int i = 0; i < 6; i++) {
        char id[16];
        snprintf(id, sizeof id, "rr%d", i);
        request(r, "C", id, "c", "svc", NULL);
    }
    CHECK_EQ_INT(count_to(before, "A", NULL), 3);
    CHECK_EQ_INT(count_to(before, "B", NULL), 3);
    router_free(&r);
}

static void deadlines(void)
{
    router_t *r = fresh();
    register_as(r, "S", "svc");
    now_us = 5000000000;                            /* 5,000,000 ms */
    request(r, "C", "slow", "c", "svc", ",\"ttl_ms\":100");
    request(r, "C", "default", "c", "svc", NULL);   /* --request-timeout-ms */
    CHECK_EQ_INT(router_inflight_count(r), 2);
    CHECK_EQ_INT(inflight_next_deadline(router_inflight(r)), 5000000 + 100);
    int before = sent_count;
    router_expire(r, 5000000 + 99);
    CHECK_EQ_INT(sent_count, before);
    router_expire(r, 5000000 + 100);
    CHECK(last_is("C", ERROR_CODE("timeout")));
    CHECK(last_is("C", "\"correlation_id\":\"slow\""));
    CHECK_EQ_INT(router_inflight_count(r), 1);
    router_expire(r, 5000000 + cfg.request_timeout_ms);
    CHECK(last_is("C", "\"correlation_id\":\"default\""));
    CHECK_EQ_INT(router_inflight_count(r), 0);
    /* an answer after the deadline is late */
    answer(r, "S", "svc", "slow");
    CHECK(last_is("S", ERROR_CODE("unknown_request")));
    router_free(&r);
}

static void broadcast(void)
{
    router_t *r = fresh();
    register_as(r, "A", "a");
    register_as(r, "B", "b");
    register_as(r, "E", "e");
    arrive(r, "N", "{\"msg_id\":\"x\",\"type\":\"request\",\"src\":\"n\",\"dst\":\"ghost\"}");
    int before = sent_count;
    send_msg(r, "A", "event", "ev1", "a", "broadcast", NULL);
    CHECK_EQ_INT(count_to(before, "A", NULL), 0);           /* never its sender */
    CHECK_EQ_INT(count_to(before, "B", "\"msg_id\":\"ev1\""), 1);
    CHECK_EQ_INT(count_to(before, "E", "\"msg_id\":\"ev1\""), 1);
    CHECK_EQ_INT(count_to(before, "N", NULL), 0);           /* registered peers only */
    CHECK_EQ_INT(sent_count, before + 2);
    /* a receiver gone mid-broadcast is dropped; the others still get it */
    snprintf(gone_id, sizeof gone_id, "B");
    before = sent_count;
    send_msg(r, "A", "event", "ev2", "a", "broadcast", NULL);
    CHECK_EQ_INT(count_to(before, "E", "\"msg_id\":\"ev2\""), 1);
    CHECK(peer(r, "B") == NULL);
    CHECK_EQ_INT(router_stats(r)->broadcast_undelivered, 1);
    /* broadcast carries events only */
    request(r, "A", "q", "a", "broadcast", NULL);
    CHECK(last_is("A", ERROR_CODE("bad_envelope")));
    router_free(&r);
}

static void instance_gone_mid_delivery(void)
{
    router_t *r = fresh();
    register_as(r, "A", "svc");
    register_as(r, "B", "svc");
    /* the round robin's next is A, whose connection is gone: B gets it */
    snprintf(gone_id, sizeof gone_id, "A");
    int before = sent_count;
    request(r, "C", "m1", "c", "svc", NULL);
    CHECK_EQ_INT(count_to(before, "B", "\"msg_id\":\"m1\""), 1);
    CHECK(peer(r, "A") == NULL);
    /* the last instance gone: no_such_service, and the name is free */
    snprintf(gone_id, sizeof gone_id, "B");
    request(r, "C", "m2", "c", "svc", NULL);
    CHECK(last_is("C", ERROR_CODE("no_such_service")));
    CHECK(registry_find_service(router_registry(r), "svc", 3) == NULL);
    /* the request handed to B before it went: service_gone */
    CHECK_EQ_INT(router_inflight_count(r), 0);
    CHECK_EQ_INT(count_to(before, "C", ERROR_CODE("service_gone")), 1);
    router_free(&r);
}

static void full_queue_is_busy(void)
{
    router_t *r = fresh();
    register_as(r, "A", "svc");
    register_as(r, "B", "svc");
    snprintf(full_id, sizeof full_id, "A");
    int before = sent_count;
    request(r, "C", "m1", "c", "svc", NULL);
    request(r, "C", "m2", "c", "svc", NULL);
    CHECK_EQ_INT(count_to(before, "B", NULL), 2);           /* skipped, not dropped */
    CHECK(peer(r, "A") != NULL);
    snprintf(full_id, sizeof full_id, "B");
    register_as(r, "D", "solo");
    snprintf(full_id, sizeof full_id, "D");
    request(r, "C", "m3", "c", "solo", NULL);
    CHECK(last_is("C", ERROR_CODE("busy")));
    CHECK_EQ_INT(router_inflight_count(r), 2);
    router_free(&r);
}

static void peer_gone_settles_requests(void)
{
    router_t *r = fresh();
    register_as(r, "S", "svc");
    request(r, "C", "m1", "c", "svc", NULL);
    request(r, "D", "m2", "d", "svc", NULL);
    /* the requester goes: its answer is dropped, counted */
    router_peer_gone(r, peer(r, "D"));
    int before = sent_count;
    answer(r, "S", "svc", "m2");
    CHECK_EQ_INT(sent_count, before);
    CHECK_EQ_INT(router_stats(r)->requester_gone, 1);
    /* the handler goes: its requests get service_gone */
    router_peer_gone(r, peer(r, "S"));
    CHECK(last_is("C", ERROR_CODE("service_gone")));
    CHECK_EQ_INT(router_inflight_count(r), 0);
    CHECK(registry_find_service(router_registry(r), "svc", 3) == NULL);
    router_free(&r);
}

static void same_identity_new_connection(void)
{
    router_t *r = fresh();
    arrive_on(r, "S", 40, "{\"msg_id\":\"r1\",\"type\":\"register\",\"src\":\"svc\",\"dst\":\"broker\"}");
    request(r, "C", "m1", "c", "svc", NULL);
    /* L1: the identity back on another descriptor is a new connection; the
     * old one's names and the request handed to it are gone */
    arrive_on(r, "S", 41, "{\"msg_id\":\"p1\",\"type\":\"request\",\"src\":\"s\",\"dst\":\"ghost\"}");
    CHECK(registry_find_service(router_registry(r), "svc", 3) == NULL);
    CHECK(count_to(0, "C", ERROR_CODE("service_gone")) == 1);
    CHECK(peer(r, "S") && peer(r, "S")->fd == 41);
    router_free(&r);
}

static void bad_input_is_answered(void)
{
    router_t *r = fresh();
    arrive(r, "C", "{not json");
    CHECK(last_is("C", ERROR_CODE("bad_json")));
    arrive(r, "C", "{\"msg_id\":\"m\",\"type\":\"request\"}");
    CHECK(last_is("C", ERROR_CODE("bad_envelope")));
    /* over --max-message-bytes: too_large, not read */
    size_t big = cfg.max_message_bytes + 1;
    char *text = malloc(big + 1);
    memset(text, ' ', big);
    text[0] = '{';
    text[big - 1] = '}';
    text[big] = '\0';
    arrive(r, "C", text);
    free(text);
    CHECK(last_is("C", ERROR_CODE("too_large")));
    /* a connection without a record is answered on its identity */
    wire_msg_t m = {.fd = 3};
    zmq_msg_init(&m.id);                            /* empty identity */
    zmq_msg_init_size(&m.data, 2);
    memcpy(zmq_msg_data(&m.data), "{}", 2);
    router_read_t rd;
    router_read(r, &m, &rd);
    router_handle_read(r, &m, &rd);
    wire_msg_close(&m);
    CHECK(last_is("", ERROR_CODE("bad_frames")));
    router_free(&r);
}

static void hosted_and_broker_services(void)
{
    router_t *r = fresh();
    peer_t *lua = registry_add_peer(router_registry(r), "lua:x.lua", 9, PEER_LUA, -1);
    const char *reg = "{\"msg_id\":\"r\",\"type\":\"register\",\"src\":\"lx\",\"dst\":\"broker\"}";
    router_inject(r, lua, reg, strlen(reg));
    CHECK(peer_holds(lua, "lx", 2));
    CHECK_EQ_INT(hosted_count, 1);                  /* its registration answer, queued */
    request(r, "C", "m1", "c", "lx", NULL);
    CHECK_EQ_INT(hosted_count, 2);
    CHECK(last_is("lua:x.lua", "\"msg_id\":\"m1\""));
    /* its answer goes in as a message from its peer */
    const char *ans = "{\"msg_id\":\"a\",\"type\":\"response\",\"src\":\"lx\",\"dst\":\"c\","
                      "\"correlation_id\":\"m1\"}";
    router_inject(r, lua, ans, strlen(ans));
    CHECK(last_is("C", "\"correlation_id\":\"m1\""));
    /* dst "broker" goes to the broker's service */
    request(r, "C", "p", "c", "broker", NULL);
    CHECK_EQ_INT(broker_requests, 1);
    CHECK(last_is("C", "\"pong\":1"));
    router_free(&r);
}

static void watchers_and_stopping(void)
{
    router_t *r = fresh();
    register_as(r, "A", "a");
    register_as(r, "B", "b");
    arrive(r, "W", "{\"msg_id\":\"x\",\"type\":\"request\",\"src\":\"w\",\"dst\":\"ghost\"}");
    router_set_watching(r, peer(r, "W"), true);
    int before = sent_count;
    send_msg(r, "A", "event", "ev", "a", "b", NULL);
    CHECK_EQ_INT(count_to(before, "B", "\"msg_id\":\"ev\""), 1);
    CHECK_EQ_INT(count_to(before, "W", "\"msg_id\":\"ev\""), 1);
    router_peer_gone(r, peer(r, "W"));              /* its watch goes with it */
    before = sent_count;
    send_msg(r, "A", "event", "ev2", "a", "b", NULL);
    CHECK_EQ_INT(sent_count, before + 1);
    router_set_stopping(r);
    request(r, "A", "late", "a", "b", NULL);
    CHECK(last_is("A", ERROR_CODE("shutting_down")));
    router_free(&r);
}


/* --- ported from the Python tests it replaces (integration/test_broadcast,
 * test_deadlines, test_round_robin, most of test_errors_routing) --- */

static void answer_typed(router_t *r, const char *id, const char *type, const char *src,
                         const char *dst, const char *corr, const char *payload)
{
    char extra[256], msg_id[80];
    snprintf(extra, sizeof extra, ",\"correlation_id\":\"%s\",\"payload\":%s", corr, payload);
    snprintf(msg_id, sizeof msg_id, "%s-%s-%s", type, id, corr);
    send_msg(r, id, type, msg_id, src, dst, extra);
}

static void broadcast_reaches_each_registered_connection_once(void)
{
    router_t *r = fresh();
    const char *ids[] = {"P0", "P1", "P2"};
    for (int i = 0; i < 3; i++)
        register_as(r, ids[i], ids[i]);
    register_as(r, "D", "double-a");                /* two names: one copy */
    register_as(r, "D", "double-b");
    register_as(r, "I1", "same");                   /* instances of one name: each a copy */
    register_as(r, "I2", "same");
    register_as(r, "X", "two-a");                   /* a sender with two names: none */
    register_as(r, "X", "two-b");
    register_as(r, "U", "leaves");                  /* unregistered since: none */
    send_msg(r, "U", "unregister", "u1", "leaves", "broker", NULL);
    int before = sent_count;
    send_msg(r, "X", "event", "b1", "two-b", "broadcast", NULL);
    const char *want[] = {"P0", "P1", "P2", "D", "I1", "I2"};
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(count_to(before, want[i], "\"msg_id\":\"b1\""), 1);
    CHECK_EQ_INT(count_to(before, "X", NULL), 0);
    CHECK_EQ_INT(count_to(before, "U", NULL), 0);
    CHECK_EQ_INT(sent_count, before + 6);
    /* an unregistered sender may broadcast (under a free name) */
    before = sent_count;
    send_msg(r, "L", "event", "b2", "loose", "broadcast", NULL);
    CHECK_EQ_INT(sent_count, before + 7);           /* X too, this time */
    CHECK_EQ_INT(count_to(before, "L", NULL), 0);
    /* in order, once each */
    before = sent_count;
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "seq%02d", i);
        send_msg(r, "X", "event", id, "two-a", "broadcast", NULL);
    }
    int seen = 0;
    for (int i = before; i < sent_count; i++) {
        if (strcmp(sent[i].to, "P1") != 0)
            continue;
        char id[32];
        snprintf(id, sizeof id, "\"msg_id\":\"seq%02d\"", seen++);
        CHECK(strstr(sent[i].text, id) != NULL);
    }
    CHECK_EQ_INT(seen, 20);
    router_free(&r);

    /* nobody to reach is no error */
    r = fresh();
    register_as(r, "A", "alone");
    before = sent_count;
    send_msg(r, "A", "event", "b3", "alone", "broadcast", NULL);
    CHECK_EQ_INT(sent_count, before);
    router_free(&r);
}

static void timeouts_in_detail(void)
{
    router_t *r = fresh();
    register_as(r, "S", "svc");
    now_us = 7000000000;
    uint64_t now_ms = now_us / 1000;
    request(r, "C", "t1", "client-a", "svc", ",\"ttl_ms\":200");
    router_expire(r, now_ms + 200);
    /* D1: to the requester's src, about its action, counted */
    CHECK(last_is("C", ERROR_CODE("timeout")));
    CHECK(last_is("C", "\"dst\":\"client-a\""));
    CHECK(last_is("C", "\"action\":\"do\""));
    CHECK(last_is("C", "\"correlation_id\":\"t1\""));
    CHECK_EQ_INT(router_stats(r)->errors[ERR_TIMEOUT], 1);
    /* answered within its ttl: delivered, and no timeout follows */
    request(r, "C", "t2", "client-a", "svc", ",\"ttl_ms\":300");
    now_us += 100000;
    answer_typed(r, "S", "response", "svc", "client-a", "t2", "1");
    CHECK(last_is("C", "\"correlation_id\":\"t2\""));
    int before = sent_count;
    router_expire(r, now_ms + 10000);
    CHECK_EQ_INT(sent_count, before);
    router_free(&r);

    /* --request-timeout-ms sets the default; ttl_ms overrides it */
    config_t short_cfg;
    char a0[] = "test_router", a1[] = "--request-timeout-ms", a2[] = "300";
    char *argv[] = {a0, a1, a2, NULL};
    char err[256];
    CHECK_EQ_INT(config_load(&short_cfg, 3, argv, err, sizeof err), CONFIG_RUN);
    r = router_new(&short_cfg, NULL, (router_transport_t){NULL, fake_send, fake_send_back},
                   test_clock);
    now_ms = now_us / 1000;
    register_as(r, "S", "svc");
    request(r, "C", "d1", "c", "svc", NULL);
    request(r, "C", "d2", "c", "svc", ",\"ttl_ms\":800");
    before = sent_count;
    router_expire(r, now_ms + 299);
    CHECK_EQ_INT(sent_count, before);
    router_expire(r, now_ms + 300);
    CHECK(last_is("C", "\"correlation_id\":\"d1\""));
    router_expire(r, now_ms + 799);
    CHECK_EQ_INT(sent_count, before + 1);
    router_expire(r, now_ms + 800);
    CHECK(last_is("C", "\"correlation_id\":\"d2\""));
    router_free(&r);
    config_free(&short_cfg);
}

static void handler_gone_fails_each_request_once(void)
{
    router_t *r = fresh();
    register_as(r, "A", "frag");
    register_as(r, "B", "frag");
    request(r, "C", "g1", "c", "frag", NULL);       /* to A */
    request(r, "C", "g2", "c", "frag", NULL);       /* to B */
    request(r, "C", "g3", "c", "frag", NULL);       /* to A */
    int before = sent_count;
    router_peer_gone(r, peer(r, "A"));
    /* D2: each request A held fails; none is handed to B instead */
    CHECK_EQ_INT(count_to(before, "C", ERROR_CODE("service_gone")), 2);
    CHECK_EQ_INT(count_to(before, "C", "\"correlation_id\":\"g1\""), 1);
    CHECK_EQ_INT(count_to(before, "C", "\"correlation_id\":\"g3\""), 1);
    CHECK_EQ_INT(count_to(before, "B", NULL), 0);
    CHECK_EQ_INT(sent_count, before + 2);
    CHECK_EQ_INT(router_inflight_count(r), 1);
    router_free(&r);
}

static void round_robin_in_detail(void)
{
    router_t *r = fresh();
    const char *inst[] = {"R0", "R1", "R2"};
    for (int i = 0; i < 3; i++)
        register_as(r, inst[i], "rr");
    /* a rotation: consecutive requests go to different instances, from
     * any client, and events to a name spread the same way */
    int before = sent_count;
    for (int i = 0; i < 30; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        request(r, i % 2 ? "C1" : "C2", id, i % 2 ? "c1" : "c2", "rr", NULL);
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(count_to(before, inst[i], NULL), 10);
    for (int i = before; i + 3 < sent_count; i++)
        CHECK(strcmp(sent[i].to, sent[i + 3].to) == 0 && strcmp(sent[i].to, sent[i + 1].to) != 0);
    before = sent_count;
    for (int i = 0; i < 9; i++) {
        char id[16];
        snprintf(id, sizeof id, "e%d", i);
        send_msg(r, "E", "event", id, "ev-sender", "rr", NULL);
    }
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(count_to(before, inst[i], NULL), 3);
    CHECK_EQ_INT(count_to(before, "E", NULL), 0);   /* events are not answered */
    /* answers from every instance reach whoever asked */
    for (int i = 0; i < 30; i++) {
        char id[16];
        snprintf(id, sizeof id, "w%d", i);
        answer_typed(r, inst[i % 3], "response", "rr", "whoever", id, "0");
    }
    CHECK_EQ_INT(router_inflight_count(r), 0);
    /* a closed instance gets no more */
    router_peer_gone(r, peer(r, "R1"));
    before = sent_count;
    for (int i = 0; i < 10; i++) {
        char id[16];
        snprintf(id, sizeof id, "x%d", i);
        request(r, "C1", id, "c1", "rr", NULL);
    }
    CHECK_EQ_INT(count_to(before, "R0", NULL), 5);
    CHECK_EQ_INT(count_to(before, "R2", NULL), 5);
    CHECK_EQ_INT(count_to(before, "C1", NULL), 0);
    router_free(&r);
}

static void routing_errors(void)
{
    router_t *r = fresh();
    /* no_such_service for events too, and after the name went */
    send_msg(r, "C", "event", "e1", "c", "nobody", NULL);
    CHECK(last_is("C", ERROR_CODE("no_such_service")));
    CHECK(last_is("C", "\"correlation_id\":\"e1\""));
    register_as(r, "S", "short");
    send_msg(r, "S", "unregister", "u1", "short", "broker", NULL);
    int before = sent_count;
    request(r, "C", "q0", "c", "short", NULL);
    CHECK(last_is("C", ERROR_CODE("no_such_service")));
    CHECK_EQ_INT(count_to(before, "S", NULL), 0);
    /* duplicate_msg_id from another peer; the original is unaffected */
    register_as(r, "S", "slow");
    request(r, "C1", "dup", "c1", "slow", NULL);
    before = sent_count;
    request(r, "C2", "dup", "c2", "slow", NULL);
    CHECK(last_is("C2", ERROR_CODE("duplicate_msg_id")));
    CHECK_EQ_INT(count_to(before, "S", NULL), 0);
    answer_typed(r, "S", "response", "slow", "c1", "dup", "1");
    CHECK(last_is("C1", "\"correlation_id\":\"dup\""));
    /* a msg_id may be reused once answered */
    request(r, "C1", "dup", "c1", "slow", NULL);
    CHECK(last_is("S", "\"msg_id\":\"dup\""));
    answer_typed(r, "S", "response", "slow", "c1", "dup", "1");
    /* an error answer to nothing is unknown_request; a service's error
     * answer to a request goes to the requester as sent */
    answer_typed(r, "S", "error", "slow", "c1", "never", "{\"code\":\"oops\",\"message\":\"x\"}");
    CHECK(last_is("S", ERROR_CODE("unknown_request")));
    request(r, "C1", "q1", "c1", "slow", NULL);
    answer_typed(r, "S", "error", "slow", "c1", "q1", "{\"code\":\"app_failure\",\"message\":\"no\"}");
    CHECK(last_is("C1", "\"code\":\"app_failure\""));
    /* not_your_request from an unrelated service and from an unregistered peer */
    register_as(r, "M", "meddler");
    request(r, "C1", "q2", "c1", "slow", NULL);
    answer_typed(r, "M", "response", "meddler", "c1", "q2", "1");
    CHECK(last_is("M", ERROR_CODE("not_your_request")));
    answer_typed(r, "F", "response", "free-meddler", "c1", "q2", "1");
    CHECK(last_is("F", ERROR_CODE("not_your_request")));
    /* the answer goes to the requester whatever its dst says */
    register_as(r, "Y", "bystander");
    before = sent_count;
    answer_typed(r, "S", "response", "slow", "bystander", "q2", "1");
    CHECK(last_is("C1", "\"correlation_id\":\"q2\""));
    CHECK_EQ_INT(count_to(before, "Y", NULL), 0);
    /* two clients using the same src each get their own answer */
    request(r, "K1", "k1", "same-client", "slow", NULL);
    request(r, "K2", "k2", "same-client", "slow", NULL);
    answer_typed(r, "S", "response", "slow", "same-client", "k2", "2");
    CHECK(last_is("K2", "\"correlation_id\":\"k2\""));
    answer_typed(r, "S", "response", "slow", "same-client", "k1", "1");
    CHECK(last_is("K1", "\"correlation_id\":\"k1\""));
    router_free(&r);
}

static void full_inflight_table_is_busy(void)
{
    config_t small;
    char a0[] = "test_router", a1[] = "--max-inflight", a2[] = "2";
    char *argv[] = {a0, a1, a2, NULL};
    char err[256];
    CHECK_EQ_INT(config_load(&small, 3, argv, err, sizeof err), CONFIG_RUN);
    sent_count = 0;
    router_t *r = router_new(&small, NULL, (router_transport_t){NULL, fake_send, fake_send_back},
                             test_clock);
    register_as(r, "S", "hoarder");
    request(r, "C", "h1", "c", "hoarder", NULL);
    request(r, "C", "h2", "c", "hoarder", NULL);
    int before = sent_count;
    request(r, "C", "h3", "c", "hoarder", NULL);
    CHECK(last_is("C", ERROR_CODE("busy")));
    CHECK_EQ_INT(count_to(before, "S", NULL), 0);
    answer_typed(r, "S", "response", "hoarder", "c", "h1", "1");
    request(r, "C", "h4", "c", "hoarder", NULL);
    CHECK(last_is("S", "\"msg_id\":\"h4\""));
    router_free(&r);
    config_free(&small);
}

int main(void)
{
    char arg0[] = "test_router";
    char *argv[] = {arg0, NULL};
    char err[256];
    if (config_load(&cfg, 1, argv, err, sizeof err) != CONFIG_RUN) {
        fprintf(stderr, "config: %s\n", err);
        return 1;
    }
    log_set_level(LOG_LEVEL_ERROR);             /* the peers' comings and goings: noise here */
    registers_and_answers_registration();
    src_rules();
    request_response_round_trip();
    no_such_service_and_round_robin();
    deadlines();
    broadcast();
    instance_gone_mid_delivery();
    full_queue_is_busy();
    peer_gone_settles_requests();
    same_identity_new_connection();
    bad_input_is_answered();
    hosted_and_broker_services();
    watchers_and_stopping();
    broadcast_reaches_each_registered_connection_once();
    timeouts_in_detail();
    handler_gone_fails_each_request_once();
    round_robin_in_detail();
    routing_errors();
    full_inflight_table_is_busy();
    config_free(&cfg);
    return check_done("router");
}
