/* iso_time: the envelope's timestamp format, ISO-8601 UTC with
 * milliseconds ("2026-11-25T00:22:24.123Z"). Shared by the broker and the
 * client library, header-only so the client needs nothing of the core. */
#ifndef SMARTSHOP_ISO_TIME_H
#define SMARTSHOP_ISO_TIME_H

#include <stdio.h>
#include <string.h>
#include <time.h>

/* The date and time are formatted once a second (per thread), the
 * milliseconds every call: every message a broker or service makes is
 * stamped, and strftime costs more than the rest of the stamp. */
static inline void iso_time_now(char out[32])
{
    static __thread time_t cached_second = -1;
    static __thread char cached[24];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != cached_second) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(cached, sizeof cached, "%Y-%m-%dT%H:%M:%S", &tm);
        cached_second = ts.tv_sec;
    }
    int ms = (int)(ts.tv_nsec / 1000000);
    size_t n = strlen(cached);
    memcpy(out, cached, n);
    out[n] = '.';
    out[n + 1] = (char)('0' + ms / 100);
    out[n + 2] = (char)('0' + ms / 10 % 10);
    out[n + 3] = (char)('0' + ms % 10);
    out[n + 4] = 'Z';
    out[n + 5] = '\0';
}

#endif
