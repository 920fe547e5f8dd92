/* envelope: the protocol's rules for one message (docs/protocol.md E1-E6,
 * N1-N2, V1), on top of json_scan.
 *
 * Reads only the envelope fields a decision needs, as byte ranges into the
 * frame; the payload stays the bytes it came in. Never allocates, never
 * copies the message. */
#ifndef SMARTSHOP_ENVELOPE_H
#define SMARTSHOP_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "errors.h"
#include "json_scan.h"

#define MSG_ID_MAX_LEN 128
#define TTL_MS_MAX 300000

typedef enum {
    MT_NONE = 0,
    MT_REGISTER,
    MT_UNREGISTER,
    MT_REQUEST,
    MT_RESPONSE,
    MT_EVENT,
    MT_ERROR,
    MT__COUNT
} msg_type_t;

/* The envelope fields the broker reads, in the order of field_names[]. */
typedef enum {
    EF_MSG_ID = 0,
    EF_TYPE,
    EF_SRC,
    EF_DST,
    EF_ACTION,
    EF_PAYLOAD,
    EF_CORRELATION_ID,
    EF_TIMESTAMP,
    EF_TTL_MS,
    EF_V,
    EF_TOPIC,                   /* an event's topic (TP2), instead of a dst */
    EF__COUNT
} env_field_t;

/* A field as found: kind JSON_ABSENT if missing. For strings, the content
 * between the quotes (escapes not decoded; `escaped` says if any). */
typedef struct {
    const char *ptr;
    uint32_t len;
    json_kind_t kind;
    bool escaped;
} env_value_t;

/* A present field's JSON text as it came: a string's quotes included. */
static inline const char *env_value_json(const env_value_t *v, size_t *len)
{
    bool quoted = v->kind == JSON_STRING;
    *len = v->len + (quoted ? 2u : 0u);
    return quoted ? v->ptr - 1 : v->ptr;
}

typedef struct {
    const char *buf;
    size_t len;
    env_value_t f[EF__COUNT];
    msg_type_t type;
    uint32_t ttl_ms;       /* 0 when absent */
    bool msg_id_ok;        /* msg_id is present and well-formed (usable as correlation_id) */
} envelope_t;

/* Scans and checks one message. Returns ERR_NONE, or the error code to
 * answer with (bad_json, bad_envelope, bad_name, reserved_name,
 * unsupported_version) and a static explanation in *why. For an object
 * that breaks the envelope's rules, env->msg_id_ok, src and action are
 * filled as far as they could be read, for the error reply; after
 * bad_json, or for a text that is not an object, every field is absent. */
bus_err_t envelope_parse(envelope_t *env, const char *buf, size_t len, const char **why);

/* The rules of envelope_parse for a message whose members are already
 * known (`obj`, as json_scan_object gives them, offsets into buf): for
 * messages the broker writes itself (msg_writer.c), which need no scan. */
bus_err_t envelope_read(envelope_t *env, const char *buf, size_t len, const json_object_t *obj,
                        bool too_many, const char **why);

/* Points env at a copy of its message now at `buf` (same bytes). */
void envelope_rebase(envelope_t *env, const char *buf);

/* The wire name of a message type ("request"), or "unknown". */
const char *msg_type_name(msg_type_t type);

/* True if the field is a plain string (present, no escapes). */
bool env_is_plain_string(const env_value_t *v);

/* True if the field is a string equal to `word`. */
bool env_equals(const env_value_t *v, const char *word);

/* True if the id (msg_id / correlation_id syntax) is well-formed. */
bool env_id_is_valid(const env_value_t *v);

#endif
