/*
 * remote_client.c - td_client: one connection to the daemon kept for every request made through
 * it (loads, status, eviction, ping), thread-safe, reconnecting by itself after a restart.
 *
 * The handshake happens once per connection. The last array of a load made through a client
 * gives its lease back with a quiet RELEASE over the client's connection (nothing comes back to
 * read; with an older daemon the replies are read with the next request's, or in batches). A
 * lease granted on an earlier connection (before a daemon restart, or the parent's after
 * fork()) is not sent: the daemon ended it when that connection closed. The mappings stay
 * valid whatever happens to the daemon: they are ours.
 *
 * A client keeps what the daemon shares per entry: the flat table, checked once, for the next
 * load of the entry on the same connection (at most TD__TABLES_MAX tables and TD__TABLES_BYTES
 * bytes, least recently used first), and the file's mapping for as long as loads of it hold it.
 * With LEAN agreed it also remembers which entry each path's last load got (td__hint), so that
 * the next LOAD of the path says it keeps that table and the reply passes no descriptor: the
 * file region is the LOAD's own descriptor and the table is the kept one. A model's files are
 * loaded in one pipelined batch, each file's LOAD naming the table kept for it the same way (the
 * hint of its label, DIR/NAME); what the client keeps of the model itself, so that a load of
 * files that did not change reads and checks nothing again, is remote_model.c's.
 */
#include "remote.h"
#include "common.h"
#include "hash.h"
#include "model.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Request ids with this bit are RELEASEs, whose replies nobody waits for. */
#define TD__RELEASE_ID 0x80000000u
/* RELEASEs a td_client lets go unanswered before it reads their replies. */
#define TD__RELEASE_BATCH 32u
/* The daemon's tables a td_client keeps mapped and checked (least recently used go first): at
 * most this many, and at most this many bytes of them. They are the daemon's memory, which a
 * kept mapping holds on to after the daemon let the entry go. */
#define TD__TABLES_MAX     1024u
#define TD__TABLES_BYTES   (64ull << 20)
#define TD__TABLES_BUCKETS 2048u
/* Regions of one load a kept table remembers (the daemon sends one or two). */
#define TD__TABLE_REGIONS 4u
/* Paths remembered with the entry their last load got (a power of two). */
#define TD__HINTS 256u

/* A daemon entry's table kept by a client, and the mappings of its regions that are the file
 * itself (TD__PROTO_REGION_FILE) while loads still hold them, so that loads of one entry that
 * overlap share one mapping. A file mapping is not kept beyond its last load: it would keep a
 * replaced or deleted file's pages and disk blocks for as long as the process lived. Regions
 * of the daemon's memory (decoded buffers, snapshots) are mapped per load and unmapped with
 * it. */
typedef struct td__kept {
    struct td__kept *prev, *next; /* most recently used first */
    struct td__kept *chain;       /* in its hash bucket */
    uint64_t gen, entry;          /* the connection it came on, and the daemon's entry id */
    td__tab *tab;
    uint32_t nregions;
    uint64_t sizes[TD__TABLE_REGIONS];
    td__region *file[TD__TABLE_REGIONS]; /* FILE regions some load holds (no reference of
                                            ours: each clears its slot as it goes), or NULL */
} td__kept;

/* What a file region made through a client needs to clear its slot in td__kept when it goes. */
typedef struct td__file_slot {
    td_client *c;
    uint64_t gen, entry;
    uint32_t idx;
    td__region *region;
} td__file_slot;

/* The entry the last load of a path got, so that the next LOAD of it can say it keeps that
 * entry's table (feature LEAN) and the daemon leaves the table's descriptor out. Only a hint:
 * the daemon decides by the file, and leaves the table out only when the entry is the same. */
typedef struct td__hint {
    uint64_t path; /* td__hash of the path; 0: empty */
    uint64_t gen, entry;
} td__hint;

/* The kept table a LOAD said it has (`have`), held from the send to the reply so that it cannot
 * go meanwhile, with the region sizes it was checked against. */
typedef struct td__have {
    uint64_t entry, gen; /* entry 0: none */
    td__tab *tab;        /* a reference, or NULL */
    uint32_t nregions;
    uint64_t sizes[TD__TABLE_REGIONS];
} td__have;

/* A lease given back while another thread had the connection: sent by whoever has it next. */
typedef struct td__rel {
    struct td__rel *next;
    uint64_t lease, gen;
} td__rel;

struct td_client {
    atomic_long refs;        /* the caller's (until td_client_close) and one per live lease */
    _Atomic(td__rel *) rels; /* leases waiting to be given back (a lock-free stack) */
    pthread_mutex_t lock;    /* one request at a time on sock */
    int sock;                /* -1 while not connected */
    td__proto_receiver rx;   /* sock's replies, buffered; reset with every connection */
    uint64_t gen;            /* connections made so far; a lease belongs to one */
    pid_t pid;               /* the process that made the connection */
    volatile uint8_t *mark;  /* a page the kernel zeroes in a child after fork() (NULL: none) */
    uint32_t next_id;        /* of requests; RELEASE ids have TD__RELEASE_ID set */
    uint32_t next_rid;
    unsigned unanswered; /* RELEASEs sent whose replies are not read yet */
    uint64_t features;   /* TD__PROTO_F_* agreed on the connection */
    char *socket_path;
    pthread_mutex_t klock;   /* the kept tables (never taken before lock) */
    td__kept **buckets;      /* TD__TABLES_BUCKETS chains, or NULL before the first */
    td__kept *khead, *ktail; /* most recently used first */
    size_t nkept;
    uint64_t kept_bytes;
    td__hash_seed hseed; /* of the hints (klock) */
    td__hint hints[TD__HINTS];
    td__kmodels models; /* the models of several files loaded (remote_model.c) */
};

static void td__client_unlock(td_client *c);

/* The connection's receiver: buffered, and waiting in recvmsg (the socket is blocking and only
 * it reads there). */
static void td__client_rx_init(td_client *c)
{
    td__proto_receiver_init_buffered(&c->rx, NULL);
    td__proto_receiver_block(&c->rx);
}

/* Whether c's connection (if any) was made by this process, not inherited over fork(). Asked
 * on every request and release: the page marked at connect time and wiped in children
 * (MADV_WIPEONFORK) answers without a system call; getpid() where the kernel lacks it. */
static int td__client_ours(const td_client *c)
{
    return c->mark ? c->mark[0] != 0 : c->pid == getpid();
}

static void td__kept_free(td__kept *k)
{
    td__tab_release(k->tab); /* the file regions are their loads', not ours */
    free(k);
}

static td__kept **td__kept_bucket(td_client *c, uint64_t gen, uint64_t entry)
{
    return &c->buckets[(entry * 0x9e3779b97f4a7c15ull ^ gen) % TD__TABLES_BUCKETS];
}

/* Unlinks k from its bucket and the list. Under klock. */
static void td__kept_unlink(td_client *c, td__kept *k)
{
    td__kept **p = td__kept_bucket(c, k->gen, k->entry);
    while (*p != k)
        p = &(*p)->chain;
    *p = k->chain;
    (k->prev ? &k->prev->next : &c->khead)[0] = k->next;
    (k->next ? &k->next->prev : &c->ktail)[0] = k->prev;
    c->nkept--;
    c->kept_bytes -= td__tab_bytes(k->tab);
}

/* The table kept for entry on connection gen, or NULL. Under klock. */
static td__kept *td__kept_find(td_client *c, uint64_t gen, uint64_t entry)
{
    td__kept *k = c->buckets ? *td__kept_bucket(c, gen, entry) : NULL;
    while (k && (k->gen != gen || k->entry != entry))
        k = k->chain;
    return k;
}

/* Links k first in the list and into its bucket. Under klock, with c->buckets allocated. */
static void td__kept_link(td_client *c, td__kept *k)
{
    td__kept **b = td__kept_bucket(c, k->gen, k->entry);
    k->chain = *b;
    *b = k;
    k->prev = NULL;
    k->next = c->khead;
    (c->khead ? &c->khead->prev : &c->ktail)[0] = k;
    c->khead = k;
    c->nkept++;
    c->kept_bytes += td__tab_bytes(k->tab);
}

/* The last load of a file region made through a client let it go: its slot in the kept table
 * (if the table is still kept, and the slot still names it) is cleared, then it is unmapped. */
static void td__file_gone(void *ctx, void *base, size_t len)
{
    td__file_slot *s = ctx;
    td_client *c = s->c;
    pthread_mutex_lock(&c->klock);
    td__kept *k = td__kept_find(c, s->gen, s->entry);
    if (k && k->file[s->idx] == s->region)
        k->file[s->idx] = NULL;
    pthread_mutex_unlock(&c->klock);
    if (base)
        munmap(base, len);
    free(s);
}

/* Maps region idx of a LOAD_OK, the file itself, as a region that loads of the same entry
 * share while any holds it; with known (the entry's table is kept), the kept table learns of it
 * here, else td__client_keep does. The client outlives the region: every load through it holds
 * a reference of c until its regions are gone. */
static int td__client_map_file(td_client *c, uint64_t gen, uint64_t entry, const char *path,
                               const td__proto_region *r, uint32_t idx, td__region **out, int known,
                               td_error *err)
{
    td__region *plain;
    int rc = td__remote_map_region(path, r, idx, NULL, &plain, err);
    if (rc)
        return rc;
    td__file_slot *s = malloc(sizeof *s);
    td__region *shared = s ? td__region_new(plain->base, plain->len, td__file_gone, s) : NULL;
    if (!shared) {
        free(s);
        *out = plain; /* not shared, still a good mapping */
        return 0;
    }
    *s = (td__file_slot){c, gen, entry, idx, shared};
    shared->provenance = plain->provenance;
    plain->release = NULL; /* the mapping is shared's now */
    td__region_release(plain);
    *out = shared;
    if (known) {
        pthread_mutex_lock(&c->klock);
        td__kept *k = td__kept_find(c, gen, entry);
        if (k && idx < k->nregions && !k->file[idx])
            k->file[idx] = shared;
        pthread_mutex_unlock(&c->klock);
    }
    return 0;
}

/* Keeps tab, and the mappings of the regions flagged FILE, for later loads of the daemon's
 * entry ld->entry on connection gen; the least recently used go beyond the bounds. Keeping is
 * an optimisation: without memory for it, nothing is kept. */
static void td__client_keep(td_client *c, uint64_t gen, const td__proto_loaded *ld, td__tab *tab,
                            td__region *const *regions)
{
    td__kept *k = calloc(1, sizeof *k);
    if (!k)
        return;
    k->gen = gen;
    k->entry = ld->entry;
    k->nregions = ld->nregions;
    for (uint32_t i = 0; i < ld->nregions; i++) {
        k->sizes[i] = ld->regions[i].size;
        if (ld->regions[i].flags & TD__PROTO_REGION_FILE && regions[i]->release == td__file_gone)
            k->file[i] = regions[i];
    }
    k->tab = td__tab_retain(tab);
    pthread_mutex_lock(&c->klock);
    if (!c->buckets)
        c->buckets = calloc(TD__TABLES_BUCKETS, sizeof *c->buckets);
    if (!c->buckets ||
        td__kept_find(c, gen,
                      ld->entry)) { /* no room for the index, or another thread kept it first */
        pthread_mutex_unlock(&c->klock);
        td__kept_free(k);
        return;
    }
    td__kept_link(c, k);
    td__kept *gone = NULL;
    while (c->ktail != k && (c->nkept > TD__TABLES_MAX || c->kept_bytes > TD__TABLES_BYTES)) {
        td__kept *old = c->ktail;
        td__kept_unlink(c, old);
        old->chain = gone;
        gone = old;
    }
    pthread_mutex_unlock(&c->klock);
    while (gone) { /* unmapped outside the lock */
        td__kept *next = gone->chain;
        td__kept_free(gone);
        gone = next;
    }
}

/* Forgets every kept table (the arrays made over them keep what they use). */
static void td__kept_clear(td_client *c)
{
    pthread_mutex_lock(&c->klock);
    for (td__kept *k = c->khead, *next; k; k = next) {
        next = k->next;
        td__kept_free(k);
    }
    c->khead = c->ktail = NULL;
    c->nkept = 0;
    c->kept_bytes = 0;
    if (c->buckets)
        memset(c->buckets, 0, TD__TABLES_BUCKETS * sizeof *c->buckets);
    pthread_mutex_unlock(&c->klock);
}

static void td__client_unref(td_client *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* Closed, and its connection with it: the daemon ended those leases already. */
    for (td__rel *r = atomic_exchange(&c->rels, NULL), *next; r; r = next) {
        next = r->next;
        free(r);
    }
    td__kept_clear(c);
    free(c->buckets);
    td__kmodels_destroy(&c->models);
    td__proto_receiver_destroy(&c->rx);
    if (c->mark)
        munmap((void *)c->mark, 4096);
    pthread_mutex_destroy(&c->klock);
    pthread_mutex_destroy(&c->lock);
    free(c->socket_path);
    free(c);
}

/* Forgets the connection (a later call makes a new one); its leases end in the daemon. */
static void td__client_drop(td_client *c)
{
    if (c->sock >= 0)
        close(c->sock);
    c->sock = -1;
    c->unanswered = 0;
    td__proto_receiver_destroy(&c->rx); /* what was read ahead is that connection's */
    td__client_rx_init(c);
}

/* Connects and shakes hands unless connected. Under the lock. */
static int td__client_open(td_client *c, td_error *err)
{
    if (c->sock >= 0 && !td__client_ours(c)) {
        /* A child after fork(): the socket is its parent's connection, and so are the leases.
         * Closing our copy of the descriptor leaves the parent's alone. */
        close(c->sock);
        c->sock = -1;
        c->gen++;
        td__proto_receiver_destroy(&c->rx); /* our copies of what the parent read ahead */
        td__client_rx_init(c);
    }
    if (c->sock >= 0)
        return 0;
    int rc = td__remote_connect(c->socket_path, &c->sock, err);
    if (rc) {
        c->sock = -1;
        return rc;
    }
    td__proto_msg r;
    rc = td__remote_hello(c->sock, err);
    if (!rc)
        rc = td__remote_reply(c->sock, 1, TD__PROTO_HELLO_OK, TD__HELLO_TIMEOUT_MS, &r, err);
    if (rc) {
        td__client_drop(c);
        return rc;
    }
    c->features = r.u.hello.features;
    td__proto_msg_destroy(&r);
    c->gen++;
    /* Entry ids are the daemon's (which may have restarted): tables of the last connection are
     * never looked up again (their gen differs); let them go. */
    td__kept_clear(c);
    c->pid = getpid();
    if (c->mark)
        c->mark[0] = 1;
    c->next_id = 2;
    c->next_rid = 1;
    return 0;
}

/* Receives the next frame that is not a RELEASE's reply. Under the lock. */
static int td__client_recv(td_client *c, int timeout_ms, td__proto_msg *out, td_error *err)
{
    for (;;) {
        int rc = td__proto_recv_msg_rx(&c->rx, c->sock, timeout_ms, out, err);
        if (rc || !(out->id & TD__RELEASE_ID))
            return rc;
        td__proto_msg_destroy(out);
        if (c->unanswered)
            c->unanswered--;
    }
}

/* Sends the n requests m[0..n) (their ids are set here) at once and reads a reply to each,
 * connecting first when needed: replies[i] answers m[i], of type want, and status[i] says
 * whether it did (0), or the daemon's error for it (replies[i] is then empty). A connection
 * that breaks (the daemon restarted) is made again once and everything resent; any other
 * failure of the connection itself drops it, so that the next call starts clean, and is
 * returned (no reply is then held). *gen receives the connection the replies came on. err
 * receives the first error: the connection's, or the first daemon error to arrive, whose
 * request's index goes to *failed (n when there is none). */
static int td__client_call_many(td_client *c, td__proto_msg *m, size_t n, uint32_t want,
                                int timeout_ms, td__proto_msg *replies, int *status, size_t *failed,
                                uint64_t *gen, td_error *err)
{
    pthread_mutex_lock(&c->lock);
    int rc = TD_ECLOSED;
    size_t got = 0;
    uint64_t have_gen = gen ? *gen : 0;
    for (int attempt = 0; attempt < 2 && rc == TD_ECLOSED; attempt++) {
        got = 0;
        if ((rc = td__client_open(c, err)))
            break;
        /* A LOAD's `have` names an entry of the connection have_gen: on another (the daemon
         * may have restarted and given the id to another file), or without LEAN, it goes. */
        if (c->gen != have_gen || !(c->features & TD__PROTO_F_LEAN))
            for (size_t i = 0; i < n; i++)
                if (m[i].type == TD__PROTO_LOAD)
                    m[i].u.load.have = 0;
        if (c->next_id + n >= TD__RELEASE_ID)
            c->next_id = 2;
        uint32_t first = c->next_id;
        c->next_id += (uint32_t)n;
        for (size_t i = 0; i < n; i++) {
            m[i].id = first + (uint32_t)i;
            status[i] = 1; /* no reply yet */
        }
        for (size_t i = 0; !rc && i < n; i++)
            rc = td__proto_send_msg(c->sock, &m[i], NULL, TD__HELLO_TIMEOUT_MS, err);
        *failed = n;
        while (!rc && got < n) {
            td__proto_msg r;
            if ((rc = td__client_recv(c, timeout_ms, &r, err)))
                break;
            if (r.type == TD__PROTO_ERROR && r.id == 0) {
                /* Not an answer: the daemon says why it is closing the connection. */
                rc = td__err(err, TD_ECLOSED, "the daemon closed the connection: %s",
                             r.u.error.message);
                td__proto_msg_destroy(&r);
                break;
            }
            size_t i = r.id - first;
            if (r.id < first || i >= n || status[i] != 1) {
                rc = td__err(err, TD_EPROTO, "daemon answered %s #%u, which was not asked",
                             td__proto_type_name(r.type) ? td__proto_type_name(r.type) : "?", r.id);
                td__proto_msg_destroy(&r);
                break;
            }
            /* The daemon's error answer leaves the connection fine; a wrong reply does not. */
            td_error one = {0};
            int src = td__remote_reply_check(&r, r.id, want, &one);
            if (src == TD_EPROTO && r.type != TD__PROTO_ERROR) {
                rc = td__err(err, TD_EPROTO, "%s", one.message);
                break;
            }
            status[i] = src;
            if (!src)
                replies[i] = r;
            else if (*failed == n) {
                *failed = i;
                if (err)
                    *err = one;
            }
            got++;
        }
        if (rc) { /* the replies held are of a connection that is gone, leases and all */
            for (size_t i = 0; i < n; i++)
                if (status[i] == 0)
                    td__proto_msg_destroy(&replies[i]);
            td__client_drop(c);
        }
    }
    if (gen)
        *gen = c->gen;
    td__client_unlock(c);
    return rc;
}

/* One request (td__client_call_many): 0 with *reply, or the connection's or the daemon's
 * error. */
static int td__client_call(td_client *c, td__proto_msg *m, uint32_t want, int timeout_ms,
                           td__proto_msg *reply, uint64_t *gen, td_error *err)
{
    int status;
    size_t failed;
    int rc = td__client_call_many(c, m, 1, want, timeout_ms, reply, &status, &failed, gen, err);
    return rc ? rc : status;
}

/* Sends RELEASE for lease, unless the connection it was granted on is gone (the daemon then
 * ended it already). Replies are not waited for: they are read with the next request's, or here
 * once TD__RELEASE_BATCH are unread. Under the lock. */
static void td__client_send_release(td_client *c, uint64_t lease, uint64_t gen)
{
    if (c->sock < 0 || c->gen != gen || !td__client_ours(c))
        return; /* another connection's lease, or the parent's after fork() */
    td__proto_msg m;
    td_error err = {0};
    td__proto_msg_init(&m, TD__PROTO_RELEASE, TD__RELEASE_ID | c->next_rid++);
    c->next_rid &= ~TD__RELEASE_ID;
    m.u.release.lease = lease;
    int quiet = (c->features & TD__PROTO_F_QUIET) != 0;
    if (quiet) /* nothing comes back to read */
        m.u.release.flags = TD__PROTO_RELEASE_QUIET;
    int rc = td__proto_send_msg(c->sock, &m, NULL, TD__HELLO_TIMEOUT_MS, &err);
    if (!rc && !quiet && ++c->unanswered >= TD__RELEASE_BATCH) {
        while (!rc && c->unanswered) {
            td__proto_msg r;
            rc = td__proto_recv_msg_rx(&c->rx, c->sock, TD__HELLO_TIMEOUT_MS, &r, &err);
            if (!rc) {
                rc = r.id & TD__RELEASE_ID ? 0 : TD_EPROTO; /* nothing else is pending */
                td__proto_msg_destroy(&r);
                c->unanswered--;
            }
        }
    }
    if (rc)
        td__client_drop(c);
}

/* Gives back every queued lease, then unlocks; a lease queued meanwhile by a thread that found
 * the lock taken is sent here too, so none waits for a later request. */
static void td__client_unlock(td_client *c)
{
    for (;;) {
        for (td__rel *r = atomic_exchange(&c->rels, NULL), *next; r; r = next) {
            next = r->next;
            td__client_send_release(c, r->lease, r->gen);
            free(r);
        }
        pthread_mutex_unlock(&c->lock);
        if (!atomic_load(&c->rels) || pthread_mutex_trylock(&c->lock) != 0)
            return;
    }
}

/* The last region of a load made through c is gone. Freeing arrays never waits for another
 * thread's request on the connection: the lease is queued, and sent by this thread if the
 * connection is free, else by the thread that has it. */
static void td__client_release(td_client *c, uint64_t lease, uint64_t gen)
{
    td__rel *r = malloc(sizeof *r);
    if (r) {
        r->lease = lease;
        r->gen = gen;
        r->next = atomic_load(&c->rels);
        while (!atomic_compare_exchange_weak(&c->rels, &r->next, r))
            ;
        if (pthread_mutex_trylock(&c->lock) == 0)
            td__client_unlock(c);
    } else { /* no memory for the queue: wait for the connection */
        pthread_mutex_lock(&c->lock);
        td__client_send_release(c, lease, gen);
        td__client_unlock(c);
    }
    td__client_unref(c);
}

/* The end of a lease granted through a client (td__lease.end). */
static void td__client_end_lease(td__lease *l)
{
    td__client_release(l->owner, l->id, l->gen);
    free(l);
}

/* The end of a model's lease: every file's lease goes back (each held a reference of c). */
static void td__client_end_model_lease(td__lease *l)
{
    for (size_t i = 0; i < l->nids; i++)
        td__client_release(l->owner, l->ids[i], l->gens[i]);
    free(l->ids);
    free(l->gens);
    free(l);
}

/* The entry path's last load got, when c still keeps its table: *have receives it, with a
 * reference of the table. Returns the path's hash, for td__client_hint_set. */
static uint64_t td__client_hint(td_client *c, const char *path, td__have *have)
{
    uint64_t h = td__hash(c->hseed, path, strlen(path)) | 1; /* never 0, the empty slot's */
    pthread_mutex_lock(&c->klock);
    const td__hint *s = &c->hints[(h >> 32) & (TD__HINTS - 1)];
    td__kept *k = s->path == h ? td__kept_find(c, s->gen, s->entry) : NULL;
    if (k && k->nregions <= TD__TABLE_REGIONS) {
        have->entry = k->entry;
        have->gen = k->gen;
        have->tab = td__tab_retain(k->tab);
        have->nregions = k->nregions;
        memcpy(have->sizes, k->sizes, k->nregions * sizeof *k->sizes);
    }
    pthread_mutex_unlock(&c->klock);
    return h;
}

static void td__client_hint_set(td_client *c, uint64_t h, uint64_t gen, uint64_t entry)
{
    pthread_mutex_lock(&c->klock);
    c->hints[(h >> 32) & (TD__HINTS - 1)] = (td__hint){h, gen, entry};
    pthread_mutex_unlock(&c->klock);
}

/* The table and regions of a flat LOAD_OK (ld, on connection gen) through c: the entry's table
 * and its file mappings come from what c keeps when it has them (nothing is mapped, decoded or
 * checked again), else they are mapped, validated and kept; the daemon's buffers are mapped for
 * this load. have is what the LOAD said it keeps (its table is taken when the reply leaves the
 * table out and c let go of it meanwhile). *tabp and regions[0..ld->nregions) receive
 * references of the caller's; on failure nothing is held. */
static int td__client_tab_regions(td_client *c, const char *path, const td__proto_loaded *ld,
                                  uint64_t gen, td__have *have, td__tab **tabp,
                                  td__region **regions, td_error *err)
{
    td__tab *tab = NULL;
    uint32_t n = ld->nregions;
    int rc = 0;
    for (uint32_t i = 0; i < n; i++)
        regions[i] = NULL;

    pthread_mutex_lock(&c->klock);
    td__kept *k = td__kept_find(c, gen, ld->entry);
    if (k && k->nregions == n) {
        for (uint32_t i = 0; k && i < n; i++)
            if (k->sizes[i] != ld->regions[i].size)
                k = NULL; /* the daemon's word changed: not the same entry */
    } else {
        k = NULL;
    }
    if (k) {
        tab = td__tab_retain(k->tab);
        for (uint32_t i = 0; i < n; i++)
            if (k->file[i]) /* NULL when its last load is just letting it go */
                regions[i] = td__region_try_retain(k->file[i]);
        if (k != c->khead) { /* most recently used first */
            td__kept_unlink(c, k);
            td__kept_link(c, k);
        }
    }
    pthread_mutex_unlock(&c->klock);

    if (!tab && ld->table_kept) { /* let go of since the LOAD: the reference the LOAD took */
        int same = have->tab && have->nregions == n;
        for (uint32_t i = 0; same && i < n; i++)
            same = have->sizes[i] == ld->regions[i].size;
        if (same) {
            tab = have->tab;
            have->tab = NULL;
        } else {
            rc = td__err(err, TD_EPROTO,
                         "%s: the daemon left out the table of entry %llu with other regions "
                         "than it had",
                         path, (unsigned long long)ld->entry);
        }
    } else if (!tab) {
        rc = td__remote_map_tab(path, ld, &tab, err);
    }
    for (uint32_t i = 0; !rc && i < n; i++) {
        if (regions[i])
            continue;
        if ((ld->regions[i].flags & TD__PROTO_REGION_FILE) && n <= TD__TABLE_REGIONS)
            rc = td__client_map_file(c, gen, ld->entry, path, &ld->regions[i], i, &regions[i],
                                     k != NULL, err);
        else
            rc = td__remote_map_region(path, &ld->regions[i], i, NULL, &regions[i], err);
    }
    if (!rc && !k && n <= TD__TABLE_REGIONS)
        td__client_keep(c, gen, ld, tab, regions);
    if (rc) {
        for (uint32_t i = 0; i < n; i++) {
            td__region_release(regions[i]);
            regions[i] = NULL;
        }
        td__tab_release(tab);
        tab = NULL;
    }
    *tabp = tab;
    return rc;
}

/* The flat form of a LOAD_OK through c (reply->u.loaded.table_fd, or the table kept): its table
 * and regions (td__client_tab_regions), and the dict over them. Consumes the reply and the
 * caller's reference of lease. */
static int td__client_adopt_tab(td_client *c, const char *path, td__proto_msg *reply, uint64_t gen,
                                td__lease *lease, td__have *have, td_dict **arrays, td_meta **meta,
                                td_error *err)
{
    td__region *regions[TD__PROTO_FDS_MAX];
    td__tab *tab = NULL;
    uint32_t n = reply->u.loaded.nregions;
    int rc = td__client_tab_regions(c, path, &reply->u.loaded, gen, have, &tab, regions, err);
    if (!rc)
        rc = td__remote_finish_tab(path, tab, regions, n, lease, arrays, meta, err);
    else
        td__lease_unref(lease);
    for (uint32_t i = 0; i < n; i++)
        td__region_release(regions[i]);
    td__tab_release(tab);
    td__proto_msg_destroy(reply); /* closes the descriptors: the mappings stay */
    return rc;
}

/* What td__client_load_model holds for one load of a model: the requests, their replies, and
 * per file the kept table its LOAD names and the hash of its label (the hint's key). */
typedef struct td__model_call {
    td__proto_msg *msgs, *replies;
    int *status;
    td__have *haves;
    uint64_t *hints;
    td__tab **tabs;
} td__model_call;

static void td__model_call_free(td__model_call *mc, size_t n)
{
    for (size_t f = 0; mc->haves && f < n; f++)
        td__tab_release(mc->haves[f].tab);
    free(mc->msgs);
    free(mc->replies);
    free(mc->status);
    free(mc->haves);
    free(mc->hints);
    free(mc->tabs);
}

/* The flat replies of a model's files through c: each file's table and regions
 * (td__client_tab_regions: kept tables are used, new ones kept, and each file's label remembers
 * its entry for the next LOAD), then the kept model's dict over them. Consumes the replies and
 * one reference of lease. */
static int td__client_adopt_model(td_client *c, const char *path, td__kmodel *km,
                                  td__model_call *mc, uint64_t gen, td__lease *lease,
                                  td_dict **arrays, td_meta **meta, td_error *err)
{
    size_t n = td__kmodel_nfiles(km), total = 0, first = 0;
    for (size_t f = 0; f < n; f++)
        total += mc->replies[f].u.loaded.nregions;
    td__region **regions = calloc(total ? total : 1, sizeof *regions);
    int rc = regions ? 0 : td__err(err, TD_ENOMEM, "%s: out of memory", path);
    for (size_t f = 0; !rc && f < n; f++) {
        const td__proto_loaded *ld = &mc->replies[f].u.loaded;
        rc = td__client_tab_regions(c, td__kmodel_label(km, f), ld, gen, &mc->haves[f],
                                    &mc->tabs[f], &regions[first], err);
        if (rc) {
            td__err_prefix(err, rc, path);
            break;
        }
        td__client_hint_set(c, mc->hints[f], gen, ld->entry);
        if (ld->table_kept)
            atomic_fetch_add_explicit(&c->models.left_out, 1, memory_order_relaxed);
        first += ld->nregions;
    }
    if (!rc)
        rc = td__kmodel_adopt_tabs(&c->models, km, path, mc->replies, mc->tabs, regions, gen, lease,
                                   arrays, meta, err);
    else
        td__lease_unref(lease);
    for (size_t i = 0; regions && i < first; i++)
        td__region_release(regions[i]);
    free(regions);
    for (size_t f = 0; f < n; f++) {
        td__tab_release(mc->tabs[f]);
        td__proto_msg_destroy(&mc->replies[f]); /* closes the descriptors: the mappings stay */
    }
    return rc;
}

/* td_client_load of a model of several files (km, its files' descriptors in fds: each moves into
 * its reply, or stays the caller's): one LOAD flagged SHARD per file, all sent at once so that
 * the daemon indexes and decodes the files in parallel, each its own lease in the daemon; one
 * td__lease holds them all and gives every one back when the model's last array goes. Each
 * LOAD names the entry whose table c keeps for that file (the hint of its label, as for a file
 * loaded alone), and the kept table is held from the send to the reply. A file refused fails
 * the whole load, naming it, and the leases granted for the others go back. */
static int td__client_load_model(td_client *c, const char *path, const td_load_options *o,
                                 td__kmodel *km, int *fds, td_dict **arrays, td_meta **meta,
                                 td_error *err)
{
    size_t n = td__kmodel_nfiles(km);
    if (n > TD__PROTO_MODEL_FILES_MAX)
        return td__err(err, TD_ELIMIT, "%s: %zu files, over the bound of %u for the daemon", path,
                       n, TD__PROTO_MODEL_FILES_MAX);
    pthread_mutex_lock(&c->lock);
    int rc = td__client_open(c, err);
    uint64_t features = c->features;
    td__client_unlock(c);
    if (rc)
        return td__err_prefix(err, rc, path);
    if (!(features & TD__PROTO_F_MODEL))
        return td__err(err, TD_ENOTSUP, "%s: the daemon does not serve models of several files",
                       path);
    td__lease *lease = calloc(1, sizeof *lease);
    td__model_call mc = {calloc(n, sizeof *mc.msgs),   calloc(n, sizeof *mc.replies),
                         calloc(n, sizeof *mc.status), calloc(n, sizeof *mc.haves),
                         calloc(n, sizeof *mc.hints),  calloc(n, sizeof *mc.tabs)};
    if (lease) {
        lease->ids = calloc(n, sizeof *lease->ids);
        lease->gens = calloc(n, sizeof *lease->gens);
    }
    if (!lease || !lease->ids || !lease->gens || !mc.msgs || !mc.replies || !mc.status ||
        !mc.haves || !mc.hints || !mc.tabs) {
        if (lease) {
            free(lease->ids);
            free(lease->gens);
        }
        free(lease);
        td__model_call_free(&mc, n);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    atomic_init(&lease->refs, 1);
    lease->end = td__client_end_model_lease;
    lease->owner = c;
    /* The connection the kept tables named are of (td__client_call_many drops every `have` on
     * another); a table kept on an earlier one is not named. */
    uint64_t gen = 0;
    for (size_t f = 0; f < n; f++) {
        td__have *h = &mc.haves[f];
        mc.hints[f] = td__client_hint(c, td__kmodel_label(km, f), h);
        if (h->entry && gen && h->gen != gen) {
            td__tab_release(h->tab);
            *h = (td__have){0};
        } else if (h->entry) {
            gen = h->gen;
        }
        td__remote_load_msg(&mc.msgs[f], 0, fds[f], td__kmodel_label(km, f), o);
        mc.msgs[f].u.load.flags = TD__PROTO_LOAD_SHARD;
        mc.msgs[f].u.load.have = h->entry;
    }
    size_t failed = n;
    rc = td__client_call_many(c, mc.msgs, n, TD__PROTO_LOAD_OK, TD__LOAD_TIMEOUT_MS, mc.replies,
                              mc.status, &failed, &gen, err);
    for (size_t f = 0; !rc && f < n; f++) {
        if (mc.status[f] == 0) { /* granted: the model's lease gives it back */
            atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
            lease->ids[lease->nids] = mc.replies[f].u.loaded.lease;
            lease->gens[lease->nids++] = gen;
        }
    }
    /* msgs[f].u.load.have is what went out (td__client_call_many clears it on another
     * connection): a reply may leave out only that table. */
    for (size_t f = 0; !rc && f < n; f++)
        if (mc.status[f] == 0)
            rc = td__remote_take_own(td__kmodel_name(km, f), &mc.replies[f].u.loaded, &fds[f],
                                     mc.msgs[f].u.load.have, err);
    if (!rc && failed < n) { /* err holds the first refusal to arrive: name its file */
        rc = mc.status[failed];
        td__remote_name_file(err, rc, td__kmodel_name(km, failed));
    }
    size_t flat = 0;
    for (size_t f = 0; !rc && f < n; f++)
        flat += mc.replies[f].u.loaded.table_fd >= 0 || mc.replies[f].u.loaded.table_kept;
    if (!rc && flat && flat < n)
        rc = td__err(err, TD_EPROTO, "the daemon answered %zu files of %zu with a flat table", flat,
                     n);
    if (rc) {
        for (size_t f = 0; f < n; f++)
            if (mc.status[f] == 0)
                td__proto_msg_destroy(&mc.replies[f]);
        td__model_call_free(&mc, n);
        td__lease_unref(lease); /* gives back the leases granted */
        return td__err_prefix(err, rc, path);
    }
    if (flat)
        rc = td__client_adopt_model(c, path, km, &mc, gen, lease, arrays, meta, err);
    else /* a daemon without TABLE */
        rc = td__kmodel_adopt_msgpack(km, path, mc.replies, lease, arrays, meta, err);
    td__model_call_free(&mc, n);
    return rc;
}

int td_client_connect(const char *socket_path, td_client **out, td_error *err)
{
    const char *path = td__socket_path(socket_path);
    td_client *c = calloc(1, sizeof *c);
    if (!c || !(c->socket_path = strdup(path))) {
        free(c);
        return td__err(err, TD_ENOMEM, "out of memory");
    }
    atomic_init(&c->refs, 1);
    atomic_init(&c->rels, NULL);
    c->sock = -1;
    td__client_rx_init(c);
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page != MAP_FAILED && madvise(page, 4096, MADV_WIPEONFORK) == 0)
        c->mark = page;
    else if (page != MAP_FAILED)
        munmap(page, 4096);
    pthread_mutex_init(&c->klock, NULL);
    c->hseed = td__hash_seed_for(c);
    td__kmodels_init(&c->models);
    int rc = td__client_open(c, err);
    if (rc) {
        td__kmodels_destroy(&c->models);
        td__proto_receiver_destroy(&c->rx);
        if (c->mark)
            munmap((void *)c->mark, 4096);
        pthread_mutex_destroy(&c->klock);
        free(c->socket_path);
        free(c);
        return rc;
    }
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

void td_client_close(td_client *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    td__client_drop(c); /* the daemon ends the leases still held */
    td__client_unlock(c);
    td__kmodels_clear(&c->models); /* the dicts made over them keep theirs */
    td__client_unref(c);
}

td__kmodels *td__client_kmodels(td_client *c)
{
    return &c->models;
}

int td_client_load(td_client *c, const char *path, const td_load_options *opt, td_dict **arrays,
                   td_meta **meta, td_error *err)
{
    td_load_options o;
    int rc = td__load_check(path, opt, arrays, meta, &o, err);
    if (rc)
        return rc;
    td__kmodel *km;
    int *fds;
    if ((rc = td__kmodel_get(&c->models, path, &o, &km, &fds, err)))
        return rc;
    if (km) {
        rc = td__client_load_model(c, path, &o, km, fds, arrays, meta, err);
        for (size_t f = 0; f < td__kmodel_nfiles(km); f++)
            if (fds[f] >= 0)
                close(fds[f]);
        free(fds);
        td__kmodel_release(km);
        return rc;
    }
    int fd;
    if ((rc = td__open_ro(path, &fd, err)))
        return rc;
    td__lease *lease = calloc(1, sizeof *lease);
    if (!lease) {
        close(fd);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    td__proto_msg m, reply;
    td__have have = {0};
    uint64_t h = td__client_hint(c, path, &have);
    td__remote_load_msg(&m, 0, fd, path, &o);
    m.u.load.have = have.entry;
    lease->gen = have.gen; /* the connection `have` is of; then the one the reply came on */
    rc = td__client_call(c, &m, TD__PROTO_LOAD_OK, TD__LOAD_TIMEOUT_MS, &reply, &lease->gen, err);
    if (rc) {
        close(fd);
        td__tab_release(have.tab);
        free(lease);
        return td__remote_name_file(err, rc, path);
    }
    atomic_init(&lease->refs, 1);
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    lease->end = td__client_end_lease;
    lease->owner = c;
    lease->id = reply.u.loaded.lease;
    /* m.u.load.have is what went out (td__client_call_many clears it on another connection). */
    rc = td__remote_take_own(path, &reply.u.loaded, &fd, m.u.load.have, err);
    if (fd >= 0)
        close(fd);
    if (rc) {
        td__proto_msg_destroy(&reply);
        td__lease_unref(lease);
    } else if (reply.u.loaded.table_fd >= 0 || reply.u.loaded.table_kept) {
        td__client_hint_set(c, h, lease->gen, reply.u.loaded.entry);
        rc = td__client_adopt_tab(c, path, &reply, lease->gen, lease, &have, arrays, meta, err);
    } else {
        rc = td__remote_adopt(path, &reply, lease, arrays, meta, err);
    }
    td__tab_release(have.tab);
    return rc;
}

int td_client_ping(td_client *c, td_error *err)
{
    td__proto_msg m, r;
    td__proto_msg_init(&m, TD__PROTO_PING, 0);
    m.u.ping.data = 0x7464;
    int rc = td__client_call(c, &m, TD__PROTO_PONG, TD__HELLO_TIMEOUT_MS, &r, NULL, err);
    if (rc)
        return rc;
    rc = r.u.ping.data == 0x7464 ? 0 : td__err(err, TD_EPROTO, "PONG carries the wrong data");
    td__proto_msg_destroy(&r);
    return rc;
}

int td_client_status(td_client *c, td_status **out, td_error *err)
{
    td__proto_msg m, r;
    td__proto_msg_init(&m, TD__PROTO_STATUS, 0);
    m.u.status_req.flags = TD__PROTO_STATUS_FILES;
    int rc = td__client_call(c, &m, TD__PROTO_STATUS_OK, TD__HELLO_TIMEOUT_MS, &r, NULL, err);
    if (rc)
        return rc;
    rc = td__status_from_proto(&r.u.status, out, err);
    td__proto_msg_destroy(&r);
    return rc;
}

int td_client_evict(td_client *c, const char *path, uint64_t *entries, uint64_t *bytes,
                    td_error *err)
{
    td__proto_msg m, r;
    td__proto_msg_init(&m, TD__PROTO_EVICT, 0);
    int fd = -1, rc;
    if (path && (rc = td__open_ro(path, &fd, err)))
        return rc;
    m.u.evict.fd = fd;
    rc = td__client_call(c, &m, TD__PROTO_EVICT_OK, TD__LOAD_TIMEOUT_MS, &r, NULL, err);
    if (fd >= 0)
        close(fd);
    if (rc)
        return path ? td__err_prefix(err, rc, path) : rc;
    if (entries)
        *entries = r.u.evicted.entries;
    if (bytes)
        *bytes = r.u.evicted.bytes;
    td__proto_msg_destroy(&r);
    return 0;
}
