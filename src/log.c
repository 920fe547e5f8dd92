/* log: one line per event, on stderr or into the journal. Owns level and
 * format only. See log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* no CODE_FILE/CODE_LINE fields: they would name this file for every line */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static log_level_t current_level = LOG_LEVEL_INFO;

/* Where lines go, decided at the first line. */
typedef enum { SINK_UNKNOWN, SINK_TEXT, SINK_PREFIX, SINK_JOURNAL } sink_t;
static sink_t sink = SINK_UNKNOWN;

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

/* systemd sets $JOURNAL_STREAM to "device:inode" of the stream it
 * connected stderr to: only when stderr is still that stream does the
 * journal get our entries directly (systemd.exec(5)). */
static sink_t choose_sink(void)
{
    const char *stream = getenv("JOURNAL_STREAM");
    if (!stream)
        return SINK_TEXT;
    unsigned long long dev = 0, ino = 0;
    struct stat st;
    if (sscanf(stream, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
        (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino)
        return SINK_JOURNAL;
    return SINK_PREFIX;
}

/* One journal entry; false if the journal did not take it. */
static bool journal_send(log_level_t level, const log_fields_t *f, const char *text)
{
    char message[1100], priority[16], peer[300], service[100], code[100];
    struct iovec iov[6];
    int n = 0;
#define FIELD(buf, ...)                                                                   \
    do {                                                                                  \
        int len = snprintf(buf, sizeof buf, __VA_ARGS__);                                 \
        iov[n].iov_base = buf;                                                            \
        iov[n++].iov_len = len < 0 ? 0 : (size_t)len >= sizeof buf ? sizeof buf - 1 : (size_t)len; \
    } while (0)
    FIELD(message, "MESSAGE=%s", text);
    FIELD(priority, "PRIORITY=%d", level_priority[level]);
    iov[n].iov_base = (void *)"SYSLOG_IDENTIFIER=smartshop-broker";
    iov[n++].iov_len = sizeof "SYSLOG_IDENTIFIER=smartshop-broker" - 1;
    if (f && f->peer)
        FIELD(peer, "PEER=%s", f->peer);
    if (f && f->service)
        FIELD(service, "SERVICE=%s", f->service);
    if (f && f->code)
        FIELD(code, "CODE=%s", f->code);
#undef FIELD
    return sd_journal_sendv(iov, n) >= 0;
}

static void log_vwrite(log_level_t level, const log_fields_t *fields, const char *fmt, va_list ap)
{
    char text[1024];
    vsnprintf(text, sizeof text, fmt, ap);
    for (char *c = text; *c; c++)       /* one line, whatever the arguments held */
        if (*c == '\n' || *c == '\r')
            *c = ' ';
    if (sink == SINK_UNKNOWN)
        sink = choose_sink();
    if (sink == SINK_JOURNAL && journal_send(level, fields, text))
        return;
    if (sink != SINK_TEXT) {
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
    log_vwrite(level, NULL, fmt, ap);
    va_end(ap);
}

void log_with(log_level_t level, const log_fields_t *fields, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fields, fmt, ap);
    va_end(ap);
}

/* Whether the call site may write a line now (and the suppressed count
 * said first when a new minute starts). */
static bool rate_allows(log_ratelimit_t *state, int per_minute, log_level_t level)
{
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
        return false;
    }
    state->written++;
    return true;
}

void log_limited(log_ratelimit_t *state, int per_minute, log_level_t level,
                 const char *fmt, ...)
{
    if (!log_enabled(level) || !rate_allows(state, per_minute, level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, NULL, fmt, ap);
    va_end(ap);
}

void log_limited_with(log_ratelimit_t *state, int per_minute, log_level_t level,
                      const log_fields_t *fields, const char *fmt, ...)
{
    if (!log_enabled(level) || !rate_allows(state, per_minute, level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(level, fields, fmt, ap);
    va_end(ap);
}
