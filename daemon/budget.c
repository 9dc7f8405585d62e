/*
 * budget.c - see budget.h.
 */
#include "budget.h"
#include "log.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>

/* "6.0 GiB", "512.0 MiB", "12 KiB" or "100 bytes": for log lines, next to the exact figure. */
static const char *td__budget_human(uint64_t v, char *buf, size_t cap)
{
    if (v >= (1ull << 30))
        snprintf(buf, cap, "%.1f GiB", (double)v / (double)(1ull << 30));
    else if (v >= (1ull << 20))
        snprintf(buf, cap, "%.1f MiB", (double)v / (double)(1ull << 20));
    else if (v >= 1024)
        snprintf(buf, cap, "%llu KiB", (unsigned long long)(v / 1024));
    else
        snprintf(buf, cap, "%llu bytes", (unsigned long long)v);
    return buf;
}

/* pct percent of v, without overflow. */
static uint64_t td__budget_share(uint64_t v, uint32_t pct)
{
    return v / 100 * pct + v % 100 * pct / 100;
}

static uint64_t td__budget_memtotal(void)
{
    FILE *f = fopen("/proc/meminfo", "re");
    unsigned long long kib = 0;
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
                break;
        fclose(f);
    }
    if (kib)
        return (uint64_t)kib * 1024;
    /* /proc/meminfo is hidden by the service's ProcSubset=pid, say: the same figure. */
    struct sysinfo si;
    if (sysinfo(&si) == 0)
        return (uint64_t)si.totalram * si.mem_unit;
    return 0;
}

/* Whether the comma-separated list has the item. */
static int td__budget_has_item(const char *list, const char *item)
{
    size_t n = strlen(item);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, item, n) == 0)
            return 1;
        p = end ? end + 1 : NULL;
    }
    return 0;
}

/* The mount point and root of the cgroup v2 hierarchy, or of v1's memory controller. */
static int td__budget_mount(int v2, char *mnt, size_t mcap, char *root, size_t rcap)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -1;
    char line[4096];
    int rc = -1;
    while (rc && fgets(line, sizeof line, f)) {
        /* id parent major:minor root mountpoint options [optional fields] - type source super */
        char *sep = strstr(line, " - ");
        char fstype[32], source[256], super[1024] = "", r[1024], m[1024];
        if (!sep || sscanf(sep + 3, "%31s %255s %1023s", fstype, source, super) < 2)
            continue;
        if (v2 ? strcmp(fstype, "cgroup2") != 0
               : strcmp(fstype, "cgroup") != 0 || !td__budget_has_item(super, "memory"))
            continue;
        if (sscanf(line, "%*s %*s %*s %1023s %1023s", r, m) != 2 || strlen(m) >= mcap ||
            strlen(r) >= rcap)
            continue;
        memcpy(mnt, m, strlen(m) + 1);
        memcpy(root, r, strlen(r) + 1);
        rc = 0;
    }
    fclose(f);
    return rc;
}

int td__budget_cgroup_dir(int v2, char *out, size_t cap)
{
    char mnt[1024], root[1024], path[2048] = "";
    if (td__budget_mount(v2, mnt, sizeof mnt, root, sizeof root))
        return -1;
    FILE *f = fopen("/proc/self/cgroup", "re");
    if (!f)
        return -1;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) {
        /* "0::/path" (v2) or "N:controller,controller:/path" (v1) */
        char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (!c2)
            continue;
        *c2 = '\0';
        int is_v2 = strncmp(line, "0:", 2) == 0 && c1[1] == '\0';
        if (v2 ? !is_v2 : is_v2 || !td__budget_has_item(c1 + 1, "memory"))
            continue;
        char *p = c2 + 1;
        p[strcspn(p, "\n")] = '\0';
        if (strlen(p) >= sizeof path)
            continue;
        memcpy(path, p, strlen(p) + 1);
        found = 1;
    }
    fclose(f);
    if (!found || path[0] != '/')
        return -1;
    /* The mount shows the hierarchy from root down: the cgroup must lie under it. */
    const char *rel = path;
    if (strcmp(root, "/") != 0) {
        size_t n = strlen(root);
        if (strncmp(path, root, n) != 0 || (path[n] != '/' && path[n] != '\0'))
            return -1;
        rel = path + n;
    }
    if (strcmp(rel, "/") == 0)
        rel = "";
    int n = snprintf(out, cap, "%s%s", mnt, rel);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}

/* A limit file: a number of bytes, or "max" (none: UINT64_MAX). 0 when read, -1 otherwise. */
static int td__budget_read_limit(const char *path, uint64_t *out)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    char buf[64] = "";
    int ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    if (!ok)
        return -1;
    if (strncmp(buf, "max", 3) == 0) {
        *out = UINT64_MAX;
        return 0;
    }
    if (!isdigit((unsigned char)buf[0]))
        return -1;
    *out = strtoull(buf, NULL, 10);
    return 0;
}

/* Lowers out to the lowest limit of dir and its ancestors up to the hierarchy's mount. */
static void td__budget_walk(int v2, char *dir, td__budget_base *out)
{
    static const char *const v2_files[] = {"memory.max", "memory.high", NULL};
    static const char *const v1_files[] = {"memory.limit_in_bytes", NULL};
    char mnt[1024], root[1024];
    if (td__budget_mount(v2, mnt, sizeof mnt, root, sizeof root))
        return;
    size_t top = strlen(mnt);
    for (;;) {
        for (const char *const *name = v2 ? v2_files : v1_files; *name; name++) {
            char file[sizeof out->source];
            uint64_t v;
            if ((size_t)snprintf(file, sizeof file, "%s/%s", dir, *name) >= sizeof file ||
                td__budget_read_limit(file, &v) || v >= out->bytes)
                continue;
            out->bytes = v;
            snprintf(out->source, sizeof out->source, "%s", file);
        }
        char *slash = strrchr(dir, '/');
        if (strlen(dir) <= top || !slash || (size_t)(slash - dir) < top)
            break;
        *slash = '\0';
    }
}

void td__budget_probe(td__budget_base *out)
{
    out->bytes = td__budget_memtotal();
    snprintf(out->source, sizeof out->source, "MemTotal");
    char dir[1400];
    for (int v2 = 1; v2 >= 0; v2--)
        if (td__budget_cgroup_dir(v2, dir, sizeof dir) == 0)
            td__budget_walk(v2, dir, out);
}

void td__budget_resolve(td__config *cfg)
{
    char h1[32], h2[32];
    const td__config_mem *m = &cfg->max_memory_set, *q = &cfg->max_memory_per_uid_set;
    if (m->percent) {
        td__budget_base base;
        td__budget_probe(&base);
        cfg->max_memory = td__budget_share(base.bytes, m->percent);
        td__log_notice("memory budget: %llu bytes (%s), max_memory = %u%% of %s (%s)",
                       (unsigned long long)cfg->max_memory,
                       td__budget_human(cfg->max_memory, h1, sizeof h1), m->percent, base.source,
                       td__budget_human(base.bytes, h2, sizeof h2));
    } else if (m->bytes) {
        cfg->max_memory = m->bytes;
        td__log_notice("memory budget: %llu bytes (%s), as max_memory sets it",
                       (unsigned long long)cfg->max_memory,
                       td__budget_human(cfg->max_memory, h1, sizeof h1));
    } else {
        cfg->max_memory = 0;
        td__log_notice("memory budget: none (max_memory = none): snapshot, derived and pinned "
                       "bytes are not bounded");
    }
    if (q->percent && cfg->max_memory) {
        cfg->max_memory_per_uid = td__budget_share(cfg->max_memory, q->percent);
        td__log_notice("memory per uid: %llu bytes (%s), max_memory_per_uid = %u%% of the budget",
                       (unsigned long long)cfg->max_memory_per_uid,
                       td__budget_human(cfg->max_memory_per_uid, h1, sizeof h1), q->percent);
    } else if (!q->percent && q->bytes) {
        cfg->max_memory_per_uid = q->bytes;
        td__log_notice("memory per uid: %llu bytes (%s), as max_memory_per_uid sets it",
                       (unsigned long long)cfg->max_memory_per_uid,
                       td__budget_human(cfg->max_memory_per_uid, h1, sizeof h1));
    } else {
        cfg->max_memory_per_uid = 0;
        td__log_notice("memory per uid: no quota (max_memory_per_uid = %s)",
                       q->percent ? "a share of no budget" : "none");
    }
}
