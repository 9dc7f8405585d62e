/*
 * cache.h - the daemon's cache of indexed, decoded weight files.
 *
 * One entry per (st_dev, st_ino, st_size, st_mtim, dequantize target) of a descriptor a client
 * passed. An entry holds the tensor table, the region-0 descriptor of a snapshot (or nothing:
 * in map and pin mode every client maps its own descriptor of the file), and one sealed memfd
 * with everything that had to be decoded. Entries are built on the libuv thread pool; loads of
 * an entry that is still being built wait for that one build.
 *
 * Clients hold leases, and the daemon holds the entries of its preload lines (preload.h) the same
 * way (a hold: a lease of its own, counted apart); an entry with neither is on the LRU list and
 * may be evicted when the
 * memory budget (snapshot, derived and pinned bytes) or its uid's quota needs room, when its
 * file was replaced, under memory pressure, or on request. Evicting only closes the daemon's
 * descriptors: mappings clients already made stay valid. Entries that clients hold are never
 * evicted: when the budget (or a uid's quota) is full of them, a load that needs more memory is
 * refused with TD_EBUDGET ("budget full: N bytes held by M leases").
 *
 * Accounting: an entry's bytes count against the budget and against the quota of the uid that
 * loaded it first (a file shared by several users counts once). Memory is reserved on the loop
 * thread before it is allocated on the thread pool: a snapshot's or a pin's size when the entry
 * is created, the decoded size and the decoding's scratch between indexing and decoding. So
 * builds in flight can never take the daemon past its budget together. (The tables and the
 * metadata of the entries live on the heap and are not counted, but for the flat table each
 * entry shares with its clients and the encoded copy it keeps for older clients' replies.)
 */
#ifndef TD_DAEMON_CACHE_H
#define TD_DAEMON_CACHE_H

#include "config.h"
#include "hash.h"
#include "proto.h"
#include "table.h"

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

typedef struct td__cache_key {
    uint64_t dev, ino, size;
    int64_t mtime_sec, mtime_nsec;
    uint32_t dequant;
} td__cache_key;

typedef struct td__cache_entry td__cache_entry;
typedef struct td__cache_waiter td__cache_waiter;

/* A load waiting for an entry being built. Owned by the caller, linked into the entry until
 * done() runs or td__cache_cancel() removes it. On success the waiter holds a lease on e. */
struct td__cache_waiter {
    td__cache_waiter *next, *prev;
    td__cache_entry *entry;
    void (*done)(td__cache_waiter *w, td__cache_entry *e, int status, const td_error *err);
};

typedef struct td__cache_stats {
    uint64_t hits, misses, evictions, decodes, decode_ns_total, decode_ns_max;
    uint64_t refused;  /* loads refused with TD_EBUDGET */
    uint64_t pressure; /* memory pressure events acted on */
} td__cache_stats;

/* What the entries one uid loaded first hold. */
typedef struct td__cache_user {
    uint32_t uid;
    uint64_t entries; /* entries, those being built included */
    uint64_t bytes;   /* their bytes, reservations of builds in flight included */
} td__cache_user;

typedef struct td__cache {
    uv_loop_t *loop;
    const td__config *cfg;        /* borrowed; may be replaced (reload) */
    td__cache_entry *head, *tail; /* most recently used first */
    size_t n;
    td__cache_entry **index; /* chains of entries by key; index_cap buckets (a power of two) */
    td__hash_seed seed;      /* of the index's hash, and (hashed with each id) of the tables' */
    size_t index_cap;
    size_t building;    /* entries being built (on the thread pool or waiting for room) */
    uint64_t bytes;     /* snapshot, derived, pinned and kept reply bytes, and reservations */
    uint64_t transient; /* of those, the scratch of decodes in flight */
    td__cache_entry *wait_head, *wait_tail; /* builds waiting for room, first come first */
    int retrying;
    uint64_t next_id;      /* the last entry id given */
    td__cache_user *users; /* owned; one per uid with entries, in no order */
    size_t nusers, cap_users;
    td__cache_stats stats;
} td__cache;

void td__cache_init(td__cache *c, uv_loop_t *loop, const td__config *cfg);
/* Frees every entry. No entry may be building (see td__cache_idle). */
void td__cache_destroy(td__cache *c);
/* True when nothing is being built. */
int td__cache_idle(const td__cache *c);

/* The request a LOAD makes. */
typedef struct td__cache_request {
    int fd;           /* the client's descriptor (borrowed; dup'ed when the entry needs it) */
    const char *name; /* the client's name for the file (messages only), may be NULL */
    td_format format; /* TD_FORMAT_AUTO: from the content */
    uint32_t mode;    /* TD__PROTO_MODE_*; DEFAULT: from the config's path rules */
    uint32_t dequant; /* 0 or a td_dtype */
    uint64_t max_inflated;
    uint32_t uid; /* the client's; a new entry counts against this uid's quota */
} td__cache_request;

/* Looks up or creates the entry for req. Returns 0 with *out set and a lease taken when the
 * entry is ready; 1 when it is being built (w is queued: w->done runs later on the loop);
 * a negative code with *err on failure (bad descriptor, too many entries, TD_EBUDGET when the
 * budget or the uid's quota is full of held entries). A build can still fail with TD_EBUDGET
 * once it knows how much it must decode. */
int td__cache_acquire(td__cache *c, const td__cache_request *req, td__cache_waiter *w,
                      td__cache_entry **out, td_error *err);
/* Removes a queued waiter (its client went away). */
void td__cache_cancel(td__cache_waiter *w);
/* Gives back one lease. */
void td__cache_release(td__cache *c, td__cache_entry *e);
/* Turns a lease the caller was given on e (td__cache_acquire) into a hold of the daemon's own
 * (a preload line's): e stays cached as under a lease, but the hold is not a client's lease
 * (STATUS counts leases of clients only, and shows held entries as preloaded). */
void td__cache_hold(td__cache_entry *e);
/* Gives back one hold, as td__cache_release gives back a lease. */
void td__cache_unhold(td__cache *c, td__cache_entry *e);

/* Evicts every entry nobody holds (key == NULL), or those of one file (same dev, ino, size,
 * mtime; any dequantize target). Adds to *entries and *bytes. */
void td__cache_evict(td__cache *c, const td__cache_key *key, uint64_t *entries, uint64_t *bytes);
/* Evicts unreferenced entries, least recently used first, until every uid is within its quota
 * and the cache within the budget (after a reload lowered them). */
void td__cache_enforce_budget(td__cache *c);
/* Memory is short (why names the signal): evicts every entry nobody holds, and logs what went
 * and what clients still hold. */
void td__cache_relieve(td__cache *c, const char *why);
/* The per-uid figures: *out points at nusers records (valid until the cache changes). */
size_t td__cache_users(const td__cache *c, const td__cache_user **out);

/* The path a descriptor was opened as (malloc'd), from /proc/self/fd: what config rules match
 * and what the cache watches; NULL when the kernel has none worth using (deleted files,
 * anonymous files) or out of memory. */
char *td__cache_fd_path(int fd);
/* The key of a descriptor (fstat). TD_EINVAL for anything but a readable regular file. */
int td__cache_key_of(int fd, uint32_t dequant, td__cache_key *key, td_error *err);

/* What the server reads of an entry. */
const td__table *td__cache_entry_table(const td__cache_entry *e);
/* The entry's table as a LOAD_OK to a peer with limits lim encodes it (td__proto_loaded.tail),
 * kept from an earlier reply, or NULL. Valid until the next keep or the entry's end. */
const uint8_t *td__cache_entry_reply_tail(const td__cache_entry *e, const td__proto_limits *lim,
                                          size_t *len);
/* Keeps a copy of p[0..len), those bytes for limits lim (one set of limits at a time). */
void td__cache_entry_keep_reply_tail(td__cache_entry *e, const td__proto_limits *lim,
                                     const uint8_t *p, size_t len);
/* The descriptors of regions 1.. (region 0 is the client's own descriptor in map and pin mode,
 * the snapshot memfd in snapshot mode: region0_fd() gives that one or -1) and their sizes. */
/* Whether e is one split of a gguf-split set (served only to a LOAD flagged SHARD). */
int td__cache_entry_is_split(const td__cache_entry *e);
int td__cache_entry_region0_fd(const td__cache_entry *e);
int td__cache_entry_derived_fd(const td__cache_entry *e, uint64_t *size);
/* The entry's id: unique among every entry the daemon makes while it runs. */
uint64_t td__cache_entry_id(const td__cache_entry *e);
/* The sealed memfd of the entry's flat table (metadata included) and its size. */
int td__cache_entry_table_fd(const td__cache_entry *e, uint64_t *size);
uint64_t td__cache_entry_file_size(const td__cache_entry *e);
const char *td__cache_entry_name(const td__cache_entry *e);
uint32_t td__cache_entry_mode(const td__cache_entry *e);
/* The bytes it counts against the budget (what a build in flight reserved, scratch included,
 * until it is built). */
uint64_t td__cache_entry_bytes(const td__cache_entry *e);
/* The uid that loaded it first, whose quota it counts against. */
uint32_t td__cache_entry_uid(const td__cache_entry *e);
uint64_t td__cache_entry_leases(const td__cache_entry *e);
/* The daemon's own holds on it (td__cache_hold): non-zero for a preloaded file. */
uint64_t td__cache_entry_holds(const td__cache_entry *e);
uint64_t td__cache_entry_hits(const td__cache_entry *e);
uint64_t td__cache_entry_loads(const td__cache_entry *e);
/* uv_now() of the last load or release. */
uint64_t td__cache_entry_last_use(const td__cache_entry *e);
/* Iteration, most recently used first. */
td__cache_entry *td__cache_first(const td__cache *c);
td__cache_entry *td__cache_next(const td__cache_entry *e);

#endif
