/* log: one line per event, on stderr or, under journald, as a journal
 * entry with fields.
 *
 * Owns the log level and the line format. Never logs per routed message
 * above debug: callers on the hot path guard with log_enabled().
 *
 * Under journald (stderr is the stream $JOURNAL_STREAM names) a line goes
 * to the journal with sd_journal_send: MESSAGE (the same one-line text),
 * PRIORITY, SYSLOG_IDENTIFIER and the fields given (PEER, SERVICE, CODE),
 * so that `journalctl -u smartshop-broker PEER=... ` finds one peer's
 * lines. Elsewhere the line is "<timestamp> <LEVEL> <text>" on stderr;
 * with $JOURNAL_STREAM set but not our stderr (a pipe in between),
 * "<N>text", so that the journal still keeps the level. */
#ifndef SMARTSHOP_LOG_H
#define SMARTSHOP_LOG_H

#include <stdbool.h>

typedef enum {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARN,
    LOG_LEVEL_INFO,
    LOG_LEVEL_DEBUG
} log_level_t;

/* Fields of a line, for the journal (any may be NULL). They say whom the
 * line is about; the text says it too, for readers without the journal. */
typedef struct {
    const char *peer;           /* the connection (peer_label) */
    const char *service;        /* a service name */
    const char *code;           /* an error code (no_such_service, denied, ...) */
} log_fields_t;

/* Parses "error", "warn", "info" or "debug". Returns 0, or -1 if unknown. */
int log_level_parse(const char *text, log_level_t *out);
void log_set_level(log_level_t level);
bool log_enabled(log_level_t level);

/* Writes one line (see above). */
void log_msg(log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The same with fields (`fields` may be NULL). */
void log_with(log_level_t level, const log_fields_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

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

/* The same with fields. */
void log_limited_with(log_ratelimit_t *state, int per_minute, log_level_t level,
                      const log_fields_t *fields, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) \
    do { if (log_enabled(LOG_LEVEL_DEBUG)) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__); } while (0)

#endif
