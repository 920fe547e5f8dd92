/* topics: syntax, wildcards, once per owner, queue groups, unsubscribe,
 * owners going away, limits and the cache. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "topics.h"

static const topics_limits_t LIMITS = {.max_per_owner = 8, .max_total = 20, .cache_entries = 4};

/* Owners are the addresses of these counters: each delivery counts one. */
static int owners[8];

static void count_delivery(void *owner, void *ctx)
{
    (void)ctx;
    (*(int *)owner)++;
}

static size_t publish(topics_t *t, const char *topic, const void *skip)
{
    return topics_publish(t, topic, strlen(topic), skip, count_delivery, NULL);
}

static topics_result_t sub(topics_t *t, int owner, const char *pattern, const char *group)
{
    return topics_subscribe(t, &owners[owner], pattern, strlen(pattern), group);
}

static void reset(void)
{
    memset(owners, 0, sizeof owners);
}

static void syntax(void)
{
    const char *why;
    static const char *const good_topics[] = {"order", "order.created", "store.12.till-3",
                                              "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p", "x:y_z-w"};
    for (size_t i = 0; i < sizeof good_topics / sizeof *good_topics; i++) {
        CHECK(topic_is_valid(good_topics[i], strlen(good_topics[i]), false, &why));
        CHECK(topic_is_valid(good_topics[i], strlen(good_topics[i]), true, &why));
    }
    static const char *const good_patterns[] = {"*", ">", "order.*", "order.>", "*.created",
                                                "store.*.till.>", "*.*.*"};
    for (size_t i = 0; i < sizeof good_patterns / sizeof *good_patterns; i++) {
        CHECK(topic_is_valid(good_patterns[i], strlen(good_patterns[i]), true, &why));
        CHECK(!topic_is_valid(good_patterns[i], strlen(good_patterns[i]), false, &why));
    }
    static const char *const bad[] = {"", ".", "a.", ".a", "a..b", "a.>.b", "a*", "a.b*",
                                      "o>", "a b", "a/b", "a@b", "a+b", "a\"b", "a\\b", "caf\xc3\xa9",
                                      "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p.q"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(!topic_is_valid(bad[i], strlen(bad[i]), true, &why) && why && *why);
    char longest[TOPIC_MAX_LEN + 2];
    memset(longest, 'a', sizeof longest);
    CHECK(topic_is_valid(longest, TOPIC_MAX_LEN, false, &why));
    CHECK(!topic_is_valid(longest, TOPIC_MAX_LEN + 1, false, &why));
}

static void wildcards(void)
{
    topics_t *t = topics_new(LIMITS);
    reset();
    CHECK_EQ_INT(sub(t, 0, "order.created", NULL), TOPICS_OK);
    CHECK_EQ_INT(sub(t, 1, "order.*", NULL), TOPICS_OK);
    CHECK_EQ_INT(sub(t, 2, "order.>", NULL), TOPICS_OK);
    CHECK_EQ_INT(sub(t, 3, ">", NULL), TOPICS_OK);
    CHECK_EQ_INT(sub(t, 4, "*.created", NULL), TOPICS_OK);
    CHECK_EQ_INT(publish(t, "order.created", NULL), 5);
    CHECK_EQ_INT(publish(t, "order.cancelled", NULL), 3);      /* 1, 2, 3 */
    CHECK_EQ_INT(publish(t, "order.created.eu", NULL), 2);     /* 2, 3 */
    CHECK_EQ_INT(publish(t, "order", NULL), 1);                /* '>' needs a token: only 3 */
    CHECK_EQ_INT(publish(t, "stock.created", NULL), 2);        /* 3, 4 */
    CHECK_EQ_INT(owners[0], 1);
    CHECK_EQ_INT(owners[1], 2);
    CHECK_EQ_INT(owners[2], 3);
    CHECK_EQ_INT(owners[3], 5);
    CHECK_EQ_INT(owners[4], 2);
    topics_free(&t);
    CHECK(t == NULL);
}

static void once_per_owner(void)
{
    topics_t *t = topics_new(LIMITS);
    reset();
    sub(t, 0, "order.created", NULL);
    sub(t, 0, "order.*", NULL);
    sub(t, 0, ">", NULL);
    CHECK_EQ_INT(sub(t, 0, "order.*", NULL), TOPICS_ALREADY);
    CHECK_EQ_INT(topics_owner_count(t, &owners[0]), 3);
    CHECK_EQ_INT(publish(t, "order.created", NULL), 1);
    CHECK_EQ_INT(owners[0], 1);
    /* the publisher is skipped */
    sub(t, 1, "order.*", NULL);
    CHECK_EQ_INT(publish(t, "order.created", &owners[0]), 1);
    CHECK_EQ_INT(owners[0], 1);
    CHECK_EQ_INT(owners[1], 2 - 1);
    topics_free(&t);
}

static void queue_groups(void)
{
    topics_t *t = topics_new(LIMITS);
    reset();
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(sub(t, i, "order.*", "stock"), TOPICS_OK);
    CHECK_EQ_INT(sub(t, 3, "order.>", NULL), TOPICS_OK);        /* a plain listener */
    CHECK_EQ_INT(sub(t, 4, "order.created", "audit"), TOPICS_OK); /* a group of one */
    for (int i = 0; i < 30; i++)
        CHECK_EQ_INT(publish(t, "order.created", NULL), 3);     /* one of stock, 3, 4 */
    CHECK_EQ_INT(owners[0] + owners[1] + owners[2], 30);
    for (int i = 0; i < 3; i++)
        CHECK(owners[i] >= 8 && owners[i] <= 12);
    CHECK_EQ_INT(owners[3], 30);
    CHECK_EQ_INT(owners[4], 30);
    /* a member that also subscribes plainly gets each event once */
    reset();
    sub(t, 0, "order.created", NULL);
    for (int i = 0; i < 9; i++)
        publish(t, "order.created", NULL);
    CHECK_EQ_INT(owners[0], 9);
    CHECK_EQ_INT(owners[1] + owners[2], 6);     /* picks of member 0 add nothing */
    /* the same pattern in and out of a group are two subscriptions */
    CHECK_EQ_INT(topics_owner_count(t, &owners[0]), 2);
    topics_free(&t);
}

static void unsubscribing(void)
{
    topics_t *t = topics_new(LIMITS);
    reset();
    sub(t, 0, "a.b", NULL);
    sub(t, 0, "a.*", "g");
    sub(t, 1, "a.>", NULL);
    CHECK_EQ_INT(publish(t, "a.b", NULL), 2);
    CHECK_EQ_INT(topics_unsubscribe(t, &owners[0], "a.b", 3, NULL), TOPICS_OK);
    CHECK_EQ_INT(topics_unsubscribe(t, &owners[0], "a.b", 3, NULL), TOPICS_NOT_FOUND);
    CHECK_EQ_INT(topics_unsubscribe(t, &owners[0], "a.*", 3, NULL), TOPICS_NOT_FOUND);
    CHECK_EQ_INT(topics_unsubscribe(t, &owners[0], "a.*", 3, "other"), TOPICS_NOT_FOUND);
    CHECK_EQ_INT(publish(t, "a.b", NULL), 2);                 /* group g and owner 1 */
    CHECK_EQ_INT(topics_unsubscribe(t, &owners[0], "a.*", 3, "g"), TOPICS_OK);
    CHECK_EQ_INT(publish(t, "a.b", NULL), 1);
    CHECK_EQ_INT(topics_count(t), 1);
    CHECK_EQ_INT(topics_remove_owner(t, &owners[1]), 1);
    CHECK_EQ_INT(topics_remove_owner(t, &owners[1]), 0);
    CHECK_EQ_INT(topics_count(t), 0);
    CHECK_EQ_INT(publish(t, "a.b", NULL), 0);
    /* the pruned trie takes the same patterns again */
    CHECK_EQ_INT(sub(t, 2, "a.b", NULL), TOPICS_OK);
    CHECK_EQ_INT(publish(t, "a.b", NULL), 1);
    topics_free(&t);
}

static void limits_and_cache(void)
{
    topics_t *t = topics_new(LIMITS);
    reset();
    char pattern[32];
    for (int i = 0; i < 8; i++) {
        snprintf(pattern, sizeof pattern, "p.%d", i);
        CHECK_EQ_INT(sub(t, 0, pattern, NULL), TOPICS_OK);
    }
    CHECK_EQ_INT(sub(t, 0, "p.9", NULL), TOPICS_OWNER_FULL);
    for (int i = 0; i < 12; i++) {
        snprintf(pattern, sizeof pattern, "q.%d", i);
        CHECK_EQ_INT(sub(t, 1 + i / 8, pattern, NULL), TOPICS_OK);
    }
    CHECK_EQ_INT(sub(t, 3, "r", NULL), TOPICS_FULL);
    /* results cached for more topics than the cache holds stay right */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 8; i++) {
            snprintf(pattern, sizeof pattern, "p.%d", i);
            CHECK_EQ_INT(publish(t, pattern, NULL), 1);
        }
    }
    CHECK_EQ_INT(owners[0], 24);
    /* a subscription made after a topic was cached gets the next event */
    topics_remove_owner(t, &owners[2]);
    CHECK_EQ_INT(publish(t, "q.0", NULL), 1);
    CHECK_EQ_INT(sub(t, 3, "q.*", NULL), TOPICS_OK);
    CHECK_EQ_INT(publish(t, "q.0", NULL), 2);
    topics_free(&t);
}

static void matching_and_containment(void)
{
    static const struct { const char *pattern, *topic; bool match; } m[] = {
        {"a.b", "a.b", true},   {"a.b", "a.c", false},  {"a.*", "a.b", true},
        {"a.*", "a", false},    {"a.*", "a.b.c", false}, {"a.>", "a.b.c", true},
        {"a.>", "a", false},    {">", "a", true},        {"*", "a.b", false},
        {"*.b.>", "x.b.y", true}, {"*.b.>", "x.c.y", false}, {"ab", "a", false},
    };
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        CHECK(topic_matches(m[i].pattern, m[i].topic, strlen(m[i].topic)) == m[i].match);
    static const struct { const char *inner, *outer; bool within; } w[] = {
        {"order.created", "order.>", true}, {"order.*", "order.>", true},
        {"order.>", "order.>", true},       {"order.>", "order.*", false},
        {"order", "order.>", false},        {"*.created", "order.*", false},
        {"order.created", "*.created", true}, {">", ">", true}, {"a.b", ">", true},
        {">", "a.>", false},                {"a.b.c", "a.*", false},
    };
    for (size_t i = 0; i < sizeof w / sizeof *w; i++)
        CHECK(topic_pattern_within(w[i].inner, w[i].outer) == w[i].within);
}

int main(void)
{
    syntax();
    matching_and_containment();
    wildcards();
    once_per_owner();
    queue_groups();
    unsubscribing();
    limits_and_cache();
    return check_done("topics");
}
