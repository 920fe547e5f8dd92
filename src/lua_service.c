/* lua_service: one hosted Lua service. See lua_service.h. */
#include "lua_service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <cjson/cJSON.h>

#include "clock.h"
#include "log.h"
#include "lua_json.h"
#include "luamsg.h"
#include "msg_writer.h"
#include "reply.h"

typedef struct lua_timer {
    uint64_t due_ms;
    uint32_t every_ms;           /* 0: once */
    int fn_ref;                  /* LUA_NOREF once cancelled or fired */
    int id;
} lua_timer_t;

/* One loaded version of a service file. */
#define LUA_SERVICE_MAX_SUBSCRIPTIONS 32
/* Requests a version may hold for a late answer (bus.later) at once. */
#define LUA_SERVICE_MAX_LATER 4096

/* A request taken by bus.later(msg): what its answer needs, kept until it
 * is answered or its deadline passes. */
typedef struct {
    char src[NAME_MAX_LEN + 1];  /* the requester (the answer's dst) */
    char msg_id[MSG_ID_MAX_LEN + 1];  /* raw, as in the request (escapes kept) */
    char action[MSG_ID_MAX_LEN + 1];
    uint8_t msg_id_len, action_len;
    bool msg_id_escaped, action_escaped, has_action;
    uint64_t due_ms;             /* its deadline (ttl_ms or --request-timeout-ms); 0: free */
    uint32_t gen;                /* bumped when the slot is freed: old handles go stale */
} lua_later_t;

struct lua_version {
    struct lua_service *service; /* the service it belongs (or will belong) to */
    sandbox_t *sandbox;
    char name[NAME_MAX_LEN + 1];
    int table_ref;               /* the table the file returned */
    int bus_ref;                 /* its `bus` table (the global may be changed) */
    int pending_ref;             /* msg_id -> callback of requests it sent */
    unsigned handlers;           /* which on_* the table defines */
    lua_timer_t *timers;
    int timer_count, timer_cap, next_timer_id;
    int timer_cursor;            /* where the last pass over the timers stopped */
    /* the topic patterns the file's table declares (`subscribe = {...}`),
     * subscribed when the version starts (docs/lua-services.md) */
    struct {
        char pattern[TOPIC_MAX_LEN + 1];
        char group[NAME_MAX_LEN + 1];    /* "" for none */
    } subs[LUA_SERVICE_MAX_SUBSCRIPTIONS];
    int sub_count;
    lua_later_t *later;          /* requests waiting for a late answer */
    int later_count, later_cap;  /* slots in use (not yet answered), allocated */
    const envelope_t *current;   /* the request on_request is handling, or NULL */
    bool deferred;               /* on_request called bus.later(msg) for it */
};

struct lua_service {
    const lua_host_t *host;
    char path[512];
    char file[128];              /* its file name in the services directory */
    struct peer *peer;           /* its virtual peer (NULL until registered) */
    lua_version_t *version;      /* the running version */
    long pass_budget;            /* instructions its handlers and timers may spend in
                                    one pass of services.c before it waits (a call
                                    started within it may finish: at most twice this) */
    long pass_used;              /* spent in this pass (lua_service_begin_pass resets it) */
};

enum { ON_REQUEST = 1, ON_EVENT = 2, ON_BROADCAST = 4, ON_RELOAD = 8, ON_SAVE = 16 };

lua_service_t *lua_service_new(const lua_host_t *host, const char *path, const char *file,
                               long pass_budget)
{
    lua_service_t *svc = calloc(1, sizeof *svc);
    if (!svc)
        return NULL;
    svc->host = host;
    svc->pass_budget = pass_budget;
    snprintf(svc->file, sizeof svc->file, "%s", file);
    snprintf(svc->path, sizeof svc->path, "%s", path);
    return svc;
}

void lua_service_free(lua_service_t **self_p)
{
    lua_service_t *svc = *self_p;
    if (!svc)
        return;
    lua_version_free(&svc->version);
    free(svc);
    *self_p = NULL;
}

const char *lua_service_file(const lua_service_t *svc)
{
    return svc->file;
}

const char *lua_service_name(const lua_service_t *svc)
{
    return svc->version ? svc->version->name : "";
}

struct peer *lua_service_peer(const lua_service_t *svc)
{
    return svc->peer;
}

void lua_service_set_peer(lua_service_t *svc, struct peer *peer)
{
    svc->peer = peer;
}

lua_version_t *lua_service_swap_version(lua_service_t *svc, lua_version_t *fresh)
{
    lua_version_t *old = svc->version;
    svc->version = fresh;
    return old;
}

bool lua_service_is_broken(const lua_service_t *svc)
{
    return svc->version && sandbox_is_broken(svc->version->sandbox);
}

void lua_service_begin_pass(lua_service_t *svc)
{
    svc->pass_used = 0;
}

const char *lua_version_name(const lua_version_t *v)
{
    return v->name;
}

static log_ratelimit_t handler_error_limit;

static void handler_failed(const lua_version_t *v, const char *what, const char *err)
{
    log_limited(&handler_error_limit, 20, LOG_LEVEL_WARN, "service %s (%s): %s failed: %s",
                v->name, v->service->file, what, err);
}

/* --- sending: every message goes through the router like a peer's --- */

/* Builds an envelope from this service and hands it to the router.
 * `payload` is JSON text or NULL. Writes the new msg_id to `id_out`. */
static void send_from(lua_version_t *v, const char *type, const char *dst, const char *action,
                      const char *payload, const char *correlation_id, uint32_t ttl_ms,
                      const char *topic, char id_out[37])
{
    lua_service_t *svc = v->service;
    char ts[32];
    reply_new_uuid(id_out);
    reply_timestamp(ts);
    cJSON *msg = cJSON_CreateObject();
    cJSON_AddStringToObject(msg, "msg_id", id_out);
    cJSON_AddStringToObject(msg, "type", type);
    cJSON_AddStringToObject(msg, "src", v->name);
    if (dst && *dst)
        cJSON_AddStringToObject(msg, "dst", dst);
    else
        cJSON_AddNullToObject(msg, "dst");
    if (action && *action)
        cJSON_AddStringToObject(msg, "action", action);
    else
        cJSON_AddNullToObject(msg, "action");
    cJSON_AddItemToObject(msg, "payload", payload ? cJSON_CreateRaw(payload) : cJSON_CreateNull());
    if (correlation_id && *correlation_id)
        cJSON_AddStringToObject(msg, "correlation_id", correlation_id);
    else
        cJSON_AddNullToObject(msg, "correlation_id");
    cJSON_AddStringToObject(msg, "timestamp", ts);
    if (ttl_ms)
        cJSON_AddNumberToObject(msg, "ttl_ms", ttl_ms);
    if (topic)
        cJSON_AddStringToObject(msg, "topic", topic);
    char *text = cJSON_PrintUnformatted(msg);
    cJSON_Delete(msg);
    if (!text) {
        log_error("service %s: out of memory building a %s", v->name, type);
        return;
    }
    zmq_msg_t frame;
    if (svc->peer && zmq_msg_init_size(&frame, strlen(text)) == 0) {
        memcpy(zmq_msg_data(&frame), text, strlen(text));
        svc->host->send(svc->host->ctx, svc->peer, &frame, NULL);
        zmq_msg_close(&frame);
    }
    cJSON_free(text);
}

/* The response to `request`, written straight into a frame (msg_writer:
 * the hot path of a Lua service): dst, action and correlation_id come
 * from the request as read, the payload is checked JSON text. */
static void send_response(lua_version_t *v, const envelope_t *request, const char *payload,
                          size_t payload_len)
{
    lua_service_t *svc = v->service;
    if (!svc->peer)
        return;
    char id[37], ts[32];
    reply_new_uuid(id);
    reply_timestamp(ts);
    msg_field_t fields[EF__COUNT] = {
        [EF_MSG_ID] = msg_plain(id),
        [EF_TYPE] = msg_plain("response"),
        [EF_SRC] = msg_plain(v->name),
        [EF_DST] = msg_copy(&request->f[EF_SRC]),
        [EF_ACTION] = msg_copy(&request->f[EF_ACTION]),
        [EF_PAYLOAD] = payload ? msg_json(payload, payload_len) : msg_null(),
        [EF_CORRELATION_ID] = msg_copy(&request->f[EF_MSG_ID]),
        [EF_TIMESTAMP] = msg_plain(ts),
    };
    zmq_msg_t frame;
    envelope_t env;
    const char *why = NULL;
    bus_err_t err = msg_write(&frame, fields, &env, &why);
    if (err != ERR_NONE) {
        log_error("service %s: could not write a response (%s): %s", v->name,
                  bus_err_name(err), why ? why : "");
        zmq_msg_close(&frame);
        return;
    }
    svc->host->send(svc->host->ctx, svc->peer, &frame, &env);
    zmq_msg_close(&frame);
}

/* The Lua value at `index` as JSON text (malloc'd), or NULL with a Lua
 * error raised. */
static char *encode_arg(lua_State *L, int index)
{
    if (lua_isnoneornil(L, index))
        return NULL;
    char err[256];
    size_t len;
    char *text = luamsg_encode(L, index, &len, err, sizeof err);
    if (!text)
        luaL_error(L, "%s", err);
    return text;
}

/* --- the `bus` API --- */

static lua_version_t *bus_version(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

/* Sending is for handlers and timers of the running version, not for a
 * file's top level while it loads, nor for a version already replaced. */
static lua_version_t *bus_sender(lua_State *L, const char *fn)
{
    lua_version_t *v = bus_version(L);
    if (v->service->version != v || !v->service->peer)
        luaL_error(L, "bus.%s can be called from handlers and timers only", fn);
    return v;
}

static const char *check_name(lua_State *L, int index, bool allow_broadcast)
{
    size_t len;
    const char *name = luaL_checklstring(L, index, &len);
    if (allow_broadcast && strcmp(name, "broadcast") == 0)
        return name;
    if (!name_is_valid(name, len) && strcmp(name, "broker") != 0)
        luaL_error(L, "'%s' is not a service name", name);
    return name;
}

/* An event to `dst` or on `topic` (one of them NULL), its action and
 * payload the arguments at `action_index` and after; pushes its msg_id. */
static int send_event(lua_State *L, lua_version_t *v, const char *dst, const char *topic,
                      int action_index)
{
    const char *action = luaL_checkstring(L, action_index);
    char *payload = encode_arg(L, action_index + 1), id[37];
    send_from(v, "event", dst, action, payload, NULL, 0, topic, id);
    free(payload);
    lua_pushstring(L, id);
    return 1;
}

/* bus.event(dst, action, payload) -> msg_id */
static int bus_event(lua_State *L)
{
    lua_version_t *v = bus_sender(L, "event");
    return send_event(L, v, check_name(L, 1, true), NULL, 2);
}

/* bus.broadcast(action, payload) -> msg_id */
static int bus_broadcast(lua_State *L)
{
    return send_event(L, bus_sender(L, "broadcast"), "broadcast", NULL, 1);
}

/* bus.request(dst, action, payload, callback [, {timeout_ms = N}]) -> msg_id
 * callback(payload, nil) on a response, callback(nil, err) on an error,
 * where err = {code = "...", message = "..."}. */
static int bus_request(lua_State *L)
{
    lua_version_t *v = bus_sender(L, "request");
    const char *dst = check_name(L, 1, false);
    const char *action = luaL_checkstring(L, 2);
    luaL_checktype(L, 4, LUA_TFUNCTION);
    lua_Integer timeout = v->service->host->request_timeout_ms;
    if (lua_istable(L, 5)) {
        lua_getfield(L, 5, "timeout_ms");
        if (!lua_isnil(L, -1))
            timeout = luaL_checkinteger(L, -1);
        lua_pop(L, 1);
        luaL_argcheck(L, timeout >= 1 && timeout <= TTL_MS_MAX, 5, "timeout_ms must be 1..300000");
    }
    char *payload = encode_arg(L, 3), id[37];
    /* filing the callback after the send is safe: answers to a Lua service
     * are queued, and handled only after this handler returns */
    send_from(v, "request", dst, action, payload, NULL, (uint32_t)timeout, NULL, id);
    free(payload);
    lua_rawgeti(L, LUA_REGISTRYINDEX, v->pending_ref);
    lua_pushvalue(L, 4);
    lua_setfield(L, -2, id);
    lua_pop(L, 1);
    lua_pushstring(L, id);
    return 1;
}

/* The request to the broker that (un)subscribes `pattern`. */
static void send_subscription(lua_version_t *v, const char *action, const char *pattern,
                              const char *group, char id[37])
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "topic", pattern);
    if (group && *group)
        cJSON_AddStringToObject(p, "group", group);
    char *json = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    if (json)
        send_from(v, "request", "broker", action, json, NULL, 5000, NULL, id);
    cJSON_free(json);
}

void lua_service_send_subscriptions(lua_version_t *v, const lua_version_t *list,
                                    const char *action)
{
    char id[37];
    for (int i = 0; i < list->sub_count; i++)
        send_subscription(v, action, list->subs[i].pattern, list->subs[i].group, id);
}

/* Checks argument `index` as a topic (`pattern`: with wildcards). */
static const char *check_topic(lua_State *L, int index, bool pattern)
{
    size_t len;
    const char *topic = luaL_checklstring(L, index, &len), *why = NULL;
    if (!topic_is_valid(topic, len, pattern, &why))
        luaL_error(L, "'%s' is not a topic%s: %s", topic, pattern ? " pattern" : "", why);
    return topic;
}

/* bus.subscribe(pattern [, group]) / bus.unsubscribe(pattern [, group])
 * -> msg_id of the request to the broker (a refusal is logged) */
static int subscription_fn(lua_State *L, const char *action)
{
    lua_version_t *v = bus_sender(L, action);
    const char *pattern = check_topic(L, 1, true);
    const char *group = luaL_optstring(L, 2, NULL);
    if (group && !name_is_valid(group, strlen(group)))
        luaL_error(L, "'%s' is not a group name", group);
    char id[37];
    send_subscription(v, action, pattern, group, id);
    lua_pushstring(L, id);
    return 1;
}
static int bus_subscribe(lua_State *L) { return subscription_fn(L, "subscribe"); }
static int bus_unsubscribe(lua_State *L) { return subscription_fn(L, "unsubscribe"); }

/* bus.publish(topic, action, payload) -> msg_id: an event on a topic */
static int bus_publish(lua_State *L)
{
    lua_version_t *v = bus_sender(L, "publish");
    return send_event(L, v, NULL, check_topic(L, 1, false), 2);
}

static int add_timer(lua_State *L, uint32_t every)
{
    lua_version_t *v = bus_version(L);
    lua_Integer ms = luaL_checkinteger(L, 1);
    luaL_argcheck(L, ms >= 1 && ms <= 86400000, 1, "milliseconds must be 1..86400000");
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (v->timer_count == v->timer_cap) {
        int cap = v->timer_cap ? v->timer_cap * 2 : 4;
        if (cap > 1024)
            return luaL_error(L, "too many timers (1024 at most)");
        lua_timer_t *grown = realloc(v->timers, (size_t)cap * sizeof *grown);
        if (!grown)
            return luaL_error(L, "out of memory");
        v->timers = grown;
        v->timer_cap = cap;
    }
    lua_pushvalue(L, 2);
    lua_timer_t *t = &v->timers[v->timer_count++];
    t->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->due_ms = clock_ms() + (uint64_t)ms;
    t->every_ms = every ? (uint32_t)ms : 0;
    t->id = ++v->next_timer_id;
    lua_pushinteger(L, t->id);
    return 1;
}

/* bus.every(ms, fn) -> timer id; bus.after(ms, fn) -> timer id */
static int bus_every(lua_State *L) { return add_timer(L, 1); }
static int bus_after(lua_State *L) { return add_timer(L, 0); }

/* bus.cancel(timer id) -> true if it was pending */
static int bus_cancel(lua_State *L)
{
    lua_version_t *v = bus_version(L);
    lua_Integer id = luaL_checkinteger(L, 1);
    for (int i = 0; i < v->timer_count; i++) {
        if (v->timers[i].id == id && v->timers[i].fn_ref != LUA_NOREF) {
            luaL_unref(L, LUA_REGISTRYINDEX, v->timers[i].fn_ref);
            v->timers[i].fn_ref = LUA_NOREF;
            lua_pushboolean(L, 1);
            return 1;
        }
    }
    lua_pushboolean(L, 0);
    return 1;
}

/* --- late answers: bus.later(msg) --- */

static void later_free(lua_version_t *v, lua_later_t *slot)
{
    slot->due_ms = 0;
    slot->gen++;
    v->later_count--;
}

/* A free slot, or NULL when LUA_SERVICE_MAX_LATER are taken and none has
 * passed its deadline (those are dropped: the broker answered timeout). */
static lua_later_t *later_slot(lua_version_t *v)
{
    if (v->later_count == v->later_cap && v->later_cap < LUA_SERVICE_MAX_LATER) {
        int cap = v->later_cap ? 2 * v->later_cap : 16;
        if (cap > LUA_SERVICE_MAX_LATER)
            cap = LUA_SERVICE_MAX_LATER;
        lua_later_t *grown = realloc(v->later, (size_t)cap * sizeof *grown);
        if (!grown)
            return NULL;
        memset(grown + v->later_cap, 0, (size_t)(cap - v->later_cap) * sizeof *grown);
        v->later = grown;
        v->later_cap = cap;
    }
    if (v->later_count == v->later_cap) {
        uint64_t now = clock_ms();
        for (int i = 0; i < v->later_cap; i++)
            if (v->later[i].due_ms && v->later[i].due_ms <= now)
                later_free(v, &v->later[i]);
    }
    for (int i = 0; i < v->later_cap; i++)
        if (!v->later[i].due_ms)
            return &v->later[i];
    return NULL;
}

/* A string field of the request as stored raw (escapes kept). */
static bool copy_raw(const env_value_t *f, char *out, uint8_t *len, bool *escaped)
{
    if (f->kind != JSON_STRING || f->len > MSG_ID_MAX_LEN)
        return false;
    memcpy(out, f->ptr, f->len);
    out[f->len] = '\0';
    *len = (uint8_t)f->len;
    *escaped = f->escaped;
    return true;
}

/* The request a slot stands for, as an envelope its answer can be built
 * from (send_response, answer_error read src, action and msg_id). */
static void later_envelope(const lua_later_t *slot, envelope_t *env)
{
    memset(env, 0, sizeof *env);
    env->type = MT_REQUEST;
    env->f[EF_SRC] = (env_value_t){slot->src, (uint32_t)strlen(slot->src), JSON_STRING, false};
    env->f[EF_MSG_ID] = (env_value_t){slot->msg_id, slot->msg_id_len, JSON_STRING, slot->msg_id_escaped};
    if (slot->has_action)
        env->f[EF_ACTION] = (env_value_t){slot->action, slot->action_len, JSON_STRING,
                                          slot->action_escaped};
}

static void answer_error(lua_version_t *v, const envelope_t *env, const char *code, const char *text);
static void send_response(lua_version_t *v, const envelope_t *request, const char *payload,
                          size_t payload_len);

/* answer(value) / answer(nil, message [, code]): the late answer, as
 * on_request's results would have been. Returns true once; false, why
 * if it was answered already or its deadline passed (the requester got
 * timeout from the broker). Upvalues: the version, the slot, its gen. */
static int later_answer(lua_State *L)
{
    lua_version_t *v = lua_touserdata(L, lua_upvalueindex(1));
    lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
    uint32_t gen = (uint32_t)lua_tointeger(L, lua_upvalueindex(3));
    lua_later_t *slot = i < v->later_cap ? &v->later[i] : NULL;
    if (!slot || slot->gen != gen || !slot->due_ms) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "this request was answered already");
        return 2;
    }
    if (clock_ms() >= slot->due_ms) {
        later_free(v, slot);
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "the request's deadline passed (its requester got timeout)");
        return 2;
    }
    envelope_t env;
    later_envelope(slot, &env);
    if (lua_isnil(L, 1) && lua_type(L, 2) == LUA_TSTRING) {
        const char *code = lua_type(L, 3) == LUA_TSTRING ? lua_tostring(L, 3)
                                                         : bus_err_name(ERR_SERVICE_ERROR);
        answer_error(v, &env, code, lua_tostring(L, 2));
    } else {
        size_t len = 0;
        const char *payload = lua_json_raw(L, 1, &len);
        char *encoded = NULL, err[256];
        if (!payload && !lua_isnoneornil(L, 1)) {
            payload = encoded = luamsg_encode(L, 1, &len, err, sizeof err);
            if (!encoded)
                return luaL_error(L, "answer: %s", err);   /* not answered: may try again */
        }
        send_response(v, &env, payload, len);
        free(encoded);
    }
    later_free(v, slot);
    lua_pushboolean(L, 1);
    return 1;
}

/* bus.later(msg) -> answer: in on_request, takes the request to answer
 * later (from a bus.request callback, a timer...), exactly once, before
 * its deadline. on_request's own results are then ignored. */
static int bus_later(lua_State *L)
{
    lua_version_t *v = bus_version(L);
    const envelope_t *env = v->current;
    if (!env || v->service->version != v)
        return luaL_error(L, "bus.later(msg) can be called from on_request only, with its msg");
    if (!lua_isuserdata(L, 1))
        return luaL_error(L, "bus.later: pass the msg on_request got");
    if (v->deferred)
        return luaL_error(L, "bus.later: this request is taken already");
    lua_later_t *slot = later_slot(v);
    if (!slot)
        return luaL_error(L, "bus.later: %d requests wait for a late answer already, the most "
                             "a service may hold", LUA_SERVICE_MAX_LATER);
    size_t src_len = env->f[EF_SRC].len;
    if (src_len > NAME_MAX_LEN || !copy_raw(&env->f[EF_MSG_ID], slot->msg_id, &slot->msg_id_len,
                                            &slot->msg_id_escaped))
        return luaL_error(L, "bus.later: this request cannot be answered later");
    memcpy(slot->src, env->f[EF_SRC].ptr, src_len);
    slot->src[src_len] = '\0';
    slot->has_action = copy_raw(&env->f[EF_ACTION], slot->action, &slot->action_len,
                                &slot->action_escaped);
    uint32_t ttl = env->ttl_ms ? env->ttl_ms : v->service->host->request_timeout_ms;
    slot->due_ms = clock_ms() + ttl;
    v->later_count++;
    v->deferred = true;
    lua_pushlightuserdata(L, v);
    lua_pushinteger(L, slot - v->later);
    lua_pushinteger(L, slot->gen);
    lua_pushcclosure(L, later_answer, 3);
    return 1;
}

void lua_version_abandon_later(lua_version_t *v, const char *why)
{
    uint64_t now = clock_ms();
    for (int i = 0; v && i < v->later_cap; i++) {
        lua_later_t *slot = &v->later[i];
        if (!slot->due_ms)
            continue;
        if (slot->due_ms > now) {
            envelope_t env;
            later_envelope(slot, &env);
            answer_error(v, &env, bus_err_name(ERR_SERVICE_ERROR), why);
        }
        later_free(v, slot);
    }
}

/* bus.now_ms() -> a monotonic clock in milliseconds */
static int bus_now_ms(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)clock_ms());
    return 1;
}

static void open_bus(lua_State *L, lua_version_t *v)
{
    static const luaL_Reg fns[] = {
        {"event", bus_event},   {"broadcast", bus_broadcast}, {"request", bus_request},
        {"every", bus_every},   {"after", bus_after},         {"cancel", bus_cancel},
        {"now_ms", bus_now_ms}, {"subscribe", bus_subscribe}, {"unsubscribe", bus_unsubscribe},
        {"publish", bus_publish}, {"later", bus_later}, {NULL, NULL},
    };
    lua_newtable(L);
    lua_pushlightuserdata(L, v);
    luaL_setfuncs(L, fns, 1);
    luamsg_push_json_maker(L);
    lua_setfield(L, -2, "json");
    lua_pushvalue(L, -1);
    v->bus_ref = luaL_ref(L, LUA_REGISTRYINDEX);    /* the file may set bus = nil */
    lua_setglobal(L, "bus");
}

/* --- loading --- */

/* "inventory.lua" -> "inventory"; false if too long for a name. */
static bool name_from_file(const char *file, char out[NAME_MAX_LEN + 1])
{
    const char *dot = strrchr(file, '.');
    size_t len = dot ? (size_t)(dot - file) : strlen(file);
    if (len > NAME_MAX_LEN)
        return false;
    memcpy(out, file, len);
    out[len] = '\0';
    return true;
}

/* Everything a call into the version does goes through here: one
 * protected entry, the message view detached after, and what the call
 * spent added to the service's pass (services.c). */
static int run_protected(lua_version_t *v, lua_CFunction body, void *job, char *err, size_t errlen)
{
    int rc = sandbox_protected(v->sandbox, body, job, err, errlen);
    luamsg_release(sandbox_state(v->sandbox));
    v->service->pass_used += sandbox_last_used(v->sandbox);
    return rc;
}

typedef struct {
    lua_version_t *v;
    const char *text;
    size_t len;
    char *err;                  /* for a refusal that is not a Lua error */
    size_t errlen;
    bool refused;
} load_job_t;

static int refuse(load_job_t *job, const char *fmt, const char *a, const char *b)
{
    snprintf(job->err, job->errlen, fmt, a, b);
    job->refused = true;
    return 0;
}

/* subscribe = {"order.*", {"job.*", group = "workers"}, ...} (at the top
 * of the stack), read raw into v->subs. -1 when refused (job says why). */
static int read_subscriptions(lua_State *L, load_job_t *job)
{
    lua_version_t *v = job->v;
    const char *path = v->service->path;
    lua_Unsigned n = lua_rawlen(L, -1);
    if (n > LUA_SERVICE_MAX_SUBSCRIPTIONS) {
        refuse(job, "%s: subscribe lists more than 32 patterns%s", path, "");
        return -1;
    }
    for (lua_Unsigned i = 1; i <= n; i++) {
        int t = lua_rawgeti(L, -1, (lua_Integer)i);
        char group[NAME_MAX_LEN + 2] = "";
        if (t == LUA_TTABLE) {
            lua_pushliteral(L, "group");
            if (lua_rawget(L, -2) == LUA_TSTRING)
                snprintf(group, sizeof group, "%s", lua_tostring(L, -1));
            lua_pop(L, 1);
            lua_rawgeti(L, -1, 1);
            lua_remove(L, -2);
        }
        size_t len = 0;
        const char *pattern = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL,
                   *why = "not a string";
        if (!pattern || !topic_is_valid(pattern, len, true, &why)) {
            refuse(job, "%s: subscribe: not a topic pattern (%s)", path, why);
            return -1;
        }
        if (*group && !name_is_valid(group, strlen(group))) {
            refuse(job, "%s: subscribe: '%s' is not a group name", path, group);
            return -1;
        }
        snprintf(v->subs[v->sub_count].pattern, sizeof v->subs[0].pattern, "%s", pattern);
        snprintf(v->subs[v->sub_count].group, sizeof v->subs[0].group, "%s", group);
        v->sub_count++;
        lua_pop(L, 1);
    }
    return 0;
}

/* Runs the file and reads the table it returns, raw: its __index (a
 * loop, an error) never runs outside a handler's call. */
static int load_body(lua_State *L)
{
    load_job_t *job = lua_touserdata(L, 1);
    lua_version_t *v = job->v;
    const char *path = v->service->path;
    luamsg_init(L);
    lua_json_install(L);           /* json.*, payloads and answers: arrays and int64 kept */
    lua_newtable(L);
    v->pending_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    open_bus(L, v);
    if (sandbox_load_text(L, job->text, job->len, path) < 0)
        return refuse(job, "%s%s", lua_tostring(L, -1), "");
    lua_call(L, 0, 1);
    if (!lua_istable(L, -1))
        return refuse(job, "%s: must return a service table (see docs/lua-services.md)%s", path, "");
    lua_pushliteral(L, "name");
    int t = lua_rawget(L, -2);
    if (t == LUA_TNIL) {
        if (!name_from_file(v->service->file, v->name))
            return refuse(job, "%s: file name too long for a service name: set name%s", path, "");
    } else if (t == LUA_TSTRING && lua_rawlen(L, -1) <= NAME_MAX_LEN) {
        snprintf(v->name, sizeof v->name, "%s", lua_tostring(L, -1));
    } else {
        snprintf(job->err, job->errlen, "%s: name must be a string of at most %d characters",
                 path, NAME_MAX_LEN);
        job->refused = true;
        return 0;
    }
    lua_pop(L, 1);
    if (!name_is_valid(v->name, strlen(v->name)) || name_is_reserved(v->name, strlen(v->name)))
        return refuse(job, "%s: '%s' is not a name a service may register", path, v->name);
    static const struct { const char *name; unsigned bit; } handlers[] = {
        {"on_request", ON_REQUEST}, {"on_event", ON_EVENT}, {"on_broadcast", ON_BROADCAST},
        {"on_reload", ON_RELOAD},   {"on_save", ON_SAVE},
    };
    for (size_t i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
        lua_pushstring(L, handlers[i].name);
        t = lua_rawget(L, -2);
        lua_pop(L, 1);
        if (t == LUA_TFUNCTION)
            v->handlers |= handlers[i].bit;
        else if (t != LUA_TNIL)
            return refuse(job, "%s: %s must be a function", path, handlers[i].name);
    }
    lua_pushliteral(L, "subscribe");
    t = lua_rawget(L, -2);
    if (t == LUA_TTABLE && read_subscriptions(L, job) < 0)
        return 0;
    if (t != LUA_TTABLE && t != LUA_TNIL)
        return refuse(job, "%s: subscribe must be a list of topic patterns%s", path, "");
    lua_pop(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, v->bus_ref);
    lua_pushliteral(L, "name");
    lua_pushstring(L, v->name);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    v->table_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

lua_version_t *lua_version_load(lua_service_t *svc, sandbox_limits_t limits,
                                char *err, size_t errlen)
{
    char label[200];
    snprintf(label, sizeof label, "service %s", svc->file);
    lua_version_t *v = calloc(1, sizeof *v);
    if (!v || !(v->sandbox = sandbox_new(label, limits))) {
        snprintf(err, errlen, "%s: out of memory", svc->path);
        free(v);
        return NULL;
    }
    v->service = svc;
    v->table_ref = v->pending_ref = v->bus_ref = LUA_NOREF;
    size_t len;
    char *text = sandbox_read_file(svc->path, limits.memory_limit, &len, err, errlen);
    if (!text)
        goto fail;
    load_job_t job = {.v = v, .text = text, .len = len, .err = err, .errlen = errlen};
    int rc = run_protected(v, load_body, &job, err, errlen);
    free(text);
    if (rc < 0 || job.refused)
        goto fail;
    return v;
fail:
    lua_version_free(&v);
    return NULL;
}

void lua_version_free(lua_version_t **self_p)
{
    lua_version_t *v = *self_p;
    if (!v)
        return;
    sandbox_free(&v->sandbox);
    free(v->timers);
    free(v->later);
    free(v);
    *self_p = NULL;
}

/* --- handling messages --- */

/* Pushes handler `name` of the service table (raw); false if it has none. */
static bool push_handler(lua_version_t *v, const char *name)
{
    lua_State *L = sandbox_state(v->sandbox);
    lua_rawgeti(L, LUA_REGISTRYINDEX, v->table_ref);
    lua_pushstring(L, name);
    lua_rawget(L, -2);
    lua_remove(L, -2);
    if (lua_isfunction(L, -1))
        return true;
    lua_pop(L, 1);
    return false;
}

static void answer_error(lua_version_t *v, const envelope_t *env, const char *code, const char *text)
{
    char dst[NAME_MAX_LEN + 1], action[MSG_ID_MAX_LEN + 1], corr[MSG_ID_MAX_LEN + 1], id[37];
    reply_copy_plain(dst, sizeof dst, &env->f[EF_SRC]);
    reply_copy_plain(action, sizeof action, &env->f[EF_ACTION]);
    reply_copy_plain(corr, sizeof corr, &env->f[EF_MSG_ID]);
    cJSON *payload = cJSON_CreateObject();
    cJSON_AddStringToObject(payload, "code", code);
    cJSON_AddStringToObject(payload, "message", text);
    char *json = cJSON_PrintUnformatted(payload);
    cJSON_Delete(payload);
    send_from(v, "error", dst, action, json, corr, 0, NULL, id);
    cJSON_free(json);
}

typedef struct {
    lua_version_t *v;
    const envelope_t *env;
    const char *handler;        /* events: on_event or on_broadcast */
    bool no_handler;
    bool answered;              /* the request got its answer inside the call */
    char err[1024];             /* a result that could not be sent */
    bool bad_result;
} call_job_t;

/* on_request(msg) -> payload | nil, message [, code]: called, its results
 * read and the answer sent, all inside the protected call. */
static int request_body(lua_State *L)
{
    call_job_t *job = lua_touserdata(L, 1);
    lua_version_t *v = job->v;
    if (!push_handler(v, "on_request")) {
        job->no_handler = true;
        return 0;
    }
    luamsg_push(L, job->env);
    v->current = job->env;
    v->deferred = false;
    lua_call(L, 1, 3);
    v->current = NULL;
    if (v->deferred) {          /* bus.later(msg): answered later, its results ignored */
        job->answered = true;
        return 0;
    }
    if (lua_isnil(L, -3) && lua_type(L, -2) == LUA_TSTRING) {
        const char *code = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : bus_err_name(ERR_SERVICE_ERROR);
        answer_error(v, job->env, code, lua_tostring(L, -2));
        job->answered = true;
        return 0;
    }
    /* the response's payload: a bus.json() value's text as it is, any
     * other value encoded */
    if (lua_isnil(L, -3)) {
        send_response(v, job->env, NULL, 0);
    } else {
        luamsg_text_t text;         /* not copied: written straight into the frame */
        if (!luamsg_encode_text(L, -3, &text, job->err, sizeof job->err)) {
            job->bad_result = true;
            return 0;
        }
        send_response(v, job->env, text.text, text.len);
        luamsg_text_free(L, &text);
    }
    job->answered = true;
    return 0;
}

static void handle_request(lua_version_t *v, const envelope_t *env)
{
    char err[1024];
    if (!(v->handlers & ON_REQUEST)) {
        answer_error(v, env, bus_err_name(ERR_SERVICE_ERROR), "this service takes no requests (no on_request)");
        return;
    }
    call_job_t job = {.v = v, .env = env};
    luamsg_will_push(sandbox_state(v->sandbox), false);
    int rc = run_protected(v, request_body, &job, err, sizeof err);
    v->current = NULL;
    if (v->deferred && rc < 0) {
        /* it failed after bus.later: the error below is its one answer */
        for (int i = 0; i < v->later_cap; i++) {
            lua_later_t *slot = &v->later[i];
            if (slot->due_ms && slot->msg_id_len == env->f[EF_MSG_ID].len &&
                memcmp(slot->msg_id, env->f[EF_MSG_ID].ptr, slot->msg_id_len) == 0)
                later_free(v, slot);
        }
        job.answered = false;
    }
    v->deferred = false;
    if (job.answered)
        return;
    if (rc < 0) {
        handler_failed(v, "on_request", err);
        answer_error(v, env, bus_err_name(ERR_SERVICE_ERROR), "the service failed while handling the request");
    } else if (job.bad_result) {
        handler_failed(v, "on_request", job.err);
        answer_error(v, env, bus_err_name(ERR_SERVICE_ERROR), "the service returned a value that is not JSON");
    } else {
        answer_error(v, env, bus_err_name(ERR_SERVICE_ERROR), "this service takes no requests (no on_request)");
    }
}

/* on_event(msg) / on_broadcast(msg): nothing to answer. */
static int event_body(lua_State *L)
{
    call_job_t *job = lua_touserdata(L, 1);
    if (!push_handler(job->v, job->handler))
        return 0;
    luamsg_push(L, job->env);
    lua_call(L, 1, 0);
    return 0;
}

static void handle_event(lua_version_t *v, const envelope_t *env)
{
    bool broadcast = env_equals(&env->f[EF_DST], "broadcast");
    const char *name = broadcast && (v->handlers & ON_BROADCAST) ? "on_broadcast" : "on_event";
    char err[1024];
    call_job_t job = {.v = v, .env = env, .handler = name};
    luamsg_will_push(sandbox_state(v->sandbox), false);
    if (run_protected(v, event_body, &job, err, sizeof err) < 0)
        handler_failed(v, name, err);
}

typedef struct {
    lua_version_t *v;
    const char *corr;
    size_t corr_len;
    const char *payload;        /* NULL: none */
    size_t payload_len;
    bool is_error;
    bool ours;                  /* it answered a request this service sent */
} answer_job_t;

/* Finds the callback of the request answered, decodes the answer and
 * calls the callback: callback(payload, nil) or callback(nil, err). */
static int answer_body(lua_State *L)
{
    answer_job_t *job = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, job->v->pending_ref);     /* 2: pending */
    lua_pushlstring(L, job->corr, job->corr_len);
    lua_rawget(L, 2);                                           /* 3: the callback */
    if (!lua_isfunction(L, 3))
        return 0;
    job->ours = true;
    lua_pushlstring(L, job->corr, job->corr_len);
    lua_pushnil(L);
    lua_rawset(L, 2);                                           /* answered: forget it */
    if (!job->is_error) {
        if (job->payload)
            luamsg_push_decoded(L, job->payload, job->payload_len);
        else
            lua_pushnil(L);
        lua_pushnil(L);
    } else {
        lua_pushnil(L);
        if (job->payload)
            luamsg_push_decoded(L, job->payload, job->payload_len);
        else
            lua_newtable(L);
    }
    lua_call(L, 2, 0);
    return 0;
}

static log_ratelimit_t stray_error_limit;

/* A response or error for a request this service sent: its callback. */
static void handle_answer(lua_version_t *v, const envelope_t *env)
{
    const env_value_t *corr = &env->f[EF_CORRELATION_ID], *p = &env->f[EF_PAYLOAD];
    size_t payload_len = 0;
    const char *payload = p->kind != JSON_ABSENT ? env_value_json(p, &payload_len) : NULL;
    answer_job_t job = {
        .v = v, .corr = corr->ptr, .corr_len = corr->len,
        .payload = payload, .payload_len = payload_len,
        .is_error = env->type == MT_ERROR,
    };
    char err[1024];
    if (run_protected(v, answer_body, &job, err, sizeof err) < 0) {
        handler_failed(v, "a request callback", err);
        return;
    }
    if (!job.ours && env->type == MT_ERROR) {
        /* e.g. the broker refusing this service's registration */
        log_limited(&stray_error_limit, 20, LOG_LEVEL_WARN, "service %s: error from %.*s: %.*s",
                    v->name, (int)env->f[EF_SRC].len, env->f[EF_SRC].ptr,
                    (int)(p->len > 200 ? 200 : p->len), p->ptr);
    }
}

void lua_service_handle(lua_service_t *svc, const envelope_t *env)
{
    lua_version_t *v = svc->version;
    switch (env->type) {
    case MT_REQUEST: handle_request(v, env); break;
    case MT_EVENT: handle_event(v, env); break;
    case MT_RESPONSE:
    case MT_ERROR: handle_answer(v, env); break;
    default: break;
    }
}

bool lua_service_pass_spent(const lua_service_t *svc)
{
    return svc->pass_budget > 0 && svc->pass_used >= svc->pass_budget;
}

/* --- timers --- */

typedef struct {
    int ref;
    bool once;                  /* release the ref: the timer is done */
} timer_job_t;

static int timer_body(lua_State *L)
{
    timer_job_t *job = lua_touserdata(L, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, job->ref);
    if (job->once)
        luaL_unref(L, LUA_REGISTRYINDEX, job->ref);
    lua_call(L, 0, 0);
    return 0;
}

void lua_service_run_timers(lua_service_t *svc, uint64_t now_ms)
{
    lua_version_t *v = svc->version;
    int count = v->timer_count;         /* timers added by these callbacks wait */
    int start = count ? v->timer_cursor % count : 0, k = 0;
    /* by index: a callback may add timers (and move the array); from where
     * the last pass stopped, so that no timer starves behind costly ones */
    for (; k < count && svc->version == v && !lua_service_pass_spent(svc); k++) {
        int i = (start + k) % count;
        if (v->timers[i].fn_ref == LUA_NOREF || v->timers[i].due_ms > now_ms)
            continue;
        timer_job_t job = {.ref = v->timers[i].fn_ref, .once = v->timers[i].every_ms == 0};
        if (v->timers[i].every_ms) {
            v->timers[i].due_ms += v->timers[i].every_ms;
            if (v->timers[i].due_ms <= now_ms)
                v->timers[i].due_ms = now_ms + v->timers[i].every_ms;
        } else {
            v->timers[i].fn_ref = LUA_NOREF;
        }
        char err[1024];
        if (run_protected(v, timer_body, &job, err, sizeof err) < 0)
            handler_failed(v, "a timer", err);
    }
    if (svc->version != v)
        return;
    int cursor = count ? (start + k) % count : 0;
    /* drop fired and cancelled timers (the cursor keeps its timer) */
    int kept = 0, new_cursor = 0;
    for (int i = 0; i < v->timer_count; i++) {
        if (i == cursor)
            new_cursor = kept;
        if (v->timers[i].fn_ref != LUA_NOREF)
            v->timers[kept++] = v->timers[i];
    }
    v->timer_count = kept;
    v->timer_cursor = new_cursor;
}

uint64_t lua_service_next_timer(const lua_service_t *svc)
{
    uint64_t next = UINT64_MAX;
    const lua_version_t *v = svc->version;
    for (int i = 0; v && i < v->timer_count; i++)
        if (v->timers[i].fn_ref != LUA_NOREF && v->timers[i].due_ms < next)
            next = v->timers[i].due_ms;
    return next;
}

/* --- reload hand-over --- */

typedef struct {
    lua_version_t *v;
    char *text;                 /* the old state as JSON (malloc'd), NULL for nil */
    size_t len;
} handover_job_t;

/* In the old state: on_save() or the table's `state`, encoded by lua_json. */
static int save_body(lua_State *L)
{
    handover_job_t *job = lua_touserdata(L, 1);
    lua_version_t *v = job->v;
    lua_rawgeti(L, LUA_REGISTRYINDEX, v->table_ref);
    if (v->handlers & ON_SAVE) {
        lua_pushliteral(L, "on_save");
        lua_rawget(L, -2);
        lua_call(L, 0, 1);
    } else {
        lua_pushliteral(L, "state");
        lua_rawget(L, -2);
    }
    if (lua_isnil(L, -1))
        return 0;
    lua_pushcfunction(L, lua_json_encode);
    lua_insert(L, -2);
    lua_call(L, 1, 1);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    if (!(job->text = malloc(len + 1)))
        return luaL_error(L, "out of memory");
    memcpy(job->text, text, len + 1);
    job->len = len;
    return 0;
}

/* In the new state: on_reload(old_state), decoded by lua_json. */
static int reload_body(lua_State *L)
{
    handover_job_t *job = lua_touserdata(L, 1);
    if (!push_handler(job->v, "on_reload"))
        return 0;
    if (job->text) {
        lua_pushcfunction(L, lua_json_decode);
        lua_pushlstring(L, job->text, job->len);
        lua_call(L, 1, 1);
    } else {
        lua_pushnil(L);
    }
    lua_call(L, 1, 0);
    return 0;
}

int lua_service_hand_over(lua_service_t *svc, lua_version_t *fresh, char *err, size_t errlen)
{
    lua_version_t *old = svc->version;
    if (!old || !(fresh->handlers & ON_RELOAD))
        return 0;                    /* nothing asks for the old state */
    handover_job_t job = {.v = old};
    char why[900];
    if (run_protected(old, save_body, &job, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s: the old version's state cannot be handed over (%s): %s",
                 fresh->service->path, old->handlers & ON_SAVE ? "on_save" : "its `state`", why);
        free(job.text);
        return -1;
    }
    job.v = fresh;
    int rc = run_protected(fresh, reload_body, &job, why, sizeof why);
    free(job.text);
    if (rc < 0) {
        snprintf(err, errlen, "%s: on_reload failed: %s", fresh->service->path, why);
        return -1;
    }
    return 0;
}
