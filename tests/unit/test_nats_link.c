/* nats_link against a real nats-server (Debian's, on a free loopback
 * port): subjects, nkeys, and two links driven by one poll loop the way
 * the broker drives its one: a queue-group request and its answer, the
 * 503 that names its request, broadcasts without echo, hold/release, and
 * a reconnect after the server is killed and started again. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "nats_link.h"

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    bind(s, (struct sockaddr *)&a, sizeof a);
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

static pid_t start_server(int port)
{
    pid_t pid = fork();
    if (pid == 0) {
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        if (!freopen("/dev/null", "w", stderr) || !freopen("/dev/null", "w", stdout))
            _exit(126);
        execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", p, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void stop_server(pid_t pid)
{
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* Up to 16 arrivals kept per link between pumps. */
typedef struct {
    nats_link_t *link;
    nats_in_t got[64];
    int count;
} side_t;

/* One pass of the loop over both links: poll, I/O, take. */
static void pump(side_t *a, side_t *b, int timeout_ms)
{
    struct pollfd fds[4];
    nats_link_poll_prepare(a->link, fds);
    nats_link_poll_prepare(b->link, fds + 2);
    poll(fds, 4, timeout_ms);
    nats_link_poll_done(a->link, fds);
    nats_link_poll_done(b->link, fds + 2);
    side_t *sides[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        side_t *s = sides[i];
        if (s->count < 64)
            s->count += (int)nats_link_take(s->link, s->got + s->count, (size_t)(64 - s->count));
    }
}

static void forget(side_t *s)
{
    for (int i = 0; i < s->count; i++)
        nats_in_release(&s->got[i]);
    s->count = 0;
}

/* Pumps until `s` has an arrival of `kind`, or 5 s pass. Returns its index or -1. */
static int wait_for(side_t *a, side_t *b, side_t *s, nats_kind_t kind)
{
    long deadline = now_ms() + 5000;
    while (now_ms() < deadline) {
        for (int i = 0; i < s->count; i++)
            if (s->got[i].kind == kind)
                return i;
        pump(a, b, 20);
    }
    return -1;
}

static bool wait_connected(side_t *a, side_t *b, int ms)
{
    long deadline = now_ms() + ms;
    while (now_ms() < deadline) {
        if (nats_link_connected(a->link) && nats_link_connected(b->link))
            return true;
        pump(a, b, 20);
    }
    return false;
}

/* Pumps for `ms`, taking whatever comes. */
static void settle(side_t *a, side_t *b, int ms)
{
    long deadline = now_ms() + ms;
    while (now_ms() < deadline)
        pump(a, b, 10);
}

static void test_subjects(void)
{
    char out[NATS_SUBJECT_MAX], name[65];
    CHECK(nats_subject_for_name(NL_REQUEST, "a..b", 4, out, sizeof out));
    CHECK(strcmp(out, "smartshop.req.a__b") == 0);
    CHECK(nats_subject_for_name(NL_EVENT, "inv:eu-1", 8, out, sizeof out));
    CHECK(strcmp(out, "smartshop.evt.inv:eu-1") == 0);
    CHECK(nats_name_of_subject("smartshop.req.a__b", name, sizeof name));
    CHECK(strcmp(name, "a..b") == 0);
    CHECK(!nats_name_of_subject("smartshop.bcast", name, sizeof name));
    CHECK(!nats_name_of_subject("smartshop.req.", name, sizeof name));
    CHECK(nats_subject_for_broker("store-2", NL_EVENT, "a.b", 3, out, sizeof out));
    CHECK(strcmp(out, "smartshop.to.store-2.evt.a_b") == 0);
    CHECK(nats_name_of_subject("evt.a_b", name, sizeof name) && strcmp(name, "a.b") == 0);
    CHECK(!nats_subject_for_broker("store-2", NL_REQUEST, "a", 1, out, 20));

    const char *id = "x.*> y}~!";
    nats_reply_subject("store-1", 'r', 42, id, strlen(id), out);
    CHECK(strchr(out + strlen("smartshop.reply.store-1.r42."), '.') == NULL);  /* one token */
    char origin[NATS_BROKER_ID_MAX + 1], kind, back[129];
    uint64_t seq;
    size_t len;
    CHECK(nats_parse_reply(out, origin, &kind, &seq, back, &len));
    CHECK(strcmp(origin, "store-1") == 0 && kind == 'r' && seq == 42);
    CHECK(len == strlen(id) && memcmp(back, id, len) == 0);
    CHECK(!nats_parse_reply("smartshop.reply.a.x1.41", origin, &kind, &seq, back, &len));
    CHECK(!nats_parse_reply("smartshop.reply.a.r1.4", origin, &kind, &seq, back, &len));
    CHECK(!nats_parse_reply("smartshop.reply.a.r.41", origin, &kind, &seq, back, &len));
    CHECK(!nats_parse_reply("smartshop.reply.a.r1.", origin, &kind, &seq, back, &len));
    CHECK(!nats_parse_reply("smartshop.bcast", origin, &kind, &seq, back, &len));

    CHECK(nats_broker_id_valid("store-7A"));
    CHECK(!nats_broker_id_valid(""));
    CHECK(!nats_broker_id_valid("a.b"));
    CHECK(!nats_broker_id_valid("a_b"));
}

static void test_nkeys(void)
{
    char dir[] = "/tmp/test_nats_link.XXXXXX", prefix[128], path[160], err[256], pub[64];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(prefix, sizeof prefix, "%s/broker", dir);
    CHECK(nats_nkey_keygen(prefix, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s.nk", prefix);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(nats_nkey_public(path, pub, err, sizeof err) == 0);
    char written[64] = "";
    snprintf(path, sizeof path, "%s.nk.pub", prefix);
    FILE *f = fopen(path, "r");
    CHECK(f && fgets(written, sizeof written, f));
    if (f)
        fclose(f);
    written[strcspn(written, "\n")] = '\0';
    CHECK(strlen(pub) == 56 && pub[0] == 'U' && strcmp(pub, written) == 0);
    CHECK(nats_nkey_keygen(prefix, err, sizeof err) < 0);   /* never over an existing seed */
    /* a flipped character fails the checksum */
    snprintf(path, sizeof path, "%s/bad.nk", dir);
    f = fopen(path, "w");
    fprintf(f, "SUAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
    fclose(f);
    CHECK(nats_nkey_public(path, pub, err, sizeof err) < 0);
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void test_live(void)
{
    int port = free_port();
    pid_t server = start_server(port);
    char url[64], err[256];
    snprintf(url, sizeof url, "nats://127.0.0.1:%d", port);
    usleep(300000);
    nats_link_config_t ca = {.urls = url, .broker_id = "A", .ping_interval_ms = 1000};
    nats_link_config_t cb = ca;
    cb.broker_id = "B";
    side_t a = {.link = nats_link_new(&ca, err, sizeof err)};
    if (!a.link)
        fprintf(stderr, "link A: %s\n", err);
    side_t b = {.link = nats_link_new(&cb, err, sizeof err)};
    if (!b.link)
        fprintf(stderr, "link B: %s\n", err);
    CHECK(a.link && b.link);
    if (!a.link || !b.link) {
        stop_server(server);
        return;
    }
    CHECK(wait_connected(&a, &b, 3000));

    /* B holds a name; A asks it, B answers on A's reply subject */
    CHECK(nats_link_hold(b.link, "price.eu", 8) == 0);
    settle(&a, &b, 100);
    char subject[NATS_SUBJECT_MAX], reply[NATS_SUBJECT_MAX];
    nats_subject_for_name(NL_REQUEST, "price.eu", 8, subject, sizeof subject);
    nats_link_reply_subject(a.link, 'r', 7, "m-1", 3, reply);
    CHECK(nats_link_publish(a.link, subject, reply, "{\"q\":1}", 7) == 0);
    int i = wait_for(&a, &b, &b, NL_REQUEST);
    CHECK(i >= 0);
    if (i >= 0) {
        CHECK(b.got[i].len == 7 && memcmp(b.got[i].data, "{\"q\":1}", 7) == 0);
        CHECK(b.got[i].reply && strcmp(b.got[i].reply, reply) == 0);
        CHECK(nats_link_publish(b.link, b.got[i].reply, NULL, "{\"a\":2}", 7) == 0);
    }
    i = wait_for(&a, &b, &a, NL_REPLY);
    CHECK(i >= 0 && !a.got[i].no_responders && a.got[i].len == 7);
    forget(&a);
    forget(&b);

    /* nobody holds it: a 503 on the reply subject, which says which request */
    nats_subject_for_name(NL_REQUEST, "nobody", 6, subject, sizeof subject);
    nats_link_reply_subject(a.link, 'r', 8, "m-2", 3, reply);
    CHECK(nats_link_publish(a.link, subject, reply, "{}", 2) == 0);
    i = wait_for(&a, &b, &a, NL_REPLY);
    CHECK(i >= 0 && a.got[i].no_responders);
    if (i >= 0)
        CHECK(strcmp(a.got[i].subject, reply) == 0);
    forget(&a);

    /* sent to B alone (a holder was silent, X10): B takes it as a request,
     * with the subject after its id; A's own subject is not B's */
    nats_subject_for_broker("B", NL_REQUEST, "price.eu", 8, subject, sizeof subject);
    nats_link_reply_subject(a.link, 'r', 9, "m-3", 3, reply);
    CHECK(nats_link_publish(a.link, subject, reply, "{}", 2) == 0);
    i = wait_for(&a, &b, &b, NL_REQUEST);
    CHECK(i >= 0 && b.got[i].direct && strcmp(b.got[i].subject, "req.price_eu") == 0);
    forget(&b);
    CHECK(nats_link_publish(a.link, "smartshop.to.B.junk", NULL, "{}", 2) == 0);
    i = wait_for(&a, &b, &b, NL_DIRECT);
    CHECK(i >= 0 && !b.got[i].direct);
    forget(&b);

    /* a broadcast reaches B, never its sender */
    CHECK(nats_link_publish(a.link, "smartshop.bcast", NULL, "b", 1) == 0);
    CHECK(wait_for(&a, &b, &b, NL_BROADCAST) >= 0);
    settle(&a, &b, 100);
    for (int k = 0; k < a.count; k++)
        CHECK(a.got[k].kind != NL_BROADCAST);
    forget(&a);
    forget(&b);

    /* two instances at B: both subscriptions; releasing both gives 503 again */
    CHECK(nats_link_hold(b.link, "price.eu", 8) == 0);
    nats_link_stats_t st;
    nats_link_stats(b.link, &st);
    CHECK_EQ_INT(st.subscriptions, 4);
    nats_link_release(b.link, "price.eu", 8);
    nats_link_release(b.link, "price.eu", 8);
    nats_link_release(b.link, "price.eu", 8);       /* one too many: ignored */
    nats_link_stats(b.link, &st);
    CHECK_EQ_INT(st.subscriptions, 0);
    settle(&a, &b, 100);
    nats_subject_for_name(NL_REQUEST, "price.eu", 8, subject, sizeof subject);
    nats_link_reply_subject(a.link, 'r', 9, "m-3", 3, reply);
    CHECK(nats_link_publish(a.link, subject, reply, "{}", 2) == 0);
    i = wait_for(&a, &b, &a, NL_REPLY);
    CHECK(i >= 0 && a.got[i].no_responders);
    forget(&a);
    forget(&b);

    /* over max_payload: refused here, the connection kept */
    size_t big = 1048577;
    char *blob = calloc(1, big);
    CHECK(nats_link_publish(a.link, "smartshop.bcast", NULL, blob, big) == -2);
    free(blob);
    CHECK(nats_link_connected(a.link));

    /* the server dies: not connected, publishing refused (never buffered);
     * it comes back: both links reconnect and their subscriptions with them */
    CHECK(nats_link_hold(b.link, "price.eu", 8) == 0);
    stop_server(server);
    long deadline = now_ms() + 3000;
    while (now_ms() < deadline && nats_link_connected(a.link))
        pump(&a, &b, 20);
    CHECK(!nats_link_connected(a.link));
    CHECK(nats_link_publish(a.link, "smartshop.bcast", NULL, "x", 1) == -1);
    server = start_server(port);
    CHECK(wait_connected(&a, &b, 8000));
    /* the library tells of it from a thread of its own, a moment later */
    char changes_error[160];
    int changes = 0;
    deadline = now_ms() + 3000;
    while (now_ms() < deadline && !(changes & NL_CHANGED_RECONNECTED)) {
        changes |= nats_link_take_changes(a.link, changes_error, sizeof changes_error);
        pump(&a, &b, 20);
    }
    CHECK(changes & NL_CHANGED_DISCONNECTED);
    CHECK(changes & NL_CHANGED_RECONNECTED);
    settle(&a, &b, 200);
    forget(&a);
    forget(&b);
    nats_link_reply_subject(a.link, 'r', 10, "m-4", 3, reply);
    CHECK(nats_link_publish(a.link, subject, reply, "{}", 2) == 0);
    CHECK(wait_for(&a, &b, &b, NL_REQUEST) >= 0);
    nats_link_stats(a.link, &st);
    CHECK(st.disconnects >= 1 && st.reconnects >= 1);
    forget(&a);
    forget(&b);

    nats_link_free(&a.link);
    nats_link_free(&b.link);
    CHECK(a.link == NULL);
    stop_server(server);
}

static void test_bad_settings(void)
{
    char err[256];
    nats_link_config_t c = {.urls = "http://x", .broker_id = "A", .ping_interval_ms = 1000};
    CHECK(nats_link_new(&c, err, sizeof err) == NULL && strstr(err, "nats://"));
    c.urls = "nats://127.0.0.1:1";
    c.broker_id = "no.dots";
    CHECK(nats_link_new(&c, err, sizeof err) == NULL && strstr(err, "--broker-id"));
    c.broker_id = "A";
    c.nkey_seed_file = "/nonexistent/seed";
    CHECK(nats_link_new(&c, err, sizeof err) == NULL && strstr(err, "nkey"));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    test_subjects();
    test_nkeys();
    test_bad_settings();
    test_live();
    return check_done("nats_link");
}
