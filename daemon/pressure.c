/*
 * pressure.c - see pressure.h.
 */
#include "pressure.h"
#include "budget.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { PRESSURE_NONE, PRESSURE_PSI, PRESSURE_EVENTS, PRESSURE_FIFO };

/* 150 ms of stall within 2 s; the kernel reads the text up to its NUL. */
#define TD__PRESSURE_TRIGGER      "some 150000 2000000"
#define TD__PRESSURE_TRIGGER_TEXT "some tasks stalled on memory for 150 ms within 2 s"

/* Reads memory.events' counters "high", "max" and "oom" from the start of fd. */
static int td__pressure_read_events(int fd, uint64_t counts[3])
{
    char buf[1024];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    static const char *const keys[] = {"high", "max", "oom"};
    for (char *line = buf; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char key[32];
        unsigned long long v;
        if (sscanf(line, "%31s %llu", key, &v) == 2)
            for (int k = 0; k < 3; k++)
                if (strcmp(key, keys[k]) == 0)
                    counts[k] = v;
        line = next;
    }
    return 0;
}

static void td__pressure_poll_cb(uv_poll_t *h, int status, int events)
{
    (void)events;
    td__pressure *p = h->data;
    if (status < 0) {
        td__log_warn("memory pressure: %s: %s; no longer watched", p->name, uv_strerror(status));
        td__pressure_stop(p);
        return;
    }
    char why[640];
    if (p->kind == PRESSURE_EVENTS) {
        uint64_t now[3] = {p->counts[0], p->counts[1], p->counts[2]};
        if (td__pressure_read_events(p->fd, now)) {
            /* Unread, the change stays pending and the poll would fire again at once. */
            td__log_warn("memory pressure: %s: unreadable; no longer watched", p->name);
            td__pressure_stop(p);
            return;
        }
        uint64_t rise[3];
        for (int k = 0; k < 3; k++)
            rise[k] = now[k] > p->counts[k] ? now[k] - p->counts[k] : 0;
        memcpy(p->counts, now, sizeof now);
        if (!rise[0] && !rise[1] && !rise[2])
            return; /* another counter changed (low, oom_kill...) */
        snprintf(why, sizeof why, "%s: high +%llu, max +%llu, oom +%llu", p->name,
                 (unsigned long long)rise[0], (unsigned long long)rise[1],
                 (unsigned long long)rise[2]);
    } else if (p->kind == PRESSURE_FIFO) {
        char buf[256];
        while (read(p->fd, buf, sizeof buf) > 0)
            ;
        snprintf(why, sizeof why, "%s", p->name);
    } else {
        snprintf(why, sizeof why, "%s: %s", p->name, TD__PRESSURE_TRIGGER_TEXT);
    }
    p->cb(p, why);
}

/* Opens path and writes the PSI trigger into it. The descriptor, or -1 with *why set. */
static int td__pressure_open_psi(const char *path, char *why, size_t cap)
{
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, cap, "%.400s: %s", path, strerror(errno));
        return -1;
    }
    static const char trigger[] = TD__PRESSURE_TRIGGER; /* its NUL is written too */
    if (write(fd, trigger, sizeof trigger) < 0) {
        snprintf(why, cap, "%.400s: writing a trigger: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* Tries one source; 0 and p set up, or -1 with *why set. */
static int td__pressure_try(td__pressure *p, uv_loop_t *loop, const char *src, char *why,
                            size_t cap)
{
    char dir[1400], path[1500];
    int fd = -1, kind;
    int ev = UV_PRIORITIZED;
    if (strcmp(src, "psi") == 0) {
        snprintf(path, sizeof path, "/proc/pressure/memory");
        fd = td__pressure_open_psi(path, why, cap);
        kind = PRESSURE_PSI;
        snprintf(p->name, sizeof p->name, "PSI %.400s", path);
    } else if (strcmp(src, "cgroup") == 0 || strcmp(src, "events") == 0) {
        int events = src[0] == 'e';
        if (td__budget_cgroup_dir(1, dir, sizeof dir)) {
            snprintf(why, cap, "cgroup memory.%s: no cgroup v2 hierarchy",
                     events ? "events" : "pressure");
            return -1;
        }
        snprintf(path, sizeof path, "%s/memory.%s", dir, events ? "events" : "pressure");
        if (events) {
            fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
            if (fd < 0)
                snprintf(why, cap, "%.400s: %s", path, strerror(errno));
            else if (td__pressure_read_events(fd, p->counts)) {
                snprintf(why, cap, "%.400s: unreadable", path);
                close(fd);
                fd = -1;
            }
            kind = PRESSURE_EVENTS;
            snprintf(p->name, sizeof p->name, "cgroup %.400s", path);
        } else {
            fd = td__pressure_open_psi(path, why, cap);
            kind = PRESSURE_PSI;
            snprintf(p->name, sizeof p->name, "PSI %.400s", path);
        }
    } else if (strncmp(src, "fifo:", 5) == 0) {
        struct stat st;
        fd = open(src + 5, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISFIFO(st.st_mode)) {
            snprintf(why, cap, "%.400s: %s", src + 5, fd < 0 ? strerror(errno) : "not a FIFO");
            if (fd >= 0)
                close(fd);
            return -1;
        }
        kind = PRESSURE_FIFO;
        ev = UV_READABLE;
        snprintf(p->name, sizeof p->name, "FIFO %.400s", src + 5);
    } else {
        snprintf(why, cap, "unknown source '%.400s'", src);
        return -1;
    }
    if (fd < 0)
        return -1;
    int rc = uv_poll_init(loop, &p->poll, fd);
    if (!rc) {
        p->poll.data = p;
        rc = uv_poll_start(&p->poll, ev, td__pressure_poll_cb);
        if (rc)
            uv_close((uv_handle_t *)&p->poll, NULL);
    }
    if (rc) {
        snprintf(why, cap, "%.400s: cannot poll it: %s", path, uv_strerror(rc));
        close(fd);
        /* A handle that was initialised is closing now: p->poll cannot take another. */
        return p->poll.data ? -2 : -1;
    }
    p->fd = fd;
    p->kind = kind;
    return 0;
}

int td__pressure_start(td__pressure *p, uv_loop_t *loop, int cgroup_first, td__pressure_cb cb,
                       void *data)
{
    memset(p, 0, sizeof *p);
    p->fd = -1;
    p->cb = cb;
    p->data = data;
    const char *env = getenv("TENSORD_PRESSURE_SOURCES");
    char list[1024];
    snprintf(list, sizeof list, "%s",
             env && *env    ? env
             : cgroup_first ? "cgroup,events,psi"
                            : "psi,cgroup,events");
    char failed[2048] = "";
    size_t used = 0;
    char *save = NULL;
    for (char *src = strtok_r(list, ",", &save); src; src = strtok_r(NULL, ",", &save)) {
        if (strcmp(src, "none") == 0)
            continue;
        char why[512];
        int rc = td__pressure_try(p, loop, src, why, sizeof why);
        if (rc == 0) {
            td__log_notice("memory pressure: watching %s%s%s", p->name,
                           p->kind == PRESSURE_PSI ? " (" TD__PRESSURE_TRIGGER_TEXT ")" : "",
                           p->kind == PRESSURE_EVENTS ? " (rises of high, max and oom)" : "");
            return 0;
        }
        int n = snprintf(failed + used, sizeof failed - used, "%s%s", used ? "; " : "", why);
        if (n > 0 && (size_t)n < sizeof failed - used)
            used += (size_t)n;
        if (rc == -2)
            break;
    }
    td__log_warn("memory pressure: no signal available (%s): entries nobody holds are dropped "
                 "only to make room in the budget",
                 used ? failed : "none asked for");
    return -1;
}

static void td__pressure_closed(uv_handle_t *h)
{
    td__pressure *p = h->data;
    close(p->fd);
    p->fd = -1;
}

void td__pressure_stop(td__pressure *p)
{
    if (p->fd < 0 || p->closing)
        return;
    p->closing = 1;
    if (uv_is_closing((uv_handle_t *)&p->poll)) {
        close(p->fd); /* closed by someone else (uv_walk): its callback is not ours */
        p->fd = -1;
        return;
    }
    uv_close((uv_handle_t *)&p->poll, td__pressure_closed);
}
