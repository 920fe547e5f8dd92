/* iso_time: the envelope's timestamp format, ISO-8601 UTC with
 * milliseconds ("2026-11-25T00:22:24.123Z"). Shared by the broker and the
 * client library, header-only so the client needs nothing of the core. */
#ifndef SMARTSHOP_ISO_TIME_H
#define SMARTSHOP_ISO_TIME_H

#include <stdio.h>
#include <string.h>
#include <time.h>

static inline void iso_time_now(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    size_t used = strlen(out);
    snprintf(out + used, 32 - used, ".%03dZ", (int)(ts.tv_nsec / 1000000));
}

#endif
