/* smartshop-policy: runs a routing policy against recorded messages,
 * offline, and prints each decision (docs/policies.md, "Edit, test,
 * save"; man/smartshop-policy.1.md).
 *
 *   smartshop-policy [options] POLICY RECORDING
 *
 * The policy is loaded and called by the broker's own code (policy.c,
 * sandbox.c, luamsg.c: the same limits, library and hooks, in the same
 * order as router.c calls them), so a decision here is the decision the
 * broker would take. RECORDING is JSON lines (smartshop-ctl record writes
 * them):
 *
 *   {"services": {"orders": ["orders-1", {"id": "orders-2", "load": 3}]}}
 *       the registered instances from here on (ctx.instances, ctx.has)
 *   {"at_ms": 1200, "from": {"id": "web-1", "names": ["web"], "key": "..."},
 *    "msg": {...an envelope...}, "expect": "refuse bad_payload"}
 *       a message as received from `from` (default: id and names = src);
 *       "expect", if given, must begin the decision printed
 *   {"at_ms": 1300, "outcome": {"service": "payments", "outcome": "error",
 *    "code": "internal", "action": "charge", "instance": "p-1", "latency_ms": 12}}
 *       how a request settled: on_outcome (the circuit breaker learns)
 *   a bare envelope ({"type": ...}) is a message from its src.
 * now_ms() in the policy reads the line's at_ms (the recorded time), so
 * windows and rate limits replay as they happened.
 *
 * Exit status: 0 every line decided and every "expect" met; 1 a hook
 * failed (policy_error), an "expect" was not met, or (--against) a
 * decision differs; 2 bad usage, a policy that does not load, or a
 * recording that cannot be read (a line that is not one of the above). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "envelope.h"
#include "json_scan.h"
#include "log.h"
#include "names.h"
#include "policy.h"
#include "registry.h"
#include "sandbox.h"
#include "version.h"

#define DECISION_MAX 8192

static int64_t replay_now;

static int64_t replay_clock(void)
{
    return replay_now;
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: smartshop-policy [options] POLICY RECORDING\n"
            "Runs POLICY (a routing.lua) against RECORDING (JSON lines, e.g. from\n"
            "smartshop-ctl record) and prints each message's decision: pass, refuse\n"
            "CODE \"reason\", rewrite JSON, route NAME [INSTANCE] or route [NAMES],\n"
            "fail \"error\" (policy_error).\n"
            "\n"
            "  --against OLD        also run OLD (e.g. the live policy) and print only\n"
            "                       the lines whose decision differs; exit 1 if any\n"
            "  --quiet              print only failures, unmet expectations, the summary\n"
            "  --lua-instruction-limit N   per hook call (default 1000000, as the broker)\n"
            "  --lua-memory-limit BYTES    of the policy's state (default 67108864)\n"
            "  --version, --help\n"
            "\n"
            "Exit status: 0 all decided as expected; 1 a hook failed, an \"expect\" was\n"
            "not met, or --against found a difference; 2 usage, a policy that does not\n"
            "load, or an unreadable recording.\n");
}

/* --- the registry the policy's ctx sees --- */

typedef struct {
    registry_t *reg;
    peer_t **peers;
    size_t count, cap;
} world_t;

static void world_clear(world_t *w)
{
    for (size_t i = 0; i < w->count; i++)
        registry_remove_peer(w->reg, &w->peers[i]);
    w->count = 0;
}

static peer_t *world_instance(world_t *w, const char *id, size_t id_len)
{
    peer_t *peer = registry_find_peer(w->reg, id, id_len);
    if (peer)
        return peer;
    if (w->count == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        peer_t **grown = realloc(w->peers, cap * sizeof *grown);
        if (!grown)
            return NULL;
        w->peers = grown, w->cap = cap;
    }
    peer = registry_add_peer(w->reg, id, id_len, PEER_REMOTE, -1);
    if (peer)
        w->peers[w->count++] = peer;
    return peer;
}

/* {"services": {name: [id | {id, load}, ...]}}: replaces the instances. */
static int world_set(world_t *w, const cJSON *services, char *err, size_t errlen)
{
    world_clear(w);
    if (!cJSON_IsObject(services)) {
        snprintf(err, errlen, "\"services\" must be an object of name -> [instance ids]");
        return -1;
    }
    for (const cJSON *svc = services->child; svc; svc = svc->next) {
        size_t nlen = strlen(svc->string);
        if (!name_is_valid(svc->string, nlen) || !cJSON_IsArray(svc)) {
            snprintf(err, errlen, "service %s: a valid name with a list of instance ids", svc->string);
            return -1;
        }
        for (const cJSON *inst = svc->child; inst; inst = inst->next) {
            const cJSON *id = cJSON_IsObject(inst) ? cJSON_GetObjectItem(inst, "id") : inst;
            const cJSON *load = cJSON_IsObject(inst) ? cJSON_GetObjectItem(inst, "load") : NULL;
            if (!cJSON_IsString(id) || !*id->valuestring || strlen(id->valuestring) > PEER_ID_MAX) {
                snprintf(err, errlen, "service %s: an instance id must be a string of 1..%d bytes",
                         svc->string, PEER_ID_MAX);
                return -1;
            }
            peer_t *peer = world_instance(w, id->valuestring, strlen(id->valuestring));
            if (!peer || registry_register(w->reg, peer, svc->string, nlen) < 0) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            if (cJSON_IsNumber(load) && load->valuedouble >= 0)
                peer->handling_count = (uint32_t)load->valuedouble;
        }
    }
    return 0;
}

/* --- one message through the hooks, in router.c's order --- */

/* A peer as hooks see it, on the stack: id, names, key. */
typedef struct {
    peer_t peer;
    char names[8][NAME_MAX_LEN + 1];
} sender_t;

static int sender_from(sender_t *s, const cJSON *from, const envelope_t *env, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->peer.names = s->names;
    s->peer.fd = -1;
    const cJSON *id = from ? cJSON_GetObjectItem(from, "id") : NULL;
    const cJSON *names = from ? cJSON_GetObjectItem(from, "names") : NULL;
    const cJSON *key = from ? cJSON_GetObjectItem(from, "key") : NULL;
    const env_value_t *src = &env->f[EF_SRC];
    if (cJSON_IsString(id)) {
        size_t n = strlen(id->valuestring);
        if (n == 0 || n > PEER_ID_MAX) {
            snprintf(err, errlen, "\"from\".id must be 1..%d bytes", PEER_ID_MAX);
            return -1;
        }
        memcpy(s->peer.id, id->valuestring, n);
        s->peer.id_len = (uint8_t)n;
    } else if (src->kind == JSON_STRING && src->len && src->len <= PEER_ID_MAX) {
        memcpy(s->peer.id, src->ptr, src->len);
        s->peer.id_len = (uint8_t)src->len;
    } else {
        memcpy(s->peer.id, "client", 6);
        s->peer.id_len = 6;
    }
    if (cJSON_IsArray(names)) {
        for (const cJSON *n = names->child; n && s->peer.name_count < 8; n = n->next)
            if (cJSON_IsString(n) && strlen(n->valuestring) <= NAME_MAX_LEN)
                snprintf(s->names[s->peer.name_count++], NAME_MAX_LEN + 1, "%s", n->valuestring);
    } else if (src->kind == JSON_STRING && src->len <= NAME_MAX_LEN && !src->escaped) {
        memcpy(s->names[0], src->ptr, src->len);
        s->peer.name_count = 1;
    }
    s->peer.name_cap = 8;
    if (cJSON_IsString(key) && strlen(key->valuestring) < sizeof s->peer.key)
        snprintf(s->peer.key, sizeof s->peer.key, "%s", key->valuestring);
    return 0;
}

/* A JSON string's content, escaped, for a decision's reason. */
static void quote(const char *text, char *out, size_t cap)
{
    size_t o = 0;
    if (cap < 3)
        return;
    out[o++] = '"';
    for (const char *p = text; *p && o + 3 < cap; p++) {
        if (*p == '"' || *p == '\\')
            out[o++] = '\\';
        out[o++] = (*p == '\n' || *p == '\t') ? ' ' : *p;
    }
    out[o++] = '"';
    out[o] = '\0';
}

static bool routable(const envelope_t *env)
{
    if (env->type != MT_REQUEST && env->type != MT_EVENT)
        return false;
    const env_value_t *dst = &env->f[EF_DST];
    if (dst->kind != JSON_STRING)
        return false;                     /* a topic event */
    return !env_equals(dst, "broker") && !env_equals(dst, "broadcast");
}

/* The decision for one message, as a line: pass, refuse CODE "reason",
 * rewrite JSON [then route ...], route ..., fail "error". Returns false
 * if a hook failed. */
static bool decide(policy_t *p, const envelope_t *env_in, const peer_t *from, char *out, size_t cap)
{
    char text[1024], quoted[1100];
    envelope_t env = *env_in;
    out[0] = '\0';
    if (env.type == MT_REGISTER || env.type == MT_UNREGISTER) {
        const env_value_t *dst = &env.f[EF_DST];
        char name[NAME_MAX_LEN + 1] = "";
        if (dst->kind == JSON_STRING && dst->len <= NAME_MAX_LEN)
            memcpy(name, dst->ptr, dst->len), name[dst->len] = '\0';
        if (env.type == MT_REGISTER && policy_has(p, HOOK_ON_REGISTER)) {
            policy_verdict_t v = policy_on_register(p, name, from, text, sizeof text);
            quote(text, quoted, sizeof quoted);
            if (v == POLICY_REJECT) {
                snprintf(out, cap, "refuse denied %s", quoted);
                return true;
            }
            if (v == POLICY_FAIL) {
                snprintf(out, cap, "fail %s", quoted);
                return false;
            }
        }
        if (env.type == MT_UNREGISTER && policy_has(p, HOOK_ON_UNREGISTER))
            policy_on_unregister(p, name, from);
        snprintf(out, cap, "pass");
        return true;
    }
    if (policy_has(p, HOOK_AUTHORIZE)) {
        policy_verdict_t v = policy_authorize(p, &env, from, text, sizeof text);
        quote(text, quoted, sizeof quoted);
        if (v == POLICY_REJECT) {
            snprintf(out, cap, "refuse %s %s", bus_err_name(policy_refusal_code(p)), quoted);
            return true;
        }
        if (v == POLICY_FAIL) {
            snprintf(out, cap, "fail %s", quoted);
            return false;
        }
    }
    char *rewritten = NULL;
    size_t rewritten_len = 0;
    size_t used = 0;
    if (policy_has(p, HOOK_FILTER)) {
        policy_verdict_t v = policy_filter(p, &env, &rewritten, &rewritten_len, text, sizeof text);
        quote(text, quoted, sizeof quoted);
        if (v == POLICY_REJECT) {
            snprintf(out, cap, "refuse %s %s", bus_err_name(policy_refusal_code(p)), quoted);
            return true;
        }
        if (v == POLICY_FAIL) {
            snprintf(out, cap, "fail %s", quoted);
            return false;
        }
        if (v == POLICY_DECIDED) {
            const char *why = NULL;
            envelope_t again;
            if (envelope_parse(&again, rewritten, rewritten_len, &why) != ERR_NONE ||
                again.type != env.type) {
                snprintf(out, cap, "fail \"filter() returned an invalid envelope: %s\"",
                         why ? why : "its type changed");
                free(rewritten);
                return false;
            }
            env = again;
            used = (size_t)snprintf(out, cap, "rewrite %.*s", (int)rewritten_len, rewritten);
            if (used >= cap)
                used = cap - 1;
        }
    }
    bool ok = true;
    if (routable(&env) && policy_has(p, HOOK_ROUTE)) {
        route_t route;
        policy_verdict_t v = policy_route(p, &env, &route, text, sizeof text);
        const char *then = used ? " then " : "";
        if (v == POLICY_FAIL) {
            quote(text, quoted, sizeof quoted);
            snprintf(out + used, cap - used, "%sfail %s", then, quoted);
            ok = false;
        } else if (v == POLICY_DECIDED && route.count == 1) {
            char id[PEER_ID_MAX + 1] = "";
            if (route.instance)
                snprintf(id, sizeof id, " %.*s", (int)route.instance->id_len, route.instance->id);
            snprintf(out + used, cap - used, "%sroute %s%s", then, route.names[0], id);
        } else if (v == POLICY_DECIDED) {
            size_t at = used + (size_t)snprintf(out + used, cap - used, "%sroute [", then);
            for (int i = 0; i < route.count && at < cap; i++)
                at += (size_t)snprintf(out + at, cap - at, "%s%s", i ? ", " : "", route.names[i]);
            if (at < cap)
                snprintf(out + at, cap - at, "]");
        } else if (!used) {
            snprintf(out, cap, "pass");
        }
    } else if (!used) {
        snprintf(out, cap, "pass");
    }
    free(rewritten);
    return ok;
}

/* --- the recording --- */

typedef struct {
    const char *path;
    policy_t *policy;
    world_t world;
    const char *label;          /* "" or "old" */
} runner_t;

typedef enum { LINE_SKIP, LINE_MESSAGE, LINE_OUTCOME, LINE_SERVICES, LINE_BAD } line_kind_t;

typedef struct {
    line_kind_t kind;
    cJSON *doc;
    const char *msg;            /* the envelope's bytes, as recorded */
    size_t msg_len;
    const cJSON *from, *outcome, *services, *expect;
    int64_t at_ms;
    bool has_at;
} line_t;

/* Reads one line: which kind, and where its parts are. The envelope's
 * bytes are found with the broker's scanner, so that the policy sees them
 * as recorded (not as cJSON would print them again). */
static line_kind_t read_line(char *text, size_t len, line_t *l, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
        text[--len] = '\0';
    size_t lead = 0;
    while (lead < len && (text[lead] == ' ' || text[lead] == '\t'))
        lead++;
    if (lead == len || text[lead] == '#')
        return l->kind = LINE_SKIP;
    json_object_t obj;
    const char *why = NULL;
    if (json_scan_object(text, len, &obj, &why) != JSON_SCAN_OK) {
        snprintf(err, errlen, "not a JSON object: %s", why ? why : "too many members");
        return l->kind = LINE_BAD;
    }
    l->doc = cJSON_ParseWithLength(text, len);
    if (!l->doc) {
        snprintf(err, errlen, "cannot parse the line");
        return l->kind = LINE_BAD;
    }
    const cJSON *at = cJSON_GetObjectItem(l->doc, "at_ms");
    if (cJSON_IsNumber(at)) {
        l->at_ms = (int64_t)at->valuedouble;
        l->has_at = true;
    }
    l->from = cJSON_GetObjectItem(l->doc, "from");
    l->expect = cJSON_GetObjectItem(l->doc, "expect");
    if ((l->services = cJSON_GetObjectItem(l->doc, "services")))
        return l->kind = LINE_SERVICES;
    if ((l->outcome = cJSON_GetObjectItem(l->doc, "outcome")))
        return l->kind = LINE_OUTCOME;
    bool bare = cJSON_GetObjectItem(l->doc, "type") != NULL;
    for (int i = 0; i < obj.count; i++) {
        const json_member_t *m = &obj.members[i];
        if (!bare && m->key_len == 3 && memcmp(text + m->key_off, "msg", 3) == 0 &&
            m->kind == JSON_OBJECT) {
            l->msg = text + m->val_off;
            l->msg_len = m->val_len;
        }
    }
    if (bare) {
        l->msg = text;
        l->msg_len = len;
    }
    if (!l->msg) {
        snprintf(err, errlen, "a line is a message (\"msg\": {...} or an envelope), an "
                              "\"outcome\" or \"services\"");
        return l->kind = LINE_BAD;
    }
    return l->kind = LINE_MESSAGE;
}

static int outcome_kind(const char *name, outcome_kind_t *out)
{
    static const char *const names[] = {"ok", "error", "timeout", "gone"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (outcome_kind_t)i;
            return 0;
        }
    return -1;
}

static int feed_outcome(policy_t *p, const cJSON *o, char *err, size_t errlen)
{
    const cJSON *service = cJSON_GetObjectItem(o, "service");
    const cJSON *kind = cJSON_GetObjectItem(o, "outcome");
    const cJSON *code = cJSON_GetObjectItem(o, "code");
    const cJSON *action = cJSON_GetObjectItem(o, "action");
    const cJSON *instance = cJSON_GetObjectItem(o, "instance");
    const cJSON *latency = cJSON_GetObjectItem(o, "latency_ms");
    policy_outcome_t out = {0};
    if (!cJSON_IsString(service) || !cJSON_IsString(kind) || outcome_kind(kind->valuestring, &out.kind) < 0) {
        snprintf(err, errlen, "an outcome needs \"service\" and \"outcome\" (ok, error, timeout, gone)");
        return -1;
    }
    out.service = service->valuestring;
    out.code = cJSON_IsString(code) ? code->valuestring : NULL;
    out.action = cJSON_IsString(action) ? action->valuestring : "";
    if (cJSON_IsString(instance)) {
        out.instance = instance->valuestring;
        out.instance_len = strlen(instance->valuestring);
    }
    out.latency_ms = cJSON_IsNumber(latency) ? latency->valuedouble : 0;
    if (policy_has(p, HOOK_ON_OUTCOME))
        policy_on_outcome(p, &out);
    return 0;
}

/* "msg_id: type src -> dst action", the message's part of an output line */
static void describe_msg(const envelope_t *env, char *out, size_t cap)
{
    const env_value_t *src = &env->f[EF_SRC], *dst = &env->f[EF_DST], *act = &env->f[EF_ACTION];
    const env_value_t *topic = &env->f[EF_TOPIC], *id = &env->f[EF_MSG_ID];
    if (dst->kind != JSON_STRING && topic->kind == JSON_STRING)
        dst = topic;
    snprintf(out, cap, "%.*s: %s %.*s -> %.*s%s%.*s",
             id->kind == JSON_STRING ? (int)id->len : 1, id->kind == JSON_STRING ? id->ptr : "?",
             msg_type_name(env->type),
             src->kind == JSON_STRING ? (int)src->len : 1, src->kind == JSON_STRING ? src->ptr : "?",
             dst->kind == JSON_STRING ? (int)dst->len : 1, dst->kind == JSON_STRING ? dst->ptr : "?",
             act->kind == JSON_STRING ? " " : "",
             act->kind == JSON_STRING ? (int)act->len : 0, act->kind == JSON_STRING ? act->ptr : "");
}

static policy_t *load_policy(const char *path, sandbox_limits_t limits, registry_t *reg)
{
    char err[1024];
    policy_t *p = policy_new(path, limits, reg);
    if (!p) {
        fprintf(stderr, "smartshop-policy: out of memory\n");
        return NULL;
    }
    replay_now = 0;
    if (policy_load(p, err, sizeof err) < 0) {
        fprintf(stderr, "smartshop-policy: the policy does not load: %s\n", err);
        policy_free(&p);
        return NULL;
    }
    return p;
}

static bool parse_size(const char *text, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv)
{
    const char *against = NULL, *policy_path = NULL, *recording = NULL;
    bool quiet = false;
    sandbox_limits_t limits = {.memory_limit = 64u << 20, .instruction_limit = 1000000};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        long v;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("smartshop-policy %s\n", SMARTSHOP_VERSION);
            return 0;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            quiet = true;
        } else if (strcmp(a, "--against") == 0 && i + 1 < argc) {
            against = argv[++i];
        } else if (strcmp(a, "--lua-instruction-limit") == 0 && i + 1 < argc &&
                   parse_size(argv[i + 1], 1000, 1000000000L, &v)) {
            limits.instruction_limit = v, i++;
        } else if (strcmp(a, "--lua-memory-limit") == 0 && i + 1 < argc &&
                   parse_size(argv[i + 1], 1L << 20, 1L << 40, &v)) {
            limits.memory_limit = (size_t)v, i++;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "smartshop-policy: unknown or incomplete option %s\n", a);
            usage(stderr);
            return 2;
        } else if (!policy_path) {
            policy_path = a;
        } else if (!recording) {
            recording = a;
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!policy_path || !recording) {
        usage(stderr);
        return 2;
    }
    log_set_level(LOG_LEVEL_WARN);
    sandbox_set_clock(replay_clock);
    FILE *in = strcmp(recording, "-") == 0 ? stdin : fopen(recording, "r");
    if (!in) {
        fprintf(stderr, "smartshop-policy: %s: %s\n", recording, strerror(errno));
        return 2;
    }

    runner_t runs[2] = {{.path = policy_path, .label = ""}, {.path = against, .label = "old"}};
    int nruns = against ? 2 : 1;
    int status = 0;
    for (int r = 0; r < nruns && !status; r++) {
        runs[r].world.reg = registry_new();
        if (!runs[r].world.reg || !(runs[r].policy = load_policy(runs[r].path, limits, runs[r].world.reg)))
            status = 2;
    }
    if (status) {
        for (int r = 0; r < nruns; r++) {
            policy_free(&runs[r].policy);
            registry_free(&runs[r].world.reg);
        }
        if (in != stdin)
            fclose(in);
        return status;
    }

    char hooks[128];
    policy_describe_hooks(runs[0].policy, hooks, sizeof hooks);
    if (!quiet)
        printf("# %s (hooks: %s) on %s\n", policy_path, hooks, recording);

    char *text = NULL;
    size_t cap = 0;
    ssize_t n;
    long lineno = 0, messages = 0, failed = 0, unmet = 0, differ = 0;
    static char decision[2][DECISION_MAX];
    while ((n = getline(&text, &cap, in)) >= 0) {
        lineno++;
        char err[512];
        line_t l;
        if (read_line(text, (size_t)n, &l, err, sizeof err) == LINE_BAD) {
            fprintf(stderr, "smartshop-policy: %s:%ld: %s\n", recording, lineno, err);
            status = 2;
            cJSON_Delete(l.doc);
            break;
        }
        if (l.kind == LINE_SKIP)
            continue;
        if (l.has_at)
            replay_now = l.at_ms;
        int bad = 0;
        for (int r = 0; r < nruns && !bad; r++) {
            if (l.kind == LINE_SERVICES)
                bad = world_set(&runs[r].world, l.services, err, sizeof err);
            else if (l.kind == LINE_OUTCOME)
                bad = feed_outcome(runs[r].policy, l.outcome, err, sizeof err);
        }
        if (bad) {
            fprintf(stderr, "smartshop-policy: %s:%ld: %s\n", recording, lineno, err);
            status = 2;
            cJSON_Delete(l.doc);
            break;
        }
        if (l.kind != LINE_MESSAGE) {
            cJSON_Delete(l.doc);
            continue;
        }
        envelope_t env;
        const char *why = NULL;
        bus_err_t e = envelope_parse(&env, l.msg, l.msg_len, &why);
        char what[400];
        messages++;
        if (e != ERR_NONE) {
            /* the broker answers these itself, before any hook */
            if (!quiet)
                printf("%ld: (broker) refuse %s \"%s\"\n", lineno, bus_err_name(e), why ? why : "");
            cJSON_Delete(l.doc);
            continue;
        }
        describe_msg(&env, what, sizeof what);
        sender_t from;
        if (sender_from(&from, l.from, &env, err, sizeof err) < 0) {
            fprintf(stderr, "smartshop-policy: %s:%ld: %s\n", recording, lineno, err);
            status = 2;
            cJSON_Delete(l.doc);
            break;
        }
        bool ok = decide(runs[0].policy, &env, &from.peer, decision[0], DECISION_MAX);
        if (!ok)
            failed++;
        bool differs = false;
        if (against) {
            decide(runs[1].policy, &env, &from.peer, decision[1], DECISION_MAX);
            differs = strcmp(decision[0], decision[1]) != 0;
            differ += differs;
        }
        bool met = true;
        if (cJSON_IsString(l.expect))
            met = strncmp(decision[0], l.expect->valuestring, strlen(l.expect->valuestring)) == 0;
        unmet += !met;
        if (against) {
            if (differs)
                printf("%ld: %s\n  - %s\n  + %s\n", lineno, what, decision[1], decision[0]);
        } else if (!quiet || !ok || !met) {
            printf("%ld: %s: %s\n", lineno, what, decision[0]);
        }
        if (!met)
            printf("%ld: expected: %s\n", lineno, l.expect->valuestring);
        cJSON_Delete(l.doc);
    }
    free(text);
    if (in != stdin)
        fclose(in);
    if (status == 0 && (failed || unmet || differ))
        status = 1;
    printf("# %ld messages: %ld hook failures, %ld expectations not met", messages, failed, unmet);
    if (against)
        printf(", %ld decisions differ from %s", differ, against);
    printf("\n");
    for (int r = 0; r < nruns; r++) {
        policy_free(&runs[r].policy);
        world_clear(&runs[r].world);
        free(runs[r].world.peers);
        registry_free(&runs[r].world.reg);
    }
    return status;
}
