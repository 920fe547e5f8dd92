/* config: the broker's settings from defaults, a Lua config file and
 * command-line flags, in that order (flags win).
 *
 * Owns parsing and validation only; reports every problem as one line
 * naming the flag, key or file. */
#ifndef SMARTSHOP_CONFIG_H
#define SMARTSHOP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

#define CONFIG_MAX_ENDPOINTS 16

typedef struct {
    char *endpoints[CONFIG_MAX_ENDPOINTS];
    int endpoint_count;
    char *policy_path;          /* "" = no policy */
    char *services_dir;         /* "" = no Lua services */
    char *curve_secret_key;     /* "" = plain mode; else the broker's secret key file */
    char *curve_allow;          /* the allow list of client keys (with CURVE) */
    char *metrics_endpoint;     /* "" = no Prometheus endpoint */
    char *nats_urls;            /* "" = one broker alone; else the NATS servers (nats_link.h) */
    char *broker_id;            /* this broker's id on the bus (default: the host name) */
    char *nats_nkey;            /* "" = none; else the nkey seed file */
    char *nats_ca;              /* "" = the system's CAs; else the CA file for tls:// */
    bool policy_explicit;       /* given by flag or file, so it must exist */
    bool services_explicit;
    log_level_t log_level;
    size_t max_message_bytes;
    uint32_t request_timeout_ms;
    uint32_t shutdown_grace_ms;
    size_t max_inflight;
    size_t max_inflight_per_peer;     /* one requester's share of it (0: derived) */
    size_t max_inflight_per_instance; /* one handler's share of it (0: derived) */
    int send_hwm;               /* per-peer outbound queue, in messages */
    int heartbeat_ivl_ms;
    int heartbeat_timeout_ms;
    size_t lua_memory_limit;    /* bytes per Lua state (policy, each service) */
    size_t lua_instruction_limit; /* VM instructions per hook or handler call */
    size_t max_peers;           /* connections known at once */
    size_t max_names_per_peer;
    size_t max_services;        /* distinct registered names */
    size_t dead_letters;        /* dead-letter ring: letters kept */
    size_t dead_letter_bytes;   /* dead-letter ring: message bytes kept */
    size_t max_subscriptions_per_peer; /* topic subscriptions one connection holds */
    size_t max_subscriptions;   /* topic subscriptions over all connections */
    size_t dead_letter_share;   /* one sender keeps at most 1/N of each */
    size_t max_unread_bytes;    /* received from one connection with no whole message yet */
    size_t max_unread_bytes_total; /* the same, summed over all connections */
    size_t max_queued_bytes;    /* sent to one peer and not yet taken by it */
    size_t max_queued_bytes_total; /* the same, summed over all peers */
    size_t metrics_max_series;  /* service/action series kept; the rest count as _other */
    size_t metrics_max_connections;   /* --metrics HTTP connections open at once */
    size_t metrics_idle_timeout_ms;   /* closes one that stalls this long */
    size_t metrics_max_request_bytes; /* an HTTP request's bytes, head included */
    char *state_dir;            /* "" = nothing survives a restart (state.h) */
    bool state_explicit;        /* given by flag or file (else a default) */
    uint32_t restore_grace_ms;  /* a restored registration waits this long for its peer */
    bool strict_policy;         /* a policy file that does not load stops the start */
    bool check_only;            /* --check: check the config and the policy, exit */
    /* where the settings came from, for config_reload (argv outlives cfg) */
    char *config_path;          /* --config FILE, or NULL */
    int argc;
    char **argv;
} config_t;

typedef enum {
    CONFIG_RUN = 0,      /* settings ready: run the broker */
    CONFIG_EXIT_OK,      /* --help or --version was printed */
    CONFIG_ERROR         /* `err` says what is wrong; exit 2 */
} config_result_t;

/* Fills `cfg` from defaults, then --config FILE, then the other flags. */
config_result_t config_load(config_t *cfg, int argc, char **argv, char *err, size_t errlen);

void config_free(config_t *cfg);

/* Reads the config file and the flags again (SIGHUP, reload_config) and
 * applies, in `cfg`, the settings that may change while the broker runs
 * (log level, limits, timeouts, the allow list's path); their keys go
 * into `live`, space-separated. Those that changed but need a restart
 * (endpoints, policy, services, keys, the state directory, socket options,
 * Lua limits, ring sizes) are left as they run and named in `fixed`.
 * Returns CONFIG_RUN, or CONFIG_ERROR with `err` (nothing changed). */
config_result_t config_reload(config_t *cfg, char *live, size_t livelen, char *fixed,
                              size_t fixedlen, char *err, size_t errlen);

#endif
