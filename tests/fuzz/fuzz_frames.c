/* fuzz_frames: frame handling on a real ROUTER socket (src/wire.c,
 * docs/protocol.md F1-F3), then the envelope of what it read.
 *
 * A ROUTER bound to inproc:// and a DEALER connected to it are made once,
 * in LLVMFuzzerInitialize. Each input becomes one multipart message the
 * DEALER sends:
 *
 *   byte 0   bits 0-2: frame count - 1 (1..8 frames)
 *            bit 3:    lengths are 2 bytes (little-endian), else 1 byte
 *            bit 4:    unused (it chose between two send functions once)
 *   then     the lengths of every frame but the last (clamped to what is left)
 *   then     the frames' bytes; the last frame takes the rest.
 *
 * The ROUTER side reads it with wire_recv() and the target checks the
 * shape rules against what was sent:
 *   [id, json]              delimiter false, bad_frames iff json is empty
 *   [id, "", json]          delimiter true,  bad_frames iff json is empty
 *   [id, "x", ...] or more than one frame after the delimiter: bad_frames
 * and, every time, that the whole message was consumed and nothing more
 * (a one-frame sentinel message sent right behind it is the next thing
 * wire_recv() returns, intact, then EAGAIN), that the
 * identity is the DEALER's, that the data frame holds exactly the bytes
 * sent, and that envelope_parse() on it gives the same result as on a copy.
 * Then it answers through wire_send() in the peer's shape (F2) and the
 * DEALER checks it gets ["", answer] or [answer]. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>

#include <zmq.h>

#include "fuzz_common.h"

#include "envelope.h"
#include "registry.h"
#include "wire.h"

#define ENDPOINT "inproc://fuzz-frames"
#define DEALER_ID "fuzz-dealer"
#define WAIT_MS 5000
#define SENTINEL "{\"sentinel\":1}"

static void *ctx, *router, *dealer;

static void set_int(void *s, int opt, int v)
{
    FUZZ_ASSERT(zmq_setsockopt(s, opt, &v, sizeof v) == 0, "setsockopt %d: %s", opt, zmq_strerror(errno));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    ctx = zmq_ctx_new();
    FUZZ_ASSERT(ctx, "zmq_ctx_new");
    router = zmq_socket(ctx, ZMQ_ROUTER);
    dealer = zmq_socket(ctx, ZMQ_DEALER);
    FUZZ_ASSERT(router && dealer, "zmq_socket");
    set_int(router, ZMQ_ROUTER_MANDATORY, 1);   /* as the broker (src/broker.c) */
    set_int(router, ZMQ_LINGER, 0);
    set_int(dealer, ZMQ_LINGER, 0);
    FUZZ_ASSERT(zmq_setsockopt(dealer, ZMQ_ROUTING_ID, DEALER_ID, strlen(DEALER_ID)) == 0, "routing id");
    FUZZ_ASSERT(zmq_bind(router, ENDPOINT) == 0, "bind: %s", zmq_strerror(errno));
    FUZZ_ASSERT(zmq_connect(dealer, ENDPOINT) == 0, "connect: %s", zmq_strerror(errno));
    return 0;
}

/* libFuzzer's timers (SIGALRM for -timeout, -max_total_time) interrupt
 * zmq_poll: retry on EINTR, within WAIT_MS in all. */
static void wait_readable(void *socket, const char *what)
{
    zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
    void *watch = zmq_stopwatch_start();
    int rc;
    for (;;) {
        long left = WAIT_MS - (long)(zmq_stopwatch_intermediate(watch) / 1000);
        rc = zmq_poll(&item, 1, left > 0 ? left : 0);
        if (rc >= 0 || errno != EINTR || left <= 0)
            break;
    }
    zmq_stopwatch_stop(watch);
    FUZZ_ASSERT(rc == 1, "%s: nothing arrived within %d ms (rc %d, %s)", what, WAIT_MS, rc,
                rc < 0 ? zmq_strerror(errno) : "timeout");
}

static bool more(void *socket)
{
    int m = 0;
    size_t n = sizeof m;
    zmq_getsockopt(socket, ZMQ_RCVMORE, &m, &n);
    return m != 0;
}

/* The DEALER reads the answer: [ "", text ] when `delimiter`, else [ text ]. */
static void expect_answer(bool delimiter, const void *text, size_t len)
{
    zmq_msg_t part;
    zmq_msg_init(&part);
    wait_readable(dealer, "answer");
    FUZZ_ASSERT(zmq_msg_recv(&part, dealer, ZMQ_DONTWAIT) >= 0, "answer: %s", zmq_strerror(errno));
    if (delimiter) {
        FUZZ_ASSERT(zmq_msg_size(&part) == 0 && more(dealer), "F2: no delimiter before the answer");
        FUZZ_ASSERT(zmq_msg_recv(&part, dealer, ZMQ_DONTWAIT) >= 0, "answer: %s", zmq_strerror(errno));
    }
    FUZZ_ASSERT(!more(dealer), "F2: more frames after the answer");
    FUZZ_ASSERT(zmq_msg_size(&part) == len && (len == 0 || memcmp(zmq_msg_data(&part), text, len) == 0),
                "the answer arrived changed (%zu bytes, sent %zu)", zmq_msg_size(&part), len);
    zmq_msg_close(&part);
}

static int send_retrying(const void *buf, size_t len, int flags)
{
    int rc;
    while ((rc = zmq_send(dealer, buf, len, flags)) < 0 && errno == EINTR)
        ;
    return rc;
}

/* wire_recv(), again if a signal interrupted libzmq's command processing
 * (the broker just polls again then). */
static int recv_retrying(wire_msg_t *m)
{
    int rc;
    while ((rc = wire_recv(router, m)) < 0 && errno == EINTR)
        ;
    return rc;
}

/* wire_send() with signals held back: libFuzzer's SIGALRM (its timeout
 * watch) can interrupt libzmq's command processing with EINTR, and a send
 * interrupted after the identity frame cannot simply be repeated. The
 * broker never sees this: it blocks its signals in every thread (main.c).
 * A signal that came meanwhile is delivered when the mask is restored. */
static int send_unsignalled(peer_t *peer, zmq_msg_t *out)
{
    sigset_t all, saved;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &saved);
    int rc = wire_send(router, peer, out);
    int why = errno;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    errno = why;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    enum { MAX_FRAMES = 8 };
    size_t pos = 0;
    unsigned ctl = size ? data[pos++] : 0;
    int count = (int)(ctl & 7) + 1;
    bool wide = ctl & 8;
    size_t len[MAX_FRAMES];
    for (int i = 0; i < count - 1; i++) {
        size_t l = 0;
        if (pos < size)
            l = data[pos++];
        if (wide && pos < size)
            l |= (size_t)data[pos++] << 8;
        len[i] = l;
    }
    const uint8_t *frame[MAX_FRAMES];
    for (int i = 0; i < count; i++) {
        size_t left = size - pos;
        if (i == count - 1 || len[i] > left)
            len[i] = left;
        frame[i] = data + pos;
        pos += len[i];
    }

    for (int i = 0; i < count; i++)
        FUZZ_ASSERT(send_retrying(frame[i], len[i], i < count - 1 ? ZMQ_SNDMORE : 0) == (int)len[i],
                    "send frame %d: %s", i, zmq_strerror(errno));
    /* and right behind it, a plain one-frame message */
    FUZZ_ASSERT(send_retrying(SENTINEL, strlen(SENTINEL), 0) == (int)strlen(SENTINEL), "sentinel: %s",
                zmq_strerror(errno));

    /* What F1/F3 say wire_recv() must make of it. */
    bool want_delim = count >= 2 && len[0] == 0;
    int data_frame = want_delim ? 1 : 0;
    bool want_bad = (count >= 2 && len[0] != 0) || count > data_frame + 1 || len[data_frame] == 0;

    wire_msg_t m;
    wait_readable(router, "message");
    FUZZ_ASSERT(recv_retrying(&m) == 0, "wire_recv: %s", zmq_strerror(errno));
    FUZZ_ASSERT(zmq_msg_size(&m.id) == strlen(DEALER_ID) &&
                    memcmp(zmq_msg_data(&m.id), DEALER_ID, strlen(DEALER_ID)) == 0,
                "identity is not the DEALER's");
    FUZZ_ASSERT(m.delimiter == want_delim, "delimiter %d, expected %d (%d frames, first %zu bytes)",
                m.delimiter, want_delim, count, len[0]);
    FUZZ_ASSERT(m.bad_frames == want_bad, "bad_frames %d, expected %d (%d frames)", m.bad_frames,
                want_bad, count);
    if (!m.bad_frames) {
        size_t n = zmq_msg_size(&m.data);
        FUZZ_ASSERT(n == len[data_frame] && memcmp(zmq_msg_data(&m.data), frame[data_frame], n) == 0,
                    "the data frame is not the bytes sent");
    }

    /* The whole message was read, and only it: the next wire_recv() gets
     * the sentinel, whole, then nothing. */
    wire_msg_t next;
    FUZZ_ASSERT(recv_retrying(&next) == 0, "the sentinel is gone: %s", zmq_strerror(errno));
    FUZZ_ASSERT(!next.bad_frames && !next.delimiter && zmq_msg_size(&next.data) == strlen(SENTINEL) &&
                    memcmp(zmq_msg_data(&next.data), SENTINEL, strlen(SENTINEL)) == 0,
                "the message after this one was not read as sent (bad_frames %d, %zu bytes)",
                next.bad_frames, zmq_msg_size(&next.data));
    wire_msg_close(&next);
    errno = 0;
    FUZZ_ASSERT(recv_retrying(&next) == -1 && errno == EAGAIN,
                "frames are left on the socket (errno %d)", errno);

    /* What the broker does next (src/router.c): parse the data frame. The
     * frame is libzmq's buffer, not the fuzzer's: ASan guards it too. */
    if (!m.bad_frames) {
        size_t n = zmq_msg_size(&m.data);
        const char *p = zmq_msg_data(&m.data);
        envelope_t env, copy_env;
        const char *why = NULL, *why2 = NULL;
        bus_err_t err = envelope_parse(&env, p, n, &why);
        bus_err_t err2 = envelope_parse(&copy_env, (const char *)frame[data_frame], n, &why2);
        FUZZ_ASSERT(err == err2 && why == why2, "frame vs copy: %s/%s", bus_err_name(err), bus_err_name(err2));
        for (int i = 0; i < EF__COUNT; i++) {
            const env_value_t *v = &env.f[i];
            if (v->kind != JSON_ABSENT)
                FUZZ_ASSERT(v->ptr >= p && v->ptr + v->len <= p + n, "field %d outside the frame", i);
        }
    }

    /* F2: answer in the shape the peer used (the broker answers bad_frames
     * too, in that shape). */
    peer_t peer;
    memset(&peer, 0, sizeof peer);
    peer.id_len = (uint8_t)zmq_msg_size(&m.id);
    memcpy(peer.id, zmq_msg_data(&m.id), peer.id_len);
    peer.delimiter = m.delimiter;
    peer.fd = -1;
    const void *answer = m.bad_frames ? "bad_frames" : zmq_msg_data(&m.data);
    size_t answer_len = m.bad_frames ? strlen("bad_frames") : zmq_msg_size(&m.data);
    zmq_msg_t out;
    zmq_msg_init_size(&out, answer_len);
    memcpy(zmq_msg_data(&out), answer, answer_len);
    FUZZ_ASSERT(send_unsignalled(&peer, &out) == 0, "wire_send: %s", zmq_strerror(errno));
    FUZZ_ASSERT(zmq_msg_size(&out) == 0, "wire_send did not consume the message");
    zmq_msg_close(&out);
    expect_answer(m.delimiter, answer, answer_len);
    wire_msg_close(&m);
    return 0;
}
