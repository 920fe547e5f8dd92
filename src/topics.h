/* topics: subscriptions to event topics and the matching of a published
 * topic against them (docs/protocol.md, "Topics").
 *
 * A topic is dot-separated tokens ("order.created", "store.12.till.3"). A
 * pattern may use "*" for exactly one token and, as its last token, ">"
 * for one or more. Subscriptions are kept in a token trie, so matching a
 * topic walks at most two branches per token and never looks at
 * subscriptions whose literal tokens differ; the results of recent topics
 * are cached until the subscriptions change. Delivery is per owner (one
 * connection): an owner gets an event once however many of its patterns
 * match; subscriptions in a queue group share each event, one member
 * taking it, round-robin.
 *
 * Knows nothing of peers or sockets: an owner is an opaque pointer. */
#ifndef SMARTSHOP_TOPICS_H
#define SMARTSHOP_TOPICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "names.h"             /* topic_is_valid, TOPIC_MAX_LEN */

#define TOPIC_GROUP_MAX_LEN 64   /* a queue group's name: a name (names.h) */

typedef struct topics topics_t;

typedef struct {
    size_t max_per_owner;        /* subscriptions one owner may hold */
    size_t max_total;            /* subscriptions over all owners */
    size_t cache_entries;        /* topics whose match results are kept */
} topics_limits_t;

topics_t *topics_new(topics_limits_t limits);
void topics_free(topics_t **self_p);

typedef enum {
    TOPICS_OK = 0,
    TOPICS_ALREADY,              /* subscribe: held already (idempotent) */
    TOPICS_NOT_FOUND,            /* unsubscribe: not held */
    TOPICS_OWNER_FULL,           /* the owner holds max_per_owner */
    TOPICS_FULL,                 /* max_total reached */
    TOPICS_NO_MEMORY,
} topics_result_t;

/* Subscribes `owner` to a valid `pattern`, in queue group `group` (NULL or
 * "" for none). The same owner, pattern and group twice is one
 * subscription. */
topics_result_t topics_subscribe(topics_t *t, void *owner, const char *pattern, size_t len,
                                 const char *group);

/* Removes that subscription. */
topics_result_t topics_unsubscribe(topics_t *t, void *owner, const char *pattern, size_t len,
                                   const char *group);

/* Removes every subscription of `owner` (its connection went away).
 * Returns how many it held. */
size_t topics_remove_owner(topics_t *t, void *owner);

/* How many subscriptions `owner` holds, and all owners together. */
size_t topics_owner_count(const topics_t *t, const void *owner);
size_t topics_count(const topics_t *t);

/* Calls `deliver(owner, ctx)` once for each owner that gets an event on
 * the valid topic `topic`: each plain subscriber once, and one member of
 * each matching queue group. `skip` (may be NULL) is never delivered to
 * (the publisher). Returns how many owners were called. `deliver` must not
 * change the subscriptions. */
size_t topics_publish(topics_t *t, const char *topic, size_t len, const void *skip,
                      void (*deliver)(void *owner, void *ctx), void *ctx);

/* The patterns `owner` holds, for listing: calls `fn` for each. */
void topics_each_of_owner(const topics_t *t, const void *owner,
                          void (*fn)(const char *pattern, const char *group, void *ctx),
                          void *ctx);

#endif
