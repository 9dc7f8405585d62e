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
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The directory of path (".", "/" or the part before the last slash) and its last component. */
static int model_split_path(const char *path, char **dir, const char **base)
{
    const char *slash = strrchr(path, '/');
    *base = slash ? slash + 1 : path;
    *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    return *dir ? 0 : TD_ENOMEM;
}

/* Reads the whole index (a regular file of at most TD__MODEL_MAX_INDEX bytes); *id receives
 * the id of what was read. */
static int model_read_index(const char *path, uint8_t **out, size_t *len, td__file_id *id,
                            td_error *err)
{
    int fd;
    uint64_t n;
    int rc = td__open_file_id(AT_FDCWD, path, path, &fd, &n, id, err);
    if (rc)
        return rc;
    rc = td__model_read_index(fd, n, path, out, len, err);
    close(fd);
    return rc;
}

void td__model_files_free(td__model_files *f)
{
    for (size_t i = 0; i < f->n; i++) {
        td__region_release(f->regions[i]);
        free(f->names[i]);
        if (f->fds && f->fds[i] >= 0)
            close(f->fds[i]);
    }
    free(f->fds);
    free(f->regions);
    free(f->names);
    free(f->sizes);
    free(f->ids);
    memset(f, 0, sizeof *f);
}

/* Room for n files; f->n counts those opened so far. */
static int model_files_alloc(td__model_files *f, size_t n, const char *path, td_error *err)
{
    td__region **r = realloc(f->regions, n * sizeof *r);
    if (r)
        f->regions = r;
    char **nm = r ? realloc(f->names, n * sizeof *nm) : NULL;
    if (nm)
        f->names = nm;
    uint64_t *sz = nm ? realloc(f->sizes, n * sizeof *sz) : NULL;
    if (sz)
        f->sizes = sz;
    td__file_id *ids = sz ? realloc(f->ids, n * sizeof *ids) : NULL;
    if (ids)
        f->ids = ids;
    int *fds = ids ? realloc(f->fds, n * sizeof *fds) : NULL;
    if (fds)
        f->fds = fds;
    if (!fds)
        return td__err(err, TD_ENOMEM, "%s: out of memory for %zu files", path, n);
    return 0;
}

/* Opens, maps when asked, and indexes file i (name in dirfd, the directory of path) as format
 * into *t. */
static int model_index_file(td__model_files *f, int mapped, int dirfd, const char *path,
                            const char *name, td_format format, const td_load_options *opt,
                            td__table *t, td_error *err)
{
    size_t i = f->n;
    f->regions[i] = NULL;
    f->sizes[i] = 0;
    memset(&f->ids[i], 0, sizeof f->ids[i]);
    f->fds[i] = -1;
    if (!(f->names[i] = strdup(name)))
        return td__err(err, TD_ENOMEM, "%s: out of memory", name);
    f->n++;
    td__table_init(t, format);
    char *label = td__model_file_label(path, name);
    if (!label)
        return td__err(err, TD_ENOMEM, "%s: out of memory", name);
    void *base = NULL;
    size_t len = 0;
    uint64_t size = 0;
    int fd = -1;
    int rc = td__open_file_id(dirfd, name, label, &fd, &size, &f->ids[i], err);
    if (!rc && mapped == 1) {
        rc = td__map_fd(fd, size, label, &base, &len, err);
        if (!rc && !(f->regions[i] = td__region_mmap(base, len))) {
            munmap(base, len);
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", label);
        }
    }
    if (!rc) {
        f->sizes[i] = size;
        if (mapped == 1) {
            rc = td__index(format, TD__RD_MEM(base, len, label), opt->max_inflated, t, err);
        } else {
            td__rd rd;
            td__rd_fd(&rd, fd, size, UINT64_MAX, label);
            rc = td__index(format, &rd, opt->max_inflated, t, err);
            td__rd_close(&rd);
        }
    }
    if (fd >= 0 && mapped == TD__MODEL_KEEP_FDS)
        f->fds[i] = fd; /* the caller's now */
    else if (fd >= 0)
        close(fd);
    free(label);
    return rc;
}

int td__model_index_files(const char *path, const td_load_options *opt, int mapped,
                          td__model_files *files, td__table *out, td_error *err)
{
    char *dir = NULL;
    const char *base;
    td__table_init(out, opt->format);
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
    td__table *tables = NULL;
    uint8_t *json = NULL;
    size_t jlen = 0, ntables = 0;
    int rc;
    if (td__model_is_hf_index(path)) {
        rc = model_read_index(path, &json, &jlen, &files->index_id, err);
        files->has_index = !rc;
        if (!rc)
            rc = td__model_parse_hf(json, jlen, path, &m, err);
    } else {
        /* A GGUF file, maybe the first of a split set: index it, then its siblings. */
        rc = 0;
    }
    size_t count = m.kind == TD__MODEL_HF ? m.nfiles : 1;
    if (!rc && !(tables = calloc(count, sizeof *tables)))
        rc = td__err(err, TD_ENOMEM, "%s: out of memory for %zu files", path, count);
    if (!rc)
        rc = model_files_alloc(files, count, path, err);
    if (!rc && m.kind == TD__MODEL_HF) {
        for (size_t i = 0; !rc && i < m.nfiles; i++, ntables++)
            rc = model_index_file(files, mapped, dirfd, path, m.files[i], TD_FORMAT_SAFETENSORS,
                                  opt, &tables[i], err);
    } else if (!rc) {
        rc = model_index_file(files, mapped, dirfd, path, base, opt->format, opt, &tables[0], err);
        ntables = 1;
        if (!rc)
            rc = td__model_gguf_split(base, &tables[0], &m, err);
        if (!rc && m.nfiles > 1) {
            td__table *more = realloc(tables, m.nfiles * sizeof *more);
            if (!more)
                rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
            else
                tables = more;
            if (!rc)
                rc = model_files_alloc(files, m.nfiles, path, err);
            for (size_t i = 1; !rc && i < m.nfiles; i++, ntables++)
                rc = model_index_file(files, mapped, dirfd, path, m.files[i], opt->format, opt,
                                      &tables[i], err);
        }
    }
    if (!rc && (m.kind == TD__MODEL_HF || m.nfiles > 1)) {
        rc = td__model_merge(&m, tables, path, out, err);
    } else if (!rc) {
        td__table_destroy(out);
        *out = tables[0];
        td__table_init(&tables[0], out->format);
        rc = td__model_strip_split_keys(out, err);
    }
    for (size_t i = 0; i < ntables; i++)
        td__table_destroy(&tables[i]);
    free(tables);
    td__model_destroy(&m);
    free(json);
    close(dirfd);
    free(dir);
    return rc;
}

int td__load_model_embedded(const char *path, const td_load_options *opt, td_dict **arrays,
                            td_meta **meta, td_error *err)
{
    td__model_files f = {0};
    td__table t;
    int rc = td__model_index_files(path, opt, 1, &f, &t, err);
    if (!rc)
        rc = td__table_finish(&t, f.regions, f.n, opt, path, arrays, meta, err);
    td__table_destroy(&t);
    td__model_files_free(&f); /* the arrays hold their own references */
    return rc;
}
