/* bus: the broker's side of the NATS bus. See bus.h; the rules are
 * docs/protocol.md X1-X13, the operator's view docs/operations.md. */
#include "bus.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "keyed_hash.h"
#include "log.h"
#include "names.h"
#include "nats_link.h"
#include "reply.h"
#include "router.h"

/* Arrivals handed to the router per call at most (the ROUTER gets its
 * turn between). */
#define TAKE_MAX 64

/* How often each broker says which names it holds (smartshop.dir), how
 * soon after a change at the earliest. The announcement is also each
 * broker's heartbeat: one not heard for SILENT_MS is *silent* (hung,
 * stopped, swapping, or gone), and while a holder of a name is silent,
 * requests and events for that name go to one of its other holders on
 * that broker's own subject rather than to the queue group, in which NATS
 * would go on handing the silent one its share (X10). The loop wakes at
 * least once a second, so a live broker announces at most 2 s apart.
 * list_services shows an entry until DIRECTORY_STALE_MS; the routing
 * remembers a silent broker until FORGET_MS (a broker that stops cleanly
 * says so and is forgotten at once). The routing never waits for the
 * directory: without a silent holder it is the queue group (X2). */
#define ANNOUNCE_EVERY_MS 1000
#define ANNOUNCE_AFTER_CHANGE_MS 200
#define SILENT_MS 3000
#define DIRECTORY_STALE_MS 6000
#define FORGET_MS (10 * 60 * 1000)
#define SWEEP_EVERY_MS 200
#define DIRECTORY_BROKERS_MAX 1024

/* One other broker's last announcement. */
typedef struct dir_entry {
    char id[NATS_BROKER_ID_MAX + 1];
    uint64_t seen_ms;
    bool silent;                /* not heard for SILENT_MS */
    cJSON *names;               /* {"name": instances, ...} */
    UT_hash_handle hh;
} dir_entry_t;

struct bus {
    router_t *router;
    dir_entry_t *directory;     /* by broker id */
    uint64_t announced_ms;      /* when this broker last announced */
    uint64_t swept_ms;          /* when silence was last looked for */
    int silent_count;           /* directory entries silent now */
    uint64_t turn;              /* round-robin over the live holders */
    uint64_t directed_out, directed_in;
    nats_link_t *link;
    bool joined;                /* connected at least once (the "joined" line) */
    bool closed_logged;         /* the "connection is closed" error, said once */
    bool left;                  /* bus_leave: names no longer offered */
};

/* --- the router's hooks: what leaves --- */

/* The instances broker entry `e` announced for `name`, 0 if none. */
static int instances_at(const dir_entry_t *e, const char *name)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(e->names, name);
    return cJSON_IsNumber(n) && n->valueint > 0 ? n->valueint : 0;
}

/* Where a request or event for `name` goes: its queue group's subject;
 * but while a broker holding it is silent, the own subject of one of the
 * holders that are not, in turn by their instances. With no live holder
 * known (all silent, or one not announced yet) it stays the queue group:
 * a name just registered elsewhere is reached, a hung one's share times
 * out as before. */
static bool subject_for(bus_t *bus, nats_kind_t kind, const char *name, char *out)
{
    size_t len = strlen(name);
    if (bus->silent_count > 0) {
        uint64_t live = 0;
        bool silent_holder = false;
        dir_entry_t *e, *tmp;
        HASH_ITER(hh, bus->directory, e, tmp) {
            int k = instances_at(e, name);
            if (e->silent)
                silent_holder |= k > 0;
            else
                live += (uint64_t)k;
        }
        if (silent_holder && live > 0) {
            uint64_t pick = bus->turn++ % live;
            HASH_ITER(hh, bus->directory, e, tmp) {
                if (e->silent)
                    continue;
                uint64_t k = (uint64_t)instances_at(e, name);
                if (pick < k) {
                    bus->directed_out++;
                    return nats_subject_for_broker(e->id, kind, name, len, out, NATS_SUBJECT_MAX);
                }
                pick -= k;
            }
        }
    }
    return nats_subject_for_name(kind, name, len, out, NATS_SUBJECT_MAX);
}

static int hook_request(void *ctx, const char *name, uint64_t seq, const char *msg_id,
                        size_t id_len, const void *data, size_t len)
{
    bus_t *bus = ctx;
    char subject[NATS_SUBJECT_MAX], reply[NATS_SUBJECT_MAX];
    if (!subject_for(bus, NL_REQUEST, name, subject))
        return -1;
    nats_link_reply_subject(bus->link, 'r', seq, msg_id, id_len, reply);
    return nats_link_publish(bus->link, subject, reply, data, len);
}

static int hook_event(void *ctx, const char *name, uint64_t seq, const char *msg_id,
                      size_t id_len, const void *data, size_t len)
{
    bus_t *bus = ctx;
    char subject[NATS_SUBJECT_MAX], reply[NATS_SUBJECT_MAX];
    if (!subject_for(bus, NL_EVENT, name, subject))
        return -1;
    nats_link_reply_subject(bus->link, 'e', seq, msg_id, id_len, reply);
    return nats_link_publish(bus->link, subject, reply, data, len);
}

static int hook_broadcast(void *ctx, const void *data, size_t len)
{
    bus_t *bus = ctx;
    return nats_link_publish(bus->link, "smartshop.bcast", NULL, data, len);
}

static int hook_topic(void *ctx, const void *data, size_t len)
{
    bus_t *bus = ctx;
    return nats_link_publish(bus->link, "smartshop.topic", NULL, data, len);
}

static int hook_answer(void *ctx, const char *origin, char kind, uint64_t seq, const char *msg_id,
                       size_t id_len, const void *data, size_t len)
{
    bus_t *bus = ctx;
    char reply[NATS_SUBJECT_MAX];
    nats_reply_subject(origin, kind, seq, msg_id, id_len, reply);
    return nats_link_publish(bus->link, reply, NULL, data, len);
}

static void hook_holds(void *ctx, const char *name, size_t len, int delta)
{
    static log_ratelimit_t failures;
    bus_t *bus = ctx;
    if (delta < 0) {
        nats_link_release(bus->link, name, len);
        return;
    }
    if (bus->left)
        return;                 /* stopping: new names are local only */
    if (nats_link_hold(bus->link, name, len) < 0)
        log_limited(&failures, 10, LOG_LEVEL_WARN,
                    "could not offer %.*s on the bus: other brokers will not reach it here",
                    (int)len, name);
}

/* --- the directory (list_services) --- */

static void directory_drop(bus_t *bus, dir_entry_t *e)
{
    if (e->silent)
        bus->silent_count--;
    HASH_DEL(bus->directory, e);
    cJSON_Delete(e->names);
    free(e);
}

static void directory_heard(bus_t *bus, const char *data, size_t len)
{
    cJSON *msg = cJSON_ParseWithLength(data, len);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(msg, "broker");
    cJSON *names = cJSON_GetObjectItemCaseSensitive(msg, "names");
    if (!cJSON_IsString(id) || !nats_broker_id_valid(id->valuestring) || !cJSON_IsObject(names) ||
        strcmp(id->valuestring, nats_link_broker_id(bus->link)) == 0) {
        router_bus_refused(bus->router);
        cJSON_Delete(msg);
        return;
    }
    dir_entry_t *e = NULL;
    HASH_FIND_STR(bus->directory, id->valuestring, e);
    if (!e && HASH_COUNT(bus->directory) < DIRECTORY_BROKERS_MAX && (e = calloc(1, sizeof *e))) {
        snprintf(e->id, sizeof e->id, "%s", id->valuestring);
        HASH_ADD_STR(bus->directory, id, e);
    }
    if (e) {
        cJSON_Delete(e->names);
        e->names = cJSON_DetachItemViaPointer(msg, names);
        e->seen_ms = clock_ms();
        if (e->silent) {
            e->silent = false;
            bus->silent_count--;
            log_info("broker %s is heard again on the bus", e->id);
        }
        if (!e->names->child)
            directory_drop(bus, e);     /* it left the bus (X8) */
    }
    cJSON_Delete(msg);
}

static void announce(bus_t *bus, uint64_t now)
{
    static log_ratelimit_t too_large;
    /* tried once per period even when it cannot go (no server, over
     * max_payload): not rebuilt on every pass of the loop */
    bus->announced_ms = now;
    if (!nats_link_connected(bus->link))
        return;
    size_t len = 0;
    char *text = nats_link_directory_text(bus->link, &len);
    if (text && nats_link_publish(bus->link, "smartshop.dir", NULL, text, len) == -2)
        log_limited(&too_large, 1, LOG_LEVEL_WARN, "the list of this broker's names (%zu bytes) "
                    "is over the NATS servers' max_payload: the other brokers do not see them "
                    "(list_services) and take this broker for silent (X10)", len);
    free(text);
}

/* Marks the brokers not heard for SILENT_MS, forgets those gone long. */
static void sweep(bus_t *bus, uint64_t now)
{
    if (now - bus->swept_ms < SWEEP_EVERY_MS)
        return;
    bus->swept_ms = now;
    dir_entry_t *e, *tmp;
    HASH_ITER(hh, bus->directory, e, tmp) {
        if (now - e->seen_ms > FORGET_MS) {
            directory_drop(bus, e);
        } else if (!e->silent && now - e->seen_ms > SILENT_MS) {
            e->silent = true;
            bus->silent_count++;
            log_warn("broker %s has said nothing on the bus for %llu ms (hung, stopped or gone): "
                     "names it holds go to their other holders", e->id,
                     (unsigned long long)(now - e->seen_ms));
        }
    }
}

static void announce_if_due(bus_t *bus)
{
    uint64_t now = clock_ms();
    sweep(bus, now);
    if (now - bus->announced_ms >= ANNOUNCE_EVERY_MS ||
        (nats_link_directory_dirty(bus->link) && now - bus->announced_ms >= ANNOUNCE_AFTER_CHANGE_MS))
        announce(bus, now);
}

_Static_assert(NATS_BROKER_ID_MAX == BUS_BROKER_ID_MAX, "bus_hooks.h's broker id bound");

/* The names other brokers announced lately (within DIRECTORY_STALE_MS;
 * older ones are still remembered for the routing, see sweep), one call
 * of fn each, with whether their broker is silent. */
static void hook_each_remote(void *ctx, bus_remote_fn fn, void *arg)
{
    bus_t *bus = ctx;
    uint64_t now = clock_ms();
    dir_entry_t *e, *tmp;
    HASH_ITER(hh, bus->directory, e, tmp) {
        if (now - e->seen_ms > DIRECTORY_STALE_MS)
            continue;
        for (const cJSON *item = e->names->child; item; item = item->next)
            if (cJSON_IsNumber(item) && name_is_valid(item->string, strlen(item->string)))
                fn(arg, item->string, e->id, item->valueint, e->silent);
    }
}

/* list_services' text of the same names, written into out[cap] */
typedef struct {
    char *out;
    size_t cap, n;
    bool first, cut;
} remote_text_t;

static void write_remote(void *arg, const char *name, const char *broker, int instances,
                         bool silent)
{
    (void)silent;
    remote_text_t *t = arg;
    if (t->cut)
        return;
    char entry[NAME_MAX_LEN + NATS_BROKER_ID_MAX + 64];
    int w = snprintf(entry, sizeof entry, "%s{\"name\":\"%s\",\"broker\":\"%s\",\"instances\":%d}",
                     t->first ? "" : ",", name, broker, instances);
    if (w < 0 || t->n + (size_t)w + 32 > t->cap) {
        t->cut = true;
        return;
    }
    memcpy(t->out + t->n, entry, (size_t)w);
    t->n += (size_t)w;
    t->first = false;
}

static size_t hook_remote(void *ctx, char *out, size_t cap)
{
    bus_t *bus = ctx;
    remote_text_t t = {out, cap, 0, true, false};
    t.n = (size_t)snprintf(out, cap, "\"broker_id\":\"%s\",\"remote\":[",
                           nats_link_broker_id(bus->link));
    hook_each_remote(bus, write_remote, &t);
    t.n += (size_t)snprintf(out + t.n, cap - t.n, t.cut ? "],\"remote_truncated\":true," : "],");
    return t.n;
}

/* --- what arrives --- */

static void dispatch(bus_t *bus, const nats_in_t *in)
{
    router_t *r = bus->router;
    char origin[NATS_BROKER_ID_MAX + 1], kind, msg_id[129], name[NAME_MAX_LEN + 1];
    uint64_t seq;
    size_t id_len;
    switch (in->kind) {
    case NL_REQUEST:
    case NL_EVENT:
        if (!in->reply || !nats_parse_reply(in->reply, origin, &kind, &seq, msg_id, &id_len) ||
            !nats_name_of_subject(in->subject, name, sizeof name) ||
            kind != (in->kind == NL_REQUEST ? 'r' : 'e')) {
            router_bus_refused(r);
            return;
        }
        if (in->direct)
            bus->directed_in++;
        if (in->kind == NL_REQUEST)
            router_bus_request(r, origin, seq, name, in->data, in->len);
        else
            router_bus_event(r, origin, seq, name, in->data, in->len);
        return;
    case NL_BROADCAST:
    case NL_TOPIC:
        router_bus_broadcast(r, in->data, in->len, in->kind == NL_TOPIC);
        return;
    case NL_DIRECTORY:
        directory_heard(bus, in->data, in->len);
        return;
    case NL_DIRECT:             /* smartshop.to.<own id>. and nothing we know */
    case NL_KINDS:
        router_bus_refused(r);
        return;
    case NL_REPLY:
        if (!nats_parse_reply(in->subject, origin, &kind, &seq, msg_id, &id_len) ||
            strcmp(origin, nats_link_broker_id(bus->link)) != 0) {
            router_bus_refused(r);
            return;
        }
        router_bus_reply(r, kind, seq, msg_id, id_len, in->data, in->len,
                         in->no_responders || in->len == 0);
        return;
    }
}

/* libnats closes a connection for good when the server refuses it (an
 * unknown nkey, plain TCP to a TLS port): say so once, loudly, with the
 * cause; the broker goes on serving its own peers. */
static void log_closed(bus_t *bus, const char *error)
{
    if (bus->closed_logged)
        return;
    bus->closed_logged = true;
    log_error("the NATS connection is closed%s%s: this broker serves only its own peers "
              "until it restarts (check --nats, --nats-nkey and --nats-ca)",
              *error ? ": " : "", error);
}

/* State changes seen on the library's threads, logged from the loop. */
static void log_changes(bus_t *bus)
{
    char error[160];
    int changes = nats_link_take_changes(bus->link, error, sizeof error);
    if (!changes)
        return;
    if (changes & NL_CHANGED_ERROR)
        log_warn("NATS: %s", error);
    if (changes & NL_CHANGED_DISCONNECTED)
        log_warn("lost the NATS server: names held only on other brokers get no_such_service "
                 "until the bus is back");
    if ((changes & NL_CHANGED_RECONNECTED) && nats_link_connected(bus->link)) {
        log_info("%s the bus as %s", bus->joined ? "rejoined" : "joined",
                 nats_link_broker_id(bus->link));
        bus->joined = true;
    }
    if (changes & NL_CHANGED_CLOSED)
        log_closed(bus, error);
}

void bus_poll_prepare(bus_t *bus, struct pollfd fds[2])
{
    nats_link_poll_prepare(bus->link, fds);
}

bool bus_poll_done(bus_t *bus, const struct pollfd fds[2], int max)
{
    nats_link_poll_done(bus->link, fds);
    if (fds[1].revents)
        log_changes(bus);
    announce_if_due(bus);
    nats_in_t in[TAKE_MAX];
    for (int done = 0; done < max;) {
        size_t n = nats_link_take(bus->link, in, TAKE_MAX);
        if (n == 0)
            return false;
        for (size_t i = 0; i < n; i++) {
            dispatch(bus, &in[i]);
            nats_in_release(&in[i]);
        }
        done += (int)n;
    }
    return nats_link_pending(bus->link);
}

static void hook_describe(void *ctx, cJSON *into);

/* --- life --- */

bus_t *bus_new(router_t *r, const config_t *cfg, char *err, size_t errlen)
{
    bus_t *bus = calloc(1, sizeof *bus);
    if (!bus) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    bus->router = r;
    nats_link_config_t lc = {
        .urls = cfg->nats_urls,
        .broker_id = cfg->broker_id,
        .nkey_seed_file = cfg->nats_nkey,
        .ca_file = cfg->nats_ca,
        .ping_interval_ms = 2000,
        .queue_limit = 65536,
    };
    if (!(bus->link = nats_link_new(&lc, err, errlen))) {
        free(bus);
        return NULL;
    }
    bus_hooks_t hooks = {bus, hook_request, hook_event, hook_broadcast, hook_topic, hook_answer,
                         hook_holds, hook_describe, hook_remote, hook_each_remote};
    if (router_bus_start(r, hooks) < 0) {
        snprintf(err, errlen, "out of memory");
        bus_free(&bus);
        return NULL;
    }
    if (nats_link_connected(bus->link)) {
        log_info("joined the bus as %s (NATS %s)", cfg->broker_id, cfg->nats_urls);
        bus->joined = true;
    } else if (nats_link_closed(bus->link)) {
        char error[160];
        nats_link_take_changes(bus->link, error, sizeof error);
        log_closed(bus, error);
    } else {
        log_warn("no NATS server answers yet (%s); names held elsewhere get no_such_service "
                 "until one does", cfg->nats_urls);
    }
    return bus;
}

void bus_leave(bus_t *bus)
{
    bus->left = true;
    nats_link_release_all(bus->link);
    announce(bus, clock_ms());          /* no names: the others drop it from their lists */
}

void bus_flush(bus_t *bus, int ms)
{
    nats_link_flush(bus->link, ms);
}

void bus_free(bus_t **self_p)
{
    bus_t *bus = *self_p;
    if (!bus)
        return;
    router_bus_stop(bus->router);
    nats_link_free(&bus->link);
    dir_entry_t *e, *tmp;
    HASH_ITER(hh, bus->directory, e, tmp)
        directory_drop(bus, e);
    free(bus);
    *self_p = NULL;
}

static void hook_describe(void *ctx, cJSON *into)
{
    bus_t *bus = ctx;
    nats_link_stats_t st;
    nats_link_stats(bus->link, &st);
    cJSON_AddStringToObject(into, "broker_id", nats_link_broker_id(bus->link));
    cJSON_AddBoolToObject(into, "connected", nats_link_connected(bus->link));
    cJSON_AddNumberToObject(into, "disconnects", (double)st.disconnects);
    cJSON_AddNumberToObject(into, "reconnects", (double)st.reconnects);
    cJSON_AddNumberToObject(into, "queue_dropped", (double)st.queue_dropped);
    cJSON_AddNumberToObject(into, "subscriptions", (double)st.subscriptions);
    cJSON_AddNumberToObject(into, "directed_out", (double)bus->directed_out);
    cJSON_AddNumberToObject(into, "directed_in", (double)bus->directed_in);
    cJSON *silent = cJSON_AddArrayToObject(into, "silent");
    dir_entry_t *e, *tmp;
    HASH_ITER(hh, bus->directory, e, tmp)
        if (e->silent)
            cJSON_AddItemToArray(silent, cJSON_CreateString(e->id));
}
