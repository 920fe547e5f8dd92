/* inflight: requests in flight, by msg_id, by deadline and by peer. */
#include "inflight.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

/* A deadline heap entry: the deadline beside its record, so that ordering
 * the heap reads one array and not a record per comparison. */
typedef struct {
    uint64_t deadline_ms;
    inflight_t *rec;
} inflight_deadline_t;

struct inflight_table {
    inflight_t *by_id;
    inflight_deadline_t *heap;
    size_t count, cap;
    size_t limit;               /* most records at once */
    size_t per_requester;       /* most records one requester may have waiting */
    size_t per_handler;         /* most records handed to one handler at once */
    inflight_t *spare;          /* freed records kept for reuse */
    size_t spare_count;
};

size_t inflight_default_share(size_t limit)
{
    size_t share = limit / 10;
    size_t floor = limit < 4096 ? limit : 4096;
    return share > floor ? share : floor;
}

static size_t share_or_default(size_t share, size_t limit)
{
    if (share == 0)
        share = inflight_default_share(limit);
    return share < limit ? share : limit;
}

inflight_table_t *inflight_table_new(size_t limit, size_t per_requester, size_t per_handler)
{
    inflight_table_t *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->limit = limit;
    t->per_requester = share_or_default(per_requester, limit);
    t->per_handler = share_or_default(per_handler, limit);
    return t;
}

void inflight_set_limits(inflight_table_t *t, size_t limit, size_t per_requester,
                         size_t per_handler)
{
    t->limit = limit;
    t->per_requester = share_or_default(per_requester, limit);
    t->per_handler = share_or_default(per_handler, limit);
}

void inflight_table_free(inflight_table_t **self_p)
{
    inflight_table_t *t = *self_p;
    if (!t)
        return;
    while (t->count > 0) {
        inflight_t *rec = t->heap[0].rec;
        inflight_remove(t, &rec);
    }
    while (t->spare) {
        inflight_t *rec = t->spare;
        t->spare = rec->wait_next;
        free(rec);
    }
    free(t->heap);
    free(t);
    *self_p = NULL;
}

/* --- the deadline heap --- */

static void heap_swap(inflight_table_t *t, size_t a, size_t b)
{
    inflight_deadline_t tmp = t->heap[a];
    t->heap[a] = t->heap[b];
    t->heap[b] = tmp;
    t->heap[a].rec->heap_index = a;
    t->heap[b].rec->heap_index = b;
}

static void heap_up(inflight_table_t *t, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (t->heap[parent].deadline_ms <= t->heap[i].deadline_ms)
            break;
        heap_swap(t, i, parent);
        i = parent;
    }
}

static void heap_down(inflight_table_t *t, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, least = i;
        if (l < t->count && t->heap[l].deadline_ms < t->heap[least].deadline_ms)
            least = l;
        if (r < t->count && t->heap[r].deadline_ms < t->heap[least].deadline_ms)
            least = r;
        if (least == i)
            return;
        heap_swap(t, i, least);
        i = least;
    }
}

/* --- records --- */

unsigned inflight_hash(const char *msg_id, size_t len)
{
    unsigned hash;
    HASH_VALUE(msg_id, len, hash);
    return hash;
}

inflight_t *inflight_find_hashed(inflight_table_t *t, const char *msg_id, size_t len,
                                 unsigned hash)
{
    inflight_t *rec = NULL;
    HASH_FIND_BYHASHVALUE(hh, t->by_id, msg_id, len, hash, rec);
    return rec;
}

inflight_t *inflight_find(inflight_table_t *t, const char *msg_id, size_t len)
{
    return inflight_find_hashed(t, msg_id, len, inflight_hash(msg_id, len));
}

static void copy_field(char *dst, size_t cap, const env_value_t *v)
{
    if (env_is_plain_string(v) && v->len < cap) {
        memcpy(dst, v->ptr, v->len);
        dst[v->len] = '\0';
    } else {
        dst[0] = '\0';
    }
}

inflight_result_t inflight_add(inflight_table_t *t, const envelope_t *env, unsigned hash,
                               peer_t *requester, peer_t *handler, uint64_t deadline_ms,
                               inflight_t **rec_p)
{
    const env_value_t *id = &env->f[EF_MSG_ID];
    *rec_p = NULL;
    if (t->count >= t->limit)
        return INFLIGHT_TABLE_FULL;
    /* the shares: one requester, or one handler that never answers, can
     * hold only its part of the table, so the rest stays for the others */
    if (requester && requester->waiting_count >= t->per_requester &&
        requester->kind != PEER_BUS)   /* the bus stands for many; its shares are theirs */
        return INFLIGHT_REQUESTER_SHARE;
    if (handler->handling_count >= t->per_handler && handler->kind != PEER_BUS)
        return INFLIGHT_HANDLER_SHARE;
    if (!env_is_plain_string(id) || id->len == 0 || id->len > MSG_ID_MAX_LEN)
        return INFLIGHT_NO_MEMORY;  /* not a checked msg_id: copied, its key would not match `hash` */
    if (t->count == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        inflight_deadline_t *grown = realloc(t->heap, cap * sizeof *grown);
        if (!grown)
            return INFLIGHT_NO_MEMORY;
        t->heap = grown;
        t->cap = cap;
    }
    /* a record from the spares if there is one: one request each round
     * trip, and a fresh calloc of the record cost more than filling it */
    inflight_t *rec = t->spare;
    if (rec) {
        t->spare = rec->wait_next;
        t->spare_count--;
    } else if (!(rec = malloc(sizeof *rec)))
        return INFLIGHT_NO_MEMORY;
    memset(rec, 0, offsetof(inflight_t, msg_id));
    copy_field(rec->msg_id, sizeof rec->msg_id, id);
    copy_field(rec->src, sizeof rec->src, &env->f[EF_SRC]);
    copy_field(rec->dst, sizeof rec->dst, &env->f[EF_DST]);
    copy_field(rec->action, sizeof rec->action, &env->f[EF_ACTION]);
    rec->requester = requester;
    rec->handler = handler;
    rec->deadline_ms = deadline_ms;
    HASH_ADD_BYHASHVALUE(hh, t->by_id, msg_id[0], id->len, hash, rec);
    rec->heap_index = t->count;
    t->heap[t->count++] = (inflight_deadline_t){deadline_ms, rec};
    heap_up(t, rec->heap_index);
    if (requester) {
        DL_APPEND2(requester->waiting, rec, wait_prev, wait_next);
        requester->waiting_count++;
    }
    DL_APPEND2(handler->handling, rec, handle_prev, handle_next);
    handler->handling_count++;
    *rec_p = rec;
    return INFLIGHT_ADDED;
}

void inflight_forget_requester(inflight_t *rec)
{
    if (!rec->requester)
        return;
    DL_DELETE2(rec->requester->waiting, rec, wait_prev, wait_next);
    rec->requester->waiting_count--;
    rec->requester = NULL;
}

void inflight_remove(inflight_table_t *t, inflight_t **rec_p)
{
    inflight_t *rec = *rec_p;
    if (!rec)
        return;
    HASH_DEL(t->by_id, rec);
    size_t i = rec->heap_index;
    t->count--;
    if (i != t->count) {
        heap_swap(t, i, t->count);
        heap_down(t, i);
        heap_up(t, i);
    }
    inflight_forget_requester(rec);
    DL_DELETE2(rec->handler->handling, rec, handle_prev, handle_next);
    rec->handler->handling_count--;
    if (t->spare_count < INFLIGHT_SPARES_MAX) {
        rec->wait_next = t->spare;  /* kept for the next request */
        t->spare = rec;
        t->spare_count++;
    } else {
        free(rec);
    }
    *rec_p = NULL;
}

inflight_t *inflight_expired(inflight_table_t *t, uint64_t now_ms)
{
    if (t->count == 0 || t->heap[0].deadline_ms > now_ms)
        return NULL;
    return t->heap[0].rec;
}

inflight_t *inflight_first(const inflight_table_t *t)
{
    return t->count ? t->heap[0].rec : NULL;
}

uint64_t inflight_next_deadline(const inflight_table_t *t)
{
    return t->count ? t->heap[0].deadline_ms : UINT64_MAX;
}

size_t inflight_count(const inflight_table_t *t)
{
    return t->count;
}

inflight_limits_t inflight_limits(const inflight_table_t *t)
{
    return (inflight_limits_t){t->limit, t->per_requester, t->per_handler};
}
