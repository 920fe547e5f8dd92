/* stats: the broker's counters, read by the broker service's stats action.
 * Plain data: incremented on the message path, never locked (one thread). */
#ifndef SMARTSHOP_STATS_H
#define SMARTSHOP_STATS_H

#include <stdint.h>

#include "envelope.h"
#include "errors.h"

typedef struct {
    uint64_t in[MT__COUNT];        /* received, by type (MT_NONE: unreadable) */
    uint64_t out[MT__COUNT];       /* sent, by type */
    uint64_t errored[MT__COUNT];   /* answered with an error, by the offending type */
    uint64_t errors[ERR__COUNT];   /* error replies sent, by code */
    uint64_t late_or_unknown;      /* answers naming no request in flight */
    uint64_t not_yours;            /* answers from a peer the request was not handed to */
    uint64_t requester_gone;       /* answers whose requester had disconnected */
    uint64_t broadcast_undelivered;/* broadcast copies a receiver could not take */
    uint64_t topic_unmatched;      /* topic events no subscription matched */
    uint64_t topic_undelivered;    /* topic event copies a subscriber could not take */
    struct {                       /* what crossed the bus between brokers (--nats) */
        uint64_t requests_out, requests_in;   /* requests sent to / taken from other brokers */
        uint64_t events_out, events_in;
        uint64_t broadcasts_out, broadcasts_in;
        uint64_t topics_out, topics_in;
        uint64_t answers_out, answers_in;     /* answers (and errors) sent back / received */
        uint64_t no_responders;               /* crossed to nobody: no broker held the name */
        uint64_t unreachable;                 /* not sent: the bus was down */
        uint64_t late;                        /* answers for no request in flight here */
        uint64_t refused;                     /* arrivals that were not a valid envelope */
    } bus;
} stats_t;

#endif
