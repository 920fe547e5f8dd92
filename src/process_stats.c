/* process_stats: CPU, memory, descriptors and start time of this
 * process. See process_stats.h. */
#include "process_stats.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* The boot time (Unix seconds) from /proc/stat's btime line, 0 if unknown. */
static double boot_time_s(void)
{
    FILE *f = fopen("/proc/stat", "re");
    if (!f)
        return 0;
    char line[256];
    double btime = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "btime ", 6) == 0) {
            btime = strtod(line + 6, NULL);
            break;
        }
    fclose(f);
    return btime;
}

/* /proc/self/stat fields 20 (threads), 22 (start, in clock ticks after
 * boot), 23 (virtual size) and 24 (resident pages). The command name (field
 * 2) may hold spaces and parentheses: fields are counted from its last ')'. */
static int read_stat(process_stats_t *out)
{
    FILE *f = fopen("/proc/self/stat", "re");
    if (!f)
        return -1;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p++;
    unsigned long long start_ticks = 0, vsize = 0, rss_pages = 0, threads = 0;
    /* after ')' comes field 3; field k is the (k - 2)th token */
    char *save = NULL;
    int field = 3;
    for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save), field++) {
        if (field == 20)
            threads = strtoull(tok, NULL, 10);
        else if (field == 22)
            start_ticks = strtoull(tok, NULL, 10);
        else if (field == 23)
            vsize = strtoull(tok, NULL, 10);
        else if (field == 24) {
            rss_pages = strtoull(tok, NULL, 10);
            break;
        }
    }
    if (field != 24)
        return -1;
    long ticks = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    static double boot = -1;    /* read once: it never changes */
    if (boot < 0)
        boot = boot_time_s();
    out->threads = threads;
    out->virtual_bytes = vsize;
    out->resident_bytes = rss_pages * (unsigned long long)(page > 0 ? page : 4096);
    out->start_time_s = boot > 0 && ticks > 0 ? boot + (double)start_ticks / (double)ticks : 0;
    return 0;
}

/* Entries of /proc/self/fd, not counting the one opendir itself holds. */
static uint64_t count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return 0;
    uint64_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n ? n - 1 : 0;
}

int process_stats_read(process_stats_t *out)
{
    memset(out, 0, sizeof *out);
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        out->cpu_seconds = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0)
        out->max_fds = lim.rlim_cur == RLIM_INFINITY ? 0 : (uint64_t)lim.rlim_cur;
    out->open_fds = count_fds();
    return read_stat(out);
}

size_t process_stats_prometheus(const process_stats_t *st, char *out, size_t cap)
{
    int n = snprintf(
        out, cap,
        "# HELP process_cpu_seconds_total User and system CPU time spent, in seconds.\n"
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.3f\n"
        "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
        "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %llu\n"
        "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
        "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n"
        "# HELP process_open_fds Open file descriptors.\n"
        "# TYPE process_open_fds gauge\nprocess_open_fds %llu\n"
        "# HELP process_max_fds The most file descriptors the process may open.\n"
        "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n"
        "# HELP process_start_time_seconds Start time of the process since the Unix epoch, in seconds.\n"
        "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n"
        "# HELP process_threads OS threads of the process.\n"
        "# TYPE process_threads gauge\nprocess_threads %llu\n",
        st->cpu_seconds, (unsigned long long)st->resident_bytes,
        (unsigned long long)st->virtual_bytes, (unsigned long long)st->open_fds,
        (unsigned long long)st->max_fds, st->start_time_s, (unsigned long long)st->threads);
    return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}
