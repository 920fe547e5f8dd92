/* services: the Lua services host. See services.h. */
#include "services.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "lua_service.h"
#include "reply.h"

#define RELOAD_DELAY_MS 100

/* A message waiting for a hosted service (in the queue), or one a service
 * sent during a run, waiting to be handed to the router (in the outbox). */
typedef struct queued_msg {
    struct queued_msg *next;
    zmq_msg_t data;
    envelope_t env;              /* read already, when has_env: points into data */
    bool has_env;
    uint8_t peer_id[PEER_ID_MAX]; /* by identity (the queue: the service it is for;
                                     the outbox: the one that sent it) */
    uint8_t peer_id_len;
    peer_t *peer;                /* that hosted peer, valid while no hosted peer has */
    uint64_t removals;           /* been removed since (registry_hosted_removals) */
} queued_msg_t;

/* A first-in first-out list of entries. */
typedef struct {
    queued_msg_t *head, *tail;
} msg_list_t;

/* Emptied queue entries kept for the next messages (one per message
 * otherwise costs a malloc and a free). */
#define SERVICES_SPARES_MAX 1024

#define SERVICES_MAX_PENDING_FILES 32

/* The host's record of one service: the service itself (lua_service.c's)
 * and the count of its messages in the queue. A hosted peer's `host`
 * points here. */
typedef struct hosted {
    lua_service_t *svc;
    uint32_t queued;             /* messages waiting for it, at most queue_limit */
    struct hosted *next;
} hosted_t;

struct services {
    router_t *router;
    lua_host_t host;            /* what each service is given: services_send */
    char *dir;
    sandbox_limits_t limits;
    uint32_t queue_limit;        /* messages waiting for one service, at most */
    hosted_t *list;
    msg_list_t queue;            /* messages waiting for the services */
    msg_list_t outbox;           /* what the services sent during this run */
    bool running;                /* handlers or timers running: sends go to the outbox */
    queued_msg_t *spare;
    int spare_count;
    struct {
        char file[128];
        uint64_t due_ms;
    } pending[SERVICES_MAX_PENDING_FILES];   /* changed files, reloaded shortly */
    int pending_count;
};

static void host_send(void *ctx, peer_t *from, zmq_msg_t *data, envelope_t *env)
{
    services_send(ctx, from, data, env);
}

services_t *services_new(router_t *router, const char *dir, sandbox_limits_t limits,
                         uint32_t queue_limit, uint32_t request_timeout_ms)
{
    services_t *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return NULL;
    }
    s->router = router;
    s->host = (lua_host_t){.ctx = s, .send = host_send, .request_timeout_ms = request_timeout_ms};
    s->limits = limits;
    s->queue_limit = queue_limit;
    return s;
}

static bool is_service_file(const char *file)
{
    size_t n = strlen(file);
    return n > 4 && n < 128 && file[0] != '.' && strcmp(file + n - 4, ".lua") == 0;
}

static hosted_t *find_by_file(services_t *s, const char *file)
{
    for (hosted_t *h = s->list; h; h = h->next)
        if (strcmp(lua_service_file(h->svc), file) == 0)
            return h;
    return NULL;
}

/* Sends a register or unregister for the service's name, through the
 * router like any peer's: policies' on_register hooks apply. */
static void send_registration(services_t *s, hosted_t *h, const char *type, const char *name)
{
    cJSON *msg = cJSON_CreateObject();
    char id[37], ts[32];
    reply_new_uuid(id);
    reply_timestamp(ts);
    cJSON_AddStringToObject(msg, "msg_id", id);
    cJSON_AddStringToObject(msg, "type", type);
    cJSON_AddStringToObject(msg, "src", name);
    cJSON_AddStringToObject(msg, "dst", "broker");
    cJSON_AddStringToObject(msg, "action", type);
    cJSON_AddStringToObject(msg, "timestamp", ts);
    char *text = cJSON_PrintUnformatted(msg);
    cJSON_Delete(msg);
    if (text)
        router_inject(s->router, lua_service_peer(h->svc), text, strlen(text));
    cJSON_free(text);
}

/* Drops a service: its registrations go, requests handed to it get
 * service_gone, messages queued for it are dropped when reached. */
static void drop_service(services_t *s, hosted_t *h)
{
    for (hosted_t **p = &s->list; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            break;
        }
    }
    peer_t *peer = lua_service_peer(h->svc);
    if (peer)
        router_peer_gone(s->router, peer);
    lua_service_free(&h->svc);
    free(h);
}

/* Gives a loaded service its peer and its place in the list, and
 * registers its name and subscriptions. Returns false if memory ran out. */
static bool start_service(services_t *s, lua_service_t *svc, const char *file)
{
    hosted_t *h = calloc(1, sizeof *h);
    char id[PEER_ID_MAX];
    int n = snprintf(id, sizeof id, "lua:%s", file);
    peer_t *peer = h ? registry_add_peer(router_registry(s->router), id, (size_t)n, PEER_LUA, -1)
                     : NULL;
    if (!peer) {
        free(h);
        return false;
    }
    h->svc = svc;
    peer->host = h;
    lua_service_set_peer(svc, peer);
    h->next = s->list;
    s->list = h;
    send_registration(s, h, "register", lua_service_name(svc));
    return true;
}

/* Loads (or reloads) one file. A version that fails to load leaves the
 * running one, if any, in place. */
static void load_file(services_t *s, const char *file)
{
    hosted_t *h = find_by_file(s, file);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", s->dir, file);
    if (access(path, F_OK) != 0) {
        if (h) {
            log_info("service %s (%s): file removed; unregistering", lua_service_name(h->svc), file);
            drop_service(s, h);
        }
        return;
    }
    lua_service_t *svc = h ? h->svc : lua_service_new(&s->host, path, file, s->limits.instruction_limit);
    if (!svc) {
        log_error("service %s: out of memory", file);
        return;
    }
    char err[1024];
    lua_version_t *fresh = lua_version_load(svc, s->limits, err, sizeof err);
    if (!fresh) {
        if (!h) {
            log_error("service %s not loaded: %s", file, err);
            lua_service_free(&svc);
        } else if (lua_service_is_broken(svc)) {
            log_error("service %s dropped: its Lua state failed and the file does not load: %s",
                      file, err);
            drop_service(s, h);
        } else {
            log_error("service %s refused, the previous version keeps running: %s", file, err);
        }
        return;
    }
    if (h && lua_service_hand_over(svc, fresh, err, sizeof err) < 0) {
        log_error("service %s refused, the previous version keeps running: %s", file, err);
        lua_version_free(&fresh);
        return;
    }
    lua_version_t *old = lua_service_swap_version(svc, fresh);
    if (!h) {
        if (!start_service(s, svc, file)) {
            log_error("service %s: cannot add its peer", file);
            lua_service_free(&svc);
            return;
        }
        lua_service_send_subscriptions(fresh, fresh, "subscribe");
        log_info("service %s loaded from %s", lua_version_name(fresh), file);
        return;
    }
    if (strcmp(lua_version_name(old), lua_version_name(fresh)) != 0) {
        send_registration(s, h, "unregister", lua_version_name(old));
        send_registration(s, h, "register", lua_version_name(fresh));
    }
    /* the peer and its subscriptions stay across a reload: the old list
     * goes, the new one comes (the same patterns again are idempotent) */
    lua_service_send_subscriptions(fresh, old, "unsubscribe");
    lua_service_send_subscriptions(fresh, fresh, "subscribe");
    lua_version_abandon_later(old, "the service was reloaded before it answered");
    lua_version_free(&old);
    log_info("service %s reloaded from %s", lua_version_name(fresh), file);
}

int services_load_all(services_t *s)
{
    DIR *dir = opendir(s->dir);
    if (!dir) {
        log_warn("services directory %s: %s", s->dir, strerror(errno));
        return 0;
    }
    int loaded = 0;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (!is_service_file(entry->d_name))
            continue;
        load_file(s, entry->d_name);
        loaded += find_by_file(s, entry->d_name) != NULL;
    }
    closedir(dir);
    return loaded;
}

static void list_push(msg_list_t *list, queued_msg_t *q)
{
    q->next = NULL;
    if (list->tail)
        list->tail->next = q;
    else
        list->head = q;
    list->tail = q;
}

static queued_msg_t *list_pop(msg_list_t *list)
{
    queued_msg_t *q = list->head;
    if (q) {
        list->head = q->next;
        if (!list->head)
            list->tail = NULL;
    }
    return q;
}

static void list_free(msg_list_t *list)
{
    queued_msg_t *q;
    while ((q = list_pop(list))) {
        zmq_msg_close(&q->data);
        free(q);
    }
}

void services_free(services_t **self_p)
{
    services_t *s = *self_p;
    if (!s)
        return;
    while (s->list)
        drop_service(s, s->list);
    list_free(&s->queue);
    list_free(&s->outbox);
    while (s->spare) {
        queued_msg_t *q = s->spare;
        s->spare = q->next;
        free(q);
    }
    free(s->dir);
    free(s);
    *self_p = NULL;
}

/* An entry holding `data` (moved in) and its envelope, tagged with `peer`'s
 * identity; NULL if memory ran out. */
static queued_msg_t *entry_new(services_t *s, peer_t *peer, zmq_msg_t *data,
                               const envelope_t *env)
{
    queued_msg_t *q = s->spare;
    if (q) {
        s->spare = q->next;
        s->spare_count--;
    } else if (!(q = malloc(sizeof *q))) {
        return NULL;
    }
    zmq_msg_init(&q->data);
    zmq_msg_move(&q->data, data);
    q->has_env = env != NULL;
    if (env) {
        q->env = *env;
        envelope_rebase(&q->env, zmq_msg_data(&q->data));
    }
    memcpy(q->peer_id, peer->id, peer->id_len);
    q->peer_id_len = peer->id_len;
    q->peer = peer->kind == PEER_LUA ? peer : NULL;
    q->removals = registry_hosted_removals(router_registry(s->router));
    return q;
}

/* The hosted peer an entry is for (or from), if it is still there: the
 * pointer kept while no hosted peer has been removed since the entry was
 * made (most often: no keyed hash), else found again by its identity. */
static peer_t *entry_peer(services_t *s, const queued_msg_t *q)
{
    registry_t *reg = router_registry(s->router);
    if (q->peer && q->removals == registry_hosted_removals(reg))
        return q->peer;
    return registry_find_hosted(reg, q->peer_id, q->peer_id_len);
}

static void entry_free(services_t *s, queued_msg_t *q)
{
    zmq_msg_close(&q->data);
    if (s->spare_count < SERVICES_SPARES_MAX) {
        q->next = s->spare;
        s->spare = q;
        s->spare_count++;
    } else {
        free(q);
    }
}

int services_enqueue(services_t *s, peer_t *to, zmq_msg_t *data, const envelope_t *env)
{
    hosted_t *h = to->host;
    if (h->queued >= s->queue_limit) {
        errno = EAGAIN;
        return -1;
    }
    queued_msg_t *q = entry_new(s, to, data, env);
    if (!q) {
        errno = EAGAIN;
        return -1;
    }
    list_push(&s->queue, q);
    h->queued++;
    return 0;
}

/* A message a service sent, to the router: read already or not. */
static void hand_to_router(services_t *s, peer_t *from, zmq_msg_t *data, envelope_t *env)
{
    if (env)
        router_inject_made(s->router, from, data, env);
    else
        router_inject_frame(s->router, from, data);
}

/* Hands one sent message to the router, if its service is still there. */
static void route_sent(services_t *s, queued_msg_t *q)
{
    peer_t *from = entry_peer(s, q);
    if (from)
        hand_to_router(s, from, &q->data, q->has_env ? &q->env : NULL);
}

void services_send(services_t *s, peer_t *from, zmq_msg_t *data, envelope_t *env)
{
    queued_msg_t *q = s->running ? entry_new(s, from, data, env) : NULL;
    if (!q) {       /* outside a run (or out of memory): at once */
        hand_to_router(s, from, data, env);
        return;
    }
    list_push(&s->outbox, q);
}

static void flush_outbox(services_t *s)
{
    queued_msg_t *q;
    while ((q = list_pop(&s->outbox))) {
        route_sent(s, q);
        entry_free(s, q);
    }
}

void services_file_changed(services_t *s, const char *file)
{
    if (!is_service_file(file))
        return;
    uint64_t due = clock_ms() + RELOAD_DELAY_MS;
    for (int i = 0; i < s->pending_count; i++)
        if (strcmp(s->pending[i].file, file) == 0)
            return;                         /* already due: one reload covers it */
    if (s->pending_count == SERVICES_MAX_PENDING_FILES) {
        log_warn("services: too many changes at once; %s reloads on the next change", file);
        return;
    }
    snprintf(s->pending[s->pending_count].file, sizeof s->pending[0].file, "%s", file);
    s->pending[s->pending_count].due_ms = due;
    s->pending_count++;
}

/* One queued message: to its service, if that is still there. Returns
 * false, leaving it queued, if that service has spent this pass. */
static bool deliver_queued(services_t *s, queued_msg_t *q)
{
    peer_t *peer = entry_peer(s, q);
    if (!peer)
        return true;                        /* dropped meanwhile: already answered */
    hosted_t *h = peer->host;
    if (lua_service_pass_spent(h->svc))
        return false;
    h->queued--;
    const char *why;
    if (!q->has_env &&
        envelope_parse(&q->env, zmq_msg_data(&q->data), zmq_msg_size(&q->data), &why) != ERR_NONE) {
        log_error("service %s: got a message the broker should have refused: %s",
                  lua_service_name(h->svc), why ? why : "");
        return true;
    }
    lua_service_handle(h->svc, &q->env);
    return true;
}

/* Delivers what waits now: messages the handlers send are for the next
 * pass, and so are those of a service that has spent its pass budget
 * (kept in front, in their order: a service's messages never overtake
 * each other). */
static void deliver_all_queued(services_t *s)
{
    queued_msg_t *last = s->queue.tail, *q;
    msg_list_t waiting = {NULL, NULL};
    while ((q = list_pop(&s->queue))) {
        bool was_last = q == last;
        if (deliver_queued(s, q))
            entry_free(s, q);
        else
            list_push(&waiting, q);
        if (was_last)
            break;
    }
    if (waiting.head) {
        waiting.tail->next = s->queue.head;
        if (!s->queue.head)
            s->queue.tail = waiting.tail;
        s->queue.head = waiting.head;
    }
}

/* A pass: every service may spend its pass budget again. */
static void begin_pass(services_t *s)
{
    for (hosted_t *h = s->list; h; h = h->next)
        lua_service_begin_pass(h->svc);
}

bool services_have_queued(const services_t *s)
{
    return s->queue.head != NULL;
}

void services_run_queued(services_t *s)
{
    begin_pass(s);
    s->running = true;
    deliver_all_queued(s);
    s->running = false;
    flush_outbox(s);
}

void services_run(services_t *s, uint64_t now_ms)
{
    begin_pass(s);
    s->running = true;
    deliver_all_queued(s);
    for (hosted_t *h = s->list; h; h = h->next)
        if (!lua_service_pass_spent(h->svc) && lua_service_next_timer(h->svc) <= now_ms)
            lua_service_run_timers(h->svc, now_ms);
    s->running = false;
    flush_outbox(s);        /* before any service is reloaded or dropped */
    /* a state that failed (a Lua panic: a bug) is replaced from its file */
    for (hosted_t *h = s->list, *next; h; h = next) {
        next = h->next;
        if (lua_service_is_broken(h->svc)) {
            char file[128];
            snprintf(file, sizeof file, "%s", lua_service_file(h->svc));
            load_file(s, file);
        }
    }
    for (int i = 0; i < s->pending_count;) {
        if (s->pending[i].due_ms > now_ms) {
            i++;
            continue;
        }
        char file[128];
        snprintf(file, sizeof file, "%s", s->pending[i].file);
        s->pending[i] = s->pending[--s->pending_count];
        load_file(s, file);
    }
}

uint64_t services_next_due(const services_t *s)
{
    if (services_have_queued(s))
        return 0;
    uint64_t next = UINT64_MAX;
    for (const hosted_t *h = s->list; h; h = h->next) {
        uint64_t t = lua_service_next_timer(h->svc);
        if (t < next)
            next = t;
    }
    for (int i = 0; i < s->pending_count; i++)
        if (s->pending[i].due_ms < next)
            next = s->pending[i].due_ms;
    return next;
}
