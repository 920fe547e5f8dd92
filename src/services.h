/* services: the host of the Lua services in services/ (issue 4).
 *
 * Owns the directory's services, loading, reloading and dropping them as
 * their files change, and the queue of messages delivered to them. A
 * message for a Lua service is queued, never handled inside the call that
 * delivered it, so no Lua state is ever re-entered and a service that
 * messages another (or itself) cannot recurse.
 *
 * Above the router: what its services send goes in through router_inject_*
 * like any peer's message, and the router hands it messages for them
 * through router_hosts_t (services_enqueue). Each lua_service gets a
 * lua_host_t from it and calls nothing else. */
#ifndef SMARTSHOP_SERVICES_H
#define SMARTSHOP_SERVICES_H

#include <stdbool.h>
#include <stdint.h>

#include <zmq.h>

#include "envelope.h"
#include "registry.h"
#include "router.h"
#include "sandbox.h"

typedef struct services services_t;

/* A host for the services in `dir`, whose messages go through `router`;
 * `request_timeout_ms` is their bus.request's default. */
services_t *services_new(router_t *router, const char *dir, sandbox_limits_t limits,
                         uint32_t queue_limit, uint32_t request_timeout_ms);
/* Drops every service (unregistering it) and frees the host. */
void services_free(services_t **self_p);

/* Loads every *.lua in the directory. A file that does not load is logged
 * and skipped. Returns how many loaded. */
int services_load_all(services_t *s);

/* Queues `data` for the Lua service `to`, with its envelope if the router
 * read it (`env`, else NULL: read when delivered); consumes `data` on
 * success. Returns 0, or -1 with errno EAGAIN when that service's queue is
 * full. */
int services_enqueue(services_t *s, peer_t *to, zmq_msg_t *data, const envelope_t *env);

/* Sends `data` from the hosted service whose peer is `from`, through the
 * router like any peer's message, with its envelope if already read (`env`
 * pointing into `data`, else NULL). Consumes `data`. Inside services_run
 * or services_run_queued the message waits in the outbox, in order, until
 * the run's handlers (and timers) are done: a run's messages then leave
 * together, and libzmq's I/O thread takes them in one wake-up instead of
 * one each (docs/performance.md). */
void services_send(services_t *s, peer_t *from, zmq_msg_t *data, envelope_t *env);

/* A file in the directory changed: (re)load or drop it shortly. */
void services_file_changed(services_t *s, const char *file);

/* One pass: runs the queued messages (those waiting when called), due
 * timers and due reloads. A service's handlers and timers share one pass
 * budget (its pass_budget, --lua-instruction-limit): once spent, its
 * other messages and due timers wait for the next pass, so the event
 * loop reads the ROUTER in between (docs/lua-services.md). */
void services_run(services_t *s, uint64_t now_ms);

/* A pass over the handlers of the messages queued so far (the same pass
 * budget), and sends what they sent: no timers, no reloads. The event loop calls it after each group
 * of messages it reads, so that answers leave while the next group waits
 * and the requesters work on them meanwhile, instead of every answer of a
 * busy wake-up waiting for its last request (docs/performance.md). */
void services_run_queued(services_t *s);

/* Whether messages wait for services_run_queued. */
bool services_have_queued(const services_t *s);

/* When services_run has work next: 0 if messages wait, else the earliest
 * timer or reload, or UINT64_MAX. */
uint64_t services_next_due(const services_t *s);

#endif
