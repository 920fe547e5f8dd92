/* inflight: requests the broker has handed to an instance and not yet seen
 * answered (docs/protocol.md T3, T4, D1-D3).
 *
 * Each record ties a msg_id to the connection that asked and the instance
 * that was handed the request, with a deadline. Records are found by
 * msg_id (hash), by deadline (min-heap), and by peer (two lists per peer),
 * so that a timeout, an answer or a disconnect each settle them in O(log n).
 * Bounded in total and per peer: one requester, or one handler that never
 * answers, holds at most a share of the table (docs/security.md). The
 * msg_id hash is keyed (keyed_hash.h): ids chosen to collide cannot make
 * the table quadratic.
 * Sends nothing itself: the router decides what each fate means. */
#ifndef SMARTSHOP_INFLIGHT_H
#define SMARTSHOP_INFLIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "keyed_hash.h"

#include "envelope.h"
#include "metrics.h"
#include "registry.h"

/* Freed records kept for the next requests: enough for a busy broker's
 * usual window, without holding a burst's worth of memory for ever. */
#define INFLIGHT_SPARES_MAX 4096

typedef struct inflight {
    peer_t *requester;          /* NULL once the requester is gone */
    peer_t *handler;
    uint64_t deadline_ms;
    uint64_t started_us;        /* arrival, for the latency metrics */
    metric_series_t *series;    /* its service/action metrics (may be NULL) */
    size_t heap_index;
    uint64_t bus_seq;           /* crossed the bus (handler or requester PEER_BUS): its seq; else 0 */
    struct inflight *wait_prev, *wait_next;     /* in requester->waiting */
    struct inflight *handle_prev, *handle_next; /* in handler->handling */
    char msg_id[MSG_ID_MAX_LEN + 1];
    char src[NAME_MAX_LEN + 1]; /* requester's src, for error replies */
    char dst[NAME_MAX_LEN + 1]; /* the name it was sent to, for dead letters */
    char service[NAME_MAX_LEN + 1]; /* the name it was delivered to (after route()), for
                                       on_outcome; set by the router */
    char action[MSG_ID_MAX_LEN + 1]; /* "" if not a plain short string */
    char bus_origin[65];        /* requester PEER_BUS: the id of the broker that asked */
    UT_hash_handle hh;
} inflight_t;

typedef struct inflight_table inflight_table_t;

/* Its bounds (inflight_table_new). */
typedef struct {
    size_t limit;               /* most records at once */
    size_t per_requester;       /* most records one requester may have waiting */
    size_t per_handler;         /* most records handed to one handler at once */
} inflight_limits_t;

/* Why inflight_add kept no record. */
typedef enum {
    INFLIGHT_ADDED = 0,
    INFLIGHT_TABLE_FULL,        /* `limit` records in the table */
    INFLIGHT_REQUESTER_SHARE,   /* the requester has `per_requester` waiting */
    INFLIGHT_HANDLER_SHARE,     /* the handler has `per_handler` in hand */
    INFLIGHT_NO_MEMORY,         /* or an envelope without a checked msg_id */
} inflight_result_t;

/* The share of a table of `limit` one peer gets when none is configured:
 * a tenth, so that one peer alone cannot fill it, but at least 4096 (a
 * client's pipelining window) unless the table itself is smaller. */
size_t inflight_default_share(size_t limit);

/* A table of at most `limit` records, at most `per_requester` of them
 * from one requester and `per_handler` handed to one handler (0: the
 * inflight_default_share of `limit`; neither more than `limit`). */
inflight_table_t *inflight_table_new(size_t limit, size_t per_requester, size_t per_handler);
/* New bounds, as inflight_table_new takes them (a config reload): they
 * apply to records added from now on; none held is dropped. */
void inflight_set_limits(inflight_table_t *t, size_t limit, size_t per_requester,
                         size_t per_handler);
/* Frees every record and the table. */
void inflight_table_free(inflight_table_t **self_p);

/* How many records it holds, and its bounds. */
size_t inflight_count(const inflight_table_t *t);
inflight_limits_t inflight_limits(const inflight_table_t *t);

/* The hash of a msg_id, as the table keys it: a request's is computed once
 * and serves both the duplicate check and the insertion. */
unsigned inflight_hash(const char *msg_id, size_t len);

inflight_t *inflight_find(inflight_table_t *t, const char *msg_id, size_t len);
/* The same, with the hash already known (inflight_hash). */
inflight_t *inflight_find_hashed(inflight_table_t *t, const char *msg_id, size_t len,
                                 unsigned hash);

/* Records a request handed to `handler`; `hash` is inflight_hash() of its
 * msg_id. On INFLIGHT_ADDED *rec_p is the record; otherwise nothing was
 * kept and the result says which bound refused it. msg_id, src and action
 * come from a checked envelope. */
inflight_result_t inflight_add(inflight_table_t *t, const envelope_t *env, unsigned hash,
                               peer_t *requester, peer_t *handler, uint64_t deadline_ms,
                               inflight_t **rec_p);

/* Forgets a record (hash, heap and both peer lists) and frees it. */
void inflight_remove(inflight_table_t *t, inflight_t **rec_p);

/* Unlinks a record from its requester's list, when the requester is gone. */
void inflight_forget_requester(inflight_t *rec);

/* The record with the earliest deadline if that deadline is <= now, else NULL. */
inflight_t *inflight_expired(inflight_table_t *t, uint64_t now_ms);

/* The record with the earliest deadline, or NULL when nothing is in flight. */
inflight_t *inflight_first(const inflight_table_t *t);

/* The earliest deadline, or UINT64_MAX when nothing is in flight. */
uint64_t inflight_next_deadline(const inflight_table_t *t);

#endif
