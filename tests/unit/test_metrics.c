/* metrics: outcomes, as routed and as addressed, the bound on codes and
 * series, the unrouted series, quantiles up to the longest deadline. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "metrics.h"

static env_value_t S(const char *s)
{
    return (env_value_t){.ptr = s, .len = (uint32_t)strlen(s), .kind = JSON_STRING};
}

typedef struct {
    int count;
    metrics_view_t last;
} seen_t;

static void count_view(const metrics_view_t *v, void *ctx)
{
    seen_t *s = ctx;
    s->count++;
    s->last = *v;
}

int main(void)
{
    metrics_t *m = metrics_new();
    env_value_t dst = S("checkout"), action = S("pay");

    /* as routed: the service the router found; as addressed: dst */
    metric_series_t *s = metrics_series_of(m, "checkout-canary", 15, &dst, &action, 10);
    CHECK(!strcmp(s->key, "checkout-canary"));
    CHECK(!strcmp(s->dst, "checkout"));
    CHECK(!strcmp(s->action, "pay"));
    CHECK(s == metrics_series_of(m, "checkout-canary", 15, &dst, &action, 10));

    metrics_handed_over(m, s);
    metrics_outcome(m, s, METRICS_OK, NULL, 0, 1500);               /* 1.5 ms */
    metrics_handed_over(m, s);
    metrics_outcome(m, s, METRICS_ERROR, "insufficient_stock", 18, 3000000);   /* 3 s */
    metrics_handed_over(m, s);
    metrics_outcome(m, s, METRICS_TIMEOUT, "timeout", 7, 0);
    metrics_outcome(m, s, METRICS_REFUSED, "busy", 4, 0);           /* counts as a request */
    CHECK_EQ_INT(s->requests, 4);
    seen_t seen = {0};
    metrics_each(m, count_view, &seen);
    CHECK_EQ_INT(seen.count, 1);
    CHECK_EQ_INT(seen.last.answered, 2);
    CHECK_EQ_INT(seen.last.failed, 3);
    CHECK_EQ_INT(seen.last.outcomes[METRICS_OK], 1);
    /* the 3 s answer is in the 5 s bucket, not under 2.5 s */
    CHECK(metrics_quantile_ms(&seen.last, 0.99) == 5000);
    CHECK(metrics_quantile_ms(&seen.last, 0.5) == 2.5);
    CHECK_EQ_INT(m->service_errors[ERR_NONE], 1);                   /* a code of its own */

    /* codes: the first METRICS_CODES_PER_SERIES by name, the rest (other) */
    const char *codes[] = {"a1", "a2", "a3", "a4", "a5", "bad code"};
    for (int i = 0; i < 6; i++) {
        metrics_handed_over(m, s);
        metrics_outcome(m, s, METRICS_ERROR, codes[i], strlen(codes[i]), 10);
    }
    int named = 0;
    for (int i = 0; i < METRICS_CODES_PER_SERIES; i++)
        named += s->codes[i].count > 0;
    CHECK_EQ_INT(named, METRICS_CODES_PER_SERIES);
    /* insufficient_stock, timeout, busy and a1 have the slots; a2-a5 and
     * a code that is no label go to (other) */
    CHECK_EQ_INT(s->codes[METRICS_CODES_PER_SERIES].count, 5);

    /* a route that reaches no registered name: the one unrouted series */
    env_value_t nobody = S("nobody");
    metric_series_t *u = metrics_series_of(m, NULL, 0, &nobody, &action, 10);
    CHECK(!strcmp(u->key, METRICS_UNROUTED_SERVICE));
    CHECK(u == metrics_series_of(m, NULL, 0, &dst, &action, 10));
    metrics_outcome(m, u, METRICS_REFUSED, "no_such_service", 15, 0);
    metrics_totals_t tot;
    metrics_totals(m, &tot);
    CHECK_EQ_INT(tot.requests, 11);
    CHECK_EQ_INT(tot.outcomes[METRICS_REFUSED], 2);
    CHECK_EQ_INT(tot.requests, tot.outcomes[METRICS_OK] + tot.failed);     /* none in flight */

    /* past max_series: the overflow series */
    env_value_t other_action = S("other");
    metric_series_t *o = metrics_series_of(m, "checkout-canary", 15, &dst, &other_action, 1);
    CHECK(!strcmp(o->key, METRICS_OVERFLOW_SERVICE));

    /* the text has every outcome and the top buckets */
    stats_t st = {0};
    metrics_text_t *text = metrics_prometheus(m, &st, 1, 1, 0);
    CHECK(text != NULL);
    CHECK(strstr(text->text, "smartshop_request_outcomes_total{service=\"checkout-canary\","
                             "action=\"pay\",dst=\"checkout\",outcome=\"timeout\"} 1\n") != NULL);
    CHECK(strstr(text->text, "le=\"300\"") != NULL);
    CHECK(strstr(text->text, "smartshop_request_errors_total{service=\"checkout-canary\","
                             "action=\"pay\",dst=\"checkout\",code=\"(other)\"} 5\n") != NULL);

    /* a copy renders the same text, and stays as it was while the
     * original counts on (the HTTP thread renders copies: src/http_snapshot.h) */
    env_value_t second = S("refund");
    metric_series_t *refund = metrics_series_of(m, "checkout-canary", 15, &dst, &second, 10);
    CHECK(refund != s && !strcmp(refund->action, "refund"));    /* two series, linked */
    /* the last series found is remembered: never answered for another */
    CHECK(metrics_series_of(m, "checkout-canary", 15, &dst, &action, 10) == s);
    CHECK(metrics_series_of(m, "checkout-canary", 15, &dst, &second, 10) == refund);
    env_value_t longer = S("refunds");
    metric_series_t *refunds = metrics_series_of(m, "checkout-canary", 15, &dst, &longer, 10);
    CHECK(refunds != refund && !strcmp(refunds->action, "refunds"));
    CHECK(metrics_series_of(m, "checkout", 8, &dst, &second, 10) != refund);
    metrics_text_release(&text);
    text = metrics_prometheus(m, &st, 1, 1, 0);
    metrics_t *copy = metrics_copy(m);
    CHECK(copy != NULL);
    metrics_text_t *copied = metrics_prometheus(copy, &st, 1, 1, 0);
    CHECK(copied != NULL);
    CHECK_EQ_INT(copied->len, text->len);
    CHECK(memcmp(copied->text, text->text, text->len) == 0);
    metrics_text_release(&copied);
    metrics_handed_over(m, s);
    metrics_outcome(m, s, METRICS_OK, NULL, 0, 100);
    metrics_t *fresh = metrics_copy(m);
    metrics_text_t *now = metrics_prometheus(fresh, &st, 1, 1, 0);
    copied = metrics_prometheus(copy, &st, 1, 1, 0);
    CHECK(copied->len == text->len && memcmp(copied->text, text->text, text->len) == 0);
    CHECK(strstr(now->text, "smartshop_request_outcomes_total{service=\"checkout-canary\","
                            "action=\"pay\",dst=\"checkout\",outcome=\"ok\"} 2\n") != NULL);
    metrics_text_release(&now);
    metrics_text_release(&copied);
    metrics_copy_free(&copy);
    metrics_copy_free(&fresh);
    CHECK(copy == NULL);
    metrics_text_release(&text);

    metrics_free(&m);
    return check_done("metrics");
}
