/* errors: wire names of the protocol's error codes. */
#include "errors.h"

static const char *const names[ERR__COUNT] = {
    [ERR_NONE] = "none",
    [ERR_BAD_FRAMES] = "bad_frames",
    [ERR_BAD_JSON] = "bad_json",
    [ERR_TOO_LARGE] = "too_large",
    [ERR_BAD_ENVELOPE] = "bad_envelope",
    [ERR_BAD_NAME] = "bad_name",
    [ERR_RESERVED_NAME] = "reserved_name",
    [ERR_NAME_TAKEN] = "name_taken",
    [ERR_UNSUPPORTED_VERSION] = "unsupported_version",
    [ERR_NOT_REGISTERED] = "not_registered",
    [ERR_SPOOFED_SRC] = "spoofed_src",
    [ERR_DUPLICATE_MSG_ID] = "duplicate_msg_id",
    [ERR_NO_SUCH_SERVICE] = "no_such_service",
    [ERR_UNKNOWN_ACTION] = "unknown_action",
    [ERR_UNKNOWN_REQUEST] = "unknown_request",
    [ERR_NOT_YOUR_REQUEST] = "not_your_request",
    [ERR_BUSY] = "busy",
    [ERR_TIMEOUT] = "timeout",
    [ERR_SERVICE_GONE] = "service_gone",
    [ERR_SHUTTING_DOWN] = "shutting_down",
    [ERR_DENIED] = "denied",
    [ERR_POLICY_ERROR] = "policy_error",
    [ERR_SERVICE_ERROR] = "service_error",
    [ERR_LIMIT_EXCEEDED] = "limit_exceeded",
    [ERR_BAD_PAYLOAD] = "bad_payload",
    [ERR_UNAVAILABLE] = "unavailable",
    [ERR_REQUESTER_GONE] = "requester_gone",
    [ERR_INTERNAL] = "internal",
};

const char *bus_err_name(bus_err_t code)
{
    if ((unsigned)code >= ERR__COUNT)
        return "internal";
    return names[code];
}
