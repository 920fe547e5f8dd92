/* nats_link: the broker's one connection to the NATS cluster that joins
 * brokers into one bus (--nats; docs/protocol.md "Across brokers", X1-X13).
 * Knows subjects and bytes, nothing of envelopes or peers: router_bus.c
 * decides what crosses and what an arrival means.
 *
 * Threads: libnats keeps a few threads of its own (reconnects, timers, one
 * message-delivery thread). None of them runs broker code: the callbacks
 * here only store what happened under a mutex and write an eventfd that
 * the broker's loop polls. Everything else (publishing, subscribing,
 * taking messages, reading and writing the socket) happens on the loop's
 * thread, through libnats's external event-loop mode (natsOptions_SetEventLoop).
 *
 * Subjects (tok(name) is the name with each '.' made '_': one token, and
 * one-to-one since names hold no '_'):
 *   smartshop.req.<tok>    requests to a name; queue group "ss", one
 *                          subscription per local instance
 *   smartshop.evt.<tok>    events to a name; the same
 *   smartshop.bcast        broadcasts; one plain subscription per broker
 *   smartshop.topic        topic events; one plain subscription per broker
 *   smartshop.reply.<bid>.<r|e><seq>.<hex msg_id>
 *                          answers and "no responders" (503) statuses for
 *                          broker <bid>: only it subscribes
 *   smartshop.dir          each broker's names, announced every second
 *   smartshop.to.<bid>.req.<tok>, smartshop.to.<bid>.evt.<tok>
 *                          a request or event for broker <bid> alone: what
 *                          an origin sends while another holder of the
 *                          name is silent (a hung broker, X10); one plain
 *                          subscription per broker, smartshop.to.<bid>.> */
#ifndef SMARTSHOP_NATS_LINK_H
#define SMARTSHOP_NATS_LINK_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NATS_BROKER_ID_MAX 64
/* The longest subject made here: "smartshop.reply." + id + "." + 'r' +
 * 20 digits + "." + 2 x 128 hex digits. */
#define NATS_SUBJECT_MAX 400

typedef struct nats_link nats_link_t;

typedef struct {
    const char *urls;           /* "nats://h:p,tls://h:p": tried in order, then gossiped ones */
    const char *broker_id;      /* [A-Za-z0-9-], 1..64 */
    const char *nkey_seed_file; /* "" or NULL: no nkey */
    const char *ca_file;        /* "" or NULL: the system's CAs (TLS only with tls://) */
    int ping_interval_ms;       /* how often the link pings its server */
    size_t queue_limit;         /* messages waiting for the loop at most; more are dropped */
} nats_link_config_t;

/* What a message that arrived is, by the subscription it came on. */
typedef enum {
    NL_REQUEST = 0,             /* smartshop.req.<tok> */
    NL_EVENT,                   /* smartshop.evt.<tok> */
    NL_BROADCAST,               /* smartshop.bcast */
    NL_TOPIC,                   /* smartshop.topic */
    NL_REPLY,                   /* smartshop.reply.<own id>.* */
    NL_DIRECTORY,               /* smartshop.dir: which broker holds which names */
    NL_DIRECT,                  /* smartshop.to.<own id>.* that is neither of below */
    NL_KINDS
} nats_kind_t;

typedef struct {
    nats_kind_t kind;
    bool no_responders;         /* a 503 status: the message reached nobody */
    bool direct;                /* came on smartshop.to.<own id>.: kind is NL_REQUEST or
                                 * NL_EVENT and subject the part after the id */
    const char *subject;
    const char *reply;          /* NULL if none */
    const char *data;
    size_t len;
    void *handle;               /* the library's message: nats_in_release */
} nats_in_t;

/* Connects (waits at most a few seconds for the first server; if none
 * answers, keeps trying in the background). NULL with a reason in `err`
 * on bad settings. */
nats_link_t *nats_link_new(const nats_link_config_t *cfg, char *err, size_t errlen);
void nats_link_free(nats_link_t **self_p);

/* Whether the link is connected now. Nothing is published while it is
 * not: libnats would buffer it and deliver it late, after the requester
 * was told something else (X3). */
bool nats_link_connected(nats_link_t *l);

/* Whether libnats has closed the connection for good (the server refused
 * our credentials, say): it does not reconnect after that. */
bool nats_link_closed(nats_link_t *l);

/* The two descriptors the loop polls: fds[0] the connection's socket
 * (fd -1 while there is none), fds[1] an eventfd, readable when messages
 * or state changes wait. Call before every poll: reconnects change them. */
void nats_link_poll_prepare(nats_link_t *l, struct pollfd fds[2]);
/* After poll: lets libnats read and write what poll said it may. */
void nats_link_poll_done(nats_link_t *l, const struct pollfd fds[2]);

/* Writes what libnats buffered, for at most `ms` (at exit: the last answers). */
void nats_link_flush(nats_link_t *l, int ms);

/* Takes up to `max` messages that arrived, oldest first. Returns how many;
 * release each with nats_in_release. */
size_t nats_link_take(nats_link_t *l, nats_in_t *out, size_t max);
void nats_in_release(nats_in_t *in);
/* Whether messages wait to be taken (after a take that was limited). */
bool nats_link_pending(nats_link_t *l);

/* One more local instance of `name`: one more queue subscription on its
 * request and event subjects. Returns 0, or -1 (the bus cannot reach it). */
int nats_link_hold(nats_link_t *l, const char *name, size_t len);
/* One fewer. Unsubscribes before any answer about it is sent. */
void nats_link_release(nats_link_t *l, const char *name, size_t len);
/* This broker's names and instance counts, as the announcement it
 * publishes on smartshop.dir: {"broker":"<id>","names":{"<name>":N,...}}
 * (names need no escaping: N1). Malloc'd; NULL if out of memory. Empty
 * "names" after nats_link_release_all. */
char *nats_link_directory_text(nats_link_t *l, size_t *len);
/* Whether the names held changed since the last directory text. */
bool nats_link_directory_dirty(const nats_link_t *l);

/* Drops every name subscription (graceful stop: new requests go elsewhere). */
void nats_link_release_all(nats_link_t *l);

/* Publishes `data` on `subject`, with `reply` (NULL: none). Returns 0,
 * -1 when not connected, -2 when over the servers' max_payload. */
int nats_link_publish(nats_link_t *l, const char *subject, const char *reply,
                      const void *data, size_t len);

/* "smartshop.req.<tok>" or "smartshop.evt.<tok>" for `name`; false if it
 * does not fit `cap`. */
bool nats_subject_for_name(nats_kind_t kind, const char *name, size_t len, char *out, size_t cap);
/* "smartshop.to.<bid>.req.<tok>" (or .evt.): for broker `bid` alone. */
bool nats_subject_for_broker(const char *bid, nats_kind_t kind, const char *name, size_t len,
                             char *out, size_t cap);
/* The name a request or event subject is for, into out[NAME_MAX_LEN + 1]
 * (the subject with or without its "smartshop." as nats_link_take gives a
 * direct one); false if the subject is none of ours. */
bool nats_name_of_subject(const char *subject, char *out, size_t cap);
/* This broker's reply subject for a request ('r') or event ('e') `seq`
 * with `msg_id`. */
void nats_link_reply_subject(const nats_link_t *l, char kind, uint64_t seq, const char *msg_id,
                             size_t id_len, char out[NATS_SUBJECT_MAX]);
/* The reply subject of broker `origin` (as another broker makes it). */
void nats_reply_subject(const char *origin, char kind, uint64_t seq, const char *msg_id,
                        size_t id_len, char out[NATS_SUBJECT_MAX]);
/* Reads a reply subject: the origin broker's id, kind, seq and msg_id
 * (decoded, NUL-terminated, at most 128 bytes). False if it is not one. */
bool nats_parse_reply(const char *subject, char origin[NATS_BROKER_ID_MAX + 1], char *kind,
                      uint64_t *seq, char msg_id[129], size_t *id_len);

const char *nats_link_broker_id(const nats_link_t *l);

/* Counters, for stats. */
typedef struct {
    uint64_t disconnects;       /* times the link lost its server */
    uint64_t reconnects;        /* times it found one again */
    uint64_t queue_dropped;     /* arrivals dropped: the loop's queue was full */
    uint64_t subscriptions;     /* name subscriptions held now (request + event) */
} nats_link_stats_t;
void nats_link_stats(nats_link_t *l, nats_link_stats_t *out);

/* Takes the state changes seen on library threads since the last call,
 * for the loop to log: returns a bit set of NL_CHANGED_*. */
enum { NL_CHANGED_DISCONNECTED = 1, NL_CHANGED_RECONNECTED = 2, NL_CHANGED_CLOSED = 4,
       NL_CHANGED_ERROR = 8 };
int nats_link_take_changes(nats_link_t *l, char *last_error, size_t cap);

/* Writes a new nkey user pair: PREFIX.nk (the seed, "SU...", mode 0600)
 * and PREFIX.nk.pub (the public key, "U...", for the server's config).
 * Returns 0, or -1 with the reason. */
int nats_nkey_keygen(const char *prefix, char *err, size_t errlen);
/* The public key of a seed file. Returns 0, or -1 with the reason. */
int nats_nkey_public(const char *seed_file, char out[64], char *err, size_t errlen);

/* Whether `id` is a valid broker id. */
bool nats_broker_id_valid(const char *id);

#endif
