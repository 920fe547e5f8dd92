/* broker_service: dst "broker" (protocol B1). See broker_service.h. */
#include "broker_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "clock.h"
#include "deadletter.h"
#include "json_scan.h"
#include "metrics.h"
#include "policy.h"
#include "reply.h"
#include "state.h"
#include "topics.h"
#include "trace.h"

struct broker_service {
    router_t *router;
    broker_reload_t reload;     /* reload_policy */
    void *reload_ctx;
    bool replaying;             /* a dead letter is being re-injected (no replay inside) */
    broker_reload_config_t reload_config;
    void *reload_config_ctx;
    state_t *state;             /* for stats (not owned; NULL: none) */
};

void broker_service_set_config_reload(broker_service_t *bs, broker_reload_config_t fn, void *ctx)
{
    bs->reload_config = fn;
    bs->reload_config_ctx = ctx;
}

void broker_service_set_state(broker_service_t *bs, state_t *st)
{
    if (bs)
        bs->state = st;
}

/* Which version of the policy runs: {"file_sha256", "loaded_sha256",
 * "stale_since" (null while the file is what runs), "fallback"}. */
static void add_policy_versions(cJSON *payload, const policy_t *p)
{
    if (!p)
        return;
    cJSON *o = cJSON_AddObjectToObject(payload, "policy");
    cJSON_AddStringToObject(o, "path", policy_path(p));
    policy_version_t v = policy_version(p);
    const char *keys[] = {"file_sha256", "loaded_sha256", "stale_since"};
    const char *values[] = {v.file_sha256, v.loaded_sha256, v.stale_since};
    for (int i = 0; i < 3; i++) {
        if (values[i][0])
            cJSON_AddStringToObject(o, keys[i], values[i]);
        else
            cJSON_AddNullToObject(o, keys[i]);
    }
    cJSON_AddBoolToObject(o, "fallback", v.fallback);
    policy_counts_t counts = policy_counts(p);    /* the decision cache (docs/policies.md) */
    cJSON_AddNumberToObject(o, "cache_hits", (double)counts.cache_hits);
    cJSON_AddNumberToObject(o, "cache_misses", (double)counts.cache_misses);
}

broker_service_t *broker_service_new(router_t *router, broker_reload_t reload, void *reload_ctx)
{
    broker_service_t *bs = calloc(1, sizeof *bs);
    if (bs)
        *bs = (broker_service_t){.router = router, .reload = reload, .reload_ctx = reload_ctx};
    return bs;
}

void broker_service_free(broker_service_t **self_p)
{
    free(*self_p);
    *self_p = NULL;
}

static cJSON *status_error(cJSON *payload, const char *message);

static cJSON *ping(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON *names = cJSON_AddArrayToObject(payload, "registered");
    for (int i = 0; i < peer->name_count; i++)
        cJSON_AddItemToArray(names, cJSON_CreateString(peer->names[i]));
    /* TP5: a client that holds more knows the broker forgot them (left
     * out at 0, so that a seed client's ping answer stays as it was) */
    size_t held = topics_owner_count(router_topics(bs->router), peer);
    if (held)
        cJSON_AddNumberToObject(payload, "subscriptions", (double)held);
    add_policy_versions(payload, router_policy(bs->router));
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

static cJSON *stats(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    const stats_t *s = router_stats(bs->router);
    registry_t *reg = router_registry(bs->router);
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddNumberToObject(payload, "uptime_ms", (double)(clock_ms() - router_started_ms(bs->router)));
    cJSON_AddNumberToObject(payload, "peers", (double)registry_peer_count(reg));
    cJSON_AddNumberToObject(payload, "services", (double)registry_service_count(reg));
    cJSON_AddNumberToObject(payload, "inflight", (double)router_inflight_count(bs->router));
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
    cJSON_AddNumberToObject(payload, "subscriptions", (double)topics_count(router_topics(bs->router)));
    cJSON_AddNumberToObject(payload, "topic_unmatched", (double)s->topic_unmatched);
    /* requests by how they ended: ok, and every way of failing */
    metrics_add_totals_json(router_metrics(bs->router), payload);
    if (router_bus_active(bs->router))
        router_bus_describe(bs->router, cJSON_AddObjectToObject(payload, "bus"));
    add_policy_versions(payload, router_policy(bs->router));
    cJSON *state = cJSON_AddObjectToObject(payload, "state");
    if (bs->state) {
        state_counts_t c = state_counts(bs->state);
        cJSON_AddStringToObject(state, "path", state_path(bs->state));
        cJSON_AddStringToObject(state, "opened", state_origin(bs->state));
        cJSON_AddNumberToObject(state, "queued", (double)c.queued);
        cJSON_AddNumberToObject(state, "written", (double)c.written);
        cJSON_AddNumberToObject(state, "failed", (double)c.failed);
        cJSON_AddNumberToObject(state, "dropped", (double)c.dropped);
    } else {
        cJSON_AddNullToObject(state, "path");
    }
    cJSON_AddNumberToObject(state, "restored_waiting", (double)registry_restored_count(reg));
    return payload;
}

/* reload_config: the config file and flags again, as SIGHUP does:
 * {"status": "ok", "applied": [...], "needs_restart": [...]}. */
static void add_words(cJSON *obj, const char *key, const char *words)
{
    cJSON *list = cJSON_AddArrayToObject(obj, key);
    char copy[1024], *save = NULL;
    snprintf(copy, sizeof copy, "%s", words);
    for (char *w = strtok_r(copy, " ", &save); w; w = strtok_r(NULL, " ", &save))
        cJSON_AddItemToArray(list, cJSON_CreateString(w));
}

static cJSON *reload_config(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    char err[512], live[1024], fixed[1024];
    cJSON *payload = cJSON_CreateObject();
    if (!bs->reload_config)
        return status_error(payload, "this broker cannot reload its config");
    if (bs->reload_config(bs->reload_config_ctx, live, sizeof live, fixed, sizeof fixed, err,
                          sizeof err) < 0)
        return status_error(payload, err);
    cJSON_AddStringToObject(payload, "status", "ok");
    add_words(payload, "applied", live);
    add_words(payload, "needs_restart", fixed);
    return payload;
}

/* reload_policy: the policy file again, now. A refused version comes back
 * as {"status": "error", "message": "file:line: ..."}; the old one runs on. */
static cJSON *reload_policy(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    char err[512];
    cJSON *payload = cJSON_CreateObject();
    if (!bs->reload || bs->reload(bs->reload_ctx, err, sizeof err) < 0) {
        if (!bs->reload)
            snprintf(err, sizeof err, "this broker cannot reload its policy");
        cJSON_AddStringToObject(payload, "status", "error");
        cJSON_AddStringToObject(payload, "message", err);
    } else {
        char hooks[128];
        policy_describe_hooks(router_policy(bs->router), hooks, sizeof hooks);
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
static cJSON *dead_letters(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    double limit = payload_number(env, "limit");
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON_AddNumberToObject(payload, "count", (double)deadletters_count(router_dead(bs->router)));
    cJSON_AddNumberToObject(payload, "evicted", (double)deadletters_evicted(router_dead(bs->router)));
    cJSON_AddItemToObject(payload, "dead_letters",
                          deadletters_list(router_dead(bs->router), limit < 0 ? 100 : (size_t)limit));
    return payload;
}

/* dead_letter {"id": N}: one letter, with its message as it came (as
 * JSON: it was read), so that an operator sees it before a replay. */
static cJSON *dead_letter(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    cJSON *payload = cJSON_CreateObject();
    double id = payload_number(env, "id");
    const deadletter_t *d = id < 0 ? NULL : deadletters_find(router_dead(bs->router), (uint64_t)id);
    if (!d)
        return status_error(payload, "no dead letter has that id (see dead_letters)");
    cJSON *item = cJSON_AddObjectToObject(payload, "dead_letter");
    const char *keys[] = {"msg_id", "src", "dst", "action"};
    const char *values[] = {d->msg_id, d->src, d->dst, d->action};
    cJSON_AddNumberToObject(item, "id", (double)d->id);
    cJSON_AddStringToObject(item, "at", d->at);
    cJSON_AddStringToObject(item, "code", bus_err_name(d->code));
    for (int i = 0; i < 4; i++) {
        if (*values[i])
            cJSON_AddStringToObject(item, keys[i], values[i]);
        else
            cJSON_AddNullToObject(item, keys[i]);
    }
    cJSON_AddNumberToObject(item, "bytes", (double)d->len);
    cJSON_AddBoolToObject(item, "replayable", d->bytes != NULL);
    /* the answer stays within --max-message-bytes (E2): a letter too
     * large to show with its envelope around it says so instead */
    cJSON *message = NULL;
    if (d->bytes && d->len + 1024 <= router_config(bs->router)->max_message_bytes)
        message = cJSON_ParseWithLength(d->bytes, d->len);
    if (message)
        cJSON_AddItemToObject(item, "message", message);
    else
        cJSON_AddNullToObject(item, "message");
    if (d->bytes && !message)
        cJSON_AddStringToObject(item, "message_left_out", "too large to show within "
                                "--max-message-bytes");
    cJSON_AddStringToObject(payload, "status", "ok");
    return payload;
}

/* replay {"id": N}: the letter's message again, as if its sender sent it
 * now, through the whole path; only while that connection is there. */
static cJSON *replay(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    cJSON *payload = cJSON_CreateObject();
    double id = payload_number(env, "id");
    const deadletter_t *d = id < 0 ? NULL : deadletters_find(router_dead(bs->router), (uint64_t)id);
    if (!d)
        return status_error(payload, "no dead letter has that id (see dead_letters)");
    if (!d->bytes)
        return status_error(payload, "only the envelope of that letter was kept: nothing to replay");
    peer_t *from = registry_find_peer(router_registry(bs->router), d->from, d->from_len);
    if (!from)
        return status_error(payload, "the connection that sent it is gone");
    if (bs->replaying)    /* a letter that replays a letter: never recurse */
        return status_error(payload, "a replay cannot start another replay");
    char *bytes = malloc(d->len);      /* the ring may change while it is routed */
    if (!bytes)
        return status_error(payload, "out of memory");
    memcpy(bytes, d->bytes, d->len);
    size_t len = d->len;
    bs->replaying = true;
    router_inject(bs->router, from, bytes, len);
    bs->replaying = false;
    free(bytes);
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON_AddNumberToObject(payload, "replayed", id);
    return payload;
}

/* watch / unwatch: a copy of every event and broadcast, for operators'
 * tools (smartshop-ctl watch), until unwatch or disconnect. */
static cJSON *watch(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)env;
    router_set_watching(bs->router, peer, true);
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    return payload;
}

static cJSON *unwatch(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)env;
    router_set_watching(bs->router, peer, false);
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    return payload;
}

/* --- trace / untrace (docs/protocol.md B5) --- */

/* trace {"service", "action", "src", "code", "kinds", "rate"}: copies of
 * what matches, for this connection, until untrace or disconnect; sent
 * again, it replaces the filter. */
static cJSON *trace(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    char dst[NAME_MAX_LEN + 1];
    reply_copy_plain(dst, sizeof dst, &env->f[EF_SRC]);
    const env_value_t *p = &env->f[EF_PAYLOAD];
    bool given = p->kind != JSON_ABSENT && p->kind != JSON_NULL;
    const char *why = NULL;
    cJSON *payload = cJSON_CreateObject();
    trace_t *t = router_trace(bs->router);
    if (trace_start(t, peer, dst, given ? p->ptr : NULL, given ? p->len : 0, &why) < 0)
        return status_error(payload, why);
    cJSON_AddStringToObject(payload, "status", "ok");
    trace_describe(t, peer, payload);
    return payload;
}

static cJSON *untrace(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)env;
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON_AddBoolToObject(payload, "was_tracing", trace_stop(router_trace(bs->router), peer));
    return payload;
}

/* --- peers (docs/protocol.md B6) --- */

/* `ago_ms` before now, as T7 writes times. */
static void time_ago(uint64_t ago_ms, char out[32])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - (int64_t)ago_ms;
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)(ms % 1000));
}

static cJSON *peer_json(broker_service_t *bs, const peer_t *p, uint64_t now_ms)
{
    cJSON *o = cJSON_CreateObject();
    char text[2 * PEER_ID_MAX + 3], at[32];
    cJSON_AddNumberToObject(o, "peer", (double)p->serial);
    bool printable = p->id_len > 0;
    for (int i = 0; i < p->id_len; i++)
        if (p->id[i] < 0x21 || p->id[i] > 0x7e)
            printable = false;
    if (printable)
        snprintf(text, sizeof text, "%.*s", p->id_len, (const char *)p->id);
    else                        /* libzmq's own: 5 bytes that say nothing */
        snprintf(text, sizeof text, "#%llu", (unsigned long long)p->serial);
    cJSON_AddStringToObject(o, "identity", text);
    cJSON_AddStringToObject(o, "label", peer_label(p, text));
    cJSON_AddStringToObject(o, "kind", p->kind == PEER_LUA ? "hosted" : "remote");
    cJSON *names = cJSON_AddArrayToObject(o, "names");
    for (int i = 0; i < p->name_count; i++)
        cJSON_AddItemToArray(names, cJSON_CreateString(p->names[i]));
    if (p->addr[0])
        cJSON_AddStringToObject(o, "address", p->addr);
    else
        cJSON_AddNullToObject(o, "address");
    auth_t *auth = router_auth(bs->router);
    if (p->key[0]) {
        cJSON_AddStringToObject(o, "key", p->key);
        cJSON_AddBoolToObject(o, "admin", auth && auth_is_admin(auth, p->key));
    } else {
        cJSON_AddNullToObject(o, "key");
    }
    uint64_t since = p->since_ms ? now_ms - p->since_ms : 0;
    uint64_t idle = p->seen_ms ? now_ms - p->seen_ms : since;
    cJSON_AddNumberToObject(o, "connected_ms", (double)since);
    time_ago(since, at);
    cJSON_AddStringToObject(o, "connected_at", at);
    cJSON_AddNumberToObject(o, "idle_ms", (double)idle);
    time_ago(idle, at);
    cJSON_AddStringToObject(o, "last_seen_at", at);
    cJSON *inflight = cJSON_AddObjectToObject(o, "inflight");
    cJSON_AddNumberToObject(inflight, "handling", p->handling_count);
    cJSON_AddNumberToObject(inflight, "waiting", p->waiting_count);
    cJSON *msgs = cJSON_AddObjectToObject(o, "messages");
    cJSON_AddNumberToObject(msgs, "in", (double)p->msgs_in);
    cJSON_AddNumberToObject(msgs, "out", (double)p->msgs_out);
    cJSON_AddNumberToObject(o, "queued_bytes", (double)p->queued_bytes);
    cJSON_AddBoolToObject(o, "watching", p->watching);
    return o;
}

static int by_serial(const void *a, const void *b)
{
    uint64_t x = (*(const peer_t *const *)a)->serial, y = (*(const peer_t *const *)b)->serial;
    return x < y ? -1 : x > y;
}

/* A page of peers stays within this many bytes of entries, and within
 * --max-message-bytes (B4's rule, as list_services). */
#define PEERS_PAGE_BYTES (64u << 10)

/* peers {"after": PEER, "limit": N}: the connections in order of arrival
 * (their "peer" number), a page at a time. */
static cJSON *peers(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    cJSON *payload = cJSON_CreateObject();
    double after = payload_number(env, "after"), limit = payload_number(env, "limit");
    const env_value_t *p = &env->f[EF_PAYLOAD];
    if (p->kind == JSON_OBJECT) {
        cJSON *obj = cJSON_ParseWithLength(p->ptr, p->len);
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, "after");
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(obj, "limit");
        bool bad_after = a && !cJSON_IsNull(a) && (!cJSON_IsNumber(a) || a->valuedouble < 0);
        bool bad_limit = l && (!cJSON_IsNumber(l) || l->valuedouble < 1 ||
                               l->valuedouble != (double)(uint64_t)l->valuedouble);
        cJSON_Delete(obj);
        if (bad_after)
            return status_error(payload, "after must be a peer number (the next of the page before)");
        if (bad_limit)
            return status_error(payload, "limit must be a whole number from 1");
    }
    registry_t *reg = router_registry(bs->router);
    size_t n = 0, cap = registry_peer_count(reg) + 64;
    const peer_t **all = malloc(cap * sizeof *all);
    if (!all)
        return status_error(payload, "out of memory");
    for (const peer_t *q = registry_next_peer(reg, NULL); q; q = registry_next_peer(reg, q)) {
        if (n == cap) {
            const peer_t **grown = realloc(all, 2 * cap * sizeof *all);
            if (!grown)
                break;
            all = grown;
            cap *= 2;
        }
        if (after < 0 || (double)q->serial > after)
            all[n++] = q;
    }
    if (n > 1)
        qsort(all, n, sizeof *all, by_serial);
    size_t max = router_config(bs->router)->max_message_bytes;
    size_t room = max > 1024 ? max - 1024 : 0;
    if (room > PEERS_PAGE_BYTES)
        room = PEERS_PAGE_BYTES;
    uint64_t now = router_now_ms(bs->router);
    cJSON *list = cJSON_AddArrayToObject(payload, "peers");
    size_t used = 0, shown = 0;
    for (; shown < n && (limit < 1 || shown < (size_t)limit); shown++) {
        cJSON *item = peer_json(bs, all[shown], now);
        char *text = cJSON_PrintUnformatted(item);
        size_t len = text ? strlen(text) + 1 : 0;
        cJSON_free(text);
        if (!len || used + len > room) {
            cJSON_Delete(item);
            break;
        }
        used += len;
        cJSON_AddItemToArray(list, item);
    }
    if (shown == 0 && n > 0) {
        free(all);
        cJSON_Delete(payload);
        return status_error(cJSON_CreateObject(), "--max-message-bytes is too small for one entry of the list");
    }
    bool more = shown < n;
    cJSON_AddBoolToObject(payload, "truncated", more);
    if (more)
        cJSON_AddNumberToObject(payload, "next", (double)all[shown - 1]->serial);
    free(all);
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

/* subscribe / unsubscribe {"topic": P, "group": G?}: topic events matching
 * P for this connection until unsubscribe or disconnect (idempotent). */
static cJSON *subscription_action(broker_service_t *bs, peer_t *peer, const envelope_t *env, bool add)
{
    char topic[TOPIC_MAX_LEN + 1], group[NAME_MAX_LEN + 1];
    const char *why = NULL;
    cJSON *payload = cJSON_CreateObject();
    if (!read_subscription(env, topic, group, &why)) {
        cJSON_AddStringToObject(payload, "code", "bad_topic");
        return status_error(payload, why);
    }
    auth_t *auth = router_auth(bs->router);
    if (add && auth && peer->kind == PEER_REMOTE && !auth_may_subscribe(auth, peer->key, topic)) {
        cJSON_AddStringToObject(payload, "code", "denied");
        return status_error(payload, "your key may not subscribe to that pattern (allow list)");
    }
    topics_result_t r = add ? topics_subscribe(router_topics(bs->router), peer, topic, strlen(topic), group)
                            : topics_unsubscribe(router_topics(bs->router), peer, topic, strlen(topic), group);
    return subscription_answer(payload, r, topic, group, topics_owner_count(router_topics(bs->router), peer));
}

static cJSON *subscribe(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    return subscription_action(bs, peer, env, true);
}

static cJSON *unsubscribe(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    return subscription_action(bs, peer, env, false);
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
static cJSON *subscriptions(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)env;
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "status", "ok");
    cJSON *list = cJSON_AddArrayToObject(payload, "subscriptions");
    topics_each_of_owner(router_topics(bs->router), peer, add_subscription, list);
    return payload;
}

/* metrics: per service and action, requests and latency. */
static cJSON *metrics(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    (void)peer;
    (void)env;
    return metrics_json(router_metrics(bs->router));
}

/* --- list_services --- */

/* The services sorted by name, rendered once per registry generation: a
 * flood of list_services costs a copy of a page each, not a sort and a
 * build each. Entries are `{"name":"N","instances":K},` back to back
 * (names need no escaping: N1). One broker per process: module state. */
static struct {
    bool built;
    uint64_t generation;
    char *text;
    size_t len, cap;
    size_t *ends;               /* ends[i]: just past entry i's comma */
    size_t count, ends_cap;
    const service_t **order;    /* for sorting; valid only while building */
} listing;

#define ENTRY_HEAD "{\"name\":\""
#define ENTRY_MAX (sizeof ENTRY_HEAD - 1 + NAME_MAX_LEN + sizeof "\",\"instances\":},") + 11
/* A page's entries take at most this many bytes (~700 names), and fewer
 * if --max-message-bytes says so: a flood of list_services, or a peer
 * that does not read its answers, costs the broker 64 KiB an answer. */
#define LIST_PAGE_BYTES (64u << 10)
/* The other brokers' names on the first page (--nats), at most. */
#define LIST_REMOTE_BYTES (16u << 10)
#define PAGE_HEAD "{\"services\":["
#define PAGE_END "],\"truncated\":false}"
#define PAGE_MORE "],\"truncated\":true,\"next\":\""

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const service_t *const *)a)->name, (*(const service_t *const *)b)->name);
}

static int listing_build(registry_t *reg)
{
    if (listing.built && listing.generation == registry_generation(reg))
        return 0;
    size_t n = registry_service_count(reg);
    if (n > listing.ends_cap) {
        size_t *ends = realloc(listing.ends, n * sizeof *ends);
        const service_t **order = realloc(listing.order, n * sizeof *order);
        if (ends)
            listing.ends = ends;
        if (order)
            listing.order = order;
        if (!ends || !order)
            return -1;
        listing.ends_cap = n;
    }
    if (n * ENTRY_MAX > listing.cap) {
        char *text = realloc(listing.text, n * ENTRY_MAX);
        if (!text)
            return -1;
        listing.text = text;
        listing.cap = n * ENTRY_MAX;
    }
    /* an array sorted with qsort: the registry's HASH_SORT (a merge sort
     * of its linked list) took 20 ms for 19,200 names, this ~3 ms */
    size_t count = 0;
    for (const service_t *svc = registry_next_service(reg, NULL); svc && count < n;
         svc = registry_next_service(reg, svc))
        listing.order[count++] = svc;
    if (count > 1)              /* (with none, `order` may still be NULL) */
        qsort(listing.order, count, sizeof *listing.order, by_name);
    size_t len = 0;
    for (size_t i = 0; i < count; i++) {
        const service_t *svc = listing.order[i];
        size_t name_len = strlen(svc->name);
        memcpy(listing.text + len, ENTRY_HEAD, sizeof ENTRY_HEAD - 1);
        len += sizeof ENTRY_HEAD - 1;
        memcpy(listing.text + len, svc->name, name_len);
        len += name_len;
        int w = snprintf(listing.text + len, listing.cap - len, "\",\"instances\":%d},", svc->count);
        len += w > 0 ? (size_t)w : 0;
        listing.ends[i] = len;
    }
    listing.len = len;
    listing.count = count;
    listing.generation = registry_generation(reg);
    listing.built = true;
    return 0;
}

static size_t entry_start(size_t i)
{
    return i ? listing.ends[i - 1] : 0;
}

/* The name of entry i, and its length. */
static const char *entry_name(size_t i, size_t *len)
{
    const char *name = listing.text + entry_start(i) + sizeof ENTRY_HEAD - 1;
    *len = (size_t)((const char *)memchr(name, '"', NAME_MAX_LEN + 1) - name);
    return name;
}

/* The first entry whose name is after `after` in byte order. */
static size_t first_after(const char *after, size_t after_len)
{
    size_t lo = 0, hi = listing.count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2, len;
        const char *name = entry_name(mid, &len);
        int cmp = memcmp(name, after, len < after_len ? len : after_len);
        if (cmp < 0 || (cmp == 0 && len <= after_len))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Where a page starting at entry `first` ends: as many entries as fit in
 * `room` bytes of entries, at most `limit` (0: no limit). */
static size_t page_end(size_t first, size_t room, size_t limit)
{
    size_t lo = first, hi = listing.count;        /* the answer is in [lo, hi] */
    if (limit && hi - first > limit)
        hi = first + limit;
    while (lo < hi) {
        size_t mid = lo + (hi - lo + 1) / 2;       /* entries [first, mid) */
        if (listing.ends[mid - 1] - entry_start(first) - 1 <= room)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* The request's {"after": NAME, "limit": N}, both optional (a payload that
 * is not an object is ignored, as it was before pages). Returns NULL, or
 * what is wrong with it. */
static const char *read_page_request(const envelope_t *env, const char **after, size_t *after_len,
                                     size_t *limit)
{
    *after = NULL;
    *after_len = 0;
    *limit = 0;
    const env_value_t *p = &env->f[EF_PAYLOAD];
    if (p->kind != JSON_OBJECT)
        return NULL;
    json_object_t obj;
    if (json_scan_object(p->ptr, p->len, &obj, NULL) != JSON_SCAN_OK)
        return "the payload has more members than list_services reads";
    for (int i = 0; i < obj.count; i++) {
        const json_member_t *m = &obj.members[i];
        const char *key = p->ptr + m->key_off, *val = p->ptr + m->val_off;
        if (m->key_escaped)
            continue;
        if (m->key_len == 5 && memcmp(key, "after", 5) == 0) {
            if (m->kind == JSON_NULL)
                continue;
            if (m->kind != JSON_STRING || m->val_escaped || m->val_len > NAME_MAX_LEN)
                return "after must be a service name (the next of the page before)";
            *after = val;
            *after_len = m->val_len;
        } else if (m->key_len == 5 && memcmp(key, "limit", 5) == 0) {
            char digits[16];
            char *end = NULL;
            unsigned long n = 0;
            if (m->kind == JSON_NUMBER && m->val_len < sizeof digits && val[0] != '-') {
                memcpy(digits, val, m->val_len);
                digits[m->val_len] = '\0';
                n = strtoul(digits, &end, 10);
            }
            if (!end || *end || n == 0)
                return "limit must be a whole number from 1";
            *limit = n;
        }
    }
    return NULL;
}

/* list_services {"after": NAME, "limit": N}: a page of the sorted list,
 * the whole reply within --max-message-bytes; "truncated": true and
 * "next" (the page's last name: the next page's "after") when more follow. */
static void list_services(broker_service_t *bs, peer_t *peer, const envelope_t *env, const char *dst,
                          const char *corr)
{
    const char *after, *problem;
    size_t after_len, limit;
    problem = read_page_request(env, &after, &after_len, &limit);
    if (!problem && listing_build(router_registry(bs->router)) < 0)
        problem = "out of memory";
    size_t env_len = 0, at = 0;
    char *around = problem ? NULL : reply_response_around(dst, "list_services", corr, &env_len, &at);
    if (!problem && !around)
        problem = "out of memory";
    size_t first = 0, end = 0, room = 0;
    bool more = false;
    /* with --nats, the first page also says which names other brokers
     * hold (X2), within a bounded part of the page */
    static char remote[LIST_REMOTE_BYTES];
    size_t remote_len = !problem && !after ? router_bus_remote(bs->router, remote, sizeof remote) : 0;
    if (!problem) {
        first = after ? first_after(after, after_len) : 0;
        size_t fixed = env_len + sizeof PAGE_HEAD - 1 + remote_len;
        size_t max = router_config(bs->router)->max_message_bytes;
        size_t rest = listing.count > first ? listing.ends[listing.count - 1] - entry_start(first) - 1 : 0;
        if (fixed + rest + sizeof PAGE_END - 1 <= max && rest <= LIST_PAGE_BYTES &&
            (!limit || listing.count - first <= limit)) {
            end = listing.count;
        } else {
            size_t tail = sizeof PAGE_MORE - 1 + NAME_MAX_LEN + 2;
            room = max > fixed + tail ? max - fixed - tail : 0;
            if (room > LIST_PAGE_BYTES)
                room = LIST_PAGE_BYTES;
            end = page_end(first, room, limit);
            more = end < listing.count;
            if (end == first)
                problem = "--max-message-bytes is too small for one entry of the list";
        }
    }
    if (problem) {
        reply_free(around);
        size_t len = 0;
        char *text = reply_response(dst, "list_services", corr,
                                    status_error(cJSON_CreateObject(), problem), &len);
        if (text)
            router_send_made(bs->router, peer, text, len, MT_RESPONSE);
        else
            router_send_error(bs->router, peer, env, ERR_INTERNAL, "out of memory");
        reply_free(text);
        return;
    }
    size_t entries = end > first ? listing.ends[end - 1] - entry_start(first) - 1 : 0;
    size_t next_len = 0;
    const char *next = more ? entry_name(end - 1, &next_len) : NULL;
    size_t total = env_len + sizeof PAGE_HEAD - 1 + remote_len + entries +
                   (more ? sizeof PAGE_MORE - 1 + next_len + 2 : sizeof PAGE_END - 1);
    char *text = malloc(total), *w = text;
    if (!text) {
        reply_free(around);
        router_send_error(bs->router, peer, env, ERR_INTERNAL, "out of memory");
        return;
    }
#define PUT(src, n) (memcpy(w, (src), (n)), w += (n))
    PUT(around, at);
    PUT(PAGE_HEAD, 1);                  /* "{", the other brokers' names, "services" */
    if (remote_len)
        PUT(remote, remote_len);
    PUT(PAGE_HEAD + 1, sizeof PAGE_HEAD - 2);
    if (entries)                /* (an empty registry has no text at all) */
        PUT(listing.text + entry_start(first), entries);
    if (more) {
        PUT(PAGE_MORE, sizeof PAGE_MORE - 1);
        PUT(next, next_len);
        PUT("\"}", 2);
    } else {
        PUT(PAGE_END, sizeof PAGE_END - 1);
    }
    PUT(around + at, env_len - at);
#undef PUT
    router_send_made(bs->router, peer, text, total, MT_RESPONSE);
    free(text);
    reply_free(around);
}

typedef struct {
    const char *name;
    cJSON *(*run)(broker_service_t *bs, peer_t *peer, const envelope_t *env);
    bool admin;                 /* with CURVE: only for keys marked @admin */
    /* instead of run: writes and sends the whole answer itself */
    void (*answer)(broker_service_t *bs, peer_t *peer, const envelope_t *env, const char *dst,
                   const char *corr);
} action_t;

static const action_t actions[] = {
    {"ping", ping, false, NULL},
    {"list_services", NULL, false, list_services},
    {"stats", stats, false, NULL},
    {"metrics", metrics, false, NULL},
    {"unwatch", unwatch, false, NULL},
    {"subscribe", subscribe, false, NULL},
    {"unsubscribe", unsubscribe, false, NULL},
    {"subscriptions", subscriptions, false, NULL},
    /* these act on the bus or see others' traffic */
    {"reload_policy", reload_policy, true, NULL},
    {"reload_config", reload_config, true, NULL},
    {"dead_letters", dead_letters, true, NULL},
    {"replay", replay, true, NULL},
    {"watch", watch, true, NULL},
    {"dead_letter", dead_letter, true, NULL},
    {"peers", peers, true, NULL},
    {"trace", trace, true, NULL},
    {"untrace", untrace, false, NULL},
};

void broker_service_handle(broker_service_t *bs, peer_t *peer, const envelope_t *env)
{
    const env_value_t *action = &env->f[EF_ACTION];
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        if (!env_equals(action, actions[i].name))
            continue;
        auth_t *auth = router_auth(bs->router);
        if (actions[i].admin && auth && peer->kind == PEER_REMOTE && !auth_is_admin(auth, peer->key)) {
            router_send_error(bs->router, peer, env, ERR_DENIED,
                              "this broker action needs a key marked @admin in the allow list");
            return;
        }
        char dst[NAME_MAX_LEN + 1], corr[MSG_ID_MAX_LEN + 1];
        reply_copy_plain(dst, sizeof dst, &env->f[EF_SRC]);
        reply_copy_plain(corr, sizeof corr, &env->f[EF_MSG_ID]);
        if (actions[i].answer) {
            actions[i].answer(bs, peer, env, dst, corr);
            return;
        }
        size_t len = 0;
        char *text = reply_response(dst, actions[i].name, corr, actions[i].run(bs, peer, env), &len);
        if (!text) {
            router_send_error(bs->router, peer, env, ERR_INTERNAL, "out of memory");
            return;
        }
        router_send_made(bs->router, peer, text, len, MT_RESPONSE);
        reply_free(text);
        return;
    }
    char names[512] = "the broker's actions are";
    for (size_t i = 0; i < sizeof actions / sizeof actions[0]; i++) {
        size_t used = strlen(names);
        snprintf(names + used, sizeof names - used, "%s %s", i ? "," : "", actions[i].name);
    }
    router_send_error(bs->router, peer, env, ERR_UNKNOWN_ACTION, names);
}
