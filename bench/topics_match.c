/* topics_match: what matching a published topic costs with few and with
 * many subscriptions that do not match it (docs/performance.md, "Topic
 * matching"). Prints nanoseconds per publish for 10 and for 100,000
 * subscriptions, cached (the same topic again) and uncached (a new topic
 * each time), and their ratios: the index should make the second number
 * of each pair close to the first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "topics.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long delivered;

static void count(void *owner, void *ctx)
{
    (void)owner;
    (void)ctx;
    delivered++;
}

/* `others` subscriptions that never match "order.<...>" topics, spread
 * over literal, '*' and '>' shapes, plus 10 that do. */
static topics_t *make(size_t others)
{
    topics_limits_t lim = {.max_per_owner = 1000000, .max_total = 2000000, .cache_entries = 4096};
    topics_t *t = topics_new(lim);
    static char owners[200000];
    char p[64];
    for (size_t i = 0; i < others; i++) {
        switch (i % 4) {
        case 0: snprintf(p, sizeof p, "store.%zu.till.%zu", i % 997, i); break;
        case 1: snprintf(p, sizeof p, "stock.%zu.*", i); break;
        case 2: snprintf(p, sizeof p, "svc%zu.>", i); break;
        default: snprintf(p, sizeof p, "*.s%zu", i); break;
        }
        topics_subscribe(t, &owners[i % 100000], p, strlen(p), NULL);
    }
    static const char *const matching[] = {"order.created", "order.*", "order.>", ">",
                                           "*.created", "order.created", "order.*", "*.*",
                                           "order.>", ">"};
    for (size_t i = 0; i < 10; i++)
        topics_subscribe(t, &owners[100000 + i], matching[i], strlen(matching[i]), NULL);
    return t;
}

static double ns_per_publish(topics_t *t, bool fresh_topic, long n)
{
    char topic[64] = "order.created";
    double start = now_s();
    for (long i = 0; i < n; i++) {
        size_t len = fresh_topic ? (size_t)snprintf(topic, sizeof topic, "order.c%ld", i)
                                 : strlen(topic);
        topics_publish(t, topic, len, NULL, count, NULL);
    }
    return (now_s() - start) * 1e9 / (double)n;
}

int main(void)
{
    const long n = 200000;
    topics_t *few = make(0), *many = make(100000);
    double few_cached = ns_per_publish(few, false, n), many_cached = ns_per_publish(many, false, n);
    double few_fresh = ns_per_publish(few, true, n), many_fresh = ns_per_publish(many, true, n);
    printf("subscriptions   cached ns/publish   uncached ns/publish\n");
    printf("%13d   %17.0f   %19.0f\n", 10, few_cached, few_fresh);
    printf("%13d   %17.0f   %19.0f\n", 100010, many_cached, many_fresh);
    printf("ratio 100010/10: cached %.2f, uncached %.2f (deliveries %lu)\n",
           many_cached / few_cached, many_fresh / few_fresh, delivered);
    topics_free(&few);
    topics_free(&many);
    return 0;
}
