/* log: one line per event on stderr, fit for journald.
 *
 * Owns the log level and the line format. Never logs per routed message
 * above debug: callers on the hot path guard with log_enabled(). */
#ifndef SMARTSHOP_LOG_H
#define SMARTSHOP_LOG_H

#include <stdbool.h>

typedef enum {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG
} log_level_t;

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 if unknown. */
int log_level_parse(const char *text, log_level_t *out);
void log_set_level(log_level_t level);
bool log_enabled(log_level_t level);

/* Writes "<timestamp> <LEVEL> <text>\n" to stderr; under journald (where
 * JOURNAL_STREAM is set) writes "<N>text" so the journal keeps the level. */
void log_msg(log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Like log_msg, but at most `per_minute` lines a minute for this call site
 * (`state` is the call site's static counter); the rest are counted and
 * reported in the next line that gets through. */
typedef struct {
    long window_start;
    int  written;
    long suppressed;
} log_ratelimit_t;
void log_limited(log_ratelimit_t *state, int per_minute, log_level_t level,
                 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) \
    do { if (log_enabled(LOG_LEVEL_DEBUG)) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)

#endif
