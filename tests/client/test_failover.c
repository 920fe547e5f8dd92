/* libsmartshop with a list of brokers (docs/protocol.md section 10b):
 * three real smartshop-broker processes (argv[1]) on loopback ports, killed
 * with SIGKILL and restarted here. Checks CF1-CF5: one connection at a
 * time, names and topics registered again on the next broker (seen in its
 * list_services), waiting requests failed once with broker_lost, the way
 * back to a restarted broker, a dead first endpoint at start, and one
 * endpoint behaving as before (a timeout, never broker_lost). */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <smartshop.h>

#include "../unit/check.h"

#define BROKERS 3

static const char *broker_path;
static char endpoint[BROKERS][64];
static pid_t pid[BROKERS];
static int base_port;
static double slow = 1.0;            /* SMARTSHOP_SANITIZED: timing bounds x4 */

static long long ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int scaled(int ms) { return (int)(ms * slow); }

static pid_t started[64];             /* every broker started, killed at the end */
static int started_count;

static void kill_all(void)
{
    for (int i = 0; i < started_count; i++)
        if (waitpid(started[i], NULL, WNOHANG) == 0) {
            kill(started[i], SIGKILL);
            waitpid(started[i], NULL, 0);
        }
}

/* Starts broker i on its port; a broker that exits at once (its port held
 * for a moment by someone's outgoing connection on a shared machine) is
 * started again. */
static void start_broker(int i)
{
    ss_options_t quiet = {.quiet = true};
    for (int tries = 0; tries < 100; tries++) {
        if (tries == 0 || waitpid(pid[i], NULL, WNOHANG) == pid[i]) {   /* none, or it exited */
            pid[i] = fork();
            if (pid[i] > 0 && started_count < 64)
                started[started_count++] = pid[i];
            if (pid[i] == 0) {
                execl(broker_path, broker_path, "--endpoint", endpoint[i], "--policy", "",
                      "--services", "", "--log-level", "error", (char *)NULL);
                _exit(127);
            }
        }
        ss_client_t *c = ss_client_new(endpoint[i], &quiet);
        int rc = ss_request(c, "broker", "ping", NULL, 200, NULL);
        ss_client_destroy(&c);
        if (rc == SS_OK)
            return;
    }
    fprintf(stderr, "broker %d did not start\n", i);
    kill_all();
    exit(1);
}

static void kill_broker(int i)
{
    if (pid[i] <= 0)
        return;
    kill(pid[i], SIGKILL);
    waitpid(pid[i], NULL, 0);
    pid[i] = 0;
}

/* Instances of `name` broker i lists (0 when none or no answer). */
static int listed(int i, const char *name)
{
    ss_options_t quiet = {.quiet = true};
    ss_client_t *c = ss_client_new(endpoint[i], &quiet);
    cJSON *body = NULL;
    int found = 0;
    if (ss_request(c, "broker", "list_services", NULL, scaled(1000), &body) == SS_OK) {
        const cJSON *s;
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(body, "services")) {
            const cJSON *n = cJSON_GetObjectItemCaseSensitive(s, "name");
            const cJSON *k = cJSON_GetObjectItemCaseSensitive(s, "instances");
            if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0 && cJSON_IsNumber(k))
                found = k->valueint;
        }
    }
    cJSON_Delete(body);
    ss_client_destroy(&c);
    return found;
}

static bool listed_within(int i, const char *name, int want, int ms)
{
    long long end = ms_now() + scaled(ms);
    while (listed(i, name) != want) {
        if (ms_now() > end)
            return false;
        usleep(50000);
    }
    return true;
}

/* --- a service with a failover list, in a thread of its own --- */

typedef struct {
    ss_client_t *c;
    pthread_t thread;
    pthread_mutex_t lock;
    int failovers, topic_events;
    long long moved_at;
    char last_from[64], last_to[64], last_reason[32];
} service_t;

static cJSON *echo(ss_client_t *c, const ss_msg_t *req, ss_error_t *err, void *arg)
{
    return cJSON_Duplicate(ss_msg_payload(req), 1);
}

static void on_failover(ss_client_t *c, const ss_failover_t *ev, void *arg)
{
    service_t *s = arg;
    pthread_mutex_lock(&s->lock);
    s->failovers++;
    if (!s->moved_at)
        s->moved_at = ms_now();
    snprintf(s->last_from, sizeof s->last_from, "%s", ev->from);
    snprintf(s->last_to, sizeof s->last_to, "%s", ev->to);
    snprintf(s->last_reason, sizeof s->last_reason, "%s", ev->reason);
    pthread_mutex_unlock(&s->lock);
}

static void on_topic(ss_client_t *c, const ss_msg_t *ev, void *arg)
{
    service_t *s = arg;
    pthread_mutex_lock(&s->lock);
    s->topic_events++;
    pthread_mutex_unlock(&s->lock);
}

static void *service_main(void *arg)
{
    ss_client_run(((service_t *)arg)->c);
    return NULL;
}

static int service_get(service_t *s, int *field)
{
    pthread_mutex_lock(&s->lock);
    int v = *field;
    pthread_mutex_unlock(&s->lock);
    return v;
}

/* dead_after_ms well above the bounds put on a failover, so that meeting
 * them shows the socket monitor at work, not the silence rule */
static ss_options_t fast = {.quiet = true, .heartbeat_ms = 200, .dead_after_ms = 6000};
#define MOVE_BOUND_MS 2000

static char *list_of(int a, int b)
{
    static char text[4][160];
    static int turn;
    char *out = text[turn++ % 4];
    snprintf(out, 160, "%s, %s", endpoint[a], endpoint[b]);
    return out;
}

/* CF1 CF2 CF4: a service on A (listed first) moves to B when A is killed;
 * B lists its name, its topic subscription holds there, requests through B
 * reach it; A restarted and B killed, it is back on A. */
static void service_fails_over_and_back(void)
{
    service_t svc;
    memset(&svc, 0, sizeof svc);
    pthread_mutex_init(&svc.lock, NULL);
    svc.c = ss_client_new(list_of(0, 1), &fast);
    CHECK(svc.c != NULL);
    CHECK(strcmp(ss_client_endpoint(svc.c), endpoint[0]) == 0);
    ss_on_failover(svc.c, on_failover, &svc);
    CHECK_EQ_INT(ss_register(svc.c, "c-fo-svc", 2000), SS_OK);
    CHECK_EQ_INT(ss_subscribe(svc.c, "c-fo.*", NULL, on_topic, &svc, 2000), SS_OK);
    ss_handle(svc.c, NULL, echo, &svc);
    pthread_create(&svc.thread, NULL, service_main, &svc);

    /* one connection at a time: registered at A only */
    CHECK_EQ_INT(listed(0, "c-fo-svc"), 1);
    CHECK_EQ_INT(listed(1, "c-fo-svc"), 0);

    long long t0 = ms_now();
    kill_broker(0);
    CHECK(listed_within(1, "c-fo-svc", 1, 3000));
    pthread_mutex_lock(&svc.lock);
    long long moved_ms = svc.moved_at - t0;
    pthread_mutex_unlock(&svc.lock);
    printf("failover: moved to the next broker %lld ms after the kill\n", moved_ms);
    CHECK(moved_ms < scaled(MOVE_BOUND_MS));
    CHECK_EQ_INT(service_get(&svc, &svc.failovers), 1);
    pthread_mutex_lock(&svc.lock);
    CHECK(strcmp(svc.last_from, endpoint[0]) == 0);
    CHECK(strcmp(svc.last_to, endpoint[1]) == 0);
    CHECK(strcmp(svc.last_reason, "disconnected") == 0);
    pthread_mutex_unlock(&svc.lock);

    ss_options_t quiet = {.quiet = true};
    ss_client_t *c = ss_client_new(endpoint[1], &quiet);
    cJSON *payload = cJSON_Parse("{\"n\": 7}"), *response = NULL;
    CHECK_EQ_INT(ss_request(c, "c-fo-svc", "echo", payload, scaled(2000), &response), SS_OK);
    CHECK(cJSON_Compare(payload, response, true));
    cJSON_Delete(response);
    /* the topic subscription went with it (a few tries: the subscribe may
     * still be on its way) */
    long long end = ms_now() + scaled(3000);
    while (service_get(&svc, &svc.topic_events) == 0 && ms_now() < end) {
        ss_publish_topic(c, "c-fo.created", "created", NULL);
        ss_client_process(c, 100);
    }
    CHECK(service_get(&svc, &svc.topic_events) >= 1);
    ss_client_destroy(&c);

    /* back: A restarted, B killed */
    start_broker(0);
    kill_broker(1);
    CHECK(listed_within(0, "c-fo-svc", 1, 3000));
    CHECK_EQ_INT(service_get(&svc, &svc.failovers), 2);
    pthread_mutex_lock(&svc.lock);
    CHECK(strcmp(svc.last_to, endpoint[0]) == 0);
    pthread_mutex_unlock(&svc.lock);
    c = ss_client_new(endpoint[0], &quiet);
    CHECK_EQ_INT(ss_request(c, "c-fo-svc", "echo", payload, scaled(2000), NULL), SS_OK);
    ss_client_destroy(&c);
    cJSON_Delete(payload);

    ss_client_stop(svc.c);
    pthread_join(svc.thread, NULL);
    ss_client_destroy(&svc.c);
    start_broker(1);
}

/* --- CF3: waiting requests get broker_lost, once each --- */

typedef struct {
    int calls;
    char code[64];
} outcome_t;

static void on_answer(ss_client_t *c, const ss_msg_t *response, const ss_error_t *err, void *arg)
{
    outcome_t *o = arg;
    o->calls++;
    snprintf(o->code, sizeof o->code, "%s", err ? err->code : "ok");
}

static void *kill_after(void *arg)
{
    usleep(500000);
    kill_broker(*(int *)arg);
    return NULL;
}

static void waiting_requests_get_broker_lost(void)
{
    /* a service on B that never answers (its client is never processed) */
    ss_options_t quiet = {.quiet = true};
    ss_client_t *silent = ss_client_new(endpoint[1], &quiet);
    CHECK_EQ_INT(ss_register(silent, "c-fo-silent", 2000), SS_OK);

    ss_client_t *c = ss_client_new(list_of(1, 2), &fast);
    CHECK_EQ_INT(ss_request(c, "broker", "ping", NULL, 2000, NULL), SS_OK);   /* on B */
    outcome_t out[3];
    memset(out, 0, sizeof out);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(ss_request_async(c, "c-fo-silent", "work", NULL, 20000, on_answer, &out[i]), SS_OK);
    ss_client_process(c, 100);               /* sent, and in flight at B */

    long long t0 = ms_now();
    kill_broker(1);
    while ((out[0].calls + out[1].calls + out[2].calls) < 3 && ms_now() - t0 < scaled(MOVE_BOUND_MS + 3000))
        ss_client_process(c, 100);
    long long took = ms_now() - t0;
    printf("failover: 3 waiting requests failed %lld ms after the kill\n", took);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(out[i].calls, 1);
        CHECK(strcmp(out[i].code, "broker_lost") == 0);
    }
    CHECK(took < scaled(MOVE_BOUND_MS));
    CHECK(strcmp(ss_client_endpoint(c), endpoint[2]) == 0);

    /* a blocking request waiting when its broker dies: SS_EBROKER_LOST */
    ss_client_destroy(&silent);              /* its broker is gone */
    start_broker(1);
    ss_client_t *silent2 = ss_client_new(endpoint[2], &quiet);
    CHECK_EQ_INT(ss_register(silent2, "c-fo-silent2", 2000), SS_OK);
    int victim = 2;
    pthread_t killer;
    pthread_create(&killer, NULL, kill_after, &victim);
    t0 = ms_now();
    int rc = ss_request(c, "c-fo-silent2", "work", NULL, 20000, NULL);
    took = ms_now() - t0;
    pthread_join(killer, NULL);
    CHECK_EQ_INT(rc, SS_EBROKER_LOST);
    CHECK(strcmp(ss_last_error(c)->code, "broker_lost") == 0);
    CHECK(took < scaled(MOVE_BOUND_MS + 500));
    CHECK(strcmp(ss_strerror(SS_EBROKER_LOST), "unknown status") != 0);
    /* it went round to B (restarted), and works there */
    CHECK(strcmp(ss_client_endpoint(c), endpoint[1]) == 0);
    CHECK_EQ_INT(ss_request(c, "broker", "ping", NULL, scaled(2000), NULL), SS_OK);

    /* no second answer for any of them, later */
    long long end = ms_now() + 300;
    while (ms_now() < end)
        ss_client_process(c, 50);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(out[i].calls, 1);
    ss_client_destroy(&c);
    ss_client_destroy(&silent2);
    start_broker(2);
}

/* CF5: the first endpoint has no broker at start: a registration sent
 * before any handshake goes to the next one (once), not broker_lost. */
static void dead_first_endpoint_at_start(void)
{
    char dead[64], list[200];
    int port;
    do
        port = 20000 + rand() % 12000;
    while (port >= base_port && port < base_port + BROKERS);
    snprintf(dead, sizeof dead, "tcp://127.0.0.1:%d", port);
    snprintf(list, sizeof list, "%s,%s", dead, endpoint[2]);
    ss_client_t *c = ss_client_new(list, &fast);
    CHECK(c != NULL);
    CHECK_EQ_INT(ss_register(c, "c-fo-late", scaled(3000)), SS_OK);
    CHECK(strcmp(ss_client_endpoint(c), endpoint[2]) == 0);
    CHECK_EQ_INT(listed(2, "c-fo-late"), 1);
    ss_client_destroy(&c);
}

/* One endpoint: as before. A broker killed under a waiting request gives a
 * timeout (no failover, no broker_lost); the client stays on its endpoint. */
static void single_endpoint_unchanged(void)
{
    ss_options_t quiet = {.quiet = true};
    ss_client_t *silent = ss_client_new(endpoint[0], &quiet);
    CHECK_EQ_INT(ss_register(silent, "c-fo-one", 2000), SS_OK);
    ss_client_t *c = ss_client_new(endpoint[0], &fast);
    CHECK(strcmp(ss_client_endpoint(c), endpoint[0]) == 0);
    int victim = 0;
    pthread_t killer;
    pthread_create(&killer, NULL, kill_after, &victim);
    long long t0 = ms_now();
    int rc = ss_request(c, "c-fo-one", "work", NULL, scaled(1500), NULL);
    long long took = ms_now() - t0;
    pthread_join(killer, NULL);
    CHECK_EQ_INT(rc, SS_ETIMEOUT);
    CHECK(took >= scaled(1500) - 50);
    CHECK(strcmp(ss_client_endpoint(c), endpoint[0]) == 0);
    /* restarted: the same client works again on its one endpoint */
    start_broker(0);
    rc = SS_ETIMEOUT;
    for (int i = 0; i < 30 && rc != SS_OK; i++)
        rc = ss_request(c, "broker", "ping", NULL, 300, NULL);
    CHECK_EQ_INT(rc, SS_OK);
    ss_client_destroy(&c);
    ss_client_destroy(&silent);
}

/* The list's syntax: bad entries refused at once; CURVE keys per endpoint. */
static void endpoint_lists_are_checked(void)
{
    ss_options_t quiet = {.quiet = true};
    ss_client_t *c = ss_client_new(" tcp://127.0.0.1:1 , tcp://127.0.0.1:2 ", &quiet);
    CHECK(c != NULL && strcmp(ss_client_endpoint(c), "tcp://127.0.0.1:1") == 0);
    ss_client_destroy(&c);
    CHECK(ss_client_new("tcp://127.0.0.1:1,nonsense", &quiet) == NULL);
    CHECK(ss_client_new(",", &quiet) == NULL);
    const char *key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7";
    char list[200];
    snprintf(list, sizeof list, "tcp://127.0.0.1:1#%s", key);
    CHECK(ss_client_new(list, &quiet) == NULL);                /* a server key, no key pair */
    ss_options_t curve = {.quiet = true, .curve_public_key = key, .curve_secret_key = key};
    c = ss_client_new(list, &curve);
    CHECK(c != NULL);
    CHECK(c && strcmp(ss_client_endpoint(c), "tcp://127.0.0.1:1") == 0);
    ss_client_destroy(&c);
    CHECK(ss_client_new("tcp://127.0.0.1:1", &curve) == NULL);  /* a key pair, no server key */
    snprintf(list, sizeof list, "tcp://127.0.0.1:1#short");
    CHECK(ss_client_new(list, &curve) == NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_failover BROKER_BINARY\n");
        return 2;
    }
    broker_path = argv[1];
    const char *san = getenv("SMARTSHOP_SANITIZED");
    if (san && strcmp(san, "1") == 0)
        slow = 4.0;
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)getpid());
    base_port = 20000 + rand() % 12000;       /* below Linux's ephemeral ports (32768-) */
    for (int i = 0; i < BROKERS; i++) {
        snprintf(endpoint[i], sizeof endpoint[i], "tcp://127.0.0.1:%d", base_port + i);
        start_broker(i);
    }
    endpoint_lists_are_checked();
    service_fails_over_and_back();
    waiting_requests_get_broker_lost();
    dead_first_endpoint_at_start();
    single_endpoint_unchanged();
    kill_all();
    return check_done("client failover");
}
