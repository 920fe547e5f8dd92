/* topics: the subscription trie, its result cache and delivery. See
 * topics.h. */
#include "topics.h"

#include <stdlib.h>
#include <string.h>

#include "keyed_hash.h"       /* every table keyed: topics come from peers */

#include "names.h"

typedef struct node node_t;
typedef struct sub sub_t;
typedef struct owner owner_t;
typedef struct group group_t;

/* A list of subscriptions at one place in the trie. */
typedef struct {
    sub_t *head;
    size_t count;
} sub_list_t;

struct node {
    node_t *parent;
    char *token;                 /* its token in the parent ("*" for the star child) */
    size_t token_len;
    node_t *children;            /* literal tokens, by token */
    node_t *star;                /* the "*" child */
    sub_list_t here;             /* patterns that end at this node */
    sub_list_t tail;             /* patterns "<this node's path>.>" */
    UT_hash_handle hh;           /* in the parent's children */
};

struct group {
    char name[TOPIC_GROUP_MAX_LEN + 1];
    uint64_t next;               /* round-robin cursor */
    size_t refs;                 /* subscriptions in it */
    UT_hash_handle hh;
};

struct sub {
    owner_t *owner;
    group_t *group;              /* NULL: a plain subscription */
    node_t *node;
    bool is_tail;                /* in node->tail, not node->here */
    char pattern[TOPIC_MAX_LEN + 1];
    size_t len;
    sub_t *prev, *next;          /* in its node's list */
    sub_t *owner_next;           /* in its owner's list */
};

struct owner {
    void *key;
    sub_t *subs;
    size_t count;
    uint64_t mark;               /* the publish that last delivered to it */
    UT_hash_handle hh;
};

/* A cached result: the subscriptions a topic matched, plain ones first,
 * then group members ordered by group. */
typedef struct {
    char topic[TOPIC_MAX_LEN + 1];
    size_t len;
    sub_t **subs;
    size_t count, plain;
    UT_hash_handle hh;
} cached_t;

struct topics {
    topics_limits_t limits;
    node_t root;
    owner_t *owners;
    group_t *groups;
    cached_t *cache;
    size_t cache_count;
    size_t total;
    uint64_t mark;
    sub_t **scratch;             /* a match's subscriptions, before caching */
    size_t scratch_count, scratch_cap;
};

/* --- the trie --- */

static node_t *child_of(node_t *n, const char *tok, size_t len)
{
    if (len == 1 && tok[0] == '*')
        return n->star;
    node_t *c = NULL;
    HASH_FIND(hh, n->children, tok, len, c);
    return c;
}

static node_t *add_child(node_t *n, const char *tok, size_t len)
{
    node_t *c = calloc(1, sizeof *c);
    if (!c || !(c->token = malloc(len + 1))) {
        free(c);
        return NULL;
    }
    memcpy(c->token, tok, len);
    c->token[len] = '\0';
    c->token_len = len;
    c->parent = n;
    if (len == 1 && tok[0] == '*')
        n->star = c;
    else
        HASH_ADD_KEYPTR(hh, n->children, c->token, len, c);
    return c;
}

static bool node_empty(const node_t *n)
{
    return !n->children && !n->star && !n->here.head && !n->tail.head;
}

/* Frees `n` and its empty ancestors (never the root). */
static void prune(node_t *n)
{
    while (n->parent && node_empty(n)) {
        node_t *parent = n->parent;
        if (parent->star == n)
            parent->star = NULL;
        else
            HASH_DEL(parent->children, n);
        free(n->token);
        free(n);
        n = parent;
    }
}

/* The node a pattern's tokens (without a trailing ">") lead to, made if
 * `create`; *tail says whether the pattern ends in ">". */
static node_t *walk(topics_t *t, const char *p, size_t len, bool create, bool *tail)
{
    node_t *n = &t->root;
    *tail = false;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && p[i] != '.')
            continue;
        const char *tok = p + start;
        size_t tlen = i - start;
        start = i + 1;
        if (tlen == 1 && tok[0] == '>') {
            *tail = true;
            break;
        }
        node_t *c = child_of(n, tok, tlen);
        if (!c && create)
            c = add_child(n, tok, tlen);
        if (!c)
            return NULL;
        n = c;
    }
    return n;
}

/* --- owners and groups --- */

static owner_t *find_owner(const topics_t *t, const void *key)
{
    owner_t *o = NULL;
    HASH_FIND(hh, t->owners, &key, sizeof key, o);
    return o;
}

static group_t *find_group(topics_t *t, const char *name, bool create)
{
    group_t *g = NULL;
    size_t len = strlen(name);
    HASH_FIND(hh, t->groups, name, len, g);
    if (!g && create && (g = calloc(1, sizeof *g))) {
        memcpy(g->name, name, len);
        HASH_ADD(hh, t->groups, name[0], len, g);
    }
    return g;
}

static void group_release(topics_t *t, group_t *g)
{
    if (g && --g->refs == 0) {
        HASH_DEL(t->groups, g);
        free(g);
    }
}

/* --- the cache --- */

static void cache_clear(topics_t *t)
{
    cached_t *c, *tmp;
    HASH_ITER(hh, t->cache, c, tmp) {
        HASH_DEL(t->cache, c);
        free(c->subs);
        free(c);
    }
    t->cache_count = 0;
}

topics_t *topics_new(topics_limits_t limits)
{
    topics_t *t = calloc(1, sizeof *t);
    if (t)
        t->limits = limits;
    return t;
}

static void free_nodes(node_t *n)
{
    node_t *c, *tmp;
    HASH_ITER(hh, n->children, c, tmp) {
        HASH_DEL(n->children, c);
        free_nodes(c);
        free(c->token);
        free(c);
    }
    if (n->star) {
        free_nodes(n->star);
        free(n->star->token);
        free(n->star);
        n->star = NULL;
    }
}

void topics_free(topics_t **self_p)
{
    topics_t *t = *self_p;
    if (!t)
        return;
    owner_t *o, *tmp;
    HASH_ITER(hh, t->owners, o, tmp) {
        topics_remove_owner(t, o->key);
    }
    free_nodes(&t->root);
    cache_clear(t);
    free(t->scratch);
    free(t);
    *self_p = NULL;
}

/* --- subscribing --- */

static sub_t *find_sub(const owner_t *o, const char *pattern, size_t len, const group_t *g)
{
    for (sub_t *s = o ? o->subs : NULL; s; s = s->owner_next)
        if (s->group == g && s->len == len && memcmp(s->pattern, pattern, len) == 0)
            return s;
    return NULL;
}

static void list_add(sub_list_t *l, sub_t *s)
{
    s->prev = NULL;
    s->next = l->head;
    if (l->head)
        l->head->prev = s;
    l->head = s;
    l->count++;
}

static void list_remove(sub_list_t *l, sub_t *s)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        l->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    l->count--;
}

topics_result_t topics_subscribe(topics_t *t, void *owner, const char *pattern, size_t len,
                                 const char *group)
{
    if (len > TOPIC_MAX_LEN)
        return TOPICS_NO_MEMORY;
    owner_t *o = find_owner(t, owner);
    group_t *g = group && *group ? find_group(t, group, false) : NULL;
    if (g && find_sub(o, pattern, len, g))
        return TOPICS_ALREADY;
    if (!(group && *group) && find_sub(o, pattern, len, NULL))
        return TOPICS_ALREADY;
    if (o && o->count >= t->limits.max_per_owner)
        return TOPICS_OWNER_FULL;
    if (t->total >= t->limits.max_total)
        return TOPICS_FULL;
    if (!o) {
        if (!(o = calloc(1, sizeof *o)))
            return TOPICS_NO_MEMORY;
        o->key = owner;
        HASH_ADD(hh, t->owners, key, sizeof o->key, o);
    }
    if (group && *group && !(g = find_group(t, group, true)))
        return TOPICS_NO_MEMORY;
    bool tail;
    node_t *n = walk(t, pattern, len, true, &tail);
    sub_t *s = n ? calloc(1, sizeof *s) : NULL;
    if (!s) {
        if (n)
            prune(n);
        if (g && g->refs == 0) {
            g->refs = 1;
            group_release(t, g);
        }
        return TOPICS_NO_MEMORY;
    }
    s->owner = o;
    s->group = g;
    if (g)
        g->refs++;
    s->node = n;
    s->is_tail = tail;
    memcpy(s->pattern, pattern, len);
    s->len = len;
    list_add(tail ? &n->tail : &n->here, s);
    s->owner_next = o->subs;
    o->subs = s;
    o->count++;
    t->total++;
    cache_clear(t);
    return TOPICS_OK;
}

/* Unlinks `s` from its node and frees it (not from its owner's list). */
static void drop_sub(topics_t *t, sub_t *s)
{
    list_remove(s->is_tail ? &s->node->tail : &s->node->here, s);
    prune(s->node);
    group_release(t, s->group);
    t->total--;
    free(s);
}

static void release_owner_if_empty(topics_t *t, owner_t *o)
{
    if (o->count == 0) {
        HASH_DEL(t->owners, o);
        free(o);
    }
}

topics_result_t topics_unsubscribe(topics_t *t, void *owner, const char *pattern, size_t len,
                                   const char *group)
{
    owner_t *o = find_owner(t, owner);
    group_t *g = group && *group ? find_group(t, group, false) : NULL;
    if ((group && *group && !g) || !o)
        return TOPICS_NOT_FOUND;
    for (sub_t **p = &o->subs; *p; p = &(*p)->owner_next) {
        sub_t *s = *p;
        if (s->group != g || s->len != len || memcmp(s->pattern, pattern, len) != 0)
            continue;
        *p = s->owner_next;
        o->count--;
        drop_sub(t, s);
        release_owner_if_empty(t, o);
        cache_clear(t);
        return TOPICS_OK;
    }
    return TOPICS_NOT_FOUND;
}

size_t topics_remove_owner(topics_t *t, void *owner)
{
    owner_t *o = find_owner(t, owner);
    if (!o)
        return 0;
    size_t n = o->count;
    while (o->subs) {
        sub_t *s = o->subs;
        o->subs = s->owner_next;
        drop_sub(t, s);
    }
    o->count = 0;
    release_owner_if_empty(t, o);
    cache_clear(t);
    return n;
}

size_t topics_owner_count(const topics_t *t, const void *owner)
{
    const owner_t *o = find_owner(t, owner);
    return o ? o->count : 0;
}

size_t topics_count(const topics_t *t)
{
    return t->total;
}

void topics_each_of_owner(const topics_t *t, const void *owner,
                          void (*fn)(const char *pattern, const char *group, void *ctx),
                          void *ctx)
{
    const owner_t *o = find_owner(t, owner);
    for (const sub_t *s = o ? o->subs : NULL; s; s = s->owner_next)
        fn(s->pattern, s->group ? s->group->name : NULL, ctx);
}

/* --- matching --- */

static bool scratch_add_list(topics_t *t, const sub_list_t *l)
{
    if (t->scratch_count + l->count > t->scratch_cap) {
        size_t cap = t->scratch_cap ? t->scratch_cap : 16;
        while (cap < t->scratch_count + l->count)
            cap *= 2;
        sub_t **grown = realloc(t->scratch, cap * sizeof *grown);
        if (!grown)
            return false;
        t->scratch = grown;
        t->scratch_cap = cap;
    }
    for (sub_t *s = l->head; s; s = s->next)
        t->scratch[t->scratch_count++] = s;
    return true;
}

/* Collects the subscriptions under `n` that match tokens [i, count). */
static bool collect(topics_t *t, const node_t *n, const char *const *tok, const size_t *tlen,
                    size_t i, size_t count)
{
    if (i == count)
        return scratch_add_list(t, &n->here);
    if (n->tail.head && !scratch_add_list(t, &n->tail))
        return false;
    const node_t *c = NULL;
    HASH_FIND(hh, n->children, tok[i], tlen[i], c);
    if (c && !collect(t, c, tok, tlen, i + 1, count))
        return false;
    return !n->star || collect(t, n->star, tok, tlen, i + 1, count);
}

/* Plain subscriptions first, then group members grouped by group. */
static int by_group(const void *a, const void *b)
{
    const sub_t *x = *(sub_t *const *)a, *y = *(sub_t *const *)b;
    uintptr_t gx = (uintptr_t)x->group, gy = (uintptr_t)y->group;
    return gx < gy ? -1 : gx > gy;
}

/* The cached result for `topic`, made now if missing; NULL if memory ran
 * out (then the scratch holds an uncached, unsorted result). */
static cached_t *result_for(topics_t *t, const char *topic, size_t len, bool *ok)
{
    cached_t *c = NULL;
    HASH_FIND(hh, t->cache, topic, len, c);
    *ok = true;
    if (c)
        return c;
    const char *tok[TOPIC_MAX_TOKENS];
    size_t tlen[TOPIC_MAX_TOKENS], count = 0, start = 0;
    for (size_t i = 0; i <= len && count < TOPIC_MAX_TOKENS; i++) {
        if (i < len && topic[i] != '.')
            continue;
        tok[count] = topic + start;
        tlen[count++] = i - start;
        start = i + 1;
    }
    t->scratch_count = 0;
    if (!collect(t, &t->root, tok, tlen, 0, count)) {
        *ok = false;
        return NULL;
    }
    qsort(t->scratch, t->scratch_count, sizeof *t->scratch, by_group);
    if (t->cache_count >= t->limits.cache_entries)
        cache_clear(t);                 /* simple and bounded: start again */
    c = calloc(1, sizeof *c);
    if (c && t->scratch_count && !(c->subs = malloc(t->scratch_count * sizeof *c->subs))) {
        free(c);
        c = NULL;
    }
    if (!c)
        return NULL;                    /* the scratch serves this once */
    memcpy(c->topic, topic, len);
    c->len = len;
    c->count = t->scratch_count;
    if (c->count)
        memcpy(c->subs, t->scratch, c->count * sizeof *c->subs);
    while (c->plain < c->count && !c->subs[c->plain]->group)
        c->plain++;
    HASH_ADD(hh, t->cache, topic[0], len, c);
    t->cache_count++;
    return c;
}

size_t topics_publish(topics_t *t, const char *topic, size_t len, const void *skip,
                      void (*deliver)(void *owner, void *ctx), void *ctx)
{
    if (t->total == 0 || len > TOPIC_MAX_LEN)
        return 0;
    bool ok;
    cached_t *c = result_for(t, topic, len, &ok);
    if (!ok)
        return 0;
    sub_t **subs = c ? c->subs : t->scratch;
    size_t count = c ? c->count : t->scratch_count;
    uint64_t mark = ++t->mark;
    size_t delivered = 0;
    size_t i = 0;
    for (; i < count && !subs[i]->group; i++) {
        owner_t *o = subs[i]->owner;
        if (o->mark == mark || o->key == skip)
            continue;
        o->mark = mark;
        deliver(o->key, ctx);
        delivered++;
    }
    /* one member of each group: the runs of one group are adjacent */
    while (i < count) {
        size_t run = i;
        group_t *g = subs[i]->group;
        while (run < count && subs[run]->group == g)
            run++;
        size_t members = run - i;
        for (size_t tries = 0; tries < members; tries++) {
            owner_t *o = subs[i + (g->next++ % members)]->owner;
            if (o->key == skip)
                continue;
            if (o->mark != mark) {
                o->mark = mark;
                deliver(o->key, ctx);
                delivered++;
            }
            break;
        }
        i = run;
    }
    return delivered;
}
