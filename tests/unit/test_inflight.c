/* inflight: lookup by msg_id, deadline order, per-peer lists, limit. */
#include <stdio.h>
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

static fixture_t fixture(size_t limit)
{
    fixture_t f = {.reg = registry_new()};
    f.client = registry_add_peer(f.reg, "c", 1, PEER_REMOTE, -1);
    f.svc = registry_add_peer(f.reg, "s", 1, PEER_REMOTE, -1);
    f.t = inflight_table_new(limit);
    return f;
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
    return inflight_add(t, env, inflight_hash(id->ptr, id->len), requester, handler, deadline_ms);
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
    CHECK_EQ_INT(t->count, 5);
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
    CHECK_EQ_INT(t->count, 0);
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
    CHECK(add(t, &e3, client, svc, 10) == NULL);   /* full */
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
    CHECK_EQ_INT(t->count, N - N / 3);
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "id-%d", i);
        CHECK((inflight_find(t, id, strlen(id)) == NULL) == removed[i]);
    }
    uint64_t last = 0;
    size_t left = t->count;
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
    CHECK(add(t, &env, client, svc, 10) == NULL);      /* escaped: not copied */
    CHECK_EQ_INT(t->count, 0);
    CHECK(client->waiting == NULL && svc->handling == NULL);
    envelope_t ok = request("{\"msg_id\":\"b\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"s\",\"action\":\"x\"}");
    CHECK(add(t, &ok, client, svc, 10) != NULL);       /* the spare is reused */
    CHECK(inflight_find(t, "b", 1) != NULL);
    fixture_free(&f);
}

int main(void)
{
    finds_and_orders_by_deadline();
    keeps_deadline_order_under_removal();
    refuses_an_unchecked_msg_id();
    forgets_requesters_and_enforces_limit();
    return check_done("inflight");
}
