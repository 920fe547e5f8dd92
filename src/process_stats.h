/* process_stats: what the kernel says of this process (CPU time, memory,
 * descriptors, start time), as the standard Prometheus process_* series.
 *
 * Read from getrusage(2), getrlimit(2) and /proc/self when a scrape asks,
 * on the HTTP thread: never on the message path. Names and meanings follow
 * the Prometheus client libraries' process collector, so that dashboards
 * written for any other exporter work unchanged (docs/operations.md,
 * "Process metrics"). */
#ifndef SMARTSHOP_PROCESS_STATS_H
#define SMARTSHOP_PROCESS_STATS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    double cpu_seconds;         /* user + system, all threads */
    uint64_t resident_bytes;    /* RSS */
    uint64_t virtual_bytes;
    uint64_t open_fds;
    uint64_t max_fds;           /* the soft RLIMIT_NOFILE */
    double start_time_s;        /* Unix time the process started (0: unknown) */
    uint64_t threads;
} process_stats_t;

/* Fills `out`; a value that cannot be read stays 0. Returns 0, or -1 if
 * /proc/self could not be read at all. */
int process_stats_read(process_stats_t *out);

/* The process_* series of `st` in the Prometheus text format, into
 * out[cap] (NUL-terminated); returns their length (cap - 1 at most). */
size_t process_stats_prometheus(const process_stats_t *st, char *out, size_t cap);

#endif
