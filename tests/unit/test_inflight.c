/* inflight: lookup by msg_id, deadline order, per-peer lists, limit,
 * per-peer shares, and a keyed hash that ids chosen to collide under
 * uthash's own hash do not defeat. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "inflight.h"

static envelope_t request(const char *text)
{
    envelope_t env;
    const char *why;
    envelope_parse(&env, text, strlen(text), &why);
    return env;
}

/* A registry with a client and a service peer, and a table of `limit`. */
typedef struct {
    registry_t *reg;
    peer_t *client, *svc;
    inflight_table_t *t;
} fixture_t;

static fixture_t fixture_shared(size_t limit, size_t per_requester, size_t per_handler)
{
    fixture_t f = {.reg = registry_new()};
    f.client = registry_add_peer(f.reg, "c", 1, PEER_REMOTE, -1);
    f.svc = registry_add_peer(f.reg, "s", 1, PEER_REMOTE, -1);
    f.t = inflight_table_new(limit, per_requester, per_handler);
    return f;
}

/* No share smaller than the table: one peer may use all of it. */
static fixture_t fixture(size_t limit)
{
    return fixture_shared(limit, limit, limit);
}

/* The table first: freeing its records unlinks them from the peers. */
static void fixture_free(fixture_t *f)
{
    inflight_table_free(&f->t);
    registry_free(&f->reg);
}

/* inflight_add with the hash of the envelope's msg_id, as the router does */
static inflight_t *add(inflight_table_t *t, const envelope_t *env, peer_t *requester,
                       peer_t *handler, uint64_t deadline_ms)
{
    const env_value_t *id = &env->f[EF_MSG_ID];
    inflight_t *rec = NULL;
    inflight_result_t r = inflight_add(t, env, inflight_hash(id->ptr, id->len), requester,
                                       handler, deadline_ms, &rec);
    CHECK((r == INFLIGHT_ADDED) == (rec != NULL));
    return rec;
}

/* The same, for the reason when it is refused. */
static inflight_result_t add_result(inflight_table_t *t, const envelope_t *env,
                                    peer_t *requester, peer_t *handler)
{
    const env_value_t *id = &env->f[EF_MSG_ID];
    inflight_t *rec = NULL;
    return inflight_add(t, env, inflight_hash(id->ptr, id->len), requester, handler, 10, &rec);
}

static void finds_and_orders_by_deadline(void)
{
    fixture_t f = fixture(100);
    peer_t *client = f.client, *svc = f.svc;
    inflight_table_t *t = f.t;
    char texts[5][200];
    uint64_t deadlines[5] = {500, 100, 400, 200, 300};
    for (int i = 0; i < 5; i++) {
        snprintf(texts[i], sizeof texts[i],
                 "{\"msg_id\":\"m%d\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\",\"action\":\"a\"}", i);
        envelope_t env = request(texts[i]);
        CHECK(add(t, &env, client, svc, deadlines[i]) != NULL);
    }
    CHECK_EQ_INT(inflight_count(t), 5);
    CHECK_EQ_INT(svc->handling_count, 5);
    inflight_t *m2 = inflight_find(t, "m2", 2);
    CHECK(m2 && strcmp(m2->src, "c") == 0 && strcmp(m2->action, "a") == 0);
    inflight_remove(t, &m2);
    CHECK(inflight_find(t, "m2", 2) == NULL);
    CHECK_EQ_INT(inflight_next_deadline(t), 100);
    CHECK(inflight_expired(t, 99) == NULL);
    uint64_t expected[] = {100, 200, 300, 500};
    for (int i = 0; i < 4; i++) {
        inflight_t *rec = inflight_expired(t, 1000);
        CHECK(rec != NULL);
        if (!rec)
            break;
        CHECK_EQ_INT(rec->deadline_ms, expected[i]);
        inflight_remove(t, &rec);
    }
    CHECK_EQ_INT(inflight_count(t), 0);
    CHECK(client->waiting == NULL && svc->handling == NULL);
    CHECK_EQ_INT(svc->handling_count, 0);
    fixture_free(&f);
}

static void forgets_requesters_and_enforces_limit(void)
{
    fixture_t f = fixture(2);
    peer_t *client = f.client, *svc = f.svc;
    inflight_table_t *t = f.t;
    envelope_t e1 = request("{\"msg_id\":\"a\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\",\"action\":\"x\"}");
    envelope_t e2 = request("{\"msg_id\":\"b\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\",\"action\":\"x\"}");
    envelope_t e3 = request("{\"msg_id\":\"c\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\",\"action\":\"x\"}");
    CHECK(add(t, &e1, client, svc, 10) != NULL);
    CHECK(add(t, &e2, client, svc, 10) != NULL);
    CHECK_EQ_INT(add_result(t, &e3, client, svc), INFLIGHT_TABLE_FULL);
    while (client->waiting)
        inflight_forget_requester(client->waiting);
    inflight_t *rec = inflight_find(t, "a", 1);
    CHECK(rec && rec->requester == NULL);
    inflight_table_free(&f.t);
    CHECK(svc->handling == NULL);
    fixture_free(&f);
}

/* Many records with scattered deadlines, removed in a scattered order:
 * what is left always comes out earliest first, and each is still found. */
static void keeps_deadline_order_under_removal(void)
{
    enum { N = 600 };
    fixture_t f = fixture(N);
    peer_t *client = f.client, *svc = f.svc;
    inflight_table_t *t = f.t;
    static char texts[N][120];
    bool removed[N] = {false};
    for (int i = 0; i < N; i++) {
        snprintf(texts[i], sizeof texts[i],
                 "{\"msg_id\":\"id-%d\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\",\"action\":\"a\"}", i);
        envelope_t env = request(texts[i]);
        CHECK(add(t, &env, client, svc, (uint64_t)(i * 7919 % 1000)) != NULL);
    }
    int removed_count = 0;
    for (int i = 0; i < N; i += 3) {        /* a third, from all over the heap */
        char id[16];
        snprintf(id, sizeof id, "id-%d", (i * 37) % N);
        inflight_t *rec = inflight_find(t, id, strlen(id));
        CHECK(rec != NULL);
        if (rec) {
            removed[(i * 37) % N] = true;
            removed_count++;
            inflight_remove(t, &rec);
        }
    }
    CHECK_EQ_INT(removed_count, N / 3);
    CHECK_EQ_INT(inflight_count(t), N - N / 3);
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "id-%d", i);
        CHECK((inflight_find(t, id, strlen(id)) == NULL) == removed[i]);
    }
    uint64_t last = 0;
    size_t left = inflight_count(t);
    for (size_t k = 0; k < left; k++) {
        inflight_t *rec = inflight_first(t);
        CHECK(rec != NULL && rec->deadline_ms >= last);
        if (!rec)
            break;
        CHECK_EQ_INT(inflight_next_deadline(t), rec->deadline_ms);
        last = rec->deadline_ms;
        inflight_remove(t, &rec);
    }
    CHECK(inflight_first(t) == NULL);
    CHECK_EQ_INT(inflight_next_deadline(t), UINT64_MAX);
    fixture_free(&f);
}

/* A record is refused, not stored under a key its hash does not match,
 * when the envelope's msg_id is not one the table can hold. */
static void refuses_an_unchecked_msg_id(void)
{
    fixture_t f = fixture(10);
    peer_t *client = f.client, *svc = f.svc;
    inflight_table_t *t = f.t;
    envelope_t env = request("{\"msg_id\":\"a\\u0062\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\",\"action\":\"x\"}");
    CHECK_EQ_INT(add_result(t, &env, client, svc), INFLIGHT_NO_MEMORY); /* escaped: not copied */
    CHECK_EQ_INT(inflight_count(t), 0);
    CHECK(client->waiting == NULL && svc->handling == NULL);
    envelope_t ok = request("{\"msg_id\":\"b\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\",\"action\":\"x\"}");
    CHECK(add(t, &ok, client, svc, 10) != NULL);       /* the spare is reused */
    CHECK(inflight_find(t, "b", 1) != NULL);
    fixture_free(&f);
}

/* A requester, or a handler, that holds its share is refused with the
 * reason; others still get records; the counts follow removals and
 * forgotten requesters. */
static void gives_each_peer_a_share(void)
{
    fixture_t f = fixture_shared(10, 3, 4);
    inflight_table_t *t = f.t;
    peer_t *other = registry_add_peer(f.reg, "o", 1, PEER_REMOTE, -1);
    peer_t *svc2 = registry_add_peer(f.reg, "s2", 2, PEER_REMOTE, -1);
    static char texts[12][120];
    envelope_t env[12];
    for (int i = 0; i < 12; i++) {
        snprintf(texts[i], sizeof texts[i],
                 "{\"msg_id\":\"share-%d\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\"}", i);
        env[i] = request(texts[i]);
    }
    for (int i = 0; i < 3; i++)
        CHECK(add(t, &env[i], f.client, f.svc, 10) != NULL);
    CHECK_EQ_INT(f.client->waiting_count, 3);
    CHECK_EQ_INT(add_result(t, &env[3], f.client, svc2), INFLIGHT_REQUESTER_SHARE);
    CHECK(add(t, &env[3], other, f.svc, 10) != NULL);          /* s now holds 4 */
    CHECK_EQ_INT(add_result(t, &env[4], other, f.svc), INFLIGHT_HANDLER_SHARE);
    CHECK(add(t, &env[4], other, svc2, 10) != NULL);           /* another instance may */
    CHECK_EQ_INT(inflight_count(t), 5);
    CHECK_EQ_INT(f.svc->handling_count, 4);
    /* an answer frees one of the requester's share */
    inflight_t *rec = inflight_find(t, "share-0", 7);
    inflight_remove(t, &rec);
    CHECK_EQ_INT(f.client->waiting_count, 2);
    CHECK(add(t, &env[5], f.client, svc2, 10) != NULL);
    /* a requester that went away no longer counts */
    while (f.client->waiting)
        inflight_forget_requester(f.client->waiting);
    CHECK_EQ_INT(f.client->waiting_count, 0);
    CHECK(add(t, &env[6], NULL, f.svc, 10) != NULL);           /* s is back to 4 */
    CHECK_EQ_INT(add_result(t, &env[7], NULL, f.svc), INFLIGHT_HANDLER_SHARE);
    CHECK(add(t, &env[7], NULL, svc2, 10) != NULL);
    CHECK_EQ_INT(other->waiting_count, 2);
    fixture_free(&f);

    /* the default share: a tenth, at least 4096, never more than the table */
    CHECK_EQ_INT(inflight_default_share(100000), 10000);
    CHECK_EQ_INT(inflight_default_share(20000), 4096);
    CHECK_EQ_INT(inflight_default_share(1000), 1000);
    inflight_table_t *d = inflight_table_new(100000, 0, 0);
    CHECK_EQ_INT(inflight_limits(d).per_requester, 10000);
    CHECK_EQ_INT(inflight_limits(d).per_handler, 10000);
    inflight_table_free(&d);
    d = inflight_table_new(50, 200, 7);
    CHECK_EQ_INT(inflight_limits(d).per_requester, 50);
    CHECK_EQ_INT(inflight_limits(d).per_handler, 7);
    inflight_table_free(&d);
}

/* uthash's own hash, as the unseeded table used it (HASH_JEN is still
 * defined by uthash.h; only HASH_FUNCTION is ours). */
static unsigned jenkins(const char *key, size_t len)
{
    unsigned hashv;
    HASH_JEN(key, len, hashv);
    return hashv;
}

/* Thousands of msg_ids whose unkeyed hashes agree in their low 12 bits
 * (found by search, as an attacker would): under the unkeyed hash they
 * share one bucket of any table of up to 4096 buckets, and uthash stops
 * expanding, so every lookup walks them all. Under the keyed hash they
 * spread like any ids: no chain is long and the table keeps expanding. */
static void spreads_ids_chosen_to_collide(void)
{
    enum { N = 3000 };
    fixture_t f = fixture(N);
    static char ids[N][24], texts[N][120];
    unsigned long long candidate = 0;
    for (int i = 0; i < N; i++) {
        do
            snprintf(ids[i], sizeof ids[i], "x%llx", candidate++);
        while ((jenkins(ids[i], strlen(ids[i])) & 0xfff) != 0);
        snprintf(texts[i], sizeof texts[i],
                 "{\"msg_id\":\"%s\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\"}", ids[i]);
        envelope_t env = request(texts[i]);
        CHECK(add(f.t, &env, f.client, f.svc, 10) != NULL);
    }
    const UT_hash_table *tbl = inflight_find(f.t, ids[0], strlen(ids[0]))->hh.tbl;
    unsigned longest = 0;
    for (unsigned b = 0; b < tbl->num_buckets; b++)
        if (tbl->buckets[b].count > longest)
            longest = tbl->buckets[b].count;
    CHECK(tbl->noexpand == 0);
    CHECK(tbl->num_buckets >= N / 10);
    CHECK(longest < 40);
    if (longest >= 40)
        fprintf(stderr, "longest chain %u of %d ids in %u buckets\n", longest, N, tbl->num_buckets);
    for (int i = 0; i < N; i += 97)
        CHECK(inflight_find(f.t, ids[i], strlen(ids[i])) != NULL);
    /* the keyed hash is the table's: inflight_hash keys what HASH_FIND finds */
    unsigned h;
    HASH_VALUE(ids[5], strlen(ids[5]), h);
    CHECK_EQ_INT(h, inflight_hash(ids[5], strlen(ids[5])));
    CHECK(h != jenkins(ids[5], strlen(ids[5])));
    /* and its key was drawn before main: not left all zero */
    static const unsigned char zero[sizeof keyed_hash_key];
    CHECK(memcmp(keyed_hash_key, zero, sizeof zero) != 0);
    fixture_free(&f);
}

int main(void)
{
    gives_each_peer_a_share();
    spreads_ids_chosen_to_collide();
    finds_and_orders_by_deadline();
    keeps_deadline_order_under_removal();
    refuses_an_unchecked_msg_id();
    forgets_requesters_and_enforces_limit();
    return check_done("inflight");
}
