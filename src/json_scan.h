/* json_scan: one validating pass over a JSON object that records where its
 * top-level members are, without building anything.
 *
 * Why hand-written: the broker must know that every message is well-formed
 * JSON in valid UTF-8 and where its few envelope fields are, within about
 * 0.5 us a message; a full tree (lua-cjson, cJSON, jansson) costs 2-15x that
 * (docs/performance.md). The scanner (json_scan.c, and json_scan_top.h:
 * the top-level loop, which envelope_parse also runs to collect the
 * envelope fields in the same pass) is fuzzed (tests/fuzz/) and runs under
 * ASan/UBSan in CI.
 *
 * It must never read outside [buf, buf+len), never allocate, and never
 * accept what RFC 8259 rejects. */
#ifndef SMARTSHOP_JSON_SCAN_H
#define SMARTSHOP_JSON_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_SCAN_MAX_DEPTH 64
#define JSON_SCAN_MAX_MEMBERS 64

typedef enum {
    JSON_ABSENT = 0,
    JSON_STRING,
    JSON_NUMBER,
    JSON_OBJECT,
    JSON_ARRAY,
    JSON_TRUE,
    JSON_FALSE,
    JSON_NULL
} json_kind_t;

/* A top-level member. For a string value, [val_off, val_off+val_len) is the
 * content between the quotes; for any other value, its whole text. */
typedef struct {
    uint32_t key_off, key_len;
    uint32_t val_off, val_len;
    json_kind_t kind;
    bool key_escaped;   /* the key contains a backslash escape */
    bool val_escaped;   /* the string value contains a backslash escape */
} json_member_t;

typedef struct {
    json_member_t members[JSON_SCAN_MAX_MEMBERS];
    int count;
} json_object_t;

typedef enum {
    JSON_SCAN_OK = 0,
    JSON_SCAN_BAD_JSON,      /* not well-formed, bad UTF-8, or too deep */
    JSON_SCAN_NOT_OBJECT,    /* well-formed, but not an object at the top */
    JSON_SCAN_TOO_MANY       /* well-formed, more than JSON_SCAN_MAX_MEMBERS members */
} json_scan_result_t;

/* Validates buf[0..len) as one JSON text and, if it is an object, fills
 * `out` with its top-level members in order. On failure `*why` (if not NULL)
 * points at a static explanation. */
json_scan_result_t json_scan_object(const char *buf, size_t len,
                                    json_object_t *out, const char **why);

/* Validates buf[0..len) as one JSON value (whitespace around it allowed)
 * at the nesting depth of a top-level member's value: true if it may stand
 * as a message's payload, else false with the reason in `*why`. For the
 * payloads the broker writes itself (msg_writer.c). */
bool json_scan_member_value(const char *buf, size_t len, const char **why);

#endif
