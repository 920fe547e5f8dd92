/* deadletter: the bounded dead-letter ring. See deadletter.h. */
#include "deadletter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utlist.h>

#include "reply.h"

struct deadletters {
    deadletter_t *slots;         /* `cap` letters, used or on `free_slots` */
    deadletter_t *free_slots;    /* linked by `newer` */
    deadletter_t *oldest, *newest;
    deadletter_sender_t *senders; /* by identity */
    size_t cap, count;
    size_t bytes, max_bytes;
    size_t share_count, share_bytes; /* one sender's most letters and bytes */
    uint64_t next_id, dropped;   /* dropped: evicted to stay within bounds */
    const deadletters_keeper_t *keeper; /* where letters are kept across restarts, or NULL */
};

deadletters_t *deadletters_new(size_t max_count, size_t max_bytes, size_t share)
{
    deadletters_t *dl = calloc(1, sizeof *dl);
    if (!dl)
        return NULL;
    dl->cap = max_count ? max_count : 1;
    dl->slots = calloc(dl->cap, sizeof *dl->slots);
    if (!dl->slots) {
        free(dl);
        return NULL;
    }
    for (size_t i = dl->cap; i-- > 0;) {
        dl->slots[i].newer = dl->free_slots;
        dl->free_slots = &dl->slots[i];
    }
    if (share == 0)
        share = 1;
    dl->max_bytes = max_bytes;
    dl->share_count = dl->cap / share ? dl->cap / share : 1;
    dl->share_bytes = max_bytes / share;
    dl->next_id = 1;
    return dl;
}

static void drop(deadletters_t *dl, deadletter_t *d);

void deadletters_free(deadletters_t **self_p)
{
    deadletters_t *dl = *self_p;
    if (!dl)
        return;
    dl->keeper = NULL;          /* letters freed here stay kept */
    while (dl->oldest)
        drop(dl, dl->oldest);
    free(dl->slots);
    free(dl);
    *self_p = NULL;
}

static deadletter_sender_t *sender_find(const deadletters_t *dl, const uint8_t *id, size_t len)
{
    deadletter_sender_t *s = NULL;
    HASH_FIND(hh, dl->senders, id, len, s);
    return s;
}

/* Forgets a letter (its bytes, its place in both lists) and frees its
 * slot; a sender left with no letters is forgotten too. */
static void drop(deadletters_t *dl, deadletter_t *d)
{
    deadletter_sender_t *s = d->sender;
    if (s) {
        DL_DELETE2(s->oldest, d, sender_older, sender_newer);
        s->count--;
        s->bytes -= d->len;
        if (s->count == 0) {
            HASH_DEL(dl->senders, s);
            free(s);
        }
    }
    /* the global list: oldest first, linked by `newer` (utlist's next) */
    DL_DELETE2(dl->oldest, d, older, newer);
    dl->newest = dl->oldest ? dl->oldest->older : NULL;  /* utlist keeps the tail in head->prev */
    dl->bytes -= d->len;
    dl->count--;
    dl->dropped++;
    if (dl->keeper)
        dl->keeper->del(dl->keeper->ctx, d->id);
    free(d->bytes);
    memset(d, 0, sizeof *d);
    d->newer = dl->free_slots;
    dl->free_slots = d;
}

static void copy_text(char *out, size_t cap, const char *text)
{
    snprintf(out, cap, "%s", text ? text : "");
}

/* The most bytes one letter keeps: its sender's share, within the ring's. */
static size_t keep_limit(const deadletters_t *dl)
{
    return dl->share_bytes < dl->max_bytes ? dl->share_bytes : dl->max_bytes;
}

/* Makes room for a letter of `len` bytes from sender `id` and takes a
 * free slot for it (cleared, its sender set). NULL if out of memory. */
static deadletter_t *take_slot(deadletters_t *dl, const uint8_t *id, size_t id_len, size_t len)
{
    /* the sender's own oldest letters first, while it is over its share */
    deadletter_sender_t *s;
    while ((s = sender_find(dl, id, id_len)) &&
           (s->count >= dl->share_count || s->bytes + len > dl->share_bytes))
        drop(dl, s->oldest);
    /* then everyone's oldest, while the ring is over its bounds */
    while (dl->oldest && (dl->count == dl->cap || dl->bytes + len > dl->max_bytes))
        drop(dl, dl->oldest);
    if (!(s = sender_find(dl, id, id_len))) {
        if (!(s = calloc(1, sizeof *s))) {
            dl->dropped++;      /* out of memory: the letter is not kept */
            return NULL;
        }
        memcpy(s->id, id, id_len);
        s->id_len = (uint8_t)id_len;
        HASH_ADD(hh, dl->senders, id, id_len, s);
    }
    deadletter_t *d = dl->free_slots;
    dl->free_slots = d->newer;
    memset(d, 0, sizeof *d);
    memcpy(d->from, id, id_len);
    d->from_len = (uint8_t)id_len;
    d->sender = s;
    return d;
}

/* Links a filled slot in as the newest letter. */
static void link_letter(deadletters_t *dl, deadletter_t *d)
{
    deadletter_sender_t *s = d->sender;
    DL_APPEND2(s->oldest, d, sender_older, sender_newer);
    s->count++;
    s->bytes += d->len;
    DL_APPEND2(dl->oldest, d, older, newer);
    dl->newest = d;
    dl->bytes += d->len;
    dl->count++;
}

void deadletters_add(deadletters_t *dl, bus_err_t code, const peer_t *from,
                     const envelope_t *env, const char *msg_id, const char *src,
                     const char *dst, const char *action)
{
    const uint8_t *id = from ? from->id : (const uint8_t *)"";
    size_t id_len = from ? from->id_len : 0;
    size_t len = env && env->len <= keep_limit(dl) ? env->len : 0;
    deadletter_t *d = take_slot(dl, id, id_len, len);
    if (!d)
        return;
    d->id = dl->next_id++;
    d->code = code;
    reply_timestamp(d->at);
    if (env) {
        reply_copy_plain(d->msg_id, sizeof d->msg_id, &env->f[EF_MSG_ID]);
        reply_copy_plain(d->src, sizeof d->src, &env->f[EF_SRC]);
        reply_copy_plain(d->dst, sizeof d->dst, &env->f[EF_DST]);
        reply_copy_plain(d->action, sizeof d->action, &env->f[EF_ACTION]);
        if (len && (d->bytes = malloc(len))) {
            memcpy(d->bytes, env->buf, len);
            d->len = len;
        }
    }
    if (msg_id)
        copy_text(d->msg_id, sizeof d->msg_id, msg_id);
    if (src)
        copy_text(d->src, sizeof d->src, src);
    if (dst)
        copy_text(d->dst, sizeof d->dst, dst);
    if (action)
        copy_text(d->action, sizeof d->action, action);
    link_letter(dl, d);
    if (dl->keeper)
        dl->keeper->put(dl->keeper->ctx, d);
}

void deadletters_set_keeper(deadletters_t *dl, const deadletters_keeper_t *keeper)
{
    dl->keeper = keeper;
}

static bus_err_t code_named(const char *name)
{
    for (int c = 1; c < ERR__COUNT; c++)
        if (strcmp(bus_err_name((bus_err_t)c), name) == 0)
            return (bus_err_t)c;
    return ERR_INTERNAL;
}

void deadletters_restore(deadletters_t *dl, const state_letter_t *l)
{
    size_t id_len = l->sender_len <= PEER_ID_MAX ? l->sender_len : 0;
    size_t len = l->bytes && l->len <= keep_limit(dl) ? l->len : 0;
    deadletter_t *d = take_slot(dl, l->sender ? l->sender : (const uint8_t *)"", id_len, len);
    if (!d)
        return;
    d->id = l->id;
    if (l->id >= dl->next_id)
        dl->next_id = l->id + 1;
    d->code = code_named(l->code);
    copy_text(d->at, sizeof d->at, l->at);
    copy_text(d->msg_id, sizeof d->msg_id, l->msg_id);
    copy_text(d->src, sizeof d->src, l->src);
    copy_text(d->dst, sizeof d->dst, l->dst);
    copy_text(d->action, sizeof d->action, l->action);
    if (len && (d->bytes = malloc(len))) {
        memcpy(d->bytes, l->bytes, len);
        d->len = len;
    }
    link_letter(dl, d);
}

static void add_or_null(cJSON *obj, const char *key, const char *value)
{
    if (*value)
        cJSON_AddStringToObject(obj, key, value);
    else
        cJSON_AddNullToObject(obj, key);
}

cJSON *deadletters_list(const deadletters_t *dl, size_t limit)
{
    cJSON *list = cJSON_CreateArray();
    size_t n = 0;
    for (const deadletter_t *d = dl->newest; d && n < limit; d = d == dl->oldest ? NULL : d->older, n++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddNumberToObject(item, "id", (double)d->id);
        cJSON_AddStringToObject(item, "at", d->at);
        cJSON_AddStringToObject(item, "code", bus_err_name(d->code));
        add_or_null(item, "msg_id", d->msg_id);
        add_or_null(item, "src", d->src);
        add_or_null(item, "dst", d->dst);
        add_or_null(item, "action", d->action);
        cJSON_AddNumberToObject(item, "bytes", (double)d->len);
        cJSON_AddBoolToObject(item, "replayable", d->bytes != NULL);
        cJSON_AddItemToArray(list, item);
    }
    return list;
}

const deadletter_t *deadletters_find(const deadletters_t *dl, uint64_t id)
{
    /* ids grow with age: stop at the first older than the one asked */
    for (const deadletter_t *d = dl->newest; d && d->id >= id;
         d = d == dl->oldest ? NULL : d->older)
        if (d->id == id)
            return d;
    return NULL;
}

size_t deadletters_count(const deadletters_t *dl)
{
    return dl->count;
}

uint64_t deadletters_evicted(const deadletters_t *dl)
{
    return dl->dropped;
}

size_t deadletters_bytes(const deadletters_t *dl)
{
    return dl->bytes;
}

size_t deadletters_sender_count(const deadletters_t *dl)
{
    return HASH_COUNT(dl->senders);
}
