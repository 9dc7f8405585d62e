/*
 * budget.h - how much memory the daemon may hold: the memory budget (max_memory) and the quota
 * of one uid (max_memory_per_uid) in bytes, from their settings and from what the machine gives
 * the daemon.
 *
 * "The memory the daemon may use" is the lowest limit on its cgroup, when that is below
 * MemTotal: memory.max and memory.high of its cgroup (v2) and of every ancestor, or
 * memory.limit_in_bytes of its memory cgroup and its ancestors (v1). Otherwise it is MemTotal.
 * A percentage in max_memory is a share of that figure, probed again on every reload (SIGHUP);
 * a percentage in max_memory_per_uid is a share of the budget.
 *
 * The cgroup is found through /proc/self/cgroup and /proc/self/mountinfo, so this works the
 * same on the host, under systemd (the service's own cgroup) and in a container with a cgroup
 * namespace (the container's cgroup is the root it sees). Every file is optional: what cannot
 * be read is skipped.
 */
#ifndef TD_DAEMON_BUDGET_H
#define TD_DAEMON_BUDGET_H

#include "config.h"

#include <stddef.h>
#include <stdint.h>

/* The memory the daemon may use, and where that figure comes from. */
typedef struct td__budget_base {
    uint64_t bytes;
    char source[1400]; /* "MemTotal" or "/sys/fs/cgroup/system.slice/tensord.service/memory.max" */
} td__budget_base;

/* Probes the memory the daemon may use (see the top of this file). Never fails: MemTotal is
 * always there (sysinfo(2) when /proc/meminfo is hidden). */
void td__budget_probe(td__budget_base *out);

/* Fills cfg->max_memory and cfg->max_memory_per_uid from cfg's settings (probing the machine
 * when max_memory is a percentage) and logs both, with where they come from. */
void td__budget_resolve(td__config *cfg);

/* The directory of this process's cgroup in the cgroup v2 hierarchy (v2 != 0), or in the v1
 * memory controller's hierarchy, into out (cap bytes). 0, or -1 when there is none. */
int td__budget_cgroup_dir(int v2, char *out, size_t cap);

#endif
