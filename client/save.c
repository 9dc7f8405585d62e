/*
 * save.c - the save verbs: extension handling, MLX's naming rules, and atomic files.
 *
 * A save writes an unnamed file (O_TMPFILE) in the target's directory, fsyncs it, links it
 * under a temporary name, renames that over the target and fsyncs the directory. A save killed
 * at any moment leaves no file behind, except in the instant between the link and the rename.
 * On a file system without O_TMPFILE (or where the unnamed file cannot be linked: no /proc, and
 * a kernel that refuses linkat(AT_EMPTY_PATH) to this process) the temporary is a named file from
 * the start (O_EXCL), so a killed save leaves it behind. Temporaries are named "TARGET.tmp-" and 16
 * hex digits, an extension no loader takes. Either way the new file has mode 0666 minus the umask,
 * like any new file, and any failure removes the temporary and leaves an existing target untouched.
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

/* Writes job to fd (borrowed) and fsyncs it. */
static int td__write_fd(int fd, const char *path, const td__save_job *job, td_error *err)
{
    td__writer w;
    int rc = td__writer_init(&w, fd, path, err);
    if (!rc)
        rc = td__write_job(&w, job, path, err);
    if (!rc)
        rc = td__writer_flush(&w);
    td__writer_destroy(&w);
    if (!rc && fsync(fd) < 0) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: fsync failed: %s", path, strerror(e));
    }
    return rc;
}

/* Puts a fresh temporary name for base in tmp (cap bytes): "BASE.tmp-" and 16 hex digits, an
 * extension no loader takes. */
static void td__tmp_name(char *tmp, size_t cap, const char *base, int tries)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, GRND_NONBLOCK) != sizeof r)
        r = ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&r ^ (uint64_t)tries;
    snprintf(tmp, cap, "%s.tmp-%016llx", base, (unsigned long long)r);
}

/* Gives the unnamed file fd a temporary name in dirfd (tmp receives it), right before the
 * rename: linkat(AT_EMPTY_PATH) where the kernel allows it (recent kernels to the process that
 * opened the file, older ones only with CAP_DAC_READ_SEARCH), else through /proc/self/fd (any
 * user). AT_EMPTY_PATH comes first because it is the quicker call (about half), which halves the
 * window in which a kill leaves the name behind. Returns 0, 1 when neither way is open to this
 * process (nothing set in err), or a negative code. */
static int td__link_unnamed(int fd, int dirfd, const char *base, char *tmp, size_t cap,
                            td__save_way way, const char *path, td_error *err)
{
    char proc[64];
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    int by_fd = way == TD__SAVE_AUTO;
    int by_proc = way != TD__SAVE_NO_LINK;
    for (int tries = 0; tries < 16; tries++) {
        td__tmp_name(tmp, cap, base, tries);
        int rc = -1;
        if (by_fd) {
            rc = linkat(fd, "", dirfd, tmp, AT_EMPTY_PATH);
            if (rc < 0 && (errno == ENOENT || errno == EPERM))
                by_fd = 0; /* not allowed here: /proc with the same name */
        }
        if (rc < 0 && !by_fd && by_proc) {
            rc = linkat(AT_FDCWD, proc, dirfd, tmp, AT_SYMLINK_FOLLOW);
            if (rc < 0 && (errno == ENOENT || errno == EPERM))
                by_proc = 0; /* no /proc here */
        }
        if (rc == 0)
            return 0;
        if (!by_fd && !by_proc)
            return 1;
        if (errno != EEXIST)
            break;
    }
    int e = errno;
    return td__err(err, td__err_from_errno(e), "%s: cannot link the temporary file: %s", path,
                   strerror(e));
}

/* The usual way: an unnamed file (O_TMPFILE) in the target's directory, written and fsynced,
 * then linked under a temporary name and renamed over base. Until the link, a killed process
 * leaves nothing: the kernel frees an unnamed file with its last descriptor. Returns 1 (nothing
 * set in err) when the file system has no O_TMPFILE or the file cannot be linked: the caller
 * then saves with a named temporary. */
static int td__save_unnamed(int dirfd, const char *dir, const char *base, const char *path,
                            const td__save_job *job, td_error *err)
{
    if (job->way == TD__SAVE_NAMED)
        return 1;
    /* 0666 minus the umask (and the directory's default ACL), like any new file. */
    int fd = openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
    if (fd < 0) {
        int e = errno;
        /* EOPNOTSUPP: a file system without O_TMPFILE; EISDIR, EINVAL: a kernel without it. */
        if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL)
            return 1;
        return td__err(err, td__err_from_errno(e), "%s: cannot create a temporary file in %s: %s",
                       path, dir, strerror(e));
    }
    size_t cap = strlen(base) + 32;
    char *tmp = malloc(cap);
    int rc =
        tmp ? td__write_fd(fd, path, job, err) : td__err(err, TD_ENOMEM, "%s: out of memory", path);
    /* Nothing between the link and the rename: a kill in that instant leaves the name. */
    if (!rc)
        rc = td__link_unnamed(fd, dirfd, base, tmp, cap, job->way, path, err);
    if (!rc && renameat(dirfd, tmp, dirfd, base) < 0) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: cannot rename the temporary file: %s", path,
                     strerror(e));
        unlinkat(dirfd, tmp, 0);
    }
    close(fd); /* written and fsynced: nothing close could report is lost */
    free(tmp);
    return rc;
}

/* The fallback: a named temporary "BASE.tmp-XXXXXXXXXXXXXXXX" (O_EXCL) written, fsynced and
 * renamed over base. A killed process leaves the temporary behind. */
static int td__save_named(int dirfd, const char *base, const char *path, const td__save_job *job,
                          td_error *err)
{
    size_t cap = strlen(base) + 32;
    char *tmp = malloc(cap);
    if (!tmp)
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    int fd = -1, rc = 0;
    for (int tries = 0; fd < 0 && tries < 16; tries++) {
        td__tmp_name(tmp, cap, base, tries);
        fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
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
    rc = td__write_fd(fd, path, job, err);
    if (close(fd) < 0 && !rc) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: close failed: %s", path, strerror(e));
    }
    if (!rc && renameat(dirfd, tmp, dirfd, base) < 0) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: cannot rename the temporary file: %s", path,
                     strerror(e));
    }
    if (rc)
        unlinkat(dirfd, tmp, 0);
    free(tmp);
    return rc;
}

int td__save_atomic(const char *path, const td__save_job *job, td_error *err)
{
    /* The directory ("." for a bare name, "/" for a name in /) and the name in it. */
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    size_t dlen = !slash ? 1 : slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(dlen + 1);
    if (!dir)
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    memcpy(dir, !slash ? "." : path, dlen);
    dir[dlen] = '\0';
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0) {
        int e = errno;
        int rc = td__err(err, td__err_from_errno(e), "%s: cannot open directory %s: %s", path, dir,
                         strerror(e));
        free(dir);
        return rc;
    }
    int rc = td__save_unnamed(dirfd, dir, base, path, job, err);
    if (rc == 1)
        rc = td__save_named(dirfd, base, path, job, err);
    /* The rename is durable once the directory is. */
    if (!rc && fsync(dirfd) < 0 && errno != EINVAL) {
        int e = errno;
        rc = td__err(err, td__err_from_errno(e), "%s: fsync failed: %s", dir, strerror(e));
    }
    close(dirfd);
    free(dir);
    return rc;
}

/* Collects the dict's entries as writer items. With arr_names, unnamed entries become arr_K
 * (K counting unnamed entries) and a named entry that takes one of those names is refused, as
 * MLX's savez does; without, unnamed entries are refused. names receives the malloc'd arr_K
 * strings to free. */
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
                         const td_meta *meta, int compressed, td__save_way way, td_error *err)
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
        td__save_job job = {format, items, n, meta, compressed, NULL, 0, way};
        rc = td__save_atomic(full, &job, err);
    }
    for (size_t i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
    free(items);
    free(full);
    return rc;
}

static int td__save_array(const char *path, const td_array *a, td__save_way way, td_error *err)
{
    if (!path || !a)
        return td__err(err, TD_EINVAL, "[save] path and array must not be NULL");
    char *full = td__with_ext(path, ".npy");
    if (!full)
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    td__item item;
    td__array_item(a, NULL, &item);
    td__save_job job = {TD_FORMAT_NPY, &item, 1, NULL, 0, NULL, 0, way};
    int rc = td__save_atomic(full, &job, err);
    free(full);
    return rc;
}

int td_savez(const char *path, const td_dict *arrays, td_error *err)
{
    return td__save_dict(path, ".npz", TD_FORMAT_NPZ, arrays, NULL, 0, TD__SAVE_AUTO, err);
}

int td_savez_compressed(const char *path, const td_dict *arrays, td_error *err)
{
    return td__save_dict(path, ".npz", TD_FORMAT_NPZ, arrays, NULL, 1, TD__SAVE_AUTO, err);
}

int td_save_safetensors(const char *path, const td_dict *arrays, const td_meta *meta, td_error *err)
{
    return td__save_dict(path, ".safetensors", TD_FORMAT_SAFETENSORS, arrays, meta, 0,
                         TD__SAVE_AUTO, err);
}

int td_save_gguf(const char *path, const td_dict *arrays, const td_meta *meta, td_error *err)
{
    return td__save_dict(path, ".gguf", TD_FORMAT_GGUF, arrays, meta, 0, TD__SAVE_AUTO, err);
}

int td_save(const char *path, const td_array *a, td_error *err)
{
    return td__save_array(path, a, TD__SAVE_AUTO, err);
}

int td__save_with_way(td_format format, int compressed, const char *path, const td_dict *arrays,
                      td__save_way way, td_error *err)
{
    switch (format) {
    case TD_FORMAT_NPY:
        return td__save_array(
            path, arrays && td_dict_size(arrays) == 1 ? td_dict_at(arrays, 0, NULL) : NULL, way,
            err);
    case TD_FORMAT_NPZ:
        return td__save_dict(path, ".npz", format, arrays, NULL, compressed, way, err);
    case TD_FORMAT_SAFETENSORS:
        return td__save_dict(path, ".safetensors", format, arrays, NULL, 0, way, err);
    case TD_FORMAT_GGUF:
        return td__save_dict(path, ".gguf", format, arrays, NULL, 0, way, err);
    default:
        return td__err(err, TD_EINVAL, "%s: unknown format %d", path ? path : "", (int)format);
    }
}
