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
 * What a client keeps per daemon entry (the checked flat tables, the file mappings loads
 * share, each path's last entry) is kept.c's: with LEAN agreed, a LOAD names the table the
 * client keeps for its path, and the reply passes no descriptor (the file region is the LOAD's
 * own descriptor and the table is the kept one). A model's files are loaded in one pipelined
 * batch, each file's LOAD naming the table kept for it the same way (the hint of its label,
 * DIR/NAME); what the client keeps of the model itself, so that a load of files that did not
 * change reads and checks nothing again, is remote_model.c's.
 */
#include "remote.h"
#include "common.h"
#include "model.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Request ids with this bit are RELEASEs, whose replies nobody waits for. */
#define TD__RELEASE_ID 0x80000000u
/* RELEASEs a td_client lets go unanswered before it reads their replies. */
#define TD__RELEASE_BATCH 32u
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
    td__keep keep;      /* what it keeps per daemon entry (kept.c; never locked before lock) */
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

static void td__client_unref(td_client *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* Closed, and its connection with it: the daemon ended those leases already. */
    for (td__rel *r = atomic_exchange(&c->rels, NULL), *next; r; r = next) {
        next = r->next;
        free(r);
    }
    td__keep_destroy(&c->keep);
    td__kmodels_destroy(&c->models);
    td__proto_receiver_destroy(&c->rx);
    if (c->mark)
        munmap((void *)c->mark, 4096);
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
    td__keep_clear(&c->keep);
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

/* The flat form of a LOAD_OK through c (reply->u.loaded.table_fd, or the table kept): its table
 * and regions (td__keep_tab_regions), and the dict over them. Consumes the reply and the
 * caller's reference of lease. */
static int td__client_adopt_tab(td_client *c, const char *path, td__proto_msg *reply, uint64_t gen,
                                td__lease *lease, td__have *have, td_dict **arrays, td_meta **meta,
                                td_error *err)
{
    td__region *regions[TD__PROTO_FDS_MAX];
    td__tab *tab = NULL;
    uint32_t n = reply->u.loaded.nregions;
    int rc = td__keep_tab_regions(&c->keep, path, &reply->u.loaded, gen, have, &tab, regions, err);
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
 * (td__keep_tab_regions: kept tables are used, new ones kept, and each file's label remembers
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
        rc = td__keep_tab_regions(&c->keep, td__kmodel_label(km, f), ld, gen, &mc->haves[f],
                                  &mc->tabs[f], &regions[first], err);
        if (rc) {
            td__err_prefix(err, rc, path);
            break;
        }
        td__keep_hint_set(&c->keep, mc->hints[f], &mc->haves[f], gen, ld->entry);
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
        mc.hints[f] = td__keep_hint(&c->keep, td__kmodel_label(km, f), h);
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
    td__keep_init(&c->keep, c);
    td__kmodels_init(&c->models);
    int rc = td__client_open(c, err);
    if (rc) {
        td__kmodels_destroy(&c->models);
        td__keep_destroy(&c->keep);
        td__proto_receiver_destroy(&c->rx);
        if (c->mark)
            munmap((void *)c->mark, 4096);
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
    uint64_t h = td__keep_hint(&c->keep, path, &have);
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
        td__keep_hint_set(&c->keep, h, &have, lease->gen, reply.u.loaded.entry);
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
