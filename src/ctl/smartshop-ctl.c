/* smartshop-ctl: the operator's tool for a running Smartshop broker.
 *
 * Talks to the broker's own service (dst "broker", docs/protocol.md B1)
 * and to any service, through the client library (libsmartshop). One
 * subcommand per run; human-readable tables by default, the reply's
 * payload as JSON with --json.
 *
 * Exit codes: 0 ok; 1 the broker or the service answered with an error
 * (or a service did not answer in time while the broker did); 2 bad usage;
 * 3 the broker did not answer at all (not running, wrong endpoint, CURVE
 * keys it refuses). */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../keyfile.h"
#include "smartshop.h"

#define PROG "smartshop-ctl"
#define DEFAULT_ENDPOINT "tcp://127.0.0.1:5555"
#define DEFAULT_TIMEOUT_MS 5000
#define KEY_LEN 40

enum { EXIT_OK = 0, EXIT_REMOTE = 1, EXIT_USAGE = 2, EXIT_UNREACHABLE = 3, EXIT_INTERRUPTED = 130 };

typedef struct {
    const char *endpoint;
    bool json;
    int timeout_ms;
    const char *server_key_file;
    const char *key_prefix;
    long limit;                 /* dead-letters --limit; -1: the broker's default */
    const char *pub_to;         /* pub --to: a service name or "broadcast" (NULL: a topic) */
    char server_key[KEY_LEN + 1], public_key[KEY_LEN + 1], secret_key[KEY_LEN + 1];
} opts_t;

static opts_t opt = {.timeout_ms = DEFAULT_TIMEOUT_MS, .limit = -1};
static ss_client_t *client;
static volatile sig_atomic_t interrupted;

static void usage(FILE *out)
{
    fprintf(out,
        "Usage: " PROG " [options] COMMAND [ARGS]\n"
        "Control and inspect a running Smartshop broker.\n"
        "\n"
        "Commands:\n"
        "  ping                        ask the broker whether it is there\n"
        "  services                    list the registered services and their instances\n"
        "  stats                       the broker's counters\n"
        "  metrics                     per-service and per-action counters and latencies\n"
        "  request DST ACTION [JSON]   send a request and print the response's payload\n"
        "                              (JSON: the payload, '-' to read it from stdin)\n"
        "  watch                       print every event and broadcast live, one a line,\n"
        "                              until Ctrl-C\n"
        "  reload                      reload the routing policy now\n"
        "  dead-letters [--limit N]    the newest refused or undelivered messages\n"
        "  dead-letters show ID        one dead letter with its message, before a replay\n"
        "  replay ID                   send dead letter ID again, as its sender did\n"
        "  pub TOPIC ACTION [JSON]     publish an event on TOPIC (e.g. order.created)\n"
        "  pub --to NAME ACTION [JSON] an event to service NAME; --to broadcast: to every\n"
        "                              connection holding a name\n"
        "  sub PATTERN [GROUP]         print the events on topics matching PATTERN live\n"
        "                              (order.*, store.12.>), until Ctrl-C\n"
        "  top [N]                     per service: requests/s, ok and failed per second,\n"
        "                              p50/p99 latency; refreshed each second (N times,\n"
        "                              default until Ctrl-C)\n"
        "  reply NAME [JSON]           a stub service: register NAME and answer every\n"
        "                              request with JSON (default: its own payload),\n"
        "                              printing each, until Ctrl-C\n"
        "  peers                       every connection: identity, names, address, key,\n"
        "                              connected since, idle, in flight, messages in/out\n"
        "  record FILE [SERVICE]       traffic into FILE as JSON lines for smartshop-policy\n"
        "                              (instances, messages, outcomes), sampled at --rate;\n"
        "                              --seconds N, --limit N lines, --no-payloads\n"
        "  trace [SERVICE]             requests, answers, errors and events live, one a\n"
        "                              line, until Ctrl-C; with --action A, --src NAME,\n"
        "                              --code CODE, --kinds request,response,error,event,\n"
        "                              --rate N (copies a second, default 100)\n"
        "\n"
        "Options:\n"
        "  -e, --endpoint EP           the broker (default $SMARTSHOP_ENDPOINT, else\n"
        "                              " DEFAULT_ENDPOINT ")\n"
        "  -j, --json                  print the reply's payload as JSON (watch: each\n"
        "                              message as one JSON line)\n"
        "  -t, --timeout MS            wait this long for an answer (default %d)\n"
        "  -n, --limit N               dead-letters: at most N letters (default 100)\n"
        "      --server-key FILE       CURVE: the broker's public key file (BROKER.pub);\n"
        "                              default $SMARTSHOP_SERVER_KEY\n"
        "      --key PREFIX            CURVE: this client's key pair, PREFIX.pub and\n"
        "                              PREFIX.key as `smartshop-broker --keygen PREFIX`\n"
        "                              writes them; default $SMARTSHOP_KEY\n"
        "  -h, --help                  show this help and exit\n"
        "  -V, --version               show the version and exit\n"
        "\n"
        "Exit codes: 0 ok, 1 the broker or the service answered with an error,\n"
        "2 bad usage, 3 the broker did not answer (not running, wrong endpoint or keys).\n"
        "Docs: docs/operations.md, docs/protocol.md (the broker's actions: B1).\n",
        DEFAULT_TIMEOUT_MS);
}

static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Text from the wire, made safe for a terminal: control characters (C0,
 * DEL, and C1 as UTF-8) become '?', so that a name, an action or an error
 * message cannot move the cursor or retitle the operator's terminal. */
static void sanitize(char *text)
{
    for (unsigned char *c = (unsigned char *)text; *c; c++) {
        if (*c < 0x20 || *c == 0x7f)
            *c = '?';
        else if (*c == 0xc2 && c[1] >= 0x80 && c[1] <= 0x9f)
            c[0] = c[1] = '?';
    }
}

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROG ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '" PROG " --help'.\n");
    va_end(ap);
    return EXIT_USAGE;
}

/* --- numbers and keys --- */

static bool parse_long(const char *text, long min, long max, long *out)
{
    if (!text || !*text)
        return false;
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* The one key a key file holds, as smartshop-broker --keygen writes it. */
static int read_key(const char *path, bool secret, char out[KEY_LEN + 1])
{
    char err[512];
    if (keyfile_read(path, secret, out, err, sizeof err) < 0) {
        say("%s", err);
        return -1;
    }
    return 0;
}

static int load_keys(void)
{
    if (!opt.server_key_file && !opt.key_prefix)
        return 0;
    if (!opt.server_key_file || !opt.key_prefix)
        return usage_error("CURVE needs both --server-key FILE (the broker's public key) and "
                           "--key PREFIX (this client's key pair)");
    char path[PATH_MAX];
    if (read_key(opt.server_key_file, false, opt.server_key) < 0)
        return EXIT_USAGE;
    snprintf(path, sizeof path, "%s.pub", opt.key_prefix);
    if (read_key(path, false, opt.public_key) < 0)
        return EXIT_USAGE;
    snprintf(path, sizeof path, "%s.key", opt.key_prefix);
    if (read_key(path, true, opt.secret_key) < 0)
        return EXIT_USAGE;
    return 0;
}

/* --- talking to the broker --- */

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
    if (client)
        ss_client_stop(client);
}

static int check_endpoint(void);

static int connect_broker(void)
{
    int rc = check_endpoint();
    if (rc)
        return rc;
    ss_options_t o;
    memset(&o, 0, sizeof o);
    o.quiet = true;
    if (opt.server_key[0]) {
        o.curve_server_key = opt.server_key;
        o.curve_public_key = opt.public_key;
        o.curve_secret_key = opt.secret_key;
    }
    client = ss_client_new(opt.endpoint, &o);
    if (!client)
        return usage_error("cannot use endpoint '%s' (expected e.g. " DEFAULT_ENDPOINT ")",
                           opt.endpoint);
    return 0;
}

/* What went wrong, for the caller's exit code and message. */
typedef struct {
    char code[64];
    char message[512];
} failure_t;

static void set_failure(failure_t *f, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    snprintf(f->code, sizeof f->code, "%s", code);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    sanitize(f->code);
    sanitize(f->message);
}

static bool broker_answers(int timeout_ms)
{
    cJSON *pong = NULL;
    int rc = ss_request(client, "broker", "ping", NULL, timeout_ms, &pong);
    cJSON_Delete(pong);
    return rc == SS_OK;
}

/* Sends a request and waits. Returns an exit code: 0 with *response set,
 * or 1/3/130 with *f filled. A request that timed out is told apart by a
 * ping: a broker that answers it is up (the service was slow: 1), one that
 * does not is unreachable (3). */
static int call(const char *dst, const char *action, const cJSON *payload, cJSON **response,
                failure_t *f)
{
    *response = NULL;
    int rc = ss_request(client, dst, action, payload, opt.timeout_ms, response);
    if (rc == SS_OK)
        return EXIT_OK;
    const ss_error_t *e = ss_last_error(client);
    switch (rc) {
    case SS_EREMOTE:
        set_failure(f, e->code, "%s", e->message);
        return EXIT_REMOTE;
    case SS_ETIMEOUT: {
        bool from_broker = strcmp(e->message, "no answer within the timeout") != 0;
        char broker_says[256];
        snprintf(broker_says, sizeof broker_says, "%s", e->message);
        if (from_broker || (!interrupted && broker_answers(opt.timeout_ms < 1000 ? opt.timeout_ms : 1000))) {
            if (from_broker)
                set_failure(f, "timeout", "%s", broker_says);
            else
                set_failure(f, "timeout", "no answer from %s (action %s) within %d ms; the broker "
                            "at %s is up", dst, action, opt.timeout_ms, opt.endpoint);
            return EXIT_REMOTE;
        }
        if (interrupted)
            break;
        set_failure(f, "unreachable", "no answer from the broker at %s within %d ms: is it "
                    "running there%s? (systemctl status smartshop-broker)", opt.endpoint,
                    opt.timeout_ms, opt.server_key[0] ? ", and does it accept these CURVE keys" : "");
        return EXIT_UNREACHABLE;
    }
    case SS_ESTOPPED:
        break;
    case SS_EINVAL:
        set_failure(f, e->code[0] ? e->code : "invalid", "%s", e->message);
        return EXIT_USAGE;
    default:
        set_failure(f, e->code[0] ? e->code : "failed", "%s: %s", ss_strerror(rc), e->message);
        return EXIT_UNREACHABLE;
    }
    set_failure(f, "interrupted", "interrupted");
    return EXIT_INTERRUPTED;
}

/* A failure on stderr, and with --json as {"error": {...}} on stdout. */
static int report_failure(int code, const char *what, const failure_t *f)
{
    if (code == EXIT_INTERRUPTED)
        return code;
    if (opt.json) {
        cJSON *root = cJSON_CreateObject();
        cJSON *err = cJSON_AddObjectToObject(root, "error");
        cJSON_AddStringToObject(err, "code", f->code);
        cJSON_AddStringToObject(err, "message", f->message);
        char *text = cJSON_PrintUnformatted(root);
        if (text)
            printf("%s\n", text);
        cJSON_free(text);
        cJSON_Delete(root);
    }
    if (what)
        say("%s: %s: %s", what, f->code, f->message);
    else
        say("%s: %s", f->code, f->message);
    return code;
}

/* --- is anything there? --- */

typedef enum { PROBE_UNKNOWN, PROBE_REFUSED, PROBE_NULL, PROBE_CURVE } probe_t;

/* A plain socket to the endpoint (tcp://host:port or ipc://path), -1 with
 * errno when the connection is refused or the name does not resolve. */
static int probe_connect(const char *ep)
{
    if (strncmp(ep, "ipc://", 6) == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        snprintf(a.sun_path, sizeof a.sun_path, "%s", ep + 6);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            return fd;
        int why = errno;
        if (fd >= 0)
            close(fd);
        errno = why == ENOENT ? ECONNREFUSED : why;
        return -1;
    }
    if (strncmp(ep, "tcp://", 6) != 0)
        return errno = EINVAL, -1;
    char host[256];
    const char *colon = strrchr(ep + 6, ':');
    if (!colon || (size_t)(colon - ep - 6) >= sizeof host)
        return errno = EINVAL, -1;
    snprintf(host, sizeof host, "%.*s", (int)(colon - ep - 6), ep + 6);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {      /* [::1] */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(strcmp(host, "*") == 0 ? "127.0.0.1" : host, colon + 1, &hints, &res) != 0)
        return errno = EINVAL, -1;
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    int rc = fd >= 0 ? connect(fd, res->ai_addr, res->ai_addrlen) : -1;
    int why = errno;
    freeaddrinfo(res);
    if (rc == 0)
        return fd;
    if (fd >= 0)
        close(fd);
    errno = why;
    return -1;
}

/* Asks the endpoint for its ZMTP greeting (rfc.zeromq.org 23/ZMTP): a
 * ZeroMQ peer sends it at once, and its mechanism field says whether the
 * broker speaks CURVE. Nothing here is a ZeroMQ connection: the broker
 * sees a connection that closes before its handshake. */
static probe_t probe_endpoint(const char *ep)
{
    int fd = probe_connect(ep);
    if (fd < 0)
        return errno == ECONNREFUSED ? PROBE_REFUSED : PROBE_UNKNOWN;
    /* our signature and major version: enough for a 3.x peer to send the
     * rest of its greeting */
    static const unsigned char hello[11] = {0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3};
    unsigned char greeting[64];
    size_t have = 0;
    probe_t result = PROBE_UNKNOWN;
    if (write(fd, hello, sizeof hello) == (ssize_t)sizeof hello) {
        struct pollfd p = {fd, POLLIN, 0};
        while (have < sizeof greeting && poll(&p, 1, 1000) > 0) {
            ssize_t n = read(fd, greeting + have, sizeof greeting - have);
            if (n <= 0)
                break;
            have += (size_t)n;
        }
    }
    close(fd);
    if (have >= 32 && greeting[0] == 0xff && greeting[10] >= 3)
        result = memcmp(greeting + 12, "CURVE", 5) == 0 ? PROBE_CURVE : PROBE_NULL;
    return result;
}

/* Says at once what is wrong when nothing, or a broker of another mode,
 * listens there; 0 when the endpoint looks right (or cannot be told). */
static int check_endpoint(void)
{
    failure_t f;
    switch (probe_endpoint(opt.endpoint)) {
    case PROBE_REFUSED:
        set_failure(&f, "unreachable", "nothing listens at %s (connection refused): is the broker "
                    "running there? (systemctl status smartshop-broker)", opt.endpoint);
        break;
    case PROBE_CURVE:
        if (opt.server_key[0])
            return 0;
        set_failure(&f, "curve_required", "the broker at %s requires CURVE: give --server-key "
                    "BROKER.pub and --key PREFIX (or $SMARTSHOP_SERVER_KEY and $SMARTSHOP_KEY)",
                    opt.endpoint);
        break;
    case PROBE_NULL:
        if (!opt.server_key[0])
            return 0;
        set_failure(&f, "curve_off", "the broker at %s runs without CURVE (plain mode): leave "
                    "out --server-key and --key", opt.endpoint);
        break;
    default:
        return 0;
    }
    return report_failure(EXIT_UNREACHABLE, "connect", &f);
}


/* Broker actions answer {"status":"error","message":...} in a response. */
static bool status_error(const cJSON *payload, failure_t *f)
{
    const cJSON *status = cJSON_GetObjectItemCaseSensitive(payload, "status");
    if (!cJSON_IsString(status) || strcmp(status->valuestring, "error") != 0)
        return false;
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(payload, "message");
    set_failure(f, "error", "%s", cJSON_IsString(message) ? message->valuestring : "(no message)");
    return true;
}

/* JSON indented by two spaces (cJSON_Print indents with tabs). */
static void print_indented(const cJSON *v, int depth)
{
    bool obj = cJSON_IsObject(v);
    if ((!obj && !cJSON_IsArray(v)) || !v->child) {
        char *text = cJSON_PrintUnformatted(v);
        if (text)
            sanitize(text);     /* cJSON leaves DEL and C1 unescaped */
        fputs(text ? text : "null", stdout);
        cJSON_free(text);
        return;
    }
    putchar(obj ? '{' : '[');
    for (const cJSON *item = v->child; item; item = item->next) {
        printf("\n%*s", 2 * (depth + 1), "");
        if (obj) {
            cJSON *key = cJSON_CreateString(item->string);
            char *text = cJSON_PrintUnformatted(key);
            if (text)
                sanitize(text);
            printf("%s: ", text ? text : "\"?\"");
            cJSON_free(text);
            cJSON_Delete(key);
        }
        print_indented(item, depth + 1);
        if (item->next)
            putchar(',');
    }
    printf("\n%*s%c", 2 * depth, "", obj ? '}' : ']');
}

static void print_json(const cJSON *value, bool pretty)
{
    if (pretty) {
        print_indented(value, 0);
        putchar('\n');
        return;
    }
    char *text = cJSON_PrintUnformatted(value);
    if (text)
        printf("%s\n", text);
    cJSON_free(text);
}

/* A broker action: the request, the error handling, --json. Returns 0 and
 * the payload in *out (yours), or an exit code (already reported). */
static int broker_action(const char *action, const cJSON *payload, const char *what, cJSON **out)
{
    failure_t f;
    int code = call("broker", action, payload, out, &f);
    if (code != EXIT_OK)
        return report_failure(code, what, &f);
    if (status_error(*out, &f)) {
        cJSON_Delete(*out);
        *out = NULL;
        return report_failure(EXIT_REMOTE, what, &f);
    }
    return EXIT_OK;
}

/* --- human output --- */

static const char *str_or(const cJSON *obj, const char *key, const char *dflt)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(item) ? item->valuestring : dflt;
}

static double num_or(const cJSON *obj, const char *key, double dflt)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(item) ? item->valuedouble : dflt;
}

/* A scalar as table text: integers without ".0", strings bare. */
static void scalar_text(const cJSON *v, char *out, size_t len)
{
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (d == floor(d) && fabs(d) < 9.007199254740992e15)
            snprintf(out, len, "%.0f", d);
        else
            snprintf(out, len, "%.3f", d);
    } else if (cJSON_IsString(v)) {
        snprintf(out, len, "%s", v->valuestring);
    } else if (cJSON_IsBool(v)) {
        snprintf(out, len, "%s", cJSON_IsTrue(v) ? "yes" : "no");
    } else if (cJSON_IsNull(v)) {
        snprintf(out, len, "-");
    } else {
        char *text = cJSON_PrintUnformatted(v);
        snprintf(out, len, "%s", text ? text : "?");
        cJSON_free(text);
    }
}

/* A table of rows of cells, columns padded to their widest cell. */
typedef struct {
    int cols, rows, cap;
    char **cells;               /* rows * cols */
    bool *right;                /* per column: right-aligned (numbers) */
} table_t;

static void table_init(table_t *t, int cols)
{
    memset(t, 0, sizeof *t);
    t->cols = cols;
    t->right = calloc((size_t)cols, sizeof *t->right);
}

static void table_add(table_t *t, char **cells)
{
    if (t->rows == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 16;
        t->cells = realloc(t->cells, (size_t)t->cap * (size_t)t->cols * sizeof *t->cells);
        if (!t->cells) {
            say("out of memory");
            exit(EXIT_REMOTE);
        }
    }
    for (int c = 0; c < t->cols; c++) {
        char *cell = strdup(cells[c] ? cells[c] : "");
        if (!cell) {
            say("out of memory");
            exit(EXIT_REMOTE);
        }
        sanitize(cell);
        t->cells[t->rows * t->cols + c] = cell;
    }
    t->rows++;
}

static void table_row(table_t *t, ...)
{
    char *cells[16];
    va_list ap;
    va_start(ap, t);
    for (int c = 0; c < t->cols && c < 16; c++)
        cells[c] = va_arg(ap, char *);
    va_end(ap);
    table_add(t, cells);
}

static void table_free(table_t *t)
{
    for (int i = 0; i < t->rows * t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t->right);
    memset(t, 0, sizeof *t);
}

/* Prints the table and frees it. */
static void table_print(table_t *t)
{
    int *width = calloc((size_t)t->cols, sizeof *width);
    for (int r = 0; r < t->rows; r++)
        for (int c = 0; c < t->cols; c++) {
            int w = (int)strlen(t->cells[r * t->cols + c]);
            if (w > width[c])
                width[c] = w;
        }
    for (int r = 0; r < t->rows; r++) {
        for (int c = 0; c < t->cols; c++) {
            const char *cell = t->cells[r * t->cols + c];
            bool last = c == t->cols - 1;
            if (t->right[c])
                printf("%*s", width[c], cell);
            else
                printf("%-*s", last ? 0 : width[c], cell);
            if (!last)
                printf("  ");
        }
        putchar('\n');
    }
    free(width);
    table_free(t);
}

static void duration_text(double ms, char *out, size_t len)
{
    long long s = (long long)(ms / 1000);
    long long d = s / 86400, h = s % 86400 / 3600, m = s % 3600 / 60, sec = s % 60;
    if (d)
        snprintf(out, len, "%lldd %lldh %lldm %llds", d, h, m, sec);
    else if (h)
        snprintf(out, len, "%lldh %lldm %llds", h, m, sec);
    else if (m)
        snprintf(out, len, "%lldm %llds", m, sec);
    else
        snprintf(out, len, "%.1fs", ms / 1000);
}

/* Nested objects as dotted keys: {"in":{"request":3}} -> in.request 3. */
static void flatten(table_t *t, const cJSON *obj, const char *prefix)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, obj)
    {
        char key[256], value[512];
        if (prefix)
            snprintf(key, sizeof key, "%s.%s", prefix, item->string);
        else
            snprintf(key, sizeof key, "%s", item->string);
        if (cJSON_IsObject(item)) {
            if (item->child)
                flatten(t, item, key);
            else
                table_row(t, key, "-");
            continue;
        }
        scalar_text(item, value, sizeof value);
        if (strcmp(key, "uptime_ms") == 0 && cJSON_IsNumber(item)) {
            char d[64];
            duration_text(item->valuedouble, d, sizeof d);
            snprintf(value + strlen(value), sizeof value - strlen(value), "  (%s)", d);
        }
        table_row(t, key, value);
    }
}

/* --- the commands --- */

/* A broker action as most commands show it: its payload as JSON with
 * --json, else as text(payload, arg) prints it. Returns the exit code
 * (a failure already reported). */
static int show_broker_action(const char *action, const cJSON *req, const char *what,
                              void (*text)(const cJSON *payload, void *arg), void *arg)
{
    cJSON *payload = NULL;
    int rc = broker_action(action, req, what, &payload);
    if (rc)
        return rc;
    if (opt.json)
        print_json(payload, false);
    else
        text(payload, arg);
    cJSON_Delete(payload);
    return EXIT_OK;
}

/* Every value of the payload, nested ones dotted, as "key value" lines. */
static void flat_text(const cJSON *payload, void *arg)
{
    (void)arg;
    table_t t;
    table_init(&t, 2);
    flatten(&t, payload, NULL);
    table_print(&t);
}

static void ping_text(const cJSON *payload, void *arg)
{
    (void)payload;
    const struct timespec *a = arg;
    struct timespec b;
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ms = (double)(b.tv_sec - a->tv_sec) * 1e3 + (double)(b.tv_nsec - a->tv_nsec) / 1e6;
    printf("broker at %s answered in %.1f ms\n", opt.endpoint, ms);
}

static int cmd_ping(void)
{
    struct timespec a;
    clock_gettime(CLOCK_MONOTONIC, &a);
    return show_broker_action("ping", NULL, "ping", ping_text, &a);
}

static int cmd_stats(void)
{
    return show_broker_action("stats", NULL, "stats", flat_text, NULL);
}

/* metrics: the broker's rows (one per service and action) as a table
 * whose columns are the rows' keys, nested ones dotted (latency_ms.p99_le);
 * other top-level values as "key value" lines above it. */
#define MAX_COLS 32

static void collect_columns(const cJSON *obj, const char *prefix, char cols[][64], int *n)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, obj)
    {
        char key[64];
        snprintf(key, sizeof key, "%s%s%s", prefix ? prefix : "", prefix ? "." : "", item->string);
        if (cJSON_IsObject(item)) {
            collect_columns(item, key, cols, n);
            continue;
        }
        bool seen = false;
        for (int i = 0; i < *n && !seen; i++)
            seen = strcmp(cols[i], key) == 0;
        if (!seen && *n < MAX_COLS)
            snprintf(cols[(*n)++], 64, "%s", key);
    }
}

static const cJSON *dotted(const cJSON *obj, const char *key)
{
    char copy[64];
    snprintf(copy, sizeof copy, "%s", key);
    char *save = NULL;
    const cJSON *cur = obj;
    for (char *part = strtok_r(copy, ".", &save); part && cur; part = strtok_r(NULL, ".", &save))
        cur = cJSON_GetObjectItemCaseSensitive(cur, part);
    return cur;
}

static bool metrics_table(const cJSON *payload)
{
    const cJSON *rows = NULL, *item;
    cJSON_ArrayForEach(item, payload)
        if (!rows && cJSON_IsArray(item) && (!item->child || cJSON_IsObject(item->child)))
            rows = item;
    if (!rows)
        return false;
    table_t top;
    table_init(&top, 2);
    cJSON_ArrayForEach(item, payload)
    {
        if (item == rows)
            continue;
        char value[256];
        if (cJSON_IsObject(item) || cJSON_IsArray(item)) {
            char *text = cJSON_PrintUnformatted(item);
            snprintf(value, sizeof value, "%s", text ? text : "?");
            cJSON_free(text);
        } else {
            scalar_text(item, value, sizeof value);
        }
        table_row(&top, item->string, value);
    }
    bool any_top = top.rows > 0;
    table_print(&top);
    if (any_top)
        putchar('\n');

    static char cols[MAX_COLS][64];
    int n = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, rows)
        collect_columns(row, NULL, cols, &n);
    table_t t;
    table_init(&t, n);
    static char cellbuf[MAX_COLS][64];
    char *cells[MAX_COLS];
    for (int c = 0; c < n; c++) {
        cells[c] = cellbuf[c];
        memcpy(cells[c], cols[c], 64);
        for (char *p = cells[c]; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    }
    table_add(&t, cells);
    bool numeric[MAX_COLS] = {false};
    cJSON_ArrayForEach(row, rows)
    {
        for (int c = 0; c < n; c++) {
            const cJSON *v = dotted(row, cols[c]);
            scalar_text(v, cells[c], 64);
            if (cJSON_IsNumber(v))
                numeric[c] = true;
        }
        table_add(&t, cells);
    }
    for (int c = 0; c < n; c++)
        t.right[c] = numeric[c];
    if (cJSON_GetArraySize(rows)) {
        table_print(&t);
    } else {
        printf("no %s yet\n", rows->string);
        table_free(&t);
    }
    return true;
}

/* The series as a table: service as routed, dst as addressed, action,
 * and how the requests ended. */
static bool series_table(const cJSON *payload)
{
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(payload, "series");
    if (!cJSON_IsArray(rows) || !cJSON_GetObjectItemCaseSensitive(payload, "totals"))
        return false;
    const cJSON *tot = cJSON_GetObjectItemCaseSensitive(payload, "totals");
    printf("requests %.0f: ok %.0f, failed %.0f (error %.0f, timeout %.0f, gone %.0f, refused %.0f)\n",
           num_or(tot, "total", 0), num_or(tot, "ok", 0), num_or(tot, "failed", 0),
           num_or(tot, "error", 0), num_or(tot, "timeout", 0), num_or(tot, "gone", 0),
           num_or(tot, "refused", 0));
    if (!cJSON_GetArraySize(rows)) {
        printf("no series yet\n");
        return true;
    }
    putchar('\n');
    table_t t;
    table_init(&t, 14);
    for (int c = 3; c < 13; c++)
        t.right[c] = true;
    table_row(&t, "SERVICE", "DST", "ACTION", "REQUESTS", "OK", "FAILED", "ERROR", "TIMEOUT",
              "GONE", "REFUSED", "P50 MS<=", "P99 MS<=", "MEAN MS", "CODES");
    const cJSON *s;
    cJSON_ArrayForEach(s, rows) {
        char c[14][160];
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(s, "outcomes");
        const cJSON *lat = cJSON_GetObjectItemCaseSensitive(s, "latency_ms");
        snprintf(c[0], 160, "%s", str_or(s, "service", "?"));
        snprintf(c[1], 160, "%s", str_or(s, "dst", "?"));
        snprintf(c[2], 160, "%s", str_or(s, "action", "?"));
        snprintf(c[3], 160, "%.0f", num_or(s, "requests", 0));
        snprintf(c[4], 160, "%.0f", num_or(s, "ok", 0));
        snprintf(c[5], 160, "%.0f", num_or(s, "failed", 0));
        const char *outcomes[] = {"error", "timeout", "gone", "refused"};
        for (int i = 0; i < 4; i++)
            snprintf(c[6 + i], 160, "%.0f", num_or(o, outcomes[i], 0));
        snprintf(c[10], 160, "%g", num_or(lat, "p50_le", 0));
        snprintf(c[11], 160, "%g", num_or(lat, "p99_le", 0));
        snprintf(c[12], 160, "%.3f", num_or(lat, "mean", 0));
        c[13][0] = '\0';
        const cJSON *code;
        cJSON_ArrayForEach(code, cJSON_GetObjectItemCaseSensitive(s, "errors")) {
            size_t used = strlen(c[13]);
            snprintf(c[13] + used, 160 - used, "%s%s=%.0f", used ? "," : "", code->string,
                     code->valuedouble);
        }
        table_row(&t, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11],
                  c[12], c[13][0] ? c[13] : "-");
    }
    table_print(&t);
    return true;
}

static void metrics_text(const cJSON *payload, void *arg)
{
    if (!series_table(payload) && !metrics_table(payload))
        flat_text(payload, arg);
}

static int cmd_metrics(void)
{
    return show_broker_action("metrics", NULL, "metrics", metrics_text, NULL);
}

/* The payload argument: JSON text, or '-' for stdin. */
static int read_payload(const char *arg, cJSON **out)
{
    *out = NULL;
    if (!arg)
        return 0;
    char *buf = NULL;
    if (strcmp(arg, "-") == 0) {
        size_t len = 0, cap = 0;
        int ch;
        while ((ch = getchar()) != EOF) {
            if (len + 2 > cap) {
                cap = cap ? cap * 2 : 4096;
                char *grown = realloc(buf, cap);
                if (!grown) {
                    free(buf);
                    say("out of memory reading the payload");
                    return EXIT_USAGE;
                }
                buf = grown;
            }
            buf[len++] = (char)ch;
        }
        if (!buf)
            return usage_error("no payload on stdin");
        buf[len] = '\0';
        arg = buf;
    }
    *out = cJSON_Parse(arg);
    if (!*out) {
        const char *where = cJSON_GetErrorPtr();
        int rc = usage_error("the payload is not valid JSON%s%.20s%s: %s",
                             where && *where ? " near '" : "", where && *where ? where : "",
                             where && *where ? "'" : "",
                             "quote it for the shell, e.g. '{\"key\": \"value\"}'");
        free(buf);
        return rc;
    }
    free(buf);
    return 0;
}

static int cmd_request(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("request needs DST and ACTION (and optionally a JSON payload)");
    if (argc > 3)
        return usage_error("request takes DST ACTION [JSON]; got %d arguments (quote the JSON "
                           "payload for the shell)", argc);
    cJSON *payload = NULL, *response = NULL;
    int rc = read_payload(argc > 2 ? argv[2] : NULL, &payload);
    if (rc)
        return rc;
    failure_t f;
    char what[300];
    snprintf(what, sizeof what, "%s %s", argv[0], argv[1]);
    rc = call(argv[0], argv[1], payload, &response, &f);
    cJSON_Delete(payload);
    if (rc)
        return report_failure(rc, what, &f);
    print_json(response, !opt.json);
    cJSON_Delete(response);
    return EXIT_OK;
}

static void reload_text(const cJSON *payload, void *arg)
{
    (void)arg;
    printf("policy reloaded (hooks: %s)\n", str_or(payload, "hooks", "?"));
}

static int cmd_reload(void)
{
    return show_broker_action("reload_policy", NULL, "reload: the policy was refused and the "
                              "previous version keeps running", reload_text, NULL);
}

static void dead_letters_text(const cJSON *payload, void *arg)
{
    (void)arg;
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(payload, "dead_letters");
    printf("%.0f dead letter(s) kept, %.0f evicted; newest first:\n", num_or(payload, "count", 0),
           num_or(payload, "evicted", 0));
    if (cJSON_GetArraySize(list)) {
        table_t t;
        table_init(&t, 9);
        t.right[0] = t.right[7] = true;
        table_row(&t, "ID", "AT", "CODE", "SRC", "DST", "ACTION", "MSG_ID", "BYTES", "REPLAYABLE");
        const cJSON *d;
        cJSON_ArrayForEach(d, list)
        {
            char cells[9][160];
            const char *keys[9] = {"id", "at", "code", "src", "dst", "action", "msg_id", "bytes",
                                   "replayable"};
            for (int i = 0; i < 9; i++)
                scalar_text(cJSON_GetObjectItemCaseSensitive(d, keys[i]), cells[i], sizeof cells[i]);
            table_row(&t, cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6],
                      cells[7], cells[8]);
        }
        table_print(&t);
    }
}

static int cmd_dead_letters(void)
{
    cJSON *req = NULL;
    if (opt.limit >= 0) {
        req = cJSON_CreateObject();
        cJSON_AddNumberToObject(req, "limit", (double)opt.limit);
    }
    int rc = show_broker_action("dead_letters", req, "dead-letters", dead_letters_text, NULL);
    cJSON_Delete(req);
    return rc;
}

static void replay_text(const cJSON *payload, void *arg)
{
    (void)payload;
    printf("dead letter %ld sent again\n", *(const long *)arg);
}

static int cmd_replay(int argc, char **argv)
{
    long id;
    if (argc != 1)
        return usage_error("replay takes one dead letter ID (see dead-letters)");
    if (!parse_long(argv[0], 0, LONG_MAX, &id))
        return usage_error("replay: '%s' is not a dead letter ID (a number: see dead-letters)",
                           argv[0]);
    cJSON *req = cJSON_CreateObject();
    cJSON_AddNumberToObject(req, "id", (double)id);
    char what[64];
    snprintf(what, sizeof what, "replay %ld", id);
    int rc = show_broker_action("replay", req, what, replay_text, &id);
    cJSON_Delete(req);
    return rc;
}

/* --- watch --- */

/* The broker forgets a watch or a trace when our connection goes (a
 * restart, or ZeroMQ reconnecting under us), so the tool sends the action
 * again every second (renew_until_interrupted): the actions are
 * idempotent, and their answer doubles as a check that the broker is
 * there. */
typedef struct {
    const char *action;         /* "watch" or "trace" */
    const char *again;          /* said when the broker answers again */
    bool lost;                  /* the last request went unanswered */
    bool out;                   /* a request is on its way */
    int failed;                 /* exit code of a refusal */
    failure_t f;
} renewal_t;

/* One message as a line for a person: `head`, the fields the command
 * shows, then the payload as compact JSON, both made safe for a terminal;
 * or, with --json, the message as it came. Flushed at once: the commands
 * that print these run until interrupted. */
static void print_message_line(const ss_msg_t *m, char *head)
{
    if (opt.json) {
        print_json(ss_msg_json(m), false);
    } else {
        const cJSON *payload = ss_msg_payload(m);
        char *body = payload ? cJSON_PrintUnformatted(payload) : NULL;
        sanitize(head);
        if (body)
            sanitize(body);
        printf("%s%s\n", head, body ? body : "null");
        cJSON_free(body);
    }
    fflush(stdout);
}

static void print_watched(ss_client_t *c, const ss_msg_t *m, void *arg)
{
    (void)c;
    (void)arg;
    const char *ts = str_or(ss_msg_json(m), "timestamp", NULL);
    char now[32], head[4096];
    if (!ts) {
        struct timespec t;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &t);
        gmtime_r(&t.tv_sec, &tm);
        strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(now + strlen(now), sizeof now - strlen(now), ".%03dZ", (int)(t.tv_nsec / 1000000));
        ts = now;
    }
    const char *dst = ss_msg_dst(m) ? ss_msg_dst(m) : "-";
    snprintf(head, sizeof head, "%s  %-9s  %s -> %s  %s  ", ts,
             strcmp(dst, "broadcast") == 0 ? "broadcast" : (ss_msg_type(m) ? ss_msg_type(m) : "?"),
             ss_msg_src(m) ? ss_msg_src(m) : "-", dst, ss_msg_action(m) ? ss_msg_action(m) : "-");
    print_message_line(m, head);
}

static void on_renewal_answer(ss_client_t *c, const ss_msg_t *response, const ss_error_t *err, void *arg)
{
    renewal_t *w = arg;
    w->out = false;
    if (err && strcmp(err->code, "timeout") == 0) {
        if (!w->lost)
            say("lost the broker at %s; waiting for it to come back", opt.endpoint);
        w->lost = true;
        return;
    }
    failure_t f;
    if (err || status_error(ss_msg_payload(response), &f)) {
        if (err)
            set_failure(&w->f, err->code, "%s", err->message);
        else
            w->f = f;
        w->failed = EXIT_REMOTE;
        ss_client_stop(c);
        return;
    }
    if (w->lost)
        say("%s", w->again);
    w->lost = false;
}

static double mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Sends w->action (with `req`, which stays ours) again every second until
 * Ctrl-C or a refusal; the exit code. */
static int renew_until_interrupted(renewal_t *w, const cJSON *req)
{
    double next = mono_ms() + 1000;
    while (!interrupted) {
        if (ss_client_process(client, 250) == SS_ESTOPPED)
            break;
        double t = mono_ms();
        if (t >= next && !w->out) {
            w->out = ss_request_async(client, "broker", w->action, req, 2000,
                                      on_renewal_answer, w) == SS_OK;
            next = t + 1000;
        }
    }
    if (w->failed)
        return report_failure(w->failed, w->action, &w->f);
    return EXIT_OK;
}

static int cmd_watch(void)
{
    renewal_t w = {.action = "watch", .again = "watching again"};
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (ss_on_event(client, NULL, print_watched, NULL) != SS_OK) {
        say("out of memory");
        return EXIT_REMOTE;
    }
    /* The first answer decides: a broker that refuses or cannot be
     * reached ends the command; later, losing it only waits. */
    cJSON *first = NULL;
    int rc = broker_action("watch", NULL, "watch", &first);
    if (rc)
        return rc;
    cJSON_Delete(first);
    say("watching events and broadcasts at %s; Ctrl-C to stop", opt.endpoint);
    return renew_until_interrupted(&w, NULL);
}

/* --- topics --- */

static int paged_action(const char *action, const char *key, const char *what, bool quiet,
                        cJSON **out);

/* The broker answers an event to a name nobody holds with an error the
 * client library drops (it answers no request of ours): said here from
 * the listing, as a warning, since a policy may route the name elsewhere. */
static void warn_unless_registered(const char *name)
{
    cJSON *answer = NULL;
    if (paged_action("list_services", "services", "pub", true, &answer) != EXIT_OK)
        return;
    const cJSON *services = cJSON_GetObjectItemCaseSensitive(answer, "services"), *s;
    bool held = false;
    for (int part = 0; part < 2; part++) {      /* this broker's, and others' (--nats) */
        cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(answer, part ? "remote" : "services")) {
            const char *n = str_or(s, "name", NULL);
            held |= n && strcmp(n, name) == 0;
        }
    }
    if (cJSON_IsArray(services) && !held)
        say("pub: no service %s is registered now: unless the policy routes it elsewhere, the "
            "broker refuses the event (no_such_service, see dead-letters)", name);
    cJSON_Delete(answer);
}

/* pub TOPIC ACTION [JSON], or with --to NAME: pub ACTION [JSON], an
 * event to a service name or "broadcast" (docs/protocol.md T5). */
static int cmd_pub(int argc, char **argv)
{
    const char *to = opt.pub_to;
    bool broadcast = to && strcmp(to, "broadcast") == 0;
    if (to && (argc < 1 || argc > 2))
        return usage_error("pub --to NAME takes ACTION [JSON] (quote the JSON for the shell)");
    if (!to && (argc < 2 || argc > 3))
        return usage_error("pub takes TOPIC ACTION [JSON], or --to NAME ACTION [JSON] (quote the "
                           "JSON for the shell)");
    const char *where = to ? to : argv[0], *action = to ? argv[0] : argv[1];
    const char *json = argc > (to ? 1 : 2) ? argv[to ? 1 : 2] : NULL;
    cJSON *payload = NULL, *answer = NULL;
    int rc = read_payload(json, &payload);
    if (rc)
        return rc;
    if (!to)
        rc = ss_publish_topic(client, where, action, payload);
    else if (broadcast)
        rc = ss_broadcast(client, action, payload);
    else
        rc = ss_publish(client, to, action, payload);
    cJSON_Delete(payload);
    if (rc != SS_OK) {
        say("pub: %s", ss_last_error(client)->message);
        return EXIT_USAGE;
    }
    /* a ping after it: answered only once the event is at the broker
     * (one connection keeps order), and it tells a broker that is not there */
    rc = broker_action("ping", NULL, "pub", &answer);
    cJSON_Delete(answer);
    if (rc != EXIT_OK)
        return rc;
    if (to && !broadcast)
        warn_unless_registered(to);
    if (!opt.json && broadcast)
        printf("broadcast %s\n", action);
    else if (!opt.json)
        printf("%s %s %s\n", to ? "sent to" : "published", where, action);
    return rc;
}

static void print_topic_event(ss_client_t *c, const ss_msg_t *m, void *arg)
{
    (void)c;
    (void)arg;
    char head[4096];
    snprintf(head, sizeof head, "%s  %s  %s  %s  ", str_or(ss_msg_json(m), "timestamp", "-"),
             ss_msg_topic(m) ? ss_msg_topic(m) : "-", ss_msg_src(m) ? ss_msg_src(m) : "-",
             ss_msg_action(m) ? ss_msg_action(m) : "-");
    print_message_line(m, head);
}

static int cmd_sub(int argc, char **argv)
{
    if (argc < 1 || argc > 2)
        return usage_error("sub takes PATTERN [GROUP], e.g. sub 'order.*'");
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = ss_subscribe(client, argv[0], argc > 1 ? argv[1] : NULL, print_topic_event, NULL,
                          opt.timeout_ms);
    if (rc != SS_OK) {
        failure_t f;
        set_failure(&f, ss_last_error(client)->code, "%s", ss_last_error(client)->message);
        return report_failure(rc == SS_ETIMEOUT ? EXIT_UNREACHABLE : EXIT_REMOTE, "sub", &f);
    }
    say("subscribed to %s at %s; Ctrl-C to stop", argv[0], opt.endpoint);
    while (!interrupted) {
        rc = ss_client_process(client, 250);
        if (rc == SS_ESTOPPED)
            break;
    }
    return EXIT_OK;
}

/* --- peers: who is connected --- */

/* Milliseconds as a short age: 850ms, 12.3s, 5m 2s, 3h 4m, 2d 1h. */
static void age_text(double ms, char *out, size_t len)
{
    if (ms < 0) {
        snprintf(out, len, "-");
    } else if (ms < 1000) {
        snprintf(out, len, "%.0fms", ms);
    } else if (ms < 60000) {
        snprintf(out, len, "%.1fs", ms / 1000);
    } else {
        long long s = (long long)(ms / 1000);
        if (s < 3600)
            snprintf(out, len, "%lldm %llds", s / 60, s % 60);
        else if (s < 86400)
            snprintf(out, len, "%lldh %lldm", s / 3600, s % 3600 / 60);
        else
            snprintf(out, len, "%lldd %lldh", s / 86400, s % 86400 / 3600);
    }
}

/* A broker action whose answer comes in pages (docs/protocol.md B4):
 * follows "next" until the last page, and gives the pages' `key` lists
 * as one payload. Returns 0 with *out, or an exit code (reported). */
static int paged_action(const char *action, const char *key, const char *what, bool quiet,
                        cJSON **out)
{
    cJSON *all = NULL, *req = NULL;
    *out = NULL;
    for (;;) {
        cJSON *page = NULL;
        failure_t f;
        int rc = call("broker", action, req, &page, &f);
        if (rc == EXIT_OK && status_error(page, &f))
            rc = EXIT_REMOTE;
        cJSON_Delete(req);
        req = NULL;
        if (rc) {
            cJSON_Delete(page);
            cJSON_Delete(all);
            return quiet ? rc : report_failure(rc, what, &f);
        }
        const cJSON *next = cJSON_GetObjectItemCaseSensitive(page, "next");
        bool more = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(page, "truncated")) &&
                    (cJSON_IsString(next) || cJSON_IsNumber(next));
        if (more) {
            req = cJSON_CreateObject();
            cJSON_AddItemToObject(req, "after", cJSON_Duplicate(next, 1));
        }
        if (!all) {
            all = page;
        } else {
            cJSON *from = cJSON_GetObjectItemCaseSensitive(page, key);
            cJSON *to = cJSON_GetObjectItemCaseSensitive(all, key);
            cJSON *item;
            while (cJSON_IsArray(from) && cJSON_IsArray(to) &&
                   (item = cJSON_DetachItemFromArray(from, 0)))
                cJSON_AddItemToArray(to, item);
            cJSON_Delete(page);
        }
        if (!more)
            break;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(all, "next");
    if (cJSON_GetObjectItemCaseSensitive(all, "truncated"))
        cJSON_ReplaceItemInObjectCaseSensitive(all, "truncated", cJSON_CreateFalse());
    *out = all;
    return EXIT_OK;
}

/* "inventory,pricing" from a peer's names. */
static void names_text(const cJSON *peer, char *out, size_t len)
{
    out[0] = '\0';
    const cJSON *n;
    cJSON_ArrayForEach(n, cJSON_GetObjectItemCaseSensitive(peer, "names")) {
        size_t used = strlen(out);
        if (cJSON_IsString(n) && used + 2 < len)
            snprintf(out + used, len - used, "%s%s", used ? "," : "", n->valuestring);
    }
    if (!out[0])
        snprintf(out, len, "-");
}

static void peer_cells(const cJSON *p, char cells[][160])
{
    const cJSON *inflight = cJSON_GetObjectItemCaseSensitive(p, "inflight");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(p, "messages");
    snprintf(cells[0], 160, "%.0f", num_or(p, "peer", 0));
    snprintf(cells[1], 160, "%s", str_or(p, "identity", "?"));
    names_text(p, cells[2], 160);
    snprintf(cells[3], 160, "%s", str_or(p, "address", "-"));
    const char *key = str_or(p, "key", NULL);
    if (key)
        snprintf(cells[4], 160, "%.12s%s", key, cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(p, "admin")) ? " @admin" : "");
    else
        snprintf(cells[4], 160, "%s", strcmp(str_or(p, "kind", ""), "hosted") == 0 ? "(hosted)" : "-");
    age_text(num_or(p, "connected_ms", -1), cells[5], 160);
    age_text(num_or(p, "idle_ms", -1), cells[6], 160);
    snprintf(cells[7], 160, "%.0f/%.0f", num_or(inflight, "handling", 0), num_or(inflight, "waiting", 0));
    snprintf(cells[8], 160, "%.0f", num_or(msgs, "in", 0));
    snprintf(cells[9], 160, "%.0f", num_or(msgs, "out", 0));
}

static int cmd_peers(void)
{
    cJSON *all = NULL;
    int rc = paged_action("peers", "peers", "peers", false, &all);
    if (rc)
        return rc;
    if (opt.json) {
        print_json(all, false);
    } else {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(all, "peers");
        if (!cJSON_GetArraySize(list)) {
            printf("no peers connected\n");
        } else {
            table_t t;
            table_init(&t, 10);
            t.right[0] = t.right[5] = t.right[6] = t.right[7] = t.right[8] = t.right[9] = true;
            table_row(&t, "PEER", "IDENTITY", "NAMES", "ADDRESS", "KEY", "CONNECTED", "IDLE",
                      "HANDLING/WAITING", "MSGS IN", "MSGS OUT");
            const cJSON *p;
            cJSON_ArrayForEach(p, list) {
                char c[10][160];
                peer_cells(p, c);
                table_row(&t, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]);
            }
            table_print(&t);
        }
    }
    cJSON_Delete(all);
    return EXIT_OK;
}

/* --- per-service totals from the metrics action --- */

/* One service's totals in a metrics answer (its actions and dsts summed). */
typedef struct {
    char name[80];
    double requests, ok, failed, p50, p99;
} top_row_t;

static int top_rows(const cJSON *payload, top_row_t *rows, int cap)
{
    int n = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(payload, "series")) {
        const char *name = str_or(s, "service", "?");
        int i = 0;
        while (i < n && strcmp(rows[i].name, name) != 0)
            i++;
        if (i == n) {
            if (n == cap)
                continue;
            memset(&rows[n], 0, sizeof rows[n]);
            snprintf(rows[n].name, sizeof rows[n].name, "%s", name);
            n++;
        }
        rows[i].requests += num_or(s, "requests", 0);
        /* "ok" since outcomes; before, every answer counted as answered */
        rows[i].ok += num_or(s, "ok", num_or(s, "answered", 0));
        rows[i].failed += num_or(s, "failed", 0);
        const cJSON *lat = cJSON_GetObjectItemCaseSensitive(s, "latency_ms");
        /* the slowest action's quantile bounds stand for the service */
        if (num_or(lat, "p50_le", 0) > rows[i].p50)
            rows[i].p50 = num_or(lat, "p50_le", 0);
        if (num_or(lat, "p99_le", 0) > rows[i].p99)
            rows[i].p99 = num_or(lat, "p99_le", 0);
    }
    return n;
}

/* services: the list (paged), and, where the broker lets us see them,
 * each service's requests split ok/failed (metrics) and its instances'
 * connections (peers: an @admin action under CURVE). */
static int cmd_services(void)
{
    cJSON *all = NULL;
    int rc = paged_action("list_services", "services", "services", false, &all);
    if (rc)
        return rc;
    /* the details are extra: a broker that refuses them still lists */
    cJSON *metrics = NULL, *peers = NULL;
    failure_t f;
    if (call("broker", "metrics", NULL, &metrics, &f) != EXIT_OK || status_error(metrics, &f)) {
        cJSON_Delete(metrics);
        metrics = NULL;
    }
    if (paged_action("peers", "peers", "services", true, &peers) != EXIT_OK)
        peers = NULL;
    static top_row_t rows[1024];
    int nrows = metrics ? top_rows(metrics, rows, 1024) : 0;
    cJSON *list = cJSON_GetObjectItemCaseSensitive(all, "services");
    const cJSON *svc;
    cJSON_ArrayForEach(svc, list) {
        const char *name = str_or(svc, "name", "");
        for (int i = 0; i < nrows; i++) {
            if (strcmp(rows[i].name, name) != 0)
                continue;
            cJSON_AddNumberToObject((cJSON *)svc, "requests", rows[i].requests);
            cJSON_AddNumberToObject((cJSON *)svc, "ok", rows[i].ok);
            cJSON_AddNumberToObject((cJSON *)svc, "failed", rows[i].failed);
        }
        if (!peers)
            continue;
        cJSON *conns = cJSON_AddArrayToObject((cJSON *)svc, "connections");
        const cJSON *p, *n;
        cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(peers, "peers"))
            cJSON_ArrayForEach(n, cJSON_GetObjectItemCaseSensitive(p, "names"))
                if (cJSON_IsString(n) && strcmp(n->valuestring, name) == 0)
                    cJSON_AddItemToArray(conns, cJSON_Duplicate(p, 1));
    }
    if (opt.json) {
        print_json(all, false);
    } else if (!cJSON_GetArraySize(list)) {
        printf("no services registered\n");
    } else {
        table_t t;
        table_init(&t, 10);
        for (int c = 1; c < 10; c++)
            t.right[c] = c != 3 && c != 2;
        table_row(&t, "SERVICE", "INSTANCES", "PEER", "ADDRESS", "CONNECTED", "IDLE",
                  "HANDLING", "MSGS IN/OUT", "REQUESTS", "OK/FAILED");
        cJSON_ArrayForEach(svc, list) {
            char inst[32], reqs[32] = "-", okf[64] = "-";
            snprintf(inst, sizeof inst, "%.0f", num_or(svc, "instances", 0));
            if (cJSON_GetObjectItemCaseSensitive(svc, "requests")) {
                snprintf(reqs, sizeof reqs, "%.0f", num_or(svc, "requests", 0));
                snprintf(okf, sizeof okf, "%.0f/%.0f", num_or(svc, "ok", 0), num_or(svc, "failed", 0));
            }
            table_row(&t, str_or(svc, "name", "?"), inst, "", "", "", "", "", "", reqs, okf);
            const cJSON *p;
            cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(svc, "connections")) {
                char c[10][160], io[340], peer[340];
                peer_cells(p, c);
                snprintf(peer, sizeof peer, "#%s %s", c[0], c[1]);
                snprintf(io, sizeof io, "%s/%s", c[8], c[9]);
                const cJSON *inflight = cJSON_GetObjectItemCaseSensitive(p, "inflight");
                char handling[32];
                snprintf(handling, sizeof handling, "%.0f", num_or(inflight, "handling", 0));
                table_row(&t, "", "", peer, c[3], c[5], c[6], handling, io, "", "");
            }
        }
        table_print(&t);
        if (!peers)
            printf("(connections not shown: the broker did not answer peers%s)\n",
                   opt.server_key[0] ? "; it needs a key marked @admin" : "");
    }
    cJSON_Delete(metrics);
    cJSON_Delete(peers);
    cJSON_Delete(all);
    return EXIT_OK;
}

/* --- trace: requests, answers, errors and events live --- */

typedef struct {
    const char *service, *action, *src, *code, *kinds;
    long rate;
} trace_opts_t;
static trace_opts_t trace_opt = {.rate = -1};

static cJSON *trace_request(void)
{
    cJSON *req = cJSON_CreateObject();
    if (trace_opt.service)
        cJSON_AddStringToObject(req, "service", trace_opt.service);
    if (trace_opt.action)
        cJSON_AddStringToObject(req, "action", trace_opt.action);
    if (trace_opt.src)
        cJSON_AddStringToObject(req, "src", trace_opt.src);
    if (trace_opt.code)
        cJSON_AddStringToObject(req, "code", trace_opt.code);
    if (trace_opt.rate > 0)
        cJSON_AddNumberToObject(req, "rate", (double)trace_opt.rate);
    if (trace_opt.kinds) {
        cJSON *kinds = cJSON_AddArrayToObject(req, "kinds");
        char copy[128];
        snprintf(copy, sizeof copy, "%s", trace_opt.kinds);
        char *save = NULL;
        for (char *k = strtok_r(copy, ",", &save); k; k = strtok_r(NULL, ",", &save))
            cJSON_AddItemToArray(kinds, cJSON_CreateString(k));
    }
    return req;
}

static void print_traced(ss_client_t *c, const ss_msg_t *m, void *arg)
{
    (void)c;
    (void)arg;
    const cJSON *p = ss_msg_payload(m);
    if (opt.json) {
        print_json(p, false);
        fflush(stdout);
        return;
    }
    const char *kind = str_or(p, "kind", "?");
    char route[200], extra[200] = "";
    const char *svc = str_or(p, "service", NULL), *dst = str_or(p, "dst", "-");
    if (svc && strcmp(svc, dst) != 0)
        snprintf(route, sizeof route, "%s -> %s (as %s)", str_or(p, "src", "-"), svc, dst);
    else
        snprintf(route, sizeof route, "%s -> %s", str_or(p, "src", "-"), svc ? svc : dst);
    if (cJSON_GetObjectItemCaseSensitive(p, "latency_ms"))
        snprintf(extra, sizeof extra, "%.3f ms  ", num_or(p, "latency_ms", 0));
    if (str_or(p, "code", NULL))
        snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "%s  ", str_or(p, "code", ""));
    if (num_or(p, "skipped", 0) > 0)
        say("(%.0f matching messages skipped: over the trace's rate)", num_or(p, "skipped", 0));
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(p, "message");
    const cJSON *payload = cJSON_GetObjectItemCaseSensitive(message, "payload");
    char *body = payload ? cJSON_PrintUnformatted(payload) : NULL;
    char line[4096];
    snprintf(line, sizeof line, "%s  %-8s  %s  %s  %s%s%s", str_or(p, "at", "-"), kind, route,
             str_or(p, "action", "-"), extra, body ? body : "", str_or(p, "why", ""));
    cJSON_free(body);
    sanitize(line);
    printf("%s\n", line);
    fflush(stdout);
}

static int cmd_trace(int argc, char **argv)
{
    if (argc > 1)
        return usage_error("trace takes [SERVICE] and options (--action, --src, --code, --kinds, --rate)");
    if (argc == 1)
        trace_opt.service = argv[0];
    renewal_t w = {.action = "trace", .again = "tracing again"};
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (ss_on_event(client, "trace", print_traced, NULL) != SS_OK) {
        say("out of memory");
        return EXIT_REMOTE;
    }
    cJSON *req = trace_request(), *first = NULL;
    int rc = broker_action("trace", req, "trace", &first);
    if (rc) {
        cJSON_Delete(req);
        return rc;
    }
    say("tracing %s at %s (at most %.0f a second); Ctrl-C to stop",
        trace_opt.service ? trace_opt.service : "every service", opt.endpoint, num_or(first, "rate", 0));
    cJSON_Delete(first);
    rc = renew_until_interrupted(&w, req);
    cJSON_Delete(req);
    return rc;
}

/* --- record FILE: traffic as JSON lines for smartshop-policy --- */

/* What record writes (docs/policies.md, "Edit, test, save"): a line of
 * the registered instances, then each message the broker traced (requests
 * handed over, requests refused, events) as {"at_ms", "from", "msg"} and
 * each request's end as {"at_ms", "outcome"}. Sampled by the trace's rate;
 * payloads dropped with --no-payloads. */
typedef struct {
    FILE *out;
    double started;
    long lines, limit;
    bool stop;
} record_state_t;
static struct {
    long seconds;
    bool no_payloads;
} record_opt;

static void record_line(record_state_t *st, cJSON *line)
{
    char *text = cJSON_PrintUnformatted(line);
    if (text) {
        fprintf(st->out, "%s\n", text);
        fflush(st->out);
        cJSON_free(text);
        st->lines++;
    }
    if (st->limit > 0 && st->lines >= st->limit)
        st->stop = true;
}

static void record_traced(ss_client_t *c, const ss_msg_t *m, void *arg)
{
    (void)c;
    record_state_t *st = arg;
    if (st->stop)
        return;                 /* --limit reached: copies already on their way are left out */
    const cJSON *p = ss_msg_payload(m);
    const char *kind = str_or(p, "kind", "");
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(p, "message");
    const char *type = str_or(message, "type", "");
    cJSON *line = cJSON_CreateObject();
    cJSON_AddNumberToObject(line, "at_ms", (double)(long long)(mono_ms() - st->started));
    bool keep = false;
    if ((strcmp(kind, "request") == 0 || strcmp(kind, "event") == 0 ||
         (strcmp(kind, "error") == 0 && strcmp(type, "request") == 0)) && cJSON_IsObject(message)) {
        /* a message as it reached the broker (a refused request: as it came) */
        cJSON *from = cJSON_AddObjectToObject(line, "from");
        const char *src = str_or(message, "src", NULL);
        /* the sender's identity: its peer label up to the '#' of its serial */
        char id[256];
        snprintf(id, sizeof id, "%s", str_or(p, "peer", src ? src : "client"));
        char *hash = strrchr(id, '#');
        if (hash && hash != id)
            *hash = '\0';
        cJSON_AddStringToObject(from, "id", id);
        cJSON *names = cJSON_AddArrayToObject(from, "names");
        if (src)
            cJSON_AddItemToArray(names, cJSON_CreateString(src));
        cJSON *copy = cJSON_Duplicate(message, true);
        if (record_opt.no_payloads)
            cJSON_DeleteItemFromObjectCaseSensitive(copy, "payload");
        cJSON_AddItemToObject(line, "msg", copy);
        keep = true;
    } else if ((strcmp(kind, "response") == 0 || strcmp(kind, "error") == 0) &&
               str_or(p, "correlation_id", NULL) && str_or(p, "service", NULL)) {
        /* a request handed over ended: how (for on_outcome) */
        const char *code = str_or(p, "code", NULL);
        const char *outcome = strcmp(kind, "response") == 0 ? "ok"
                              : code && strcmp(code, "timeout") == 0 ? "timeout"
                              : code && (strcmp(code, "service_gone") == 0 ||
                                         strcmp(code, "shutting_down") == 0) ? "gone" : "error";
        cJSON *o = cJSON_AddObjectToObject(line, "outcome");
        cJSON_AddStringToObject(o, "service", str_or(p, "service", ""));
        cJSON_AddStringToObject(o, "outcome", outcome);
        if (code && strcmp(outcome, "ok") != 0)
            cJSON_AddStringToObject(o, "code", code);
        if (str_or(p, "action", NULL))
            cJSON_AddStringToObject(o, "action", str_or(p, "action", ""));
        cJSON_AddNumberToObject(o, "latency_ms", num_or(p, "latency_ms", 0));
        keep = true;
    }
    if (keep)
        record_line(st, line);
    cJSON_Delete(line);
    fflush(st->out);
}

/* The registered instances, from the peers action: {"services": {name: [{id, load}]}}. */
static int record_services(record_state_t *st)
{
    cJSON *all = NULL;
    int rc = paged_action("peers", "peers", "record (peers)", false, &all);
    if (rc)
        return rc;
    cJSON *line = cJSON_CreateObject();
    cJSON_AddNumberToObject(line, "at_ms", 0);
    cJSON *services = cJSON_AddObjectToObject(line, "services");
    const cJSON *peer;
    cJSON_ArrayForEach(peer, cJSON_GetObjectItemCaseSensitive(all, "peers")) {
        const cJSON *name;
        cJSON_ArrayForEach(name, cJSON_GetObjectItemCaseSensitive(peer, "names")) {
            if (!cJSON_IsString(name))
                continue;
            cJSON *list = cJSON_GetObjectItemCaseSensitive(services, name->valuestring);
            if (!list)
                list = cJSON_AddArrayToObject(services, name->valuestring);
            cJSON *inst = cJSON_CreateObject();
            cJSON_AddStringToObject(inst, "id", str_or(peer, "identity", "?"));
            cJSON_AddNumberToObject(inst, "load",
                num_or(cJSON_GetObjectItemCaseSensitive(peer, "inflight"), "handling", 0));
            cJSON_AddItemToArray(list, inst);
        }
    }
    record_line(st, line);
    st->lines = 0;                  /* --limit counts messages and outcomes */
    cJSON_Delete(line);
    cJSON_Delete(all);
    return EXIT_OK;
}

static int cmd_record(int argc, char **argv)
{
    if (argc < 1 || argc > 2)
        return usage_error("record takes FILE ('-': standard output) and [SERVICE], and options "
                           "(--seconds, --limit, --rate, --no-payloads, --action, --src)");
    if (argc == 2)
        trace_opt.service = argv[1];
    record_state_t st = {.out = strcmp(argv[0], "-") == 0 ? stdout : fopen(argv[0], "w"),
                         .limit = opt.limit};
    if (!st.out) {
        say("cannot write %s: %s", argv[0], strerror(errno));
        return EXIT_USAGE;
    }
    int rc = record_services(&st);
    if (rc == EXIT_OK && ss_on_event(client, "trace", record_traced, &st) != SS_OK)
        rc = EXIT_REMOTE;
    cJSON *req = trace_request(), *first = NULL;
    if (rc == EXIT_OK)
        rc = broker_action("trace", req, "record", &first);
    if (rc == EXIT_OK) {
        say("recording %s at %s into %s (at most %.0f a second)%s; Ctrl-C to stop",
            trace_opt.service ? trace_opt.service : "every service", opt.endpoint, argv[0],
            num_or(first, "rate", 0), record_opt.no_payloads ? ", without payloads" : "");
        st.started = mono_ms();
        double until = record_opt.seconds ? st.started + 1000.0 * record_opt.seconds : 0;
        while (!interrupted && !st.stop && (!until || mono_ms() < until))
            if (ss_client_process(client, 100) == SS_ESTOPPED)
                break;
        cJSON *done = NULL;
        failure_t ignored;
        call("broker", "untrace", NULL, &done, &ignored);
        cJSON_Delete(done);
        say("recorded %ld lines", st.lines);
    }
    cJSON_Delete(first);
    cJSON_Delete(req);
    if (st.out != stdout)
        fclose(st.out);
    return rc;
}

/* --- dead-letters show ID --- */

static void dead_letter_text(const cJSON *payload, void *arg)
{
    (void)arg;
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(payload, "dead_letter");
    table_t t;
    table_init(&t, 2);
    const char *keys[] = {"id", "at", "code", "src", "dst", "action", "msg_id", "bytes", "replayable"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        char value[200];
        scalar_text(cJSON_GetObjectItemCaseSensitive(d, keys[i]), value, sizeof value);
        table_row(&t, keys[i], value);
    }
    table_print(&t);
    const cJSON *message = cJSON_GetObjectItemCaseSensitive(d, "message");
    if (message && !cJSON_IsNull(message)) {
        printf("message:\n");
        print_indented(message, 0);
        putchar('\n');
    } else {
        printf("message: not kept (only its envelope's fields: the request was handed over)\n");
    }
}

static int cmd_dead_letter_show(int argc, char **argv)
{
    long id;
    if (argc != 1 || !parse_long(argv[0], 0, LONG_MAX, &id))
        return usage_error("dead-letters show takes one dead letter ID (a number: see dead-letters)");
    cJSON *req = cJSON_CreateObject();
    cJSON_AddNumberToObject(req, "id", (double)id);
    char what[64];
    snprintf(what, sizeof what, "dead-letters show %ld", id);
    int rc = show_broker_action("dead_letter", req, what, dead_letter_text, NULL);
    cJSON_Delete(req);
    return rc;
}

/* --- top: live rates per service --- */

static int cmd_top(int argc, char **argv)
{
    long rounds = -1;
    if (argc > 1 || (argc == 1 && !parse_long(argv[0], 1, 1000000, &rounds)))
        return usage_error("top takes [N], how many refreshes (default: until Ctrl-C)");
    enum { TOP_MAX = 256 };
    static top_row_t last[TOP_MAX], now[TOP_MAX];
    int last_n = 0;
    double last_ms = 0;
    bool tty = isatty(STDOUT_FILENO);
    for (long r = 0; !interrupted && (rounds < 0 || r <= rounds); r++) {
        cJSON *payload = NULL;
        int rc = broker_action("metrics", NULL, "top", &payload);
        if (rc)
            return rc;
        double t = mono_ms();
        int n = top_rows(payload, now, TOP_MAX);
        cJSON_Delete(payload);
        if (r > 0) {
            double secs = (t - last_ms) / 1000.0;
            if (tty)
                printf("\033[H\033[2J");
            printf("%s  every %.1fs\n", opt.endpoint, secs);
            table_t tab;
            table_init(&tab, 6);
            for (int c = 1; c < 6; c++)
                tab.right[c] = true;
            table_row(&tab, "SERVICE", "REQ/S", "OK/S", "FAILED/S", "P50 MS<=", "P99 MS<=");
            for (int i = 0; i < n; i++) {
                top_row_t before = {{0}, 0, 0, 0, 0, 0};
                for (int j = 0; j < last_n; j++)
                    if (strcmp(last[j].name, now[i].name) == 0)
                        before = last[j];
                char req[32], ok[32], failed[32], p50[32], p99[32];
                snprintf(req, sizeof req, "%.1f", (now[i].requests - before.requests) / secs);
                snprintf(ok, sizeof ok, "%.1f", (now[i].ok - before.ok) / secs);
                snprintf(failed, sizeof failed, "%.1f", (now[i].failed - before.failed) / secs);
                snprintf(p50, sizeof p50, "%g", now[i].p50);
                snprintf(p99, sizeof p99, "%g", now[i].p99);
                table_row(&tab, now[i].name, req, ok, failed, p50, p99);
            }
            table_print(&tab);
            fflush(stdout);
        }
        memcpy(last, now, sizeof last);
        last_n = n;
        last_ms = t;
        if (rounds >= 0 && r == rounds)
            break;
        for (int w = 0; w < 10 && !interrupted; w++)
            ss_client_process(client, 100);
    }
    return EXIT_OK;
}

/* --- reply: a stub responder --- */

static cJSON *stub_answer;       /* NULL: answer each request with its payload */

static cJSON *stub_handle(ss_client_t *c, const ss_msg_t *req, ss_error_t *err, void *arg)
{
    (void)err;
    (void)arg;
    char head[4096];
    snprintf(head, sizeof head, "%s  request  %s -> %s  %s  ",
             str_or(ss_msg_json(req), "timestamp", "-"), ss_msg_src(req) ? ss_msg_src(req) : "-",
             ss_name(c), ss_msg_action(req) ? ss_msg_action(req) : "-");
    print_message_line(req, head);
    return cJSON_Duplicate(stub_answer ? stub_answer : ss_msg_payload(req), 1);
}

static int cmd_reply(int argc, char **argv)
{
    if (argc < 1 || argc > 2)
        return usage_error("reply takes NAME [JSON]: the name to serve, and the payload to answer with");
    int rc = read_payload(argc > 1 ? argv[1] : NULL, &stub_answer);
    if (rc)
        return rc;
    setvbuf(stdout, NULL, _IOLBF, 0);
    rc = ss_register(client, argv[0], opt.timeout_ms);
    if (rc != SS_OK) {
        failure_t f;
        set_failure(&f, ss_last_error(client)->code, "%s", ss_last_error(client)->message);
        cJSON_Delete(stub_answer);
        return report_failure(rc == SS_ETIMEOUT ? EXIT_UNREACHABLE : EXIT_REMOTE, "reply", &f);
    }
    ss_handle(client, NULL, stub_handle, NULL);
    say("answering requests to %s at %s; Ctrl-C to stop", argv[0], opt.endpoint);
    while (!interrupted)
        if (ss_client_process(client, 250) == SS_ESTOPPED)
            break;
    cJSON_Delete(stub_answer);
    return EXIT_OK;
}

/* --- main --- */

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"endpoint", required_argument, 0, 'e'},
        {"json", no_argument, 0, 'j'},
        {"timeout", required_argument, 0, 't'},
        {"limit", required_argument, 0, 'n'},
        {"server-key", required_argument, 0, 'S'},
        {"key", required_argument, 0, 'K'},
        {"action", required_argument, 0, 'A'},
        {"src", required_argument, 0, 'R'},
        {"code", required_argument, 0, 'C'},
        {"kinds", required_argument, 0, 'k'},
        {"rate", required_argument, 0, 'r'},
        {"seconds", required_argument, 0, 's'},
        {"no-payloads", no_argument, 0, 'P'},
        {"to", required_argument, 0, 'T'},
        {"help", no_argument, 0, 'h'},
        {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    opt.endpoint = getenv("SMARTSHOP_ENDPOINT");
    if (!opt.endpoint || !*opt.endpoint)
        opt.endpoint = DEFAULT_ENDPOINT;
    opt.server_key_file = getenv("SMARTSHOP_SERVER_KEY");
    opt.key_prefix = getenv("SMARTSHOP_KEY");
    if (opt.server_key_file && !*opt.server_key_file)
        opt.server_key_file = NULL;
    if (opt.key_prefix && !*opt.key_prefix)
        opt.key_prefix = NULL;
    bool limit_given = false, trace_given = false, record_given = false;
    opterr = 0;
    int ch;
    long n;
    while ((ch = getopt_long(argc, argv, ":e:jt:n:hV", longopts, NULL)) != -1) {
        switch (ch) {
        case 'e':
            if (!*optarg)
                return usage_error("--endpoint needs an address, e.g. " DEFAULT_ENDPOINT);
            opt.endpoint = optarg;
            break;
        case 'j':
            opt.json = true;
            break;
        case 't':
            if (!parse_long(optarg, 1, 3600000, &n))
                return usage_error("--timeout: '%s' is not a number of milliseconds (1..3600000)",
                                   optarg);
            opt.timeout_ms = (int)n;
            break;
        case 'n':
            if (!parse_long(optarg, 0, 10000000, &n))
                return usage_error("--limit: '%s' is not a count (0..10000000)", optarg);
            opt.limit = n;
            limit_given = true;
            break;
        case 'S':
            opt.server_key_file = optarg;
            break;
        case 'K':
            opt.key_prefix = optarg;
            break;
        case 'A':
            trace_opt.action = optarg;
            trace_given = true;
            break;
        case 'R':
            trace_opt.src = optarg;
            trace_given = true;
            break;
        case 'C':
            trace_opt.code = optarg;
            trace_given = true;
            break;
        case 'k':
            trace_opt.kinds = optarg;
            trace_given = true;
            break;
        case 'r':
            if (!parse_long(optarg, 1, 1000, &n))
                return usage_error("--rate: '%s' is not a number of copies a second (1..1000)", optarg);
            trace_opt.rate = n;
            trace_given = true;
            break;
        case 's':
            if (!parse_long(optarg, 1, 86400, &n))
                return usage_error("--seconds: '%s' is not a number of seconds (1..86400)", optarg);
            record_opt.seconds = n;
            record_given = true;
            break;
        case 'T':
            if (!*optarg)
                return usage_error("--to needs a service name, or broadcast");
            opt.pub_to = optarg;
            break;
        case 'P':
            record_opt.no_payloads = true;
            record_given = true;
            break;
        case 'h':
            usage(stdout);
            return EXIT_OK;
        case 'V':
            printf(PROG " %s\n", SMARTSHOP_CLIENT_VERSION);
            return EXIT_OK;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        default:
            if (optopt)
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return usage_error("no command given (ping, services, stats, metrics, request, watch, "
                           "reload, dead-letters, replay, pub, sub, reply, top, peers, trace, record)");
    const char *cmd = argv[optind];
    int nargs = argc - optind - 1;
    char **args = argv + optind + 1;

    static const struct {
        const char *name;
        int min_args, max_args;
    } commands[] = {
        {"ping", 0, 0},     {"services", 0, 0}, {"stats", 0, 0},  {"metrics", 0, 0},
        {"request", 0, 99}, {"watch", 0, 0},    {"reload", 0, 0}, {"dead-letters", 0, 2},
        {"replay", 0, 99},  {"pub", 0, 99},     {"sub", 0, 99},   {"reply", 0, 99},  {"top", 0, 99},
        {"peers", 0, 0},    {"trace", 0, 99},   {"record", 0, 99},
    };
    int which = -1;
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(cmd, commands[i].name) == 0)
            which = (int)i;
    if (which < 0) {
        if (strcmp(cmd, "help") == 0) {
            usage(stdout);
            return EXIT_OK;
        }
        return usage_error("unknown command '%s'", cmd);
    }
    if (nargs > commands[which].max_args)
        return usage_error("%s takes no arguments (got '%s')", cmd, args[0]);
    bool recording = strcmp(cmd, "record") == 0;
    if (limit_given && strcmp(cmd, "dead-letters") != 0 && !recording)
        return usage_error("--limit goes with dead-letters and record only");
    if (trace_given && strcmp(cmd, "trace") != 0 && !recording)
        return usage_error("--action, --src, --code, --kinds and --rate go with trace and record only");
    if (opt.pub_to && strcmp(cmd, "pub") != 0)
        return usage_error("--to goes with pub only");
    if (record_given && !recording)
        return usage_error("--seconds and --no-payloads go with record only");
    bool show_letter = strcmp(cmd, "dead-letters") == 0 && nargs > 0;
    if (show_letter && strcmp(args[0], "show") != 0)
        return usage_error("dead-letters takes no arguments, or show ID (got '%s')", args[0]);
    if (show_letter && nargs != 2)
        return usage_error("dead-letters show takes one dead letter ID (see dead-letters)");

    int rc = load_keys();
    if (rc)
        return rc;
    rc = connect_broker();
    if (rc)
        return rc;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (strcmp(cmd, "ping") == 0)
        rc = cmd_ping();
    else if (strcmp(cmd, "services") == 0)
        rc = cmd_services();
    else if (strcmp(cmd, "stats") == 0)
        rc = cmd_stats();
    else if (strcmp(cmd, "metrics") == 0)
        rc = cmd_metrics();
    else if (strcmp(cmd, "request") == 0)
        rc = cmd_request(nargs, args);
    else if (strcmp(cmd, "watch") == 0)
        rc = cmd_watch();
    else if (strcmp(cmd, "reload") == 0)
        rc = cmd_reload();
    else if (show_letter)
        rc = cmd_dead_letter_show(nargs - 1, args + 1);
    else if (strcmp(cmd, "dead-letters") == 0)
        rc = cmd_dead_letters();
    else if (strcmp(cmd, "peers") == 0)
        rc = cmd_peers();
    else if (strcmp(cmd, "trace") == 0)
        rc = cmd_trace(nargs, args);
    else if (recording)
        rc = cmd_record(nargs, args);
    else if (strcmp(cmd, "pub") == 0)
        rc = cmd_pub(nargs, args);
    else if (strcmp(cmd, "sub") == 0)
        rc = cmd_sub(nargs, args);
    else if (strcmp(cmd, "reply") == 0)
        rc = cmd_reply(nargs, args);
    else if (strcmp(cmd, "top") == 0)
        rc = cmd_top(nargs, args);
    else
        rc = cmd_replay(nargs, args);

    ss_client_destroy(&client);
    if (fflush(stdout) != 0 && rc == EXIT_OK)
        rc = EXIT_REMOTE;       /* stdout closed or full: do not claim success */
    if (interrupted && rc == EXIT_OK && strcmp(cmd, "watch") != 0 && strcmp(cmd, "sub") != 0 &&
        strcmp(cmd, "reply") != 0 && strcmp(cmd, "top") != 0 && strcmp(cmd, "trace") != 0 && !recording)
        rc = EXIT_INTERRUPTED;
    return rc;
}
