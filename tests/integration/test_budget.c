/*
 * test_budget.c - the daemon's memory budget, per-uid quotas and memory pressure, with a real
 * tensord and real client processes:
 *   - a hostile client floods the daemon with distinct deflated npz files, loaded and released
 *     from five processes at once, and the daemon's memory (read from /proc: its private
 *     resident pages plus every memfd it has open) never passes the budget; the same flood
 *     without a budget does pass it, so the measurement can fail;
 *   - two uids: a client under uid 65534 (setpriv) floods, and root's held model keeps its
 *     mapping and its entry, root's unheld entry is not evicted for the flooder, the flooder
 *     never holds more than its quota and is refused past it; a file both load counts once;
 *   - a budget full of held entries refuses the next decode and the next snapshot with
 *     TD_EBUDGET ("budget full: N bytes held by M leases"), auto mode falls back to embedded,
 *     and the held mappings stay intact;
 *   - loads whose decodes cannot all have room at once wait for the scratch of the decodes in
 *     flight instead of being refused;
 *   - a memory pressure event (through the daemon's test hook, a FIFO in place of PSI) evicts
 *     every entry nobody holds and logs what and why; a daemon without a signal says so once;
 *   - the default budget is a stated share of the machine's memory, logged with its source,
 *     and a reload (SIGHUP) works it out again.
 *
 * The same program is also the client that runs under the second uid: `test_budget --flood`
 * and `test_budget --load` (see helper_main).
 */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define MIB        (1u << 20)
#define OTHER_UID  65534          /* nobody */
#define FILE_FLOAT ((int64_t)MIB) /* floats in a flood file: 4 MiB decoded */

static char dir[64], sock[128], logpath[160];
static pid_t daemon_pid = -1;

static void setup(void)
{
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/tensord.sock", dir);
    snprintf(logpath, sizeof logpath, "%s/tensord.log", dir);
    setenv("TENSORD_SOCKET", sock, 1);
}

static void teardown(void)
{
    if (daemon_pid > 0) {
        int st = tu_daemon_stop(daemon_pid, SIGTERM);
        daemon_pid = -1;
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tensord exited badly: %d", st);
    }
    unsetenv("TENSORD_PRESSURE_SOURCES");
    tu_rmtree(dir);
}

/* Starts the daemon with a configuration file holding text. */
static void start_with_config(const char *text)
{
    char conf[256], extra[300];
    snprintf(conf, sizeof conf, "%s/tensord.conf", dir);
    ck_assert_int_eq(tu_write_file(conf, text, strlen(text)), 0);
    snprintf(extra, sizeof extra, "--config %s", conf);
    daemon_pid = tu_daemon_start(sock, logpath, extra);
}

/* A deflated npz with one float32 array "a" of n elements, all equal to value, readable by
 * everyone. Constant data deflates fast; each file is its own inode, so its own cache entry. */
static void save_npz(const char *path, int64_t n, float value)
{
    td_array *a;
    td_error err = {0};
    TU_OK(td_array_new(TD_FLOAT32, 1, &n, NULL, &a, &err), &err);
    float *p = td_array_data_mut(a);
    for (int64_t i = 0; i < n; i++)
        p[i] = value;
    td_dict *d = td_dict_new();
    TU_OK(td_dict_set(d, "a", a, &err), &err);
    TU_OK(td_savez_compressed(path, d, &err), &err);
    td_array_release(a);
    td_dict_free(d);
    ck_assert_int_eq(chmod(path, 0644), 0);
}

/* Whether d holds "a" with n elements, all equal to value (every page looked at). */
static int check_npz(const td_dict *d, int64_t n, float value)
{
    const td_array *a = td_dict_get(d, "a");
    if (!a || td_array_size(a) != n)
        return 0;
    const volatile float *p = td_array_data(a);
    for (int64_t i = 0; i < n; i += 1024)
        if (p[i] != value)
            return 0;
    return p[n - 1] == value;
}

static const char *file_path(char *out, size_t cap, const char *sub, const char *stem, int i)
{
    snprintf(out, cap, "%s/%s/%s%02d.npz", dir, sub, stem, i);
    return out;
}

/* Makes dir/sub (readable by everyone) holding count files stem00.npz ... of n floats; file i
 * holds the value base + i. */
static void make_files(const char *sub, const char *stem, int count, int64_t n, float base)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        ck_abort_msg("mkdir %s: %s", path, strerror(errno));
    ck_assert_int_eq(chmod(path, 0755), 0);
    for (int i = 0; i < count; i++)
        save_npz(file_path(path, sizeof path, sub, stem, i), n, base + (float)i);
}

static size_t count_in_log(const char *needle)
{
    size_t len = 0, n = 0;
    uint8_t *text = tu_read_file(logpath, &len);
    ck_assert_msg(text != NULL, "cannot read %s", logpath);
    char *s = realloc(text, len + 1);
    ck_assert_ptr_nonnull(s);
    s[len] = '\0';
    for (const char *p = s; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    free(s);
    return n;
}

/* A user's or a file's figures, read through the status accessors into a struct of the test's
 * own; each call gets a slot of a small ring, so that a few can be alive at once. */
typedef struct user_fig {
    uint32_t uid;
    uint64_t entries, bytes, quota;
} user_fig;

typedef struct file_fig {
    const char *name, *mode;
    uint64_t bytes, leases, file_bytes, hits;
} file_fig;

static const user_fig *user_of(const td_status *st, uint32_t uid)
{
    static user_fig ring[8];
    static unsigned next;
    for (size_t i = 0; i < td_status_nusers(st); i++)
        if (td_status_user_get(st, i, TD_STATUS_USER_UID) == uid) {
            user_fig *u = &ring[next++ % 8];
            *u = (user_fig){uid, td_status_user_get(st, i, TD_STATUS_USER_ENTRIES),
                            td_status_user_get(st, i, TD_STATUS_USER_BYTES),
                            td_status_user_get(st, i, TD_STATUS_USER_QUOTA)};
            return u;
        }
    return NULL;
}

static const file_fig *file_of(const td_status *st, const char *path)
{
    static file_fig ring[8];
    static unsigned next;
    for (size_t i = 0; i < td_status_nfiles(st); i++)
        if (strcmp(td_status_file_name(st, i), path) == 0) {
            file_fig *f = &ring[next++ % 8];
            *f = (file_fig){td_status_file_name(st, i),
                            td_status_file_mode(st, i),
                            td_status_file_get(st, i, TD_STATUS_FILE_BYTES),
                            td_status_file_get(st, i, TD_STATUS_FILE_LEASES),
                            td_status_file_get(st, i, TD_STATUS_FILE_FILE_BYTES),
                            td_status_file_get(st, i, TD_STATUS_FILE_HITS)};
            return f;
        }
    return NULL;
}

/* ---- the daemon's memory, from /proc ---- */

typedef struct daemon_mem {
    uint64_t private_bytes; /* RssAnon + RssFile: its heap, stacks, program and libraries */
    uint64_t memfd_bytes;   /* sizes of the distinct memfds it has open */
    int memfds;
} daemon_mem;

static daemon_mem read_daemon_mem(pid_t pid)
{
    daemon_mem m = {0, 0, 0};
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kib;
        if (sscanf(line, "RssAnon: %llu kB", &kib) == 1 ||
            sscanf(line, "RssFile: %llu kB", &kib) == 1) {
            m.private_bytes += (uint64_t)kib * 1024;
            found++;
        }
    }
    fclose(f);
    ck_assert_msg(found == 2, "%s has no RssAnon/RssFile", path);
    /* Every descriptor that is a memfd: its size, once per inode (a reply waiting to be sent
     * holds a duplicate). */
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    ck_assert_msg(d != NULL, "%s: %s", path, strerror(errno));
    ino_t seen[512];
    int nseen = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char fd_path[320], target[256];
        snprintf(fd_path, sizeof fd_path, "%s/%s", path, e->d_name);
        ssize_t n = readlink(fd_path, target, sizeof target - 1);
        if (n <= 0)
            continue; /* ".", "..", or closed meanwhile */
        target[n] = '\0';
        struct stat st;
        if (strncmp(target, "/memfd:", 7) != 0 || stat(fd_path, &st) != 0)
            continue;
        int dup = 0;
        for (int i = 0; i < nseen; i++)
            dup |= seen[i] == st.st_ino;
        if (dup)
            continue;
        ck_assert_int_lt(nseen, 512);
        seen[nseen++] = st.st_ino;
        m.memfd_bytes += (uint64_t)st.st_size;
        m.memfds++;
    }
    closedir(d);
    return m;
}

/* ---- clients ---- */

/* Loads count files through the daemon, one connection (one lease) each, in a child process
 * that checks every byte, reports one 'y' or 'n' per file over a pipe, then waits for a byte
 * before checking the bytes again, reporting once more and exiting. */
typedef struct holder {
    pid_t pid;
    int cmd, report;
} holder;

static holder hold_files(char (*paths)[256], const float *values, int count, int64_t n)
{
    int cmd[2], rep[2];
    ck_assert_int_eq(pipe(cmd), 0);
    ck_assert_int_eq(pipe(rep), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(cmd[1]);
        close(rep[0]);
        td_dict *d[16] = {0};
        for (int i = 0; i < count; i++) {
            td_load_options opt = TD_LOAD_OPTIONS_INIT;
            opt.mode = TD_MODE_DAEMON;
            td_error err = {0};
            char ok = 'n';
            if (td_load(paths[i], &opt, &d[i], NULL, &err) == 0 && check_npz(d[i], n, values[i]) &&
                td_array_provenance(td_dict_get(d[i], "a")) == TD_PROVENANCE_DAEMON)
                ok = 'y';
            else
                fprintf(stderr, "holder: %s: %s\n", paths[i], err.message);
            if (write(rep[1], &ok, 1) != 1)
                _exit(3);
        }
        char c;
        if (read(cmd[0], &c, 1) < 0)
            _exit(4);
        char ok = 'y';
        for (int i = 0; i < count; i++)
            if (!d[i] || !check_npz(d[i], n, values[i]))
                ok = 'n';
        if (write(rep[1], &ok, 1) != 1)
            _exit(3);
        _exit(0);
    }
    close(cmd[0]);
    close(rep[1]);
    holder h = {pid, cmd[1], rep[0]};
    for (int i = 0; i < count; i++) {
        char c = 0;
        ck_assert_int_eq(read(h.report, &c, 1), 1);
        ck_assert_msg(c == 'y', "the holder could not load %s", paths[i]);
    }
    return h;
}

/* Asks the holder to check its mappings again; returns whether they are intact, and reaps it. */
static int holder_finish(holder *h)
{
    char c = 'x', ok = 0;
    ck_assert_int_eq(write(h->cmd, &c, 1), 1);
    ck_assert_int_eq(read(h->report, &ok, 1), 1);
    int st;
    ck_assert_int_eq(waitpid(h->pid, &st, 0), h->pid);
    close(h->cmd);
    close(h->report);
    h->pid = -1;
    return ok == 'y' && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* Starts this program as a helper under uid and gid OTHER_UID (setpriv), its stdout on a pipe.
 * The test needs root for that: without it, it fails here, saying why. */
static pid_t spawn_other_uid(const char *const *args, int *out)
{
    ck_assert_msg(geteuid() == 0,
                  "this test runs a client under uid %d with setpriv and must "
                  "run as root (euid is %d)",
                  OTHER_UID, (int)geteuid());
    ck_assert_msg(access("/usr/bin/setpriv", X_OK) == 0, "/usr/bin/setpriv is needed (util-linux)");
    char self[512];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    ck_assert_int_gt(n, 0);
    self[n] = '\0';
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        const char *argv[16] = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                                self};
        int k = 6;
        for (; *args && k < 15; args++)
            argv[k++] = *args;
        argv[k] = NULL;
        execv("/usr/bin/setpriv", (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    *out = p[0];
    return pid;
}

/* Reads the helper's output to the end, reaps it, and returns its exit status. */
static int reap_other_uid(pid_t pid, int out, char *text, size_t cap)
{
    size_t len = 0;
    ssize_t k;
    while (len + 1 < cap && (k = read(out, text + len, cap - 1 - len)) > 0)
        len += (size_t)k;
    text[len] = '\0';
    close(out);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The daemon's socket, reachable by OTHER_UID as by a member of the tensord group. */
static void share_socket(void)
{
    ck_assert_int_eq(chmod(dir, 0755), 0);
    ck_assert_msg(chown(sock, (uid_t)-1, OTHER_UID) == 0, "chown %s: %s", sock, strerror(errno));
}

/* ---- the helper, run under the second uid ---- */

/* test_budget --flood SOCK DIR NFLOOD NHOLD: loads DIR/flood/fNN.npz (file i holds 100 + i) one
 * after the other, each released at once, then loads and holds DIR/hold/hNN.npz (200 + i) until
 * one is refused or NHOLD are held. Prints what happened. test_budget --load SOCK PATH VALUE
 * loads one file. */
static int helper_main(int argc, char **argv)
{
    td_client *c;
    td_error err = {0};
    if (argc < 4 || td_client_connect(argv[2], &c, &err) != 0) {
        printf("connect: %s\n", err.message);
        return 2;
    }
    if (strcmp(argv[1], "--load") == 0) {
        td_dict *d;
        int rc = td_client_load(c, argv[3], NULL, &d, NULL, &err);
        int ok = rc == 0 && argc > 4 && check_npz(d, FILE_FLOAT, strtof(argv[4], NULL));
        printf("load=%s %s\n", ok ? "ok" : "failed", rc ? err.message : "");
        if (!rc)
            td_dict_free(d);
        td_client_close(c);
        return ok ? 0 : 1;
    }
    if (argc < 6)
        return 2;
    int nflood = atoi(argv[4]), nhold = atoi(argv[5]);
    int ok = 0, refused = 0, failed = 0, held = 0, code = 0;
    char msg[256] = "";
    for (int i = 0; i < nflood; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/flood/f%02d.npz", argv[3], i);
        td_dict *d;
        int rc = td_client_load(c, path, NULL, &d, NULL, &err);
        if (rc == 0) {
            ok += check_npz(d, FILE_FLOAT, 100.0f + (float)i);
            failed += !check_npz(d, FILE_FLOAT, 100.0f + (float)i);
            td_dict_free(d); /* the lease goes back at once */
        } else if (rc == TD_EBUDGET) {
            refused++;
        } else {
            failed++;
            snprintf(msg, sizeof msg, "%s", err.message);
        }
    }
    td_dict *keep[32] = {0};
    for (int i = 0; i < nhold && i < 32; i++) {
        char path[300];
        snprintf(path, sizeof path, "%s/hold/h%02d.npz", argv[3], i);
        int rc = td_client_load(c, path, NULL, &keep[i], NULL, &err);
        if (rc) {
            code = rc;
            snprintf(msg, sizeof msg, "%s", err.message);
            break;
        }
        held += check_npz(keep[i], FILE_FLOAT, 200.0f + (float)i);
    }
    printf("flood_ok=%d flood_refused=%d flood_failed=%d held=%d code=%s\nmessage=%s\n", ok,
           refused, failed, held, code ? td_err_name(code) : "0", msg);
    fflush(stdout);
    for (int i = 0; i < 32; i++)
        td_dict_free(keep[i]);
    td_client_close(c);
    return 0;
}

/* ---- the tests ---- */

/* Five processes load and release 10 distinct deflated files each (4 MiB decoded), as fast as
 * they can, while this process samples the daemon's memory. Runs the daemon with conf; returns
 * the peak of memfd bytes and of private + memfd bytes, and the private bytes before. */
static void flood(const char *conf, int procs, uint64_t *peak_memfd, uint64_t *peak_total,
                  uint64_t *base_private, int *samples)
{
    start_with_config(conf);
    *base_private = read_daemon_mem(daemon_pid).private_bytes;
    *peak_memfd = *peak_total = 0;
    *samples = 0;
    pid_t kids[8];
    for (int k = 0; k < procs; k++) {
        kids[k] = fork();
        ck_assert_int_ge(kids[k], 0);
        if (kids[k] == 0) {
            td_client *c;
            td_error err = {0};
            if (td_client_connect(sock, &c, &err))
                _exit(2);
            int bad = 0;
            for (int i = k; i < 50; i += procs) {
                char path[256];
                td_dict *d;
                if (td_client_load(c, file_path(path, sizeof path, "flood", "f", i), NULL, &d, NULL,
                                   &err) != 0) {
                    fprintf(stderr, "flood: %s\n", err.message);
                    bad++;
                    continue;
                }
                bad += !check_npz(d, FILE_FLOAT, 100.0f + (float)i);
                td_dict_free(d);
            }
            td_client_close(c);
            _exit(bad ? 1 : 0);
        }
    }
    int left = procs, failures = 0;
    while (left) {
        daemon_mem m = read_daemon_mem(daemon_pid);
        (*samples)++;
        if (m.memfd_bytes > *peak_memfd)
            *peak_memfd = m.memfd_bytes;
        if (m.private_bytes + m.memfd_bytes > *peak_total)
            *peak_total = m.private_bytes + m.memfd_bytes;
        for (int k = 0; k < procs; k++) {
            int st;
            if (kids[k] > 0 && waitpid(kids[k], &st, WNOHANG) == kids[k]) {
                failures += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
                kids[k] = -1;
                left--;
            }
        }
        usleep(500);
    }
    daemon_mem m = read_daemon_mem(daemon_pid); /* and once more after the last load */
    if (m.memfd_bytes > *peak_memfd)
        *peak_memfd = m.memfd_bytes;
    if (m.private_bytes + m.memfd_bytes > *peak_total)
        *peak_total = m.private_bytes + m.memfd_bytes;
    ck_assert_msg(failures == 0, "%d flooding processes failed (see stderr)", failures);
}

START_TEST(test_hostile_flood_stays_in_budget)
{
#if defined(__SANITIZE_ADDRESS__)
    /* A sanitized daemon keeps freed memory in quarantine on purpose, and would be measured
     * with it: let it give memory back at once, so that what is measured is the daemon's own. */
    char asan[512];
    snprintf(asan, sizeof asan,
             "%s:quarantine_size_mb=0:thread_local_quarantine_size_kb=0:"
             "allocator_release_to_os_interval_ms=0",
             getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "");
    setenv("ASAN_OPTIONS", asan, 1);
#endif
    make_files("flood", "f", 50, FILE_FLOAT, 100.0f);
    uint64_t peak_memfd, peak_total, base;
    int samples;

    /* Without a budget the flood keeps everything: the measurement sees it pass 32 MiB. */
    flood("max_memory = none\n", 1, &peak_memfd, &peak_total, &base, &samples);
    td_status *st = tu_daemon_status(sock);
    printf("no budget: %d samples, peak %llu memfd bytes, %llu in all; %llu entries\n", samples,
           (unsigned long long)peak_memfd, (unsigned long long)peak_total,
           (unsigned long long)td_status_get(st, TD_STATUS_ENTRIES));
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 50);
    ck_assert_uint_ge(peak_memfd, 40ull * 4 * MIB);
    td_status_free(st);
    ck_assert_int_eq(WEXITSTATUS(tu_daemon_stop(daemon_pid, SIGTERM)), 0);
    daemon_pid = -1;
    unlink(logpath);

    /* With a budget of 32 MiB, five processes at once. */
    const uint64_t budget = 32ull * MIB;
    flood("max_memory = 32M\nmax_memory_per_uid = none\n", 5, &peak_memfd, &peak_total, &base,
          &samples);
    st = tu_daemon_status(sock);
    printf("budget %llu: %d samples, peak %llu memfd bytes, %llu in all (%llu private at "
           "start); %llu entries, %llu bytes held, %llu evictions, %llu refused\n",
           (unsigned long long)budget, samples, (unsigned long long)peak_memfd,
           (unsigned long long)peak_total, (unsigned long long)base,
           (unsigned long long)td_status_get(st, TD_STATUS_ENTRIES),
           (unsigned long long)td_status_get(st, TD_STATUS_BYTES),
           (unsigned long long)td_status_get(st, TD_STATUS_EVICTIONS),
           (unsigned long long)td_status_get(st, TD_STATUS_REFUSED));
    ck_assert_int_gt(samples, 10);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_BUDGET), budget);
    ck_assert_uint_le(td_status_get(st, TD_STATUS_BYTES), budget);
    ck_assert_uint_ge(td_status_get(st, TD_STATUS_EVICTIONS), 50 - budget / (4 * MIB));
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_REFUSED),
                      0); /* every flooded entry could be evicted */
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 0);
    /* Decoded data lives only in memfds the budget counts... */
    ck_assert_msg(peak_memfd <= budget, "memfds of %llu bytes, over the budget of %llu",
                  (unsigned long long)peak_memfd, (unsigned long long)budget);
    /* ...and so do the scratch buffers of the decodes in flight: the rest of the daemon stays
     * what it was, give or take a little heap. */
    ck_assert_msg(peak_total <= budget + base + 4ull * MIB,
                  "the daemon held %llu bytes: budget %llu + %llu private at start + 4 MiB",
                  (unsigned long long)peak_total, (unsigned long long)budget,
                  (unsigned long long)base);
    const user_fig *u = user_of(st, 0);
    ck_assert_ptr_nonnull(u);
    ck_assert_uint_eq(u->bytes, td_status_get(st, TD_STATUS_BYTES));
    ck_assert_uint_eq(u->quota, 0);
    td_status_free(st);
    ck_assert_uint_gt(count_in_log("to make room in the memory budget"), 0);
    /* What eviction leaves: an explicit evict gets the rest, and the books balance at 0. */
    td_client *c;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &c, &err), &err);
    TU_OK(td_client_evict(c, NULL, NULL, NULL, &err), &err);
    TU_OK(td_client_status(c, &st, &err), &err);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 0);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_BYTES), 0);
    ck_assert_uint_eq(td_status_nusers(st), 0);
    td_status_free(st);
    td_client_close(c);
    ck_assert_int_eq(read_daemon_mem(daemon_pid).memfds, 0);
}
END_TEST

START_TEST(test_two_uids)
{
    /* Root's model (held) and another root file (loaded, then let go); the flooder's files. */
    make_files("root", "m", 2, FILE_FLOAT, 1.0f);
    make_files("flood", "f", 20, FILE_FLOAT, 100.0f);
    make_files("hold", "h", 8, FILE_FLOAT, 200.0f);
    const uint64_t quota = 16ull * MIB;
    start_with_config("max_memory = 32M\nmax_memory_per_uid = 50%\n");
    share_socket();

    char model[256], unheld[256];
    file_path(model, sizeof model, "root", "m", 0);
    file_path(unheld, sizeof unheld, "root", "m", 1);
    char paths[1][256];
    snprintf(paths[0], sizeof paths[0], "%s", model);
    float one = 1.0f;
    holder h = hold_files(paths, &one, 1, FILE_FLOAT);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    td_dict *d;
    td_error err = {0};
    TU_OK(td_load(unheld, &opt, &d, NULL, &err), &err);
    td_dict_free(d);
    td_status *st = tu_daemon_status(sock);
    const user_fig *u = user_of(st, 0);
    ck_assert_ptr_nonnull(u);
    ck_assert_uint_eq(u->entries, 2);
    uint64_t root_bytes = u->bytes;
    ck_assert_uint_ge(root_bytes, 8ull * MIB);
    ck_assert_uint_eq(u->quota, quota);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_QUOTA), quota);
    td_status_free(st);

    /* uid 65534 floods 20 files, then holds what its quota allows; this process watches. */
    char nflood[8] = "20", nhold[8] = "8";
    const char *args[] = {"--flood", sock, dir, nflood, nhold, NULL};
    int out;
    pid_t pid = spawn_other_uid(args, &out);
    uint64_t other_peak = 0;
    int polls = 0;
    for (int st_;;) {
        td_status *s = tu_daemon_status(sock);
        const user_fig *o = user_of(s, OTHER_UID);
        if (o && o->bytes > other_peak)
            other_peak = o->bytes;
        const user_fig *r = user_of(s, 0);
        ck_assert_msg(r && r->bytes == root_bytes && r->entries == 2,
                      "root's entries changed during the flood");
        td_status_free(s);
        polls++;
        if (waitpid(pid, &st_, WNOHANG) == pid) {
            /* reaped here: reap_other_uid must not wait again */
            char text[1024];
            size_t len = 0;
            ssize_t k;
            while (len + 1 < sizeof text && (k = read(out, text + len, sizeof text - 1 - len)) > 0)
                len += (size_t)k;
            text[len] = '\0';
            close(out);
            printf("uid %d: %s", OTHER_UID, text);
            ck_assert_msg(WIFEXITED(st_) && WEXITSTATUS(st_) == 0, "the flooder failed: %s", text);
            ck_assert_ptr_nonnull(strstr(text, "flood_ok=20 flood_refused=0 flood_failed=0"));
            /* Two held 4 MiB entries leave 8 MiB of the 16: a third needs 4 MiB for its data
             * and as much again for the decoding's scratch, and is refused. */
            ck_assert_ptr_nonnull(strstr(text, "held=2 code=TD_EBUDGET"));
            ck_assert_msg(strstr(text, "budget full for uid 65534: ") &&
                              strstr(text, " bytes held by 2 leases"),
                          "%s", text);
            break;
        }
        usleep(2000);
    }
    printf("uid %d held at most %llu bytes (quota %llu), %d polls\n", OTHER_UID,
           (unsigned long long)other_peak, (unsigned long long)quota, polls);
    ck_assert_uint_le(other_peak, quota);
    ck_assert_uint_ge(other_peak, 12ull * MIB);

    /* Root's held model kept its entry and its mapping; its unheld file was not evicted for
     * the flooder either. */
    st = tu_daemon_status(sock);
    const file_fig *fm = file_of(st, model), *fu = file_of(st, unheld);
    ck_assert_msg(fm && fm->leases == 1, "root's model lost its entry");
    ck_assert_msg(fu != NULL, "root's unheld file was evicted to make room for another uid");
    ck_assert_uint_eq(user_of(st, 0)->bytes, root_bytes);
    const user_fig *o = user_of(st, OTHER_UID);
    ck_assert_ptr_nonnull(o);
    ck_assert_uint_le(o->bytes, quota);
    uint64_t other_bytes = o->bytes, model_hits = fm->hits;
    ck_assert_uint_ge(td_status_get(st, TD_STATUS_REFUSED), 1);
    td_status_free(st);
    ck_assert_uint_gt(count_in_log("to make room in the quota of uid 65534"), 0);
    char line[300];
    snprintf(line, sizeof line, "evict %s (", unheld);
    ck_assert_uint_eq(count_in_log(line), 0);

    /* uid 65534 loads root's model: a hit, counted against root only. */
    char value[16] = "1";
    const char *args2[] = {"--load", sock, model, value, NULL};
    pid = spawn_other_uid(args2, &out);
    char text[512];
    ck_assert_msg(reap_other_uid(pid, out, text, sizeof text) == 0, "%s", text);
    st = tu_daemon_status(sock);
    fm = file_of(st, model);
    ck_assert_ptr_nonnull(fm);
    ck_assert_uint_eq(fm->hits, model_hits + 1);
    ck_assert_uint_eq(user_of(st, 0)->bytes, root_bytes);
    ck_assert_uint_eq(user_of(st, OTHER_UID)->bytes, other_bytes);
    td_status_free(st);
    /* tensorctl shows the same figures, in its table and in JSON. */
    const char *tensorctl = getenv("TD_TENSORCTL");
    ck_assert_msg(tensorctl != NULL, "TD_TENSORCTL is not set");
    for (int json = 0; json < 2; json++) {
        char cmd[512], out_text[8192] = "";
        snprintf(cmd, sizeof cmd, "%s --socket %s status%s", tensorctl, sock,
                 json ? " --json" : "");
        FILE *p = popen(cmd, "r");
        ck_assert_ptr_nonnull(p);
        size_t k = fread(out_text, 1, sizeof out_text - 1, p);
        out_text[k] = '\0';
        ck_assert_int_eq(pclose(p), 0);
        const char *want = json ? "{\"uid\": 65534, \"entries\": " : "\n  65534 ";
        const char *quota_text = json ? "\"quota\": 16777216" : " 16777216\n";
        ck_assert_msg(strstr(out_text, want) && strstr(out_text, quota_text),
                      "tensorctl status%s: %s", json ? " --json" : "", out_text);
    }
    ck_assert_msg(holder_finish(&h), "root's mapping changed under the flood");
}
END_TEST

START_TEST(test_full_of_held_entries)
{
    /* 3 MiB decoded per file: five held fill 15 MiB of 20 (a decode also reserves its scratch
     * while it runs: as much again, so the fifth just fits and a sixth cannot). */
    const int64_t n = 3 * MIB / 4;
    make_files("held", "k", 5, n, 10.0f);
    make_files("new", "n", 1, n, 50.0f);
    make_files("snap", "s", 1, n, 60.0f);
    /* A 6 MiB .npy to pin: a pin locks the whole file and counts it. */
    char pin[256];
    snprintf(pin, sizeof pin, "%s/pin", dir);
    ck_assert_int_eq(mkdir(pin, 0755), 0);
    snprintf(pin, sizeof pin, "%s/pin/w.npy", dir);
    {
        int64_t pn = 6 * MIB / 4;
        td_array *a;
        td_error e = {0};
        TU_OK(td_array_new(TD_FLOAT32, 1, &pn, NULL, &a, &e), &e);
        float *p = td_array_data_mut(a);
        for (int64_t i = 0; i < pn; i++)
            p[i] = 70.0f;
        TU_OK(td_save(pin, a, &e), &e);
        td_array_release(a);
    }
    char conf[512];
    snprintf(conf, sizeof conf,
             "max_memory = 20M\nmax_memory_per_uid = none\nmode %s/snap/ = snapshot\n"
             "mode %s/pin/ = pin\n",
             dir, dir);
    start_with_config(conf);
    char paths[5][256];
    float values[5];
    for (int i = 0; i < 5; i++) {
        file_path(paths[i], sizeof paths[i], "held", "k", i);
        values[i] = 10.0f + (float)i;
    }
    holder h = hold_files(paths, values, 5, n);
    td_status *st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_LEASES), 5);
    uint64_t held = td_status_get(st, TD_STATUS_BYTES);
    ck_assert_uint_le(held, 16ull * MIB);
    ck_assert_uint_ge(held, 15ull * MIB);
    td_status_free(st);

    /* The next decode, and a snapshot, are refused by name; nothing held is touched. */
    char fresh[256], snap[256];
    file_path(fresh, sizeof fresh, "new", "n", 0);
    file_path(snap, sizeof snap, "snap", "s", 0);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    td_dict *d;
    td_error err = {0};
    ck_assert_int_eq(td_load(fresh, &opt, &d, NULL, &err), TD_EBUDGET);
    printf("refused: %s\n", err.message);
    char want[128];
    snprintf(want, sizeof want, "budget full: %llu bytes held by 5 leases",
             (unsigned long long)held);
    ck_assert_msg(strstr(err.message, want) && strstr(err.message, "n00.npz"),
                  "'%s' does not say '%s' and name the file", err.message, want);
    ck_assert_str_eq(td_err_name(TD_EBUDGET), "TD_EBUDGET");
    ck_assert_int_eq(td_load(snap, &opt, &d, NULL, &err), TD_EBUDGET);
    ck_assert_ptr_nonnull(strstr(err.message, want));
    ck_assert_int_eq(td_load(pin, &opt, &d, NULL, &err), TD_EBUDGET);
    ck_assert_msg(strstr(err.message, want), "%s", err.message);

    /* Auto mode loads both itself, with the right bytes. */
    opt.mode = TD_MODE_AUTO;
    TU_OK(td_load(fresh, &opt, &d, NULL, &err), &err);
    ck_assert(check_npz(d, n, 50.0f));
    /* decoded in this process, as embedded mode decodes a deflated member */
    ck_assert_int_eq(td_array_provenance(td_dict_get(d, "a")), TD_PROVENANCE_OWNED);
    td_dict_free(d);
    TU_OK(td_load(snap, &opt, &d, NULL, &err), &err);
    ck_assert(check_npz(d, n, 60.0f));
    /* decoded in this process, as embedded mode decodes a deflated member */
    ck_assert_int_eq(td_array_provenance(td_dict_get(d, "a")), TD_PROVENANCE_OWNED);
    td_dict_free(d);
    TU_OK(td_load(pin, &opt, &d, NULL, &err), &err);
    ck_assert_int_eq(td_array_provenance(td_dict_at(d, 0, NULL)), TD_PROVENANCE_EMBEDDED);
    td_dict_free(d);

    st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 5);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_BYTES), held);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_REFUSED), 6);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_EVICTIONS), 0);
    td_status_free(st);
    ck_assert_uint_eq(count_in_log("budget full: "), 6);

    /* Once the holder lets go, the daemon makes room and serves the file itself. */
    ck_assert_msg(holder_finish(&h), "a held mapping changed");
    for (int tries = 0; tries < 200; tries++) {
        st = tu_daemon_status(sock);
        uint64_t leases = td_status_get(st, TD_STATUS_LEASES);
        td_status_free(st);
        if (!leases)
            break;
        usleep(10000);
    }
    opt.mode = TD_MODE_DAEMON;
    TU_OK(td_load(fresh, &opt, &d, NULL, &err), &err);
    ck_assert(check_npz(d, n, 50.0f));
    ck_assert_int_eq(td_array_provenance(td_dict_get(d, "a")), TD_PROVENANCE_DAEMON);
    td_dict_free(d);
    st = tu_daemon_status(sock);
    ck_assert_uint_ge(td_status_get(st, TD_STATUS_EVICTIONS), 1);
    ck_assert_uint_le(td_status_get(st, TD_STATUS_BYTES), 20ull * MIB);
    td_status_free(st);
    /* The pin is served now, and counted: the file's size against the budget and the uid. */
    TU_OK(td_load(pin, &opt, &d, NULL, &err), &err);
    st = tu_daemon_status(sock);
    const file_fig *pf = file_of(st, pin);
    ck_assert_ptr_nonnull(pf);
    ck_assert_str_eq(pf->mode, "pin");
    ck_assert_uint_ge(pf->bytes, pf->file_bytes);
    ck_assert_uint_ge(user_of(st, 0)->bytes, pf->file_bytes);
    ck_assert_uint_le(td_status_get(st, TD_STATUS_BYTES), 20ull * MIB);
    td_status_free(st);
    td_dict_free(d);
}
END_TEST

/* Twelve loads at once whose decodes cannot all have room together: those that find the room
 * taken by the scratch of decodes in flight wait for it instead of being refused. */
typedef struct burst {
    pthread_barrier_t *go;
    char path[256];
    float value;
    int ok;
} burst;

static void *burst_thread(void *arg)
{
    burst *b = arg;
    td_client *c;
    td_error err = {0};
    if (td_client_connect(sock, &c, &err) != 0)
        return NULL;
    pthread_barrier_wait(b->go);
    td_dict *d;
    if (td_client_load(c, b->path, NULL, &d, NULL, &err) == 0) {
        b->ok = check_npz(d, FILE_FLOAT / 4, b->value);
        td_dict_free(d);
    } else {
        fprintf(stderr, "burst: %s\n", err.message);
    }
    td_client_close(c);
    return NULL;
}

START_TEST(test_builds_wait_for_scratch)
{
    enum { N = 12 };
    make_files("burst", "b", N, FILE_FLOAT / 4, 300.0f);
    start_with_config("max_memory = 12M\nmax_memory_per_uid = none\n");
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, N);
    burst b[N];
    pthread_t t[N];
    for (int i = 0; i < N; i++) {
        b[i] = (burst){&go, "", 300.0f + (float)i, 0};
        file_path(b[i].path, sizeof b[i].path, "burst", "b", i);
        ck_assert_int_eq(pthread_create(&t[i], NULL, burst_thread, &b[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ok += b[i].ok;
    }
    pthread_barrier_destroy(&go);
    td_status *st = tu_daemon_status(sock);
    size_t waits = count_in_log(" waits for ");
    printf("burst: %d of %d loaded, %zu waited for room, %llu refused, %llu bytes held\n", ok, N,
           waits, (unsigned long long)td_status_get(st, TD_STATUS_REFUSED),
           (unsigned long long)td_status_get(st, TD_STATUS_BYTES));
    ck_assert_int_eq(ok, N);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_REFUSED), 0);
    ck_assert_uint_le(td_status_get(st, TD_STATUS_BYTES), 12ull * MIB);
    td_status_free(st);
    /* 12 decodes of 1 MiB, each with 1 MiB of scratch, cannot all run in 12 MiB. */
    ck_assert_uint_gt(waits, 0);
}
END_TEST

START_TEST(test_pressure_evicts_unheld)
{
    char fifo[128];
    snprintf(fifo, sizeof fifo, "%s/pressure.fifo", dir);
    ck_assert_int_eq(mkfifo(fifo, 0600), 0);
    char env[160];
    snprintf(env, sizeof env, "fifo:%s", fifo);
    setenv("TENSORD_PRESSURE_SOURCES", env, 1);
    make_files("p", "p", 4, MIB / 4, 7.0f);
    start_with_config("max_memory = 64M\n");
    ck_assert_uint_eq(count_in_log("memory pressure: watching FIFO"), 1);
    char paths[4][256];
    for (int i = 0; i < 4; i++)
        file_path(paths[i], sizeof paths[i], "p", "p", i);
    float v = 10.0f;
    holder h = hold_files(&paths[3], &v, 1, MIB / 4);
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_DAEMON;
    td_error err = {0};
    for (int i = 0; i < 3; i++) {
        td_dict *d;
        TU_OK(td_load(paths[i], &opt, &d, NULL, &err), &err);
        td_dict_free(d);
    }
    td_status *st = tu_daemon_status(sock);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_ENTRIES), 4);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_PRESSURE), 0);
    td_status_free(st);

    /* The kernel's trigger fires (here: a write into the FIFO the daemon polls instead). */
    int fd = open(fifo, O_WRONLY | O_NONBLOCK);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "1", 1), 1);
    close(fd);
    uint64_t entries = 0, pressure = 0;
    for (int tries = 0; tries < 200 && pressure == 0; tries++) {
        usleep(10000);
        st = tu_daemon_status(sock);
        entries = td_status_get(st, TD_STATUS_ENTRIES);
        pressure = td_status_get(st, TD_STATUS_PRESSURE);
        if (pressure) {
            ck_assert_uint_eq(td_status_nfiles(st), 1);
            ck_assert_str_eq(td_status_file_name(st, 0), paths[3]);
            ck_assert_uint_eq(td_status_file_get(st, 0, TD_STATUS_FILE_LEASES), 1);
            ck_assert_uint_eq(td_status_get(st, TD_STATUS_EVICTIONS), 3);
        }
        td_status_free(st);
    }
    ck_assert_uint_eq(pressure, 1);
    ck_assert_uint_eq(entries, 1);
    /* What went and why, one line each, and the summary. */
    ck_assert_uint_eq(count_in_log("(memory pressure: FIFO "), 3);
    ck_assert_uint_eq(count_in_log("): dropped 3 entries nobody holds ("), 1);
    ck_assert_uint_eq(count_in_log("kept "), 1);
    ck_assert_msg(holder_finish(&h), "the held mapping changed under pressure");
    /* The daemon goes on serving. */
    td_dict *d;
    TU_OK(td_load(paths[0], &opt, &d, NULL, &err), &err);
    ck_assert(check_npz(d, MIB / 4, 7.0f));
    td_dict_free(d);
}
END_TEST

/* Without a signal, the daemon says so once, at start, and not again on reload. */
START_TEST(test_no_pressure_signal_said_once)
{
    setenv("TENSORD_PRESSURE_SOURCES", "none", 1);
    start_with_config("max_memory = 64M\n");
    kill(daemon_pid, SIGHUP);
    for (int tries = 0; tries < 200 && !count_in_log("configuration reloaded"); tries++)
        usleep(10000);
    ck_assert_uint_eq(count_in_log("configuration reloaded"), 1);
    ck_assert_uint_eq(count_in_log("memory pressure: no signal available"), 1);
    ck_assert_uint_eq(count_in_log("memory pressure: watching"), 0);
}
END_TEST

/* The budget by default: 25% of what the daemon may use (its cgroup's limit or MemTotal),
 * logged with that source; a reload works it out again; none means none. */
START_TEST(test_default_budget)
{
    start_with_config("# nothing: the defaults\n");
    /* Whatever this machine offers, the daemon says which signal it watches, or that there is
     * none, exactly once. */
    ck_assert_uint_eq(count_in_log("memory pressure: watching") +
                          count_in_log("memory pressure: no signal available"),
                      1);
    td_status *st = tu_daemon_status(sock);
    uint64_t budget = td_status_get(st, TD_STATUS_BUDGET);
    ck_assert_uint_gt(budget, 0);
    ck_assert_uint_eq(td_status_get(st, TD_STATUS_QUOTA),
                      budget / 100 * 50 + budget % 100 * 50 / 100);
    td_status_free(st);
    char line[160];
    snprintf(line, sizeof line, "memory budget: %llu bytes (", (unsigned long long)budget);
    ck_assert_uint_eq(count_in_log(line), 1);
    ck_assert_uint_eq(count_in_log("max_memory = 25% of "), 1);
    /* Where it came from: MemTotal, unless a cgroup limit is lower. */
    unsigned long long kib = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    ck_assert_ptr_nonnull(f);
    char buf[256];
    while (fgets(buf, sizeof buf, f) && sscanf(buf, "MemTotal: %llu kB", &kib) != 1)
        ;
    fclose(f);
    uint64_t total = (uint64_t)kib * 1024;
    if (count_in_log("max_memory = 25% of MemTotal ("))
        ck_assert_uint_eq(budget, total / 100 * 25 + total % 100 * 25 / 100);
    else
        ck_assert_msg(count_in_log("25% of /") == 1 && budget < total / 4,
                      "the budget comes from neither MemTotal nor a cgroup file");

    char conf[256];
    snprintf(conf, sizeof conf, "%s/tensord.conf", dir);
    const char *steps[] = {"max_memory = 10%\n", "max_memory = none\n",
                           "max_memory = none\nmax_memory_per_uid = 1G\n"};
    uint64_t want_budget[] = {budget / 25 * 10, 0, 0}, want_quota[] = {0, 0, 1ull << 30};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tu_write_file(conf, steps[i], strlen(steps[i])), 0);
        size_t reloads = count_in_log("configuration reloaded");
        kill(daemon_pid, SIGHUP);
        for (int tries = 0; tries < 200 && count_in_log("configuration reloaded") == reloads;
             tries++)
            usleep(10000);
        st = tu_daemon_status(sock);
        if (i == 0) {
            /* 10% of the same figure (the two roundings differ by less than 10 bytes) */
            ck_assert_uint_le(td_status_get(st, TD_STATUS_BUDGET), want_budget[0] + 10);
            ck_assert_uint_ge(td_status_get(st, TD_STATUS_BUDGET) + 10, want_budget[0]);
            ck_assert_uint_eq(td_status_get(st, TD_STATUS_QUOTA),
                              td_status_get(st, TD_STATUS_BUDGET) / 100 * 50 +
                                  td_status_get(st, TD_STATUS_BUDGET) % 100 * 50 / 100);
        } else {
            ck_assert_uint_eq(td_status_get(st, TD_STATUS_BUDGET), want_budget[i]);
            ck_assert_uint_eq(td_status_get(st, TD_STATUS_QUOTA), want_quota[i]);
        }
        td_status_free(st);
    }
    ck_assert_uint_eq(count_in_log("max_memory = 10% of "), 1);
    ck_assert_uint_eq(count_in_log("memory budget: none (max_memory = none)"), 2);
    ck_assert_uint_eq(count_in_log("memory per uid: 1073741824 bytes (1.0 GiB), as "), 1);
    /* A setting that is neither a size, a percentage nor none is refused. */
    const char *bad[] = {"max_memory = 0%\n", "max_memory = 101%\n", "max_memory_per_uid = x\n"};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(tu_write_file(conf, bad[i], strlen(bad[i])), 0);
        size_t refused = count_in_log("reload refused");
        kill(daemon_pid, SIGHUP);
        for (int tries = 0; tries < 200 && count_in_log("reload refused") == refused; tries++)
            usleep(10000);
        ck_assert_uint_eq(count_in_log("reload refused"), refused + 1);
    }
}
END_TEST

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--flood") == 0 || strcmp(argv[1], "--load") == 0))
        return helper_main(argc, argv);
    Suite *s = suite_create("budget");
    TCase *tc = tcase_create("budget");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_hostile_flood_stays_in_budget);
    tcase_add_test(tc, test_two_uids);
    tcase_add_test(tc, test_full_of_held_entries);
    tcase_add_test(tc, test_builds_wait_for_scratch);
    tcase_add_test(tc, test_pressure_evicts_unheld);
    tcase_add_test(tc, test_no_pressure_signal_said_once);
    tcase_add_test(tc, test_default_budget);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
