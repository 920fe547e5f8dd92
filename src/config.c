/* config: defaults, Lua config file, flags. See config.h. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "version.h"

/* Where the policy and the services are looked for when neither a flag
 * nor the config file names them. Relative to the working directory by
 * default, for `make run` in the repository; the Debian package builds
 * with -DSMARTSHOP_CONFIG_DIR=/etc/smartshop (CMake option of the same
 * name), so that the installed broker finds them wherever it is started. */
#ifdef SMARTSHOP_CONFIG_DIR
#define DEFAULT_POLICY SMARTSHOP_CONFIG_DIR "/policies/routing.lua"
#define DEFAULT_SERVICES SMARTSHOP_CONFIG_DIR "/services"
#else
#define DEFAULT_POLICY "policies/routing.lua"
#define DEFAULT_SERVICES "services"
#endif
/* The state directory: systemd's StateDirectory= (it sets STATE_DIRECTORY)
 * when there is one, else ./state under the working directory (`make run`
 * in the repository), unless the build names one (-DSMARTSHOP_STATE_DIR). */
#ifdef SMARTSHOP_STATE_DIR
#define DEFAULT_STATE_DIR SMARTSHOP_STATE_DIR
#else
#define DEFAULT_STATE_DIR "state"
#endif

/* One setting: its flag/key name and how to store it. The same table
 * serves the flags (--max-message-bytes) and the file (max_message_bytes). */
typedef enum { SET_STRING, SET_ENDPOINT, SET_LEVEL, SET_UINT, SET_BOOL } setting_kind_t;

typedef struct {
    const char *key;            /* config file key; the flag is the same with '-' */
    setting_kind_t kind;
    size_t offset;
    unsigned long min, max;     /* for SET_UINT */
    size_t width;               /* for SET_UINT: sizeof the field */
    bool live;                  /* config_reload may change it while the broker runs */
} setting_t;

#define UINT_SETTING(key, field, lo, hi) \
    {key, SET_UINT, offsetof(config_t, field), lo, hi, sizeof(((config_t *)0)->field), false}
#define LIVE_UINT_SETTING(key, field, lo, hi) \
    {key, SET_UINT, offsetof(config_t, field), lo, hi, sizeof(((config_t *)0)->field), true}

static const setting_t settings[] = {
    {"endpoints", SET_ENDPOINT, 0, 0, 0, 0, false},
    {"policy", SET_STRING, offsetof(config_t, policy_path), 0, 0, 0, false},
    {"services", SET_STRING, offsetof(config_t, services_dir), 0, 0, 0, false},
    {"curve_secret_key", SET_STRING, offsetof(config_t, curve_secret_key), 0, 0, 0, false},
    {"curve_allow", SET_STRING, offsetof(config_t, curve_allow), 0, 0, 0, true},
    {"metrics", SET_STRING, offsetof(config_t, metrics_endpoint), 0, 0, 0, false},
    {"nats", SET_STRING, offsetof(config_t, nats_urls), 0, 0, 0, false},
    {"broker_id", SET_STRING, offsetof(config_t, broker_id), 0, 0, 0, false},
    {"nats_nkey", SET_STRING, offsetof(config_t, nats_nkey), 0, 0, 0, false},
    {"nats_ca", SET_STRING, offsetof(config_t, nats_ca), 0, 0, 0, false},
    {"log_level", SET_LEVEL, offsetof(config_t, log_level), 0, 0, 0, true},
    {"state_dir", SET_STRING, offsetof(config_t, state_dir), 0, 0, 0, false},
    {"strict_policy", SET_BOOL, offsetof(config_t, strict_policy), 0, 0, 0, false},
    UINT_SETTING("restore_grace_ms", restore_grace_ms, 0, 3600000),
    LIVE_UINT_SETTING("max_message_bytes", max_message_bytes, 256, 256ul << 20),
    LIVE_UINT_SETTING("request_timeout_ms", request_timeout_ms, 1, TTL_MAX_DEFAULT_MS),
    LIVE_UINT_SETTING("shutdown_grace_ms", shutdown_grace_ms, 0, 600000),
    LIVE_UINT_SETTING("max_inflight", max_inflight, 1, 10000000),
    LIVE_UINT_SETTING("max_inflight_per_peer", max_inflight_per_peer, 0, 10000000),
    LIVE_UINT_SETTING("max_inflight_per_instance", max_inflight_per_instance, 0, 10000000),
    UINT_SETTING("send_hwm", send_hwm, 1, 1000000),
    UINT_SETTING("heartbeat_ivl_ms", heartbeat_ivl_ms, 100, 600000),
    UINT_SETTING("heartbeat_timeout_ms", heartbeat_timeout_ms, 100, 600000),
    UINT_SETTING("lua_memory_limit", lua_memory_limit, 1ul << 20, 4096ul << 20),
    UINT_SETTING("lua_instruction_limit", lua_instruction_limit, 10000, 1000000000),
    LIVE_UINT_SETTING("max_peers", max_peers, 1, 10000000),
    LIVE_UINT_SETTING("max_names_per_peer", max_names_per_peer, 1, 100000),
    LIVE_UINT_SETTING("max_services", max_services, 1, 10000000),
    UINT_SETTING("dead_letters", dead_letters, 1, 10000000),
    UINT_SETTING("dead_letter_bytes", dead_letter_bytes, 0, 4096ul << 20),
    UINT_SETTING("max_subscriptions_per_peer", max_subscriptions_per_peer, 1, 1000000),
    UINT_SETTING("max_subscriptions", max_subscriptions, 1, 10000000),
    UINT_SETTING("dead_letter_share", dead_letter_share, 1, 10000000),
    UINT_SETTING("max_unread_bytes", max_unread_bytes, 0, 64ul << 30),
    UINT_SETTING("max_unread_bytes_total", max_unread_bytes_total, 0, 64ul << 30),
    UINT_SETTING("max_queued_bytes", max_queued_bytes, 0, 64ul << 30),
    UINT_SETTING("max_queued_bytes_total", max_queued_bytes_total, 0, 64ul << 30),
    LIVE_UINT_SETTING("metrics_max_series", metrics_max_series, 1, 1000000),
    LIVE_UINT_SETTING("metrics_max_connections", metrics_max_connections, 1, 1024),
    LIVE_UINT_SETTING("metrics_idle_timeout_ms", metrics_idle_timeout_ms, 100, 600000),
    LIVE_UINT_SETTING("metrics_max_request_bytes", metrics_max_request_bytes, 256, 1ul << 20),
};
#define SETTING_COUNT (sizeof settings / sizeof settings[0])

static const char usage[] =
    "Usage: smartshop-broker [options]\n"
    "The Smartshop message bus: a ZeroMQ ROUTER broker with Lua policies and services.\n"
    "\n"
    "  -e, --endpoint EP           bind EP (tcp://, ipc://, inproc://); repeatable\n"
    "                              (default tcp://127.0.0.1:5555)\n"
    "  -p, --policy FILE           routing policy in Lua (default " DEFAULT_POLICY ";\n"
    "                              \"\" for none)\n"
    "  -s, --services DIR          directory of Lua services (default " DEFAULT_SERVICES ";\n"
    "                              \"\" for none)\n"
    "  -c, --config FILE           Lua config file; flags given here win over it\n"
    "  -l, --log-level LEVEL       error, warn, info or debug (default info)\n"
    "      --max-message-bytes N   largest message accepted (default 1048576)\n"
    "      --request-timeout-ms N  deadline of a request without ttl_ms (default 30000)\n"
    "      --shutdown-grace-ms N   on SIGTERM, time left to requests in flight (default 2000)\n"
    "      --max-inflight N        most requests in flight at once (default 100000)\n"
    "      --max-inflight-per-peer N  of those, most from one connection (default 0:\n"
    "                              a tenth of --max-inflight, at least 4096)\n"
    "      --max-inflight-per-instance N  of those, most handed to one instance\n"
    "                              (default 0: as for --max-inflight-per-peer)\n"
    "      --send-hwm N            most messages queued to one peer (default 1000)\n"
    "      --heartbeat-ivl-ms N    transport heartbeat interval (default 1000)\n"
    "      --heartbeat-timeout-ms N  peer declared gone after this silence (default 3000)\n"
    "      --lua-memory-limit N    bytes each Lua state may use (default 67108864)\n"
    "      --lua-instruction-limit N  Lua instructions per hook or handler call\n"
    "                              (default 1000000)\n"
    "      --max-peers N           connections known at once (default 100000)\n"
    "      --max-names-per-peer N  names one connection may register (default 64)\n"
    "      --max-services N        distinct registered names (default 100000)\n"
    "      --dead-letters N        refused or undelivered messages kept (default 1000)\n"
    "      --dead-letter-bytes N   message bytes the dead letters keep (default 16777216)\n"
    "      --max-subscriptions-per-peer N  topic patterns one connection holds (default 256)\n"
    "      --max-subscriptions N   topic patterns over all connections (default 100000)\n"
    "      --dead-letter-share N   one sender's letters hold at most 1/N of each of\n"
    "                              those two bounds (default 8)\n"
    "      --max-unread-bytes N    bytes one connection may send with no whole message\n"
    "                              before it is closed (default: 2 x --max-message-bytes,\n"
    "                              at least 2097152; 0 for the default)\n"
    "      --max-unread-bytes-total N  the same over all connections (default 16 x\n"
    "                              --max-unread-bytes)\n"
    "      --max-queued-bytes N    bytes queued to one peer before it is busy (default:\n"
    "                              4 x --max-message-bytes, at least 16777216)\n"
    "      --max-queued-bytes-total N  the same over all peers (default 268435456, at\n"
    "                              least --max-queued-bytes)\n"
    "      --curve-secret-key FILE  turn CURVE on with the broker's secret key file\n"
    "      --curve-allow FILE      with CURVE: the client keys allowed, and their names\n"
    "      --metrics EP            serve HTTP at EP: /metrics (Prometheus), /healthz,\n"
    "                              /readyz, the JSON API and the dashboard at /\n"
    "                              (e.g. tcp://127.0.0.1:8555; default off)\n"
    "      --metrics-max-series N  service/action series kept (default 1000; the rest\n"
    "                              count as _other)\n"
    "      --metrics-max-connections N  HTTP connections at once (default 16)\n"
    "      --metrics-idle-timeout-ms N  close a metrics connection idle this long\n"
    "                              (default 10000)\n"
    "      --metrics-max-request-bytes N  largest HTTP request (default 8192)\n"
    "      --state-dir DIR         keep registrations, dead letters and the last good\n"
    "                              policy in DIR/" "broker.db (default $STATE_DIRECTORY, else\n"
    "                              " DEFAULT_STATE_DIR "; \"\" for none)\n"
    "      --restore-grace-ms N    after a restart, how long a restored registration\n"
    "                              waits for its peer to reconnect (default 30000)\n"
    "      --strict-policy         exit 2 when the policy file does not load at start,\n"
    "                              instead of running its last good version\n"
    "      --check                 check the config and the policy, print what is wrong,\n"
    "                              exit 0 (good) or 2 (not)\n"
    "      --nats URL[,URL...]     join other brokers into one bus over these NATS\n"
    "                              servers (nats:// or tls://; default off)\n"
    "      --broker-id ID          this broker's id on the bus, [A-Za-z0-9-]\n"
    "                              (default: the host name)\n"
    "      --nats-nkey FILE        authenticate to NATS with this nkey seed file\n"
    "      --nats-ca FILE          trust this CA for tls:// NATS servers\n"
    "      --keygen PREFIX         write a CURVE key pair to PREFIX.key and PREFIX.pub, exit\n"
    "      --nats-keygen PREFIX    write an nkey pair to PREFIX.nk and PREFIX.nk.pub, exit\n"
    "  -h, --help                  show this help and exit\n"
    "  -V, --version               show the version and exit\n"
    "\n"
    "Config file keys are the long flag names with '_' for '-' (endpoints is a list).\n"
    "Docs: README.md, docs/protocol.md, docs/policies.md.\n";

/* The host name, with anything a broker id may not hold made '-'. */
static char *default_broker_id(void)
{
    char host[65] = "";
    if (gethostname(host, sizeof host - 1) < 0 || !*host)
        snprintf(host, sizeof host, "broker");
    for (char *c = host; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9')))
            *c = '-';
    return strdup(host);
}

static void set_defaults(config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->policy_path = strdup(DEFAULT_POLICY);
    cfg->services_dir = strdup(DEFAULT_SERVICES);
    cfg->curve_secret_key = strdup("");
    cfg->curve_allow = strdup("");
    cfg->metrics_endpoint = strdup("");
    cfg->nats_urls = strdup("");
    cfg->broker_id = default_broker_id();
    cfg->nats_nkey = strdup("");
    cfg->nats_ca = strdup("");
    cfg->log_level = LOG_LEVEL_INFO;
    cfg->max_message_bytes = 1048576;
    cfg->request_timeout_ms = 30000;
    cfg->shutdown_grace_ms = 2000;
    cfg->max_inflight = 100000;
    cfg->send_hwm = 1000;
    cfg->heartbeat_ivl_ms = 1000;
    cfg->heartbeat_timeout_ms = 3000;
    cfg->lua_memory_limit = 64ul << 20;
    cfg->lua_instruction_limit = 1000000;
    cfg->max_peers = 100000;
    cfg->max_names_per_peer = 64;
    cfg->max_services = 100000;
    cfg->dead_letters = 1000;
    cfg->dead_letter_bytes = 16ul << 20;
    cfg->max_subscriptions_per_peer = 256;
    cfg->max_subscriptions = 100000;
    cfg->dead_letter_share = 8;
    cfg->metrics_max_series = 1000;
    cfg->metrics_max_connections = 16;
    cfg->metrics_idle_timeout_ms = 10000;
    cfg->metrics_max_request_bytes = 8192;
    const char *systemd_dir = getenv("STATE_DIRECTORY");   /* may list several: a:b */
    if (systemd_dir && *systemd_dir)
        cfg->state_dir = strndup(systemd_dir, strcspn(systemd_dir, ":"));
    else
        cfg->state_dir = strdup(DEFAULT_STATE_DIR);
    cfg->restore_grace_ms = 30000;
}

static void clear_endpoints(config_t *cfg)
{
    for (int i = 0; i < cfg->endpoint_count; i++)
        free(cfg->endpoints[i]);
    cfg->endpoint_count = 0;
}

void config_free(config_t *cfg)
{
    clear_endpoints(cfg);
    free(cfg->policy_path);
    free(cfg->services_dir);
    free(cfg->curve_secret_key);
    free(cfg->curve_allow);
    free(cfg->metrics_endpoint);
    free(cfg->nats_urls);
    free(cfg->broker_id);
    free(cfg->nats_nkey);
    free(cfg->nats_ca);
    cfg->nats_urls = cfg->broker_id = cfg->nats_nkey = cfg->nats_ca = NULL;
    free(cfg->state_dir);
    free(cfg->config_path);
    cfg->metrics_endpoint = cfg->state_dir = cfg->config_path = NULL;
    cfg->policy_path = cfg->services_dir = cfg->curve_secret_key = cfg->curve_allow = NULL;
}

static const setting_t *setting_named(const char *key)
{
    for (size_t i = 0; i < SETTING_COUNT; i++)
        if (strcmp(settings[i].key, key) == 0)
            return &settings[i];
    return NULL;
}

/* Stores one value given as text. `origin` names the flag or file key for
 * the error line. `first_endpoint` says whether endpoints seen so far
 * from this origin replace the defaults. */
static int apply(config_t *cfg, const setting_t *s, const char *value,
                 const char *origin, char *err, size_t errlen)
{
    char *field = (char *)cfg + s->offset;
    switch (s->kind) {
    case SET_ENDPOINT:
        if (!*value || !strstr(value, "://")) {
            snprintf(err, errlen, "%s: '%s' is not an endpoint (try tcp://127.0.0.1:5555)", origin, value);
            return -1;
        }
        if (cfg->endpoint_count == CONFIG_MAX_ENDPOINTS) {
            snprintf(err, errlen, "%s: at most %d endpoints", origin, CONFIG_MAX_ENDPOINTS);
            return -1;
        }
        cfg->endpoints[cfg->endpoint_count++] = strdup(value);
        return 0;
    case SET_STRING:
        free(*(char **)field);
        *(char **)field = strdup(value);
        if (s->offset == offsetof(config_t, policy_path))
            cfg->policy_explicit = true;
        else if (s->offset == offsetof(config_t, services_dir))
            cfg->services_explicit = true;
        else if (s->offset == offsetof(config_t, state_dir))
            cfg->state_explicit = true;
        return 0;
    case SET_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
            *(bool *)field = true;
        else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
            *(bool *)field = false;
        else {
            snprintf(err, errlen, "%s: '%s' is not true or false", origin, value);
            return -1;
        }
        return 0;
    case SET_LEVEL:
        if (log_level_parse(value, (log_level_t *)field) < 0) {
            snprintf(err, errlen, "%s: '%s' is not a log level (error, warn, info, debug)", origin, value);
            return -1;
        }
        return 0;
    case SET_UINT: {
        char *end;
        errno = 0;
        unsigned long n = strtoul(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-' || n < s->min || n > s->max) {
            snprintf(err, errlen, "%s: '%s' is not a whole number from %lu to %lu", origin, value, s->min, s->max);
            return -1;
        }
        if (s->width == sizeof(size_t))
            *(size_t *)field = n;
        else if (s->width == sizeof(uint32_t))
            *(uint32_t *)field = (uint32_t)n;
        return 0;
    }
    }
    return -1;
}

/* The first endpoint a source (the file, the flags) gives replaces those
 * it came with (the defaults, the file's) rather than adding to them. */
static void replace_endpoints_once(config_t *cfg, const setting_t *s, bool *cleared)
{
    if (s->kind == SET_ENDPOINT && !*cleared) {
        clear_endpoints(cfg);
        *cleared = true;
    }
}

/* --- the Lua config file --- */

static int apply_lua_value(config_t *cfg, lua_State *L, const setting_t *s,
                           const char *origin, char *err, size_t errlen)
{
    int t = lua_type(L, -1);
    if (s->kind == SET_ENDPOINT && t == LUA_TTABLE) {
        lua_Integer n = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_geti(L, -1, i);
            if (lua_type(L, -1) != LUA_TSTRING) {
                snprintf(err, errlen, "%s[%lld] must be a string", origin, (long long)i);
                return -1;
            }
            int rc = apply(cfg, s, lua_tostring(L, -1), origin, err, errlen);
            lua_pop(L, 1);
            if (rc < 0)
                return -1;
        }
        return 0;
    }
    if (t == LUA_TNUMBER && s->kind == SET_UINT) {
        if (!lua_isinteger(L, -1)) {
            snprintf(err, errlen, "%s must be a whole number", origin);
            return -1;
        }
        char text[32];
        snprintf(text, sizeof text, "%lld", (long long)lua_tointeger(L, -1));
        return apply(cfg, s, text, origin, err, errlen);
    }
    if (s->kind == SET_BOOL) {
        if (t != LUA_TBOOLEAN) {
            snprintf(err, errlen, "%s must be true or false", origin);
            return -1;
        }
        return apply(cfg, s, lua_toboolean(L, -1) ? "true" : "false", origin, err, errlen);
    }
    if (t != LUA_TSTRING) {
        snprintf(err, errlen, "%s must be %s", origin,
                 s->kind == SET_UINT ? "a number" : s->kind == SET_ENDPOINT ? "a list of strings" : "a string");
        return -1;
    }
    return apply(cfg, s, lua_tostring(L, -1), origin, err, errlen);
}

/* Runs the file in an empty environment (no libraries: it only assigns
 * settings) and reads back each global it set. */
static int load_file(config_t *cfg, const char *path, char *err, size_t errlen)
{
    FILE *probe = fopen(path, "r");
    if (!probe) {
        snprintf(err, errlen, "config file %s: %s", path, strerror(errno));
        return -1;
    }
    fclose(probe);
    lua_State *L = luaL_newstate();
    if (!L) {
        snprintf(err, errlen, "config file %s: out of memory", path);
        return -1;
    }
    int rc = -1;
    if (luaL_loadfilex(L, path, "t") != LUA_OK) {
        snprintf(err, errlen, "config file %s", lua_tostring(L, -1));
        goto done;
    }
    lua_newtable(L);                /* the file's environment */
    lua_pushvalue(L, -1);
    lua_setupvalue(L, -3, 1);       /* _ENV of the chunk */
    lua_insert(L, -2);              /* env, chunk */
    lua_sethook(L, NULL, 0, 0);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
        snprintf(err, errlen, "config file %s", lua_tostring(L, -1));
        goto done;
    }
    bool endpoints_cleared = false;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        char origin[300];
        const char *key = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "?";
        const setting_t *s = setting_named(key);
        snprintf(origin, sizeof origin, "config file %s: %s", path, key);
        if (!s) {
            snprintf(err, errlen, "config file %s: unknown setting '%s' (see --help)", path, key);
            goto done;
        }
        replace_endpoints_once(cfg, s, &endpoints_cleared);
        if (apply_lua_value(cfg, L, s, origin, err, errlen) < 0)
            goto done;
        lua_pop(L, 1);
    }
    rc = 0;
done:
    lua_close(L);
    return rc;
}

/* --- flags --- */

enum { OPT_FIRST_LONG = 256 };

static const struct option long_options[] = {
    {"endpoint", required_argument, 0, 'e'},
    {"policy", required_argument, 0, 'p'},
    {"services", required_argument, 0, 's'},
    {"config", required_argument, 0, 'c'},
    {"log-level", required_argument, 0, 'l'},
    {"max-message-bytes", required_argument, 0, OPT_FIRST_LONG},
    {"request-timeout-ms", required_argument, 0, OPT_FIRST_LONG},
    {"shutdown-grace-ms", required_argument, 0, OPT_FIRST_LONG},
    {"max-inflight", required_argument, 0, OPT_FIRST_LONG},
    {"max-inflight-per-peer", required_argument, 0, OPT_FIRST_LONG},
    {"max-inflight-per-instance", required_argument, 0, OPT_FIRST_LONG},
    {"send-hwm", required_argument, 0, OPT_FIRST_LONG},
    {"heartbeat-ivl-ms", required_argument, 0, OPT_FIRST_LONG},
    {"heartbeat-timeout-ms", required_argument, 0, OPT_FIRST_LONG},
    {"lua-memory-limit", required_argument, 0, OPT_FIRST_LONG},
    {"lua-instruction-limit", required_argument, 0, OPT_FIRST_LONG},
    {"max-peers", required_argument, 0, OPT_FIRST_LONG},
    {"curve-secret-key", required_argument, 0, OPT_FIRST_LONG},
    {"curve-allow", required_argument, 0, OPT_FIRST_LONG},
    {"metrics", required_argument, 0, OPT_FIRST_LONG},
    {"nats", required_argument, 0, OPT_FIRST_LONG},
    {"broker-id", required_argument, 0, OPT_FIRST_LONG},
    {"nats-nkey", required_argument, 0, OPT_FIRST_LONG},
    {"nats-ca", required_argument, 0, OPT_FIRST_LONG},
    {"max-names-per-peer", required_argument, 0, OPT_FIRST_LONG},
    {"max-services", required_argument, 0, OPT_FIRST_LONG},
    {"dead-letters", required_argument, 0, OPT_FIRST_LONG},
    {"dead-letter-bytes", required_argument, 0, OPT_FIRST_LONG},
    {"max-subscriptions-per-peer", required_argument, 0, OPT_FIRST_LONG},
    {"max-subscriptions", required_argument, 0, OPT_FIRST_LONG},
    {"dead-letter-share", required_argument, 0, OPT_FIRST_LONG},
    {"max-unread-bytes", required_argument, 0, OPT_FIRST_LONG},
    {"max-unread-bytes-total", required_argument, 0, OPT_FIRST_LONG},
    {"max-queued-bytes", required_argument, 0, OPT_FIRST_LONG},
    {"max-queued-bytes-total", required_argument, 0, OPT_FIRST_LONG},
    {"metrics-max-series", required_argument, 0, OPT_FIRST_LONG},
    {"metrics-max-connections", required_argument, 0, OPT_FIRST_LONG},
    {"metrics-idle-timeout-ms", required_argument, 0, OPT_FIRST_LONG},
    {"metrics-max-request-bytes", required_argument, 0, OPT_FIRST_LONG},
    {"state-dir", required_argument, 0, OPT_FIRST_LONG},
    {"restore-grace-ms", required_argument, 0, OPT_FIRST_LONG},
    {"strict-policy", no_argument, 0, OPT_FIRST_LONG},
    {"check", no_argument, 0, 'C'},
    {"help", no_argument, 0, 'h'},
    {"version", no_argument, 0, 'V'},
    {0, 0, 0, 0},
};

static const char short_options[] = ":e:p:s:c:l:hV";

/* The setting a flag stands for: its long name with '_' for '-'. */
static const setting_t *setting_of_flag(int opt, int long_index)
{
    const char *name;
    switch (opt) {
    case 'e': name = "endpoints"; break;
    case 'p': name = "policy"; break;
    case 's': name = "services"; break;
    case 'l': name = "log_level"; break;
    default: {
        static char key[64];
        snprintf(key, sizeof key, "%s", long_options[long_index].name);
        for (char *c = key; *c; c++)
            if (*c == '-')
                *c = '_';
        name = key;
    }
    }
    return setting_named(name);
}

/* The long name of the flag getopt just returned, for error lines. */
static const char *flag_name(int opt, int long_index)
{
    if (opt == OPT_FIRST_LONG)
        return long_options[long_index].name;
    for (const struct option *o = long_options; o->name; o++)
        if (o->val == opt)
            return o->name;
    return "?";
}

/* The byte bounds left at 0 follow --max-message-bytes (docs/security.md,
 * "Bytes per connection"). */
static int resolve_byte_bounds(config_t *cfg, char *err, size_t errlen)
{
    size_t msg = cfg->max_message_bytes;
    if (!cfg->max_unread_bytes)
        cfg->max_unread_bytes = 2 * msg > (2u << 20) ? 2 * msg : (2u << 20);
    if (cfg->max_unread_bytes < msg) {
        snprintf(err, errlen, "--max-unread-bytes must be at least --max-message-bytes (%zu)", msg);
        return -1;
    }
    if (!cfg->max_unread_bytes_total)
        cfg->max_unread_bytes_total = 16 * cfg->max_unread_bytes;
    if (!cfg->max_queued_bytes)
        cfg->max_queued_bytes = 4 * msg > (16u << 20) ? 4 * msg : (16u << 20);
    if (!cfg->max_queued_bytes_total)
        cfg->max_queued_bytes_total = 256u << 20;
    if (cfg->max_queued_bytes_total < cfg->max_queued_bytes)
        cfg->max_queued_bytes_total = cfg->max_queued_bytes;
    return 0;
}

config_result_t config_load(config_t *cfg, int argc, char **argv, char *err, size_t errlen)
{
    set_defaults(cfg);
    cfg->argc = argc;
    cfg->argv = argv;
    const char *config_path = NULL;

    /* Pass 1: --help, --version, --config, and unknown flags. */
    opterr = 0;
    optind = 1;
    int opt, long_index = 0;
    while ((opt = getopt_long(argc, argv, short_options, long_options, &long_index)) != -1) {
        if (opt == 'h') {
            fputs(usage, stdout);
            return CONFIG_EXIT_OK;
        }
        if (opt == 'V') {
            printf("smartshop-broker %s (protocol %d)\n", SMARTSHOP_VERSION, SMARTSHOP_PROTOCOL_VERSION);
            return CONFIG_EXIT_OK;
        }
        if (opt == 'c')
            config_path = optarg;
        if (opt == 'C')
            cfg->check_only = true;
        if (opt == '?') {
            if (optopt)
                snprintf(err, errlen, "unknown option '-%c' (see --help)", optopt);
            else
                snprintf(err, errlen, "unknown option '%s' (see --help)", argv[optind - 1]);
            return CONFIG_ERROR;
        }
        if (opt == ':') {
            snprintf(err, errlen, "option '%s' needs a value (see --help)", argv[optind - 1]);
            return CONFIG_ERROR;
        }
    }
    if (optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s' (see --help)", argv[optind]);
        return CONFIG_ERROR;
    }
    if (config_path)
        cfg->config_path = strdup(config_path);
    if (config_path && load_file(cfg, config_path, err, errlen) < 0)
        return CONFIG_ERROR;

    /* Pass 2: every other flag, over the file's values. */
    bool endpoints_cleared = false;
    optind = 1;
    while ((opt = getopt_long(argc, argv, short_options, long_options, &long_index)) != -1) {
        if (opt == 'c' || opt == 'C')
            continue;
        const setting_t *s = setting_of_flag(opt, long_index);
        char origin[80];
        snprintf(origin, sizeof origin, "--%s", flag_name(opt, long_index));
        if (!s) {
            snprintf(err, errlen, "unknown option (see --help)");
            return CONFIG_ERROR;
        }
        replace_endpoints_once(cfg, s, &endpoints_cleared);
        if (apply(cfg, s, optarg ? optarg : "true", origin, err, errlen) < 0)
            return CONFIG_ERROR;
    }
    if (cfg->endpoint_count == 0)
        cfg->endpoints[cfg->endpoint_count++] = strdup("tcp://127.0.0.1:5555");
    if (resolve_byte_bounds(cfg, err, errlen) < 0)
        return CONFIG_ERROR;
    return CONFIG_RUN;
}

/* --- reloading --- */

static void append_word(char *out, size_t cap, const char *word)
{
    size_t used = strlen(out);
    snprintf(out + used, cap - used, "%s%s", used ? " " : "", word);
}

/* Whether setting `s` differs between `a` and `b`. */
static bool setting_differs(const config_t *a, const config_t *b, const setting_t *s)
{
    const char *fa = (const char *)a + s->offset, *fb = (const char *)b + s->offset;
    switch (s->kind) {
    case SET_ENDPOINT:
        if (a->endpoint_count != b->endpoint_count)
            return true;
        for (int i = 0; i < a->endpoint_count; i++)
            if (strcmp(a->endpoints[i], b->endpoints[i]) != 0)
                return true;
        return false;
    case SET_STRING:
        return strcmp(*(char *const *)fa, *(char *const *)fb) != 0;
    case SET_LEVEL:
        return *(const log_level_t *)fa != *(const log_level_t *)fb;
    case SET_BOOL:
        return *(const bool *)fa != *(const bool *)fb;
    case SET_UINT:
        return memcmp(fa, fb, s->width) != 0;
    }
    return false;
}

static void copy_setting(config_t *to, const config_t *from, const setting_t *s)
{
    char *ft = (char *)to + s->offset;
    const char *ff = (const char *)from + s->offset;
    switch (s->kind) {
    case SET_STRING:
        free(*(char **)ft);
        *(char **)ft = strdup(*(char *const *)ff);
        break;
    case SET_LEVEL:
        *(log_level_t *)ft = *(const log_level_t *)ff;
        break;
    case SET_BOOL:
        *(bool *)ft = *(const bool *)ff;
        break;
    case SET_UINT:
        memcpy(ft, ff, s->width);
        break;
    case SET_ENDPOINT:
        break;                      /* never live */
    }
}

config_result_t config_reload(config_t *cfg, char *live, size_t livelen, char *fixed,
                              size_t fixedlen, char *err, size_t errlen)
{
    live[0] = fixed[0] = '\0';
    config_t fresh;
    /* getopt prints nothing (opterr 0); --help cannot be in a running broker's argv */
    config_result_t r = config_load(&fresh, cfg->argc, cfg->argv, err, errlen);
    if (r != CONFIG_RUN) {
        config_free(&fresh);
        return CONFIG_ERROR;
    }
    for (size_t i = 0; i < SETTING_COUNT; i++) {
        const setting_t *s = &settings[i];
        if (!setting_differs(cfg, &fresh, s))
            continue;
        if (s->live) {
            copy_setting(cfg, &fresh, s);
            append_word(live, livelen, s->key);
        } else {
            append_word(fixed, fixedlen, s->key);
        }
    }
    config_free(&fresh);
    return CONFIG_RUN;
}
