/*
 * save.c - the save verbs: extension handling, MLX's naming rules, and atomic files.
 *
 * A save writes a temporary file in the target's directory (created with O_EXCL, mode 0666
 * minus the umask, like any new file), fsyncs it, renames it over the target and fsyncs the
 * directory. Any failure unlinks the temporary and leaves an existing target untouched.
 */
#include "client.h"
#include "common.h"
#include "gguf.h"
#include "npy.h"
#include "npz.h"
#include "safetensors.h"
#include "writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <unistd.h>

static int td__write_job(td__writer *w, const td__save_job *job, const char *path, td_error *err)
{
    switch (job->format) {
    case TD_FORMAT_NPY:
        return td__npy_write(w, &job->items[0], path, err);
    case TD_FORMAT_NPZ:
        return td__npz_write(w, job->items, job->n, job->compressed, path, err);
    case TD_FORMAT_SAFETENSORS:
        return td__st_write(w, job->items, job->n, job->meta, path, err);
    case TD_FORMAT_GGUF:
        return td__gguf_write(w, job->items, job->n, job->meta, path, err);
    case TD_FORMAT_AUTO:
        return td__writer_write(w, job->raw, job->raw_len);
    default:
        return td__err(err, TD_EINVAL, "%s: unknown format", path);
    }
}

/* path + ext unless path already ends in ext; malloc'd. */
static char *td__with_ext(const char *path, const char *ext)
{
    size_t n = strlen(path), e = strlen(ext);
    int has = n >= e && strcmp(path + n - e, ext) == 0;
    char *s = malloc(n + e + 1);
    if (s) {
        memcpy(s, path, n);
        memcpy(s + n, ext, has ? 0 : e);
        s[n + (has ? 0 : e)] = '\0';
    }
    return s;
}

/* fsyncs the directory holding path, so that the rename is durable. */
static int td__sync_dir(const char *path, td_error *err)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return td__err(err, td__err_from_errno(e), "%s: cannot open directory: %s", dir,
                       strerror(e));
    }
    int rc = 0;
    if (fsync(fd) < 0 && errno != EINVAL) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: fsync failed: %s", dir, strerror(e));
    }
    close(fd);
    return rc;
}

int td__save_atomic(const char *path, const td__save_job *job, td_error *err)
{
    size_t n = strlen(path);
    char *tmp = malloc(n + 32);
    if (!tmp)
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    int fd = -1, rc = 0;
    for (int tries = 0; fd < 0 && tries < 16; tries++) {
        uint64_t r = 0;
        if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
            r = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&r ^ (uint64_t)tries;
        snprintf(tmp, n + 32, "%s.tmp-%016llx", path, (unsigned long long)r);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: cannot create a temporary file: %s", path,
                     strerror(e));
        free(tmp);
        return rc;
    }
    td__writer w;
    rc = td__writer_init(&w, fd, path, err);
    if (!rc)
        rc = td__write_job(&w, job, path, err);
    if (!rc)
        rc = td__writer_flush(&w);
    td__writer_destroy(&w);
    if (!rc && fsync(fd) < 0) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: fsync failed: %s", path, strerror(e));
    }
    if (close(fd) < 0 && !rc) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: close failed: %s", path, strerror(e));
    }
    if (!rc && rename(tmp, path) < 0) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: cannot rename the temporary file: %s", path,
                     strerror(e));
    }
    if (rc)
        unlink(tmp);
    else
        rc = td__sync_dir(path, err);
    free(tmp);
    return rc;
}

int td__save_collect(const td_dict *d, const char *path, int arr_names, td__item **items,
                     char ***names, td_error *err)
{
    size_t n = td_dict_size(d);
    *items = calloc(n ? n : 1, sizeof **items);
    *names = calloc(n ? n : 1, sizeof **names);
    if (!*items || !*names)
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    size_t unnamed = 0;
    for (size_t i = 0; i < n; i++) {
        const char *name;
        const td_array *a = td_dict_at(d, i, &name);
        if (!name) {
            if (!arr_names)
                return td__err(err, TD_EINVAL,
                               "%s: entry %zu has no name (only savez names "
                               "unnamed arrays)",
                               path, i);
            char buf[32];
            snprintf(buf, sizeof buf, "arr_%zu", unnamed++);
            if (td_dict_get(d, buf))
                return td__err(err, TD_EDUP,
                               "%s: cannot use un-named variables and keyword %s together", path,
                               buf);
            if (!((*names)[i] = strdup(buf)))
                return td__err(err, TD_ENOMEM, "%s: out of memory", path);
            name = (*names)[i];
        }
        td__array_item(a, name, &(*items)[i]);
    }
    return 0;
}

static int td__save_dict(const char *path, const char *ext, td_format format, const td_dict *arrays,
                         const td_meta *meta, int compressed, td_error *err)
{
    if (!path || !arrays)
        return td__err(err, TD_EINVAL, "[save] path and arrays must not be NULL");
    char *full = td__with_ext(path, ext);
    td__item *items = NULL;
    char **names = NULL;
    size_t n = td_dict_size(arrays);
    int rc = full ? 0 : td__err(err, TD_ENOMEM, "%s: out of memory", path);
    if (!rc)
        rc = td__save_collect(arrays, full, format == TD_FORMAT_NPZ, &items, &names, err);
    if (!rc) {
        td__save_job job = {format, items, n, meta, compressed, NULL, 0};
        rc = td__save_atomic(full, &job, err);
    }
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(items);
    free(full);
    return rc;
}

int td_save(const char *path, const td_array *a, td_error *err)
{
    if (!path || !a)
        return td__err(err, TD_EINVAL, "[save] path and array must not be NULL");
    char *full = td__with_ext(path, ".npy");
    if (!full)
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    td__item item;
    td__array_item(a, NULL, &item);
    td__save_job job = {TD_FORMAT_NPY, &item, 1, NULL, 0, NULL, 0};
    int rc = td__save_atomic(full, &job, err);
    free(full);
    return rc;
}

int td_savez(const char *path, const td_dict *arrays, td_error *err)
{
    return td__save_dict(path, ".npz", TD_FORMAT_NPZ, arrays, NULL, 0, err);
}

int td_savez_compressed(const char *path, const td_dict *arrays, td_error *err)
{
    return td__save_dict(path, ".npz", TD_FORMAT_NPZ, arrays, NULL, 1, err);
}

int td_save_safetensors(const char *path, const td_dict *arrays, const td_meta *meta, td_error *err)
{
    return td__save_dict(path, ".safetensors", TD_FORMAT_SAFETENSORS, arrays, meta, 0, err);
}

int td_save_gguf(const char *path, const td_dict *arrays, const td_meta *meta, td_error *err)
{
    return td__save_dict(path, ".gguf", TD_FORMAT_GGUF, arrays, meta, 0, err);
}
