/*
 * cache.c - see cache.h.
 *
 * An entry's life: td__cache_acquire creates it (LOADING) and queues td__cache_build on the thread
 * pool; td__cache_built, back on the loop, makes it READY and hands a lease to every waiter, or
 * fails the waiters and frees it. While LOADING only the worker touches the build fields; the loop
 * thread touches only the list links and the waiters.
 */
#include "cache.h"
#include "derive.h"
#include "log.h"
#include "proto.h"
#include "index.h"
#include "dequant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef enum { CACHE_LOADING, CACHE_READY } td__cache_state;

struct td__cache_entry {
    td__cache_entry *prev, *next;
    td__cache *cache;
    td__cache_key key;
    td__cache_state state;
    char *name; /* the file's path (from /proc/self/fd) or the client's name for it */
    char *path; /* the path to watch, or NULL */
    td_format format;
    uint32_t mode;
    uint64_t max_inflated;
    int file_fd;   /* the first client's descriptor, kept while building */
    int snap_fd;   /* snapshot memfd, or -1 */
    void *pin_map; /* pin mode: the file mapping kept resident */
    uint64_t file_size;
    int derived_fd; /* sealed memfd of decoded entries, or -1 */
    uint64_t derived_len;
    td__table table;
    uint8_t *reply_tail; /* the table as LOAD_OK encodes it for peers with reply_lim */
    size_t reply_tail_len;
    td__proto_limits reply_lim;
    uint64_t leases, loads, hits;
    uint64_t last_use; /* uv_now() */
    uint64_t decode_ns;
    int superseded;
    int status; /* of the build */
    td_error err;
    td__cache_waiter waiters; /* list head */
    uv_work_t work;
    uv_fs_event_t *watch;
};

static uint64_t td__cache_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void td__cache_init(td__cache *c, uv_loop_t *loop, const td__config *cfg)
{
    memset(c, 0, sizeof *c);
    c->loop = loop;
    c->cfg = cfg;
}

int td__cache_idle(const td__cache *c)
{
    return c->building == 0;
}

static void td__cache_unlink(td__cache *c, td__cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->tail = e->prev;
    e->prev = e->next = NULL;
    c->n--;
}

static void td__cache_push_front(td__cache *c, td__cache_entry *e)
{
    e->prev = NULL;
    e->next = c->head;
    if (c->head)
        c->head->prev = e;
    else
        c->tail = e;
    c->head = e;
    c->n++;
}

static void td__cache_watch_closed(uv_handle_t *h)
{
    free(h);
}

/* Frees an entry already unlinked from the list. */
static void td__cache_free(td__cache_entry *e)
{
    if (e->file_fd >= 0)
        close(e->file_fd);
    if (e->snap_fd >= 0)
        close(e->snap_fd);
    if (e->derived_fd >= 0)
        close(e->derived_fd);
    if (e->pin_map)
        munmap(e->pin_map, (size_t)e->file_size);
    if (e->watch && !uv_is_closing((uv_handle_t *)e->watch))
        uv_close((uv_handle_t *)e->watch, td__cache_watch_closed);
    td__table_destroy(&e->table);
    free(e->reply_tail);
    free(e->name);
    free(e->path);
    free(e);
}

/* Bytes an entry holds in the daemon: its snapshot and derived buffers (a pinned file counts
 * too: it is locked in memory for us). */
static uint64_t td__cache_held(const td__cache_entry *e)
{
    return (e->snap_fd >= 0 || e->pin_map ? e->file_size : 0) + e->derived_len + e->reply_tail_len;
}

static void td__cache_drop(td__cache *c, td__cache_entry *e, const char *why)
{
    td__log_info("evict %s (%s, %llu bytes)", e->name, why, (unsigned long long)td__cache_held(e));
    c->bytes -= td__cache_held(e);
    c->stats.evictions++;
    td__cache_unlink(c, e);
    td__cache_free(e);
}

void td__cache_destroy(td__cache *c)
{
    while (c->head) {
        td__cache_entry *e = c->head;
        td__cache_unlink(c, e);
        td__cache_free(e);
    }
    c->bytes = 0;
}

int td__cache_key_of(int fd, uint32_t dequant, td__cache_key *key, td_error *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return td__err(err, TD_EINVAL, "the descriptor cannot be examined: %s", strerror(errno));
    if (!S_ISREG(st.st_mode))
        return td__err(err, TD_EINVAL, "the descriptor is not a regular file (mode 0%o)",
                       (unsigned)(st.st_mode & S_IFMT));
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (fl & O_PATH) || (fl & O_ACCMODE) == O_WRONLY)
        return td__err(err, TD_EACCES, "the descriptor is not open for reading");
    if (st.st_size <= 0)
        return td__err(err, TD_ETRUNC, "the file is empty");
    memset(key, 0, sizeof *key);
    key->dev = (uint64_t)st.st_dev;
    key->ino = (uint64_t)st.st_ino;
    key->size = (uint64_t)st.st_size;
    key->mtime_sec = (int64_t)st.st_mtim.tv_sec;
    key->mtime_nsec = (int64_t)st.st_mtim.tv_nsec;
    key->dequant = dequant;
    return 0;
}

static int td__cache_same_file(const td__cache_key *a, const td__cache_key *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec;
}

/* ---- building, on the thread pool ---- */

/* Decodes t from a private copy of its stored bytes, read from the file with pread. A file
 * that turns out shorter is TD_ETRUNC, cleanly. */
static int td__cache_decode_copy(td__cache_entry *e, const td__entry *t, uint8_t *dst,
                                 td_error *err)
{
    uint64_t n = t->src.nbytes;
    if (n > SIZE_MAX)
        return td__err(err, TD_ERANGE, "%s: tensor '%s': %llu stored bytes", e->name,
                       t->name ? t->name : "", (unsigned long long)n);
    uint8_t *buf = malloc(n ? (size_t)n : 1);
    if (!buf)
        return td__err(err, TD_ENOMEM, "%s: tensor '%s': out of memory for %llu bytes", e->name,
                       t->name ? t->name : "", (unsigned long long)n);
    int rc = td__pread_all(e->file_fd, buf, n, t->src.offset, e->name, err);
    if (!rc) {
        td__entry local = *t; /* the same entry, its stored bytes now at the start of buf */
        local.src.offset = 0;
        rc = td__decode_entry(&local, buf, (size_t)n, dst, e->name, err);
    }
    free(buf);
    return rc;
}

/* Lays out, decodes and seals every entry that cannot be viewed as stored: from r's mapping
 * when it is a mapped reader (a sealed snapshot), else from pread copies of the client's file. */
static int td__cache_decode(td__cache_entry *e, const td__rd *r, td_error *err)
{
    uint64_t total = 0;
    for (size_t i = 0; i < e->table.n; i++) {
        td__entry *t = &e->table.entries[i];
        if (!t->layout || !t->nbytes)
            continue;
        total = (total + 63) / 64 * 64;
        if (!td__add_u64(total, t->nbytes, &total))
            return td__err(err, TD_ERANGE, "%s: decoded size overflows", e->name);
    }
    uint64_t budget = e->cache->cfg->max_memory;
    if (budget && total > budget)
        return td__err(err, TD_ELIMIT, "%s: decoding needs %llu bytes, over the budget of %llu",
                       e->name, (unsigned long long)total, (unsigned long long)budget);
    if (!total) {
        for (size_t i = 0; i < e->table.n; i++)
            if (e->table.entries[i].layout) /* empty arrays: nothing to decode */
                e->table.entries[i].layout = 0, e->table.entries[i].offset = 0;
        return 0;
    }
    void *map;
    int fd, rc = td__derive_memfd(e->name, total, &fd, &map, err);
    if (rc)
        return rc;
    uint64_t off = 0;
    for (size_t i = 0; i < e->table.n && !rc; i++) {
        td__entry *t = &e->table.entries[i];
        if (!t->layout)
            continue;
        if (!t->nbytes) {
            t->layout = 0;
            t->offset = 0;
            continue;
        }
        off = (off + 63) / 64 * 64;
        if (r->base) {
            /* A sealed snapshot cannot shrink: decode straight from its mapping. */
            rc = td__decode_entry(t, r->base, (size_t)r->len, (uint8_t *)map + off, e->name, err);
        } else {
            /* The client's file can shrink at any moment: read the stored bytes with pread, so
             * that the decoders (and what they allocate) never meet a SIGBUS. */
            rc = td__cache_decode_copy(e, t, (uint8_t *)map + off, err);
        }
        t->region = 1;
        t->offset = off;
        t->layout = 0;
        off += t->nbytes;
    }
    if (!rc)
        rc = td__derive_seal(fd, map, total, err);
    else
        munmap(map, (size_t)total);
    if (rc) {
        close(fd);
        return rc;
    }
    e->derived_fd = fd;
    e->derived_len = total;
    return 0;
}

/* Indexes the file r reads into e->table, then derives what needs deriving. */
static int td__cache_index(td__cache_entry *e, td__rd *r, td_error *err)
{
    int rc = 0;
    if (e->format == TD_FORMAT_AUTO) {
        const uint8_t *head;
        uint64_t n = r->len < 9 ? r->len : 9; /* enough for every magic number */
        if ((rc = td__rd_get(r, 0, n, &head, err)))
            return rc;
        e->format = td__detect_format(head, (size_t)n);
    }
    td__table_init(&e->table, e->format);
    if (e->format == TD_FORMAT_AUTO)
        return td__err(err, TD_ENOTSUP, "%s: not a file format tensord knows", e->name);
    rc = td__index(e->format, r, e->max_inflated, &e->table, err);
    if (!rc && e->key.dequant)
        rc = td__table_dequant(&e->table, (int)e->key.dequant, e->name, err);
    if (!rc)
        rc = td__cache_decode(e, r, err);
    return rc;
}

/* Keeps a pinned file's pages resident. The mapping is never read here (mlock and madvise
 * fault pages in inside the kernel, which reports a shrunken file as an error, not a signal). */
static void td__cache_pin(td__cache_entry *e)
{
    void *map = mmap(NULL, (size_t)e->file_size, PROT_READ, MAP_SHARED, e->file_fd, 0);
    if (map == MAP_FAILED) {
        td__log_warn("%s: pin: cannot map %llu bytes (%s); not pinned", e->name,
                     (unsigned long long)e->file_size, strerror(errno));
        return;
    }
    madvise(map, (size_t)e->file_size, MADV_WILLNEED);
    if (mlock(map, (size_t)e->file_size) < 0)
        td__log_warn("%s: pin: mlock of %llu bytes refused (%s); kept mapped, not locked", e->name,
                     (unsigned long long)e->file_size, strerror(errno));
    e->pin_map = map;
}

/* Runs on a worker thread. The client's file can be truncated or rewritten at any moment, so
 * the daemon reads it only with pread (a descriptor reader for the metadata, copies for what
 * is decoded): a shrunken file is a clean TD_ETRUNC, never a SIGBUS. A sealed snapshot cannot
 * change and is read in place through a mapping. */
static void td__cache_build(uv_work_t *w)
{
    td__cache_entry *e = w->data;
    td_error *err = &e->err;
    uint64_t t0 = td__cache_now_ns();
    int rc = 0;
    void *snap = MAP_FAILED;
    td__rd rd;
    if (e->mode == TD__PROTO_MODE_SNAPSHOT) {
        rc = td__derive_snapshot(e->file_fd, e->file_size, e->name, &e->snap_fd, err);
        if (!rc && (snap = mmap(NULL, (size_t)e->file_size, PROT_READ, MAP_SHARED, e->snap_fd,
                                0)) == MAP_FAILED)
            rc = td__err(err, td__err_from_errno(errno), "%s: cannot map the snapshot: %s", e->name,
                         strerror(errno));
    }
    if (snap != MAP_FAILED)
        rd = *TD__RD_MEM(snap, e->file_size, e->name);
    else
        td__rd_fd(&rd, e->file_fd, e->file_size, 0, e->name);
    if (!rc)
        rc = td__cache_index(e, &rd, err);
    td__rd_close(&rd);
    if (!rc && e->mode == TD__PROTO_MODE_PIN)
        td__cache_pin(e);
    if (snap != MAP_FAILED)
        munmap(snap, (size_t)e->file_size);
    e->status = rc;
    e->decode_ns = td__cache_now_ns() - t0;
}

static void td__cache_watch_cb(uv_fs_event_t *h, const char *filename, int events, int status);

static void td__cache_built(uv_work_t *w, int status)
{
    td__cache_entry *e = w->data;
    td__cache *c = e->cache;
    c->building--;
    if (status == UV_ECANCELED && !e->status)
        e->status = td__err(&e->err, TD_EAGAIN, "%s: load cancelled", e->name);
    /* The first client's descriptor is not needed any more: in map and pin mode each client
     * maps its own. */
    if (e->file_fd >= 0) {
        close(e->file_fd);
        e->file_fd = -1;
    }
    td__cache_waiter *q = e->waiters.next;
    e->waiters.next = e->waiters.prev = &e->waiters;
    if (e->status) {
        td__log_warn("load %s failed: %s", e->name, e->err.message);
        td__cache_unlink(c, e);
        while (q != &e->waiters) {
            td__cache_waiter *next = q->next;
            q->next = q->prev = NULL;
            q->entry = NULL;
            q->done(q, NULL, e->status, &e->err);
            q = next;
        }
        td__cache_free(e);
        return;
    }
    e->state = CACHE_READY;
    e->last_use = uv_now(c->loop);
    c->bytes += td__cache_held(e);
    c->stats.decodes += e->derived_len || e->snap_fd >= 0;
    c->stats.decode_ns_total += e->decode_ns;
    if (e->decode_ns > c->stats.decode_ns_max)
        c->stats.decode_ns_max = e->decode_ns;
    td__log_info("indexed %s: %s, %zu tensors, mode %s, %llu derived bytes, %.1f ms", e->name,
                 td_format_name(e->table.format), e->table.n, td__config_mode_name(e->mode),
                 (unsigned long long)e->derived_len, (double)e->decode_ns / 1e6);
    if (e->path) {
        e->watch = malloc(sizeof *e->watch);
        if (e->watch && uv_fs_event_init(c->loop, e->watch) == 0) {
            e->watch->data = e;
            if (uv_fs_event_start(e->watch, td__cache_watch_cb, e->path, 0) != 0) {
                uv_close((uv_handle_t *)e->watch, td__cache_watch_closed);
                e->watch = NULL;
            }
        } else {
            free(e->watch);
            e->watch = NULL;
        }
    }
    int first = 1;
    while (q != &e->waiters) {
        td__cache_waiter *next = q->next;
        q->next = q->prev = NULL;
        q->entry = NULL;
        e->leases++;
        e->loads++;
        if (!first) {
            e->hits++;
            c->stats.hits++;
        }
        first = 0;
        q->done(q, e, 0, NULL);
        q = next;
    }
    td__cache_enforce_budget(c);
}

/* The file behind an entry changed on disk: if the path now names another file (replaced by
 * rename, rewritten), the entry is superseded and goes as soon as nobody holds it. */
static void td__cache_watch_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)filename;
    (void)events;
    td__cache_entry *e = h->data;
    if (status < 0 || !e->path)
        return;
    struct stat st;
    int gone = stat(e->path, &st) < 0;
    if (!gone && (uint64_t)st.st_dev == e->key.dev && (uint64_t)st.st_ino == e->key.ino &&
        (uint64_t)st.st_size == e->key.size && st.st_mtim.tv_sec == e->key.mtime_sec &&
        st.st_mtim.tv_nsec == e->key.mtime_nsec)
        return;
    e->superseded = 1;
    uv_fs_event_stop(h);
    if (!e->leases)
        td__cache_drop(e->cache, e, "file replaced");
}

/* ---- the loop side ---- */

/* The path a descriptor was opened as, for config rules and watching; NULL when the kernel has
 * none worth using (deleted files, anonymous files). */
static char *td__cache_fd_path(int fd)
{
    char link[64], buf[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, buf, sizeof buf - 1);
    if (n <= 0 || buf[0] != '/')
        return NULL;
    buf[n] = '\0';
    if (n > 10 && strcmp(buf + n - 10, " (deleted)") == 0)
        return NULL;
    return strdup(buf);
}

static void td__cache_touch(td__cache *c, td__cache_entry *e)
{
    if (c->head != e) {
        td__cache_unlink(c, e);
        td__cache_push_front(c, e);
    }
}

int td__cache_acquire(td__cache *c, const td__cache_request *req, td__cache_waiter *w,
                      td__cache_entry **out, td_error *err)
{
    td__cache_key key;
    int rc = td__cache_key_of(req->fd, req->dequant, &key, err);
    if (rc)
        return rc;
    for (td__cache_entry *e = c->head; e; e = e->next) {
        if (e->superseded || !td__cache_same_file(&e->key, &key) || e->key.dequant != key.dequant)
            continue;
        if (req->format && e->state == CACHE_READY && e->table.format != req->format)
            return td__err(err, TD_EFORMAT, "%s: asked to read it as %s, but it is %s", e->name,
                           td_format_name(req->format), td_format_name(e->table.format));
        td__cache_touch(c, e);
        if (e->state == CACHE_LOADING) {
            w->entry = e;
            w->prev = e->waiters.prev;
            w->next = &e->waiters;
            e->waiters.prev->next = w;
            e->waiters.prev = w;
            return 1;
        }
        e->leases++;
        e->loads++;
        e->hits++;
        e->last_use = uv_now(c->loop);
        c->stats.hits++;
        *out = e;
        return 0;
    }
    if (c->n >= c->cfg->max_entries) {
        for (td__cache_entry *old = c->tail; old; old = old->prev) {
            if (old->state == CACHE_READY && !old->leases) {
                td__cache_drop(c, old, "too many cached files");
                break;
            }
        }
        if (c->n >= c->cfg->max_entries)
            return td__err(err, TD_ELIMIT, "the cache holds %zu files, all in use (max_entries)",
                           c->n);
    }
    td__cache_entry *e = calloc(1, sizeof *e);
    if (!e)
        return td__err(err, TD_ENOMEM, "out of memory");
    e->cache = c;
    e->key = key;
    e->state = CACHE_LOADING;
    e->snap_fd = e->derived_fd = -1;
    e->file_size = key.size;
    e->format = req->format;
    e->max_inflated = req->max_inflated ? req->max_inflated : c->cfg->max_inflated;
    e->waiters.next = e->waiters.prev = &e->waiters;
    e->path = td__cache_fd_path(req->fd);
    e->mode = req->mode ? req->mode : td__config_mode_for(c->cfg, e->path);
    if (e->path)
        e->name = strdup(e->path);
    else if (req->name)
        e->name = strdup(req->name);
    else
        e->name = strdup("(unnamed file)");
    e->file_fd = fcntl(req->fd, F_DUPFD_CLOEXEC, 3);
    if (!e->name || e->file_fd < 0) {
        rc = td__err(err, e->file_fd < 0 ? TD_ESYS : TD_ENOMEM, "cannot keep the descriptor: %s",
                     strerror(errno));
        td__cache_free(e);
        return rc;
    }
    td__table_init(&e->table, req->format);
    if (e->mode == TD__PROTO_MODE_SNAPSHOT && c->cfg->max_memory && key.size > c->cfg->max_memory) {
        rc = td__err(err, TD_ELIMIT, "%s: a snapshot of %llu bytes exceeds the budget of %llu",
                     e->name, (unsigned long long)key.size, (unsigned long long)c->cfg->max_memory);
        td__cache_free(e);
        return rc;
    }
    e->work.data = e;
    rc = uv_queue_work(c->loop, &e->work, td__cache_build, td__cache_built);
    if (rc) {
        rc = td__err(err, TD_ESYS, "cannot queue the load: %s", uv_strerror(rc));
        td__cache_free(e);
        return rc;
    }
    c->building++;
    c->stats.misses++;
    td__cache_push_front(c, e);
    w->entry = e;
    w->prev = w->next = &e->waiters;
    e->waiters.next = e->waiters.prev = w;
    return 1;
}

void td__cache_cancel(td__cache_waiter *w)
{
    if (!w->entry)
        return;
    w->prev->next = w->next;
    w->next->prev = w->prev;
    w->next = w->prev = NULL;
    w->entry = NULL;
}

void td__cache_release(td__cache *c, td__cache_entry *e)
{
    if (e->leases)
        e->leases--;
    e->last_use = uv_now(c->loop);
    if (!e->leases && e->superseded)
        td__cache_drop(c, e, "file replaced");
    else
        td__cache_enforce_budget(c);
}

void td__cache_evict(td__cache *c, const td__cache_key *key, uint64_t *entries, uint64_t *bytes)
{
    for (td__cache_entry *e = c->tail, *prev; e; e = prev) {
        prev = e->prev;
        if (e->state != CACHE_READY || e->leases || (key && !td__cache_same_file(&e->key, key)))
            continue;
        *entries += 1;
        *bytes += td__cache_held(e);
        td__cache_drop(c, e, "evict request");
    }
}

void td__cache_enforce_budget(td__cache *c)
{
    uint64_t budget = c->cfg->max_memory;
    for (td__cache_entry *e = c->tail, *prev; budget && e && c->bytes > budget; e = prev) {
        prev = e->prev;
        if (e->state == CACHE_READY && !e->leases && td__cache_held(e))
            td__cache_drop(c, e, "over the memory budget");
    }
}

const uint8_t *td__cache_entry_reply_tail(const td__cache_entry *e, const td__proto_limits *lim,
                                          size_t *len)
{
    if (!e->reply_tail || memcmp(&e->reply_lim, lim, sizeof *lim) != 0)
        return NULL;
    *len = e->reply_tail_len;
    return e->reply_tail;
}

void td__cache_entry_keep_reply_tail(td__cache_entry *e, const td__proto_limits *lim,
                                     const uint8_t *p, size_t len)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return; /* the table is encoded each time instead */
    memcpy(copy, p, len);
    /* The copy is the entry's memory too: td__cache_held counts it, and so must the total. */
    e->cache->bytes = e->cache->bytes - e->reply_tail_len + len;
    free(e->reply_tail);
    e->reply_tail = copy;
    e->reply_tail_len = len;
    e->reply_lim = *lim;
}

const td__table *td__cache_entry_table(const td__cache_entry *e)
{
    return &e->table;
}

int td__cache_entry_region0_fd(const td__cache_entry *e)
{
    return e->snap_fd;
}

int td__cache_entry_derived_fd(const td__cache_entry *e, uint64_t *size)
{
    *size = e->derived_len;
    return e->derived_fd;
}

uint64_t td__cache_entry_file_size(const td__cache_entry *e)
{
    return e->file_size;
}

const char *td__cache_entry_name(const td__cache_entry *e)
{
    return e->name;
}

uint32_t td__cache_entry_mode(const td__cache_entry *e)
{
    return e->mode;
}

uint64_t td__cache_entry_bytes(const td__cache_entry *e)
{
    return td__cache_held(e);
}

uint64_t td__cache_entry_leases(const td__cache_entry *e)
{
    return e->leases;
}

uint64_t td__cache_entry_hits(const td__cache_entry *e)
{
    return e->hits;
}

uint64_t td__cache_entry_loads(const td__cache_entry *e)
{
    return e->loads;
}

uint64_t td__cache_entry_last_use(const td__cache_entry *e)
{
    return e->last_use;
}

td__cache_entry *td__cache_first(const td__cache *c)
{
    return c->head;
}

td__cache_entry *td__cache_next(const td__cache_entry *e)
{
    return e->next;
}
