/* metrics_http: the --metrics endpoint: Prometheus text over plain HTTP,
 * served by a ZMQ_STREAM socket in the broker's own event loop (no thread,
 * no hand-written socket code). Answers any GET with the metrics and
 * closes the connection. */
#ifndef SMARTSHOP_METRICS_HTTP_H
#define SMARTSHOP_METRICS_HTTP_H

#include <stddef.h>

struct broker;

/* Binds the endpoint of cfg->metrics_endpoint. Returns 0, or -1 with err. */
int metrics_http_start(struct broker *b, char *err, size_t errlen);

/* Answers what waits on the socket (never blocks). */
void metrics_http_handle(struct broker *b);

#endif
