/* fuzz_envelope: envelope_parse() on any bytes, then the error reply the
 * broker would build from what it read (reply_error_about).
 *
 * Invariants (abort = a bug; docs/fuzzing.md lists them with their rules):
 *  - whatever the result, every field that was recorded lies inside the
 *    input; a string field sits between two quotes and its `escaped` flag
 *    tells the truth;
 *  - bad_json exactly when json_scan_object() says BAD_JSON, and the scan
 *    itself agrees with cJSON (fuzz_common.h);
 *  - the one-pass envelope_parse gives what json_scan_object followed by
 *    envelope_read gives: result, reason and every field;
 *  - ERR_NONE only for what docs/protocol.md E1-E4, N1, V1, D1 allow: a
 *    known type, a valid msg_id, src a valid name, dst where required, the
 *    required action / correlation_id, ttl_ms 1..300000, v absent or 1;
 *  - E3: no ERR_NONE when two top-level keys decode to the same string
 *    (cJSON decodes escapes: {"src":"a","\u0073rc":"b"}) or any key has
 *    an escape; and on ERR_NONE each field is what cJSON reads for its key;
 *  - lua-cjson (what policies and Lua services decode messages with) reads
 *    whatever json_scan accepts, but for lone surrogate escapes (a known
 *    difference: docs/fuzzing.md, Findings);
 *  - the error reply is valid JSON (json_scan and cJSON), shaped per T6:
 *    correlation_id is the msg_id only when that was valid, dst the src
 *    only when a valid name, payload.code the error's name. */
#include "fuzz_common.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lua.h>

#include "envelope.h"
#include "msg_writer.h"
#include "names.h"
#include "reply.h"

/* lua-cjson, as the sandbox has it (src/sandbox.c: default settings): what
 * policies and Lua services read a message with (src/luamsg.c). */
static lua_State *lua;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    lua = luaL_newstate();
    FUZZ_ASSERT(lua, "luaL_newstate");
    luaopen_cjson(lua);
    lua_getfield(lua, -1, "decode");
    lua_setfield(lua, LUA_REGISTRYINDEX, "fuzz.decode");
    lua_settop(lua, 0);
    return 0;
}

/* True if lua-cjson's decode takes the text. */
static bool lua_cjson_decodes(const uint8_t *data, size_t size)
{
    lua_getfield(lua, LUA_REGISTRYINDEX, "fuzz.decode");
    lua_pushlstring(lua, (const char *)data, size);
    bool ok = lua_pcall(lua, 1, 1, 0) == LUA_OK;
    lua_settop(lua, 0);
    /* free the garbage now: an input that leaves more mallocs than frees
     * makes libFuzzer run a leak scan after it (20x slower) */
    lua_gc(lua, LUA_GCCOLLECT, 0);
    return ok;
}

static const char *const field_key[EF__COUNT] = {
    [EF_MSG_ID] = "msg_id",     [EF_TYPE] = "type",
    [EF_SRC] = "src",           [EF_DST] = "dst",
    [EF_ACTION] = "action",     [EF_PAYLOAD] = "payload",
    [EF_CORRELATION_ID] = "correlation_id",
    [EF_TIMESTAMP] = "timestamp",
    [EF_TTL_MS] = "ttl_ms",     [EF_V] = "v",
};

static bool inside(const uint8_t *data, size_t size, const char *p, size_t n)
{
    const char *b = (const char *)data;
    return p >= b && p <= b + size && n <= (size_t)(b + size - p);
}

static void check_fields_recorded(const envelope_t *env, const uint8_t *data, size_t size)
{
    for (int i = 0; i < EF__COUNT; i++) {
        const env_value_t *v = &env->f[i];
        if (v->kind == JSON_ABSENT)
            continue;
        FUZZ_ASSERT(v->kind >= JSON_STRING && v->kind <= JSON_NULL, "%s kind %d", field_key[i],
                    (int)v->kind);
        FUZZ_ASSERT(v->ptr && inside(data, size, v->ptr, v->len), "%s range %p+%u outside %p+%zu",
                    field_key[i], (const void *)v->ptr, v->len, (const void *)data, size);
        if (v->kind == JSON_STRING) {
            const char *b = (const char *)data;
            FUZZ_ASSERT(v->ptr > b && v->ptr + v->len < b + size && v->ptr[-1] == '"' &&
                            v->ptr[v->len] == '"',
                        "%s: string not between quotes", field_key[i]);
            FUZZ_ASSERT(v->escaped == fz_has_byte(v->ptr, v->len, '\\'), "%s escaped=%d",
                        field_key[i], v->escaped);
        }
    }
}

static bool id_bytes_ok(const env_value_t *v)
{
    if (v->kind != JSON_STRING || v->len < 1 || v->len > MSG_ID_MAX_LEN)
        return false;
    for (uint32_t i = 0; i < v->len; i++) {
        unsigned char c = (unsigned char)v->ptr[i];
        if (c < 0x21 || c > 0x7E || c == '"' || c == '\\')
            return false;
    }
    return true;
}

/* N1 written out again: 1..64 of [A-Za-z0-9._:-], first alphanumeric. */
static bool name_bytes_ok(const env_value_t *v)
{
    if (v->kind != JSON_STRING || v->escaped || v->len < 1 || v->len > NAME_MAX_LEN)
        return false;
    for (uint32_t i = 0; i < v->len; i++) {
        unsigned char c = (unsigned char)v->ptr[i];
        bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != ':' && c != '-')))
            return false;
    }
    return true;
}

/* N2 written out again: broker, broadcast, broker.*, smartshop.* */
static bool reserved_bytes(const env_value_t *v)
{
    static const char *const exact[] = {"broker", "broadcast"};
    static const char *const prefix[] = {"broker.", "smartshop."};
    for (int i = 0; i < 2; i++) {
        size_t n = strlen(exact[i]);
        if (v->len == n && memcmp(v->ptr, exact[i], n) == 0)
            return true;
        n = strlen(prefix[i]);
        if (v->len >= n && memcmp(v->ptr, prefix[i], n) == 0)
            return true;
    }
    return false;
}

static bool field_is(const env_value_t *v, const char *word)
{
    return v->kind == JSON_STRING && !v->escaped && v->len == strlen(word) &&
           memcmp(v->ptr, word, v->len) == 0;
}

static bool string_or_null_or_absent(const env_value_t *v)
{
    return v->kind == JSON_ABSENT || v->kind == JSON_NULL || v->kind == JSON_STRING;
}

/* Keys, decoded by cJSON: any two equal? */
static bool has_duplicate_key(const cJSON *obj)
{
    for (const cJSON *a = obj->child; a; a = a->next)
        for (const cJSON *b = a->next; b; b = b->next)
            if (strcmp(a->string, b->string) == 0)
                return true;
    return false;
}

static void check_accepted(const envelope_t *env, const fz_reference_t *ref)
{
    const env_value_t *f = env->f;
    /* E1, E3 */
    FUZZ_ASSERT(ref->root && cJSON_IsObject(ref->root), "accepted, but not an object per cJSON");
    FUZZ_ASSERT(cJSON_GetArraySize(ref->root) <= JSON_SCAN_MAX_MEMBERS, "accepted %d members",
                cJSON_GetArraySize(ref->root));
    FUZZ_ASSERT(!has_duplicate_key(ref->root), "accepted a duplicated top-level key (E3)");
    /* E4 */
    FUZZ_ASSERT(env->msg_id_ok && id_bytes_ok(&f[EF_MSG_ID]), "accepted a bad msg_id");
    FUZZ_ASSERT(env->type > MT_NONE && env->type < MT__COUNT, "accepted type %d", (int)env->type);
    FUZZ_ASSERT(field_is(&f[EF_TYPE], msg_type_name(env->type)), "type field is not %s",
                msg_type_name(env->type));
    FUZZ_ASSERT(name_bytes_ok(&f[EF_SRC]), "accepted a src that is not a name (N1)");
    bool needs_dst = env->type != MT_REGISTER && env->type != MT_UNREGISTER;
    if (needs_dst) {
        FUZZ_ASSERT(name_bytes_ok(&f[EF_DST]), "accepted a dst that is not a name");
        const env_value_t *d = &f[EF_DST];
        if (!field_is(d, "broker") && !field_is(d, "broadcast"))
            FUZZ_ASSERT(!reserved_bytes(d), "accepted a reserved dst (N2)");
    }
    if (env->type == MT_REQUEST)
        FUZZ_ASSERT(f[EF_ACTION].kind == JSON_STRING, "accepted a request without action");
    else
        FUZZ_ASSERT(string_or_null_or_absent(&f[EF_ACTION]), "accepted a non-string action");
    if (env->type == MT_RESPONSE || env->type == MT_ERROR)
        FUZZ_ASSERT(id_bytes_ok(&f[EF_CORRELATION_ID]), "accepted an answer without correlation_id");
    else
        FUZZ_ASSERT(f[EF_CORRELATION_ID].kind != JSON_STRING || id_bytes_ok(&f[EF_CORRELATION_ID]),
                    "accepted a bad correlation_id");
    FUZZ_ASSERT(string_or_null_or_absent(&f[EF_CORRELATION_ID]), "accepted correlation_id kind %d",
                (int)f[EF_CORRELATION_ID].kind);
    FUZZ_ASSERT(string_or_null_or_absent(&f[EF_TIMESTAMP]), "accepted a non-string timestamp");
    /* V1 */
    FUZZ_ASSERT(f[EF_V].kind == JSON_ABSENT || (f[EF_V].kind == JSON_NUMBER && f[EF_V].len == 1 &&
                                                f[EF_V].ptr[0] == '1'),
                "accepted v other than 1");
    /* D1 */
    if (env->type == MT_REQUEST && f[EF_TTL_MS].kind != JSON_ABSENT) {
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(ref->root, "ttl_ms");
        FUZZ_ASSERT(t && cJSON_IsNumber(t), "ttl_ms is not a number per cJSON");
        FUZZ_ASSERT(env->ttl_ms >= 1 && env->ttl_ms <= TTL_MS_MAX && (double)env->ttl_ms == t->valuedouble,
                    "ttl_ms %u, cJSON %g", env->ttl_ms, t->valuedouble);
        for (uint32_t i = 0; i < f[EF_TTL_MS].len; i++)
            FUZZ_ASSERT(fz_is_digit((unsigned char)f[EF_TTL_MS].ptr[i]), "ttl_ms not an integer");
    } else {
        FUZZ_ASSERT(env->ttl_ms == 0, "ttl_ms %u set", env->ttl_ms);
    }
    /* Each field is what a full parser reads for the same key. */
    for (int i = 0; i < EF__COUNT; i++) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(ref->root, field_key[i]);
        const env_value_t *v = &f[i];
        FUZZ_ASSERT((c == NULL) == (v->kind == JSON_ABSENT), "%s: present %d vs cJSON %d",
                    field_key[i], v->kind != JSON_ABSENT, c != NULL);
        if (!c)
            continue;
        FUZZ_ASSERT(fz_kind_of(c) == v->kind, "%s: kind %d vs cJSON type %d", field_key[i],
                    (int)v->kind, c->type);
        if (v->kind == JSON_STRING && !v->escaped)
            FUZZ_ASSERT(strlen(c->valuestring) == v->len && memcmp(c->valuestring, v->ptr, v->len) == 0,
                        "%s: value differs from cJSON's", field_key[i]);
    }
}

static void check_reply(const envelope_t *env, bus_err_t err, const char *why)
{
    const envelope_t *about = err == ERR_BAD_JSON ? NULL : env;   /* as router_handle_read() */
    size_t len = 0;
    char *text = reply_error_about(about, err == ERR_NONE ? ERR_SPOOFED_SRC : err, why, &len);
    FUZZ_ASSERT(text && len == strlen(text), "no reply");
    json_object_t obj;
    const char *rwhy = NULL;
    FUZZ_ASSERT(json_scan_object(text, len, &obj, &rwhy) == JSON_SCAN_OK,
                "the broker's own error reply is refused by json_scan: %s\n  %s", rwhy, text);
    cJSON *r = cJSON_ParseWithLength(text, len);
    FUZZ_ASSERT(r, "cJSON cannot read the reply %s", text);
    const cJSON *corr = cJSON_GetObjectItemCaseSensitive(r, "correlation_id");
    const cJSON *dst = cJSON_GetObjectItemCaseSensitive(r, "dst");
    const cJSON *action = cJSON_GetObjectItemCaseSensitive(r, "action");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(r, "payload"), "code");
    FUZZ_ASSERT(cJSON_IsString(code) &&
                    strcmp(code->valuestring, bus_err_name(err == ERR_NONE ? ERR_SPOOFED_SRC : err)) == 0,
                "payload.code");
    /* T6: correlation_id = the msg_id if readable and valid, else null */
    if (about && about->msg_id_ok) {
        const env_value_t *m = &about->f[EF_MSG_ID];
        FUZZ_ASSERT(cJSON_IsString(corr) && strlen(corr->valuestring) == m->len &&
                        memcmp(corr->valuestring, m->ptr, m->len) == 0,
                    "correlation_id is not the msg_id: %s", text);
    } else {
        FUZZ_ASSERT(cJSON_IsNull(corr), "correlation_id not null: %s", text);
    }
    /* dst = the src if it is a valid name, else null */
    if (about && name_bytes_ok(&about->f[EF_SRC])) {
        const env_value_t *s = &about->f[EF_SRC];
        FUZZ_ASSERT(cJSON_IsString(dst) && strlen(dst->valuestring) == s->len &&
                        memcmp(dst->valuestring, s->ptr, s->len) == 0,
                    "dst is not the src: %s", text);
    } else {
        FUZZ_ASSERT(cJSON_IsNull(dst), "dst not null: %s", text);
    }
    /* action = a non-empty unescaped string of at most 128 bytes, else null */
    const env_value_t *a = about ? &about->f[EF_ACTION] : NULL;
    if (a && a->kind == JSON_STRING && !a->escaped && a->len >= 1 && a->len <= MSG_ID_MAX_LEN)
        FUZZ_ASSERT(cJSON_IsString(action) && strlen(action->valuestring) == a->len &&
                        memcmp(action->valuestring, a->ptr, a->len) == 0,
                    "action is not the offender's: %s", text);
    else
        FUZZ_ASSERT(cJSON_IsNull(action), "action not null: %s", text);
    cJSON_Delete(r);
    reply_free(text);
}

/* A hosted Lua service answers an accepted request with msg_writer: the
 * members it records must be exactly those the scanner finds in the text
 * it wrote (dst, action and correlation_id copied from this request as
 * read, escapes and all; its payload given back as JSON text). */
static void check_written_response(const envelope_t *req)
{
    const env_value_t *p = &req->f[EF_PAYLOAD];
    msg_field_t payload = msg_null();
    if (p->kind == JSON_STRING)
        payload = msg_json(p->ptr - 1, p->len + 2);
    else if (p->kind != JSON_ABSENT)
        payload = msg_json(p->ptr, p->len);
    msg_field_t fields[EF__COUNT] = {
        [EF_MSG_ID] = msg_plain("5c6a2f1e-0000-4000-8000-000000000001"),
        [EF_TYPE] = msg_plain("response"),
        [EF_SRC] = msg_plain("fuzz-service"),
        [EF_DST] = msg_copy(&req->f[EF_SRC]),
        [EF_ACTION] = msg_copy(&req->f[EF_ACTION]),
        [EF_PAYLOAD] = payload,
        [EF_CORRELATION_ID] = msg_copy(&req->f[EF_MSG_ID]),
        [EF_TIMESTAMP] = msg_plain("2026-11-25T00:00:00.000Z"),
    };
    zmq_msg_t frame;
    envelope_t written, scanned;
    const char *why = NULL, *why2 = NULL;
    bus_err_t err = msg_write(&frame, fields, &written, &why);
    FUZZ_ASSERT(err == ERR_NONE, "msg_write refused a response to an accepted request: %s", why);
    const char *text = zmq_msg_data(&frame);
    size_t len = zmq_msg_size(&frame);
    FUZZ_ASSERT(envelope_parse(&scanned, text, len, &why2) == ERR_NONE,
                "the written response does not parse: %s", why2);
    for (int i = 0; i < EF__COUNT; i++) {
        const env_value_t *a = &written.f[i], *b = &scanned.f[i];
        FUZZ_ASSERT(a->kind == b->kind && a->len == b->len && a->escaped == b->escaped &&
                        (a->kind == JSON_ABSENT || a->ptr - text == b->ptr - text),
                    "field %d: written and scanned members differ", i);
    }
    FUZZ_ASSERT(written.type == MT_RESPONSE && scanned.type == MT_RESPONSE, "type");
    zmq_msg_close(&frame);
}

/* envelope_parse collects the fields as it scans (json_scan_top.h);
 * json_scan_object then envelope_read over the members (what msg_writer.c
 * runs) must give the same result, reason and fields. Both share the
 * collector (collect_member, envelope_finish), so what this compares is
 * the two instances of the top-level loop: the one that records members
 * and the one that collects them as it goes. The rules themselves are
 * checked against the cJSON reference in LLVMFuzzerTestOneInput. */
/* Reasons are compared as text: the scanner's come from an inline
 * function, so each file that runs it has its own copies of the literals. */
static bool same_reason(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static void check_two_passes(const envelope_t *env, bus_err_t err, const char *why,
                             const uint8_t *data, size_t size, json_scan_result_t scanned)
{
    json_object_t obj;
    const char *swhy = NULL;
    FUZZ_ASSERT(json_scan_object((const char *)data, size, &obj, &swhy) == scanned, "scan not stable");
    if (scanned == JSON_SCAN_BAD_JSON || scanned == JSON_SCAN_NOT_OBJECT) {
        FUZZ_ASSERT(same_reason(why, swhy), "reason %s, the scan says %s", why, swhy);
        for (int i = 0; i < EF__COUNT; i++)
            FUZZ_ASSERT(env->f[i].kind == JSON_ABSENT && env->f[i].ptr == NULL && env->f[i].len == 0,
                        "field %d kept after a failed scan", i);
        FUZZ_ASSERT(!env->msg_id_ok && env->type == MT_NONE && env->ttl_ms == 0, "state after a failed scan");
        return;
    }
    envelope_t two;
    const char *why2 = NULL;
    bus_err_t err2 = envelope_read(&two, (const char *)data, size, &obj,
                                   scanned == JSON_SCAN_TOO_MANY, &why2);
    FUZZ_ASSERT(err2 == err && same_reason(why2, why), "one pass: %s (%s), two passes: %s (%s)",
                bus_err_name(err), why ? why : "-", bus_err_name(err2), why2 ? why2 : "-");
    FUZZ_ASSERT(two.type == env->type && two.ttl_ms == env->ttl_ms && two.msg_id_ok == env->msg_id_ok,
                "one pass and two passes disagree on type/ttl_ms/msg_id_ok");
    for (int i = 0; i < EF__COUNT; i++)
        FUZZ_ASSERT(two.f[i].kind == env->f[i].kind && two.f[i].ptr == env->f[i].ptr &&
                        two.f[i].len == env->f[i].len && two.f[i].escaped == env->f[i].escaped,
                    "field %d: one pass and two passes disagree", i);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_reference_t ref;
    fz_reference(data, size, &ref);
    json_scan_result_t scanned = fz_check_scan(data, size, &ref);

    envelope_t env;
    const char *why = (const char *)1;
    memset(&env, 0x5A, sizeof env);
    bus_err_t err = envelope_parse(&env, (const char *)data, size, &why);

    FUZZ_ASSERT(err == ERR_NONE || err == ERR_BAD_JSON || err == ERR_BAD_ENVELOPE ||
                    err == ERR_BAD_NAME || err == ERR_RESERVED_NAME || err == ERR_UNSUPPORTED_VERSION,
                "envelope_parse returned %s", bus_err_name(err));
    FUZZ_ASSERT(why != (const char *)1, "why not set");
    FUZZ_ASSERT(err == ERR_NONE || why, "%s without a why", bus_err_name(err));
    FUZZ_ASSERT(env.buf == (const char *)data && env.len == size, "buf/len");
    FUZZ_ASSERT((err == ERR_BAD_JSON) == (scanned == JSON_SCAN_BAD_JSON), "bad_json vs scan %d",
                (int)scanned);
    FUZZ_ASSERT(scanned != JSON_SCAN_NOT_OBJECT || err == ERR_BAD_ENVELOPE, "non-object: %s",
                bus_err_name(err));
    FUZZ_ASSERT(scanned != JSON_SCAN_TOO_MANY || err == ERR_BAD_ENVELOPE, "too many: %s",
                bus_err_name(err));
    FUZZ_ASSERT(env.type >= MT_NONE && env.type < MT__COUNT, "type %d", (int)env.type);
    check_fields_recorded(&env, data, size);
    FUZZ_ASSERT(env.msg_id_ok == id_bytes_ok(&env.f[EF_MSG_ID]), "msg_id_ok %d", env.msg_id_ok);
    FUZZ_ASSERT(env.msg_id_ok == env_id_is_valid(&env.f[EF_MSG_ID]), "env_id_is_valid disagrees");

    /* E3, read by a full parser: a repeated or escaped top-level key is never accepted. */
    if (scanned == JSON_SCAN_OK && ref.root) {
        bool escaped_key = false;
        json_object_t obj;
        json_scan_object((const char *)data, size, &obj, NULL);
        for (int i = 0; i < obj.count; i++)
            escaped_key |= obj.members[i].key_escaped;
        if (has_duplicate_key(ref.root) || escaped_key)
            FUZZ_ASSERT(err == ERR_BAD_ENVELOPE, "repeated/escaped key gives %s", bus_err_name(err));
    }
    /* Whatever the broker accepts as JSON, the Lua side can read (lone
     * surrogate escapes, which lua-cjson refuses, are refused by E1). */
    if (scanned != JSON_SCAN_BAD_JSON)
        FUZZ_ASSERT(lua_cjson_decodes(data, size),
                    "lua-cjson cannot decode what the broker accepts as JSON");
    if (err == ERR_NONE)
        check_accepted(&env, &ref);
    /* reserved_name from the envelope is about dst, and only a reserved one */
    if (err == ERR_RESERVED_NAME)
        FUZZ_ASSERT(name_bytes_ok(&env.f[EF_DST]) && reserved_bytes(&env.f[EF_DST]) &&
                        !field_is(&env.f[EF_DST], "broker") && !field_is(&env.f[EF_DST], "broadcast"),
                    "reserved_name for a dst that is not reserved");
    /* name_is_reserved() is what the router applies to src (N2, S1) */
    if (name_bytes_ok(&env.f[EF_SRC]))
        FUZZ_ASSERT(name_is_reserved(env.f[EF_SRC].ptr, env.f[EF_SRC].len) == reserved_bytes(&env.f[EF_SRC]),
                    "name_is_reserved() disagrees with N2");

    /* Same bytes, same answer. */
    envelope_t again;
    const char *why2 = NULL;
    FUZZ_ASSERT(envelope_parse(&again, (const char *)data, size, &why2) == err && why2 == why,
                "not deterministic");

    check_two_passes(&env, err, why, data, size, scanned);
    check_reply(&env, err, why);
    /* a request from a reserved src is refused by the router (N2, S1) and
     * never reaches a service that would answer it */
    if (err == ERR_NONE && env.type == MT_REQUEST &&
        !name_is_reserved(env.f[EF_SRC].ptr, env.f[EF_SRC].len))
        check_written_response(&env);
    cJSON_Delete(ref.root);
    return 0;
}
