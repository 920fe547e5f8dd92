/* broker_service: the broker's own service, dst "broker" (protocol B1):
 * ping, list_services, stats, reload_policy, ... Answers requests through
 * the router's API (router_send_made, router_send_error, router_inject for
 * a replay); the router reaches it only through router_hosts_t, set by
 * broker.c. Its state: the replay guard and the rendered service list,
 * reused while the registry is unchanged. */
#ifndef SMARTSHOP_BROKER_SERVICE_H
#define SMARTSHOP_BROKER_SERVICE_H

#include <stddef.h>

#include "envelope.h"
#include "registry.h"
#include "router.h"

typedef struct broker_service broker_service_t;

/* Loads the policy file again (reload_policy): 0, or -1 with the reason
 * in `err`. broker.c's, which also tells systemd. */
typedef int (*broker_reload_t)(void *ctx, char *err, size_t errlen);

/* The service of `router`; `reload` may be NULL (reload_policy refused). */
broker_service_t *broker_service_new(router_t *router, broker_reload_t reload, void *reload_ctx);
void broker_service_free(broker_service_t **self_p);

/* Reads the config again (reload_config, admin only): broker.c's
 * broker_reload_config. 0, or -1 with `err`. */
typedef int (*broker_reload_config_t)(void *ctx, char *live, size_t livelen, char *fixed,
                                      size_t fixedlen, char *err, size_t errlen);
void broker_service_set_config_reload(broker_service_t *bs, broker_reload_config_t fn, void *ctx);

/* The durable state, for stats (NULL: none). */
struct state;
void broker_service_set_state(broker_service_t *bs, struct state *st);

/* Answers a request addressed to "broker" from `peer`. */
void broker_service_handle(broker_service_t *bs, peer_t *peer, const envelope_t *env);

#endif
