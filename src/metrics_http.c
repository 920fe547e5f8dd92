/* metrics_http: Prometheus text over HTTP on a ZMQ_STREAM socket. See
 * metrics_http.h. */
#include "metrics_http.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "clock.h"
#include "inflight.h"
#include "log.h"
#include "metrics.h"
#include "router.h"

#define CONN_ID_MAX 256

typedef enum { CONN_FREE = 0, CONN_READING, CONN_SENDING, CONN_CLOSING } conn_state_t;

/* One HTTP connection. Its answer is `head` (the status line, headers
 * and the uptime gauge, which changes every millisecond) then `body` (the
 * shared rendering, or NULL for an error answer). */
typedef struct {
    conn_state_t state;
    uint8_t id[CONN_ID_MAX];
    size_t id_len;
    uint64_t deadline_ms;       /* closed then, unless done */
    size_t request_bytes;
    char method[4];             /* the request's first bytes */
    char last[3];               /* its last bytes, to find its end across chunks */
    char head[512];
    size_t head_len;
    metrics_text_t *body;
    size_t sent, total;         /* bytes of head + body queued so far, and in all */
} conn_t;

/* The endpoint's connections. One broker per process: module state. */
static struct {
    void *socket;               /* the ZMQ_STREAM socket, NULL until started */
    const config_t *cfg;
    router_t *router;           /* what the metrics show */
    conn_t *conns;
    size_t cap, used;
    uint64_t next_deadline_ms;  /* the earliest conn deadline (UINT64_MAX: none) */
} http;

static log_ratelimit_t refusals_limit;

int metrics_http_start(void *zmq_ctx, const config_t *cfg, router_t *router, char *err,
                       size_t errlen)
{
    http.cfg = cfg;
    http.router = router;
    http.cap = http.cfg->metrics_max_connections;
    http.conns = calloc(http.cap, sizeof *http.conns);
    http.next_deadline_ms = UINT64_MAX;
    http.socket = zmq_socket(zmq_ctx, ZMQ_STREAM);
    int linger = 0, hwm = METRICS_HTTP_QUEUED;
    /* the queue bound applies to connections accepted after it is set:
     * before the bind */
    if (!http.conns || !http.socket ||
        zmq_setsockopt(http.socket, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_setsockopt(http.socket, ZMQ_SNDHWM, &hwm, sizeof hwm) < 0 ||
        zmq_bind(http.socket, http.cfg->metrics_endpoint) < 0) {
        snprintf(err, errlen, "cannot serve metrics on %s: %s", http.cfg->metrics_endpoint,
                 http.conns ? zmq_strerror(errno) : "out of memory");
        return -1;
    }
    log_info("metrics: Prometheus text at http://%s/metrics",
             strncmp(http.cfg->metrics_endpoint, "tcp://", 6) == 0 ? http.cfg->metrics_endpoint + 6
                                                                 : http.cfg->metrics_endpoint);
    return 0;
}

static conn_t *conn_find(const void *id, size_t id_len)
{
    for (size_t i = 0; i < http.cap; i++) {
        conn_t *c = &http.conns[i];
        if (c->state != CONN_FREE && c->id_len == id_len && memcmp(c->id, id, id_len) == 0)
            return c;
    }
    return NULL;
}

static void set_deadline(conn_t *c, uint64_t when)
{
    c->deadline_ms = when;
    if (when < http.next_deadline_ms)
        http.next_deadline_ms = when;
}

/* Sends the empty frame that makes ZMQ_STREAM close a connection: the
 * data queued before it still goes out first. False if its pipe is full
 * (the frame waits for room like any other). */
static bool close_id(const void *id, size_t id_len)
{
    return zmq_send(http.socket, id, id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) == (int)id_len &&
           zmq_send(http.socket, "", 0, ZMQ_DONTWAIT) == 0;
}

static void conn_free(conn_t *c)
{
    metrics_text_release(&c->body);
    c->state = CONN_FREE;
    http.used--;
}

/* Closes the connection, or, if its pipe is full, keeps its slot until
 * the close can be queued: a reader that stops reading holds one slot of
 * --metrics-max-connections and METRICS_HTTP_QUEUED pieces, no more. */
static void conn_close(conn_t *c)
{
    if (close_id(c->id, c->id_len)) {
        conn_free(c);
        return;
    }
    metrics_text_release(&c->body);
    c->state = CONN_CLOSING;
}

/* Queues what the connection's pipe takes of its answer, a piece at a
 * time; closes the connection once all of it is queued. */
static void pump(conn_t *c)
{
    if (c->state == CONN_CLOSING) {
        conn_close(c);
        return;
    }
    bool progress = false;
    while (c->sent < c->total) {
        const char *from;
        size_t n;
        if (c->sent < c->head_len) {
            from = c->head + c->sent;
            n = c->head_len - c->sent;
        } else {
            size_t at = c->sent - c->head_len;
            from = c->body->text + at;
            n = c->body->len - at;
            if (n > METRICS_HTTP_PIECE)
                n = METRICS_HTTP_PIECE;
        }
        /* the id frame picks the pipe and fails with EAGAIN when it is full */
        if (zmq_send(http.socket, c->id, c->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) != (int)c->id_len)
            break;
        if (zmq_send(http.socket, from, n, ZMQ_DONTWAIT) != (int)n)
            break;
        c->sent += n;
        progress = true;
    }
    if (c->sent >= c->total) {
        conn_close(c);
        return;
    }
    if (progress)       /* a reader that takes the answer keeps its connection */
        set_deadline(c, clock_ms() + http.cfg->metrics_idle_timeout_ms);
}

/* Starts the answer: `status` with `body`, or without one (an error, with
 * `extra` headers). Takes the reference to `body`. */
static void answer(conn_t *c, const char *status, const char *extra,
                   metrics_text_t *body)
{
    char uptime[256] = "";
    size_t uptime_len = 0;
    if (body)
        uptime_len = metrics_uptime_text(uptime, sizeof uptime,
                                         (double)(clock_ms() - router_started_ms(http.router)) / 1000.0);
    size_t body_len = body ? uptime_len + body->len : 0;
    int n = snprintf(c->head, sizeof c->head,
                     "HTTP/1.0 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n%s",
                     status, body_len, extra, uptime);
    c->head_len = n > 0 && (size_t)n < sizeof c->head ? (size_t)n : 0;
    c->body = body;
    c->sent = 0;
    c->total = c->head_len + (body ? body->len : 0);
    c->state = CONN_SENDING;
    pump(c);
}

/* True once buf, after the bytes seen before, ends the request's head
 * (a blank line: CRLF CRLF, or LF LF from lax clients). */
static bool request_complete(conn_t *c, const char *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = buf[i];
        if (ch == '\n' && (c->last[2] == '\n' || (c->last[2] == '\r' && c->last[1] == '\n')))
            return true;
        c->last[0] = c->last[1];
        c->last[1] = c->last[2];
        c->last[2] = ch;
    }
    return false;
}

static void on_data(conn_t *c, const char *buf, size_t len)
{
    if (c->state != CONN_READING)
        return;                 /* more after the request: not read */
    /* the method, from its first 4 bytes, whichever chunks bring them */
    for (size_t i = 0; c->request_bytes + i < 4 && i < len; i++)
        c->method[c->request_bytes + i] = buf[i];
    c->request_bytes += len;
    if (c->request_bytes >= 4 && memcmp(c->method, "GET ", 4) != 0) {
        answer(c, "405 Method Not Allowed", "Allow: GET\r\n", NULL);
        return;
    }
    bool complete = request_complete(c, buf, len);
    if (c->request_bytes > http.cfg->metrics_max_request_bytes) {
        answer(c, "431 Request Header Fields Too Large", "", NULL);
        return;
    }
    if (!complete)
        return;
    registry_t *reg = router_registry(http.router);
    metrics_text_t *text = metrics_prometheus(router_metrics(http.router), router_stats(http.router),
                                              registry_peer_count(reg),
                                              registry_service_count(reg),
                                              router_inflight_count(http.router));
    if (!text) {
        answer(c, "500 Internal Server Error", "", NULL);
        return;
    }
    answer(c, "200 OK", "", text);
}

/* A new connection: a slot, or 503 and closed. */
static void on_connect(const void *id, size_t id_len)
{
    conn_t *c = NULL;
    for (size_t i = 0; i < http.cap && !c && id_len <= CONN_ID_MAX; i++)
        if (http.conns[i].state == CONN_FREE)
            c = &http.conns[i];
    if (!c) {
        static const char busy[] = "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                   "Retry-After: 1\r\nConnection: close\r\n\r\n";
        log_limited(&refusals_limit, 10, LOG_LEVEL_WARN,
                    "metrics: refused a connection (%zu open, --metrics-max-connections)", http.used);
        if (zmq_send(http.socket, id, id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) == (int)id_len)
            zmq_send(http.socket, busy, sizeof busy - 1, ZMQ_DONTWAIT);
        close_id(id, id_len);         /* a new pipe: room for both */
        return;
    }
    memset(c, 0, sizeof *c);
    c->state = CONN_READING;
    memcpy(c->id, id, id_len);
    c->id_len = id_len;
    http.used++;
    /* from the connect, not from the last byte: a request trickled a byte
     * at a time gets no longer than one sent at once */
    set_deadline(c, clock_ms() + http.cfg->metrics_idle_timeout_ms);
}

/* ZMQ_STREAM frames: [connection id, data]; an empty data frame is a
 * connect (an id not known yet) or a disconnect. The socket is read until
 * it is empty (the event loop's rule for ZMQ_FD); a connection whose pipe
 * had filled gets its next pieces when libzmq says it drained, which
 * wakes this socket again. */
void metrics_http_handle(void)
{
    for (;;) {
        zmq_msg_t id, data;
        zmq_msg_init(&id);
        zmq_msg_init(&data);
        if (zmq_msg_recv(&id, http.socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            zmq_msg_close(&data);
            break;
        }
        zmq_msg_recv(&data, http.socket, 0);
        const void *cid = zmq_msg_data(&id);
        size_t cid_len = zmq_msg_size(&id);
        conn_t *c = conn_find(cid, cid_len);
        if (zmq_msg_size(&data) == 0) {
            if (c)
                conn_free(c);               /* the peer went away */
            else
                on_connect(cid, cid_len);
        } else if (c) {
            on_data(c, zmq_msg_data(&data), zmq_msg_size(&data));
        }
        zmq_msg_close(&id);
        zmq_msg_close(&data);
    }
    /* after the receives: they processed libzmq's word that a pipe has
     * room again (a send may skip looking, to save time) */
    for (size_t i = 0; i < http.cap; i++)
        if (http.conns[i].state == CONN_SENDING || http.conns[i].state == CONN_CLOSING)
            pump(&http.conns[i]);
}

void metrics_http_expire(uint64_t now_ms)
{
    if (!http.socket || now_ms < http.next_deadline_ms)
        return;
    http.next_deadline_ms = UINT64_MAX;
    for (size_t i = 0; i < http.cap; i++) {
        conn_t *c = &http.conns[i];
        if (c->state == CONN_FREE)
            continue;
        if (c->deadline_ms <= now_ms) {
            conn_close(c);
            if (c->state == CONN_CLOSING)       /* its pipe is full: try again */
                set_deadline(c, now_ms + 1000);
        } else if (c->deadline_ms < http.next_deadline_ms)
            http.next_deadline_ms = c->deadline_ms;
    }
}

void *metrics_http_socket(void)
{
    return http.socket;
}

void metrics_http_stop(void)
{
    if (http.socket)
        zmq_close(http.socket);
    http.socket = NULL;
}
