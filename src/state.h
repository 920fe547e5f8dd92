/* state: the broker's durable state, one SQLite file (WAL mode) in the
 * state directory (--state-dir; docs/operations.md, "The state directory").
 *
 * Holds who held which names (registrations), the dead letters and the
 * last policy text that loaded. Read once, at start, on the main thread;
 * written behind: the event loop only appends a change to a queue (one
 * malloc and a mutex, no system call unless the writer sleeps), and a
 * writer thread of its own commits whatever has queued, one transaction
 * per batch. Nothing on the message path ever waits on the disk. The
 * queue holds at most 100000 changes and 64 MiB: past that (a stalled
 * disk) changes are dropped, counted and logged.
 *
 * A file that cannot be read (corrupted, not SQLite, a newer schema) is
 * reported, moved aside as broker.db.corrupt-<time> and replaced by an
 * empty one: the broker starts empty rather than not at all. Knows nothing
 * of peers, letters or policies beyond the bytes it is given. */
#ifndef SMARTSHOP_STATE_H
#define SMARTSHOP_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STATE_FILE "broker.db"

typedef struct state state_t;

/* Opens (creating the directory and the file as needed) DIR/broker.db and
 * starts its writer. NULL with the reason in `err` only when the directory
 * or a fresh file cannot be used at all (the caller then runs without
 * persistence, and says so). */
state_t *state_open(const char *dir, char *err, size_t errlen);

/* Writes everything queued (waiting at most `timeout_ms`), stops the
 * writer and closes the file. */
void state_close(state_t **self_p, unsigned timeout_ms);

/* What opening found, for the start-up line: "restored", "new" (no file
 * was there), or "corrupt" (moved aside: see state_moved_aside). */
const char *state_origin(const state_t *st);
const char *state_moved_aside(const state_t *st);   /* "" unless corrupt */
const char *state_path(const state_t *st);

/* --- reading, at start (before the first state_put_* call) --- */

typedef struct {
    const uint8_t *identity;
    size_t identity_len;
    const char *name, *key;       /* key: "" in plain mode */
    bool delimiter;
} state_registration_t;

/* Calls `fn` for each registration kept. Returns how many, or -1. */
int state_load_registrations(state_t *st,
                             void (*fn)(void *ctx, const state_registration_t *r), void *ctx);

typedef struct {
    uint64_t id;
    const char *at, *code, *msg_id, *src, *dst, *action;
    const uint8_t *sender;
    size_t sender_len;
    const char *bytes;            /* the message, or NULL */
    size_t len;
} state_letter_t;

/* Calls `fn` for each dead letter kept, oldest first. Returns how many, or -1. */
int state_load_letters(state_t *st, void (*fn)(void *ctx, const state_letter_t *l), void *ctx);

/* The last policy text that loaded (malloc'd; the caller frees), with its
 * file's path, SHA-256 and when it loaded; NULL if none is kept. */
char *state_load_policy(state_t *st, size_t *len, char path[4096], char sha256[65], char at[32]);

/* --- writing behind (the event loop; each call copies what it needs) --- */

/* Starts the writer: call once the loads are done. Changes queued before
 * wait for it. */
void state_start(state_t *st);

void state_put_registration(state_t *st, const state_registration_t *r);
void state_del_registration(state_t *st, const uint8_t *identity, size_t identity_len,
                            const char *name);
void state_put_letter(state_t *st, const state_letter_t *l);
void state_del_letter(state_t *st, uint64_t id);
void state_put_policy(state_t *st, const char *path, const char *text, size_t len,
                      const char *sha256, const char *at);

/* Blocks until every change queued so far is committed (or `timeout_ms`
 * passed). Returns true if nothing is left. For tests and shutdown. */
bool state_sync(state_t *st, unsigned timeout_ms);

typedef struct {
    uint64_t queued;              /* changes waiting for the writer */
    uint64_t written;             /* changes committed */
    uint64_t failed;              /* changes the file refused (logged) */
    uint64_t dropped;             /* changes not queued: the queue was full */
    uint64_t commits;             /* transactions */
} state_counts_t;

state_counts_t state_counts(state_t *st);

#endif
