/*
 * model_load.c - embedded loading of models that span several files: a Hugging Face index
 * (NAME.safetensors.index.json) or a GGUF file that may be the first of a gguf-split set.
 *
 * The index is read with a bound, parsed and checked by formats/model.c, which also names the
 * shards: plain names, opened with openat() relative to the directory of the index or first
 * split, and nothing else (symbolic links in that directory, as the Hugging Face cache makes
 * them, are followed like any other file). Each shard is mapped and indexed as a file of its
 * own, then the tables are merged and the dict views into one mapping per shard. A GGUF file
 * that is not a split set loads as it is, without split.* keys in its metadata.
 */
#include "client.h"
#include "common.h"
#include "dequant.h"
#include "index.h"
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* The directory of path (".", "/" or the part before the last slash) and its last component. */
static int model_split_path(const char *path, char **dir, const char **base)
{
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    return *dir ? 0 : TD_ENOMEM;
}

/* Opens name in the directory dirfd, checks it is a non-empty regular file, and maps it.
 * label names it in messages ("DIR/NAME"). */
static int model_map_at(int dirfd, const char *name, const char *label, void **base, size_t *len,
                        td_error *err)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return td__err(err, td__err_from_errno(e), "%s: cannot open: %s", label, strerror(e));
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: cannot stat: %s", label, strerror(e));
    } else if (!S_ISREG(st.st_mode)) {
        rc = td__err(err, TD_EINVAL, "%s: not a regular file", label);
    } else if (st.st_size == 0) {
        rc = td__err(err, TD_ETRUNC, "%s: file is empty", label);
    } else if ((uint64_t)st.st_size > SIZE_MAX) {
        rc = td__err(err, TD_ERANGE, "%s: file too large to map", label);
    } else {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            rc = td__err(err, td__err_from_errno(e), "%s: cannot map %lld bytes: %s", label,
                         (long long)st.st_size, strerror(e));
        } else {
            *base = p;
            *len = (size_t)st.st_size;
        }
    }
    close(fd);
    return rc;
}

/* Reads the whole index (a regular file of at most TD__MODEL_MAX_INDEX bytes). */
static int model_read_index(const char *path, uint8_t **out, size_t *len, td_error *err)
{
    int fd;
    int rc = td__open_ro(path, &fd, err);
    if (rc)
        return rc;
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return td__err(err, TD_EINVAL, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > TD__MODEL_MAX_INDEX) {
        close(fd);
        return td__err(err, TD_ELIMIT, "%s: index of %lld bytes, over the bound of %u", path,
                       (long long)st.st_size, TD__MODEL_MAX_INDEX);
    }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) {
        close(fd);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(buf);
            close(fd);
            return e ? td__err(err, td__err_from_errno(e), "%s: read failed: %s", path, strerror(e))
                     : td__err(err, TD_ETRUNC, "%s: the file shrank while being read", path);
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *len = n;
    return 0;
}

/* One model being loaded: its shards' mappings (as regions) and tables. */
typedef struct model_load {
    size_t n;
    td__region **regions;
    td__table *tables;
} model_load;

static void model_load_free(model_load *ml)
{
    for (size_t i = 0; i < ml->n; i++) {
        td__region_release(ml->regions[i]);
        td__table_destroy(&ml->tables[i]);
    }
    free(ml->regions);
    free(ml->tables);
}

static int model_load_alloc(model_load *ml, size_t n, const char *path, td_error *err)
{
    ml->regions = calloc(n, sizeof *ml->regions);
    ml->tables = calloc(n, sizeof *ml->tables);
    if (!ml->regions || !ml->tables)
        return td__err(err, TD_ENOMEM, "%s: out of memory for %zu shards", path, n);
    return 0;
}

/* Maps and indexes shard i (name in dirfd) as format. */
static int model_load_shard(model_load *ml, size_t i, int dirfd, const char *dir, const char *name,
                            td_format format, const td_load_options *opt, td_error *err)
{
    size_t cap = strlen(dir) + strlen(name) + 2;
    char *label = malloc(cap);
    if (!label)
        return td__err(err, TD_ENOMEM, "%s: out of memory", name);
    snprintf(label, cap, "%s/%s", dir, name);
    void *base = NULL;
    size_t len = 0;
    int rc = model_map_at(dirfd, name, label, &base, &len, err);
    if (!rc && !(ml->regions[i] = td__region_mmap(base, len))) {
        munmap(base, len);
        rc = td__err(err, TD_ENOMEM, "%s: out of memory", label);
    }
    td__table_init(&ml->tables[i], format);
    if (ml->n <= i)
        ml->n = i + 1;
    if (!rc)
        rc =
            td__index(format, TD__RD_MEM(base, len, label), opt->max_inflated, &ml->tables[i], err);
    free(label);
    return rc;
}

/* Merges, dequantizes when asked, and builds the dict over the shards' mappings. */
static int model_finish(model_load *ml, const td__model *m, const char *path,
                        const td_load_options *opt, td_dict **arrays, td_meta **meta, td_error *err)
{
    td__table t;
    td__table_init(&t, ml->tables[0].format);
    int rc = m ? td__model_merge(m, ml->tables, path, &t, err) : 0;
    if (!m) {
        t = ml->tables[0];
        td__table_init(&ml->tables[0], t.format);
        rc = td__model_strip_split_keys(&t, err);
    }
    if (!rc && opt->dequantize)
        rc = td__table_dequant(&t, (int)td__dequant_code(opt->dequantize), path, err);
    if (!rc)
        rc = td__table_to_dict(&t, ml->regions, ml->n, opt->threads, path, arrays, err);
    if (!rc && meta) {
        *meta = t.meta ? t.meta : td_meta_new();
        t.meta = NULL;
        if (!*meta) {
            td_dict_free(*arrays);
            *arrays = NULL;
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
        }
    }
    td__table_destroy(&t);
    return rc;
}

int td__load_model_embedded(const char *path, const td_load_options *opt, td_dict **arrays,
                            td_meta **meta, td_error *err)
{
    td_format format = opt->format;
    char *dir = NULL;
    const char *base;
    if (model_split_path(path, &dir, &base))
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        int e = errno;
        int rc = td__err(err, td__err_from_errno(e), "%s: cannot open its directory %s: %s", path,
                         dir, strerror(e));
        free(dir);
        return rc;
    }
    td__model m = {0};
    model_load ml = {0};
    uint8_t *json = NULL;
    size_t jlen = 0;
    int rc;
    if (td__model_is_hf_index(path)) {
        rc = model_read_index(path, &json, &jlen, err);
        if (!rc)
            rc = td__model_parse_hf(json, jlen, path, &m, err);
        if (!rc)
            rc = model_load_alloc(&ml, m.nfiles, path, err);
        for (size_t i = 0; !rc && i < m.nfiles; i++)
            rc = model_load_shard(&ml, i, dirfd, dir, m.files[i], TD_FORMAT_SAFETENSORS, opt, err);
        if (!rc)
            rc = model_finish(&ml, &m, path, opt, arrays, meta, err);
    } else {
        /* A GGUF file, maybe the first of a split set: index it, then its siblings. */
        rc = model_load_alloc(&ml, 1, path, err);
        if (!rc)
            rc = model_load_shard(&ml, 0, dirfd, dir, base, format, opt, err);
        if (!rc)
            rc = td__model_gguf_split(base, &ml.tables[0], &m, err);
        if (!rc && m.nfiles > 1) {
            td__region *r0 = ml.regions[0];
            td__table t0 = ml.tables[0];
            free(ml.regions);
            free(ml.tables);
            ml.n = 0;
            rc = model_load_alloc(&ml, m.nfiles, path, err);
            if (!rc) {
                ml.regions[0] = r0;
                ml.tables[0] = t0;
                ml.n = 1;
            } else {
                td__region_release(r0);
                td__table_destroy(&t0);
            }
            for (size_t i = 1; !rc && i < m.nfiles; i++)
                rc = model_load_shard(&ml, i, dirfd, dir, m.files[i], format, opt, err);
        }
        if (!rc)
            rc = model_finish(&ml, m.nfiles > 1 ? &m : NULL, path, opt, arrays, meta, err);
    }
    model_load_free(&ml);
    td__model_destroy(&m);
    free(json);
    close(dirfd);
    free(dir);
    return rc;
}
