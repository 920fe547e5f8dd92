/* broker_service: the broker's own service, dst "broker" (protocol B1):
 * ping, list_services, stats, ... Answers requests; its one state is the
 * rendered service list, reused while the registry is unchanged. */
#ifndef SMARTSHOP_BROKER_SERVICE_H
#define SMARTSHOP_BROKER_SERVICE_H

#include "broker.h"

/* Answers a request addressed to "broker" from `peer`. */
void broker_service_handle(broker_t *b, peer_t *peer, const envelope_t *env);

#endif
