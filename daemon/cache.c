/*
 * cache.c - see cache.h.
 *
 * An entry's life: td__cache_acquire creates it (LOADING), reserves what a snapshot or a pin
 * will take, and queues td__cache_index_work on the thread pool (snapshot copy, index, pin, and
 * the layout of what must be decoded). Back on the loop, td__cache_indexed reserves the decoded
 * size and the decoding's scratch, and queues td__cache_decode_work. td__cache_finish, on the
 * loop, makes the entry READY and hands a lease to every waiter, or fails the waiters and frees
 * it. While LOADING only the worker touches the build fields; the loop thread touches only the
 * list links, the waiters and the accounting (charged, transient, the totals), and between the
 * two pool steps the layout (need, scratch).
 *
 * Reserving makes room by evicting entries nobody holds. When what clients hold leaves too
 * little, the load is refused (TD_EBUDGET), unless it is only the scratch of decodes in flight
 * that is in the way: then the entry waits (wait_head) until a build finishes or a lease is
 * given back, and tries again. Nothing waits for something that may never end.
 */
#include "cache.h"
#include "derive.h"
#include "log.h"
#include "proto.h"
#include "index.h"
#include "model.h"
#include "dequant.h"
#include "ftab.h"
#include "hash.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef enum { CACHE_LOADING, CACHE_READY } td__cache_state;

static void td__cache_finish(td__cache *c, td__cache_entry *e);

struct td__cache_entry {
    td__cache_entry *prev, *next;
    td__cache_entry *chain; /* in its bucket of the cache's index */
    uint64_t hash;          /* of its key (td__cache_key_hash) */
    td__cache *cache;
    td__cache_key key;
    td__cache_state state;
    uint32_t uid;       /* the first loader: the entry counts against its quota */
    uint64_t charged;   /* bytes counted in the cache's and the uid's totals */
    uint64_t need;      /* bytes of the memfd the decode step fills (laid out by the index step) */
    uint64_t scratch;   /* bytes the decode step may allocate besides, one tensor at a time */
    uint64_t transient; /* the scratch it has reserved, while decoding */
    td__cache_entry *wait_next; /* in the cache's queue of entries waiting for room */
    uint64_t wait_need;         /* ... the bytes it waits for */
    int wait_stage;             /* ... and the step they are for: 0 index, 1 decode */
    int waited;                 /* it has waited (said once in the log) */
    char *name; /* the file's path (from /proc/self/fd) or the client's name for it */
    char *path; /* the path to watch, or NULL */
    td_format format;
    uint32_t mode;
    uint64_t max_inflated;
    int split;      /* a GGUF split of a set of several files */
    int file_fd;    /* the first client's descriptor, kept while building */
    int snap_fd;    /* snapshot memfd, or -1 */
    void *snap_map; /* its mapping while building, or NULL */
    void *pin_map;  /* pin mode: the file mapping kept resident */
    uint64_t file_size;
    int derived_fd; /* sealed memfd of decoded entries, or -1 */
    uint64_t derived_len;
    uint64_t id;  /* never reused while the daemon runs (the clients' key for the table) */
    int table_fd; /* sealed memfd of the flat table (ftab.h), metadata included */
    uint64_t table_len;
    td__table table;
    uint8_t *reply_tail; /* the table as LOAD_OK encodes it for peers with reply_lim */
    size_t reply_tail_len;
    td__proto_limits reply_lim;
    uint64_t leases, loads, hits;
    uint64_t holds;    /* the daemon's own (preload lines): they keep it like leases */
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
    c->seed = td__hash_seed_for(c);
}

int td__cache_idle(const td__cache *c)
{
    return c->building == 0;
}

/* ---- the index: entries by key, so that a load finds its entry in O(1) ---- */

static int td__cache_same_file(const td__cache_key *a, const td__cache_key *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_sec == b->mtime_sec && a->mtime_nsec == b->mtime_nsec;
}

static uint64_t td__cache_key_hash(const td__cache *c, const td__cache_key *k)
{
    uint64_t w[6] = {k->dev,    k->ino, k->size, (uint64_t)k->mtime_sec, (uint64_t)k->mtime_nsec,
                     k->dequant};
    return td__hash(c->seed, w, sizeof w);
}

/* Adds e (its hash set, already on the list) to the index, which grows to twice the entries
 * when it can, rebuilt from the list. Without memory to grow, chains just get longer; without
 * any index, td__cache_find walks the list. */
static void td__cache_index_add(td__cache *c, td__cache_entry *e)
{
    if (c->n * 2 > c->index_cap) {
        size_t cap = c->index_cap ? c->index_cap * 2 : 64;
        while (c->n * 2 > cap)
            cap *= 2;
        td__cache_entry **idx = calloc(cap, sizeof *idx);
        if (idx) {
            free(c->index);
            c->index = idx;
            c->index_cap = cap;
            for (td__cache_entry *x = c->head; x; x = x->next) {
                x->chain = idx[x->hash & (cap - 1)];
                idx[x->hash & (cap - 1)] = x;
            }
            return; /* e is on the list, so in the index now */
        }
    }
    if (!c->index_cap)
        return;
    td__cache_entry **b = &c->index[e->hash & (c->index_cap - 1)];
    e->chain = *b;
    *b = e;
}

static void td__cache_index_del(td__cache *c, td__cache_entry *e)
{
    if (!c->index_cap)
        return;
    for (td__cache_entry **p = &c->index[e->hash & (c->index_cap - 1)]; *p; p = &(*p)->chain)
        if (*p == e) {
            *p = e->chain;
            return;
        }
}

/* The live entry (not superseded) for key, or NULL. */
static td__cache_entry *td__cache_find(const td__cache *c, const td__cache_key *key)
{
    uint64_t h = td__cache_key_hash(c, key);
    td__cache_entry *e = c->index_cap ? c->index[h & (c->index_cap - 1)] : c->head;
    for (; e; e = c->index_cap ? e->chain : e->next)
        if (e->hash == h && !e->superseded && td__cache_same_file(&e->key, key) &&
            e->key.dequant == key->dequant)
            return e;
    return NULL;
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

/* Frees an entry that is not linked into the list and not counted (see td__cache_forget). */
static void td__cache_free(td__cache_entry *e)
{
    if (e->file_fd >= 0)
        close(e->file_fd);
    if (e->snap_map)
        munmap(e->snap_map, (size_t)e->file_size);
    if (e->snap_fd >= 0)
        close(e->snap_fd);
    if (e->derived_fd >= 0)
        close(e->derived_fd);
    if (e->table_fd >= 0)
        close(e->table_fd);
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
    return (e->snap_fd >= 0 || e->pin_map ? e->file_size : 0) + e->derived_len + e->table_len +
           e->reply_tail_len;
}

/* ---- accounting: the budget, and the bytes of each uid ---- */

static td__cache_user *td__cache_user_of(const td__cache *c, uint32_t uid)
{
    for (size_t i = 0; i < c->nusers; i++)
        if (c->users[i].uid == uid)
            return &c->users[i];
    return NULL;
}

/* One more entry for uid (its record is made on the first). 0 or TD_ENOMEM. */
static int td__cache_user_add(td__cache *c, uint32_t uid)
{
    td__cache_user *u = td__cache_user_of(c, uid);
    if (!u) {
        if (c->nusers == c->cap_users) {
            size_t cap = c->cap_users ? c->cap_users * 2 : 8;
            td__cache_user *n = realloc(c->users, cap * sizeof *n);
            if (!n)
                return TD_ENOMEM;
            c->users = n;
            c->cap_users = cap;
        }
        u = &c->users[c->nusers++];
        *u = (td__cache_user){.uid = uid};
    }
    u->entries++;
    return 0;
}

/* One entry of uid less; the record goes with its last entry (its bytes are 0 by then). */
static void td__cache_user_del(td__cache *c, uint32_t uid)
{
    td__cache_user *u = td__cache_user_of(c, uid);
    if (u && --u->entries == 0)
        *u = c->users[--c->nusers];
}

/* Sets what e counts against the budget and its uid's quota to bytes. */
static void td__cache_charge(td__cache *c, td__cache_entry *e, uint64_t bytes)
{
    td__cache_user *u = td__cache_user_of(c, e->uid);
    c->bytes = c->bytes - e->charged + bytes;
    if (u)
        u->bytes = u->bytes - e->charged + bytes;
    e->charged = bytes;
}

/* Unlinks a counted entry, takes its bytes off the totals and frees it. */
static void td__cache_forget(td__cache *c, td__cache_entry *e)
{
    td__cache_charge(c, e, 0);
    td__cache_user_del(c, e->uid);
    td__cache_index_del(c, e);
    td__cache_unlink(c, e);
    td__cache_free(e);
}

/* An entry eviction may take: built, and held by nobody (no client, no preload line). */
static int td__cache_evictable(const td__cache_entry *e)
{
    return e->state == CACHE_READY && !e->leases && !e->holds;
}

static void td__cache_drop(td__cache *c, td__cache_entry *e, const char *why)
{
    td__log_info("evict %s (%s, %llu bytes)", e->name, why, (unsigned long long)e->charged);
    c->stats.evictions++;
    td__cache_forget(c, e);
}

/* What eviction cannot free, of one uid (all: every uid): the bytes of entries clients hold
 * or that are being built, the leases on them, and the loads waiting for builds. */
typedef struct td__cache_kept {
    uint64_t bytes, leases, loading, held; /* held: entries preload lines keep */
} td__cache_kept;

static td__cache_kept td__cache_kept_of(const td__cache *c, int all, uint32_t uid,
                                        const td__cache_entry *self)
{
    td__cache_kept k = {0, 0, 0, 0};
    for (const td__cache_entry *e = c->head; e; e = e->next) {
        if ((!all && e->uid != uid) || td__cache_evictable(e) || e == self)
            continue;
        k.bytes += e->charged;
        k.leases += e->leases;
        k.held += e->holds != 0;
        if (e->state == CACHE_LOADING)
            for (const td__cache_waiter *w = e->waiters.next; w != &e->waiters; w = w->next)
                k.loading++;
    }
    return k;
}

/* The refusal when what clients hold leaves no room for need more bytes. */
static int td__cache_full(const td__cache *c, int all, uint32_t uid, uint64_t limit, uint64_t need,
                          const td__cache_entry *self, td_error *err)
{
    td__cache_kept k = td__cache_kept_of(c, all, uid, self);
    char who[48] = "", loading[64] = "", held[64] = "";
    if (!all)
        snprintf(who, sizeof who, " for uid %u", uid);
    if (k.loading)
        snprintf(loading, sizeof loading, " and %llu loads being built",
                 (unsigned long long)k.loading);
    if (k.held)
        snprintf(held, sizeof held, " and %llu preloaded files", (unsigned long long)k.held);
    return td__err(err, TD_EBUDGET,
                   "budget full%s: %llu bytes held by %llu leases%s%s (%s %llu; this load needs "
                   "%llu more)",
                   who, (unsigned long long)k.bytes, (unsigned long long)k.leases, held, loading,
                   all ? "max_memory" : "max_memory_per_uid", (unsigned long long)limit,
                   (unsigned long long)need);
}

/* Makes room for need more bytes charged to uid, for self (the entry being built, already
 * charged with what it reserved earlier): refuses (TD_EBUDGET) when the load is more than the
 * budget or the quota could ever give, or when the entries that clients hold leave too little;
 * returns 1 instead when may_wait and the scratch of decodes in flight is all that is in the
 * way; otherwise evicts entries nobody holds, least recently used first: the uid's own while
 * it is over its quota (other users' entries never make room for a user's quota), then
 * anyone's while the cache is over the budget, and returns 0. Nothing is evicted for a load
 * that is refused or waits. The caller charges need right after a 0. */
static int td__cache_make_room(td__cache *c, uint32_t uid, uint64_t need,
                               const td__cache_entry *self, int may_wait, td_error *err)
{
    uint64_t budget = c->cfg->max_memory, quota = c->cfg->max_memory_per_uid;
    if (!need || (!budget && !quota))
        return 0;
    uint64_t whole = need + (self ? self->charged : 0); /* all this load takes */
    if (budget && whole > budget)
        return td__err(err, TD_EBUDGET,
                       "it needs %llu bytes, more than the whole memory budget of %llu "
                       "(max_memory)",
                       (unsigned long long)whole, (unsigned long long)budget);
    if (quota && whole > quota)
        return td__err(err, TD_EBUDGET,
                       "it needs %llu bytes, more than one uid may hold (max_memory_per_uid "
                       "%llu)",
                       (unsigned long long)whole, (unsigned long long)quota);
    /* What eviction could free, and what decodes in flight will give back when they end. */
    uint64_t free_all = 0, free_uid = 0, scratch_uid = 0;
    for (const td__cache_entry *e = c->head; e; e = e->next) {
        if (e->uid == uid)
            scratch_uid += e->transient;
        if (!td__cache_evictable(e))
            continue;
        free_all += e->charged;
        if (e->uid == uid)
            free_uid += e->charged;
    }
    const td__cache_user *u = td__cache_user_of(c, uid);
    uint64_t mine = u ? u->bytes : 0;
    if (quota && mine - free_uid + need > quota)
        return may_wait && mine - free_uid - scratch_uid + need <= quota
                   ? 1
                   : td__cache_full(c, 0, uid, quota, whole, self, err);
    if (budget && c->bytes - free_all + need > budget)
        return may_wait && c->bytes - free_all - c->transient + need <= budget
                   ? 1
                   : td__cache_full(c, 1, uid, budget, whole, self, err);
    char why[64];
    snprintf(why, sizeof why, "to make room in the quota of uid %u", uid);
    for (td__cache_entry *e = c->tail, *prev; e; e = prev) {
        prev = e->prev;
        if (!quota || (u = td__cache_user_of(c, uid)) == NULL || u->bytes + need <= quota)
            break;
        if (td__cache_evictable(e) && e->charged && e->uid == uid)
            td__cache_drop(c, e, why);
    }
    for (td__cache_entry *e = c->tail, *prev; e; e = prev) {
        prev = e->prev;
        if (!budget || c->bytes + need <= budget)
            break;
        if (td__cache_evictable(e) && e->charged)
            td__cache_drop(c, e, "to make room in the memory budget");
    }
    return 0;
}

void td__cache_destroy(td__cache *c)
{
    while (c->head)
        td__cache_forget(c, c->head);
    free(c->users);
    c->users = NULL;
    c->nusers = c->cap_users = 0;
    c->bytes = 0;
    free(c->index);
    c->index = NULL;
    c->index_cap = 0;
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
        rc = td__decode_entry(&local, buf, (size_t)n, dst, 0, e->name, err);
    }
    free(buf);
    return rc;
}

/* Lays out what cannot be viewed as stored: e->need is the size of the memfd the decode step
 * will fill (0: nothing to decode), e->scratch the most decoding one tensor allocates on the
 * way: the pread copy of its stored bytes (none from a snapshot) and the decoder's own
 * (td__decode_scratch: libdeflate inflates npz members whole, into a copy). */
static int td__cache_layout(td__cache_entry *e, td_error *err)
{
    uint64_t total = 0;
    e->scratch = 0;
    for (size_t i = 0; i < e->table.n; i++) {
        td__entry *t = &e->table.entries[i];
        if (!t->layout || !t->nbytes)
            continue;
        total = (total + 63) / 64 * 64;
        uint64_t scratch = td__decode_scratch(t);
        if (!td__add_u64(total, t->nbytes, &total) ||
            (!e->snap_map && !td__add_u64(scratch, t->src.nbytes, &scratch)))
            return td__err(err, TD_ERANGE, "%s: decoded size overflows", e->name);
        if (scratch > e->scratch)
            e->scratch = scratch;
    }
    if (!total) {
        for (size_t i = 0; i < e->table.n; i++)
            if (e->table.entries[i].layout) /* empty arrays: nothing to decode */
                e->table.entries[i].layout = 0, e->table.entries[i].offset = 0;
    }
    e->need = total;
    return 0;
}

/* Decodes and seals every entry that cannot be viewed as stored, into one memfd of e->need
 * bytes (reserved by the loop): from the snapshot's mapping when there is one, else from pread
 * copies of the client's file. */
static int td__cache_decode(td__cache_entry *e, td_error *err)
{
    uint64_t total = e->need;
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
        if (e->snap_map) {
            /* A sealed snapshot cannot shrink: decode straight from its mapping. */
            rc = td__decode_entry(t, e->snap_map, (size_t)e->file_size, (uint8_t *)map + off, 0,
                                  e->name, err);
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

/* Indexes the file r reads into e->table, dequantizes the table, and lays out what must be
 * decoded. */
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
    if (!rc && e->format == TD_FORMAT_GGUF) {
        /* A split of a gguf-split set is one file of a model: it is cached as a file (its split.*
         * keys dropped, the client holds the model's metadata), and served only to a LOAD that
         * says it is a shard of a model (td__cache_entry_is_split). */
        e->split = td__model_gguf_is_split(&e->table);
        rc = td__model_strip_split_keys(&e->table, err);
    }
    if (!rc && e->key.dequant)
        rc = td__table_dequant(&e->table, (int)e->key.dequant, e->name, err);
    if (!rc)
        rc = td__cache_layout(e, err);
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

/* The first step, on a worker thread: the snapshot copy, the index, the pin. The client's file
 * can be truncated or rewritten at any moment, so the daemon reads it only with pread (a
 * descriptor reader for the metadata, copies for what is decoded): a shrunken file is a clean
 * TD_ETRUNC, never a SIGBUS. A sealed snapshot cannot change and is read in place through a
 * mapping, kept for the decode step. */
/* Writes the finished table, metadata included, as a flat table into a sealed memfd that every
 * LOAD_OK of the entry passes on (PROTOCOL.md section 3.5). Its index is hashed under a seed
 * derived from the entry's id with the daemon's secret (td__hash_seed_for): clients see each
 * table's seed, and learn nothing from it about the next table's. */
static int td__cache_publish(td__cache_entry *e, td_error *err)
{
    uint8_t *meta = NULL;
    size_t meta_len = 0;
    int rc = e->table.meta ? td__proto_meta_pack(e->table.meta, &meta, &meta_len, err) : 0;
    if (rc)
        return td__err_prefix(err, rc, e->name);
    uint64_t size = td__ftab_size(&e->table, meta_len);
    td__hash_seed secret = e->cache->seed, seed;
    uint64_t ids[2] = {e->id, ~e->id};
    seed.k0 = td__hash(secret, &ids[0], sizeof ids[0]);
    seed.k1 = td__hash(secret, &ids[1], sizeof ids[1]);
    void *map = NULL;
    int fd = -1;
    char label[4200]; /* how /proc/PID/maps names the memfd: "tensord:NAME (table)" */
    snprintf(label, sizeof label, "%.4096s (table)", e->name);
    if (!size)
        rc = td__err(err, TD_ELIMIT,
                     "%s: a table of %zu tensors and %zu bytes of metadata is "
                     "over 4 GiB",
                     e->name, e->table.n, meta_len);
    if (!rc)
        rc = td__derive_memfd(label, size, &fd, &map, err);
    if (!rc) {
        rc = td__ftab_write(&e->table, e->derived_fd >= 0 ? 2 : 1, meta, meta_len, seed, map, size,
                            err);
        if (!rc)
            rc = td__derive_seal(fd, map, size, err);
        else
            munmap(map, (size_t)size);
        if (rc)
            close(fd);
    }
    free(meta);
    if (rc)
        return td__err_prefix(err, rc, e->name);
    e->table_fd = fd;
    e->table_len = size;
    return 0;
}

static void td__cache_index_work(uv_work_t *w)
{
    td__cache_entry *e = w->data;
    td_error *err = &e->err;
    uint64_t t0 = td__cache_now_ns();
    int rc = 0;
    td__rd rd;
    if (e->mode == TD__PROTO_MODE_SNAPSHOT) {
        rc = td__derive_snapshot(e->file_fd, e->file_size, e->name, &e->snap_fd, err);
        void *snap = MAP_FAILED;
        if (!rc && (snap = mmap(NULL, (size_t)e->file_size, PROT_READ, MAP_SHARED, e->snap_fd,
                                0)) == MAP_FAILED)
            rc = td__err(err, td__err_from_errno(errno), "%s: cannot map the snapshot: %s", e->name,
                         strerror(errno));
        if (!rc)
            e->snap_map = snap;
    }
    if (e->snap_map)
        rd = *TD__RD_MEM(e->snap_map, e->file_size, e->name);
    else
        td__rd_fd(&rd, e->file_fd, e->file_size, 0, e->name);
    if (!rc)
        rc = td__cache_index(e, &rd, err);
    td__rd_close(&rd);
    if (!rc && e->mode == TD__PROTO_MODE_PIN)
        td__cache_pin(e);
    if (!rc && !e->need)
        rc = td__cache_publish(e, err);
    e->status = rc;
    e->decode_ns += td__cache_now_ns() - t0;
}

/* The second step, on a worker thread: decoding into the memory the loop reserved. */
static void td__cache_decode_work(uv_work_t *w)
{
    td__cache_entry *e = w->data;
    uint64_t t0 = td__cache_now_ns();
    e->status = td__cache_decode(e, &e->err);
    if (!e->status)
        e->status = td__cache_publish(e, &e->err);
    e->decode_ns += td__cache_now_ns() - t0;
}

static void td__cache_indexed(uv_work_t *w, int status);
static void td__cache_decoded(uv_work_t *w, int status);

/* Charges need more bytes to e and queues its step (0: index, 1: decode; the decode's scratch
 * is transient). 0, or a code with e->status set. */
static int td__cache_run(td__cache *c, td__cache_entry *e, int stage, uint64_t need)
{
    td__cache_charge(c, e, e->charged + need);
    if (stage) {
        e->transient = e->scratch;
        c->transient += e->scratch;
    }
    e->work.data = e;
    int rc = stage ? uv_queue_work(c->loop, &e->work, td__cache_decode_work, td__cache_decoded)
                   : uv_queue_work(c->loop, &e->work, td__cache_index_work, td__cache_indexed);
    if (rc)
        return e->status = td__err(&e->err, TD_ESYS, "%s: cannot queue the load: %s", e->name,
                                   uv_strerror(rc));
    return 0;
}

/* Reserves need bytes for e's step and runs it, or queues e to wait for room. 0 when it runs or
 * waits; a code with e->status set otherwise. */
static int td__cache_admit(td__cache *c, td__cache_entry *e, int stage, uint64_t need)
{
    int rc = td__cache_make_room(c, e->uid, need, e, 1, &e->err);
    if (rc == 1) {
        e->wait_need = need;
        e->wait_stage = stage;
        e->wait_next = NULL;
        if (c->wait_tail)
            c->wait_tail->wait_next = e;
        else
            c->wait_head = e;
        c->wait_tail = e;
        if (!e->waited)
            td__log_debug("%s waits for %llu bytes (the scratch of decodes in flight is in the "
                          "way)",
                          e->name, (unsigned long long)need);
        e->waited = 1;
        return 0;
    }
    if (rc < 0)
        return e->status = rc;
    return td__cache_run(c, e, stage, need);
}

/* Something gave memory back (a build ended, a lease went): the entries waiting for room try
 * again, in the order they came. */
static void td__cache_retry(td__cache *c)
{
    if (c->retrying)
        return; /* td__cache_finish below calls back here: this loop goes on instead */
    c->retrying = 1;
    for (int progress = 1; progress && c->wait_head;) {
        progress = 0;
        td__cache_entry *q = c->wait_head;
        c->wait_head = c->wait_tail = NULL;
        while (q) {
            td__cache_entry *e = q;
            q = q->wait_next;
            e->wait_next = NULL;
            if (td__cache_admit(c, e, e->wait_stage, e->wait_need) != 0) {
                td__cache_finish(c, e); /* refused now: its waiters learn why */
                progress = 1;
            } else if (c->wait_tail != e) {
                progress = 1; /* running */
            }
        }
    }
    c->retrying = 0;
}

static void td__cache_decoded(uv_work_t *w, int status)
{
    td__cache_entry *e = w->data;
    if (status == UV_ECANCELED && !e->status)
        e->status = td__err(&e->err, TD_EAGAIN, "%s: load cancelled", e->name);
    td__cache_finish(e->cache, e);
}

/* Back from the first step: reserves the decoded size and the decode's scratch (making room,
 * waiting for it, or refusing the load), then decodes, or finishes at once when there is
 * nothing to decode. Once decoded, the entry is charged what it holds (td__cache_finish): the
 * scratch is gone. */
static void td__cache_indexed(uv_work_t *w, int status)
{
    td__cache_entry *e = w->data;
    td__cache *c = e->cache;
    if (status == UV_ECANCELED && !e->status)
        e->status = td__err(&e->err, TD_EAGAIN, "%s: load cancelled", e->name);
    if (!e->status && e->need && td__cache_admit(c, e, 1, e->need + e->scratch) == 0)
        return; /* decoding, or waiting for room */
    td__cache_finish(c, e);
}

static void td__cache_watch_cb(uv_fs_event_t *h, const char *filename, int events, int status);
static int td__cache_path_current(const td__cache_entry *e);

/* The end of a build, on the loop: the entry is READY and every waiter gets a lease, or the
 * waiters get the error and the entry goes. */
static void td__cache_finish(td__cache *c, td__cache_entry *e)
{
    c->building--;
    c->transient -= e->transient;
    e->transient = 0;
    /* The first client's descriptor is not needed any more: in map and pin mode each client
     * maps its own. */
    if (e->file_fd >= 0) {
        close(e->file_fd);
        e->file_fd = -1;
    }
    if (e->snap_map) {
        munmap(e->snap_map, (size_t)e->file_size);
        e->snap_map = NULL;
    }
    td__cache_waiter *q = e->waiters.next;
    e->waiters.next = e->waiters.prev = &e->waiters;
    if (e->status) {
        if (e->status == TD_EBUDGET)
            td__log_notice("load %s refused: %s", e->name, e->err.message);
        else
            td__log_warn("load %s failed: %s", e->name, e->err.message);
        td__cache_charge(c, e, 0);
        td__cache_user_del(c, e->uid);
        td__cache_index_del(c, e);
        td__cache_unlink(c, e);
        while (q != &e->waiters) {
            td__cache_waiter *next = q->next;
            q->next = q->prev = NULL;
            q->entry = NULL;
            c->stats.refused += e->status == TD_EBUDGET;
            q->done(q, NULL, e->status, &e->err);
            q = next;
        }
        td__cache_free(e);
        td__cache_retry(c);
        return;
    }
    e->state = CACHE_READY;
    e->last_use = uv_now(c->loop);
    td__cache_charge(c, e, td__cache_held(e)); /* what it holds, no longer what it reserved */
    c->stats.decodes += e->derived_len || e->snap_fd >= 0;
    c->stats.decode_ns_total += e->decode_ns;
    if (e->decode_ns > c->stats.decode_ns_max)
        c->stats.decode_ns_max = e->decode_ns;
    td__log_info("indexed %s: %s, %zu tensors, mode %s, %llu derived bytes, %.1f ms", e->name,
                 td_format_name(e->table.format), e->table.n, td__config_mode_name(e->mode),
                 (unsigned long long)e->derived_len, (double)e->decode_ns / 1e6);
    /* Replaced while it was being built (before the watch below): it goes with its last
     * lease, as if the watch had seen it. */
    if (e->path && !td__cache_path_current(e))
        e->superseded = 1;
    else if (e->path) {
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
    /* Every waiter's lease is taken before any is handed out: a done() that gives its lease
     * straight back (a client over max_leases, or gone) must not leave e unheld, and so
     * evictable, while the others still wait for it. */
    for (td__cache_waiter *w = q; w != &e->waiters; w = w->next) {
        e->leases++;
        e->loads++;
        if (w != q) {
            e->hits++;
            c->stats.hits++;
        }
    }
    while (q != &e->waiters) {
        td__cache_waiter *next = q->next;
        q->next = q->prev = NULL;
        q->entry = NULL;
        q->done(q, e, 0, NULL);
        q = next;
    }
    td__cache_enforce_budget(c);
    td__cache_retry(c);
}

/* The file behind an entry changed on disk: if the path now names another file (replaced by
 * rename, rewritten), the entry is superseded and goes as soon as nobody holds it. */
/* Whether e's path still names the file e was built from: no when it names another file or
 * nothing; yes when the daemon may not look (the client's directory is closed to it). */
static int td__cache_path_current(const td__cache_entry *e)
{
    struct stat st;
    if (stat(e->path, &st) < 0)
        return errno != ENOENT && errno != ENOTDIR;
    td__cache_key now = {(uint64_t)st.st_dev,         (uint64_t)st.st_ino,
                         (uint64_t)st.st_size,        (int64_t)st.st_mtim.tv_sec,
                         (int64_t)st.st_mtim.tv_nsec, 0};
    return td__cache_same_file(&e->key, &now);
}

static void td__cache_watch_cb(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)filename;
    (void)events;
    td__cache_entry *e = h->data;
    if (status < 0 || !e->path || td__cache_path_current(e))
        return;
    e->superseded = 1;
    uv_fs_event_stop(h);
    if (!e->leases && !e->holds)
        td__cache_drop(e->cache, e, "file replaced");
}

/* ---- the loop side ---- */

char *td__cache_fd_path(int fd)
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
    td__cache_entry *e = td__cache_find(c, &key);
    if (e) {
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
            if (td__cache_evictable(old)) {
                td__cache_drop(c, old, "too many cached files");
                break;
            }
        }
        if (c->n >= c->cfg->max_entries)
            return td__err(err, TD_ELIMIT, "the cache holds %zu files, all in use (max_entries)",
                           c->n);
    }
    e = calloc(1, sizeof *e);
    if (!e)
        return td__err(err, TD_ENOMEM, "out of memory");
    e->cache = c;
    e->key = key;
    e->hash = td__cache_key_hash(c, &key);
    e->uid = req->uid;
    e->state = CACHE_LOADING;
    e->snap_fd = e->derived_fd = e->table_fd = -1;
    e->id = ++c->next_id;
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
    e->work.data = e;
    if (td__cache_user_add(c, e->uid)) {
        td__cache_free(e);
        return td__err(err, TD_ENOMEM, "out of memory");
    }
    td__cache_push_front(c, e);
    td__cache_index_add(c, e);
    c->building++; /* LOADING, from here to td__cache_finish */
    /* A snapshot copies the file and a pin locks it: reserve that now. */
    uint64_t reserve =
        e->mode == TD__PROTO_MODE_SNAPSHOT || e->mode == TD__PROTO_MODE_PIN ? key.size : 0;
    if ((rc = td__cache_admit(c, e, 0, reserve))) {
        c->stats.refused += rc == TD_EBUDGET; /* the server logs the refusal */
        *err = e->err;
        c->building--;
        td__cache_forget(c, e);
        return rc;
    }
    c->stats.misses++;
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

/* After a lease or a hold on e went: a replaced file nobody holds goes now. */
static void td__cache_let_go(td__cache *c, td__cache_entry *e)
{
    e->last_use = uv_now(c->loop);
    if (!e->leases && !e->holds && e->superseded)
        td__cache_drop(c, e, "file replaced");
    else
        td__cache_enforce_budget(c);
    td__cache_retry(c); /* an entry nobody holds can make room now */
}

void td__cache_release(td__cache *c, td__cache_entry *e)
{
    if (e->leases)
        e->leases--;
    td__cache_let_go(c, e);
}

void td__cache_hold(td__cache_entry *e)
{
    if (e->leases) {
        e->leases--;
        e->holds++;
    }
}

void td__cache_unhold(td__cache *c, td__cache_entry *e)
{
    if (e->holds)
        e->holds--;
    td__cache_let_go(c, e);
}

/* Evicts every entry nobody holds (of one file when key is set), adding to the counts. */
static void td__cache_evict_unheld(td__cache *c, const td__cache_key *key, const char *why,
                                   uint64_t *entries, uint64_t *bytes)
{
    for (td__cache_entry *e = c->tail, *prev; e; e = prev) {
        prev = e->prev;
        if (!td__cache_evictable(e) || (key && !td__cache_same_file(&e->key, key)))
            continue;
        *entries += 1;
        *bytes += e->charged;
        td__cache_drop(c, e, why);
    }
}

void td__cache_evict(td__cache *c, const td__cache_key *key, uint64_t *entries, uint64_t *bytes)
{
    td__cache_evict_unheld(c, key, "evict request", entries, bytes);
}

void td__cache_relieve(td__cache *c, const char *why)
{
    uint64_t n = 0, bytes = 0;
    char text[200];
    snprintf(text, sizeof text, "memory pressure: %s", why);
    c->stats.pressure++;
    td__cache_evict_unheld(c, NULL, text, &n, &bytes);
    td__cache_kept k = td__cache_kept_of(c, 1, 0, NULL);
    td__log_notice("memory pressure (%s): dropped %llu entries nobody holds (%llu bytes); kept "
                   "%llu bytes held by %llu leases and %llu preloaded files",
                   why, (unsigned long long)n, (unsigned long long)bytes,
                   (unsigned long long)k.bytes, (unsigned long long)k.leases,
                   (unsigned long long)k.held);
}

/* Whether the cache is over its budget, or a uid over its quota. */
static int td__cache_over(const td__cache *c)
{
    uint64_t budget = c->cfg->max_memory, quota = c->cfg->max_memory_per_uid;
    if (budget && c->bytes > budget)
        return 1;
    for (size_t i = 0; quota && i < c->nusers; i++)
        if (c->users[i].bytes > quota)
            return 1;
    return 0;
}

void td__cache_enforce_budget(td__cache *c)
{
    uint64_t budget = c->cfg->max_memory, quota = c->cfg->max_memory_per_uid;
    if (!td__cache_over(c))
        return; /* every release asks: most of the time nothing is over */
    for (td__cache_entry *e = c->tail, *prev; (budget || quota) && e; e = prev) {
        prev = e->prev;
        if (!td__cache_evictable(e) || !e->charged)
            continue;
        const td__cache_user *u = td__cache_user_of(c, e->uid);
        if (quota && u && u->bytes > quota) {
            char why[64];
            snprintf(why, sizeof why, "over the quota of uid %u", e->uid);
            td__cache_drop(c, e, why);
        } else if (budget && c->bytes > budget) {
            td__cache_drop(c, e, "over the memory budget");
        }
    }
}

size_t td__cache_users(const td__cache *c, const td__cache_user **out)
{
    *out = c->users;
    return c->nusers;
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
    free(e->reply_tail);
    e->reply_tail = copy;
    e->reply_tail_len = len;
    /* The copy is the entry's memory too, counted like the rest. */
    td__cache_charge(e->cache, e, td__cache_held(e));
    e->reply_lim = *lim;
}

const td__table *td__cache_entry_table(const td__cache_entry *e)
{
    return &e->table;
}

int td__cache_entry_is_split(const td__cache_entry *e)
{
    return e->split;
}

int td__cache_entry_region0_fd(const td__cache_entry *e)
{
    return e->snap_fd;
}

uint64_t td__cache_entry_id(const td__cache_entry *e)
{
    return e->id;
}

int td__cache_entry_table_fd(const td__cache_entry *e, uint64_t *size)
{
    *size = e->table_len;
    return e->table_fd;
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
    return e->charged;
}

uint32_t td__cache_entry_uid(const td__cache_entry *e)
{
    return e->uid;
}

uint64_t td__cache_entry_leases(const td__cache_entry *e)
{
    return e->leases;
}

uint64_t td__cache_entry_holds(const td__cache_entry *e)
{
    return e->holds;
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
