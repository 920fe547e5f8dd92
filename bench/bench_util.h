/* bench_util.h: small helpers shared by the benchmark's tools (loadgen,
 * ceiling, echo). Header only; nothing here is used by the broker.
 *
 * The benchmark controls every message it sends, so its tools find the
 * envelope's fields with plain byte searches. The broker may not do that
 * (it takes input from anyone and must validate every byte, see
 * docs/protocol.md E1-E4); docs/performance.md says why the bench may. */
#ifndef SMARTSHOP_BENCH_UTIL_H
#define SMARTSHOP_BENCH_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* memmem */
#endif
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <dirent.h>
#include <stdio.h>
#include <time.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

/* The string value after `key` (a literal such as "\"dst\":\""), as a
 * pointer into buf and a length, up to the next '"'. Returns false when the
 * key is absent or the value is not closed. */
static inline bool bu_find_str(const char *buf, size_t len, const char *key, size_t keylen,
                               const char **val, size_t *vlen)
{
    const char *k = memmem(buf, len, key, keylen);
    if (!k)
        return false;
    const char *v = k + keylen;
    const char *end = memchr(v, '"', (size_t)(buf + len - v));
    if (!end)
        return false;
    *val = v;
    *vlen = (size_t)(end - v);
    return true;
}

#define BU_FIND(buf, len, lit, val, vlen) bu_find_str((buf), (len), lit, sizeof(lit) - 1, (val), (vlen))

/* Skips one JSON value starting at p (whitespace first); returns the byte
 * after it, or NULL if it runs off the end. Strings honour backslash
 * escapes; objects and arrays are matched by depth. No validation. */
static inline const char *bu_skip_value(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    if (p >= end)
        return NULL;
    int depth = 0;
    do {
        char c = *p;
        if (c == '"') {
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\')
                    p++;
            if (p >= end)
                return NULL;
            p++;
        } else if (c == '{' || c == '[') {
            depth++;
            p++;
        } else if (c == '}' || c == ']') {
            depth--;
            p++;
        } else if (depth == 0) {
            /* a number, true, false or null at the top */
            while (p < end && *p != ',' && *p != '}' && *p != ']' && *p != ' ')
                p++;
            return p;
        } else {
            p++;
        }
    } while (depth > 0 && p < end);
    return depth == 0 ? p : NULL;
}

static inline uint64_t bu_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t bu_hash(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;    /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* The nanoseconds all threads of process `pid` have run
 * (/proc/PID/task/TID/schedstat; libzmq's I/O thread does much of a
 * server's work). False if the process is not there. */
static inline bool bu_sched_ns(int pid, uint64_t *ns)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return false;
    uint64_t sum = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char file[320];
        snprintf(file, sizeof file, "/proc/%d/task/%s/schedstat", pid, e->d_name);
        FILE *f = fopen(file, "r");
        if (!f)
            continue;
        unsigned long long v;
        if (fscanf(f, "%llu", &v) == 1)
            sum += v;
        fclose(f);
    }
    closedir(d);
    *ns = sum;
    return true;
}

/* A TCP connection to "host:port" (an IPv4 address) with TCP_NODELAY,
 * for the tools that speak NATS's text protocol (nats_rr, fanout).
 * Returns the descriptor, -2 when the endpoint is not host:port, -1 when
 * the connection fails (errno says why). */
static inline int bu_tcp_connect(const char *endpoint)
{
    char host[64];
    const char *colon = strrchr(endpoint, ':');
    if (!colon)
        return -2;
    snprintf(host, sizeof host, "%.*s", (int)(colon - endpoint), endpoint);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1))};
    inet_pton(AF_INET, host, &a.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Writes all of text to a blocking descriptor. Returns 0, or -1. */
static inline int bu_write_all(int fd, const char *text, size_t len)
{
    while (len) {
        ssize_t n = write(fd, text, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        text += n;
        len -= (size_t)n;
    }
    return 0;
}

#endif
