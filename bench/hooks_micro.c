/* hooks_micro: what a policy's hooks cost per round trip, without sockets.
 *
 *   smartshop-bench-hooks [--iterations N] [--rounds R] POLICY.lua...
 *
 * Loads each policy as the broker does (policy_load), parses the
 * benchmark's request and the echo's response (the very shapes of
 * bench/loadgen.c and bench/echo.c), and runs what the router runs for one
 * round trip: filter + route on the request (the hooks each policy
 * defines), filter on the response. Prints ns per round trip for each
 * policy, interleaved over R rounds (median). Under
 * `valgrind --tool=callgrind` the instruction counts are exact and do not
 * depend on the machine's load: the stable A/B of a change to the call
 * path (src/policy.c, src/luamsg.c, src/sandbox.c). filter and route of
 * a request go in one call where the policy has both (policy_filter_route,
 * as router.c calls them). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope.h"
#include "policy.h"
#include "registry.h"

#define MAX_POLICIES 8

static const char REQUEST[] =
    "{\"msg_id\":\"1a2b3c4d-0-1f-4e2\",\"type\":\"request\",\"src\":\"lg1a2b3c4d-0\","
    "\"dst\":\"echo-service\",\"action\":\"echo\",\"payload\":{\"data\":\"xxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"},\"correlation_id\":null,"
    "\"timestamp\":\"2026-12-02T05:41:27.123Z\"}";
static const char RESPONSE[] =
    "{\"msg_id\":\"e1f2-9a3\",\"type\":\"response\",\"src\":\"echo-service\","
    "\"dst\":\"lg1a2b3c4d-0\",\"action\":\"echo\",\"payload\":{\"data\":\"xxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"},\"correlation_id\":\"1a2b3c4d-0-1f-4e2\","
    "\"timestamp\":null}";

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One round trip's hooks, as router.c calls them. Returns -1 if a hook
 * did not pass (the benchmark's messages pass every policy here). */
static int round_trip(policy_t *p, const envelope_t *req, const envelope_t *resp)
{
    char reason[256], *rewritten;
    size_t len;
    static policy_route_ahead_t ahead;
    ahead.taken = false;
    if (policy_has(p, HOOK_FILTER)) {
        policy_verdict_t v = policy_has(p, HOOK_ROUTE)
            ? policy_filter_route(p, req, &rewritten, &len, reason, sizeof reason, &ahead)
            : policy_filter(p, req, &rewritten, &len, reason, sizeof reason);
        if (v != POLICY_PASS || (ahead.taken && ahead.verdict == POLICY_FAIL))
            return -1;
    }
    if (policy_has(p, HOOK_ROUTE) && !ahead.taken) {
        if (policy_route(p, req, &ahead.route, reason, sizeof reason) == POLICY_FAIL)
            return -1;
    }
    if (policy_has(p, HOOK_FILTER)) {
        if (policy_filter(p, resp, &rewritten, &len, reason, sizeof reason) != POLICY_PASS)
            return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    long iterations = 200000;
    int rounds = 5;
    const char *paths[MAX_POLICIES];
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iterations") && i + 1 < argc)
            iterations = atol(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (argv[i][0] == '-' || n == MAX_POLICIES) {
            fprintf(stderr, "usage: %s [--iterations N] [--rounds R] POLICY.lua... (at most %d)\n",
                    argv[0], MAX_POLICIES);
            return 2;
        } else
            paths[n++] = argv[i];
    }
    if (n == 0 || rounds < 1 || rounds > 99 || iterations < 1) {
        fprintf(stderr, "usage: %s [--iterations N] [--rounds R] POLICY.lua...\n", argv[0]);
        return 2;
    }
    envelope_t req, resp;
    const char *why = NULL;
    if (envelope_parse(&req, REQUEST, sizeof REQUEST - 1, &why) != ERR_NONE ||
        envelope_parse(&resp, RESPONSE, sizeof RESPONSE - 1, &why) != ERR_NONE) {
        fprintf(stderr, "hooks_micro: the sample messages do not parse: %s\n", why ? why : "?");
        return 1;
    }
    registry_t *reg = registry_new();
    policy_t *pol[MAX_POLICIES];
    sandbox_limits_t limits = {.memory_limit = 64u << 20, .instruction_limit = 1000000};
    for (int i = 0; i < n; i++) {
        char err[1024];
        pol[i] = policy_new(paths[i], limits, reg);
        if (!pol[i] || policy_load(pol[i], err, sizeof err) < 0) {
            fprintf(stderr, "hooks_micro: %s\n", pol[i] ? err : "out of memory");
            return 1;
        }
    }
    double ns[MAX_POLICIES][100];
    for (int r = 0; r < rounds; r++) {
        for (int k = 0; k < n; k++) {
            int i = (k + r) % n;            /* rotate the order each round */
            double t0 = now_ns();
            for (long it = 0; it < iterations; it++) {
                if (round_trip(pol[i], &req, &resp) < 0) {
                    fprintf(stderr, "hooks_micro: %s: a hook did not pass the benchmark's messages\n",
                            paths[i]);
                    return 1;
                }
            }
            ns[i][r] = (now_ns() - t0) / (double)iterations;
        }
    }
    for (int i = 0; i < n; i++) {
        qsort(ns[i], (size_t)rounds, sizeof ns[i][0], cmp_double);
        printf("policy=%s ns_per_rt=%.0f min=%.0f max=%.0f hook_errors=%llu\n", paths[i],
               ns[i][rounds / 2], ns[i][0], ns[i][rounds - 1],
               (unsigned long long)pol[i]->hook_errors);
        policy_free(&pol[i]);
    }
    registry_free(&reg);
    return 0;
}
