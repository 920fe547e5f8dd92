/* nats_link: the connection to NATS. See nats_link.h.
 *
 * Why libnats (Debian's libnats-dev 3.4.1) and how it is driven: docs/
 * operations.md "Several brokers on NATS". Three facts shape this file:
 *  - libnats's external event loop (natsOptions_SetEventLoop, with a
 *    non-NULL loop pointer, else the option is silently ignored) lets the
 *    broker's own poll() do the socket I/O; with SendAsap a publish asks
 *    for write interest on the caller's thread at once instead of from the
 *    flusher thread (SCALEOUT.md C2, C3).
 *  - The library still reconnects, and calls attach/detach, on a thread of
 *    its own (C5): the adapter's state sits under a mutex, and the loop
 *    reads it before every poll. ProcessWriteEvent runs only on POLLOUT
 *    while write interest is set: called with nothing to send it writes 0
 *    bytes, which libnats takes for a dead connection (C5's trap).
 *  - natsSubscription_NextMsg swallows a "no responders" status and with
 *    it the subject that says which request it is about (checked with
 *    libnats 3.4.1: status NATS_NO_RESPONDERS, no message). So every
 *    subscription here is asynchronous, on the library's one shared
 *    delivery thread, whose callback only appends the message to one queue
 *    and writes the eventfd: the loop then takes every arrival from one
 *    place, instead of scanning one synchronous subscription per name
 *    (the draft's 2.9). */
#include "nats_link.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>
#include <sodium.h>

#include "keyed_hash.h"
#include "names.h"

#define QUEUE_GROUP "ss"
#define NO_SOCKET ((natsSock)-1)
#define URLS_MAX 16

/* One name held locally: a queue subscription pair per instance. */
typedef struct {
    natsSubscription *req, *evt;
} sub_pair_t;

typedef struct held_name {
    char name[NAME_MAX_LEN + 1];
    sub_pair_t *pairs;
    int count, cap;
    UT_hash_handle hh;
} held_name_t;

typedef struct {
    natsMsg *msg;
    nats_kind_t kind;
} queued_t;

struct nats_link;
/* What a delivery callback is told: the link, and the kind of the
 * subscription the message came on. */
typedef struct {
    struct nats_link *link;
    nats_kind_t kind;
} sub_closure_t;

struct nats_link {
    natsConnection *nc;
    natsOptions *opts;
    char broker_id[NATS_BROKER_ID_MAX + 1];
    char reply_prefix[NATS_BROKER_ID_MAX + 32];   /* "smartshop.reply.<id>." */
    int wake_fd;
    pthread_t loop_thread;
    natsSubscription *bcast, *topic, *reply;
    held_name_t *held;
    uint64_t subscriptions;
    char *nkey_pub;             /* derived from the seed file, or NULL */
    sub_closure_t closures[NL_KINDS];
    natsSubscription *directory, *direct;
    char direct_prefix[NATS_BROKER_ID_MAX + 32];  /* "smartshop.to.<id>." */
    bool dirty;                 /* names changed since the last directory text */
    bool opened;                /* counted in links_open */

    /* below: shared with library threads, under `mu` */
    pthread_mutex_t mu;
    natsSock sock;              /* the socket attach gave, or -1 */
    uint64_t sock_gen;          /* attaches so far: which socket `sock` is */
    uint64_t polled_gen;        /* sock_gen when the loop last prepared a poll */
    bool want_read, want_write;
    queued_t *queue;            /* ring */
    size_t q_head, q_count, q_cap, q_limit;
    uint64_t queue_dropped, disconnects, reconnects;
    int changes;
    char last_error[160];
    bool closed;                /* the library said the connection is closed */
    pthread_cond_t closed_cond;
};


static void wake(nats_link_t *l)
{
    uint64_t one = 1;
    (void)!write(l->wake_fd, &one, sizeof one);
}

/* Links open in this process (the loop's thread only): libnats is closed
 * with the last. */
static int links_open;

/* --- the event-loop adapter (any thread) --- */

static natsStatus ev_attach(void **user_data, void *loop, natsConnection *nc, natsSock sock)
{
    nats_link_t *l = loop;
    (void)nc;
    pthread_mutex_lock(&l->mu);
    l->sock = sock;
    l->sock_gen++;
    l->want_read = true;
    l->want_write = false;
    pthread_mutex_unlock(&l->mu);
    *user_data = l;
    wake(l);                    /* a reconnect's new socket: poll it from the next pass */
    return NATS_OK;
}

static natsStatus ev_read(void *user_data, bool add)
{
    nats_link_t *l = user_data;
    pthread_mutex_lock(&l->mu);
    l->want_read = add;
    pthread_mutex_unlock(&l->mu);
    if (!pthread_equal(pthread_self(), l->loop_thread))
        wake(l);
    return NATS_OK;
}

static natsStatus ev_write(void *user_data, bool add)
{
    nats_link_t *l = user_data;
    pthread_mutex_lock(&l->mu);
    l->want_write = add;
    pthread_mutex_unlock(&l->mu);
    if (!pthread_equal(pthread_self(), l->loop_thread))
        wake(l);
    return NATS_OK;
}

static natsStatus ev_detach(void *user_data)
{
    nats_link_t *l = user_data;
    pthread_mutex_lock(&l->mu);
    l->sock = NO_SOCKET;
    l->want_read = l->want_write = false;
    pthread_mutex_unlock(&l->mu);
    if (!pthread_equal(pthread_self(), l->loop_thread))
        wake(l);
    return NATS_OK;
}

/* --- connection events and deliveries (library threads) --- */

/* Records a change for the loop. The last thing a callback does with the
 * link: nats_link_free waits for the "closed" one under the same mutex,
 * so nothing may touch `l` after the unlock. */
static void note_change(nats_link_t *l, int change, const char *error)
{
    pthread_mutex_lock(&l->mu);
    l->changes |= change;
    if (change == NL_CHANGED_DISCONNECTED)
        l->disconnects++;
    if (change == NL_CHANGED_RECONNECTED)
        l->reconnects++;
    if (error)
        snprintf(l->last_error, sizeof l->last_error, "%s", error);
    wake(l);
    if (change == NL_CHANGED_CLOSED) {
        l->closed = true;
        pthread_cond_broadcast(&l->closed_cond);
    }
    pthread_mutex_unlock(&l->mu);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    note_change(closure, NL_CHANGED_DISCONNECTED, NULL);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    note_change(closure, NL_CHANGED_RECONNECTED, NULL);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    note_change(closure, NL_CHANGED_CLOSED, NULL);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus err, void *closure)
{
    (void)sub;
    const char *text = NULL;
    if (nc)
        natsConnection_GetLastError(nc, &text);
    note_change(closure, NL_CHANGED_ERROR, text && *text ? text : natsStatus_GetText(err));
}

static void deliver(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    const sub_closure_t *c = closure;
    nats_link_t *l = c->link;
    bool was_empty;
    pthread_mutex_lock(&l->mu);
    if (l->q_count >= l->q_limit) {
        l->queue_dropped++;
        pthread_mutex_unlock(&l->mu);
        natsMsg_Destroy(msg);
        return;
    }
    if (l->q_count == l->q_cap) {
        size_t cap = l->q_cap ? 2 * l->q_cap : 1024;
        queued_t *grown = malloc(cap * sizeof *grown);
        if (!grown) {
            l->queue_dropped++;
            pthread_mutex_unlock(&l->mu);
            natsMsg_Destroy(msg);
            return;
        }
        for (size_t i = 0; i < l->q_count; i++)
            grown[i] = l->queue[(l->q_head + i) % l->q_cap];
        free(l->queue);
        l->queue = grown;
        l->q_cap = cap;
        l->q_head = 0;
    }
    l->queue[(l->q_head + l->q_count) % l->q_cap] = (queued_t){msg, c->kind};
    was_empty = l->q_count++ == 0;
    pthread_mutex_unlock(&l->mu);
    if (was_empty)
        wake(l);                /* one wake-up per burst */
}

/* --- subjects --- */

bool nats_broker_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > NATS_BROKER_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'))
            return false;
    }
    return true;
}

bool nats_subject_for_name(nats_kind_t kind, const char *name, size_t len, char *out, size_t cap)
{
    const char *prefix = kind == NL_EVENT ? "smartshop.evt." : "smartshop.req.";
    size_t plen = strlen(prefix);
    if (plen + len + 1 > cap)
        return false;
    memcpy(out, prefix, plen);
    for (size_t i = 0; i < len; i++)
        out[plen + i] = name[i] == '.' ? '_' : name[i];
    out[plen + len] = '\0';
    return true;
}

bool nats_subject_for_broker(const char *bid, nats_kind_t kind, const char *name, size_t len,
                             char *out, size_t cap)
{
    char normal[NATS_SUBJECT_MAX];
    if (!nats_subject_for_name(kind, name, len, normal, sizeof normal))
        return false;
    int n = snprintf(out, cap, "smartshop.to.%s.%s", bid, normal + 10);
    return n > 0 && (size_t)n < cap;
}

bool nats_name_of_subject(const char *subject, char *out, size_t cap)
{
    if (strncmp(subject, "smartshop.", 10) == 0)
        subject += 10;
    if (strncmp(subject, "req.", 4) != 0 && strncmp(subject, "evt.", 4) != 0)
        return false;
    const char *tok = subject + 4;
    size_t len = strlen(tok);
    if (len == 0 || len + 1 > cap)
        return false;
    for (size_t i = 0; i < len; i++)
        out[i] = tok[i] == '_' ? '.' : tok[i];
    out[len] = '\0';
    return true;
}

static const char hex_digits[] = "0123456789abcdef";

void nats_reply_subject(const char *origin, char kind, uint64_t seq, const char *msg_id,
                        size_t id_len, char out[NATS_SUBJECT_MAX])
{
    int n = snprintf(out, NATS_SUBJECT_MAX, "smartshop.reply.%s.%c%llu.", origin, kind,
                     (unsigned long long)seq);
    if (id_len > 128)
        id_len = 128;
    for (size_t i = 0; i < id_len && n + 3 < NATS_SUBJECT_MAX; i++) {
        out[n++] = hex_digits[(unsigned char)msg_id[i] >> 4];
        out[n++] = hex_digits[(unsigned char)msg_id[i] & 15];
    }
    out[n] = '\0';
}

void nats_link_reply_subject(const nats_link_t *l, char kind, uint64_t seq, const char *msg_id,
                             size_t id_len, char out[NATS_SUBJECT_MAX])
{
    nats_reply_subject(l->broker_id, kind, seq, msg_id, id_len, out);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool nats_parse_reply(const char *subject, char origin[NATS_BROKER_ID_MAX + 1], char *kind,
                      uint64_t *seq, char msg_id[129], size_t *id_len)
{
    if (strncmp(subject, "smartshop.reply.", 16) != 0)
        return false;
    const char *p = subject + 16, *dot = strchr(p, '.');
    if (!dot || dot == p || (size_t)(dot - p) > NATS_BROKER_ID_MAX)
        return false;
    memcpy(origin, p, (size_t)(dot - p));
    origin[dot - p] = '\0';
    p = dot + 1;
    if (*p != 'r' && *p != 'e')
        return false;
    *kind = *p++;
    uint64_t n = 0;
    if (*p < '0' || *p > '9')
        return false;
    while (*p >= '0' && *p <= '9')
        n = n * 10 + (uint64_t)(*p++ - '0');
    if (*p++ != '.')
        return false;
    size_t len = 0;
    while (p[0] && p[1] && len < 128) {
        int hi = hex_value(p[0]), lo = hex_value(p[1]);
        if (hi < 0 || lo < 0)
            return false;
        msg_id[len++] = (char)(hi << 4 | lo);
        p += 2;
    }
    if (*p || len == 0)
        return false;
    msg_id[len] = '\0';
    *id_len = len;
    *seq = n;
    return true;
}

const char *nats_link_broker_id(const nats_link_t *l)
{
    return l->broker_id;
}

/* --- nkeys: the public key of a seed file (libnats wants both) --- */

static const char base32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static uint16_t crc16_xmodem(const uint8_t *p, size_t n)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

static size_t base32_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
    uint32_t buffer = 0;
    int bits = 0;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *at = strchr(base32_alphabet, in[i]);
        if (!at || !in[i])
            return 0;
        buffer = (buffer << 5) | (uint32_t)(at - base32_alphabet);
        bits += 5;
        if (bits >= 8) {
            if (len == cap)
                return 0;
            out[len++] = (uint8_t)(buffer >> (bits - 8));
            bits -= 8;
        }
    }
    return len;
}

static void base32_encode(const uint8_t *in, size_t n, char *out)
{
    uint32_t buffer = 0;
    int bits = 0;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        buffer = (buffer << 8) | in[i];
        bits += 8;
        while (bits >= 5) {
            out[len++] = base32_alphabet[(buffer >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits > 0)
        out[len++] = base32_alphabet[(buffer << (5 - bits)) & 31];
    out[len] = '\0';
}

#define NKEY_PREFIX_SEED (18 << 3)
#define NKEY_PREFIX_USER (20 << 3)

/* Reads a user seed ("SU...") and gives its public key ("U...", 56
 * characters). Returns 0, or -1 with the reason. */
static int nkey_public_of_seed_file(const char *path, char out[64], char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read the nkey seed %s: %s", path, strerror(errno));
        return -1;
    }
    char text[128] = "";
    bool read = fgets(text, sizeof text, f) != NULL;
    fclose(f);
    size_t n = read ? strcspn(text, "\r\n \t") : 0;
    uint8_t raw[64];
    size_t len = base32_decode(text, n, raw, sizeof raw);
    sodium_memzero(text, sizeof text);
    int rc = -1;
    if (len != 36 || (raw[0] & 0xf8) != NKEY_PREFIX_SEED ||
        (uint8_t)(((raw[0] & 7) << 5) | (raw[1] >> 3)) != NKEY_PREFIX_USER ||
        crc16_xmodem(raw, 34) != (uint16_t)(raw[34] | raw[35] << 8)) {
        snprintf(err, errlen, "%s is not an nkey user seed (a line starting SU)", path);
        goto done;
    }
    uint8_t pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    if (sodium_init() < 0 || crypto_sign_seed_keypair(pk, sk, raw + 2) != 0) {
        snprintf(err, errlen, "cannot derive the nkey's public key");
        goto done;
    }
    sodium_memzero(sk, sizeof sk);
    uint8_t pub[35];
    pub[0] = NKEY_PREFIX_USER;
    memcpy(pub + 1, pk, 32);
    uint16_t crc = crc16_xmodem(pub, 33);
    pub[33] = (uint8_t)(crc & 0xff);
    pub[34] = (uint8_t)(crc >> 8);
    base32_encode(pub, sizeof pub, out);
    rc = 0;
done:
    sodium_memzero(raw, sizeof raw);
    return rc;
}

int nats_nkey_keygen(const char *prefix, char *err, size_t errlen)
{
    uint8_t raw[36], pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    char seed_text[64], pub_text[64], path[4096];
    if (sodium_init() < 0) {
        snprintf(err, errlen, "libsodium did not start");
        return -1;
    }
    raw[0] = (uint8_t)(NKEY_PREFIX_SEED | (NKEY_PREFIX_USER >> 5));
    raw[1] = (uint8_t)((NKEY_PREFIX_USER & 31) << 3);
    randombytes_buf(raw + 2, 32);
    uint16_t crc = crc16_xmodem(raw, 34);
    raw[34] = (uint8_t)(crc & 0xff);
    raw[35] = (uint8_t)(crc >> 8);
    base32_encode(raw, sizeof raw, seed_text);
    crypto_sign_seed_keypair(pk, sk, raw + 2);
    sodium_memzero(sk, sizeof sk);
    sodium_memzero(raw, sizeof raw);
    uint8_t pub[35];
    pub[0] = NKEY_PREFIX_USER;
    memcpy(pub + 1, pk, 32);
    crc = crc16_xmodem(pub, 33);
    pub[33] = (uint8_t)(crc & 0xff);
    pub[34] = (uint8_t)(crc >> 8);
    base32_encode(pub, sizeof pub, pub_text);
    int rc = -1;
    snprintf(path, sizeof path, "%s.nk", prefix);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);   /* a secret: 0600 */
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!f || fprintf(f, "%s\n", seed_text) < 0 || fclose(f) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        if (f == NULL && fd >= 0)
            close(fd);
        goto done;
    }
    snprintf(path, sizeof path, "%s.nk.pub", prefix);
    if (!(f = fopen(path, "w")) || fprintf(f, "%s\n", pub_text) < 0 || fclose(f) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    sodium_memzero(seed_text, sizeof seed_text);
    return rc;
}

int nats_nkey_public(const char *seed_file, char out[64], char *err, size_t errlen)
{
    return nkey_public_of_seed_file(seed_file, out, err, errlen);
}

/* --- the link --- */

static int fail_status(natsStatus s, const char *what, char *err, size_t errlen)
{
    const char *detail = nats_GetLastError(NULL);
    snprintf(err, errlen, "%s: %s", what, detail && *detail ? detail : natsStatus_GetText(s));
    return -1;
}

static int subscribe_plain(nats_link_t *l, natsSubscription **sub, const char *subject,
                           nats_kind_t kind)
{
    return natsConnection_Subscribe(sub, l->nc, subject, deliver, &l->closures[kind]) == NATS_OK
               ? 0 : -1;
}

static void drop_plain_subscriptions(nats_link_t *l)
{
    natsSubscription **subs[] = {&l->bcast, &l->topic, &l->reply, &l->directory, &l->direct};
    for (size_t i = 0; i < sizeof subs / sizeof subs[0]; i++) {
        natsSubscription_Destroy(*subs[i]);
        *subs[i] = NULL;
    }
}

static int set_options(nats_link_t *l, const nats_link_config_t *cfg, char *err, size_t errlen)
{
    char *copy = strdup(cfg->urls);
    const char *urls[URLS_MAX];
    int count = 0;
    natsStatus s = NATS_OK;
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    bool tls = false;
    for (char *save = NULL, *url = strtok_r(copy, ",", &save); url && count < URLS_MAX;
         url = strtok_r(NULL, ",", &save)) {
        if (strncmp(url, "nats://", 7) != 0 && strncmp(url, "tls://", 6) != 0) {
            snprintf(err, errlen, "--nats: %s is not a nats:// or tls:// URL", url);
            free(copy);
            return -1;
        }
        tls |= strncmp(url, "tls://", 6) == 0;
        urls[count++] = url;
    }
    if (count == 0) {
        snprintf(err, errlen, "--nats: no URL given");
        free(copy);
        return -1;
    }
    natsOptions *o = l->opts;
    if ((s = natsOptions_SetServers(o, urls, count)) == NATS_OK &&
        (s = natsOptions_SetNoRandomize(o, true)) == NATS_OK &&        /* the store's leaf first */
        (s = natsOptions_SetName(o, l->broker_id)) == NATS_OK &&
        (s = natsOptions_SetNoEcho(o, true)) == NATS_OK &&             /* never our own broadcasts */
        (s = natsOptions_SetSendAsap(o, true)) == NATS_OK &&
        (s = natsOptions_SetEventLoop(o, l, ev_attach, ev_read, ev_write, ev_detach)) == NATS_OK &&
        (s = natsOptions_UseGlobalMessageDelivery(o, true)) == NATS_OK &&
        (s = natsOptions_SetMaxReconnect(o, -1)) == NATS_OK &&         /* for ever */
        (s = natsOptions_SetReconnectWait(o, 200)) == NATS_OK &&
        (s = natsOptions_SetTimeout(o, 2000)) == NATS_OK &&
        (s = natsOptions_SetPingInterval(o, cfg->ping_interval_ms)) == NATS_OK &&
        (s = natsOptions_SetMaxPingsOut(o, 2)) == NATS_OK &&
        (s = natsOptions_SetRetryOnFailedConnect(o, true, on_reconnected, l)) == NATS_OK &&
        (s = natsOptions_SetDisconnectedCB(o, on_disconnected, l)) == NATS_OK &&
        (s = natsOptions_SetReconnectedCB(o, on_reconnected, l)) == NATS_OK &&
        (s = natsOptions_SetClosedCB(o, on_closed, l)) == NATS_OK &&
        (s = natsOptions_SetErrorHandler(o, on_error, l)) == NATS_OK && tls)
        s = natsOptions_SetSecure(o, true);
    free(copy);
    if (s != NATS_OK)
        return fail_status(s, "--nats: bad settings", err, errlen);
    if (cfg->ca_file && *cfg->ca_file &&
        (s = natsOptions_LoadCATrustedCertificates(o, cfg->ca_file)) != NATS_OK)
        return fail_status(s, "--nats-ca", err, errlen);
    if (cfg->nkey_seed_file && *cfg->nkey_seed_file) {
        char pub[64];
        if (nkey_public_of_seed_file(cfg->nkey_seed_file, pub, err, errlen) < 0)
            return -1;
        if (!(l->nkey_pub = strdup(pub)) ||
            (s = natsOptions_SetNKeyFromSeed(o, l->nkey_pub, cfg->nkey_seed_file)) != NATS_OK)
            return fail_status(s, "--nats-nkey", err, errlen);
    }
    return 0;
}

nats_link_t *nats_link_new(const nats_link_config_t *cfg, char *err, size_t errlen)
{
    if (!nats_broker_id_valid(cfg->broker_id)) {
        snprintf(err, errlen, "--broker-id: '%s' is not 1 to %d of [A-Za-z0-9-]", cfg->broker_id,
                 NATS_BROKER_ID_MAX);
        return NULL;
    }
    nats_link_t *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->closed_cond, NULL);
    l->sock = NO_SOCKET;
    l->loop_thread = pthread_self();
    l->q_limit = cfg->queue_limit ? cfg->queue_limit : 65536;
    snprintf(l->broker_id, sizeof l->broker_id, "%s", cfg->broker_id);
    snprintf(l->reply_prefix, sizeof l->reply_prefix, "smartshop.reply.%s.", cfg->broker_id);
    snprintf(l->direct_prefix, sizeof l->direct_prefix, "smartshop.to.%s.", cfg->broker_id);
    for (int k = 0; k < NL_KINDS; k++)
        l->closures[k] = (sub_closure_t){l, (nats_kind_t)k};
    l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    natsStatus s;
    if (l->wake_fd < 0) {
        snprintf(err, errlen, "cannot make an eventfd: %s", strerror(errno));
        goto fail;
    }
    if ((s = nats_Open(-1)) != NATS_OK) {
        fail_status(s, "cannot start libnats", err, errlen);
        goto fail;
    }
    l->opened = true;
    links_open++;
    if ((s = natsOptions_Create(&l->opts)) != NATS_OK) {
        fail_status(s, "cannot start libnats", err, errlen);
        goto fail;
    }
    if (set_options(l, cfg, err, errlen) < 0)
        goto fail;
    s = natsConnection_Connect(&l->nc, l->opts);
    if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
        fail_status(s, "cannot connect to NATS", err, errlen);
        goto fail;
    }
    char reply[NATS_BROKER_ID_MAX + 40], direct[NATS_BROKER_ID_MAX + 40];
    snprintf(reply, sizeof reply, "%s>", l->reply_prefix);
    snprintf(direct, sizeof direct, "%s>", l->direct_prefix);
    if (subscribe_plain(l, &l->bcast, "smartshop.bcast", NL_BROADCAST) < 0 ||
        subscribe_plain(l, &l->topic, "smartshop.topic", NL_TOPIC) < 0 ||
        subscribe_plain(l, &l->reply, reply, NL_REPLY) < 0 ||
        subscribe_plain(l, &l->directory, "smartshop.dir", NL_DIRECTORY) < 0 ||
        subscribe_plain(l, &l->direct, direct, NL_DIRECT) < 0) {
        /* the server may already have refused us (bad credentials, plain
         * TCP to a TLS port): libnats then closes the connection for good,
         * as it would later. The broker runs alone, as after a later close
         * (nats_link_closed), rather than not at all. */
        if (natsConnection_Status(l->nc) == NATS_CONN_STATUS_CLOSED) {
            drop_plain_subscriptions(l);
            return l;
        }
        fail_status(NATS_ERR, "cannot subscribe on NATS", err, errlen);
        goto fail;
    }
    return l;
fail:
    nats_link_free(&l);
    return NULL;
}

static void drop_pair(sub_pair_t *p)
{
    natsSubscription_Unsubscribe(p->req);
    natsSubscription_Destroy(p->req);
    natsSubscription_Unsubscribe(p->evt);
    natsSubscription_Destroy(p->evt);
}

void nats_link_release_all(nats_link_t *l)
{
    l->dirty = true;
    held_name_t *h, *tmp;
    HASH_ITER(hh, l->held, h, tmp) {
        for (int i = 0; i < h->count; i++)
            drop_pair(&h->pairs[i]);
        l->subscriptions -= 2u * (unsigned)h->count;
        HASH_DEL(l->held, h);
        free(h->pairs);
        free(h);
    }
}

void nats_link_free(nats_link_t **self_p)
{
    nats_link_t *l = *self_p;
    if (!l)
        return;
    if (l->nc) {
        nats_link_release_all(l);
        drop_plain_subscriptions(l);
        natsConnection_Close(l->nc);
        /* its callbacks run on a library thread, after Close returns: wait
         * for the last ("closed") before the memory they use goes */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 3;
        pthread_mutex_lock(&l->mu);
        while (!l->closed &&
               pthread_cond_timedwait(&l->closed_cond, &l->mu, &until) == 0)
            ;
        pthread_mutex_unlock(&l->mu);
        natsConnection_Destroy(l->nc);
    }
    natsOptions_Destroy(l->opts);
    /* the delivery thread may still hold messages for us: let it finish
     * (with the last link: the library is one per process) */
    if (l->opened && --links_open == 0)
        nats_CloseAndWait(2000);
    pthread_mutex_lock(&l->mu);
    for (size_t i = 0; i < l->q_count; i++)
        natsMsg_Destroy(l->queue[(l->q_head + i) % l->q_cap].msg);
    pthread_mutex_unlock(&l->mu);
    free(l->queue);
    free(l->nkey_pub);
    if (l->wake_fd >= 0)
        close(l->wake_fd);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->closed_cond);
    free(l);
    *self_p = NULL;
}

bool nats_link_connected(nats_link_t *l)
{
    return natsConnection_Status(l->nc) == NATS_CONN_STATUS_CONNECTED;
}

bool nats_link_closed(nats_link_t *l)
{
    return natsConnection_Status(l->nc) == NATS_CONN_STATUS_CLOSED;
}

void nats_link_poll_prepare(nats_link_t *l, struct pollfd fds[2])
{
    pthread_mutex_lock(&l->mu);
    int sock = (int)l->sock;
    short events = (short)((l->want_read ? POLLIN : 0) | (l->want_write ? POLLOUT : 0));
    l->polled_gen = l->sock_gen;
    pthread_mutex_unlock(&l->mu);
    /* After losing its server libnats closes the socket and stops reading
     * it without detaching it (it attaches the next one on reconnect): a
     * closed descriptor is POLLNVAL at once, every pass, and the loop would
     * spin for as long as the server is away. Nothing wanted: not polled. */
    if (!events)
        sock = -1;
    fds[0] = (struct pollfd){.fd = sock, .events = events};
    fds[1] = (struct pollfd){.fd = l->wake_fd, .events = POLLIN};
}

void nats_link_poll_done(nats_link_t *l, const struct pollfd fds[2])
{
    if (fds[1].revents & POLLIN) {
        uint64_t count;
        (void)!read(l->wake_fd, &count, sizeof count);
    }
    if (fds[0].fd < 0 || !fds[0].revents)
        return;
    if (fds[0].revents & POLLNVAL) {
        /* closed under us while wanted: the same, until libnats attaches
         * a socket again (not one attached since this poll was prepared) */
        pthread_mutex_lock(&l->mu);
        if (l->sock_gen == l->polled_gen && l->sock == (natsSock)fds[0].fd)
            l->sock = NO_SOCKET;
        pthread_mutex_unlock(&l->mu);
        return;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR))
        natsConnection_ProcessReadEvent(l->nc);
    /* only on POLLOUT, and only while libnats asked for it: a write event
     * with nothing buffered sends 0 bytes, taken for a dead connection */
    if (fds[0].revents & POLLOUT) {
        pthread_mutex_lock(&l->mu);
        bool wanted = l->want_write && l->sock == (natsSock)fds[0].fd;
        pthread_mutex_unlock(&l->mu);
        if (wanted)
            natsConnection_ProcessWriteEvent(l->nc);
    }
}

size_t nats_link_take(nats_link_t *l, nats_in_t *out, size_t max)
{
    queued_t taken[256];
    if (max > 256)
        max = 256;
    size_t n = 0;
    pthread_mutex_lock(&l->mu);
    while (n < max && l->q_count > 0) {
        taken[n++] = l->queue[l->q_head];
        l->q_head = (l->q_head + 1) % l->q_cap;
        l->q_count--;
    }
    pthread_mutex_unlock(&l->mu);
    for (size_t i = 0; i < n; i++) {
        natsMsg *m = taken[i].msg;
        out[i] = (nats_in_t){
            .kind = taken[i].kind,
            .no_responders = natsMsg_IsNoResponders(m),
            .subject = natsMsg_GetSubject(m),
            .reply = natsMsg_GetReply(m),
            .data = natsMsg_GetData(m),
            .len = (size_t)natsMsg_GetDataLength(m),
            .handle = m,
        };
        size_t plen = out[i].kind == NL_DIRECT ? strlen(l->direct_prefix) : 0;
        if (plen && strncmp(out[i].subject, l->direct_prefix, plen) == 0) {
            const char *tail = out[i].subject + plen;
            if (strncmp(tail, "req.", 4) == 0 || strncmp(tail, "evt.", 4) == 0) {
                out[i].kind = tail[0] == 'r' ? NL_REQUEST : NL_EVENT;
                out[i].direct = true;
                out[i].subject = tail;
            }
        }
    }
    return n;
}

bool nats_link_pending(nats_link_t *l)
{
    pthread_mutex_lock(&l->mu);
    bool any = l->q_count > 0;
    pthread_mutex_unlock(&l->mu);
    return any;
}

void nats_in_release(nats_in_t *in)
{
    natsMsg_Destroy(in->handle);
    in->handle = NULL;
}

int nats_link_hold(nats_link_t *l, const char *name, size_t len)
{
    held_name_t *h = NULL;
    HASH_FIND(hh, l->held, name, len, h);
    if (!h) {
        if (len > NAME_MAX_LEN || !(h = calloc(1, sizeof *h)))
            return -1;
        memcpy(h->name, name, len);
        HASH_ADD(hh, l->held, name[0], len, h);
    }
    if (h->count == h->cap) {
        int cap = h->cap ? 2 * h->cap : 2;
        sub_pair_t *grown = realloc(h->pairs, (size_t)cap * sizeof *grown);
        if (!grown)
            return -1;
        h->pairs = grown;
        h->cap = cap;
    }
    char req[NATS_SUBJECT_MAX], evt[NATS_SUBJECT_MAX];
    sub_pair_t p = {0};
    nats_subject_for_name(NL_REQUEST, name, len, req, sizeof req);
    nats_subject_for_name(NL_EVENT, name, len, evt, sizeof evt);
    if (natsConnection_QueueSubscribe(&p.req, l->nc, req, QUEUE_GROUP, deliver,
                                      &l->closures[NL_REQUEST]) != NATS_OK)
        return -1;
    if (natsConnection_QueueSubscribe(&p.evt, l->nc, evt, QUEUE_GROUP, deliver,
                                      &l->closures[NL_EVENT]) != NATS_OK) {
        natsSubscription_Unsubscribe(p.req);
        natsSubscription_Destroy(p.req);
        return -1;
    }
    h->pairs[h->count++] = p;
    l->subscriptions += 2;
    l->dirty = true;
    return 0;
}

void nats_link_release(nats_link_t *l, const char *name, size_t len)
{
    held_name_t *h = NULL;
    HASH_FIND(hh, l->held, name, len, h);
    if (!h || h->count == 0)
        return;
    drop_pair(&h->pairs[--h->count]);
    l->subscriptions -= 2;
    l->dirty = true;
    if (h->count == 0) {
        HASH_DEL(l->held, h);
        free(h->pairs);
        free(h);
    }
}

int nats_link_publish(nats_link_t *l, const char *subject, const char *reply,
                      const void *data, size_t len)
{
    if (natsConnection_Status(l->nc) != NATS_CONN_STATUS_CONNECTED)
        return -1;
    if ((int64_t)len > natsConnection_GetMaxPayload(l->nc))
        return -2;
    natsStatus s = reply ? natsConnection_PublishRequest(l->nc, subject, reply, data, (int)len)
                         : natsConnection_Publish(l->nc, subject, data, (int)len);
    if (s == NATS_MAX_PAYLOAD)
        return -2;
    return s == NATS_OK ? 0 : -1;
}

void nats_link_stats(nats_link_t *l, nats_link_stats_t *out)
{
    pthread_mutex_lock(&l->mu);
    out->disconnects = l->disconnects;
    out->reconnects = l->reconnects;
    out->queue_dropped = l->queue_dropped;
    pthread_mutex_unlock(&l->mu);
    out->subscriptions = l->subscriptions;
}

int nats_link_take_changes(nats_link_t *l, char *last_error, size_t cap)
{
    pthread_mutex_lock(&l->mu);
    int changes = l->changes;
    l->changes = 0;
    if (last_error && cap)
        snprintf(last_error, cap, "%s", l->last_error);
    pthread_mutex_unlock(&l->mu);
    /* a refused first connect reaches no error handler: ask the library */
    const char *text = NULL;
    if (last_error && cap && !*last_error && natsConnection_GetLastError(l->nc, &text) != NATS_OK &&
        text)
        snprintf(last_error, cap, "%s", text);
    return changes;
}

void nats_link_flush(nats_link_t *l, int ms)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        struct pollfd fds[2];
        nats_link_poll_prepare(l, fds);
        if (fds[0].fd < 0 || !(fds[0].events & POLLOUT))
            return;                     /* nothing waits to be written */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long spent = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (spent >= ms)
            return;
        fds[0].events = POLLOUT;
        if (poll(fds, 1, (int)(ms - spent)) > 0)
            nats_link_poll_done(l, fds);
    }
}

bool nats_link_directory_dirty(const nats_link_t *l)
{
    return l->dirty;
}

char *nats_link_directory_text(nats_link_t *l, size_t *len)
{
    size_t cap = 64 + strlen(l->broker_id), count = HASH_COUNT(l->held);
    cap += count * (NAME_MAX_LEN + 16);
    char *text = malloc(cap);
    if (!text)
        return NULL;
    size_t n = (size_t)snprintf(text, cap, "{\"broker\":\"%s\",\"names\":{", l->broker_id);
    held_name_t *h, *tmp;
    bool first = true;
    HASH_ITER(hh, l->held, h, tmp) {
        n += (size_t)snprintf(text + n, cap - n, "%s\"%s\":%d", first ? "" : ",", h->name, h->count);
        first = false;
    }
    n += (size_t)snprintf(text + n, cap - n, "}}");
    l->dirty = false;
    *len = n;
    return text;
}
