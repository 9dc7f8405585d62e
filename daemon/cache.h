/*
 * cache.h - the daemon's cache of indexed, decoded weight files.
 *
 * One entry per (st_dev, st_ino, st_size, st_mtim, dequantize target) of a descriptor a client
 * passed. An entry holds the tensor table, the region-0 descriptor of a snapshot (or nothing:
 * in map and pin mode every client maps its own descriptor of the file), and one sealed memfd
 * with everything that had to be decoded. Entries are built on the libuv thread pool; loads of
 * an entry that is still being built wait for that one build.
 *
 * Clients hold leases; an entry with no lease is on the LRU list and may be evicted when the
 * memory budget (derived and snapshot bytes) is exceeded, when its file was replaced, or on
 * request. Evicting only closes the daemon's descriptors: mappings clients already made stay
 * valid.
 */
#ifndef TD_DAEMON_CACHE_H
#define TD_DAEMON_CACHE_H

#include "config.h"
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
} td__cache_stats;

typedef struct td__cache {
    uv_loop_t *loop;
    const td__config *cfg;        /* borrowed; may be replaced (reload) */
    td__cache_entry *head, *tail; /* most recently used first */
    size_t n;
    size_t building; /* entries on the thread pool */
    uint64_t bytes;  /* snapshot + derived bytes held */
    td__cache_stats stats;
} td__cache;

void td__cache_init(td__cache *c, uv_loop_t *loop, const td__config *cfg);
/* Frees every entry. No entry may be building (see td__cache_idle). */
void td__cache_destroy(td__cache *c);
/* True when nothing is on the thread pool. */
int td__cache_idle(const td__cache *c);

/* The request a LOAD makes. */
typedef struct td__cache_request {
    int fd;           /* the client's descriptor (borrowed; dup'ed when the entry needs it) */
    const char *name; /* the client's name for the file (messages only), may be NULL */
    td_format format; /* TD_FORMAT_AUTO: from the content */
    uint32_t mode;    /* TD__PROTO_MODE_*; DEFAULT: from the config's path rules */
    uint32_t dequant; /* 0 or a td_dtype */
    uint64_t max_inflated;
} td__cache_request;

/* Looks up or creates the entry for req. Returns 0 with *out set and a lease taken when the
 * entry is ready; 1 when it is being built (w is queued: w->done runs later on the loop);
 * a negative code with *err on failure (bad descriptor, too many entries, over budget). */
int td__cache_acquire(td__cache *c, const td__cache_request *req, td__cache_waiter *w,
                      td__cache_entry **out, td_error *err);
/* Removes a queued waiter (its client went away). */
void td__cache_cancel(td__cache_waiter *w);
/* Gives back one lease. */
void td__cache_release(td__cache *c, td__cache_entry *e);

/* Evicts every entry nobody holds (key == NULL), or those of one file (same dev, ino, size,
 * mtime; any dequantize target). Adds to *entries and *bytes. */
void td__cache_evict(td__cache *c, const td__cache_key *key, uint64_t *entries, uint64_t *bytes);
/* Evicts unreferenced entries, least recently used first, until the budget holds. */
void td__cache_enforce_budget(td__cache *c);

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
int td__cache_entry_region0_fd(const td__cache_entry *e);
int td__cache_entry_derived_fd(const td__cache_entry *e, uint64_t *size);
uint64_t td__cache_entry_file_size(const td__cache_entry *e);
const char *td__cache_entry_name(const td__cache_entry *e);
uint32_t td__cache_entry_mode(const td__cache_entry *e);
uint64_t td__cache_entry_bytes(const td__cache_entry *e);
uint64_t td__cache_entry_leases(const td__cache_entry *e);
uint64_t td__cache_entry_hits(const td__cache_entry *e);
uint64_t td__cache_entry_loads(const td__cache_entry *e);
/* uv_now() of the last load or release. */
uint64_t td__cache_entry_last_use(const td__cache_entry *e);
/* Iteration, most recently used first. */
td__cache_entry *td__cache_first(const td__cache *c);
td__cache_entry *td__cache_next(const td__cache_entry *e);

#endif
