/*
 * bench_shards.c - a model of several files against the same model in one file.
 *
 *   bench_shards DIR [SIZE_MIB [REPS]]
 *
 * Writes a SIZE_MIB model (64 float32 tensors) into DIR twice: one.safetensors, and shards of a
 * quarter of the model each (td_save_model: m-0000i-of-00004.safetensors and
 * m.safetensors.index.json). Then, in this process (embedded mode):
 *   warm   td_load of the one file against td_load of the index, pages cached, medians of REPS;
 *   cold   every file's pages dropped (posix_fadvise DONTNEED) before each repetition, then the
 *          load plus a read of every page of every array, one thread per shard, against `dd`
 *          of the same shard files (one after the other, bs=1M, to /dev/null) in the same run.
 * Prints RESULT lines (bench_util.h).
 */
#include "bench_util.h"

#include <tensord.h>

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#define NTENSORS 64
#define NSHARDS  4

static void die(const char *what, const td_error *err)
{
    fprintf(stderr, "bench_shards: %s: %s\n", what, err ? err->message : "failed");
    exit(1);
}

static void drop_pages(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        die(path, NULL);
    fdatasync(fd);
    if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED))
        die("posix_fadvise", NULL);
    close(fd);
}

typedef struct toucher {
    const td_dict *d;
    size_t first, last; /* entries [first, last) */
    uint64_t sum;
} toucher;

/* Reads one byte of every page of entries [first, last). */
static void *touch(void *arg)
{
    toucher *t = arg;
    uint64_t s = 0;
    for (size_t i = t->first; i < t->last; i++) {
        const td_array *a = td_dict_at(t->d, i, NULL);
        const volatile uint8_t *p = td_array_data(a);
        uint64_t n = td_array_nbytes(a);
        for (uint64_t k = 0; k < n; k += 4096)
            s += p[k];
    }
    t->sum = s;
    return NULL;
}

/* Loads path (embedded) and, with touch_all, reads every page, one thread per shard's share
 * of the tensors. Returns seconds. */
static double load_once(const char *path, int touch_all)
{
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.mode = TD_MODE_EMBEDDED;
    td_dict *d;
    td_error err;
    uint64_t t0 = bu_now_ns();
    if (td_load(path, &o, &d, NULL, &err))
        die(path, &err);
    if (touch_all) {
        pthread_t th[NSHARDS];
        toucher tt[NSHARDS];
        size_t n = td_dict_size(d);
        for (int s = 0; s < NSHARDS; s++) {
            tt[s] = (toucher){d, n * (size_t)s / NSHARDS, n * (size_t)(s + 1) / NSHARDS, 0};
            pthread_create(&th[s], NULL, touch, &tt[s]);
        }
        for (int s = 0; s < NSHARDS; s++)
            pthread_join(th[s], NULL);
    }
    double sec = (double)(bu_now_ns() - t0) / 1e9;
    td_dict_free(d);
    return sec;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_shards DIR [SIZE_MIB [REPS]]\n");
        return 2;
    }
    const char *dir = argv[1];
    uint64_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 1024;
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (!mib || reps < 1)
        return 2;
    char one[4096], shards[4096], index[4096], file[4096];
    snprintf(one, sizeof one, "%s/one.safetensors", dir);
    snprintf(shards, sizeof shards, "%s/m.safetensors", dir);
    snprintf(index, sizeof index, "%s/m.safetensors.index.json", dir);

    td_error err;
    td_dict *d = td_dict_new();
    int64_t elems = (int64_t)(mib << 20) / 4 / NTENSORS;
    uint64_t seed = 42;
    for (int i = 0; i < NTENSORS; i++) {
        td_array *a;
        if (td_array_new(TD_FLOAT32, 1, &elems, NULL, &a, &err))
            die("td_array_new", &err);
        bu_fill_bytes(td_array_data_mut(a), td_array_nbytes(a), BU_FILL_WEIGHTS,
                      seed + (uint64_t)i);
        char name[64];
        snprintf(name, sizeof name, "model.layers.%d.weight", i);
        if (td_dict_set(d, name, a, &err))
            die("td_dict_set", &err);
        td_array_release(a);
    }
    td_save_options so = TD_SAVE_OPTIONS_INIT;
    if (td_save_model(one, d, NULL, &so, &err))
        die(one, &err);
    so.max_shard_bytes = (mib << 20) / NSHARDS;
    if (td_save_model(shards, d, NULL, &so, &err))
        die(shards, &err);
    td_dict_free(d);

    double *a = calloc((size_t)reps, sizeof *a), *b = calloc((size_t)reps, sizeof *b);
    /* Warm: both files cached. */
    load_once(one, 1);
    load_once(index, 1);
    for (int r = 0; r < reps; r++) {
        a[r] = load_once(one, 0);
        b[r] = load_once(index, 0);
    }
    double w1 = bu_quantile(a, (size_t)reps, 0.5), w4 = bu_quantile(b, (size_t)reps, 0.5);
    printf("RESULT bench=shards case=warm_load files=1 mib=%llu median_us=%.1f\n",
           (unsigned long long)mib, w1 * 1e6);
    printf(
        "RESULT bench=shards case=warm_load files=%d mib=%llu median_us=%.1f ratio_vs_one=%.3f\n",
        NSHARDS, (unsigned long long)mib, w4 * 1e6, w4 / w1);

    /* Cold: pages dropped; the model read through, against dd of the same files. */
    for (int r = 0; r < reps; r++) {
        for (int s = 0; s < NSHARDS; s++) {
            snprintf(file, sizeof file, "%s/m-%05d-of-%05d.safetensors", dir, s + 1, NSHARDS);
            drop_pages(file);
        }
        b[r] = load_once(index, 1);
        char cmd[8192] = "";
        size_t len = 0;
        for (int s = 0; s < NSHARDS; s++) {
            snprintf(file, sizeof file, "%s/m-%05d-of-%05d.safetensors", dir, s + 1, NSHARDS);
            drop_pages(file);
            len += (size_t)snprintf(cmd + len, sizeof cmd - len,
                                    "dd if='%s' of=/dev/null bs=1M status=none; ", file);
        }
        uint64_t t0 = bu_now_ns();
        if (system(cmd) != 0)
            die("dd", NULL);
        a[r] = (double)(bu_now_ns() - t0) / 1e9;
    }
    double bytes = (double)(mib << 20);
    double dd = bu_quantile(a, (size_t)reps, 0.5), cold = bu_quantile(b, (size_t)reps, 0.5);
    printf(
        "RESULT bench=shards case=cold_read method=dd files=%d mib=%llu median_s=%.3f MBps=%.0f\n",
        NSHARDS, (unsigned long long)mib, dd, bytes / dd / 1e6);
    printf("RESULT bench=shards case=cold_read method=td_load files=%d mib=%llu median_s=%.3f "
           "MBps=%.0f ratio_vs_dd=%.3f\n",
           NSHARDS, (unsigned long long)mib, cold, bytes / cold / 1e6, dd / cold);
    free(a);
    free(b);
    return 0;
}
