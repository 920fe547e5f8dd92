/* metrics_http: Prometheus text over HTTP on a ZMQ_STREAM socket. */
#include "metrics_http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "broker.h"
#include "clock.h"
#include "log.h"

int metrics_http_start(broker_t *b, char *err, size_t errlen)
{
    b->metrics_http = zmq_socket(b->zmq_ctx, ZMQ_STREAM);
    int linger = 0;
    if (!b->metrics_http ||
        zmq_setsockopt(b->metrics_http, ZMQ_LINGER, &linger, sizeof linger) < 0 ||
        zmq_bind(b->metrics_http, b->cfg->metrics_endpoint) < 0) {
        snprintf(err, errlen, "cannot serve metrics on %s: %s", b->cfg->metrics_endpoint,
                 zmq_strerror(errno));
        return -1;
    }
    log_info("metrics: Prometheus text at http://%s/metrics",
             strncmp(b->cfg->metrics_endpoint, "tcp://", 6) == 0 ? b->cfg->metrics_endpoint + 6
                                                                 : b->cfg->metrics_endpoint);
    return 0;
}

/* ZMQ_STREAM frames: [connection id, data]; an empty data frame is a
 * connect or a disconnect. A request is answered whole, then closed by
 * sending the id with an empty frame. */
void metrics_http_handle(broker_t *b)
{
    for (;;) {
        zmq_msg_t id, data;
        zmq_msg_init(&id);
        zmq_msg_init(&data);
        if (zmq_msg_recv(&id, b->metrics_http, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&id);
            zmq_msg_close(&data);
            return;
        }
        zmq_msg_recv(&data, b->metrics_http, 0);
        if (zmq_msg_size(&data) > 0) {
            char *body = metrics_prometheus(b->metrics, &b->stats,
                                            (double)(clock_ms() - b->started_ms) / 1000.0,
                                            (size_t)b->registry->peer_count,
                                            (size_t)HASH_COUNT(b->registry->services),
                                            b->inflight->count);
            /* ZMQ_STREAM sends exactly [id, data]: head and body in one frame */
            size_t body_len = body ? strlen(body) : 0;
            char *reply = malloc(body_len + 200);
            if (reply) {
                int n = snprintf(reply, 200,
                                 "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                                 "Content-Length: %zu\r\nConnection: close\r\n\r\n", body_len);
                memcpy(reply + n, body ? body : "", body_len);
                zmq_send(b->metrics_http, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE);
                zmq_send(b->metrics_http, reply, (size_t)n + body_len, 0);
                zmq_send(b->metrics_http, zmq_msg_data(&id), zmq_msg_size(&id), ZMQ_SNDMORE);
                zmq_send(b->metrics_http, "", 0, 0);     /* closes the connection */
                free(reply);
            }
            free(body);
        }
        zmq_msg_close(&id);
        zmq_msg_close(&data);
    }
}
