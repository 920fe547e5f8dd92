/* msg_writer: a message the broker writes itself (a Lua service's
 * response), straight into a frame, with its envelope read as it is
 * written.
 *
 * Why not cJSON and a parse, as reply.c does for errors: a hosted
 * service's response is on the hot path, and building a tree, printing it
 * and scanning the text again cost more than the rest of the round trip
 * (docs/performance.md). Every piece written here is already known to be
 * valid JSON (checked names and ids, a string taken from a read envelope,
 * a payload text luamsg checked), so the members' places are known without
 * a scan; envelope_read then applies the protocol's rules to them, the
 * same rules every message from the wire meets. */
#ifndef SMARTSHOP_MSG_WRITER_H
#define SMARTSHOP_MSG_WRITER_H

#include <stdbool.h>
#include <stddef.h>

#include <zmq.h>

#include "envelope.h"

typedef struct {
    const char *ptr;
    size_t len;
    /* JSON_ABSENT: not written. JSON_NULL: null. JSON_STRING: ptr is the
     * content between the quotes, valid in JSON as it is (escaped says if
     * it holds escapes). Any other kind: ptr is the value's JSON text,
     * already checked (json_text), kind as json_text gave it. */
    json_kind_t kind;
    bool escaped;
} msg_field_t;

/* A field holding a plain string (no escapes needed: a name, an id). */
msg_field_t msg_plain(const char *s);

/* A field holding null. */
msg_field_t msg_null(void);

/* A field holding a read envelope's value as it came (null if absent). */
msg_field_t msg_copy(const env_value_t *v);

/* A field holding checked JSON text of any value; a string value is
 * written as it is, quotes included. */
msg_field_t msg_json(const char *text, size_t len);

/* Writes the fields present, in envelope order, into `frame` (initialised
 * here) and reads them back into `env` (pointing into the frame). Returns
 * ERR_NONE, or the rule the fields break (then `frame` is empty), with a
 * static explanation in *why; ERR_INTERNAL if memory ran out. */
bus_err_t msg_write(zmq_msg_t *frame, const msg_field_t fields[EF__COUNT], envelope_t *env,
                    const char **why);

#endif
