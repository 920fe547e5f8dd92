/* deadletter: a bounded ring of messages the broker could not deliver or
 * refused (docs/protocol.md, "Dead letters"), for operators to list and
 * replay through the broker service.
 *
 * Bounded in count and in bytes: the oldest letters go first. Each sender
 * (a connection identity) holds at most a share of both bounds: a letter
 * that would take its sender over its share evicts that sender's own
 * oldest letter, never anyone else's, so that one client's failures
 * cannot wipe out everyone's history. A letter keeps the message's bytes
 * when the broker still had them (refused and undeliverable messages), and
 * only its envelope fields otherwise (a request that expired in flight).
 * With a state attached, every letter kept or evicted is written behind
 * to the state file (state.h), so that they survive a restart. Never
 * sends anything itself. */
#ifndef SMARTSHOP_DEADLETTER_H
#define SMARTSHOP_DEADLETTER_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "envelope.h"
#include "errors.h"
#include "registry.h"
#include "state.h"

struct deadletter_sender;

typedef struct deadletter {
    uint64_t id;                 /* increasing, never reused */
    char at[32];                 /* ISO-8601 UTC */
    bus_err_t code;
    char *bytes;                 /* the message, or NULL */
    size_t len;
    uint8_t from[PEER_ID_MAX];   /* the sending connection's identity */
    uint8_t from_len;
    char msg_id[MSG_ID_MAX_LEN + 1], src[NAME_MAX_LEN + 1], dst[NAME_MAX_LEN + 1],
        action[MSG_ID_MAX_LEN + 1];
    struct deadletter *older, *newer;               /* all letters, by age */
    struct deadletter *sender_older, *sender_newer; /* its sender's, by age */
    struct deadletter_sender *sender;
} deadletter_t;

/* One sender's letters (a connection identity; the empty identity for
 * requests whose requester was gone when they expired). */
typedef struct deadletter_sender {
    uint8_t id[PEER_ID_MAX];
    uint8_t id_len;
    size_t count, bytes;
    deadletter_t *oldest;        /* its letters, oldest first (utlist) */
    UT_hash_handle hh;
} deadletter_sender_t;

typedef struct deadletters deadletters_t;

/* A ring of at most `max_count` letters holding `max_bytes` bytes, of
 * which one sender may hold 1/`share` of each (at least one letter). */
deadletters_t *deadletters_new(size_t max_count, size_t max_bytes, size_t share);
void deadletters_free(deadletters_t **self_p);

/* How many letters it holds, and how many it evicted to stay in bounds. */
size_t deadletters_count(const deadletters_t *dl);
uint64_t deadletters_evicted(const deadletters_t *dl);
/* The bytes of message text it holds, and how many senders hold letters. */
size_t deadletters_bytes(const deadletters_t *dl);
size_t deadletters_sender_count(const deadletters_t *dl);

/* Keeps a letter. `env` and `bytes` may be NULL; the fields given
 * explicitly (for requests that expired) win over the envelope's. */
void deadletters_add(deadletters_t *dl, bus_err_t code, const peer_t *from,
                     const envelope_t *env, const char *msg_id, const char *src,
                     const char *dst, const char *action);

/* Where letters are kept across restarts: told of each letter kept (put)
 * and each evicted (del). broker.c hands these to state.c. */
typedef struct {
    void *ctx;
    void (*put)(void *ctx, const deadletter_t *d);
    void (*del)(void *ctx, uint64_t id);
} deadletters_keeper_t;

/* Hands every letter added or evicted from now on to `keeper`, which
 * must outlive it (NULL: no longer; deadletters_free tells it nothing). */
void deadletters_set_keeper(deadletters_t *dl, const deadletters_keeper_t *keeper);

/* A letter read back from the state file at start: its id, time and
 * sender as they were, under today's bounds and shares (the oldest go
 * first if they shrank). Not written back. */
void deadletters_restore(deadletters_t *dl, const state_letter_t *l);

/* The newest `limit` letters, newest first, as a JSON array. */
cJSON *deadletters_list(const deadletters_t *dl, size_t limit);

/* The letter with this id, or NULL. */
const deadletter_t *deadletters_find(const deadletters_t *dl, uint64_t id);

#endif
