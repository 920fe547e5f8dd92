/* main: flags and config, then the broker. Exit codes: 0 clean stop,
 * 1 runtime failure (e.g. an endpoint in use), 2 bad usage or config. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lualib.h>

#include "auth.h"
#include "broker.h"
#include "config.h"
#include "nats_link.h"
#include "log.h"
#include "policy.h"
#include "registry.h"
#include "sha256.h"
#include "state.h"
#include "version.h"

/* A path given explicitly must exist; the defaults may be absent. */
static int check_path(const char *what, const char *path, bool explicit_, bool want_dir)
{
    struct stat st;
    if (!path || !*path)
        return 0;
    if (stat(path, &st) == 0 && (want_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode)))
        return 0;
    const char *why = errno == ENOENT ? "no such file or directory"
                      : want_dir      ? "not a directory" : "not a file";
    if (explicit_) {
        fprintf(stderr, "smartshop-broker: %s %s: %s\n", what, path, why);
        return -1;
    }
    log_warn("%s %s: %s; running without it", what, path, why);
    return 0;
}

/* PATH as the start-up line shows it: absolute (a relative path depends
 * on the directory the broker was started in) and where it came from. */
static void describe_path(const char *path, bool explicit_, char *out, size_t outlen)
{
    const char *origin = explicit_ ? "flag or config file" : "built-in default";
    char cwd[PATH_MAX];
    if (!path || !*path)
        snprintf(out, outlen, "none (%s)", origin);
    else if (path[0] != '/' && getcwd(cwd, sizeof cwd))
        snprintf(out, outlen, "%s/%s (%s, relative to the working directory)", cwd, path, origin);
    else
        snprintf(out, outlen, "%s (%s)", path, origin);
}

/* --check: whether each service file compiles (a syntax check in a bare
 * Lua state: nothing runs). Returns how many failed. */
static int check_services(const char *dir, int *count)
{
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return 0;                   /* check_path said what was wrong */
    int failed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 5 || strcmp(e->d_name + len - 4, ".lua") != 0 || e->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        lua_State *L = luaL_newstate();
        if (L && luaL_loadfilex(L, path, "t") != LUA_OK) {
            fprintf(stderr, "smartshop-broker: service %s\n", lua_tostring(L, -1));
            failed++;
        }
        (*count)++;
        if (L)
            lua_close(L);
    }
    closedir(d);
    return failed;
}

/* --check (like nginx -t): the config was read already; the policy is
 * loaded in its sandbox as the broker would, the services compiled, the
 * CURVE files read and the state directory looked at. Starts nothing,
 * binds nothing, writes nothing. Exit 0 if all is good, else 2. */
static int check_only(config_t *cfg)
{
    int problems = 0;
    printf("config %s: ok\n", cfg->config_path ? cfg->config_path : "(flags and defaults only)");
    if (cfg->policy_path && *cfg->policy_path && access(cfg->policy_path, F_OK) == 0) {
        registry_t *reg = registry_new();
        sandbox_limits_t limits = {cfg->lua_memory_limit, (long)cfg->lua_instruction_limit};
        policy_t *p = reg ? policy_new(cfg->policy_path, limits, reg) : NULL;
        char err[1024], hooks[128];
        if (!p || policy_load(p, err, sizeof err) < 0) {
            fprintf(stderr, "smartshop-broker: policy %s does not load: %s\n", cfg->policy_path,
                    p ? err : "out of memory");
            problems++;
        } else {
            policy_describe_hooks(p, hooks, sizeof hooks);
            printf("policy %s: ok (hooks: %s; sha256 %s)\n", cfg->policy_path, hooks,
                   policy_version(p).loaded_sha256);
        }
        policy_free(&p);
        registry_free(&reg);
    } else {
        printf("policy: none\n");
    }
    if (cfg->services_dir && *cfg->services_dir) {
        int count = 0, failed = check_services(cfg->services_dir, &count);
        problems += failed;
        if (!failed)
            printf("services %s: %d file(s) compile\n", cfg->services_dir, count);
    }
    if (*cfg->curve_secret_key) {
        char err[512];
        auth_t *auth = auth_load(cfg->curve_secret_key, cfg->curve_allow, err, sizeof err);
        if (!auth) {
            fprintf(stderr, "smartshop-broker: %s\n", err);
            problems++;
        } else {
            printf("CURVE: key %s and allow list %s: ok (%d key(s))\n", cfg->curve_secret_key,
                   cfg->curve_allow, auth_key_count(auth));
        }
        auth_free(&auth);
    }
    if (cfg->state_dir && *cfg->state_dir) {
        char db[PATH_MAX];
        snprintf(db, sizeof db, "%s/%s", cfg->state_dir, STATE_FILE);
        struct stat st;
        if (stat(cfg->state_dir, &st) == 0 && (!S_ISDIR(st.st_mode) || access(cfg->state_dir, W_OK) != 0)) {
            fprintf(stderr, "smartshop-broker: state directory %s: %s\n", cfg->state_dir,
                    S_ISDIR(st.st_mode) ? "not writable" : "not a directory");
            problems++;
        } else {
            printf("state %s: %s\n", db, access(db, F_OK) == 0 ? "present" : "none yet (starts empty)");
        }
    } else {
        printf("state: none (--state-dir \"\"): a restart keeps nothing\n");
    }
    if (problems) {
        fprintf(stderr, "smartshop-broker: %d problem(s): the broker would not start as configured\n",
                problems);
        return 2;
    }
    printf("the configuration is good\n");
    return 0;
}

int main(int argc, char **argv)
{
    config_t cfg;
    char err[512];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--keygen") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "smartshop-broker: --keygen needs a file prefix (see --help)\n");
                return 2;
            }
            if (auth_keygen(argv[i + 1], err, sizeof err) < 0) {
                fprintf(stderr, "smartshop-broker: %s\n", err);
                return 2;
            }
            return 0;
        }
        if (strcmp(argv[i], "--nats-keygen") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "smartshop-broker: --nats-keygen needs a file prefix (see --help)\n");
                return 2;
            }
            if (nats_nkey_keygen(argv[i + 1], err, sizeof err) < 0) {
                fprintf(stderr, "smartshop-broker: %s\n", err);
                return 2;
            }
            return 0;
        }
    }
    switch (config_load(&cfg, argc, argv, err, sizeof err)) {
    case CONFIG_EXIT_OK:
        config_free(&cfg);
        return 0;
    case CONFIG_ERROR:
        fprintf(stderr, "smartshop-broker: %s\n", err);
        config_free(&cfg);
        return 2;
    case CONFIG_RUN:
        break;
    }
    log_set_level(cfg.log_level);
    if (check_path("policy file", cfg.policy_path, cfg.policy_explicit, false) < 0 ||
        check_path("services directory", cfg.services_dir, cfg.services_explicit, true) < 0) {
        config_free(&cfg);
        return 2;
    }
    if (cfg.check_only) {
        int rc = check_only(&cfg);
        config_free(&cfg);
        return rc;
    }

    auth_t *auth = NULL;
    if (*cfg.curve_secret_key) {
        if (!(auth = auth_load(cfg.curve_secret_key, cfg.curve_allow, err, sizeof err))) {
            fprintf(stderr, "smartshop-broker: %s\n", err);
            config_free(&cfg);
            return 2;
        }
    } else {
        for (int i = 0; i < cfg.endpoint_count; i++)
            if (auth_endpoint_is_public(cfg.endpoints[i]))
                log_warn("%s is not a loopback address and CURVE is off: anyone who reaches it "
                         "can register any name (see docs/security.md)", cfg.endpoints[i]);
    }

    /* Block the signals the broker handles before libzmq starts its
     * threads, so that they all inherit the mask and only the signalfd in
     * the event loop receives them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    log_info("smartshop-broker %s starting (protocol %d)", SMARTSHOP_VERSION, SMARTSHOP_PROTOCOL_VERSION);
    char policy_text[PATH_MAX + 128], services_text[PATH_MAX + 128];
    describe_path(cfg.policy_path, cfg.policy_explicit, policy_text, sizeof policy_text);
    describe_path(cfg.services_dir, cfg.services_explicit, services_text, sizeof services_text);
    log_info("using policy %s, services %s", policy_text, services_text);
    int exit_code = 1;
    broker_t *broker = broker_new(&cfg, auth, err, sizeof err, &exit_code);
    if (!broker) {
        log_error("%s", err);
        auth_free(&auth);
        config_free(&cfg);
        return exit_code;
    }
    int rc = broker_run(broker);
    broker_free(&broker);
    auth_free(&auth);
    config_free(&cfg);
    return rc;
}
