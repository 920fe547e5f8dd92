/* deadletter: the ring's bounds, each sender's share, list and find. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "deadletter.h"

static envelope_t message(char *text, size_t cap, const char *msg_id, size_t pad)
{
    char padding[4096];
    memset(padding, 'x', pad);
    padding[pad] = '\0';
    snprintf(text, cap, "{\"msg_id\":\"%s\",\"type\":\"event\",\"src\":\"c\",\"dst\":\"s\","
             "\"payload\":\"%s\"}", msg_id, padding);
    envelope_t env;
    const char *why;
    CHECK(envelope_parse(&env, text, strlen(text), &why) == ERR_NONE);
    return env;
}

static peer_t peer_named(const char *id)
{
    peer_t p = {.id_len = (uint8_t)strlen(id), .fd = -1};
    memcpy(p.id, id, p.id_len);
    return p;
}

static void add(deadletters_t *dl, const peer_t *from, const char *msg_id, size_t pad)
{
    char text[8192];
    envelope_t env = message(text, sizeof text, msg_id, pad);
    deadletters_add(dl, ERR_NO_SUCH_SERVICE, from, &env, NULL, NULL, NULL, NULL);
}

/* msg_ids of the listing, newest first, joined by spaces */
static const char *listing(const deadletters_t *dl)
{
    static char out[4096];
    out[0] = '\0';
    cJSON *list = deadletters_list(dl, 1000);
    const cJSON *item;
    cJSON_ArrayForEach(item, list) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "msg_id");
        size_t used = strlen(out);
        snprintf(out + used, sizeof out - used, "%s%s", used ? " " : "", id->valuestring);
    }
    cJSON_Delete(list);
    return out;
}

/* A sender over its share of the count loses its own oldest letter. */
static void a_sender_over_its_share_loses_its_own_oldest(void)
{
    deadletters_t *dl = deadletters_new(8, 1 << 20, 4);     /* 2 letters a sender */
    peer_t a = peer_named("a"), b = peer_named("b");
    add(dl, &b, "b1", 0);
    add(dl, &a, "a1", 0);
    add(dl, &a, "a2", 0);
    add(dl, &a, "a3", 0);
    add(dl, &a, "a4", 0);
    CHECK(strcmp(listing(dl), "a4 a3 b1") == 0);
    CHECK_EQ_INT(deadletters_count(dl), 3);
    CHECK_EQ_INT(deadletters_evicted(dl), 2);
    CHECK(deadletters_find(dl, 1) != NULL);                 /* b1 */
    CHECK(deadletters_find(dl, 2) == NULL);                 /* a1, evicted */
    CHECK(deadletters_find(dl, 5) != NULL && strcmp(deadletters_find(dl, 5)->msg_id, "a4") == 0);
    CHECK(deadletters_find(dl, 6) == NULL);
    deadletters_free(&dl);
    CHECK(dl == NULL);
}

/* Bytes: the sender's share of them, and the ring's; a message larger
 * than the sender's share is kept without its bytes. */
static void bytes_are_shared_too(void)
{
    deadletters_t *dl = deadletters_new(100, 4000, 2);      /* 2000 bytes a sender */
    peer_t a = peer_named("a"), b = peer_named("b"), c = peer_named("c"), d = peer_named("d");
    add(dl, &b, "b1", 1200);                                /* some 1280 bytes each */
    add(dl, &a, "a1", 1200);
    add(dl, &a, "a2", 1200);                                /* a1 goes: a over 2000 */
    CHECK(strcmp(listing(dl), "a2 b1") == 0);
    add(dl, &a, "a3", 3000);                                /* over a's share: no bytes */
    const deadletter_t *big = deadletters_find(dl, 4);
    CHECK(big && big->bytes == NULL && big->len == 0);
    CHECK(strcmp(listing(dl), "a3 a2 b1") == 0);
    add(dl, &b, "b2", 1200);                                /* b1 goes, not a's */
    add(dl, &c, "c1", 1200);
    CHECK(strcmp(listing(dl), "c1 b2 a3 a2") == 0);
    add(dl, &d, "d1", 1200);                                /* ring over 4000: the oldest */
    CHECK(strcmp(listing(dl), "d1 c1 b2 a3") == 0);
    CHECK(deadletters_bytes(dl) <= 4000);
    size_t sum = 0;
    for (uint64_t id = 1; id < 100; id++) {
        const deadletter_t *letter = deadletters_find(dl, id);
        if (letter)
            sum += letter->len;
    }
    CHECK_EQ_INT(sum, deadletters_bytes(dl));
    deadletters_free(&dl);
}

/* With a share of 1 a sender may fill the ring, oldest first, as before
 * shares; letters without a sender (a requester gone) share one record. */
static void share_of_one_and_no_sender(void)
{
    deadletters_t *dl = deadletters_new(3, 1 << 20, 1);
    peer_t a = peer_named("a");
    add(dl, &a, "a1", 0);
    add(dl, &a, "a2", 0);
    add(dl, NULL, "n1", 0);
    add(dl, &a, "a3", 0);
    CHECK(strcmp(listing(dl), "a3 n1 a2") == 0);
    deadletters_add(dl, ERR_TIMEOUT, NULL, NULL, "n2", "c", "s", "x");
    CHECK(strcmp(listing(dl), "n2 a3 n1") == 0);
    CHECK(deadletters_find(dl, 5) && deadletters_find(dl, 5)->from_len == 0);
    CHECK(deadletters_sender_count(dl) == 2);
    deadletters_free(&dl);
}

int main(void)
{
    a_sender_over_its_share_loses_its_own_oldest();
    bytes_are_shared_too();
    share_of_one_and_no_sender();
    return check_done("deadletter");
}
