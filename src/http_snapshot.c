/* http_snapshot: the broker's state, taken once a second for the HTTP
 * thread. See http_snapshot.h. */
#include "http_snapshot.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "deadletter.h"
#include "inflight.h"
#include "policy.h"
#include "version.h"

/* What a snapshot is taken from: the router's tables. */
typedef struct {
    const router_t *router;     /* for the bus only (router_bus_*) */
    const config_t *cfg;
    metrics_t *metrics;
    const stats_t *stats;
    registry_t *registry;
    size_t inflight;
    const deadletters_t *dead;
    const policy_t *policy;     /* NULL: none */
    uint64_t started_ms;
    bool stopping;
} http_sources_t;

http_blob_t *http_blob_ref(http_blob_t *blob)
{
    if (blob)
        atomic_fetch_add_explicit(&blob->refs, 1, memory_order_relaxed);
    return blob;
}

void http_blob_release(http_blob_t **blob_p)
{
    http_blob_t *blob = *blob_p;
    *blob_p = NULL;
    if (blob && atomic_fetch_sub_explicit(&blob->refs, 1, memory_order_acq_rel) == 1)
        free(blob);
}

static http_blob_t *blob_new(const char *text, size_t len)
{
    http_blob_t *blob = malloc(sizeof *blob + len + 1);
    if (!blob)
        return NULL;
    atomic_init(&blob->refs, 1);
    blob->len = len;
    memcpy(blob->text, text, len);
    blob->text[len] = '\0';
    return blob;
}

static http_metrics_part_t *metrics_part_ref(http_metrics_part_t *part)
{
    if (part)
        atomic_fetch_add_explicit(&part->refs, 1, memory_order_relaxed);
    return part;
}

static void metrics_part_release(http_metrics_part_t **part_p)
{
    http_metrics_part_t *part = *part_p;
    *part_p = NULL;
    if (!part || atomic_fetch_sub_explicit(&part->refs, 1, memory_order_acq_rel) != 1)
        return;
    metrics_copy_free(&part->copy);
    http_blob_release(&part->rendered);
    free(part);
}

http_snapshot_t *http_snapshot_ref(http_snapshot_t *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void http_snapshot_release(http_snapshot_t **s_p)
{
    http_snapshot_t *s = *s_p;
    *s_p = NULL;
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    metrics_part_release(&s->metrics);
    http_blob_release(&s->state);
    free(s);
}

void http_snapshot_maker_clear(http_snapshot_maker_t *maker)
{
    metrics_part_release(&maker->metrics);
    http_blob_release(&maker->state);
}

http_blob_t *http_snapshot_prometheus(http_snapshot_t *s)
{
    http_metrics_part_t *part = s ? s->metrics : NULL;
    if (!part)
        return NULL;
    if (!part->rendered) {
        metrics_text_t *text = metrics_prometheus(part->copy, &part->stats, part->peers,
                                                  part->services, part->inflight);
        if (!text)
            return NULL;
        part->rendered = blob_new(text->text, text->len);
        metrics_text_release(&text);
        metrics_copy_free(&part->copy);     /* rendered once: the counts are not needed again */
    }
    return http_blob_ref(part->rendered);
}

/* A copy of the counters for the Prometheus text (the broker thread's
 * part: a copy, no rendering). */
static http_metrics_part_t *metrics_part_new(const http_sources_t *src)
{
    http_metrics_part_t *part = calloc(1, sizeof *part);
    if (!part)
        return NULL;
    atomic_init(&part->refs, 1);
    part->copy = metrics_copy(src->metrics);
    if (!part->copy) {
        free(part);
        return NULL;
    }
    part->stats = *src->stats;
    part->peers = registry_peer_count(src->registry);
    part->services = registry_service_count(src->registry);
    part->inflight = src->inflight;
    return part;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const http_service_totals_t *)a)->name, ((const http_service_totals_t *)b)->name);
}

struct collect {
    http_service_totals_t *t;
    size_t n, cap;
};

static void collect_series(const metrics_view_t *v, void *ctx)
{
    struct collect *c = ctx;
    if (c->n == c->cap)
        return;
    http_service_totals_t *e = &c->t[c->n++];
    snprintf(e->name, sizeof e->name, "%s", v->service);
    e->requests = v->requests;
    e->ok = v->outcomes[METRICS_OK];
    e->failed = v->failed;
    memcpy(e->outcomes, v->outcomes, sizeof e->outcomes);
    memcpy(e->buckets, v->buckets, sizeof e->buckets);
}

/* Every service registered now or counted in the metrics, by name, with
 * its instances and its series summed. Returns the count, or -1. */
static long service_totals(const http_sources_t *src, http_service_totals_t **out)
{
    size_t cap = registry_service_count(src->registry) + src->metrics->count + 2;
    http_service_totals_t *t = calloc(cap, sizeof *t);
    if (!t)
        return -1;
    size_t n = 0;
    for (const service_t *svc = registry_next_service(src->registry, NULL); svc && n < cap;
         svc = registry_next_service(src->registry, svc), n++) {
        snprintf(t[n].name, sizeof t[n].name, "%s", svc->name);
        t[n].instances = (uint32_t)svc->count;
    }
    struct collect c = {t, n, cap};
    metrics_each(src->metrics, collect_series, &c);
    n = c.n;
    qsort(t, n, sizeof *t, by_name);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (kept && strcmp(t[kept - 1].name, t[i].name) == 0) {
            http_service_totals_t *into = &t[kept - 1];
            if (t[i].instances > into->instances)
                into->instances = t[i].instances;
            into->requests += t[i].requests;
            into->ok += t[i].ok;
            into->failed += t[i].failed;
            for (int o = 0; o < METRICS_OUTCOMES; o++)
                into->outcomes[o] += t[i].outcomes[o];
            for (int b = 0; b < METRICS_BUCKETS; b++)
                into->buckets[b] += t[i].buckets[b];
        } else {
            t[kept++] = t[i];
        }
    }
    *out = t;
    return (long)kept;
}

static void add_counts(cJSON *parent, const char *key, const uint64_t *counts, int n,
                       const char *(*name_of)(int))
{
    cJSON *obj = cJSON_AddObjectToObject(parent, key);
    for (int i = 0; i < n; i++)
        if (counts[i])
            cJSON_AddNumberToObject(obj, name_of(i), (double)counts[i]);
}

static const char *type_name(int t) { return msg_type_name((msg_type_t)t); }
static const char *code_name(int c) { return c ? bus_err_name((bus_err_t)c) : "none"; }

static void add_broker(cJSON *root, const http_sources_t *src, uint64_t now_ms)
{
    cJSON *broker = cJSON_AddObjectToObject(root, "broker");
    cJSON_AddStringToObject(broker, "version", SMARTSHOP_VERSION);
    double uptime_s = (double)(now_ms - src->started_ms) / 1000.0;
    cJSON_AddNumberToObject(broker, "uptime_s", uptime_s);
    char started[32];
    time_t at = time(NULL) - (time_t)uptime_s;
    struct tm tm;
    gmtime_r(&at, &tm);
    strftime(started, sizeof started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON_AddStringToObject(broker, "started_at", started);
    cJSON *eps = cJSON_AddArrayToObject(broker, "endpoints");
    for (int i = 0; i < src->cfg->endpoint_count; i++)
        cJSON_AddItemToArray(eps, cJSON_CreateString(src->cfg->endpoints[i]));
    cJSON_AddBoolToObject(broker, "curve", src->cfg->curve_secret_key && *src->cfg->curve_secret_key);
    cJSON_AddNumberToObject(broker, "peers", (double)registry_peer_count(src->registry));
    cJSON_AddNumberToObject(broker, "services", (double)registry_service_count(src->registry));
    cJSON_AddNumberToObject(broker, "inflight", (double)src->inflight);
    cJSON_AddNumberToObject(broker, "request_timeout_ms", src->cfg->request_timeout_ms);
    cJSON_AddBoolToObject(broker, "stopping", src->stopping);
    cJSON *messages = cJSON_AddObjectToObject(root, "messages");
    add_counts(messages, "in", src->stats->in, MT__COUNT, type_name);
    add_counts(messages, "out", src->stats->out, MT__COUNT, type_name);
    add_counts(messages, "errors", src->stats->errors, ERR__COUNT, code_name);
}

/* What a peer is called on the page: "#serial", or a hosted service's
 * file; its full log label goes with it. */
static void add_peer_names(cJSON *item, const peer_t *p)
{
    char label[2 * PEER_ID_MAX + 3];
    if (p->kind == PEER_LUA)
        snprintf(label, sizeof label, "%.*s", p->id_len, (const char *)p->id);
    else
        snprintf(label, sizeof label, "#%llu", (unsigned long long)p->serial);
    cJSON_AddStringToObject(item, "id", label);
    cJSON_AddStringToObject(item, "label", peer_label(p, label));
    cJSON_AddStringToObject(item, "kind", p->kind == PEER_LUA ? "lua" : "remote");
    cJSON_AddStringToObject(item, "address", p->addr);
}

static cJSON *peer_json(const peer_t *p, uint64_t now_ms)
{
    cJSON *item = cJSON_CreateObject();
    add_peer_names(item, p);
    cJSON *names = cJSON_AddArrayToObject(item, "names");
    for (int i = 0; i < p->name_count; i++)
        cJSON_AddItemToArray(names, cJSON_CreateString(p->names[i]));
    if (p->key[0])
        cJSON_AddStringToObject(item, "key", p->key);
    cJSON_AddNumberToObject(item, "handling", p->handling_count);
    cJSON_AddNumberToObject(item, "waiting", p->waiting_count);
    cJSON_AddNumberToObject(item, "queued_bytes", (double)p->queued_bytes);
    cJSON_AddBoolToObject(item, "watching", p->watching);
    cJSON_AddNumberToObject(item, "messages_in", (double)p->msgs_in);
    cJSON_AddNumberToObject(item, "messages_out", (double)p->msgs_out);
    /* the router stamps with the same clock, maybe after now_ms was read */
    cJSON_AddNumberToObject(item, "connected_ms",
                            (double)(p->since_ms && now_ms > p->since_ms ? now_ms - p->since_ms : 0));
    cJSON_AddNumberToObject(item, "idle_ms",
                            (double)(p->seen_ms && now_ms > p->seen_ms ? now_ms - p->seen_ms : 0));
    return item;
}

/* The busiest first (most requests), then by name. */
static int by_requests(const void *a, const void *b)
{
    const http_service_totals_t *x = *(const http_service_totals_t *const *)a;
    const http_service_totals_t *y = *(const http_service_totals_t *const *)b;
    if (x->requests != y->requests)
        return x->requests > y->requests ? -1 : 1;
    return x < y ? -1 : x > y;      /* t is sorted by name */
}

static int by_address(const void *a, const void *b)
{
    const http_service_totals_t *x = *(const http_service_totals_t *const *)a;
    const http_service_totals_t *y = *(const http_service_totals_t *const *)b;
    return x < y ? -1 : x > y;
}

/* The services in name order, at most HTTP_STATE_SERVICES_MAX of them
 * (the busiest): with thousands of registered names the JSON, made by the
 * broker thread, would hold up routing for as long as it takes to build
 * (200 ms for 6400 names, measured). The sums are over all of them. */
static void add_services(cJSON *root, const http_sources_t *src, const http_service_totals_t *t,
                         size_t n)
{
    uint64_t failed = 0, instance_sum = 0;
    for (size_t i = 0; i < n; i++) {
        failed += t[i].failed;
        instance_sum += t[i].instances;
    }
    cJSON_AddNumberToObject(root, "services_total", (double)n);
    cJSON_AddNumberToObject(root, "services_failed", (double)failed);
    cJSON_AddNumberToObject(root, "services_instances", (double)instance_sum);
    size_t shown = n < HTTP_STATE_SERVICES_MAX ? n : HTTP_STATE_SERVICES_MAX;
    const http_service_totals_t **pick = malloc((n ? n : 1) * sizeof *pick);
    cJSON *list = cJSON_AddArrayToObject(root, "services");
    if (!pick)
        return;
    for (size_t i = 0; i < n; i++)
        pick[i] = &t[i];
    if (shown < n) {
        qsort(pick, n, sizeof *pick, by_requests);
        qsort(pick, shown, sizeof *pick, by_address);   /* back in name order */
    }
    for (size_t j = 0; j < shown; j++) {
        size_t i = (size_t)(pick[j] - t);
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "name", t[i].name);
        cJSON_AddNumberToObject(item, "requests", (double)t[i].requests);
        cJSON_AddNumberToObject(item, "ok", (double)t[i].ok);
        cJSON_AddNumberToObject(item, "failed", (double)t[i].failed);
        cJSON *outcomes = cJSON_AddObjectToObject(item, "outcomes");
        for (int o = 0; o < METRICS_OUTCOMES; o++)
            cJSON_AddNumberToObject(outcomes, metrics_outcome_name((metrics_outcome_t)o),
                                    (double)t[i].outcomes[o]);
        cJSON_AddNumberToObject(item, "instance_count", t[i].instances);
        cJSON *instances = cJSON_AddArrayToObject(item, "instances");
        const service_t *svc = registry_find_service(src->registry, t[i].name, strlen(t[i].name));
        for (int k = 0; svc && k < svc->count && k < HTTP_STATE_INSTANCES_MAX; k++) {
            cJSON *inst = cJSON_CreateObject();
            add_peer_names(inst, svc->instances[k]);
            cJSON_AddNumberToObject(inst, "handling", svc->instances[k]->handling_count);
            cJSON_AddItemToArray(instances, inst);
        }
        cJSON_AddItemToArray(list, item);
    }
    free(pick);
}

static void add_peers(cJSON *root, const http_sources_t *src, uint64_t now_ms)
{
    cJSON *list = cJSON_AddArrayToObject(root, "peers");
    size_t n = 0, total = 0;
    for (peer_t *p = registry_next_peer(src->registry, NULL); p;
         p = registry_next_peer(src->registry, p), total++)
        if (n < HTTP_STATE_PEERS_MAX) {
            cJSON_AddItemToArray(list, peer_json(p, now_ms));
            n++;
        }
    cJSON_AddNumberToObject(root, "peers_total", (double)total);
}

static void add_dead_letters(cJSON *root, const http_sources_t *src)
{
    const deadletters_t *dl = src->dead;
    cJSON *dead = cJSON_AddObjectToObject(root, "dead_letters");
    cJSON_AddNumberToObject(dead, "capacity", (double)src->cfg->dead_letters);
    cJSON_AddNumberToObject(dead, "count", (double)deadletters_count(dl));
    cJSON_AddNumberToObject(dead, "bytes", (double)deadletters_bytes(dl));
    cJSON_AddNumberToObject(dead, "evicted", (double)deadletters_evicted(dl));
    cJSON_AddItemToObject(dead, "newest", deadletters_list(dl, HTTP_STATE_DEAD_LETTERS));
}

static void add_policy(cJSON *root, const http_sources_t *src)
{
    cJSON *pol = cJSON_AddObjectToObject(root, "policy");
    const policy_t *p = src->policy;
    if (!p) {
        cJSON_AddStringToObject(pol, "state", "none");
        return;
    }
    cJSON_AddStringToObject(pol, "path", policy_path(p));
    cJSON_AddStringToObject(pol, "state", policy_is_loaded(p) ? "loaded" : "not loaded");
    char hooks[128];
    policy_describe_hooks(p, hooks, sizeof hooks);
    cJSON_AddStringToObject(pol, "hooks", hooks);
    policy_counts_t counts = policy_counts(p);
    cJSON_AddNumberToObject(pol, "loads", (double)counts.loads);
    cJSON_AddNumberToObject(pol, "failed_loads", (double)counts.failed_loads);
    cJSON_AddNumberToObject(pol, "hook_errors", (double)counts.hook_errors);
    cJSON_AddNumberToObject(pol, "cache_hits", (double)counts.cache_hits);
    cJSON_AddNumberToObject(pol, "cache_misses", (double)counts.cache_misses);
    /* running a version that is not the file's (the file did not load) */
    policy_version_t version = policy_version(p);
    cJSON_AddBoolToObject(pol, "fallback", version.fallback);
    if (version.stale_since && *version.stale_since)
        cJSON_AddStringToObject(pol, "stale_since", version.stale_since);
    if (version.loaded_sha256 && *version.loaded_sha256)
        cJSON_AddStringToObject(pol, "sha256", version.loaded_sha256);
    size_t source_len;
    const char *source = policy_source(p, &source_len);
    if (!source)
        return;
    size_t len = source_len < HTTP_STATE_POLICY_BYTES ? source_len : HTTP_STATE_POLICY_BYTES;
    char *text = malloc(len + 1);
    if (!text)
        return;
    memcpy(text, source, len);
    text[len] = '\0';
    cJSON_AddStringToObject(pol, "source", text);     /* cJSON escapes what JSON needs */
    cJSON_AddBoolToObject(pol, "source_truncated", len < source_len);
    free(text);
}

/* --- the bus (--nats): its state, what crossed, who holds what --- */

typedef struct {
    char name[NAME_MAX_LEN + 1];
    char broker[BUS_BROKER_ID_MAX + 1];
    int instances;
    bool silent;
} remote_entry_t;

/* The first HTTP_STATE_REMOTE_MAX names other brokers hold, by name then
 * broker, out of however many: kept in twice that room, cut back to the
 * first ones each time it fills (n log n over all, no allocation a name). */
struct remote_pick {
    remote_entry_t *e;
    size_t n, total;
    bool failed;
};

static int by_name_broker(const void *a, const void *b)
{
    const remote_entry_t *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->broker, y->broker);
}

static void pick_remote(void *arg, const char *name, const char *broker, int instances, bool silent)
{
    struct remote_pick *p = arg;
    p->total++;
    if (p->failed)
        return;
    if (p->n == 2 * HTTP_STATE_REMOTE_MAX) {
        qsort(p->e, p->n, sizeof *p->e, by_name_broker);
        p->n = HTTP_STATE_REMOTE_MAX;
    }
    remote_entry_t *e = &p->e[p->n++];
    snprintf(e->name, sizeof e->name, "%s", name);
    snprintf(e->broker, sizeof e->broker, "%s", broker);
    e->instances = instances;
    e->silent = silent;
}

static void add_bus(cJSON *root, const http_sources_t *src)
{
    if (!router_bus_active(src->router))
        return;
    cJSON *bus = cJSON_AddObjectToObject(root, "bus");
    router_bus_describe(src->router, bus);  /* as stats "bus": state and what crossed */
    struct remote_pick pick = {calloc(2 * HTTP_STATE_REMOTE_MAX, sizeof(remote_entry_t)), 0, 0, false};
    pick.failed = !pick.e;
    router_bus_each_remote(src->router, pick_remote, &pick);
    cJSON *list = cJSON_AddArrayToObject(root, "remote");
    cJSON_AddNumberToObject(root, "remote_total", (double)pick.total);
    if (pick.failed)
        return;
    qsort(pick.e, pick.n, sizeof *pick.e, by_name_broker);
    for (size_t i = 0; i < pick.n && i < HTTP_STATE_REMOTE_MAX; i++) {
        cJSON *item = cJSON_CreateObject();
        cJSON_AddStringToObject(item, "name", pick.e[i].name);
        cJSON_AddStringToObject(item, "broker", pick.e[i].broker);
        cJSON_AddNumberToObject(item, "instances", pick.e[i].instances);
        cJSON_AddBoolToObject(item, "silent", pick.e[i].silent);
        cJSON_AddItemToArray(list, item);
    }
    free(pick.e);
}

static http_blob_t *state_blob(const http_sources_t *src, const http_service_totals_t *t, size_t n,
                               uint64_t now_ms)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return NULL;
    add_broker(root, src, now_ms);
    add_services(root, src, t, n);
    add_peers(root, src, now_ms);
    add_dead_letters(root, src);
    add_policy(root, src);
    add_bus(root, src);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text)
        return NULL;
    http_blob_t *blob = blob_new(text, strlen(text));
    cJSON_free(text);
    return blob;
}

http_snapshot_t *http_snapshot_take(http_snapshot_maker_t *maker, const router_t *router,
                                    bool stopping, unsigned parts, uint64_t covers,
                                    uint64_t now_ms)
{
    const http_sources_t sources = {
        router, router_config(router), router_metrics(router), router_stats(router),
        router_registry(router), router_inflight_count(router), router_dead(router),
        router_policy(router), router_started_ms(router), stopping};
    const http_sources_t *src = &sources;
    http_service_totals_t *totals = NULL;
    long n = service_totals(src, &totals);
    if (n < 0)
        return NULL;
    http_snapshot_t *s = calloc(1, sizeof *s + (size_t)n * sizeof *totals);
    if (!s) {
        free(totals);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    s->taken_ms = now_ms;
    s->taken_covers = covers;
    s->service_count = (size_t)n;
    memcpy(s->services, totals, (size_t)n * sizeof *totals);
    if (parts & HTTP_PART_METRICS) {
        http_metrics_part_t *fresh = metrics_part_new(src);
        if (fresh) {                /* else (out of memory) the last one stays */
            metrics_part_release(&maker->metrics);
            maker->metrics = fresh;
            maker->metrics_covers = covers;
        }
    }
    if (parts & HTTP_PART_STATE) {
        http_blob_t *fresh = state_blob(src, totals, (size_t)n, now_ms);
        if (fresh) {
            http_blob_release(&maker->state);
            maker->state = fresh;
            maker->state_covers = covers;
        }
    }
    free(totals);
    s->metrics = metrics_part_ref(maker->metrics);
    s->metrics_covers = maker->metrics ? maker->metrics_covers : 0;
    s->state = http_blob_ref(maker->state);
    s->state_covers = maker->state ? maker->state_covers : 0;
    if (src->stopping)
        snprintf(s->not_ready, sizeof s->not_ready, "stopping: the grace period is running");
    else if (src->policy && !policy_is_loaded(src->policy) && policy_counts(src->policy).failed_loads)
        snprintf(s->not_ready, sizeof s->not_ready, "the policy failed to load");
    s->ready = !s->not_ready[0];
    policy_version_t version = src->policy ? policy_version(src->policy) : (policy_version_t){0};
    s->policy_stale = version.stale_since && *version.stale_since;
    s->policy_fallback = version.fallback;
    policy_counts_t counts = src->policy ? policy_counts(src->policy) : (policy_counts_t){0};
    s->policy_cache_hits = counts.cache_hits;
    s->policy_cache_misses = counts.cache_misses;
    s->restored_waiting = registry_restored_count(src->registry);
    return s;
}
