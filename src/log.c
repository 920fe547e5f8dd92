/* log: one line per event on stderr. Owns level and format only. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static log_level_t current_level = LOG_LEVEL_INFO;
static int under_journald = -1;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
/* syslog priorities journald reads from a "<N>" prefix */
static const int level_priority[] = {3, 4, 6, 7};

int log_level_parse(const char *text, log_level_t *out)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++) {
        if (strcmp(text, names[i]) == 0) {
            *out = (log_level_t)i;
            return 0;
        }
    }
    return -1;
}

void log_set_level(log_level_t level) { current_level = level; }

bool log_enabled(log_level_t level) { return level <= current_level; }

static void log_vwrite(log_level_t level, const char *fmt, va_list ap)
{
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    if (under_journald < 0)
        under_journald = getenv("JOURNAL_STREAM") != NULL;
    if (under_journald) {
        fprintf(stderr, "<%d>%s\n", level_priority[level], text);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        fprintf(stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s %s\n",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                level_names[level], text);
    }
    fflush(stderr);
}

void log_msg(log_level_t level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}

void log_limited(log_ratelimit_t *state, int per_minute, log_level_t level,
                 const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    long now = (long)time(NULL);
    if (now - state->window_start >= 60) {
        if (state->suppressed > 0)
            log_msg(level, "(%ld similar lines suppressed in the last minute)",
                    state->suppressed);
        state->window_start = now;
        state->written = 0;
        state->suppressed = 0;
    }
    if (state->written >= per_minute) {
        state->suppressed++;
        return;
    }
    state->written++;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fmt, ap);
    va_end(ap);
}
