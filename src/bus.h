/* bus: this broker as one of several on a NATS cluster (--nats). Owns the
 * NATS link (nats_link.c), gives the router its bus_hooks_t, and hands
 * what arrives from the other brokers to the router (router_bus_*).
 * Costs nothing without --nats: the broker then has no bus_t at all. */
#ifndef SMARTSHOP_BUS_H
#define SMARTSHOP_BUS_H

#include <poll.h>
#include <stdbool.h>

#include "config.h"
#include "router.h"

typedef struct bus bus_t;

/* Joins the bus (cfg->nats_urls) and starts the router's crossing. NULL
 * with the reason in `err` on bad settings or no memory; a NATS server
 * that does not answer yet is no error (it is retried). */
bus_t *bus_new(router_t *r, const config_t *cfg, char *err, size_t errlen);
void bus_free(bus_t **self_p);

/* The broker's loop: fill the two poll slots before poll, and after it
 * let the link do its I/O and hand up to `max` arrivals to the router.
 * bus_poll_done returns true if more arrivals wait (poll again at once). */
void bus_poll_prepare(bus_t *bus, struct pollfd fds[2]);
bool bus_poll_done(bus_t *bus, const struct pollfd fds[2], int max);

/* Graceful stop (D5, X8): off the bus, so that new requests go to the
 * other brokers; what still arrives is answered shutting_down. */
void bus_leave(bus_t *bus);
/* At exit: sends what is buffered (the last answers), for at most `ms`. */
void bus_flush(bus_t *bus, int ms);


#endif
