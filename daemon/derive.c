/*
 * derive.c - see derive.h.
 */
#include "derive.h"
#include "log.h"
#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int td__derive_memfd(const char *name, uint64_t size, int *fd, void **map, td_error *err)
{
    if (size == 0 || size > SIZE_MAX)
        return td__err(err, TD_EINVAL, "derived buffer of %llu bytes", (unsigned long long)size);
    /* memfd names hold 249 bytes: a longer name keeps its end, where the file's name is. */
    char label[249];
    const char *n = name ? name : "buffer";
    size_t len = strlen(n);
    snprintf(label, sizeof label, "tensord:%s%s", len > 230 ? "..." : "",
             len > 230 ? n + len - 230 : n);
    int f = memfd_create(label, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (f < 0) {
        int e = errno;
        return td__err(err, td__err_from_errno(e), "memfd_create: %s", strerror(e));
    }
    if (ftruncate(f, (off_t)size) < 0) {
        int e = errno;
        close(f);
        return td__err(err, td__err_from_errno(e), "memfd of %llu bytes: %s",
                       (unsigned long long)size, strerror(e));
    }
    void *p = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(f);
        return td__err(err, td__err_from_errno(e), "mapping a memfd of %llu bytes: %s",
                       (unsigned long long)size, strerror(e));
    }
    if (size >= (2u << 20))
        madvise(p, (size_t)size, MADV_HUGEPAGE); /* advisory: shmem THP may be off */
    *fd = f;
    *map = p;
    return 0;
}

int td__derive_seal(int fd, void *map, uint64_t size, td_error *err)
{
    /* F_SEAL_WRITE is refused while a writable shared mapping exists: unmap first. */
    if (map && munmap(map, (size_t)size) < 0) {
        int e = errno;
        return td__err(err, TD_ESYS, "munmap: %s", strerror(e));
    }
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL) < 0) {
        int e = errno;
        return td__err(err, TD_ESYS, "sealing a memfd: %s", strerror(e));
    }
    return 0;
}

int td__derive_snapshot(int src_fd, uint64_t size, const char *name, int *fd, td_error *err)
{
    void *p = NULL;
    int f = -1;
    int rc = td__derive_memfd(name, size, &f, &p, err);
    if (rc)
        return rc;
    rc = td__pread_all(src_fd, p, size, 0, name, err);
    if (!rc)
        rc = td__derive_seal(f, p, size, err);
    else
        munmap(p, (size_t)size);
    if (rc) {
        close(f);
        return rc;
    }
    *fd = f;
    return 0;
}
