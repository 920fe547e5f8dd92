/* http: the HTTP thread (libmicrohttpd in external-epoll mode), its
 * connection bounds and its endpoints. See http.h. */
#define _GNU_SOURCE             /* accept4, pthread_setname_np */
#include "http.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "clock.h"
#include "http_assets.h"
#include "http_history.h"
#include "log.h"
#include "process_stats.h"

/* A connection handed to libmicrohttpd, and when it is cut off. */
typedef struct {
    int fd;                     /* -1: a free slot */
    uint64_t deadline_ms;
    bool cut;                   /* shut down; libmicrohttpd closes it next */
    struct MHD_Connection *waiting;  /* suspended until a fresh snapshot */
    uint64_t arrived_ms;        /* when the request waiting arrived */
    uint64_t ask;               /* its number (`asks`) */
    unsigned part;              /* what it waits for (HTTP_PART_*) */
    bool resumed;
} conn_t;

/* A refused connection reading its 503 before it is closed. */
typedef struct {
    int fd;
    uint64_t deadline_ms;
} refusing_t;

/* What the requests asked for, for smartshop_http_requests_total. */
typedef enum { EP_METRICS, EP_HEALTHZ, EP_READYZ, EP_API, EP_DASHBOARD, EP_NOT_FOUND, EP__COUNT } endpoint_t;
static const char *const endpoint_names[EP__COUNT] = {"metrics", "healthz", "readyz", "api",
                                                       "dashboard", "not_found"};

struct http_server {
    /* set before the thread starts */
    const config_t *cfg;
    int listen_fd, wake_fd;
    int want_fd;                /* eventfd: the HTTP thread wants a snapshot */
    struct MHD_Daemon *mhd;
    int mhd_fd;                 /* its epoll descriptor */
    pthread_t thread;
    bool thread_started;
    uint64_t started_ms;
    /* shared between the threads */
    pthread_mutex_t lock;
    http_snapshot_t *current;   /* under lock */
    _Atomic uint64_t loop_turned_ms;
    atomic_bool quit;
    atomic_uint wanted;         /* HTTP_PART_* requests wait for */
    /* Requests waiting for a fresh part are numbered, and a snapshot says
     * the last number given before it was taken: a part covering a
     * request's number was made after the request arrived, so it shows
     * every message the broker handled before. (A clock cannot say so: a
     * millisecond holds a snapshot, a routed answer and the scrape its
     * receiver sent next.) */
    _Atomic uint64_t asks;
    /* the broker thread's */
    http_snapshot_maker_t maker;
    uint64_t next_publish_ms, last_publish_ms;
    http_snapshot_t *pending;   /* taken, not yet swapped in (the lock was busy) */
    unsigned pending_asked;     /* the parts requests wait for in it */
    /* the HTTP thread's */
    conn_t *conns;
    size_t conn_cap, conn_used;
    refusing_t refusing[HTTP_REFUSING_MAX];
    size_t refusing_used;
    http_history_t *history;
    uint64_t requests[EP__COUNT];
    uint64_t refused, cut_off;
    uint64_t stale;             /* answers the broker made no fresh part for in time */
    log_ratelimit_t refusal_lines;
    uint64_t accept_paused_until;   /* out of descriptors: the listener rests */
};

/* --- the listening socket --- */

/* "tcp://HOST:PORT" (HOST "*" for every address, "[::1]" for IPv6). */
static int open_listener(const char *endpoint, char *err, size_t errlen)
{
    const char *spec = strncmp(endpoint, "tcp://", 6) == 0 ? endpoint + 6 : endpoint;
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || !colon[1]) {
        snprintf(err, errlen, "--metrics %s: expected tcp://HOST:PORT", endpoint);
        return -1;
    }
    char host[256];
    size_t hlen = (size_t)(colon - spec);
    if (hlen >= sizeof host) {
        snprintf(err, errlen, "--metrics %s: host too long", endpoint);
        return -1;
    }
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
        memmove(host, host + 1, hlen - 2);
        host[hlen - 2] = '\0';
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *res = NULL;
    int rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, colon + 1, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "--metrics %s: %s", endpoint, gai_strerror(rc));
        return -1;
    }
    int fd = -1, why = 0;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            why = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
            why = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0 && why == EADDRINUSE)
        snprintf(err, errlen, "cannot serve metrics on %s: %s (find who holds it: ss -ltnp 'sport = :%s')",
                 endpoint, strerror(why), colon + 1);
    else if (fd < 0)
        snprintf(err, errlen, "cannot serve metrics on %s: %s", endpoint, strerror(why));
    return fd;
}

/* --- connections --- */

static conn_t *conn_of_fd(http_server_t *h, int fd)
{
    for (size_t i = 0; i < h->conn_cap; i++)
        if (h->conns[i].fd == fd)
            return &h->conns[i];
    return NULL;
}

/* The connection made progress (a request, a piece of its answer): it
 * gets another idle period. */
static void touch(http_server_t *h, struct MHD_Connection *connection)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn_t *c = info ? conn_of_fd(h, info->connect_fd) : NULL;
    if (c)
        c->deadline_ms = clock_ms() + h->cfg->metrics_idle_timeout_ms;
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    http_server_t *h = cls;
    if (toe != MHD_CONNECTION_NOTIFY_CLOSED)
        return;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn_t *c = info ? conn_of_fd(h, info->connect_fd) : NULL;
    if (c) {
        c->fd = -1;
        h->conn_used--;
    }
}

/* An answer went out whole: a kept-alive connection gets an idle period
 * for its next request. */
static void on_completed(void *cls, struct MHD_Connection *connection, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    touch(cls, connection);
}

static void refuse(http_server_t *h, int fd)
{
    static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                               "Retry-After: 1\r\nConnection: close\r\n\r\n";
    h->refused++;
    log_limited(&h->refusal_lines, 10, LOG_LEVEL_WARN,
                "metrics: refused a connection (%zu open, --metrics-max-connections)", h->conn_used);
    /* a new socket's buffer takes this whole; the shutdown sends FIN after it */
    if (send(fd, busy, sizeof busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 ||
        shutdown(fd, SHUT_WR) < 0 || h->refusing_used == HTTP_REFUSING_MAX) {
        close(fd);
        return;
    }
    /* closed once the client has read it and gone, so that a request it
     * sent meanwhile does not turn the close into a reset that loses the 503 */
    h->refusing[h->refusing_used++] = (refusing_t){fd, clock_ms() + HTTP_REFUSE_LINGER_MS};
}

static void accept_all(http_server_t *h)
{
    for (;;) {
        struct sockaddr_storage addr;
        socklen_t len = sizeof addr;
        int fd = accept4(h->listen_fd, (struct sockaddr *)&addr, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)) {
            /* no descriptor to take it with: the listener stays readable,
             * so it is left alone a while rather than polled in a spin */
            h->accept_paused_until = clock_ms() + HTTP_ACCEPT_PAUSE_MS;
            log_limited(&h->refusal_lines, 10, LOG_LEVEL_WARN,
                        "metrics: cannot accept a connection: %s", strerror(errno));
            return;
        }
        if (fd < 0)
            return;             /* EAGAIN, or a connection that went away meanwhile */
        conn_t *c = h->conn_used < h->conn_cap ? conn_of_fd(h, -1) : NULL;
        if (!c) {
            refuse(h, fd);
            continue;
        }
        /* from the connect, not from the last byte: a request trickled a
         * byte at a time gets no longer than one sent at once */
        *c = (conn_t){.fd = fd, .deadline_ms = clock_ms() + h->cfg->metrics_idle_timeout_ms};
        h->conn_used++;
        if (MHD_add_connection(h->mhd, fd, (struct sockaddr *)&addr, len) != MHD_YES) {
            c->fd = -1;         /* libmicrohttpd closed it */
            h->conn_used--;
        }
    }
}

static void drop_refusing(http_server_t *h, size_t i)
{
    close(h->refusing[i].fd);
    h->refusing[i] = h->refusing[--h->refusing_used];
}

/* Reads and discards what a refused client sends, until it closes. */
static void drain_refusing(http_server_t *h, size_t i)
{
    char scratch[4096];
    for (;;) {
        ssize_t n = recv(h->refusing[i].fd, scratch, sizeof scratch, MSG_DONTWAIT);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        drop_refusing(h, i);
        return;
    }
}

/* Cuts off the connections whose time ran out: a shutdown, which
 * libmicrohttpd sees as the client going away, and closes. */
static uint64_t expire(http_server_t *h, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < h->conn_cap; i++) {
        conn_t *c = &h->conns[i];
        if (c->fd < 0 || c->cut)
            continue;
        if (c->deadline_ms <= now) {
            shutdown(c->fd, SHUT_RDWR);
            c->cut = true;
            h->cut_off++;
        } else if (c->deadline_ms < next) {
            next = c->deadline_ms;
        }
    }
    for (size_t i = 0; i < h->refusing_used;) {
        if (h->refusing[i].deadline_ms <= now) {
            drop_refusing(h, i);
            continue;
        }
        if (h->refusing[i].deadline_ms < next)
            next = h->refusing[i].deadline_ms;
        i++;
    }
    return next;
}

/* --- answers --- */

static http_snapshot_t *current_snapshot(http_server_t *h)
{
    pthread_mutex_lock(&h->lock);
    http_snapshot_t *s = http_snapshot_ref(h->current);
    pthread_mutex_unlock(&h->lock);
    return s;
}

static enum MHD_Result queue(struct MHD_Connection *connection, unsigned status,
                             struct MHD_Response *r, const char *type)
{
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    enum MHD_Result rc = MHD_queue_response(connection, status, r);
    MHD_destroy_response(r);
    return rc;
}

static enum MHD_Result answer_text(struct MHD_Connection *connection, unsigned status,
                                   const char *type, const char *text)
{
    return queue(connection, status,
                 MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY),
                 type);
}

/* A body made of a shared blob and a tail of its own (the parts of
 * /metrics that change at every scrape), read out by libmicrohttpd a
 * piece at a time: every piece taken counts as progress. */
typedef struct {
    http_server_t *h;
    int fd;
    http_blob_t *blob;
    size_t tail_len;
    char tail[];
} body_t;

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    body_t *b = cls;
    size_t blob_len = b->blob ? b->blob->len : 0, total = blob_len + b->tail_len;
    if (pos >= total)
        return MHD_CONTENT_READER_END_OF_STREAM;
    size_t n = 0;
    while (n < max && pos + n < total) {
        size_t at = (size_t)pos + n, take;
        const char *from;
        if (at < blob_len) {
            from = b->blob->text + at;
            take = blob_len - at;
        } else {
            from = b->tail + (at - blob_len);
            take = total - at;
        }
        if (take > max - n)
            take = max - n;
        memcpy(buf + n, from, take);
        n += take;
    }
    conn_t *c = conn_of_fd(b->h, b->fd);
    if (c)
        c->deadline_ms = clock_ms() + b->h->cfg->metrics_idle_timeout_ms;
    return (ssize_t)n;
}

static void free_body(void *cls)
{
    body_t *b = cls;
    http_blob_release(&b->blob);
    free(b);
}

/* Takes the reference to `blob`. */
static enum MHD_Result answer_blob(http_server_t *h, struct MHD_Connection *connection,
                                   const char *type, http_blob_t *blob, const char *tail,
                                   size_t tail_len)
{
    body_t *b = malloc(sizeof *b + tail_len);
    if (!b) {
        http_blob_release(&blob);
        return MHD_NO;
    }
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    *b = (body_t){h, info ? info->connect_fd : -1, blob, tail_len};
    memcpy(b->tail, tail, tail_len);
    struct MHD_Response *r = MHD_create_response_from_callback(
        (blob ? blob->len : 0) + tail_len, 64 << 10, read_body, b, free_body);
    if (!r) {
        free_body(b);
        return MHD_NO;
    }
    return queue(connection, MHD_HTTP_OK, r, type);
}

static const char *const not_started =
    "{\"status\":\"starting\",\"reason\":\"the event loop has made no snapshot yet\"}\n";

/* The HTTP server's own counters, in the Prometheus text format. */
static size_t http_counters(http_server_t *h, char *out, size_t cap)
{
    size_t n = 0;
    int w = snprintf(out, cap,
                     "# HELP smartshop_http_requests_total HTTP requests answered, by endpoint.\n"
                     "# TYPE smartshop_http_requests_total counter\n");
    n += w > 0 ? (size_t)w : 0;
    for (int e = 0; e < EP__COUNT && n < cap; e++) {
        w = snprintf(out + n, cap - n, "smartshop_http_requests_total{endpoint=\"%s\"} %llu\n",
                     endpoint_names[e], (unsigned long long)h->requests[e]);
        n += w > 0 ? (size_t)w : 0;
    }
    if (n < cap) {
        w = snprintf(out + n, cap - n,
                     "# HELP smartshop_http_connections Connections to the HTTP endpoint open now.\n"
                     "# TYPE smartshop_http_connections gauge\nsmartshop_http_connections %zu\n"
                     "# HELP smartshop_http_refused_total Connections refused with 503 "
                     "(--metrics-max-connections).\n"
                     "# TYPE smartshop_http_refused_total counter\nsmartshop_http_refused_total %llu\n"
                     "# HELP smartshop_http_cut_off_total Connections closed for sending no request or "
                     "taking no answer in time (--metrics-idle-timeout-ms).\n"
                     "# TYPE smartshop_http_cut_off_total counter\nsmartshop_http_cut_off_total %llu\n"
                     "# HELP smartshop_http_stale_total Answers from a snapshot older than their "
                     "request: the event loop made none within %d ms.\n"
                     "# TYPE smartshop_http_stale_total counter\nsmartshop_http_stale_total %llu\n",
                     h->conn_used, (unsigned long long)h->refused, (unsigned long long)h->cut_off,
                     HTTP_FRESH_WAIT_MS, (unsigned long long)h->stale);
        n += w > 0 ? (size_t)w : 0;
    }
    return n < cap ? n : cap - 1;
}

/* The last ask the snapshot's `part` covers (0: none). */
static uint64_t part_covers(const http_snapshot_t *s, unsigned part)
{
    return !s ? 0 : part == HTTP_PART_METRICS ? s->metrics_covers : s->state_covers;
}

/* Asks the broker thread for a snapshot with `part` made anew. */
static void want(http_server_t *h, unsigned part)
{
    if (atomic_fetch_or(&h->wanted, part) == 0) {
        uint64_t one = 1;
        if (write(h->want_fd, &one, sizeof one) < 0)
            (void)0;            /* already readable: the broker will look */
    }
}

/* Suspends the request until a `part` made after it arrived, or
 * HTTP_FRESH_WAIT_MS, and asks the broker for one (true: the handler
 * returns and is called again at the resume, when this says false and
 * sets `*answer_from` to the snapshot to answer from, a reference the
 * caller releases). */
static bool wait_for_fresh(http_server_t *h, struct MHD_Connection *connection, unsigned part,
                           http_snapshot_t **answer_from)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn_t *c = info ? conn_of_fd(h, info->connect_fd) : NULL;
    if (!c) {
        *answer_from = current_snapshot(h);
        return false;
    }
    if (c->waiting) {           /* called again after the resume: answer */
        *answer_from = current_snapshot(h);
        if (part_covers(*answer_from, c->part) < c->ask)
            h->stale++;         /* HTTP_FRESH_WAIT_MS ran out: a stalled broker */
        c->waiting = NULL;
        return false;
    }
    c->waiting = connection;
    c->arrived_ms = clock_ms();
    /* before want(): the snapshot that sees its wish sees its number */
    c->ask = atomic_fetch_add(&h->asks, 1) + 1;
    c->part = part;
    c->resumed = false;
    MHD_suspend_connection(connection);
    want(h, part);
    return true;
}

/* Resumes the waiting requests a snapshot now answers, and those that
 * waited long enough (a stalled broker: they get the last snapshot).
 * Returns when to look again: `now` when it resumed one, since
 * libmicrohttpd (external epoll, no inter-thread channel) answers a
 * resumed connection only at the next MHD_run, and nothing on its epoll
 * descriptor says so (waiting for it cost a whole poll period). */
static uint64_t resume_waiting(http_server_t *h, uint64_t now)
{
    http_snapshot_t *s = current_snapshot(h);
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < h->conn_cap; i++) {
        conn_t *c = &h->conns[i];
        if (c->fd < 0 || !c->waiting || c->resumed)
            continue;
        if (part_covers(s, c->part) >= c->ask || now >= c->arrived_ms + HTTP_FRESH_WAIT_MS) {
            c->resumed = true;
            MHD_resume_connection(c->waiting);
            next = now;
            continue;
        }
        /* a snapshot taken after it arrived but without its part (one
         * taken as it asked): ask again */
        if (s && s->taken_covers >= c->ask)
            want(h, c->part);
        if (c->arrived_ms + HTTP_FRESH_WAIT_MS < next)
            next = c->arrived_ms + HTTP_FRESH_WAIT_MS;
    }
    http_snapshot_release(&s);
    return next;
}

static enum MHD_Result serve_metrics(http_server_t *h, struct MHD_Connection *connection)
{
    http_snapshot_t *s;
    if (wait_for_fresh(h, connection, HTTP_PART_METRICS, &s))
        return MHD_YES;
    /* rendered here, in the HTTP thread, from the counters' copy */
    http_blob_t *blob = http_snapshot_prometheus(s);
    if (!blob) {                    /* the broker did not answer within HTTP_FRESH_WAIT_MS */
        http_snapshot_release(&s);
        return answer_text(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", not_started);
    }
    /* what changes at every scrape: the uptime, the process, this server */
    char tail[4096];
    size_t n = metrics_uptime_text(tail, sizeof tail, (double)(clock_ms() - h->started_ms) / 1000.0);
    process_stats_t ps;
    process_stats_read(&ps);
    n += process_stats_prometheus(&ps, tail + n, sizeof tail - n);
    n += http_counters(h, tail + n, sizeof tail - n);
    n += metrics_restart_text(tail + n, sizeof tail - n, s->policy_stale, s->policy_fallback,
                              s->restored_waiting);
    n += metrics_policy_cache_text(tail + n, sizeof tail - n, s->policy_cache_hits,
                                   s->policy_cache_misses);
    http_snapshot_release(&s);
    return answer_blob(h, connection, "text/plain; version=0.0.4; charset=utf-8", blob, tail, n);
}

static enum MHD_Result serve_healthz(http_server_t *h, struct MHD_Connection *connection)
{
    uint64_t turned = atomic_load_explicit(&h->loop_turned_ms, memory_order_relaxed);
    uint64_t now = clock_ms();
    char body[160];
    if (!turned)
        return answer_text(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", not_started);
    uint64_t age = now > turned ? now - turned : 0;
    bool ok = age < HTTP_HEALTH_STALL_MS;
    snprintf(body, sizeof body, "{\"status\":\"%s\",\"loop_age_ms\":%llu}\n", ok ? "ok" : "stalled",
             (unsigned long long)age);
    return answer_text(connection, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                       "application/json", body);
}

static enum MHD_Result serve_readyz(http_server_t *h, struct MHD_Connection *connection)
{
    http_snapshot_t *s = current_snapshot(h);
    if (!s)
        return answer_text(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", not_started);
    uint64_t turned = atomic_load_explicit(&h->loop_turned_ms, memory_order_relaxed);
    bool turning = clock_ms() - turned < HTTP_HEALTH_STALL_MS;
    bool ready = s->ready && turning;
    char body[256];
    snprintf(body, sizeof body, "{\"status\":\"%s\"%s%s%s}\n", ready ? "ready" : "not ready",
             ready ? "" : ",\"reason\":\"", ready ? "" : !turning ? "the event loop is stalled" : s->not_ready,
             ready ? "" : "\"");
    http_snapshot_release(&s);
    return answer_text(connection, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE,
                       "application/json", body);
}

static enum MHD_Result serve_state(http_server_t *h, struct MHD_Connection *connection)
{
    http_snapshot_t *s;
    if (wait_for_fresh(h, connection, HTTP_PART_STATE, &s))
        return MHD_YES;
    if (!s || !s->state) {
        http_snapshot_release(&s);
        return answer_text(connection, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", not_started);
    }
    http_blob_t *blob = http_blob_ref(s->state);
    http_snapshot_release(&s);
    return answer_blob(h, connection, "application/json", blob, "", 0);
}

static enum MHD_Result serve_history(http_server_t *h, struct MHD_Connection *connection)
{
    char *text = http_history_json(h->history);
    if (!text)
        return MHD_NO;
    enum MHD_Result rc = answer_text(connection, MHD_HTTP_OK, "application/json", text);
    cJSON_free(text);
    return rc;
}

static const http_asset_t *find_asset(const char *url)
{
    if (strcmp(url, "/") == 0)
        url = "/index.html";
    for (size_t i = 0; i < http_asset_count; i++)
        if (strcmp(http_assets[i].path, url) == 0)
            return &http_assets[i];
    return NULL;
}

static enum MHD_Result serve_asset(struct MHD_Connection *connection, const http_asset_t *a)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(a->len, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    if (r)     /* everything from here, nothing from anywhere else */
        MHD_add_response_header(r, "Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    return queue(connection, MHD_HTTP_OK, r, a->content_type);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *connection, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    http_server_t *h = cls;
    touch(h, connection);
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        if (r)
            MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        return queue(connection, MHD_HTTP_METHOD_NOT_ALLOWED, r, "text/plain");
    }
    static const struct {
        const char *path;
        endpoint_t endpoint;
        enum MHD_Result (*serve)(http_server_t *, struct MHD_Connection *);
    } routes[] = {
        {"/metrics", EP_METRICS, serve_metrics},
        {"/healthz", EP_HEALTHZ, serve_healthz},
        {"/readyz", EP_READYZ, serve_readyz},
        {"/api/v1/state", EP_API, serve_state},
        {"/api/v1/history", EP_API, serve_history},
    };
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++)
        if (strcmp(url, routes[i].path) == 0) {
            if (!*con_cls) {        /* once per request, not per call */
                h->requests[routes[i].endpoint]++;
                *con_cls = h;
            }
            return routes[i].serve(h, connection);
        }
    const http_asset_t *asset = find_asset(url);
    if (asset) {
        h->requests[EP_DASHBOARD]++;
        return serve_asset(connection, asset);
    }
    h->requests[EP_NOT_FOUND]++;
    return answer_text(connection, MHD_HTTP_NOT_FOUND, "application/json",
                       "{\"error\":\"not_found\",\"endpoints\":[\"/\",\"/metrics\",\"/healthz\","
                       "\"/readyz\",\"/api/v1/state\",\"/api/v1/history\"]}\n");
}

/* libmicrohttpd's own complaints (a client's protocol error, mostly):
 * into our log, at most a few a minute. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    http_server_t *h = cls;
    static log_ratelimit_t lines;
    char text[256];
    vsnprintf(text, sizeof text, fmt, ap);
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == ' '))
        text[--n] = '\0';
    (void)h;
    log_limited(&lines, 10, LOG_LEVEL_DEBUG, "http: %s", text);
}

/* --- the thread --- */

static void *serve(void *arg)
{
    http_server_t *h = arg;
    /* the event loop comes first: on a busy machine the scheduler gives
     * this thread's work (scrape floods included) the CPU the loop leaves */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), HTTP_THREAD_NICE) < 0)
        log_debug("http: cannot lower the HTTP thread's priority: %s", strerror(errno));
    while (!atomic_load(&h->quit)) {
        uint64_t now = clock_ms();
        uint64_t next = expire(h, now);
        uint64_t resume_due = resume_waiting(h, now);
        if (resume_due < next)
            next = resume_due;
        MHD_UNSIGNED_LONG_LONG mhd_ms;
        if (MHD_get_timeout(h->mhd, &mhd_ms) == MHD_YES && now + mhd_ms < next)
            next = now + mhd_ms;
        if (now + 1000 < next)      /* the history takes a sample at least this often */
            next = now + 1000;
        bool resting = now < h->accept_paused_until;
        if (resting && h->accept_paused_until < next)
            next = h->accept_paused_until;
        struct pollfd fds[3 + HTTP_REFUSING_MAX];
        nfds_t nfds = 0;
        fds[nfds++] = (struct pollfd){.fd = h->wake_fd, .events = POLLIN};
        fds[nfds++] = (struct pollfd){.fd = resting ? -1 : h->listen_fd, .events = POLLIN};
        fds[nfds++] = (struct pollfd){.fd = h->mhd_fd, .events = POLLIN};
        for (size_t i = 0; i < h->refusing_used; i++)
            fds[nfds++] = (struct pollfd){.fd = h->refusing[i].fd, .events = POLLIN};
        if (poll(fds, nfds, next > now ? (int)(next - now) : 0) < 0 && errno != EINTR) {
            log_error("http: poll failed: %s", strerror(errno));
            break;
        }
        if (fds[0].revents) {   /* quit, or a snapshot that waiting requests asked for */
            uint64_t v;
            if (read(h->wake_fd, &v, sizeof v) < 0)
                (void)0;
            if (atomic_load(&h->quit))
                break;
        }
        /* back to front: drain_refusing may move the last entry into i */
        for (size_t i = nfds - 3; i-- > 0;)
            if (fds[3 + i].revents)
                drain_refusing(h, i);
        if (fds[1].revents)
            accept_all(h);
        /* resumed now, answered by this MHD_run; those resumed at the
         * top of the pass made its poll return at once */
        resume_waiting(h, clock_ms());
        MHD_run(h->mhd);
        http_snapshot_t *s = current_snapshot(h);
        if (s)
            http_history_add(h->history, s);
        http_snapshot_release(&s);
    }
    return NULL;
}

http_server_t *http_start(const config_t *cfg, char *err, size_t errlen)
{
    http_server_t *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->cfg = cfg;
    h->listen_fd = h->wake_fd = h->want_fd = -1;
    h->started_ms = clock_ms();
    pthread_mutex_init(&h->lock, NULL);
    h->conn_cap = cfg->metrics_max_connections;
    h->conns = calloc(h->conn_cap, sizeof *h->conns);
    h->history = http_history_new();
    if (!h->conns || !h->history) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < h->conn_cap; i++)
        h->conns[i].fd = -1;
    if ((h->listen_fd = open_listener(cfg->metrics_endpoint, err, errlen)) < 0)
        goto fail;
    if ((h->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0 ||
        (h->want_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        snprintf(err, errlen, "cannot serve metrics: eventfd: %s", strerror(errno));
        goto fail;
    }
    /* a whole request head must fit in a connection's memory pool, with
     * room for libmicrohttpd's parsed headers and the answer's head */
    size_t pool = cfg->metrics_max_request_bytes + 4096;
    unsigned idle_s = (unsigned)((cfg->metrics_idle_timeout_ms + 999) / 1000);
    h->mhd = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME, 0, NULL, NULL, on_request, h,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)h->conn_cap,
        MHD_OPTION_CONNECTION_TIMEOUT, idle_s,   /* a backstop: ours counts milliseconds */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, pool,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, h,
        MHD_OPTION_END);
    const union MHD_DaemonInfo *info = h->mhd ? MHD_get_daemon_info(h->mhd, MHD_DAEMON_INFO_EPOLL_FD) : NULL;
    if (!info) {
        snprintf(err, errlen, "cannot serve metrics on %s: libmicrohttpd did not start",
                 cfg->metrics_endpoint);
        goto fail;
    }
    h->mhd_fd = info->epoll_fd;
    if (pthread_create(&h->thread, NULL, serve, h) != 0) {
        snprintf(err, errlen, "cannot serve metrics: no thread: %s", strerror(errno));
        goto fail;
    }
    h->thread_started = true;
    pthread_setname_np(h->thread, "smartshop-http");
    const char *shown = strncmp(cfg->metrics_endpoint, "tcp://", 6) == 0 ? cfg->metrics_endpoint + 6
                                                                          : cfg->metrics_endpoint;
    log_info("http: dashboard at http://%s/, Prometheus text at http://%s/metrics", shown, shown);
    return h;
fail:
    http_stop(&h);
    return NULL;
}

uint64_t http_next_due(const http_server_t *h)
{
    if (h->pending)             /* a swap to retry: soon */
        return h->last_publish_ms + 1;
    uint64_t fresh = h->last_publish_ms + HTTP_FRESH_MIN_MS;
    if (atomic_load_explicit(&h->wanted, memory_order_relaxed) && fresh < h->next_publish_ms)
        return fresh;
    return h->next_publish_ms;
}

/* Swaps `pending` in if the lock is free: the broker thread never waits
 * for the HTTP thread (which holds it for a pointer copy, but may be
 * preempted meanwhile); else the next pass tries again. Wakes the HTTP
 * thread when requests wait for it. */
static void swap_in(http_server_t *h)
{
    if (pthread_mutex_trylock(&h->lock) != 0)
        return;
    http_snapshot_t *old = h->current;
    h->current = h->pending;
    pthread_mutex_unlock(&h->lock);
    h->pending = NULL;
    http_snapshot_release(&old);
    uint64_t one = 1;
    if (h->pending_asked && write(h->wake_fd, &one, sizeof one) < 0)
        (void)0;
    h->pending_asked = 0;
}

bool http_tick(http_server_t *h, uint64_t now_ms)
{
    atomic_store_explicit(&h->loop_turned_ms, now_ms, memory_order_relaxed);
    if (h->pending) {
        swap_in(h);
        return false;
    }
    return now_ms >= http_next_due(h);
}

int http_wake_fd(const http_server_t *h)
{
    return h->want_fd;
}

void http_woken(http_server_t *h)
{
    uint64_t v;
    if (read(h->want_fd, &v, sizeof v) < 0)
        (void)0;                /* nothing to read: woken for another reason */
}

void http_publish(http_server_t *h, const router_t *router, bool stopping, uint64_t now_ms)
{
    h->next_publish_ms = now_ms + HTTP_SNAPSHOT_MS;
    h->last_publish_ms = now_ms;
    /* before the snapshot is taken: a request arriving meanwhile asks
     * again; the wishes before the numbers, so that a wish seen here has
     * its number covered */
    unsigned asked = atomic_exchange(&h->wanted, 0);
    uint64_t covers = atomic_load(&h->asks);
    http_snapshot_t *fresh = http_snapshot_take(&h->maker, router, stopping, asked, covers, now_ms);
    if (!fresh)
        return;                 /* out of memory: the last one stays */
    h->pending = fresh;
    h->pending_asked = asked;
    swap_in(h);
}

void http_stop(http_server_t **h_p)
{
    http_server_t *h = *h_p;
    if (!h)
        return;
    if (h->thread_started) {
        atomic_store(&h->quit, true);
        uint64_t one = 1;
        if (write(h->wake_fd, &one, sizeof one) < 0)
            (void)0;
        pthread_join(h->thread, NULL);
    }
    if (h->mhd) {
        /* libmicrohttpd stops only with no connection suspended: the
         * waiting ones get what there is, then all are closed */
        for (size_t i = 0; i < h->conn_cap; i++)
            if (h->conns[i].fd >= 0 && h->conns[i].waiting && !h->conns[i].resumed) {
                h->conns[i].resumed = true;
                MHD_resume_connection(h->conns[i].waiting);
            }
        MHD_run(h->mhd);
        MHD_stop_daemon(h->mhd);        /* closes the connections it holds */
    }
    for (size_t i = 0; i < h->refusing_used; i++)
        close(h->refusing[i].fd);
    if (h->listen_fd >= 0)
        close(h->listen_fd);
    if (h->wake_fd >= 0)
        close(h->wake_fd);
    if (h->want_fd >= 0)
        close(h->want_fd);
    http_snapshot_release(&h->current);
    http_snapshot_release(&h->pending);
    http_snapshot_maker_clear(&h->maker);
    http_history_free(&h->history);
    pthread_mutex_destroy(&h->lock);
    free(h->conns);
    free(h);
    *h_p = NULL;
}
