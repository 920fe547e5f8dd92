/* state: what is written behind comes back after a reopen, with real
 * SQLite; a corrupted file is moved aside and the state starts empty;
 * dead letters keep their ids, senders and shares across a reopen. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "clock.h"
#include "deadletter.h"
#include "registry.h"
#include "state_keepers.h"
#include "state.h"

static char dir[200];

static void collect_registration(void *ctx, const state_registration_t *r)
{
    char *out = ctx;
    size_t used = strlen(out);
    snprintf(out + used, 4096 - used, "%s%.*s/%s/%s/%d", used ? " " : "", (int)r->identity_len,
             (const char *)r->identity, r->name, r->key, r->delimiter);
}

static void collect_letter(void *ctx, const state_letter_t *l)
{
    char *out = ctx;
    size_t used = strlen(out);
    snprintf(out + used, 4096 - used, "%s%llu:%s:%.*s:%s:%zu", used ? " " : "",
             (unsigned long long)l->id, l->code, (int)l->sender_len, (const char *)l->sender,
             l->msg_id, l->bytes ? l->len : 0);
}

static state_t *reopen(const char *expect_origin)
{
    char err[512];
    state_t *st = state_open(dir, err, sizeof err);
    CHECK(st != NULL);
    if (st)
        CHECK(strcmp(state_origin(st), expect_origin) == 0);
    return st;
}

static void test_round_trip(void)
{
    state_t *st = reopen("new");
    state_start(st);
    state_registration_t a = {(const uint8_t *)"id-a", 4, "pricing", "", true};
    state_registration_t b = {(const uint8_t *)"id-b", 4, "stock", "KEYB", false};
    state_put_registration(st, &a);
    state_put_registration(st, &b);
    state_put_registration(st, &a);           /* twice: still one row */
    state_letter_t l = {.id = 7, .at = "2026-01-01T00:00:00Z", .code = "no_such_service",
                        .sender = (const uint8_t *)"c1", .sender_len = 2, .msg_id = "m7",
                        .src = "c", .dst = "x", .action = "go", .bytes = "{}", .len = 2};
    state_put_letter(st, &l);
    l.id = 8, l.sender_len = 0, l.bytes = NULL, l.msg_id = "m8", l.code = "timeout";
    state_put_letter(st, &l);
    state_put_policy(st, "p.lua", "return 1", 8, "abc", "2026-01-01T00:00:00Z");
    CHECK(state_sync(st, 5000));
    state_counts_t c = state_counts(st);
    CHECK_EQ_INT(c.queued, 0);
    CHECK_EQ_INT(c.written, 6);
    CHECK_EQ_INT(c.failed, 0);
    state_close(&st, 5000);

    st = reopen("restored");
    char out[4096] = "";
    CHECK_EQ_INT(state_load_registrations(st, collect_registration, out), 2);
    CHECK(strcmp(out, "id-a/pricing//1 id-b/stock/KEYB/0") == 0);
    out[0] = '\0';
    CHECK_EQ_INT(state_load_letters(st, collect_letter, out), 2);
    CHECK(strcmp(out, "7:no_such_service:c1:m7:2 8:timeout::m8:0") == 0);
    char path[4096], sha[65], at[32];
    size_t len = 0;
    char *text = state_load_policy(st, &len, path, sha, at);
    CHECK(text && len == 8 && strcmp(text, "return 1") == 0 && strcmp(path, "p.lua") == 0 &&
          strcmp(sha, "abc") == 0);
    free(text);
    state_start(st);
    state_del_registration(st, (const uint8_t *)"id-a", 4, "pricing");
    state_del_letter(st, 7);
    state_close(&st, 5000);                   /* close writes what is queued */

    st = reopen("restored");
    out[0] = '\0';
    CHECK_EQ_INT(state_load_registrations(st, collect_registration, out), 1);
    out[0] = '\0';
    CHECK_EQ_INT(state_load_letters(st, collect_letter, out), 1);
    CHECK(strcmp(out, "8:timeout::m8:0") == 0);
    state_close(&st, 5000);
}

static void test_corrupt_file_moved_aside(void)
{
    char db[sizeof dir + 16];
    snprintf(db, sizeof db, "%s/%s", dir, STATE_FILE);
    FILE *f = fopen(db, "r+b");
    CHECK(f != NULL);
    if (f) {
        /* over the header and the first pages: not a database any more */
        char junk[8192];
        memset(junk, 'Z', sizeof junk);
        fwrite(junk, 1, sizeof junk, f);
        fclose(f);
    }
    char wal[sizeof dir + 32];
    snprintf(wal, sizeof wal, "%s-wal", db);
    unlink(wal);
    state_t *st = reopen("corrupt");
    CHECK(st && strstr(state_moved_aside(st), ".corrupt-") != NULL);
    struct stat sb;
    CHECK(st && stat(state_moved_aside(st), &sb) == 0);
    char out[4096] = "";
    CHECK_EQ_INT(state_load_registrations(st, collect_registration, out), 0);
    CHECK_EQ_INT(state_load_letters(st, collect_letter, out), 0);
    state_close(&st, 5000);
    st = reopen("restored");                  /* the fresh file is good */
    state_close(&st, 5000);
}

static void add_letter(deadletters_t *dl, const char *from_id, const char *msg_id)
{
    char text[256];
    snprintf(text, sizeof text, "{\"msg_id\":\"%s\",\"type\":\"event\",\"src\":\"c\",\"dst\":\"s\"}",
             msg_id);
    envelope_t env;
    const char *why;
    CHECK(envelope_parse(&env, text, strlen(text), &why) == ERR_NONE);
    peer_t p = {.id_len = (uint8_t)strlen(from_id), .fd = -1};
    memcpy(p.id, from_id, p.id_len);
    deadletters_add(dl, ERR_NO_SUCH_SERVICE, &p, &env, NULL, NULL, NULL, NULL);
}

static void restore_letter(void *ctx, const state_letter_t *l)
{
    deadletters_restore(ctx, l);
}

static void test_dead_letters_across_reopen(void)
{
    char cmd[sizeof dir + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s/*", dir);
    CHECK(system(cmd) == 0);
    state_t *st = reopen("new");
    state_start(st);
    /* 8 letters, a share of 1/2: one sender keeps 4 at most */
    deadletters_t *dl = deadletters_new(8, 1 << 20, 2);
    deadletters_keeper_t keeper = state_letters_keeper(st);
    deadletters_set_keeper(dl, &keeper);
    for (int i = 0; i < 6; i++) {
        char id[16];
        snprintf(id, sizeof id, "a%d", i);
        add_letter(dl, "noisy", id);
    }
    add_letter(dl, "quiet", "q0");
    deadletters_free(&dl);                    /* leaves the file as it is */
    state_close(&st, 5000);

    st = reopen("restored");
    dl = deadletters_new(8, 1 << 20, 2);
    keeper = state_letters_keeper(st);
    deadletters_set_keeper(dl, &keeper);
    CHECK_EQ_INT(state_load_letters(st, restore_letter, dl), 5);
    state_start(st);
    const deadletter_t *d = deadletters_find(dl, 7);
    CHECK(d && strcmp(d->msg_id, "q0") == 0 && d->from_len == 5 && d->bytes);
    CHECK(deadletters_find(dl, 2) == NULL);  /* evicted by its sender's share before */
    CHECK(deadletters_find(dl, 3) != NULL);
    add_letter(dl, "noisy", "a6");            /* the ids go on from the file's */
    CHECK(deadletters_find(dl, 8) != NULL && strcmp(deadletters_find(dl, 8)->msg_id, "a6") == 0);
    CHECK(deadletters_find(dl, 3) == NULL);  /* its own oldest made room */
    deadletters_free(&dl);
    state_close(&st, 5000);

    st = reopen("restored");
    char out[4096] = "";
    CHECK_EQ_INT(state_load_letters(st, collect_letter, out), 5);
    CHECK(strncmp(out, "4:", 2) == 0);       /* 3 went, and its row with it */
    CHECK(strstr(out, "8:no_such_service:noisy:a6") != NULL);
    state_close(&st, 5000);
}

/* What the event loop pays per change written behind: the enqueue alone. */
static void measure_enqueue(void)
{
    state_t *st = reopen("restored");
    state_start(st);
    enum { N = 20000 };
    state_letter_t l = {.at = "2026-01-01T00:00:00Z", .code = "no_such_service",
                        .sender = (const uint8_t *)"client-1", .sender_len = 8, .msg_id = "m",
                        .src = "c", .dst = "x", .action = "go",
                        .bytes = "{\"msg_id\":\"m\",\"type\":\"request\",\"src\":\"c\",\"dst\":\"x\"}",
                        .len = 52};
    uint64_t t0 = clock_us();
    for (int i = 0; i < N; i++) {
        l.id = 1000 + (uint64_t)i;
        state_put_letter(st, &l);
    }
    uint64_t t1 = clock_us();
    CHECK(state_sync(st, 30000));
    uint64_t t2 = clock_us();
    state_counts_t c = state_counts(st);
    printf("state: %.2f us per change queued on the loop; writer committed %d in %.1f ms "
           "(%llu transactions)\n", (double)(t1 - t0) / N, N, (double)(t2 - t0) / 1000.0,
           (unsigned long long)c.commits);
    CHECK_EQ_INT(c.failed, 0);
    state_close(&st, 5000);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/smartshop-test-state-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char sub[sizeof dir + 16];
    snprintf(sub, sizeof sub, "%s/nested/dir", dir);   /* made on open */
    snprintf(dir, sizeof dir, "%.180s", sub);
    test_round_trip();
    test_corrupt_file_moved_aside();
    test_dead_letters_across_reopen();
    measure_enqueue();
    char cmd[320];
    snprintf(cmd, sizeof cmd, "rm -rf %.*s", (int)(strstr(dir, "/nested") - dir), dir);
    CHECK(system(cmd) == 0);
    return check_done("state");
}
