/* broker_service: dst "broker" (protocol B1). See broker_service.h. */
#include "broker_service.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "reply.h"
#include "router.h"

static cJSON *ping(broker_t *b, peer_t *peer, const envelope_t *env)
{
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON *names = cJSON_AddArrayToObject(payload, "registered");
    for (int i = 0; i < peer->name_count; i++)
        cJSON_AddItemToArray(names, cJSON_CreateString(peer->names[i]));
    /* TP5: a client that holds more knows the broker forgot them (left
     * out at 0, so that a seed client's ping answer stays as it was) */
    size_t held = topics_owner_count(b->topics, peer);
    if (held)
        cJSON_AddNumberToObject(payload, "subscriptions", (double)held);
    return payload;
}

static cJSON *list_services(broker_t *b, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    cJSON *payload = cJSON_CreateObject();
    cJSON *list = cJSON_AddArrayToObject(payload, "services");
    registry_sort_services(b->registry);
    for (service_t *svc = b->registry->services; svc; svc = svc->hh.next) {
        cJSON *entry = cJSON_CreateObject();
        cJSON_AddStringToObject(entry, "name", svc->name);
        cJSON_AddNumberToObject(entry, "instances", svc->count);
        cJSON_AddItemToArray(list, entry);
    }
    return payload;
}

/* {"in": {"request": 3, ...}}: counters by message type, zeros left out. */
static void add_by_type(cJSON *parent, const char *key, const uint64_t counts[MT__COUNT])
{
    cJSON *obj = cJSON_AddObjectToObject(parent, key);
    for (int t = 0; t < MT__COUNT; t++)
        if (counts[t])
            cJSON_AddNumberToObject(obj, msg_type_name((msg_type_t)t), (double)counts[t]);
}

static cJSON *stats(broker_t *b, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    const stats_t *s = &b->stats;
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddNumberToObject(payload, "uptime_ms", (double)(clock_ms() - b->started_ms));
    cJSON_AddNumberToObject(payload, "peers", b->registry->peer_count);
    cJSON_AddNumberToObject(payload, "services", HASH_COUNT(b->registry->services));
    cJSON_AddNumberToObject(payload, "inflight", (double)b->inflight->count);
    add_by_type(payload, "in", s->in);
    add_by_type(payload, "out", s->out);
    add_by_type(payload, "errored", s->errored);
    cJSON *errors = cJSON_AddObjectToObject(payload, "errors");
    for (int c = 1; c < ERR__COUNT; c++)
        if (s->errors[c])
            cJSON_AddNumberToObject(errors, bus_err_name((bus_err_t)c), (double)s->errors[c]);
    cJSON *dropped = cJSON_AddObjectToObject(payload, "dropped");
    cJSON_AddNumberToObject(dropped, "late_or_unknown", (double)s->late_or_unknown);
    cJSON_AddNumberToObject(dropped, "not_yours", (double)s->not_yours);
    cJSON_AddNumberToObject(dropped, "requester_gone", (double)s->requester_gone);
    cJSON_AddNumberToObject(dropped, "broadcast_undelivered", (double)s->broadcast_undelivered);
    cJSON_AddNumberToObject(dropped, "topic_undelivered", (double)s->topic_undelivered);
    cJSON_AddNumberToObject(payload, "subscriptions", (double)topics_count(b->topics));
    cJSON_AddNumberToObject(payload, "topic_unmatched", (double)s->topic_unmatched);
    return payload;
}

/* reload_policy: the policy file again, now. A refused version comes back
 * as {"status": "error", "message": "file:line: ..."}; the old one runs on. */
static cJSON *reload_policy(broker_t *b, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    char err[512];
    cJSON *payload = cJSON_CreateObject();
    if (broker_reload_policy(b, err, sizeof err) < 0) {
        cJSON_AddStringToObject(payload, "status", "error");
        cJSON_AddStringToObject(payload, "message", err);
    } else {
        char hooks[128];
        policy_describe_hooks(b->policy, hooks, sizeof hooks);
        cJSON_AddStringToObject(payload, "status", "ok");
        cJSON_AddStringToObject(payload, "hooks", hooks);
    }
    return payload;
}

static cJSON *status_error(cJSON *payload, const char *message)
{
    cJSON_AddStringToObject(payload, "status", "error");
    cJSON_AddStringToObject(payload, "message", message);
    return payload;
}

/* The request's payload field `key` as a non-negative integer, or -1. */
static double payload_number(const envelope_t *env, const char *key)
{
    const env_value_t *p = &env->f[EF_PAYLOAD];
    if (p->kind != JSON_OBJECT)
        return -1;
    cJSON *obj = cJSON_ParseWithLength(p->ptr, p->len);
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, key);
    double n = cJSON_IsNumber(item) && item->valuedouble >= 0 ? item->valuedouble : -1;
    cJSON_Delete(obj);
    return n;
}

/* dead_letters {"limit": N}: the newest letters, newest first. */
static cJSON *dead_letters(broker_t *b, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    double limit = payload_number(env, "limit");
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON_AddNumberToObject(payload, "count", (double)b->dead->count);
    cJSON_AddNumberToObject(payload, "evicted", (double)b->dead->dropped);
    cJSON_AddItemToObject(payload, "dead_letters",
                          deadletters_list(b->dead, limit < 0 ? 100 : (size_t)limit));
    return payload;
}

/* replay {"id": N}: the letter's message again, as if its sender sent it
 * now, through the whole path; only while that connection is there. */
static cJSON *replay(broker_t *b, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    cJSON *payload = cJSON_CreateObject();
    double id = payload_number(env, "id");
    const deadletter_t *d = id < 0 ? NULL : deadletters_find(b->dead, (uint64_t)id);
    if (!d)
        return status_error(payload, "no dead letter has that id (see dead_letters)");
    if (!d->bytes)
        return status_error(payload, "only the envelope of that letter was kept: nothing to replay");
    peer_t *from = registry_find_peer(b->registry, d->from, d->from_len);
    if (!from)
        return status_error(payload, "the connection that sent it is gone");
    if (b->replaying)    /* a letter that replays a letter: never recurse */
        return status_error(payload, "a replay cannot start another replay");
    char *bytes = malloc(d->len);      /* the ring may change while it is routed */
    if (!bytes)
        return status_error(payload, "out of memory");
    memcpy(bytes, d->bytes, d->len);
    size_t len = d->len;
    b->replaying = true;
    router_inject(b, from, bytes, len);
    b->replaying = false;
    free(bytes);
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON_AddNumberToObject(payload, "replayed", id);
    return payload;
}

/* watch / unwatch: a copy of every event and broadcast, for operators'
 * tools (smartshop-ctl watch), until unwatch or disconnect. */
static cJSON *watch(broker_t *b, peer_t *peer, const envelope_t *env)
{
    (void)env;
    if (!peer->watching) {
        peer->watching = true;
        b->watchers++;
    }
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    return payload;
}

static cJSON *unwatch(broker_t *b, peer_t *peer, const envelope_t *env)
{
    (void)env;
    if (peer->watching) {
        peer->watching = false;
        b->watchers--;
    }
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    return payload;
}

/* --- subscribe / unsubscribe (docs/protocol.md TP4) --- */

/* The request's payload fields `topic` and `group` (copied, NUL-ended):
 * false with *why when they are not a pattern and an optional name. */
static bool read_subscription(const envelope_t *env, char topic[TOPIC_MAX_LEN + 1],
                              char group[NAME_MAX_LEN + 1], const char **why)
{
    const env_value_t *p = &env->f[EF_PAYLOAD];
    cJSON *obj = p->kind == JSON_OBJECT ? cJSON_ParseWithLength(p->ptr, p->len) : NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(obj, "topic");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(obj, "group");
    bool ok = false;
    group[0] = '\0';
    if (!cJSON_IsString(t)) {
        *why = "the payload needs \"topic\": a topic pattern such as \"order.*\"";
    } else if (!topic_is_valid(t->valuestring, strlen(t->valuestring), true, why)) {
        /* *why says what */
    } else if (g && !cJSON_IsNull(g) &&
               (!cJSON_IsString(g) || !name_is_valid(g->valuestring, strlen(g->valuestring)))) {
        *why = "group must be a name (letters, digits, . _ : -; at most 64)";
    } else {
        snprintf(topic, TOPIC_MAX_LEN + 1, "%s", t->valuestring);
        if (cJSON_IsString(g))
            snprintf(group, NAME_MAX_LEN + 1, "%s", g->valuestring);
        ok = true;
    }
    cJSON_Delete(obj);
    return ok;
}

static cJSON *subscription_answer(cJSON *payload, topics_result_t r, const char *topic,
                                  const char *group, size_t held)
{
    static const struct { const char *code, *message; } refused[] = {
        [TOPICS_NOT_FOUND] = {"not_subscribed", "this connection holds no such subscription"},
        [TOPICS_OWNER_FULL] = {"limit_exceeded",
                               "this connection holds as many subscriptions as it may "
                               "(--max-subscriptions-per-peer)"},
        [TOPICS_FULL] = {"limit_exceeded",
                         "the broker holds as many subscriptions as it may (--max-subscriptions)"},
        [TOPICS_NO_MEMORY] = {"internal", "out of memory"},
    };
    if (r != TOPICS_OK && r != TOPICS_ALREADY) {
        cJSON_AddStringToObject(payload, "code", refused[r].code);
        return status_error(payload, refused[r].message);
    }
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON_AddStringToObject(payload, "topic", topic);
    if (*group)
        cJSON_AddStringToObject(payload, "group", group);
    cJSON_AddNumberToObject(payload, "subscriptions", (double)held);
    return payload;
}

/* subscribe {"topic": P, "group": G?}: topic events matching P for this
 * connection until unsubscribe or disconnect (idempotent). */
static cJSON *subscribe(broker_t *b, peer_t *peer, const envelope_t *env)
{
    char topic[TOPIC_MAX_LEN + 1], group[NAME_MAX_LEN + 1];
    const char *why = NULL;
    cJSON *payload = cJSON_CreateObject();
    if (!read_subscription(env, topic, group, &why)) {
        cJSON_AddStringToObject(payload, "code", "bad_topic");
        return status_error(payload, why);
    }
    if (b->auth && peer->kind == PEER_REMOTE && !auth_may_subscribe(b->auth, peer->key, topic)) {
        cJSON_AddStringToObject(payload, "code", "denied");
        return status_error(payload, "your key may not subscribe to that pattern (allow list)");
    }
    topics_result_t r = topics_subscribe(b->topics, peer, topic, strlen(topic), group);
    return subscription_answer(payload, r, topic, group, topics_owner_count(b->topics, peer));
}

static cJSON *unsubscribe(broker_t *b, peer_t *peer, const envelope_t *env)
{
    char topic[TOPIC_MAX_LEN + 1], group[NAME_MAX_LEN + 1];
    const char *why = NULL;
    cJSON *payload = cJSON_CreateObject();
    if (!read_subscription(env, topic, group, &why)) {
        cJSON_AddStringToObject(payload, "code", "bad_topic");
        return status_error(payload, why);
    }
    topics_result_t r = topics_unsubscribe(b->topics, peer, topic, strlen(topic), group);
    return subscription_answer(payload, r, topic, group, topics_owner_count(b->topics, peer));
}

static void add_subscription(const char *pattern, const char *group, void *ctx)
{
    cJSON *entry = cJSON_CreateObject();
    cJSON_AddStringToObject(entry, "topic", pattern);
    if (group)
        cJSON_AddStringToObject(entry, "group", group);
    cJSON_AddItemToArray(ctx, entry);
}

/* subscriptions: what this connection holds. */
static cJSON *subscriptions(broker_t *b, peer_t *peer, const envelope_t *env)
{
    (void)env;
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON *list = cJSON_AddArrayToObject(payload, "subscriptions");
    topics_each_of_owner(b->topics, peer, add_subscription, list);
    return payload;
}

/* metrics: per service and action, requests and latency. */
static cJSON *metrics(broker_t *b, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    (void)env;
    return metrics_json(b->metrics);
}

typedef struct {
    const char *name;
    cJSON *(*run)(broker_t *b, peer_t *peer, const envelope_t *env);
    bool admin;                 /* with CURVE: only for keys marked @admin */
} action_t;

static const action_t actions[] = {
    {"ping", ping, false},
    {"list_services", list_services, false},
    {"stats", stats, false},
    {"metrics", metrics, false},
    {"unwatch", unwatch, false},
    {"subscribe", subscribe, false},
    {"unsubscribe", unsubscribe, false},
    {"subscriptions", subscriptions, false},
    /* these act on the bus or see others' traffic */
    {"reload_policy", reload_policy, true},
    {"dead_letters", dead_letters, true},
    {"replay", replay, true},
    {"watch", watch, true},
};

void broker_service_handle(broker_t *b, peer_t *peer, const envelope_t *env)
{
    const env_value_t *action = &env->f[EF_ACTION];
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        if (!env_equals(action, actions[i].name))
            continue;
        if (actions[i].admin && b->auth && peer->kind == PEER_REMOTE &&
            !auth_is_admin(b->auth, peer->key)) {
            router_send_error(b, peer, env, ERR_DENIED,
                              "this broker action needs a key marked @admin in the allow list");
            return;
        }
        char dst[NAME_MAX_LEN + 1], corr[MSG_ID_MAX_LEN + 1];
        reply_copy_plain(dst, sizeof dst, &env->f[EF_SRC]);
        reply_copy_plain(corr, sizeof corr, &env->f[EF_MSG_ID]);
        size_t len = 0;
        char *text = reply_response(dst, actions[i].name, corr, actions[i].run(b, peer, env), &len);
        if (!text) {
            router_send_error(b, peer, env, ERR_INTERNAL, "out of memory");
            return;
        }
        router_send_made(b, peer, text, len, MT_RESPONSE);
        reply_free(text);
        return;
    }
    router_send_error(b, peer, env, ERR_UNKNOWN_ACTION,
                      "the broker's actions are ping, list_services, stats, metrics, reload_policy, "
                      "dead_letters, replay, watch and unwatch");
}
