/* The client library against the real broker (started here from the path
 * in argv[1]), over loopback TCP. Each test names the protocol rules of
 * docs/protocol.md it exercises. */
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

static const char *broker_path;
static char endpoint[64];
static pid_t broker_pid;

/* A loopback endpoint on a port below Linux's ephemeral ports (32768-),
 * which outgoing connections on a shared machine take at random. */
static void pick_endpoint(void)
{
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", 20000 + rand() % 12000);
}

static void spawn_broker(void)
{
    broker_pid = fork();
    if (broker_pid == 0) {
        execl(broker_path, broker_path, "--endpoint", endpoint, "--policy", "", "--services", "",
              "--log-level", "warn", (char *)NULL);
        _exit(127);
    }
}

/* Starts the broker and waits until it answers a ping. A broker that
 * exits at once could not bind (another test's broker, or an outgoing
 * connection, holds the port for a moment): started again, on another
 * port if `may_move` (the first start), else on the same one (a restart
 * the clients reconnect to). */
static void start_broker_on(bool may_move)
{
    ss_options_t quiet = {.quiet = true};
    spawn_broker();
    for (int i = 0; i < 100; i++) {
        if (broker_pid < 0 || waitpid(broker_pid, NULL, WNOHANG) == broker_pid) {
            if (may_move)
                pick_endpoint();
            else
                usleep(100000);
            spawn_broker();
        }
        ss_client_t *c = ss_client_new(endpoint, &quiet);
        int rc = ss_request(c, "broker", "ping", NULL, 200, NULL);
        ss_client_destroy(&c);
        /* answered, and by ours: not another test's broker on that port
         * while ours found it taken */
        if (rc == SS_OK && waitpid(broker_pid, NULL, WNOHANG) == 0)
            return;
        if (rc == SS_OK)
            broker_pid = -1;        /* reaped: started again above next time */
    }
    fprintf(stderr, "broker did not start\n");
    if (broker_pid > 0)
        kill(broker_pid, SIGKILL);
    exit(1);
}

static void start_broker(void)
{
    start_broker_on(false);
}

static void stop_broker(void)
{
    kill(broker_pid, SIGTERM);
    int status;
    waitpid(broker_pid, &status, 0);
}

/* --- a service running in a thread of its own --- */

typedef struct {
    const char *name;
    ss_client_t *c;
    pthread_t thread;
    int events, broadcasts;
    bool ready;
} service_t;

static cJSON *echo(ss_client_t *c, const ss_msg_t *req, ss_error_t *err, void *arg)
{
    return cJSON_Duplicate(ss_msg_payload(req), 1);
}

static cJSON *refuse(ss_client_t *c, const ss_msg_t *req, ss_error_t *err, void *arg)
{
    snprintf(err->code, sizeof err->code, "out_of_stock");
    snprintf(err->message, sizeof err->message, "no more widgets");
    return NULL;
}

static void on_event(ss_client_t *c, const ss_msg_t *ev, void *arg)
{
    service_t *s = arg;
    if (strcmp(ss_msg_dst(ev), "broadcast") == 0)
        s->broadcasts++;
    else
        s->events++;
}

static void *service_main(void *arg)
{
    service_t *s = arg;
    ss_client_run(s->c);
    return NULL;
}

static void service_start(service_t *s, const char *name)
{
    memset(s, 0, sizeof *s);
    s->name = name;
    ss_options_t opt = {.quiet = true, .heartbeat_ms = 200, .dead_after_ms = 1000};
    s->c = ss_client_new(endpoint, &opt);
    CHECK_EQ_INT(ss_register(s->c, name, 2000), SS_OK);
    ss_handle(s->c, NULL, echo, s);
    ss_handle(s->c, "refuse", refuse, s);
    ss_on_event(s->c, NULL, on_event, s);
    pthread_create(&s->thread, NULL, service_main, s);
}

static void service_stop(service_t *s)
{
    ss_client_stop(s->c);
    pthread_join(s->thread, NULL);
    ss_client_destroy(&s->c);
}

static ss_client_t *client(void)
{
    ss_options_t opt = {.quiet = true};
    return ss_client_new(endpoint, &opt);
}

/* T1 T3 T4: register, a request routed to the service, its response back. */
static void request_gets_response(void)
{
    service_t svc;
    service_start(&svc, "c-echo");
    ss_client_t *c = client();
    cJSON *payload = cJSON_Parse("{\"n\": 42, \"s\": \"caf\\u00e9\"}"), *response = NULL;
    CHECK_EQ_INT(ss_request(c, "c-echo", "echo", payload, 2000, &response), SS_OK);
    CHECK(response && cJSON_Compare(payload, response, 1));
    cJSON_Delete(response);
    cJSON_Delete(payload);
    ss_client_destroy(&c);
    service_stop(&svc);
}

/* T3: no instance -> no_such_service comes back as an error, not a hang. */
static void missing_service_is_an_error(void)
{
    ss_client_t *c = client();
    CHECK_EQ_INT(ss_request(c, "nobody-here", "x", NULL, 2000, NULL), SS_EREMOTE);
    CHECK(strcmp(ss_last_error(c)->code, "no_such_service") == 0);
    ss_client_destroy(&c);
}

/* A handler's error reply reaches the caller with its code and message. */
static void handler_error_reaches_caller(void)
{
    service_t svc;
    service_start(&svc, "c-shop");
    ss_client_t *c = client();
    CHECK_EQ_INT(ss_request(c, "c-shop", "refuse", NULL, 2000, NULL), SS_EREMOTE);
    CHECK(strcmp(ss_last_error(c)->code, "out_of_stock") == 0);
    CHECK(strcmp(ss_last_error(c)->message, "no more widgets") == 0);
    ss_client_destroy(&c);
    service_stop(&svc);
}

/* D1: a service that never answers: the request times out. */
static void silent_service_times_out(void)
{
    ss_options_t opt = {.quiet = true};
    ss_client_t *silent = ss_client_new(endpoint, &opt);
    CHECK_EQ_INT(ss_register(silent, "c-silent", 2000), SS_OK);
    ss_client_t *c = client();
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ_INT(ss_request(c, "c-silent", "x", NULL, 300, NULL), SS_ETIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    CHECK(took >= 0.25 && took < 2.0);
    ss_client_destroy(&c);
    ss_client_destroy(&silent);
}

static void on_response(ss_client_t *c, const ss_msg_t *response, const ss_error_t *err, void *arg)
{
    int *state = arg;
    *state = response && !err ? 1 : -1;
    ss_client_stop(c);
}

/* T3 T4, async: the callback gets the response. */
static void async_request_calls_back(void)
{
    service_t svc;
    service_start(&svc, "c-async");
    ss_client_t *c = client();
    int state = 0;
    CHECK_EQ_INT(ss_request_async(c, "c-async", "echo", NULL, 2000, on_response, &state), SS_OK);
    ss_client_run(c);
    CHECK_EQ_INT(state, 1);
    ss_client_destroy(&c);
    service_stop(&svc);
}

static void wait_until(int *counter, int want)
{
    for (int i = 0; i < 100 && *counter < want; i++)
        usleep(20000);
}

/* T5: an event reaches one instance; a broadcast reaches every service but
 * the sender. */
static void events_and_broadcasts_arrive(void)
{
    service_t a, b;
    service_start(&a, "c-ev-a");
    service_start(&b, "c-ev-b");
    ss_client_t *c = client();
    CHECK_EQ_INT(ss_publish(c, "c-ev-a", "tick", NULL), SS_OK);
    CHECK_EQ_INT(ss_broadcast(c, "hello", NULL), SS_OK);
    ss_client_process(c, 100);
    wait_until(&a.events, 1);
    wait_until(&b.broadcasts, 1);
    CHECK_EQ_INT(a.events, 1);
    CHECK_EQ_INT(b.events, 0);
    CHECK_EQ_INT(a.broadcasts, 1);
    CHECK_EQ_INT(b.broadcasts, 1);
    ss_client_destroy(&c);
    service_stop(&a);
    service_stop(&b);
}

/* L4: the broker restarts under a running service; the service registers
 * again by itself and is reachable with no manual step. */
static void service_survives_broker_restart(void)
{
    service_t svc;
    service_start(&svc, "c-survivor");
    stop_broker();
    start_broker();
    ss_client_t *c = client();
    int rc = SS_EREMOTE;
    for (int i = 0; i < 50 && rc != SS_OK; i++) {
        rc = ss_request(c, "c-survivor", "echo", NULL, 500, NULL);
        if (rc != SS_OK)
            usleep(100000);
    }
    CHECK_EQ_INT(rc, SS_OK);
    ss_client_destroy(&c);
    service_stop(&svc);
}

static void on_topic(ss_client_t *c, const ss_msg_t *ev, void *arg)
{
    service_t *s = arg;
    if (ss_msg_topic(ev) && strncmp(ss_msg_topic(ev), "c-orders.", 9) == 0)
        s->events++;
}

/* A subscriber in a thread of its own, subscribed to `pattern`. */
static void subscriber_start(service_t *s, const char *pattern)
{
    memset(s, 0, sizeof *s);
    ss_options_t opt = {.quiet = true, .heartbeat_ms = 200, .dead_after_ms = 1000};
    s->c = ss_client_new(endpoint, &opt);
    CHECK_EQ_INT(ss_subscribe(s->c, pattern, NULL, on_topic, s, 2000), SS_OK);
    pthread_create(&s->thread, NULL, service_main, s);
}

/* TP1-TP5: subscribe with wildcards, publish a topic, a refused pattern,
 * and the subscription made again by itself after a broker restart. */
static void topics_publish_and_subscribe(void)
{
    service_t star, tail;
    subscriber_start(&star, "c-orders.*");
    subscriber_start(&tail, "c-orders.>");
    ss_client_t *c = client();
    CHECK_EQ_INT(ss_subscribe(c, "c-orders.a*", NULL, on_topic, NULL, 2000), SS_EREMOTE);
    CHECK(strcmp(ss_last_error(c)->code, "bad_topic") == 0);
    CHECK_EQ_INT(ss_publish_topic(c, "c-orders.created", "created", NULL), SS_OK);
    CHECK_EQ_INT(ss_publish_topic(c, "c-orders.created.eu", "created", NULL), SS_OK);
    ss_client_process(c, 100);
    wait_until(&tail.events, 2);
    CHECK_EQ_INT(star.events, 1);
    CHECK_EQ_INT(tail.events, 2);
    stop_broker();
    start_broker();
    for (int i = 0; i < 50 && star.events < 2; i++) {
        ss_publish_topic(c, "c-orders.again", "again", NULL);
        ss_client_process(c, 100);
    }
    CHECK(star.events >= 2);
    ss_client_destroy(&c);
    service_stop(&star);
    service_stop(&tail);
}

static void bad_arguments_are_refused(void)
{
    CHECK(ss_client_new("", NULL) == NULL);
    ss_client_t *c = client();
    CHECK_EQ_INT(ss_request(c, NULL, "x", NULL, 100, NULL), SS_EINVAL);
    CHECK_EQ_INT(ss_request(c, "x", "y", NULL, 0, NULL), SS_EINVAL);
    CHECK_EQ_INT(ss_register(c, "", 100), SS_EINVAL);
    /* the broker refuses a malformed name: an error, not a hang (N1) */
    CHECK_EQ_INT(ss_register(c, "bad name", 2000), SS_EREMOTE);
    CHECK(strcmp(ss_last_error(c)->code, "bad_name") == 0);
    ss_client_destroy(&c);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_smartshop BROKER_BINARY\n");
        return 2;
    }
    broker_path = argv[1];
    srand((unsigned)getpid());
    pick_endpoint();
    start_broker_on(true);
    request_gets_response();
    missing_service_is_an_error();
    topics_publish_and_subscribe();
    handler_error_reaches_caller();
    silent_service_times_out();
    async_request_calls_back();
    events_and_broadcasts_arrive();
    bad_arguments_are_refused();
    service_survives_broker_restart();
    stop_broker();
    return check_done("client library");
}
