/* bus_hooks: how the router hands what it cannot deliver here to the
 * other brokers (docs/protocol.md X1-X13). Filled by bus.c, which owns the
 * NATS link; the router knows no subject and no library. Every sender
 * returns 0 (published), -1 (the bus is unreachable now: nothing was sent)
 * or -2 (over the bus's max_payload: nothing was sent). */
#ifndef SMARTSHOP_BUS_HOOKS_H
#define SMARTSHOP_BUS_HOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cJSON;

/* A broker id's longest (nats_link.h's NATS_BROKER_ID_MAX, which bus.c
 * checks is the same): for those that keep ids the callbacks pass. */
#define BUS_BROKER_ID_MAX 64

/* One name another broker holds: `instances` of it there; `silent`: that
 * broker has not been heard for a while (its names are still listed). */
typedef void (*bus_remote_fn)(void *arg, const char *name, const char *broker, int instances,
                              bool silent);

/* Sends bytes that need no reply subject (broadcasts, topic events). */
typedef int (*bus_send_fn)(void *ctx, const void *data, size_t len);

typedef struct {
    void *ctx;                  /* NULL: no bus (one broker alone) */
    /* a request or event to `name`, which no local instance holds; its
     * answer or its "nobody" comes back as router_bus_reply(kind, seq) */
    int (*request)(void *ctx, const char *name, uint64_t seq, const char *msg_id, size_t id_len,
                   const void *data, size_t len);
    int (*event)(void *ctx, const char *name, uint64_t seq, const char *msg_id, size_t id_len,
                 const void *data, size_t len);
    bus_send_fn broadcast;
    bus_send_fn topic;
    /* to broker `origin`, about its request ('r') or event ('e') `seq`:
     * the answer's bytes, or len 0 for "not taken here" */
    int (*answer)(void *ctx, const char *origin, char kind, uint64_t seq, const char *msg_id,
                  size_t id_len, const void *data, size_t len);
    /* a local instance of `name` came (+1) or went (-1) */
    void (*holds)(void *ctx, const char *name, size_t len, int delta);
    /* the link's state and counters, for stats */
    void (*describe)(void *ctx, struct cJSON *into);
    /* the names other brokers hold, for list_services: writes
     * `"broker_id":"<own>","remote":[{"name":N,"broker":B,"instances":K},...],`
     * (and `"remote_truncated":true,` when it did not fit) into out[cap];
     * returns its length */
    size_t (*remote)(void *ctx, char *out, size_t cap);
    /* the same names, one call of fn each, in no order (the dashboard's
     * list, which the caller bounds and counts) */
    void (*each_remote)(void *ctx, bus_remote_fn fn, void *arg);
} bus_hooks_t;

#endif
