/* state: SQLite, written behind by a thread of its own. See state.h. */
#define _GNU_SOURCE                 /* asprintf */
#include "state.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "log.h"

/* The schema's version (PRAGMA user_version). A file with another is not
 * read: it is moved aside like a corrupted one. */
#define SCHEMA_VERSION 1
/* Changes queued at most: if the disk stalls, the loop drops changes
 * (counted, logged) rather than hold memory without end. */
#define QUEUE_MAX 100000
#define QUEUE_MAX_BYTES (64u << 20)     /* and their bytes (a letter keeps its message) */

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS registrations("
    " identity BLOB NOT NULL, name TEXT NOT NULL, key TEXT NOT NULL,"
    " delimiter INTEGER NOT NULL, registered_at TEXT NOT NULL,"
    " PRIMARY KEY (identity, name));"
    "CREATE TABLE IF NOT EXISTS dead_letters("
    " id INTEGER PRIMARY KEY, at TEXT NOT NULL, code TEXT NOT NULL, sender BLOB NOT NULL,"
    " msg_id TEXT, src TEXT, dst TEXT, action TEXT, message BLOB);"
    "CREATE TABLE IF NOT EXISTS policy("
    " slot INTEGER PRIMARY KEY CHECK (slot = 1), path TEXT NOT NULL, sha256 TEXT NOT NULL,"
    " loaded_at TEXT NOT NULL, source BLOB NOT NULL);";

typedef enum { OP_REG_PUT, OP_REG_DEL, OP_LETTER_PUT, OP_LETTER_DEL, OP_POLICY_PUT, OP__COUNT } op_kind_t;

static const char *const op_sql[OP__COUNT] = {
    [OP_REG_PUT] = "INSERT OR REPLACE INTO registrations VALUES (?1, ?2, ?3, ?4, ?5)",
    [OP_REG_DEL] = "DELETE FROM registrations WHERE identity = ?1 AND name = ?2",
    [OP_LETTER_PUT] = "INSERT OR REPLACE INTO dead_letters VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [OP_LETTER_DEL] = "DELETE FROM dead_letters WHERE id = ?9",
    [OP_POLICY_PUT] = "INSERT OR REPLACE INTO policy VALUES (1, ?1, ?2, ?3, ?4)",
};

#define OP_FIELDS 8

/* One change: its fields are copied into the same allocation, after it.
 * A field with ptr NULL binds as SQL NULL. `blob` marks fields bound as
 * bytes rather than text. */
typedef struct op {
    struct op *next;
    op_kind_t kind;
    int64_t number;             /* ?9: a letter's id; or ?4 of a registration */
    const char *ptr[OP_FIELDS];
    size_t len[OP_FIELDS];
    unsigned blob;              /* bit i: field i is a BLOB */
    size_t size;                /* the allocation's, for the queue's byte bound */
} op_t;

struct state {
    char *dir, *path;
    char origin[16];
    char moved_aside[4200];
    sqlite3 *db;
    sqlite3_stmt *stmt[OP__COUNT];
    pthread_t writer;
    bool writer_started;
    pthread_mutex_t lock;
    pthread_cond_t wake, idle;  /* writer: work or stop; waiters: queue empty */
    op_t *head, *tail;
    size_t queued_bytes;        /* of the changes in the queue */
    bool stop, busy;
    state_counts_t counts;
};

/* --- opening --- */

static int mkdir_p(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0750) < 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(path, 0750) < 0 && errno != EEXIST ? -1 : 0;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

/* Opens the file and checks it is ours and whole. Returns 0, or -1 with
 * why in `err` (the handle is closed then). */
static int open_checked(state_t *st, char *err, size_t errlen)
{
    if (sqlite3_open_v2(st->path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "%s", st->db ? sqlite3_errmsg(st->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(st->db, 2000);   /* an operator's sqlite3 reading it */
    sqlite3_stmt *q = NULL;
    int version = -1;
    bool ok = false;
    if (sqlite3_prepare_v2(st->db, "PRAGMA quick_check", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(q, 0);
        ok = text && strcmp(text, "ok") == 0;
        snprintf(err, errlen, "%s", text ? text : "no answer to quick_check");
    } else {
        snprintf(err, errlen, "%s", sqlite3_errmsg(st->db));
    }
    sqlite3_finalize(q);
    if (!ok)
        goto fail;
    if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        version = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    if (version != 0 && version != SCHEMA_VERSION) {
        snprintf(err, errlen, "schema version %d, this broker reads %d", version, SCHEMA_VERSION);
        goto fail;
    }
    /* WAL: a commit appends to broker.db-wal and needs no fsync
     * (synchronous=NORMAL), and survives the process being killed at any
     * point; only a power cut may lose the last commits. */
    char pragma[128];
    snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d", SCHEMA_VERSION);
    if (exec(st->db, "PRAGMA journal_mode = WAL") < 0 || exec(st->db, "PRAGMA synchronous = NORMAL") < 0 ||
        exec(st->db, schema) < 0 || exec(st->db, pragma) < 0) {
        snprintf(err, errlen, "%s", sqlite3_errmsg(st->db));
        goto fail;
    }
    for (int i = 0; i < OP__COUNT; i++)
        if (sqlite3_prepare_v3(st->db, op_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st->stmt[i], NULL) !=
            SQLITE_OK) {
            snprintf(err, errlen, "%s", sqlite3_errmsg(st->db));
            goto fail;
        }
    return 0;
fail:
    for (int i = 0; i < OP__COUNT; i++) {
        sqlite3_finalize(st->stmt[i]);
        st->stmt[i] = NULL;
    }
    sqlite3_close(st->db);
    st->db = NULL;
    return -1;
}

/* Moves the unreadable file (and its -wal and -shm) out of the way, under
 * a name that says when: the operator may want to look at it. */
static void move_aside(state_t *st)
{
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    snprintf(st->moved_aside, sizeof st->moved_aside, "%s.corrupt-%s", st->path, stamp);
    static const char *const tails[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        char from[4200], to[4300];
        snprintf(from, sizeof from, "%s%s", st->path, tails[i]);
        snprintf(to, sizeof to, "%s%s", st->moved_aside, tails[i]);
        if (rename(from, to) < 0 && errno != ENOENT)
            unlink(from);
    }
}

static void *writer_main(void *arg);

state_t *state_open(const char *dir, char *err, size_t errlen)
{
    state_t *st = calloc(1, sizeof *st);
    if (!st || !(st->dir = strdup(dir)) || asprintf(&st->path, "%s/%s", dir, STATE_FILE) < 0) {
        snprintf(err, errlen, "out of memory");
        if (st)
            free(st->dir);
        free(st);
        return NULL;
    }
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->wake, NULL);
    pthread_cond_init(&st->idle, NULL);
    if (mkdir_p(dir) < 0) {
        snprintf(err, errlen, "cannot create the state directory %s: %s", dir, strerror(errno));
        goto fail;
    }
    struct stat sb;
    bool existed = stat(st->path, &sb) == 0;
    snprintf(st->origin, sizeof st->origin, "%s", existed ? "restored" : "new");
    char why[512];
    if (open_checked(st, why, sizeof why) < 0) {
        if (!existed) {
            snprintf(err, errlen, "cannot create %s: %s", st->path, why);
            goto fail;
        }
        move_aside(st);
        log_error("state file %s cannot be read (%s): moved aside to %s; starting with an "
                  "empty state (no registrations, dead letters or last good policy)",
                  st->path, why, st->moved_aside);
        snprintf(st->origin, sizeof st->origin, "corrupt");
        if (open_checked(st, why, sizeof why) < 0) {
            snprintf(err, errlen, "cannot create %s: %s", st->path, why);
            goto fail;
        }
    }
    return st;
fail:
    state_close(&st, 0);
    return NULL;
}

void state_start(state_t *st)
{
    if (st->writer_started || !st->db)
        return;
    /* the loop's signals are blocked in every thread already (main.c) */
    st->writer_started = pthread_create(&st->writer, NULL, writer_main, st) == 0;
    if (!st->writer_started)
        log_error("state: cannot start the writer thread: changes are not kept");
}

void state_close(state_t **self_p, unsigned timeout_ms)
{
    state_t *st = *self_p;
    if (!st)
        return;
    if (st->head)
        state_start(st);                  /* what was queued before the start */
    if (st->writer_started) {
        state_sync(st, timeout_ms);
        pthread_mutex_lock(&st->lock);
        st->stop = true;
        pthread_cond_signal(&st->wake);
        pthread_mutex_unlock(&st->lock);
        pthread_join(st->writer, NULL);
    }
    while (st->head) {
        op_t *op = st->head;
        st->head = op->next;
        free(op);
    }
    for (int i = 0; i < OP__COUNT; i++)
        sqlite3_finalize(st->stmt[i]);
    if (st->db)
        sqlite3_close(st->db);
    pthread_cond_destroy(&st->wake);
    pthread_cond_destroy(&st->idle);
    pthread_mutex_destroy(&st->lock);
    free(st->dir);
    free(st->path);
    free(st);
    *self_p = NULL;
}

const char *state_origin(const state_t *st)
{
    return st->origin;
}

const char *state_moved_aside(const state_t *st)
{
    return st->moved_aside;
}

const char *state_path(const state_t *st)
{
    return st->path;
}

/* --- reading --- */

static const char *column_text(sqlite3_stmt *q, int i)
{
    const char *text = (const char *)sqlite3_column_text(q, i);
    return text ? text : "";
}

int state_load_registrations(state_t *st,
                             void (*fn)(void *ctx, const state_registration_t *r), void *ctx)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT identity, name, key, delimiter FROM registrations "
                           "ORDER BY identity, registered_at", -1, &q, NULL) != SQLITE_OK)
        return -1;
    int n = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        state_registration_t r = {
            .identity = sqlite3_column_blob(q, 0), .identity_len = (size_t)sqlite3_column_bytes(q, 0),
            .name = column_text(q, 1), .key = column_text(q, 2),
            .delimiter = sqlite3_column_int(q, 3) != 0};
        fn(ctx, &r);
        n++;
    }
    sqlite3_finalize(q);
    return n;
}

int state_load_letters(state_t *st, void (*fn)(void *ctx, const state_letter_t *l), void *ctx)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(st->db, "SELECT id, at, code, sender, msg_id, src, dst, action, message "
                           "FROM dead_letters ORDER BY id", -1, &q, NULL) != SQLITE_OK)
        return -1;
    int n = 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        state_letter_t l = {
            .id = (uint64_t)sqlite3_column_int64(q, 0), .at = column_text(q, 1),
            .code = column_text(q, 2), .sender = sqlite3_column_blob(q, 3),
            .sender_len = (size_t)sqlite3_column_bytes(q, 3), .msg_id = column_text(q, 4),
            .src = column_text(q, 5), .dst = column_text(q, 6), .action = column_text(q, 7),
            .bytes = sqlite3_column_type(q, 8) == SQLITE_NULL ? NULL : sqlite3_column_blob(q, 8),
            .len = (size_t)sqlite3_column_bytes(q, 8)};
        fn(ctx, &l);
        n++;
    }
    sqlite3_finalize(q);
    return n;
}

char *state_load_policy(state_t *st, size_t *len, char path[4096], char sha256[65], char at[32])
{
    sqlite3_stmt *q;
    char *text = NULL;
    if (sqlite3_prepare_v2(st->db, "SELECT path, sha256, loaded_at, source FROM policy WHERE slot = 1",
                           -1, &q, NULL) != SQLITE_OK)
        return NULL;
    if (sqlite3_step(q) == SQLITE_ROW) {
        snprintf(path, 4096, "%s", column_text(q, 0));
        snprintf(sha256, 65, "%s", column_text(q, 1));
        snprintf(at, 32, "%s", column_text(q, 2));
        *len = (size_t)sqlite3_column_bytes(q, 3);
        if ((text = malloc(*len + 1))) {
            memcpy(text, sqlite3_column_blob(q, 3), *len);
            text[*len] = '\0';
        }
    }
    sqlite3_finalize(q);
    return text;
}

/* --- writing behind --- */

/* Queues a change whose `n` fields are copied after it: one malloc and
 * one uncontended lock; the writer is woken only if it sleeps. */
static void enqueue(state_t *st, op_kind_t kind, int64_t number, unsigned blob, int n,
                    const void *const ptr[], const size_t len[])
{
    if (!st)
        return;
    size_t total = sizeof(op_t);
    for (int i = 0; i < n; i++)
        total += len[i];
    op_t *op = malloc(total);
    if (op) {
        memset(op, 0, sizeof *op);
        op->kind = kind;
        op->number = number;
        op->blob = blob;
        op->size = total;
        char *at = (char *)(op + 1);
        for (int i = 0; i < n; i++) {
            if (!ptr[i])
                continue;
            memcpy(at, ptr[i], len[i]);
            op->ptr[i] = at;
            op->len[i] = len[i];
            at += len[i];
        }
    }
    pthread_mutex_lock(&st->lock);
    if (!op || st->counts.queued >= QUEUE_MAX || st->queued_bytes + total > QUEUE_MAX_BYTES) {
        static log_ratelimit_t limit;
        st->counts.dropped++;
        pthread_mutex_unlock(&st->lock);
        log_limited(&limit, 6, LOG_LEVEL_ERROR, "state: a change was not kept (%s)",
                    op ? "the writer is behind" : "out of memory");
        free(op);
        return;
    }
    if (st->tail)
        st->tail->next = op;
    else
        st->head = op;
    st->tail = op;
    st->counts.queued++;
    st->queued_bytes += total;
    if (!st->busy)
        pthread_cond_signal(&st->wake);
    pthread_mutex_unlock(&st->lock);
}

#define TEXT(s) (s), strlen(s)

void state_put_registration(state_t *st, const state_registration_t *r)
{
    char at[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tm);
    const void *ptr[] = {r->identity, r->name, r->key, r->delimiter ? "1" : "0", at};
    const size_t len[] = {r->identity_len, strlen(r->name), strlen(r->key), 1, strlen(at)};
    enqueue(st, OP_REG_PUT, 0, 1u << 0, 5, ptr, len);
}

void state_del_registration(state_t *st, const uint8_t *identity, size_t identity_len,
                            const char *name)
{
    const void *ptr[] = {identity, name};
    const size_t len[] = {identity_len, strlen(name)};
    enqueue(st, OP_REG_DEL, 0, 1u << 0, 2, ptr, len);
}

void state_put_letter(state_t *st, const state_letter_t *l)
{
    const void *ptr[] = {l->at, l->code, l->sender, l->msg_id, l->src, l->dst, l->action, l->bytes};
    const size_t len[] = {strlen(l->at), strlen(l->code), l->sender_len, strlen(l->msg_id),
                          strlen(l->src), strlen(l->dst), strlen(l->action), l->bytes ? l->len : 0};
    /* the sender may be the empty identity: bound as an empty blob, not NULL */
    const void *sender = l->sender_len ? (const void *)l->sender : "";
    const void *fixed[OP_FIELDS];
    memcpy(fixed, ptr, sizeof ptr);
    fixed[2] = sender;
    enqueue(st, OP_LETTER_PUT, (int64_t)l->id, 1u << 2 | 1u << 7, 8, fixed, len);
}

void state_del_letter(state_t *st, uint64_t id)
{
    enqueue(st, OP_LETTER_DEL, (int64_t)id, 0, 0, NULL, NULL);
}

void state_put_policy(state_t *st, const char *path, const char *text, size_t len,
                      const char *sha256, const char *at)
{
    const void *ptr[] = {path, sha256, at, text};
    const size_t lens[] = {strlen(path), strlen(sha256), strlen(at), len};
    enqueue(st, OP_POLICY_PUT, 0, 1u << 3, 4, ptr, lens);
}

/* Runs one change in the open transaction. */
static int apply_op(state_t *st, const op_t *op)
{
    sqlite3_stmt *q = st->stmt[op->kind];
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    for (int i = 0; i < OP_FIELDS; i++) {
        if (!op->ptr[i])
            continue;
        if (op->blob & (1u << i))
            sqlite3_bind_blob(q, i + 1, op->ptr[i], (int)op->len[i], SQLITE_STATIC);
        else
            sqlite3_bind_text(q, i + 1, op->ptr[i], (int)op->len[i], SQLITE_STATIC);
    }
    if (op->kind == OP_LETTER_PUT || op->kind == OP_LETTER_DEL)
        sqlite3_bind_int64(q, 9, op->number);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void *writer_main(void *arg)
{
    state_t *st = arg;
    static log_ratelimit_t failures;
    pthread_mutex_lock(&st->lock);
    for (;;) {
        while (!st->head && !st->stop)
            pthread_cond_wait(&st->wake, &st->lock);
        if (!st->head && st->stop)
            break;
        op_t *batch = st->head;
        st->head = st->tail = NULL;
        st->busy = true;
        pthread_mutex_unlock(&st->lock);

        uint64_t n = 0, failed = 0;
        size_t bytes = 0;
        bool in_tx = exec(st->db, "BEGIN") == 0;
        for (op_t *op = batch; op; bytes += op->size, op = op->next, n++)
            if (apply_op(st, op) < 0) {
                failed++;
                log_limited(&failures, 6, LOG_LEVEL_ERROR, "state %s: a change failed: %s",
                            st->path, sqlite3_errmsg(st->db));
            }
        if (in_tx && exec(st->db, "COMMIT") < 0) {
            log_limited(&failures, 6, LOG_LEVEL_ERROR, "state %s: commit failed: %s", st->path,
                        sqlite3_errmsg(st->db));
            exec(st->db, "ROLLBACK");
            failed = n;
        }
        while (batch) {
            op_t *next = batch->next;
            free(batch);
            batch = next;
        }
        pthread_mutex_lock(&st->lock);
        st->busy = false;
        st->counts.queued -= n;
        st->queued_bytes -= bytes;
        st->counts.written += n - failed;
        st->counts.failed += failed;
        st->counts.commits++;
        if (!st->head)
            pthread_cond_broadcast(&st->idle);
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

bool state_sync(state_t *st, unsigned timeout_ms)
{
    if (!st || !st->writer_started)
        return !st || !st->head;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&st->lock);
    while ((st->head || st->busy) &&
           pthread_cond_timedwait(&st->idle, &st->lock, &until) != ETIMEDOUT) {
    }
    bool done = !st->head && !st->busy;
    pthread_mutex_unlock(&st->lock);
    return done;
}

state_counts_t state_counts(state_t *st)
{
    pthread_mutex_lock(&st->lock);
    state_counts_t c = st->counts;
    pthread_mutex_unlock(&st->lock);
    return c;
}
