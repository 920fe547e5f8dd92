/* auth: CURVE keys, the allow list and the ZAP handler. See auth.h. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zmq.h>

#include "keyfile.h"
#include "log.h"
#include "names.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"

typedef struct auth_entry {
    char key[AUTH_KEY_LEN + 1];
    char **patterns;             /* "name", "prefix*" or "*" */
    int pattern_count;
} auth_entry_t;

struct auth {
    char public_key[AUTH_KEY_LEN + 1];
    char secret_key[AUTH_KEY_LEN + 1];
    auth_entry_t *entries;
    int entry_count;
    char *allow_path;
    void *zap;                   /* REP socket on inproc://zeromq.zap.01 */
    unsigned long accepted, refused;
};

/* The allow list: one line per client key, "KEY name name-prefix* ...";
 * "# " starts a comment. A key with no names may connect but register
 * nothing; "*" lets it register any name. */
static int read_allow_list(auth_t *a, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "allow list %s: %s", path, strerror(errno));
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        keyfile_strip_comment(line);
        char *save = NULL, *word = strtok_r(line, " \t\r\n", &save);
        if (!word)
            continue;
        if (!keyfile_is_key(word)) {
            snprintf(err, errlen, "allow list %s:%d: '%s' is not a CURVE public key (40 Z85 "
                     "characters)", path, lineno, word);
            rc = -1;
            break;
        }
        auth_entry_t *grown = realloc(a->entries, (size_t)(a->entry_count + 1) * sizeof *grown);
        if (!grown) {
            snprintf(err, errlen, "allow list %s: out of memory", path);
            rc = -1;
            break;
        }
        a->entries = grown;
        auth_entry_t *e = &a->entries[a->entry_count++];
        memset(e, 0, sizeof *e);
        memcpy(e->key, word, AUTH_KEY_LEN + 1);
        while ((word = strtok_r(NULL, " \t\r\n", &save))) {
            const char *why;
            if (strncmp(word, "topic:", 6) == 0 && !topic_is_valid(word + 6, strlen(word + 6), true, &why)) {
                snprintf(err, errlen, "allow list %s:%d: '%s' is not a topic pattern: %s", path,
                         lineno, word, why);
                rc = -1;
                break;
            }
            char **more = realloc(e->patterns, (size_t)(e->pattern_count + 1) * sizeof *more);
            if (!more || !(more[e->pattern_count] = strdup(word))) {
                if (more)
                    e->patterns = more;
                snprintf(err, errlen, "allow list %s: out of memory", path);
                rc = -1;
                break;
            }
            e->patterns = more;
            e->pattern_count++;
        }
    }
    fclose(f);
    return rc;
}

auth_t *auth_load(const char *secret_key_path, const char *allow_path, char *err, size_t errlen)
{
    auth_t *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!allow_path || !*allow_path) {
        snprintf(err, errlen, "CURVE needs an allow list (--curve-allow FILE): without one, "
                 "any key could connect");
        goto fail;
    }
    if (keyfile_read(secret_key_path, true, a->secret_key, err, errlen) < 0 ||
        read_allow_list(a, allow_path, err, errlen) < 0)
        goto fail;
    if (zmq_curve_public(a->public_key, a->secret_key) != 0) {
        snprintf(err, errlen, "key file %s: not a valid CURVE secret key", secret_key_path);
        goto fail;
    }
    a->allow_path = strdup(allow_path);
    return a;
fail:
    auth_free(&a);
    return NULL;
}

void auth_free(auth_t **self_p)
{
    auth_t *a = *self_p;
    if (!a)
        return;
    if (a->zap)
        zmq_close(a->zap);
    for (int i = 0; i < a->entry_count; i++) {
        for (int j = 0; j < a->entries[i].pattern_count; j++)
            free(a->entries[i].patterns[j]);
        free(a->entries[i].patterns);
    }
    free(a->entries);
    free(a->allow_path);
    memset(a->secret_key, 0, sizeof a->secret_key);
    free(a);
    *self_p = NULL;
}

int auth_start(auth_t *a, void *zmq_ctx, void *router, char *err, size_t errlen)
{
    int one = 1;
    a->zap = zmq_socket(zmq_ctx, ZMQ_REP);
    if (!a->zap || zmq_bind(a->zap, ZAP_ENDPOINT) < 0 ||
        zmq_setsockopt(router, ZMQ_CURVE_SERVER, &one, sizeof one) < 0 ||
        zmq_setsockopt(router, ZMQ_CURVE_SECRETKEY, a->secret_key, AUTH_KEY_LEN) < 0 ||
        zmq_setsockopt(router, ZMQ_ZAP_DOMAIN, "smartshop", 9) < 0) {
        snprintf(err, errlen, "cannot set up CURVE: %s", zmq_strerror(errno));
        return -1;
    }
    log_info("CURVE on: broker public key %s, %d client key(s) allowed by %s", a->public_key,
             a->entry_count, a->allow_path);
    return 0;
}

static const auth_entry_t *find_entry(const auth_t *a, const char *key)
{
    for (int i = 0; i < a->entry_count; i++)
        if (strcmp(a->entries[i].key, key) == 0)
            return &a->entries[i];
    return NULL;
}

bool auth_is_admin(const auth_t *a, const char *key)
{
    const auth_entry_t *e = find_entry(a, key);
    for (int i = 0; e && i < e->pattern_count; i++)
        if (strcmp(e->patterns[i], "@admin") == 0)
            return true;
    return false;
}

bool auth_may_register(const auth_t *a, const char *key, const char *name)
{
    const auth_entry_t *e = find_entry(a, key);
    if (!e)
        return false;
    for (int i = 0; i < e->pattern_count; i++) {
        const char *p = e->patterns[i];
        size_t n = strlen(p);
        if (p[0] == '@' || strncmp(p, "topic:", 6) == 0)
            continue;                       /* a mark such as @admin, or topics: not a name */
        if (strcmp(p, name) == 0 || (n > 0 && p[n - 1] == '*' && strncmp(p, name, n - 1) == 0))
            return true;
    }
    return false;
}

/* Calls `ok` on each topic pattern of key's line; true if the line has
 * none (every topic allowed) or `ok` said yes to one. */
static bool topic_allowed(const auth_t *a, const char *key,
                          bool (*ok)(const char *allowed, const void *what, size_t len),
                          const void *what, size_t len)
{
    const auth_entry_t *e = find_entry(a, key);
    if (!e)
        return false;
    bool restricted = false;
    for (int i = 0; i < e->pattern_count; i++) {
        if (strncmp(e->patterns[i], "topic:", 6) != 0)
            continue;
        restricted = true;
        if (ok(e->patterns[i] + 6, what, len))
            return true;
    }
    return !restricted;
}

static bool publish_ok(const char *allowed, const void *topic, size_t len)
{
    return topic_matches(allowed, topic, len);
}

static bool subscribe_ok(const char *allowed, const void *pattern, size_t len)
{
    (void)len;
    return topic_pattern_within(pattern, allowed);
}

bool auth_may_publish(const auth_t *a, const char *key, const char *topic, size_t len)
{
    return topic_allowed(a, key, publish_ok, topic, len);
}

bool auth_may_subscribe(const auth_t *a, const char *key, const char *pattern)
{
    return topic_allowed(a, key, subscribe_ok, pattern, strlen(pattern));
}

/* One ZAP request (RFC 27): version, request id, domain, address, routing
 * id, mechanism, credentials. The answer names the key as the User-Id, so
 * every message from that connection carries it. */
void auth_handle_zap(auth_t *a)
{
    for (;;) {
        zmq_msg_t frames[7];
        int count = 0, more = 1;
        size_t more_size = sizeof more;
        while (more && count < 7) {
            zmq_msg_init(&frames[count]);
            if (zmq_msg_recv(&frames[count], a->zap, count ? 0 : ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&frames[count]);
                if (count == 0)
                    return;
                break;
            }
            count++;
            zmq_getsockopt(a->zap, ZMQ_RCVMORE, &more, &more_size);
        }
        while (more) {                                   /* ignore extra frames */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            zmq_msg_recv(&extra, a->zap, 0);
            zmq_getsockopt(a->zap, ZMQ_RCVMORE, &more, &more_size);
            zmq_msg_close(&extra);
        }
        char key[AUTH_KEY_LEN + 1] = "", address[64] = "?";
        bool curve = count == 7 && zmq_msg_size(&frames[5]) == 5 &&
                     memcmp(zmq_msg_data(&frames[5]), "CURVE", 5) == 0 &&
                     zmq_msg_size(&frames[6]) == 32;
        if (curve)
            zmq_z85_encode(key, zmq_msg_data(&frames[6]), 32);
        if (count >= 4)
            snprintf(address, sizeof address, "%.*s", (int)zmq_msg_size(&frames[3]),
                     (const char *)zmq_msg_data(&frames[3]));
        bool ok = curve && find_entry(a, key) != NULL;
        if (ok) {
            a->accepted++;
            log_debug("CURVE: key %s from %s accepted", key, address);
        } else {
            a->refused++;
            /* anyone who reaches the port can cause this line: bounded */
            static log_ratelimit_t refused_lines;
            log_limited(&refused_lines, 120, LOG_LEVEL_WARN, "CURVE: refused %s from %s: %s",
                        curve ? key : "a connection", address,
                        curve ? "key not in the allow list" : "not a CURVE handshake");
        }
        /* reply: version, request id, status code, status text, user id, metadata */
        const void *request_id = count > 1 ? zmq_msg_data(&frames[1]) : "";
        size_t request_id_len = count > 1 ? zmq_msg_size(&frames[1]) : 0;
        zmq_send(a->zap, "1.0", 3, ZMQ_SNDMORE);
        zmq_send(a->zap, request_id, request_id_len, ZMQ_SNDMORE);
        zmq_send(a->zap, ok ? "200" : "400", 3, ZMQ_SNDMORE);
        zmq_send(a->zap, ok ? "OK" : "key not allowed", ok ? 2 : 15, ZMQ_SNDMORE);
        zmq_send(a->zap, ok ? key : "", ok ? AUTH_KEY_LEN : 0, ZMQ_SNDMORE);
        zmq_send(a->zap, "", 0, 0);
        for (int i = 0; i < count; i++)
            zmq_msg_close(&frames[i]);
    }
}

static int write_file(const char *path, const char *text, mode_t mode, char *err, size_t errlen)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path,
                 errno == EEXIST ? "exists already (keys are never overwritten)" : strerror(errno));
        return -1;
    }
    size_t len = strlen(text);
    bool ok = write(fd, text, len) == (ssize_t)len && fchmod(fd, mode) == 0;
    close(fd);
    if (!ok) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

int auth_keygen(const char *prefix, char *err, size_t errlen)
{
    char public_key[AUTH_KEY_LEN + 1], secret_key[AUTH_KEY_LEN + 1];
    if (zmq_curve_keypair(public_key, secret_key) != 0) {
        snprintf(err, errlen, "cannot make a key pair: %s", zmq_strerror(errno));
        return -1;
    }
    char key_path[1024], pub_path[1024], text[1024];
    snprintf(key_path, sizeof key_path, "%s.key", prefix);
    snprintf(pub_path, sizeof pub_path, "%s.pub", prefix);
    keyfile_format(text, sizeof text, public_key, secret_key);
    if (write_file(key_path, text, 0600, err, errlen) < 0)
        return -1;
    memset(text, 0, sizeof text);
    keyfile_format(text, sizeof text, public_key, NULL);
    if (write_file(pub_path, text, 0644, err, errlen) < 0) {
        unlink(key_path);
        return -1;
    }
    memset(secret_key, 0, sizeof secret_key);
    printf("wrote %s (secret, mode 600) and %s (public): %s\n", key_path, pub_path, public_key);
    return 0;
}

bool auth_endpoint_is_public(const char *endpoint)
{
    if (strncmp(endpoint, "tcp://", 6) != 0)
        return false;
    const char *host = endpoint + 6;
    return !(strncmp(host, "127.", 4) == 0 || strncmp(host, "localhost:", 10) == 0 ||
             strncmp(host, "[::1]:", 6) == 0);
}

void *auth_zap_socket(const auth_t *a)
{
    return a->zap;
}

void auth_stop(auth_t *a)
{
    if (a->zap)
        zmq_close(a->zap);
    a->zap = NULL;
}

int auth_key_count(const auth_t *a)
{
    return a->entry_count;
}

static void free_entries(auth_entry_t *entries, int count)
{
    for (int i = 0; i < count; i++) {
        for (int j = 0; j < entries[i].pattern_count; j++)
            free(entries[i].patterns[j]);
        free(entries[i].patterns);
    }
    free(entries);
}

int auth_reload_allow(auth_t *a, const char *path, char *err, size_t errlen)
{
    auth_t fresh = {0};
    if (!path || !*path) {
        snprintf(err, errlen, "CURVE needs an allow list (--curve-allow FILE)");
        return -1;
    }
    char *copy = strdup(path);
    if (!copy || read_allow_list(&fresh, path, err, errlen) < 0) {
        free_entries(fresh.entries, fresh.entry_count);
        free(copy);
        if (!copy)
            snprintf(err, errlen, "out of memory");
        return -1;
    }
    free_entries(a->entries, a->entry_count);      /* the swap: one step */
    a->entries = fresh.entries;
    a->entry_count = fresh.entry_count;
    free(a->allow_path);
    a->allow_path = copy;
    return 0;
}
