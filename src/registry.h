/* registry: who is connected and which names they hold.
 *
 * A peer is one connection (a ZeroMQ routing identity, or a Lua service
 * hosted in-process). A service is a name with its instances, the peers
 * that registered it. Registrations belong to the peer: removing the peer
 * removes them. The registry knows nothing of sockets or messages.
 *
 * Remote connections and hosted services live in two tables of their own:
 * a routing identity from the wire is looked up among remote connections
 * only (registry_find_peer), so no identity a peer chooses can ever reach a
 * hosted service's record, whatever bytes it holds (docs/security.md).
 *
 * With a keeper attached (registry_set_keeper: broker.c's, writing to the
 * state file), every name a remote connection gains or loses is handed to
 * it, and at
 * start registry_restore brings the names back as "restored" records:
 * peers with no connection seen yet (fd -1), known by identity and key,
 * until their connection is back or their grace period ends
 * (docs/protocol.md, "Restarts"). Identities ZeroMQ made up (a first
 * byte 0) are not kept: a new connection never gets the same one. */
#ifndef SMARTSHOP_REGISTRY_H
#define SMARTSHOP_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keyed_hash.h"

#include "names.h"

#define PEER_ID_MAX 255

/* PEER_BUS: the other brokers, as one peer that the router keeps outside
 * the registry (router_bus.c): the requester of a request that came over
 * the bus, the handler of one that left on it. */
typedef enum { PEER_REMOTE = 0, PEER_LUA, PEER_BUS } peer_kind_t;

struct inflight;

typedef struct peer {
    uint8_t id[PEER_ID_MAX];   /* routing identity */
    uint8_t id_len;
    peer_kind_t kind;
    int fd;                    /* connection's descriptor (ZMQ_SRCFD), -1 if unknown */
    bool delimiter;            /* answers carry an empty delimiter frame (F2) */
    char (*names)[NAME_MAX_LEN + 1]; /* registered names */
    int name_count, name_cap;
    struct inflight *handling; /* requests handed to this peer */
    struct inflight *waiting;  /* requests this peer sent, not yet answered */
    uint32_t handling_count;   /* load, for least-loaded policies */
    uint32_t waiting_count;    /* requests in `waiting`, for its share of the table */
    char key[41];              /* CURVE public key it authenticated with ("" in plain mode) */
    bool watching;             /* gets a copy of every event (broker action watch) */
    void *host;                /* PEER_LUA: the hosted service */
    uint64_t queued_bytes;     /* handed to libzmq, not yet taken by its kernel (conn_bytes.h) */
    bool restored;             /* read back from the state file, its connection not
                                  seen since the restart (R1-R4) */
    /* for operators (broker action peers, logs): set by the router */
    uint64_t serial;           /* 1, 2, ... in order of arrival (registry_add_peer) */
    uint64_t since_ms, seen_ms;/* first and last message, router clock */
    uint64_t msgs_in, msgs_out;
    char addr[64];             /* remote address (libzmq's Peer-Address), "" if unknown */
    /* the router's src check (S2) for a connection that holds no name: the
     * last src it sent as and found held by nobody, at registry generation
     * free_src_gen (only a registration makes a free name taken, and each
     * bumps it) */
    bool free_src_known;
    uint8_t free_src_len;
    uint64_t free_src_gen;
    char free_src[NAME_MAX_LEN];
    UT_hash_handle hh;
} peer_t;

typedef struct service {
    char name[NAME_MAX_LEN + 1];
    peer_t **instances;
    int count, cap;
    unsigned next;             /* round-robin cursor */
    UT_hash_handle hh;
} service_t;

typedef struct registry registry_t;

registry_t *registry_new(void);
void registry_free(registry_t **self_p);

/* The remote connection with this routing identity, or NULL. Never finds
 * a hosted service, whatever `id` holds. */
peer_t *registry_find_peer(registry_t *reg, const void *id, size_t id_len);

/* The hosted service peer with this id (as registry_add_peer gave it for a
 * PEER_LUA), or NULL. For the services host only: never call it with an
 * identity that came from the wire. */
peer_t *registry_find_hosted(registry_t *reg, const void *id, size_t id_len);

/* The instance of service `name` whose id is `id` (remote or hosted), or
 * NULL: for a policy's route() that picks an instance by the id that
 * ctx.instances() gave it. */
peer_t *registry_find_instance(registry_t *reg, const char *name, size_t len,
                               const void *id, size_t id_len);

/* Every peer, remote and hosted: the one after `peer`, or the first when
 * `peer` is NULL; NULL at the end. Read the next one before removing the
 * current one. */
peer_t *registry_next_peer(registry_t *reg, const peer_t *peer);

/* The service after `svc` (the first when NULL), in no order; NULL at
 * the end. Read the next one before changing the registry. */
service_t *registry_next_service(registry_t *reg, const service_t *svc);

/* How many remote connections, and how many service names, it holds. */
size_t registry_peer_count(const registry_t *reg);
size_t registry_service_count(const registry_t *reg);
/* How many peers hold at least one name. */
size_t registry_registered_count(const registry_t *reg);

/* The peer last seen on this descriptor, or NULL. */
peer_t *registry_peer_on_fd(registry_t *reg, int fd);

/* A descriptor's connection was found dead before the socket monitor said
 * so (its number came back on a new connection): the monitor's disconnect
 * event for it, when it comes, is about the old connection and must not
 * touch the new one. */
void registry_fd_mark_stale(registry_t *reg, int fd);

/* True (and consumes the mark) if a disconnect event on `fd` is about a
 * connection already known dead. */
bool registry_fd_take_stale(registry_t *reg, int fd);

/* Adds a peer: a remote connection (PEER_REMOTE) or a hosted service
 * (PEER_LUA), each into its own table; the id must be new in that table.
 * Returns NULL on allocation failure or an id of 0 or over PEER_ID_MAX bytes. */
peer_t *registry_add_peer(registry_t *reg, const void *id, size_t id_len,
                          peer_kind_t kind, int fd);

/* Records that `peer` now uses descriptor `fd`. */
void registry_set_fd(registry_t *reg, peer_t *peer, int fd);

/* Drops the peer and all its registrations, and frees it. Requests it
 * handles or waits for must have been settled by the caller. */
void registry_remove_peer(registry_t *reg, peer_t **peer_p);

/* Gives `name` to `peer`. Returns 0, 1 if it held it already, -1 on
 * allocation failure. */
int registry_register(registry_t *reg, peer_t *peer, const char *name, size_t len);

/* Takes `name` from `peer`. Returns 0, or -1 if the peer did not hold it. */
int registry_unregister(registry_t *reg, peer_t *peer, const char *name, size_t len);

/* The service of this name, or NULL if nobody holds it. */
service_t *registry_find_service(registry_t *reg, const char *name, size_t len);

/* True if `peer` registered `name`. */
bool peer_holds(const peer_t *peer, const char *name, size_t len);

/* Next instance of `svc` in round-robin order (NULL if none). */
peer_t *service_next_instance(service_t *svc);

/* A number that changes whenever a service gains or loses an instance:
 * what was built from the services (a listing) is current while it holds. */
uint64_t registry_generation(const registry_t *reg);

/* How many hosted peers have been removed so far: a hosted peer's pointer
 * taken while this was N is valid while it is still N (for the services
 * host's queues, which would otherwise find each entry's peer again by
 * its id). */
uint64_t registry_hosted_removals(const registry_t *reg);

/* Where remote registrations are kept across restarts: told of each name
 * a remote connection gains (put) or loses (del). The registry knows no
 * file: broker.c hands these to state.c. */
typedef struct {
    void *ctx;
    void (*put)(void *ctx, const peer_t *peer, const char *name);
    void (*del)(void *ctx, const peer_t *peer, const char *name);
} registry_keeper_t;

/* Hands every remote registration made or dropped from now on to
 * `keeper`, which must outlive it (NULL: no longer; registry_free tells
 * it nothing). */
void registry_set_keeper(registry_t *reg, const registry_keeper_t *keeper);

/* A registration read back from the state file: gives `name` to the
 * remote peer of this identity, adding it as a restored record (no
 * descriptor, `key`, `delimiter`) if there is none. Not written back.
 * Returns the peer, or NULL (a bad identity or name, out of memory, or
 * the identity is held under another key: the first key read wins). */
peer_t *registry_restore(registry_t *reg, const void *id, size_t id_len, const char *key,
                         bool delimiter, const char *name);

/* How many restored records still wait for their connection. */
size_t registry_restored_count(const registry_t *reg);

/* The restored record's connection is back (a message came from it, or a
 * delivery to its identity succeeded): it is an ordinary peer from now on. */
void registry_adopt(registry_t *reg, peer_t *peer);

/* Orders the services by name, for listing. */
void registry_sort_services(registry_t *reg);

#endif
