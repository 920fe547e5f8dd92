/* watch: directory change notifications with inotify. See watch.h. */
#include "watch.h"

#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

struct watch {
    int fd;                      /* inotify descriptor, for the event loop's poll */
    int wd[WATCH_MAX_DIRS];
    char *dirs[WATCH_MAX_DIRS];
    int count;
};

watch_t *watch_new(void)
{
    watch_t *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) {
        free(w);
        return NULL;
    }
    return w;
}

void watch_free(watch_t **self_p)
{
    watch_t *w = *self_p;
    if (!w)
        return;
    close(w->fd);
    for (int i = 0; i < w->count; i++)
        free(w->dirs[i]);
    free(w);
    *self_p = NULL;
}

int watch_add_dir(watch_t *w, const char *dir)
{
    if (w->count == WATCH_MAX_DIRS)
        return -1;
    int wd = inotify_add_watch(w->fd, dir,
                               IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE);
    if (wd < 0)
        return -1;
    w->wd[w->count] = wd;
    w->dirs[w->count] = strdup(dir);
    return w->count++;
}

void watch_read(watch_t *w, void (*changed)(void *ctx, int dir_index, const char *name),
                void *ctx)
{
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    ssize_t n;
    while ((n = read(w->fd, buf, sizeof buf)) > 0) {
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            p += sizeof *ev + ev->len;
            if (ev->len == 0)
                continue;
            for (int i = 0; i < w->count; i++)
                if (w->wd[i] == ev->wd)
                    changed(ctx, i, ev->name);
        }
    }
}

int watch_fd(const watch_t *w)
{
    return w->fd;
}
