/* Unit tests for http_history: the dashboard's quantiles, rates and
 * windows, from snapshots made by hand. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "check.h"
#include "http_history.h"

/* The bucket whose upper bound is `seconds`. */
static int bucket_of(double seconds)
{
    const double *bound = metrics_bucket_bounds();
    for (int i = 0; i < METRICS_BUCKETS - 1; i++)
        if (fabs(bound[i] - seconds) < 1e-12)
            return i;
    return -1;
}

static void test_quantiles(void)
{
    uint64_t b[METRICS_BUCKETS] = {0};
    CHECK(http_quantile_ms(b, 0.5) < 0);        /* nothing answered: no value */
    /* 100 answers, all in (0.5 s, 2.5 s]: p50 half way, p99 near the top */
    int i = bucket_of(2.5);
    CHECK(i > 0);
    b[i] = 100;
    CHECK(fabs(http_quantile_ms(b, 0.5) - 1500) < 1e-6);
    CHECK(fabs(http_quantile_ms(b, 0.99) - 2480) < 1e-6);
    /* 99 fast ones and 1 slow one: p50 among the fast, p99 at the fast top */
    memset(b, 0, sizeof b);
    b[bucket_of(0.001)] = 99;
    b[bucket_of(30)] = 1;
    CHECK(http_quantile_ms(b, 0.5) <= 1.0);
    CHECK(http_quantile_ms(b, 0.99) <= 1.0);
    CHECK(http_quantile_ms(b, 1.0) > 10000);    /* the slow one is in (10 s, 30 s] */
    /* past every finite bound: the top finite bound, never infinity */
    memset(b, 0, sizeof b);
    b[METRICS_BUCKETS - 1] = 3;
    CHECK(fabs(http_quantile_ms(b, 0.5) - metrics_bucket_bounds()[METRICS_BUCKETS - 2] * 1000) < 1e-6);
}

static http_snapshot_t *snapshot(uint64_t at_ms, const char *name, uint64_t ok, uint64_t failed,
                                 uint64_t fast)
{
    http_snapshot_t *s = calloc(1, sizeof *s + sizeof(http_service_totals_t));
    atomic_init(&s->refs, 1);
    s->taken_ms = at_ms;
    s->service_count = 1;
    snprintf(s->services[0].name, sizeof s->services[0].name, "%s", name);
    s->services[0].instances = 2;
    s->services[0].ok = ok;
    s->services[0].failed = failed;
    s->services[0].requests = ok + failed;
    s->services[0].buckets[bucket_of(0.001)] = fast;
    return s;
}

static const cJSON *service_named(const cJSON *root, const char *name)
{
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItem(root, "services"))
        if (strcmp(cJSON_GetObjectItem(s, "name")->valuestring, name) == 0)
            return s;
    return NULL;
}

static void test_rates_and_window(void)
{
    http_history_t *h = http_history_new();
    /* 10 ok and 2 failed a second for 90 s, a sample every step */
    uint64_t t = 1000000, ok = 500, failed = 7;
    for (int step = 0; step <= 90000 / HTTP_HISTORY_STEP_MS; step++) {
        http_snapshot_t *s = snapshot(t, "svc", ok, failed, ok);
        http_history_add(h, s);
        /* a second snapshot inside the step is not a sample */
        http_snapshot_t *again = snapshot(t + 500, "svc", ok + 1000, failed, ok);
        http_history_add(h, again);
        http_snapshot_release(&s);
        http_snapshot_release(&again);
        t += HTTP_HISTORY_STEP_MS;
        ok += 10 * HTTP_HISTORY_STEP_MS / 1000;
        failed += 2 * HTTP_HISTORY_STEP_MS / 1000;
    }
    char *text = http_history_json(h);
    cJSON *root = cJSON_Parse(text);
    CHECK(root != NULL);
    const cJSON *svc = service_named(root, "svc");
    CHECK(svc != NULL);
    const cJSON *window = cJSON_GetObjectItem(svc, "window");
    CHECK(fabs(cJSON_GetObjectItem(window, "ok_per_s")->valuedouble - 10) < 1e-6);
    CHECK(fabs(cJSON_GetObjectItem(window, "failed_per_s")->valuedouble - 2) < 1e-6);
    /* the last minute only: 60 s of 12 a second */
    CHECK_EQ_INT(cJSON_GetObjectItem(window, "requests")->valuedouble, 60 * 12);
    CHECK(cJSON_GetObjectItem(window, "p50_ms")->valuedouble <= 1.0);
    CHECK_EQ_INT(cJSON_GetObjectItem(svc, "instances")->valuedouble, 2);
    /* one point per step between samples, oldest first, the newest at 0 */
    int points = cJSON_GetArraySize(cJSON_GetObjectItem(root, "ago_s"));
    CHECK_EQ_INT(points, 90000 / HTTP_HISTORY_STEP_MS);
    CHECK_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(svc, "ok_per_s")), points);
    CHECK(cJSON_GetArrayItem(cJSON_GetObjectItem(root, "ago_s"), points - 1)->valuedouble == 0);
    CHECK(fabs(cJSON_GetArrayItem(cJSON_GetObjectItem(svc, "ok_per_s"), 0)->valuedouble - 10) < 1e-6);
    cJSON_Delete(root);
    cJSON_free(text);
    http_history_free(&h);
}

static void test_a_new_service_starts_without_a_spike(void)
{
    http_history_t *h = http_history_new();
    http_snapshot_t *a = snapshot(1000, "old", 5, 0, 5);
    http_history_add(h, a);
    http_snapshot_release(&a);
    /* "late" appears with 1000 answers counted before it was seen */
    http_snapshot_t *b = calloc(1, sizeof *b + 2 * sizeof(http_service_totals_t));
    atomic_init(&b->refs, 1);
    b->taken_ms = 1000 + HTTP_HISTORY_STEP_MS;
    b->service_count = 2;
    snprintf(b->services[0].name, sizeof b->services[0].name, "late");
    b->services[0].ok = 1000;
    snprintf(b->services[1].name, sizeof b->services[1].name, "old");
    b->services[1].ok = 5;
    http_history_add(h, b);
    http_snapshot_release(&b);
    char *text = http_history_json(h);
    cJSON *root = cJSON_Parse(text);
    const cJSON *late = service_named(root, "late");
    CHECK(late != NULL);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(late, "window"), "ok_per_s")->valuedouble == 0);
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(late, "window"), "p50_ms")));
    cJSON_Delete(root);
    cJSON_free(text);
    http_history_free(&h);
}

int main(void)
{
    test_quantiles();
    test_rates_and_window();
    test_a_new_service_starts_without_a_spike();
    return check_done("http_history");
}
