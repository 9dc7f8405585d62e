/*
 * test_crashsafe.c - saves killed at random moments, and every way a save can take.
 *
 * A save writes an unnamed file (O_TMPFILE) in the target's directory, links it under a
 * temporary name and renames that over the target (client/save.c). File systems without
 * O_TMPFILE get a named temporary instead; the test reaches that way through the library's
 * internal td__save_with_way (client/client.h), which nothing but tests calls with another way.
 *
 * kill_during_save, for each format (npy, npz stored, npz deflated, safetensors, gguf): a child
 * process saves a new version of a large file over an existing one and is stopped (SIGSTOP) at
 * a random moment between its start and a little after the time a whole save takes, looked at,
 * and SIGKILLed; 50 times per format. While it is stopped, the test reads where the save stood
 * from the descriptors it holds (/proc/PID/fd: an unnamed file shows as "DIR/#INODE
 * (deleted)") and the names in the directory. After each kill:
 *   - the target path holds either the complete previous version or the complete new one, and
 *     it loads bit-exact (every byte of every array compared with the version's generator);
 *   - every other file in the directory is a temporary named exactly PATH.tmp-XXXXXXXXXXXXXXXX
 *     (16 hex digits), a different inode from the target, with an extension no loader takes.
 *     The test counts them and removes them, as a cleanup job would;
 *   - a temporary is left exactly when the save stood between the link and the rename.
 * Over the 250 kills, at most 1 in 50 may leave a temporary. The window is the link, some tens
 * of microseconds, plus, on a busy machine, the wait for a CPU after it. These runs save arrays
 * 4 times larger (16 MB, 4 MB for deflate) so that a save takes tens of milliseconds and the
 * bound holds with a margin. Measured on 2 cores: 0 leftovers in 2500 kills at a load average
 * of about 3, about 1 in 250 (also under ASan) at 5 to 7; with 4 MB saves, 14 in 2500 at 3.
 * In each format, some kills must land while the unnamed file was being written, and some
 * after the rename. A save that ran to completion must have left the new version and nothing
 * else.
 *
 * kill_during_fallback: the same (at 4 MB) with the named temporary forced. Every kill while it
 * is written leaves it (that is the fallback's known cost), never an unnamed file.
 *
 * save_ways: each way (unnamed file linked with AT_EMPTY_PATH where the process may, through
 * /proc/self/fd, named temporary, unnamed file that cannot be linked so that the save starts
 * again with a named one) saves a file that loads, with mode 0666 minus the umask, over an
 * existing file and in a fresh place, and leaves nothing else.
 */
#include "client.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KILLS 50

typedef enum { F_NPY, F_NPZ, F_NPZ_DEFLATE, F_SAFETENSORS, F_GGUF, F_COUNT } fmt;

static const struct {
    const char *name, *ext;
    int64_t elems; /* float32 elements of the big array (times `scale`) */
} fmts[F_COUNT] = {
    {"npy", ".npy", 1 << 20},
    {"npz stored", ".npz", 1 << 20},
    /* deflate runs at ~20 MB/s: a smaller array keeps 50 saves in a few seconds */
    {"npz deflated", ".npz", 256 << 10},
    {"safetensors", ".safetensors", 1 << 20},
    {"gguf", ".gguf", 1 << 20},
};

static char dir[64];
/* Multiplies every format's element count (set per run, inherited by the children). */
static int64_t scale = 1;

/* Version k's value i: distinct between versions, compressible (so deflate is not the whole
 * story), exact in float32. */
static float value(int k, int64_t i)
{
    return (float)(k * 4096 + (int)((i * 7) % 4096));
}

static td_dict *version(fmt f, int k)
{
    td_error err = {0};
    int64_t n = fmts[f].elems * scale;
    td_array *w, *v;
    TU_OK(td_array_new(TD_FLOAT32, 1, &n, NULL, &w, &err), &err);
    float *p = td_array_data_mut(w);
    for (int64_t i = 0; i < n; i++)
        p[i] = value(k, i);
    int64_t one = 1;
    int32_t kk = k;
    TU_OK(td_array_new(TD_INT32, 1, &one, &kk, &v, &err), &err);
    td_dict *d = td_dict_new();
    TU_OK(td_dict_set(d, "w", w, &err), &err);
    if (f != F_NPY)
        TU_OK(td_dict_set(d, "version", v, &err), &err);
    td_array_release(w);
    td_array_release(v);
    return d;
}

/* The way saves go in this process and the children it forks (client.h). */
static td__save_way g_way = TD__SAVE_AUTO;

static int save(fmt f, const char *path, const td_dict *d, td_error *err)
{
    if (g_way != TD__SAVE_AUTO) {
        static const td_format formats[] = {[F_NPY] = TD_FORMAT_NPY,
                                            [F_NPZ] = TD_FORMAT_NPZ,
                                            [F_NPZ_DEFLATE] = TD_FORMAT_NPZ,
                                            [F_SAFETENSORS] = TD_FORMAT_SAFETENSORS,
                                            [F_GGUF] = TD_FORMAT_GGUF};
        if (f == F_NPY) {
            td_dict *one = td_dict_new();
            int rc = td_dict_set(one, "w", td_dict_get(d, "w"), err);
            if (!rc)
                rc = td__save_with_way(TD_FORMAT_NPY, 0, path, one, g_way, err);
            td_dict_free(one);
            return rc;
        }
        return td__save_with_way(formats[f], f == F_NPZ_DEFLATE, path, d, g_way, err);
    }
    switch (f) {
    case F_NPY:
        return td_save(path, td_dict_get(d, "w"), err);
    case F_NPZ:
        return td_savez(path, d, err);
    case F_NPZ_DEFLATE:
        return td_savez_compressed(path, d, err);
    case F_SAFETENSORS:
        return td_save_safetensors(path, d, NULL, err);
    default:
        return td_save_gguf(path, d, NULL, err);
    }
}

/* Loads path and returns the version it holds, checking every byte; -1 when it does not load
 * or holds anything else. */
static int loaded_version(fmt f, const char *path, char *why, size_t cap)
{
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = TD_MODE_EMBEDDED;
    td_dict *d;
    td_error err = {0};
    int rc = td_load(path, &opt, &d, NULL, &err);
    if (rc) {
        snprintf(why, cap, "does not load: %s", err.message);
        return -1;
    }
    const td_array *w = td_dict_get(d, "w");
    if (!w && f == F_NPY)
        w = td_dict_at(d, 0, NULL);
    int k = -1;
    if (!w || td_array_dtype(w) != TD_FLOAT32 || td_array_size(w) != fmts[f].elems * scale) {
        snprintf(why, cap, "array w missing or of another shape");
    } else {
        const float *p = td_array_data(w);
        k = (int)p[0] / 4096;
        for (int64_t i = 0; i < fmts[f].elems * scale; i++)
            if (p[i] != value(k, i)) {
                snprintf(why, cap, "w[%lld] = %g, version %d has %g", (long long)i, p[i], k,
                         value(k, i));
                k = -1;
                break;
            }
        if (k >= 0 && f != F_NPY) {
            const td_array *v = td_dict_get(d, "version");
            if (!v || ((const int32_t *)td_array_data(v))[0] != k) {
                snprintf(why, cap, "the version array does not say %d", k);
                k = -1;
            }
        }
    }
    td_dict_free(d);
    return k;
}

/* Whether name is a temporary of base: BASE.tmp- and 16 lower-case hex digits. */
static int is_temporary(const char *name, const char *base)
{
    size_t blen = strlen(base);
    return strncmp(name, base, blen) == 0 && strncmp(name + blen, ".tmp-", 5) == 0 &&
           strlen(name + blen + 5) == 16 && strspn(name + blen + 5, "0123456789abcdef") == 16;
}

/* Number of files in dir other than target; each must be a temporary of target. */
static int count_temporaries(const char *target)
{
    const char *base = strrchr(target, '/') + 1;
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            strcmp(e->d_name, base) == 0)
            continue;
        ck_assert_msg(is_temporary(e->d_name, base), "stray file %s next to %s", e->d_name, base);
        n++;
    }
    closedir(d);
    return n;
}

/* Checks every file in dir other than target: a temporary of target, clearly named, another
 * inode, an extension no loader takes. Removes them; returns how many there were. */
static int check_and_remove_temporaries(const char *target)
{
    const char *base = strrchr(target, '/') + 1;
    struct stat ts;
    ck_assert_int_eq(stat(target, &ts), 0);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 ||
            strcmp(e->d_name, base) == 0)
            continue;
        const char *s = e->d_name;
        ck_assert_msg(is_temporary(s, base), "stray file %s next to %s", s, base);
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, s);
        struct stat st;
        ck_assert_int_eq(stat(p, &st), 0);
        ck_assert_msg(st.st_ino != ts.st_ino, "temporary %s is the target's inode", s);
        ck_assert_int_eq(td_format_from_path(p), TD_FORMAT_AUTO);
        /* Loading it by name fails: the extension names no format. */
        td_dict *dd;
        td_error err = {0};
        ck_assert_int_eq(td_load(p, NULL, &dd, NULL, &err), TD_ENOTSUP);
        ck_assert_int_eq(unlink(p), 0);
        n++;
    }
    closedir(d);
    return n;
}

/* What a stopped save holds open in dir: an unnamed file ("DIR/#INODE (deleted)", what the
 * kernel shows for an O_TMPFILE file) and a named temporary of base. */
typedef struct {
    int unnamed, named;
} held;

static held held_by(pid_t pid, const char *base)
{
    held h = {0, 0};
    char fddir[64];
    snprintf(fddir, sizeof fddir, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(fddir);
    ck_assert_msg(d != NULL, "%s: %s", fddir, strerror(errno));
    struct dirent *e;
    size_t dlen = strlen(dir);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[352], target[512];
        snprintf(p, sizeof p, "%s/%s", fddir, e->d_name);
        ssize_t n = readlink(p, target, sizeof target - 1);
        if (n < 0)
            continue; /* closed meanwhile (the directory listing's own descriptor) */
        target[n] = '\0';
        if (strncmp(target, dir, dlen) != 0 || target[dlen] != '/')
            continue;
        const char *name = target + dlen + 1;
        if (name[0] == '#' && strstr(name, " (deleted)"))
            h.unnamed++;
        else if (is_temporary(name, base))
            h.named++;
    }
    closedir(d);
    return h;
}

/* Forks a child that makes version k and saves it over path; returns once the child is about
 * to call the save (it says so on a pipe), so that the caller's clock starts with the save. */
static pid_t spawn_save(fmt f, const char *path, int k)
{
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(go[0]);
        td_dict *d = version(f, k);
        td_error e = {0};
        if (write(go[1], "s", 1) != 1)
            _exit(2);
        _exit(save(f, path, d, &e) ? 1 : 0);
    }
    close(go[1]);
    char c;
    ck_assert_int_eq(read(go[0], &c, 1), 1);
    close(go[0]);
    return pid;
}

/* Where the kills of one format's run landed, and how many temporaries they left. */
typedef struct {
    int before, writing, window, renamed, completed, leftovers;
} tally;

static tally run_format(fmt f, td__save_way way, int64_t size_scale)
{
    g_way = way; /* inherited by the children */
    scale = size_scale;
    tu_tmpdir(dir);
    char path[256];
    snprintf(path, sizeof path, "%s/model%s", dir, fmts[f].ext);
    const char *base = strrchr(path, '/') + 1;
    td_error err = {0};

    /* How long making and saving a version takes (the timing save doubles as version 0). The
     * children do the same: make version k, save it. */
    double t0 = tu_now_s();
    td_dict *v0 = version(f, 0);
    TU_OK(save(f, path, v0, &err), &err);
    double t_first = tu_now_s() - t0;
    td_dict_free(v0);
    /* Children save slower than one warm save in the parent (page faults, writeback of the
     * previous child's pages): time three child saves, from the moment they call the save to
     * their exit, and aim the kills at the median. */
    double ts[3];
    for (int i = 0; i < 3; i++) {
        pid_t pid = spawn_save(f, path, 0);
        t0 = tu_now_s();
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        ts[i] = tu_now_s() - t0;
    }
    /* The median: one slow sample (writeback, a busy machine) must not stretch the window. */
    double t_save = ts[0] > ts[1] ? (ts[1] > ts[2] ? ts[1] : (ts[0] > ts[2] ? ts[2] : ts[0]))
                                  : (ts[0] > ts[2] ? ts[0] : (ts[1] > ts[2] ? ts[2] : ts[1]));
    char why[300];
    ck_assert_int_eq(loaded_version(f, path, why, sizeof why), 0);
    ck_assert_int_eq(count_temporaries(path), 0);

    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)f;
    srand(seed);
    int cur = 0;
    tally t = {0};
    for (int i = 0; i < KILLS; i++) {
        int next = i + 1;
        /* Up to 1.25 x the measured time, so that some kills come after the rename. */
        useconds_t delay = (useconds_t)((double)rand() / RAND_MAX * t_save * 1.25 * 1e6);
        pid_t pid = spawn_save(f, path, next);
        usleep(delay);
        /* Stop it where it is, look, then kill it there. */
        kill(pid, SIGSTOP);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, WUNTRACED), pid);
        int finished = WIFEXITED(st);
        held h = {0, 0};
        int named_then = 0;
        if (!finished) {
            ck_assert(WIFSTOPPED(st));
            h = held_by(pid, base);
            named_then = count_temporaries(path);
            kill(pid, SIGKILL);
            ck_assert_int_eq(waitpid(pid, &st, 0), pid);
            ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        } else {
            ck_assert_msg(WEXITSTATUS(st) == 0, "%s: the save failed by itself", fmts[f].name);
        }
        int k = loaded_version(f, path, why, sizeof why);
        ck_assert_msg(k == cur || k == next,
                      "%s, kill %d after %u us: the target holds neither version %d nor %d: %s",
                      fmts[f].name, i, (unsigned)delay, cur, next, why);
        if (finished)
            ck_assert_msg(k == next, "%s: a completed save left the old version", fmts[f].name);
        int left = check_and_remove_temporaries(path);
        ck_assert_int_le(left, 1);
        /* A temporary is left exactly when one had a name at the moment of the kill. */
        ck_assert_msg(left == named_then,
                      "%s, kill %d: %d temporaries after the kill, %d named when it came",
                      fmts[f].name, i, left, named_then);
        if (way == TD__SAVE_NAMED)
            ck_assert_msg(h.unnamed == 0, "%s: the named fallback held an unnamed file",
                          fmts[f].name);
        else
            ck_assert_msg(h.named == 0, "%s: the O_TMPFILE way held a named temporary open",
                          fmts[f].name);
        t.leftovers += left;
        if (finished)
            t.completed++;
        else if (k == next)
            t.renamed++;
        else if (left)
            t.window++; /* linked (or, in the fallback, named) and not yet renamed */
        else if (h.unnamed)
            t.writing++;
        else
            t.before++;
        cur = k;
    }
    printf("crashsafe: %-12s %-8s save %.0f ms (first %.0f ms), %d kills: old version kept %d "
           "times (%d before the file existed, %d while writing the unnamed file, %d with a "
           "named temporary: left behind), new version %d times (%d after the rename, %d "
           "completed)\n",
           fmts[f].name, way == TD__SAVE_NAMED ? "fallback" : "O_TMPFILE", t_save * 1e3,
           t_first * 1e3, KILLS, t.before + t.writing + t.window, t.before, t.writing, t.window,
           t.renamed + t.completed, t.renamed, t.completed);
    /* The kills did land where it matters: while the temporary was being written (the old file
     * must survive) and after the rename (the new one must be whole). */
    if (way == TD__SAVE_NAMED)
        ck_assert_msg(t.window > 0, "%s: no kill landed while the named temporary was written",
                      fmts[f].name);
    else
        ck_assert_msg(t.writing > 0, "%s: no kill landed while the unnamed file was written",
                      fmts[f].name);
    ck_assert_msg(t.renamed + t.completed > 0, "%s: no kill landed after the rename", fmts[f].name);
    tu_rmtree(dir);
    g_way = TD__SAVE_AUTO;
    scale = 1;
    return t;
}

/* One test for all formats, so that the leftovers are counted over 250 kills: the rate is what
 * is bounded, and 1 in 50 of a few tens of microseconds in some milliseconds is far from it. */
START_TEST(test_kill_during_save)
{
    int leftovers = 0;
    for (int f = 0; f < F_COUNT; f++)
        leftovers += run_format((fmt)f, TD__SAVE_AUTO, 4).leftovers;
    printf("crashsafe: O_TMPFILE: %d of %d kills left a temporary behind\n", leftovers,
           F_COUNT * KILLS);
    ck_assert_msg(leftovers * 50 <= F_COUNT * KILLS,
                  "%d of %d kills left a temporary behind: more than 1 in 50", leftovers,
                  F_COUNT * KILLS);
}
END_TEST

START_TEST(test_kill_during_fallback)
{
    run_format((fmt)_i, TD__SAVE_NAMED, 1);
}
END_TEST

/* Saves version k of format f as `as` (path itself, or path relative to the working directory)
 * in the way given, under umask 027, and checks the file at path: it loads as version k, has
 * mode 0640 and nothing else is left in dir. */
static void save_one_way(fmt f, td__save_way way, const char *as, const char *path, int k)
{
    g_way = way;
    mode_t old = umask(027);
    td_dict *d = version(f, k);
    td_error err = {0};
    TU_OK(save(f, as, d, &err), &err);
    td_dict_free(d);
    umask(old);
    g_way = TD__SAVE_AUTO;
    char why[300];
    ck_assert_msg(loaded_version(f, path, why, sizeof why) == k, "way %d: %s", (int)way, why);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_msg((st.st_mode & 07777) == 0640, "way %d: mode %o, want 0640 (umask 027)", (int)way,
                  (unsigned)(st.st_mode & 07777));
    ck_assert_int_eq(count_temporaries(path), 0);
}

START_TEST(test_save_ways)
{
    static const td__save_way ways[] = {TD__SAVE_AUTO, TD__SAVE_PROC, TD__SAVE_NAMED,
                                        TD__SAVE_NO_LINK};
    for (size_t w = 0; w < sizeof ways / sizeof ways[0]; w++) {
        tu_tmpdir(dir);
        char path[256];
        for (int f = 0; f < F_COUNT; f++) {
            snprintf(path, sizeof path, "%s/model%s", dir, fmts[f].ext);
            save_one_way((fmt)f, ways[w], path, path, 1); /* a new file */
            save_one_way((fmt)f, ways[w], path, path, 2); /* over an existing one */
            ck_assert_int_eq(unlink(path), 0);
        }
        /* A relative path: the directory is ".". */
        char cwd[4096];
        ck_assert_ptr_nonnull(getcwd(cwd, sizeof cwd));
        ck_assert_int_eq(chdir(dir), 0);
        snprintf(path, sizeof path, "%s/model.npy", dir);
        save_one_way(F_NPY, ways[w], "model.npy", path, 3);
        ck_assert_int_eq(chdir(cwd), 0);
        tu_rmtree(dir);
    }
}
END_TEST

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    Suite *s = suite_create("crashsafe");
    TCase *tc = tcase_create("crashsafe");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_kill_during_save);
    tcase_add_loop_test(tc, test_kill_during_fallback, 0, F_COUNT);
    tcase_add_test(tc, test_save_ways);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
