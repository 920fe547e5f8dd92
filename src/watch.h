/* watch: tells when files in a few directories change (inotify).
 *
 * Watches directories rather than files so that editors that save by
 * writing a new file and renaming it over the old one are seen too.
 * Reports names; deciding what a change means is the caller's business. */
#ifndef SMARTSHOP_WATCH_H
#define SMARTSHOP_WATCH_H

#define WATCH_MAX_DIRS 4

typedef struct watch watch_t;

watch_t *watch_new(void);
void watch_free(watch_t **self_p);

/* The inotify descriptor, for the event loop's poll. */
int watch_fd(const watch_t *w);

/* Watches `dir` for files written, created, moved in or deleted. Returns
 * the directory's index (0..), or -1 if it cannot be watched. */
int watch_add_dir(watch_t *w, const char *dir);

/* Reads the events waiting and calls `changed(ctx, dir_index, name)` for
 * each; never blocks. */
void watch_read(watch_t *w, void (*changed)(void *ctx, int dir_index, const char *name),
                void *ctx);

#endif
