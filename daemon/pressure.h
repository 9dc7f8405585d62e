/*
 * pressure.h - the kernel's memory pressure signals, watched on the daemon's loop, so that the
 * daemon drops what nobody holds before the kernel has to kill anything.
 *
 * The sources; the first that works is watched:
 *   - psi: /proc/pressure/memory, with a trigger "some 150000 2000000" written to it (tasks
 *     stalled on memory for 150 ms within a 2 s window, machine-wide) and the descriptor
 *     polled for POLLPRI. 2 s is the shortest window an unprivileged process may ask for.
 *   - cgroup: the same trigger on the daemon's cgroup memory.pressure (cgroup v2): stalls
 *     inside its own cgroup.
 *   - events: the cgroup's memory.events (cgroup v2, needs only read access, so it works under
 *     systemd's ProtectControlGroups=): the kernel notifies a change, and an event is a rise of
 *     the "high", "max" or "oom" counters: the cgroup reached its limits.
 * The order is psi, cgroup, events; when the daemon's cgroup has a memory limit below the
 * machine's memory (a service with MemoryMax=, a container), the cgroup is where memory runs
 * short first, and the order is cgroup, events, psi. When none works, start() says so once,
 * with why each failed.
 *
 * PSI fires at most once per window, memory.events once per change: each event calls back once.
 *
 * For tests only (not documented for users), the environment variable TENSORD_PRESSURE_SOURCES
 * replaces the list: comma-separated "psi", "cgroup", "events", "fifo:PATH" (a FIFO; every write
 * into it is one event) or "none".
 */
#ifndef TD_DAEMON_PRESSURE_H
#define TD_DAEMON_PRESSURE_H

#include <stdint.h>
#include <uv.h>

typedef struct td__pressure td__pressure;
/* Called on the loop for each event; why names the signal ("PSI /proc/pressure/memory: ..."). */
typedef void (*td__pressure_cb)(td__pressure *p, const char *why);

struct td__pressure {
    uv_poll_t poll;
    int fd; /* -1 when nothing is watched */
    int kind;
    int closing;
    char name[512];     /* the source, for logs */
    uint64_t counts[3]; /* memory.events: high, max, oom as last read */
    td__pressure_cb cb;
    void *data; /* the caller's */
};

/* Starts watching the first source that works (cgroup_first: the cgroup's, see above) and logs
 * which (or, once, that none does). Returns 0 when a source is watched, -1 when none is (p is
 * then inert). */
int td__pressure_start(td__pressure *p, uv_loop_t *loop, int cgroup_first, td__pressure_cb cb,
                       void *data);
/* Stops watching; the descriptor is closed once the handle is. Safe to call twice, and on an
 * inert p. */
void td__pressure_stop(td__pressure *p);

#endif
