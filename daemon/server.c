/*
 * server.c - see server.h.
 *
 * A client is a nonblocking Unix socket with a uv_poll handle, a buffered frame receiver (one
 * recvmsg takes every request waiting), a queue of encoded replies, the LOADs waiting for an
 * entry being built, and its leases. Every reply carries its own duplicates of the descriptors
 * it sends, closed once the frame is out, so a reply never depends on the entry still being
 * cached.
 *
 * Misbehaviour (a broken frame, a frame too large, a half frame left hanging past idle_timeout,
 * no HELLO first) gets an ERROR when the stream still allows one, then the connection is
 * closed. Nothing a client does reaches another client.
 */
#include "server.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* Replies queued before we stop reading a client's requests. */
#define SRV_OUT_HIGH 32
/* LOADs one client may have waiting at once. */
#define SRV_PENDING_MAX 256 /* = TD__PROTO_MODEL_FILES_MAX: a model's files may all be loading */
#define SRV_FEATURES                                                                               \
    (TD__PROTO_F_SNAPSHOT | TD__PROTO_F_PIN | TD__PROTO_F_DEQUANT | TD__PROTO_F_EVICT_FILE |       \
     TD__PROTO_F_STATUS_FILES | TD__PROTO_F_MODEL | TD__PROTO_F_TABLE | TD__PROTO_F_QUIET |        \
     TD__PROTO_F_LEAN)

typedef struct td__server_out {
    struct td__server_out *next;
    td__proto_out out;
    int fds[3]; /* owned duplicates, closed once sent (LOAD_OK: two regions and the table) */
    unsigned nfds;
    int close_after; /* close the connection once this frame is out */
} td__server_out;

typedef struct td__server_req {
    td__cache_waiter w; /* first: the waiter's done() finds the request */
    struct td__server_req *next, *prev;
    td__server_client *cl;
    uint32_t id;
    uint64_t flags; /* the LOAD's TD__PROTO_LOAD_* bits */
    int fd;         /* the client's file descriptor, owned */
    uint64_t have;  /* the entry whose table the client keeps (feature LEAN), or 0 */
} td__server_req;

typedef struct td__server_lease {
    uint64_t id;
    td__cache_entry *e;
} td__server_lease;

struct td__server_client {
    td__server_client *next, *prev;
    td__server *srv;
    int fd;
    uv_poll_t poll;
    uv_timer_t timer;
    uv_idle_t again; /* reads frames rx holds while the socket is quiet (td__server_update_poll) */
    int open_handles;
    int poll_events;
    td__proto_receiver rx;
    td__proto_cred cred;
    uint64_t id;
    int hello;
    uint64_t features;
    td__proto_limits peer;
    td__server_out *out_head, *out_tail;
    size_t out_n;
    td__server_req pending; /* list head */
    size_t npending;
    td__server_lease *leases;
    size_t nleases, cap_leases;
    uint64_t next_lease;
    uint64_t loads;
    int closing; /* close when the last reply is out and nothing is pending */
    int closed;
};

static void td__server_client_close(td__server_client *cl, const char *why);
static void td__server_flush(td__server_client *cl);
static void td__server_update_poll(td__server_client *cl);

static uint64_t td__server_now_ms(const td__server *srv)
{
    return uv_now(srv->loop);
}

/* ---- replies ---- */

static void td__server_out_free(td__server_out *o)
{
    for (unsigned k = 0; k < o->nfds; k++)
        close(o->fds[k]);
    td__proto_out_destroy(&o->out);
    free(o);
}

/* Duplicates the descriptors a queued frame still has to carry: the caller's may be closed
 * before the frame goes out. */
static int td__server_out_own_fds(td__server_out *o, td_error *err)
{
    for (unsigned i = 0; i < o->out.nfds; i++) {
        o->fds[i] = fcntl(o->out.fds[i], F_DUPFD_CLOEXEC, 3);
        if (o->fds[i] < 0)
            return td__err(err, TD_ESYS, "cannot duplicate a descriptor: %s", strerror(errno));
        o->nfds++;
        o->out.fds[i] = o->fds[i];
    }
    return 0;
}

/* Encodes m and sends it, or queues what the socket does not take at once. m's descriptors go
 * with the frame's first byte; only when that byte has to wait are they duplicated for the
 * queue (the caller may close its own right after). Returns 0 when m went out or is queued;
 * otherwise an ERROR went in its place, or the client is closed (we cannot answer it any more),
 * and the code says why. */
typedef struct td__server_encoded {
    void (*fn)(const td__proto_out *out, void *ctx); /* sees the frame once it is encoded */
    void *ctx;
} td__server_encoded;

static int td__server_send_seen(td__server_client *cl, const td__proto_msg *m, int close_after,
                                const td__server_encoded *seen)
{
    if (cl->closed)
        return TD_ECLOSED;
    td__server_out *o = calloc(1, sizeof *o);
    td_error err = {0};
    if (!o) {
        td__server_client_close(cl, "out of memory for a reply");
        return TD_ENOMEM;
    }
    int rc = td__proto_encode(m, &cl->peer, &o->out, &err);
    if (rc) {
        td__server_out_free(o);
        td__log_warn("client %llu (pid %d): reply %s not encodable: %s", (unsigned long long)cl->id,
                     (int)cl->cred.pid, td__proto_type_name(m->type), err.message);
        if (m->type == TD__PROTO_ERROR) {
            td__server_client_close(cl, "cannot encode an error reply");
            return rc;
        }
        td__proto_msg er;
        td__proto_msg_error(&er, m->id, rc, &err);
        td__server_send_seen(cl, &er, close_after, NULL);
        return rc;
    }
    if (seen)
        seen->fn(&o->out, seen->ctx);
    o->close_after = close_after;
    int tried = !cl->out_head;
    if (tried) {
        rc = td__proto_send_step(cl->fd, &o->out, &err);
        if (!rc) {
            td__server_out_free(o);
            if (close_after)
                td__server_client_close(cl, "closed after an error");
            else
                td__server_flush(cl); /* nothing queued: a closing client may go now */
            return 0;
        }
        if (rc != TD_EAGAIN) {
            td__server_out_free(o);
            td__server_client_close(cl, err.message);
            return rc;
        }
    }
    if (o->out.sent == 0 && (rc = td__server_out_own_fds(o, &err))) {
        td__server_out_free(o);
        td__proto_msg er;
        td__proto_msg_error(&er, m->id, err.code, &err);
        td__server_send_seen(cl, &er, 0, NULL);
        return rc;
    }
    if (cl->out_tail)
        cl->out_tail->next = o;
    else
        cl->out_head = o;
    cl->out_tail = o;
    cl->out_n++;
    if (tried)
        td__server_update_poll(cl); /* the socket is full: wait until it is writable */
    else
        td__server_flush(cl);
    return 0;
}

static int td__server_send(td__server_client *cl, const td__proto_msg *m, int close_after)
{
    return td__server_send_seen(cl, m, close_after, NULL);
}

static void td__server_send_error(td__server_client *cl, uint32_t id, int code, const td_error *err,
                                  int close_after)
{
    td__proto_msg m;
    td__proto_msg_error(&m, id, code, err);
    cl->srv->errors++;
    td__server_send(cl, &m, close_after);
}

static void td__server_poll_cb(uv_poll_t *h, int status, int events);
static void td__server_again_cb(uv_idle_t *h);

/* Polls for what the client needs now: readable unless closing or backed up, writable while
 * replies wait. Frames the receiver read ahead do not make the socket readable: while reading is
 * on and one is held (a read stopped after 16 frames, or replies backed up), the idle handle
 * comes back for them on the next turn of the loop. */
static void td__server_update_poll(td__server_client *cl)
{
    if (cl->closed)
        return;
    int ev = 0;
    if (!cl->closing && cl->out_n < SRV_OUT_HIGH)
        ev |= UV_READABLE;
    if (cl->out_head)
        ev |= UV_WRITABLE;
    if ((ev & UV_READABLE) && td__proto_receiver_ready(&cl->rx))
        uv_idle_start(&cl->again, td__server_again_cb);
    else
        uv_idle_stop(&cl->again);
    if (ev == cl->poll_events)
        return;
    cl->poll_events = ev;
    if (ev)
        uv_poll_start(&cl->poll, ev, td__server_poll_cb);
    else
        uv_poll_stop(&cl->poll);
}

static void td__server_flush(td__server_client *cl)
{
    while (!cl->closed && cl->out_head) {
        td__server_out *o = cl->out_head;
        td_error err = {0};
        int rc = td__proto_send_step(cl->fd, &o->out, &err);
        if (rc == TD_EAGAIN)
            break;
        if (rc) {
            td__server_client_close(cl, err.message);
            return;
        }
        cl->out_head = o->next;
        if (!cl->out_head)
            cl->out_tail = NULL;
        cl->out_n--;
        int close_after = o->close_after;
        td__server_out_free(o);
        if (close_after) {
            td__server_client_close(cl, "closed after an error");
            return;
        }
    }
    if (cl->closing && !cl->out_head && !cl->npending) {
        td__server_client_close(cl, "shutting down");
        return;
    }
    td__server_update_poll(cl);
}

/* ---- requests ---- */

typedef struct td__server_tail_ctx {
    td__cache_entry *e;
    const td__proto_limits *lim;
} td__server_tail_ctx;

static void td__server_keep_tail(const td__proto_out *out, void *ctx)
{
    const td__server_tail_ctx *k = ctx;
    td__cache_entry_keep_reply_tail(k->e, k->lim, out->buf + out->tail, out->len - out->tail);
}

static void td__server_reply_loaded(td__server_client *cl, const td__server_req *r,
                                    td__cache_entry *e)
{
    uint32_t id = r->id;
    td_error err = {0};
    if (cl->nleases >= cl->srv->cfg->max_leases) {
        td__cache_release(&cl->srv->cache, e);
        td__err(&err, TD_ELIMIT, "this connection holds %zu leases (max_leases)", cl->nleases);
        td__server_send_error(cl, id, err.code, &err, 0);
        return;
    }
    if (cl->nleases == cl->cap_leases) {
        size_t cap = cl->cap_leases ? cl->cap_leases * 2 : 8;
        td__server_lease *l = realloc(cl->leases, cap * sizeof *l);
        if (!l) {
            td__cache_release(&cl->srv->cache, e);
            td__err(&err, TD_ENOMEM, "out of memory");
            td__server_send_error(cl, id, err.code, &err, 0);
            return;
        }
        cl->leases = l;
        cl->cap_leases = cap;
    }
    uint64_t lease = cl->next_lease + 1; /* committed once the reply is out */

    td__proto_region regions[2];
    int snap = td__cache_entry_region0_fd(e);
    int lean = (cl->features & TD__PROTO_F_LEAN) != 0;
    /* Region 0: the snapshot, or the client's own descriptor of the file (which it may keep
     * mapped as long as it likes: it holds nothing of ours). Under LEAN that descriptor is not
     * sent back: the client maps the one it sent. */
    regions[0] = (td__proto_region){snap >= 0 ? snap : r->fd, td__cache_entry_file_size(e),
                                    snap >= 0 ? 0 : TD__PROTO_REGION_FILE};
    if (snap < 0 && lean) {
        regions[0].fd = -1;
        regions[0].flags |= TD__PROTO_REGION_OWN;
    }
    uint32_t n = 1;
    uint64_t dsize;
    int dfd = td__cache_entry_derived_fd(e, &dsize);
    if (dfd >= 0)
        regions[n++] = (td__proto_region){dfd, dsize, 0};
    td__proto_msg m;
    td__proto_msg_init(&m, TD__PROTO_LOAD_OK, id);
    m.u.loaded.lease = lease;
    m.u.loaded.format = td__cache_entry_table(e)->format;
    m.u.loaded.regions = regions;
    m.u.loaded.nregions = n;
    int sent;
    if (cl->features & TD__PROTO_F_TABLE) {
        /* The flat table the entry published once: the client maps it (or finds it mapped
         * already, by the entry's id) instead of decoding a table per load. */
        m.u.loaded.table_fd = td__cache_entry_table_fd(e, &m.u.loaded.table_size);
        m.u.loaded.entry = td__cache_entry_id(e);
        if (lean && r->have == m.u.loaded.entry) { /* the client keeps it: no descriptor */
            m.u.loaded.table_fd = -1;
            m.u.loaded.table_kept = true;
        }
        sent = td__server_send_seen(cl, &m, 0, NULL);
    } else {
        /* The table never changes: the first reply (for peers with these limits) keeps its
         * encoded bytes, and every later reply splices them in. */
        m.u.loaded.table = (td__table *)td__cache_entry_table(e);
        m.u.loaded.tail = td__cache_entry_reply_tail(e, &cl->peer, &m.u.loaded.tail_len);
        td__server_tail_ctx keep = {e, &cl->peer};
        td__server_encoded seen = {td__server_keep_tail, &keep};
        sent = td__server_send_seen(cl, &m, 0, m.u.loaded.tail ? NULL : &seen);
    }
    if (sent || cl->closed) {
        /* An ERROR went instead (a table over the peer's limits...), or the client is gone
         * (its leases were released as it closed): this lease was never granted. */
        td__cache_release(&cl->srv->cache, e);
        return;
    }
    /* Nothing the client sends can be read before this returns to the loop. */
    cl->next_lease = lease;
    cl->leases[cl->nleases++] = (td__server_lease){lease, e};
    cl->loads++;
    td__log_debug("client %llu (pid %d uid %d): load %s: lease %llu, %zu tensors",
                  (unsigned long long)cl->id, (int)cl->cred.pid, (int)cl->cred.uid,
                  td__cache_entry_name(e), (unsigned long long)lease, td__cache_entry_table(e)->n);
}

static void td__server_req_free(td__server_req *r)
{
    if (r->fd >= 0)
        close(r->fd);
    free(r);
}

/* A split of a gguf-split set alone is not a model: a LOAD that does not say it loads a shard
 * of a model the client has checked (an older client) gets TD_ENOTSUP and loads the set in
 * embedded mode. Returns 0 when e may be served; else releases e and answers the error. */
static int td__server_check_split(td__server_client *cl, uint32_t id, uint64_t flags,
                                  td__cache_entry *e, const char *name)
{
    if (!td__cache_entry_is_split(e) || (flags & TD__PROTO_LOAD_SHARD))
        return 0;
    td_error err = {0};
    char q[80];
    td__err(&err, TD_ENOTSUP,
            "%s: a split of a gguf-split set: load the set from its first split (a client "
            "without the model feature loads it in embedded mode)",
            name ? td__quote(name, strlen(name), q, sizeof q) : "(fd)");
    td__cache_release(&cl->srv->cache, e);
    td__server_send_error(cl, id, err.code, &err, 0);
    return 1;
}

static void td__server_req_unlink(td__server_req *r)
{
    r->prev->next = r->next;
    r->next->prev = r->prev;
    r->cl->npending--;
}

/* An entry this request waited for is built (e != NULL, with a lease for us) or failed. */
static void td__server_load_done(td__cache_waiter *w, td__cache_entry *e, int status,
                                 const td_error *err)
{
    td__server_req *r = (td__server_req *)w;
    td__server_client *cl = r->cl;
    td__server_req_unlink(r);
    if (status)
        td__server_send_error(cl, r->id, status, err, 0);
    else if (!td__server_check_split(cl, r->id, r->flags, e, td__cache_entry_name(e)))
        td__server_reply_loaded(cl, r, e);
    td__server_req_free(r);
    if (!cl->closed)
        td__server_flush(cl);
    td__server_check_drained(cl->srv);
}

static void td__server_on_load(td__server_client *cl, td__proto_msg *m)
{
    td_error err = {0};
    td__proto_load *ld = &m->u.load;
    if (cl->npending >= SRV_PENDING_MAX) {
        td__err(&err, TD_ELIMIT, "%zu loads already waiting on this connection", cl->npending);
        td__server_send_error(cl, m->id, err.code, &err, 0);
        return;
    }
    if (ld->flags & ~(uint64_t)TD__PROTO_LOAD_FLAGS_ALL) {
        td__err(&err, TD_ENOTSUP, "LOAD flags 0x%llx: unknown bits", (unsigned long long)ld->flags);
        td__server_send_error(cl, m->id, err.code, &err, 0);
        return;
    }
    if (ld->have && !(cl->features & TD__PROTO_F_LEAN)) {
        td__err(&err, TD_ENOTSUP, "LOAD field 'have' without the LEAN feature");
        td__server_send_error(cl, m->id, err.code, &err, 0);
        return;
    }
    td__server_req *r = calloc(1, sizeof *r);
    if (!r) {
        td__err(&err, TD_ENOMEM, "out of memory");
        td__server_send_error(cl, m->id, err.code, &err, 0);
        return;
    }
    r->cl = cl;
    r->id = m->id;
    r->flags = ld->flags;
    r->have = ld->have;
    r->fd = ld->fd; /* ours now */
    ld->fd = -1;
    r->w.done = td__server_load_done;
    td__cache_request q = {.fd = r->fd,
                           .name = ld->name,
                           .format = ld->format,
                           .mode = ld->mode,
                           .dequant = ld->dequant,
                           .max_inflated = ld->max_inflated,
                           .uid = (uint32_t)cl->cred.uid};
    td__cache_entry *e = NULL;
    int rc = td__cache_acquire(&cl->srv->cache, &q, &r->w, &e, &err);
    if (rc == 1) {
        r->next = &cl->pending;
        r->prev = cl->pending.prev;
        cl->pending.prev->next = r;
        cl->pending.prev = r;
        cl->npending++;
        return;
    }
    if (rc == 0) {
        if (!td__server_check_split(cl, m->id, ld->flags, e, ld->name))
            td__server_reply_loaded(cl, r, e);
    } else {
        char name[80];
        td__log_info("client %llu (pid %d): load %s refused: %s", (unsigned long long)cl->id,
                     (int)cl->cred.pid,
                     ld->name ? td__quote(ld->name, strlen(ld->name), name, sizeof name) : "(fd)",
                     err.message);
        td__server_send_error(cl, m->id, rc, &err, 0);
    }
    td__server_req_free(r);
}

static void td__server_on_release(td__server_client *cl, td__proto_msg *m)
{
    uint64_t id = m->u.release.lease;
    if (m->u.release.flags & ~(uint64_t)TD__PROTO_RELEASE_QUIET) {
        td_error err;
        td__err(&err, TD_ENOTSUP, "RELEASE flags 0x%llx: unknown bits",
                (unsigned long long)m->u.release.flags);
        td__server_send_error(cl, m->id, err.code, &err, 0);
        return;
    }
    for (size_t i = 0; i < cl->nleases; i++) {
        if (cl->leases[i].id != id)
            continue;
        td__cache_release(&cl->srv->cache, cl->leases[i].e);
        cl->leases[i] = cl->leases[--cl->nleases];
        if (m->u.release.flags & TD__PROTO_RELEASE_QUIET)
            return;
        td__proto_msg r;
        td__proto_msg_init(&r, TD__PROTO_RELEASE_OK, m->id);
        r.u.release.lease = id;
        td__server_send(cl, &r, 0);
        return;
    }
    td_error err;
    td__err(&err, TD_ENOTFOUND, "no lease %llu on this connection", (unsigned long long)id);
    if (m->u.release.flags & TD__PROTO_RELEASE_QUIET)
        cl->srv->errors++; /* counted, not answered: a quiet RELEASE reads nothing back */
    else
        td__server_send_error(cl, m->id, err.code, &err, 0);
}

void td__server_stats(const td__server *srv, td__proto_stats *st)
{
    memset(st, 0, sizeof *st);
    const td__cache *c = &srv->cache;
    for (const td__cache_entry *e = td__cache_first(c); e; e = td__cache_next(e)) {
        st->entries++;
        st->leases += td__cache_entry_leases(e);
    }
    st->bytes = c->bytes;
    st->derived_bytes = c->bytes;
    st->budget = srv->cfg->max_memory;
    st->quota = srv->cfg->max_memory_per_uid;
    st->refused = c->stats.refused;
    st->pressure = c->stats.pressure;
    st->hits = c->stats.hits;
    st->misses = c->stats.misses;
    st->evictions = c->stats.evictions;
    st->clients = srv->nclients;
    st->decodes = c->stats.decodes;
    st->decode_ns_total = c->stats.decode_ns_total;
    st->decode_ns_max = c->stats.decode_ns_max;
    st->errors = srv->errors;
    st->uptime_ms = td__server_now_ms(srv) - srv->started_ms;
}

static void td__server_on_status(td__server_client *cl, td__proto_msg *m)
{
    td__proto_msg r;
    td__proto_msg_init(&r, TD__PROTO_STATUS_OK, m->id);
    td__server_stats(cl->srv, &r.u.status.stats);
    td__proto_status_file *files = NULL;
    if (m->u.status_req.flags & TD__PROTO_STATUS_FILES) {
        size_t n = r.u.status.stats.entries;
        files = calloc(n ? n : 1, sizeof *files);
        if (!files) {
            td_error err;
            td__err(&err, TD_ENOMEM, "out of memory");
            td__server_send_error(cl, m->id, err.code, &err, 0);
            return;
        }
        size_t i = 0;
        for (td__cache_entry *e = td__cache_first(&cl->srv->cache); e && i < n;
             e = td__cache_next(e), i++) {
            files[i].name = (char *)td__cache_entry_name(e);
            files[i].format = td__cache_entry_table(e)->format;
            files[i].mode = td__cache_entry_mode(e);
            files[i].bytes = td__cache_entry_bytes(e);
            files[i].leases = td__cache_entry_leases(e);
            files[i].hits = td__cache_entry_hits(e);
            files[i].tensors = td__cache_entry_table(e)->n;
            files[i].file_bytes = td__cache_entry_file_size(e);
            td__cache_entry_derived_fd(e, &files[i].derived_bytes);
            files[i].loads = td__cache_entry_loads(e);
            files[i].idle_ms = td__server_now_ms(cl->srv) - td__cache_entry_last_use(e);
            files[i].flags = td__cache_entry_holds(e) ? TD__PROTO_FILE_PRELOADED : 0;
        }
        r.u.status.files = files;
        r.u.status.nfiles = (uint32_t)i;
    }
    const td__cache_user *cu;
    size_t nu = td__cache_users(&cl->srv->cache, &cu);
    td__proto_status_user *users = calloc(nu ? nu : 1, sizeof *users);
    if (!users) {
        free(files);
        td_error err;
        td__err(&err, TD_ENOMEM, "out of memory");
        td__server_send_error(cl, m->id, err.code, &err, 0);
        return;
    }
    for (size_t i = 0; i < nu; i++)
        users[i] = (td__proto_status_user){cu[i].uid, cu[i].entries, cu[i].bytes,
                                           cl->srv->cfg->max_memory_per_uid};
    r.u.status.users = users;
    r.u.status.nusers = (uint32_t)nu;
    td__server_send(cl, &r, 0);
    free(files);
    free(users);
}

static void td__server_on_evict(td__server_client *cl, td__proto_msg *m)
{
    td_error err = {0};
    uint64_t n = 0, bytes = 0;
    if (m->u.evict.fd >= 0) {
        td__cache_key key;
        int rc = td__cache_key_of(m->u.evict.fd, 0, &key, &err);
        if (rc) {
            td__server_send_error(cl, m->id, rc, &err, 0);
            return;
        }
        td__cache_evict(&cl->srv->cache, &key, &n, &bytes);
    } else {
        td__cache_evict(&cl->srv->cache, NULL, &n, &bytes);
    }
    td__log_info("client %llu (pid %d): evict: %llu entries, %llu bytes",
                 (unsigned long long)cl->id, (int)cl->cred.pid, (unsigned long long)n,
                 (unsigned long long)bytes);
    td__proto_msg r;
    td__proto_msg_init(&r, TD__PROTO_EVICT_OK, m->id);
    r.u.evicted.entries = n;
    r.u.evicted.bytes = bytes;
    td__server_send(cl, &r, 0);
}

static void td__server_on_hello(td__server_client *cl, td__proto_msg *m)
{
    td_error err = {0};
    uint32_t version;
    uint64_t agreed;
    int rc = td__proto_negotiate(&m->u.hello, TD__PROTO_MIN_VERSION, TD__PROTO_VERSION,
                                 SRV_FEATURES, &version, &agreed, &err);
    if (rc) {
        td__server_send_error(cl, m->id, rc, &err, 1);
        return;
    }
    cl->hello = 1;
    cl->features = agreed;
    cl->peer.max_frame = m->u.hello.max_frame;
    cl->peer.max_fds = m->u.hello.max_fds;
    uv_timer_stop(&cl->timer);
    td__proto_msg r;
    td__proto_msg_init(&r, TD__PROTO_HELLO_OK, m->id);
    r.u.hello.version = version;
    r.u.hello.min_version = version;
    r.u.hello.features = agreed;
    r.u.hello.max_frame = cl->srv->cfg->max_frame;
    r.u.hello.max_fds = 2;
    char software[48];
    snprintf(software, sizeof software, "tensord %s", td_version_string());
    r.u.hello.software = software;
    td__server_send(cl, &r, 0);
}

static void td__server_dispatch(td__server_client *cl, td__proto_frame *f)
{
    td__proto_msg m;
    td_error err = {0};
    td__proto_limits lim = {.max_frame = cl->srv->cfg->max_frame, .max_fds = 2};
    int rc = td__proto_decode_frame(f, &lim, &m, &err);
    if (rc) {
        td__log_info("client %llu (pid %d): bad request: %s", (unsigned long long)cl->id,
                     (int)cl->cred.pid, err.message);
        /* An unknown message type leaves the stream intact; anything else does not. */
        td__server_send_error(cl, m.id, rc, &err, rc != TD_ENOTSUP);
        return;
    }
    if (!cl->hello && m.type != TD__PROTO_HELLO) {
        td__err(&err, TD_EPROTO, "the first message must be HELLO, not %s",
                td__proto_type_name(m.type));
        td__server_send_error(cl, m.id, err.code, &err, 1);
    } else {
        switch (m.type) {
        case TD__PROTO_HELLO:
            td__server_on_hello(cl, &m);
            break;
        case TD__PROTO_LOAD:
            td__server_on_load(cl, &m);
            break;
        case TD__PROTO_RELEASE:
            td__server_on_release(cl, &m);
            break;
        case TD__PROTO_STATUS:
            td__server_on_status(cl, &m);
            break;
        case TD__PROTO_EVICT:
            td__server_on_evict(cl, &m);
            break;
        case TD__PROTO_PING: {
            td__proto_msg r;
            td__proto_msg_init(&r, TD__PROTO_PONG, m.id);
            r.u.ping.data = m.u.ping.data;
            td__server_send(cl, &r, 0);
            break;
        }
        default:
            td__err(&err, TD_ENOTSUP, "%s is not a request", td__proto_type_name(m.type));
            td__server_send_error(cl, m.id, err.code, &err, 0);
            break;
        }
    }
    td__proto_msg_destroy(&m);
}

static void td__server_timer_cb(uv_timer_t *t)
{
    td__server_client *cl = t->data;
    td__server_client_close(cl, cl->hello ? "a frame left unfinished past idle_timeout"
                                          : "no HELLO within idle_timeout");
}

static void td__server_read(td__server_client *cl)
{
    for (int frames = 0; !cl->closed && !cl->closing && frames < 16; frames++) {
        if (cl->out_n >= SRV_OUT_HIGH)
            break;
        td__proto_frame f;
        td_error err = {0};
        int rc = td__proto_receiver_step(&cl->rx, cl->fd, &f, &err);
        if (rc == 0) /* nothing more, or a short read: uv_poll is level-triggered */
            break;
        if (rc < 0) {
            td__server_client_close(cl, rc == TD_ECLOSED && td__proto_receiver_idle(&cl->rx)
                                            ? "disconnected"
                                            : err.message);
            return;
        }
        td__server_dispatch(cl, &f);
        td__proto_frame_destroy(&f);
    }
    if (cl->closed)
        return;
    /* A frame started and not finished must finish within idle_timeout. */
    if (cl->hello) {
        if (!td__proto_receiver_idle(&cl->rx)) {
            if (!uv_is_active((uv_handle_t *)&cl->timer))
                uv_timer_start(&cl->timer, td__server_timer_cb, cl->srv->cfg->idle_timeout_ms, 0);
        } else {
            uv_timer_stop(&cl->timer);
        }
    }
}

static void td__server_again_cb(uv_idle_t *h)
{
    td__server_client *cl = h->data;
    uv_idle_stop(h);
    td__server_read(cl);
    if (!cl->closed)
        td__server_update_poll(cl);
}

static void td__server_poll_cb(uv_poll_t *h, int status, int events)
{
    td__server_client *cl = h->data;
    if (status < 0) {
        td__server_client_close(cl, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE)
        td__server_flush(cl);
    if (!cl->closed && (events & UV_READABLE))
        td__server_read(cl);
    if (!cl->closed)
        td__server_update_poll(cl);
}

/* ---- connections ---- */

static void td__server_handle_closed(uv_handle_t *h)
{
    td__server_client *cl = h->data;
    if (--cl->open_handles == 0) {
        td__server *srv = cl->srv;
        free(cl);
        td__server_check_drained(srv);
    }
}

static void td__server_client_close(td__server_client *cl, const char *why)
{
    if (cl->closed)
        return;
    cl->closed = 1;
    td__server *srv = cl->srv;
    td__log_info("client %llu (pid %d uid %d): closed (%s), %llu loads, %zu leases released",
                 (unsigned long long)cl->id, (int)cl->cred.pid, (int)cl->cred.uid, why,
                 (unsigned long long)cl->loads, cl->nleases);
    while (cl->pending.next != &cl->pending) {
        td__server_req *r = cl->pending.next;
        td__cache_cancel(&r->w);
        td__server_req_unlink(r);
        td__server_req_free(r);
    }
    for (size_t i = 0; i < cl->nleases; i++)
        td__cache_release(&srv->cache, cl->leases[i].e);
    free(cl->leases);
    cl->leases = NULL;
    cl->nleases = 0;
    while (cl->out_head) {
        td__server_out *o = cl->out_head;
        cl->out_head = o->next;
        td__server_out_free(o);
    }
    cl->out_tail = NULL;
    cl->out_n = 0;
    td__proto_receiver_destroy(&cl->rx);
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        srv->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    srv->nclients--;
    uv_poll_stop(&cl->poll);
    close(cl->fd);
    cl->fd = -1;
    uv_close((uv_handle_t *)&cl->poll, td__server_handle_closed);
    uv_close((uv_handle_t *)&cl->timer, td__server_handle_closed);
    uv_close((uv_handle_t *)&cl->again, td__server_handle_closed);
}

static void td__server_accept_one(td__server *srv, int fd)
{
    td_error err = {0};
    td__proto_cred cred = {0, 0, 0};
    td__proto_peercred(fd, &cred, &err);
    if (srv->nclients >= srv->cfg->max_clients) {
        td__log_warn("refusing a client (pid %d uid %d): %zu clients connected (max_clients)",
                     (int)cred.pid, (int)cred.uid, srv->nclients);
        close(fd);
        return;
    }
    /* One user cannot take every slot from the others. */
    size_t same_uid = 0;
    for (const td__server_client *o = srv->clients; o; o = o->next)
        same_uid += o->cred.uid == cred.uid;
    if (same_uid >= srv->cfg->max_clients_per_uid) {
        td__log_warn("refusing a client (pid %d uid %d): that user has %zu connections "
                     "(max_clients_per_uid)",
                     (int)cred.pid, (int)cred.uid, same_uid);
        close(fd);
        return;
    }
    td__server_client *cl = calloc(1, sizeof *cl);
    if (!cl) {
        close(fd);
        return;
    }
    cl->srv = srv;
    cl->fd = fd;
    cl->cred = cred;
    cl->id = ++srv->next_client_id;
    cl->pending.next = cl->pending.prev = &cl->pending;
    td__proto_limits lim = {.max_frame = srv->cfg->max_frame, .max_fds = 2};
    td__proto_receiver_init_buffered(&cl->rx, &lim);
    if (uv_poll_init(srv->loop, &cl->poll, fd) != 0) {
        td__proto_receiver_destroy(&cl->rx);
        close(fd);
        free(cl);
        return;
    }
    uv_timer_init(srv->loop, &cl->timer);
    uv_idle_init(srv->loop, &cl->again);
    cl->poll.data = cl->timer.data = cl->again.data = cl;
    cl->open_handles = 3;
    cl->next = srv->clients;
    if (srv->clients)
        srv->clients->prev = cl;
    srv->clients = cl;
    srv->nclients++;
    td__log_debug("client %llu (pid %d uid %d gid %d): connected", (unsigned long long)cl->id,
                  (int)cred.pid, (int)cred.uid, (int)cred.gid);
    uv_timer_start(&cl->timer, td__server_timer_cb, srv->cfg->idle_timeout_ms, 0);
    td__server_update_poll(cl);
}

static void td__server_accept_cb(uv_poll_t *h, int status, int events)
{
    (void)events;
    td__server *srv = h->data;
    if (status < 0 || srv->draining)
        return;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                td__log_warn("accept: %s", strerror(errno));
            return;
        }
        td__server_accept_one(srv, fd);
    }
}

int td__server_init(td__server *srv, uv_loop_t *loop, td__config *cfg, int listen_fd, td_error *err)
{
    memset(srv, 0, sizeof *srv);
    srv->loop = loop;
    srv->cfg = cfg;
    srv->listen_fd = listen_fd;
    srv->started_ms = uv_now(loop);
    td__cache_init(&srv->cache, loop, cfg);
    int fl = fcntl(listen_fd, F_GETFL);
    if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return td__err(err, TD_ESYS, "listening socket: %s", strerror(errno));
    if (uv_poll_init(loop, &srv->listen_poll, listen_fd) != 0)
        return td__err(err, TD_ESYS, "listening socket: cannot poll it");
    srv->listen_poll.data = srv;
    return 0;
}

int td__server_start(td__server *srv, td_error *err)
{
    int rc = uv_poll_start(&srv->listen_poll, UV_READABLE, td__server_accept_cb);
    if (rc)
        return td__err(err, TD_ESYS, "listening socket: %s", uv_strerror(rc));
    srv->listening = 1;
    return 0;
}

static void td__server_listen_closed(uv_handle_t *h)
{
    td__server *srv = h->data;
    close(srv->listen_fd);
    srv->listen_fd = -1;
    td__server_check_drained(srv);
}

void td__server_check_drained(td__server *srv)
{
    if (!srv->draining || srv->clients || srv->listen_fd >= 0 || !td__cache_idle(&srv->cache) ||
        !srv->on_drained)
        return;
    void (*cb)(td__server *) = srv->on_drained;
    srv->on_drained = NULL;
    cb(srv);
}

void td__server_drain(td__server *srv)
{
    if (srv->draining)
        return;
    srv->draining = 1;
    srv->listening = 0;
    uv_close((uv_handle_t *)&srv->listen_poll, td__server_listen_closed);
    for (td__server_client *cl = srv->clients, *next; cl; cl = next) {
        next = cl->next;
        cl->closing = 1;
        td__server_flush(cl);
    }
}

void td__server_destroy(td__server *srv)
{
    td__cache_destroy(&srv->cache);
}
