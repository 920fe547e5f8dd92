/* trace: copies of what matches an operator's filter. See trace.h. */
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "envelope.h"
#include "reply.h"

typedef struct {
    peer_t *peer;               /* NULL: a free slot */
    char dst[NAME_MAX_LEN + 1]; /* the tracer's name, the copies' dst */
    unsigned kinds;
    char service[NAME_MAX_LEN + 1], action[MSG_ID_MAX_LEN + 1], src[NAME_MAX_LEN + 1],
        code[TRACE_CODE_MAX + 1];              /* "": any */
    unsigned rate;              /* copies a second at most */
    uint64_t window_ms;         /* start of the current second */
    unsigned sent;              /* copies in it */
    uint64_t skipped;           /* matched but not sent since the last copy */
    uint64_t seq;               /* copies sent */
} tracer_t;

struct trace {
    int count;
    tracer_t tracers[TRACE_MAX_TRACERS];
};

static const char *const kind_names[] = {"request", "response", "error", "event"};

trace_t *trace_new(void)
{
    return calloc(1, sizeof(trace_t));
}

void trace_free(trace_t **self_p)
{
    free(*self_p);
    *self_p = NULL;
}

bool trace_active(const trace_t *t)
{
    return t && t->count > 0;
}

static tracer_t *tracer_of(trace_t *t, const peer_t *peer)
{
    for (int i = 0; i < TRACE_MAX_TRACERS; i++)
        if (t->tracers[i].peer == peer)
            return &t->tracers[i];
    return NULL;
}

/* filter[key] as a string of at most `max` bytes into out (absent or null:
 * ""); false if it is something else. */
static bool read_text(const cJSON *filter, const char *key, char *out, size_t max)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(filter, key);
    out[0] = '\0';
    if (!item || cJSON_IsNull(item))
        return true;
    if (!cJSON_IsString(item) || strlen(item->valuestring) > max)
        return false;
    memcpy(out, item->valuestring, strlen(item->valuestring) + 1);
    return true;
}

static const char *read_filter(const cJSON *f, tracer_t *out)
{
    if (f && !cJSON_IsObject(f))
        return "the payload must be an object: {\"service\", \"action\", \"src\", \"code\", "
               "\"kinds\", \"rate\"}, all optional";
    if (!read_text(f, "service", out->service, NAME_MAX_LEN))
        return "service must be a service name";
    if (!read_text(f, "action", out->action, MSG_ID_MAX_LEN))
        return "action must be a string of at most 128 bytes";
    if (!read_text(f, "src", out->src, NAME_MAX_LEN))
        return "src must be a name";
    if (!read_text(f, "code", out->code, TRACE_CODE_MAX))
        return "code must be an error code such as no_such_service";
    out->kinds = TRACE_ALL;
    const cJSON *kinds = cJSON_GetObjectItemCaseSensitive(f, "kinds");
    if (kinds && !cJSON_IsNull(kinds)) {
        if (!cJSON_IsArray(kinds) || !cJSON_GetArraySize(kinds))
            return "kinds must be a list of request, response, error, event";
        out->kinds = 0;
        const cJSON *k;
        cJSON_ArrayForEach(k, kinds) {
            unsigned bit = 0;
            for (unsigned i = 0; i < 4 && cJSON_IsString(k); i++)
                if (strcmp(k->valuestring, kind_names[i]) == 0)
                    bit = 1u << i;
            if (!bit)
                return "kinds must be a list of request, response, error, event";
            out->kinds |= bit;
        }
    }
    if (out->code[0] && (out->kinds & TRACE_ERROR) == 0)
        return "a code filter needs the kind error";
    if (out->code[0])
        out->kinds = TRACE_ERROR;       /* only errors have a code */
    out->rate = TRACE_DEFAULT_RATE;
    const cJSON *rate = cJSON_GetObjectItemCaseSensitive(f, "rate");
    if (rate && !cJSON_IsNull(rate)) {
        if (!cJSON_IsNumber(rate) || rate->valuedouble < 1 || rate->valuedouble > TRACE_MAX_RATE)
            return "rate must be a number of copies a second, 1 to 1000";
        out->rate = (unsigned)rate->valuedouble;
    }
    return NULL;
}

int trace_start(trace_t *t, peer_t *peer, const char *dst, const char *filter, size_t len,
                const char **why)
{
    cJSON *f = filter ? cJSON_ParseWithLength(filter, len) : NULL;
    tracer_t next = {.peer = peer};
    snprintf(next.dst, sizeof next.dst, "%s", dst);
    *why = read_filter(f, &next);
    cJSON_Delete(f);
    if (*why)
        return -1;
    tracer_t *slot = tracer_of(t, peer);
    if (slot) {
        /* a trace sent again (smartshop-ctl does, each second) keeps its
         * window and what it skipped: the rate is per connection */
        next.window_ms = slot->window_ms;
        next.sent = slot->sent;
        next.skipped = slot->skipped;
        next.seq = slot->seq;
    } else {
        slot = tracer_of(t, NULL);
        if (!slot) {
            *why = "as many connections trace as may (8): stop one first";
            return -1;
        }
        t->count++;
    }
    *slot = next;
    return 0;
}

bool trace_stop(trace_t *t, const peer_t *peer)
{
    tracer_t *slot = peer ? tracer_of(t, peer) : NULL;
    if (!slot)
        return false;
    memset(slot, 0, sizeof *slot);
    t->count--;
    return true;
}

bool trace_describe(const trace_t *t, const peer_t *peer, cJSON *out)
{
    const tracer_t *tr = NULL;
    for (int i = 0; i < TRACE_MAX_TRACERS && !tr; i++)
        if (peer && t->tracers[i].peer == peer)
            tr = &t->tracers[i];
    if (!tr)
        return false;
    cJSON *kinds = cJSON_AddArrayToObject(out, "kinds");
    for (unsigned i = 0; i < 4; i++)
        if (tr->kinds & (1u << i))
            cJSON_AddItemToArray(kinds, cJSON_CreateString(kind_names[i]));
    const char *keys[] = {"service", "action", "src", "code"};
    const char *values[] = {tr->service, tr->action, tr->src, tr->code};
    for (int i = 0; i < 4; i++)
        if (values[i][0])
            cJSON_AddStringToObject(out, keys[i], values[i]);
    cJSON_AddNumberToObject(out, "rate", tr->rate);
    return true;
}

static bool text_is(const trace_text_t *v, const char *want)
{
    size_t n = strlen(want);
    return v->ptr && v->len == n && memcmp(v->ptr, want, n) == 0;
}

static bool matches(const tracer_t *tr, const trace_point_t *p)
{
    if (!(tr->kinds & p->kind))
        return false;
    if (tr->service[0] && !text_is(&p->service, tr->service) && !text_is(&p->dst, tr->service))
        return false;
    if (tr->action[0] && !text_is(&p->action, tr->action))
        return false;
    if (tr->src[0] && !text_is(&p->src, tr->src))
        return false;
    return !tr->code[0] || text_is(&p->code, tr->code);
}

/* A copy's one-second window: whether this one may go. */
static bool within_rate(tracer_t *tr, uint64_t now_ms)
{
    if (now_ms - tr->window_ms >= 1000) {
        tr->window_ms = now_ms;
        tr->sent = 0;
    }
    if (tr->sent >= tr->rate) {
        tr->skipped++;
        return false;
    }
    tr->sent++;
    return true;
}

static void add_text(cJSON *obj, const char *key, const trace_text_t *v)
{
    if (!v->ptr)
        return;
    char buf[TOPIC_MAX_LEN + 1];
    size_t n = v->len < sizeof buf - 1 ? v->len : sizeof buf - 1;
    memcpy(buf, v->ptr, n);
    buf[n] = '\0';
    cJSON_AddStringToObject(obj, key, buf);
}

/* The payload for `p`, "message" left out (spliced in as it came). */
static cJSON *describe(const tracer_t *tr, const trace_point_t *p)
{
    cJSON *o = cJSON_CreateObject();
    int k = 0;
    while (k < 3 && (1u << k) != (unsigned)p->kind)
        k++;
    cJSON_AddStringToObject(o, "kind", kind_names[k]);
    cJSON_AddNumberToObject(o, "seq", (double)tr->seq);
    if (tr->skipped)
        cJSON_AddNumberToObject(o, "skipped", (double)tr->skipped);
    char at[32];
    reply_timestamp(at);
    cJSON_AddStringToObject(o, "at", at);
    add_text(o, "service", &p->service);
    add_text(o, "dst", &p->dst);
    add_text(o, "src", &p->src);
    add_text(o, "action", &p->action);
    add_text(o, "topic", &p->topic);
    add_text(o, "msg_id", &p->msg_id);
    add_text(o, "correlation_id", &p->correlation_id);
    add_text(o, "code", &p->code);
    if (p->why)
        cJSON_AddStringToObject(o, "why", p->why);
    if (p->peer)
        cJSON_AddStringToObject(o, "peer", p->peer);
    if (p->to)
        cJSON_AddStringToObject(o, "to", p->to);
    if (p->latency_us >= 0)
        cJSON_AddNumberToObject(o, "latency_ms", (double)p->latency_us / 1000.0);
    if (p->message && p->message_len > TRACE_MESSAGE_MAX)
        cJSON_AddNumberToObject(o, "message_bytes", (double)p->message_len);
    return o;
}

/* The copy as an event from "broker" to the tracer: the envelope's fields
 * are names and ids (no escapes needed), the payload cJSON's, and the
 * message the bytes it came as (valid JSON: it was read). */
static char *copy_text(const tracer_t *tr, const trace_point_t *p, size_t *len)
{
    cJSON *payload = describe(tr, p);
    char *body = payload ? cJSON_PrintUnformatted(payload) : NULL;
    cJSON_Delete(payload);
    if (!body)
        return NULL;
    bool with_message = p->message && p->message_len <= TRACE_MESSAGE_MAX;
    size_t body_len = strlen(body);
    char id[37], at[32];
    reply_new_uuid(id);
    reply_timestamp(at);
    size_t cap = body_len + (with_message ? p->message_len : 0) + NAME_MAX_LEN + 256;
    char *text = malloc(cap);
    if (!text) {
        cJSON_free(body);
        return NULL;
    }
    int n = snprintf(text, cap,
                     "{\"msg_id\":\"%s\",\"type\":\"event\",\"src\":\"broker\",\"dst\":\"%s\","
                     "\"action\":\"trace\",\"timestamp\":\"%s\",\"payload\":",
                     id, tr->dst, at);
    size_t w = n > 0 ? (size_t)n : 0;
    memcpy(text + w, body, body_len - 1);          /* without its closing brace */
    w += body_len - 1;
    if (with_message) {
        memcpy(text + w, ",\"message\":", 11);
        w += 11;
        memcpy(text + w, p->message, p->message_len);
        w += p->message_len;
    }
    memcpy(text + w, "}}", 2);
    w += 2;
    cJSON_free(body);
    *len = w;
    return text;
}

void trace_offer(trace_t *t, const trace_point_t *p, uint64_t now_ms,
                 void (*send)(void *ctx, peer_t *to, const char *text, size_t len), void *ctx)
{
    for (int i = 0; t && t->count && i < TRACE_MAX_TRACERS; i++) {
        tracer_t *tr = &t->tracers[i];
        if (!tr->peer || !matches(tr, p) || !within_rate(tr, now_ms))
            continue;
        size_t len = 0;
        char *text = copy_text(tr, p, &len);
        if (!text)
            continue;
        tr->seq++;
        tr->skipped = 0;
        send(ctx, tr->peer, text, len);
        free(text);
    }
}
