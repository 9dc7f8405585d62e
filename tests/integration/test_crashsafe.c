/*
 * test_crashsafe.c - saves killed at random moments.
 *
 * For each format (npy, npz stored, npz deflated, safetensors, gguf) a child process saves a
 * new version of a large file over an existing one and is SIGKILLed at a random moment between
 * its start and a little after the time a whole save takes; 50 times per format. After each
 * kill:
 *   - the target path holds either the complete previous version or the complete new one, and
 *     it loads bit-exact (every byte of every array compared with the version's generator);
 *   - every other file in the directory is a temporary named exactly PATH.tmp-XXXXXXXXXXXXXXXX
 *     (16 hex digits, client/save.c), a different inode from the target, and its extension is
 *     not one td_load recognises, so no loader can mistake it for the file. The test removes
 *     them, as a cleanup job would, and counts them.
 * A save that ran to completion (the kill came too late) must have left the new version and no
 * temporary.
 */
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
    int64_t elems; /* float32 elements of the big array */
} fmts[F_COUNT] = {
    {"npy", ".npy", 1 << 20},
    {"npz stored", ".npz", 1 << 20},
    /* deflate runs at ~20 MB/s: a smaller array keeps 50 saves in a few seconds */
    {"npz deflated", ".npz", 256 << 10},
    {"safetensors", ".safetensors", 1 << 20},
    {"gguf", ".gguf", 1 << 20},
};

static char dir[64];

/* Version k's value i: distinct between versions, compressible (so deflate is not the whole
 * story), exact in float32. */
static float value(int k, int64_t i)
{
    return (float)(k * 4096 + (int)((i * 7) % 4096));
}

static td_dict *version(fmt f, int k)
{
    td_error err = {0};
    int64_t n = fmts[f].elems;
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

static int save(fmt f, const char *path, const td_dict *d, td_error *err)
{
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
    if (!w || td_array_dtype(w) != TD_FLOAT32 || td_array_size(w) != fmts[f].elems) {
        snprintf(why, cap, "array w missing or of another shape");
    } else {
        const float *p = td_array_data(w);
        k = (int)p[0] / 4096;
        for (int64_t i = 0; i < fmts[f].elems; i++)
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

/* Checks every file in dir other than target: a temporary of target, clearly named, another
 * inode, an extension no loader takes. Removes them; returns how many there were. */
static int check_and_remove_temporaries(const char *target)
{
    const char *base = strrchr(target, '/') + 1;
    size_t blen = strlen(base);
    struct stat ts;
    ck_assert_int_eq(stat(target, &ts), 0);
    DIR *d = opendir(dir);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        if (strcmp(e->d_name, base) == 0)
            continue;
        const char *s = e->d_name;
        ck_assert_msg(strncmp(s, base, blen) == 0 && strncmp(s + blen, ".tmp-", 5) == 0 &&
                          strlen(s + blen + 5) == 16 &&
                          strspn(s + blen + 5, "0123456789abcdef") == 16,
                      "stray file %s next to %s", s, base);
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

static void run_format(fmt f)
{
    tu_tmpdir(dir);
    char path[256];
    snprintf(path, sizeof path, "%s/model%s", dir, fmts[f].ext);
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

    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid() ^ (unsigned)f;
    srand(seed);
    int cur = 0, before_tmp = 0, mid_write = 0, renamed = 0, completed = 0;
    for (int i = 0; i < KILLS; i++) {
        int next = i + 1;
        /* Up to 1.25 x the measured time, so that some kills come after the rename. */
        useconds_t delay = (useconds_t)((double)rand() / RAND_MAX * t_save * 1.25 * 1e6);
        pid_t pid = spawn_save(f, path, next);
        usleep(delay);
        kill(pid, SIGKILL);
        int st;
        ck_assert_int_eq(waitpid(pid, &st, 0), pid);
        int finished = WIFEXITED(st);
        if (finished)
            ck_assert_msg(WEXITSTATUS(st) == 0, "%s: the save failed by itself", fmts[f].name);
        int k = loaded_version(f, path, why, sizeof why);
        ck_assert_msg(k == cur || k == next,
                      "%s, kill %d after %u us: the target holds neither version %d nor %d: %s",
                      fmts[f].name, i, (unsigned)delay, cur, next, why);
        if (finished)
            ck_assert_msg(k == next, "%s: a completed save left the old version", fmts[f].name);
        int t = check_and_remove_temporaries(path);
        if (finished)
            ck_assert_msg(t == 0, "%s: a completed save left %d temporaries", fmts[f].name, t);
        ck_assert_int_le(t, 1);
        completed += finished;
        before_tmp += k == cur && !t;
        mid_write += k == cur && t;
        renamed += k == next && !finished;
        cur = k;
    }
    printf("crashsafe: %-12s save %.0f ms (first %.0f ms), %d kills: old version kept %d times "
           "(%d before the temporary existed, %d while writing it: temporary left), new version "
           "%d times (%d after the rename, %d completed)\n",
           fmts[f].name, t_save * 1e3, t_first * 1e3, KILLS, before_tmp + mid_write, before_tmp,
           mid_write, renamed + completed, renamed, completed);
    /* The kills did land where it matters: while the temporary was being written (the old file
     * must survive) and after the rename (the new one must be whole). */
    ck_assert_msg(mid_write > 0, "%s: no kill landed while the temporary was written",
                  fmts[f].name);
    ck_assert_msg(renamed + completed > 0, "%s: no kill landed after the rename", fmts[f].name);
    tu_rmtree(dir);
}

START_TEST(test_kill_during_save)
{
    run_format((fmt)_i);
}
END_TEST

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    Suite *s = suite_create("crashsafe");
    TCase *tc = tcase_create("crashsafe");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_kill_during_save, 0, F_COUNT);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
