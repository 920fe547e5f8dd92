/* main: flags and config, then the broker. Exit codes: 0 clean stop,
 * 1 runtime failure (e.g. an endpoint in use), 2 bad usage or config. */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "broker.h"
#include "config.h"
#include "nats_link.h"
#include "log.h"
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
