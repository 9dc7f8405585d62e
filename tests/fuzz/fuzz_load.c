/*
 * fuzz_load.c - libFuzzer target for loading a file of any format, the way td_load does.
 *
 * Input layout: byte 0 chooses the format, the rest is the file.
 *   bits 0-2  0 npy, 1 npz, 2 safetensors, 3 gguf, 4-7: detected from the content
 *             (td__detect_format, what the daemon does for a LOAD without a format)
 *   bits 3-7  unused (the fuzzer may flip them harmlessly)
 *
 * Three paths, all on every input:
 *   1. The shared indexer: td__index on the bytes with a small inflate bound, every entry
 *      checked to lie inside the file and decoded into a buffer of exactly its size, the
 *      metadata walked with every public accessor. This is what the embedded loader, the daemon
 *      and tensorctl run.
 *   2. The public API: the bytes go into a memfd and td_load opens /proc/self/fd/N in embedded
 *      mode with the format set (so it maps, indexes, builds views and decodes exactly as for a
 *      file on disk). Its result must agree with path 1 (same success or failure; on success
 *      the same arrays, bytes and metadata, every array's bytes readable), it must fill err on
 *      failure, name the file, return nothing, and leave no descriptor behind.
 *   3. The daemon's way: td__index through a descriptor reader (pread copies) of the same memfd.
 *      It must give exactly what path 1 gave: the same code and message on failure, an
 *      identical table (every field) and metadata on success.
 */
#include "fuzzutil.h"
#include "index.h"

#include <sys/mman.h>

static int g_memfd = -1;
static char g_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    g_memfd = memfd_create("fuzz_load", MFD_CLOEXEC);
    if (g_memfd < 0)
        fz_die("memfd_create", NULL);
    snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_memfd);
    return 0;
}

typedef struct indexed {
    int rc;       /* of indexing, or of the first decode that failed */
    int index_rc; /* of td__index alone */
    char message[sizeof(((td_error *)0)->message)];
    td__table t;
    uint8_t **decoded; /* per entry: decoded bytes, or NULL for plain views */
} indexed;

/* Path 1. Fills *out (release with indexed_free). */
static void by_index(td_format fmt, const uint8_t *p, size_t n, indexed *out)
{
    td_error err = {0};
    td__table_init(&out->t, fmt);
    out->decoded = NULL;
    out->rc = td__index(fmt, TD__RD_MEM(p, n, "fuzz.bin"), FZ_MAX_INFLATED, &out->t, &err);
    out->index_rc = out->rc;
    memcpy(out->message, err.message, sizeof out->message);
    if (out->rc) {
        fz_check_failure(out->rc, &err, n);
        if (!strstr(err.message, "fuzz.bin"))
            fz_die("message does not name the file", &err);
        return;
    }
    out->decoded = calloc(out->t.n ? out->t.n : 1, sizeof *out->decoded);
    if (!out->decoded)
        fz_die("calloc", NULL);
    for (size_t i = 0; i < out->t.n; i++) {
        const td__entry *e = &out->t.entries[i];
        fz_check_entry(e, n);
        /* What td_load views in place is aligned to its dtype (the mapping is page aligned,
         * so the file offset decides); the rest is copied (TD__LAYOUT_ALIGN). */
        if (!e->layout && e->nbytes && e->offset % td__dtype_align(e->dtype))
            fz_die("a view that would be misaligned", NULL);
        int rc;
        memset(&err, 0, sizeof err);
        if (!fz_entry_bytes(e, p, n, &out->decoded[i], &rc, &err)) {
            fz_check_failure(rc, &err, n);
            if (!strstr(err.message, "fuzz"))
                fz_die("decode message does not name the file", &err);
            out->rc = rc; /* td_load fails the same way */
            break;
        }
    }
    fz_walk_meta(out->t.meta);
}

static void indexed_free(indexed *x)
{
    if (x->decoded)
        for (size_t i = 0; i < x->t.n; i++)
            free(x->decoded[i]);
    free(x->decoded);
    td__table_destroy(&x->t);
}

/* Path 3 (the memfd holds the input), compared with path 1. */
static void by_descriptor(td_format fmt, size_t n, const indexed *x)
{
    td__rd r;
    td__rd_fd(&r, g_memfd, n, 0, "fuzz.bin");
    td__table t;
    td__table_init(&t, fmt);
    td_error err = {0};
    int rc = td__index(fmt, &r, FZ_MAX_INFLATED, &t, &err);
    td__rd_close(&r);
    if (rc != x->index_rc || (rc && strcmp(err.message, x->message)))
        fz_die("a descriptor reader indexes otherwise than a mapped one", &err);
    if (!rc && !td__table_equal(&t, &x->t))
        fz_die("a descriptor reader builds another table than a mapped one", NULL);
    td__table_destroy(&t);
}

/* Path 2 (the memfd holds the input), compared with path 1. */
static void by_td_load(td_format fmt, const uint8_t *p, size_t n, const indexed *x)
{
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.format = fmt;
    opt.mode = TD_MODE_EMBEDDED;
    opt.max_inflated = FZ_MAX_INFLATED;
    int has_meta = fmt == TD_FORMAT_SAFETENSORS || fmt == TD_FORMAT_GGUF;
    td_dict *d = NULL;
    td_meta *m = NULL;
    td_error err = {0};
    int low = fz_lowest_free_fd();
    int rc = td_load(g_path, &opt, &d, has_meta ? &m : NULL, &err);
    if (fz_lowest_free_fd() != low)
        fz_die("td_load left a descriptor open", &err);
    if (rc) {
        fz_check_failure(rc, &err, n);
        if (!strstr(err.message, g_path))
            fz_die("td_load's message does not name the file", &err);
        if (d || m)
            fz_die("td_load failed but returned something", &err);
        /* An empty file is refused before indexing; the indexer may see it otherwise. */
        if (!x->rc && n)
            fz_die("td_load refuses a file the indexer accepts", &err);
        return;
    }
    if (x->rc)
        fz_die("td_load accepts a file the indexer refuses", NULL);
    if (td_dict_size(d) != x->t.n)
        fz_die("td_load: another number of arrays than the table", NULL);
    for (size_t i = 0; i < x->t.n; i++) {
        const td__entry *e = &x->t.entries[i];
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        if (!a || (name == NULL) != (e->name == NULL) || (name && strcmp(name, e->name)))
            fz_die("td_load: array names differ from the table", NULL);
        if (td_array_dtype(a) != e->dtype || td_array_ndim(a) != (int)e->ndim ||
            td_array_nbytes(a) != e->nbytes ||
            (e->ndim && memcmp(td_array_shape(a), e->shape, e->ndim * sizeof(int64_t))))
            fz_die("td_load: dtype or shape differs from the table", NULL);
        const uint8_t *want = x->decoded[i] ? x->decoded[i] : p + e->offset;
        fz_touch(td_array_data(a), e->nbytes);
        if (e->nbytes && memcmp(td_array_data(a), want, e->nbytes))
            fz_die("td_load: bytes differ from the indexer's", NULL);
    }
    if (has_meta && (!m || !td__meta_equal(m, x->t.meta)))
        fz_die("td_load: metadata differs from the indexer's", NULL);
    td_meta_free(m);
    td_dict_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0] & 7;
    data++;
    size--;
    td_format fmt;
    if (sel < 4) {
        fmt = (td_format)(TD_FORMAT_NPY + sel);
    } else {
        fmt = td__detect_format(data, size);
        if (fmt == TD_FORMAT_AUTO)
            return 0;
    }
    indexed x;
    by_index(fmt, data, size, &x);
    if (ftruncate(g_memfd, 0) < 0 || (size && pwrite(g_memfd, data, size, 0) != (ssize_t)size))
        fz_die("writing the memfd", NULL);
    by_descriptor(fmt, size, &x);
    by_td_load(fmt, data, size, &x);
    indexed_free(&x);
    return 0;
}
