/* errors: the protocol's error codes (docs/protocol.md, "Error codes").
 *
 * One enum for the whole broker so that stats, replies and policies speak
 * of the same codes. The wire name of each is bus_err_name(). */
#ifndef SMARTSHOP_ERRORS_H
#define SMARTSHOP_ERRORS_H

typedef enum {
    ERR_NONE = 0,
    ERR_BAD_FRAMES,
    ERR_BAD_JSON,
    ERR_TOO_LARGE,
    ERR_BAD_ENVELOPE,
    ERR_BAD_NAME,
    ERR_RESERVED_NAME,
    ERR_NAME_TAKEN,
    ERR_UNSUPPORTED_VERSION,
    ERR_NOT_REGISTERED,
    ERR_SPOOFED_SRC,
    ERR_DUPLICATE_MSG_ID,
    ERR_NO_SUCH_SERVICE,
    ERR_UNKNOWN_ACTION,
    ERR_UNKNOWN_REQUEST,
    ERR_NOT_YOUR_REQUEST,
    ERR_BUSY,
    ERR_TIMEOUT,
    ERR_SERVICE_GONE,
    ERR_SHUTTING_DOWN,
    ERR_DENIED,
    ERR_POLICY_ERROR,
    ERR_SERVICE_ERROR,
    ERR_LIMIT_EXCEEDED,
    ERR_BAD_PAYLOAD,        /* a policy's payload check refused it (smartshop.rules.schema) */
    ERR_UNAVAILABLE,        /* a policy failed it fast: the service is failing (breaker) */
    ERR_REQUESTER_GONE,     /* a dead letter's reason only: never sent */
    ERR_INTERNAL,
    ERR__COUNT
} bus_err_t;

/* The code's name on the wire, e.g. "no_such_service". */
const char *bus_err_name(bus_err_t code);

#endif
