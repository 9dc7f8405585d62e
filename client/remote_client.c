/*
 * remote_client.c - td_client: one connection to the daemon kept for every request made through
 * it (loads, status, eviction, ping), thread-safe, reconnecting by itself after a restart.
 *
 * The handshake happens once per connection. The last array of a load made through a client
 * sends RELEASE for its lease over the client's connection; the replies are not waited for but
 * read with the next request's, or in batches. A lease granted on an earlier connection (before
 * a daemon restart, or the parent's after fork()) is not sent: the daemon ended it when that
 * connection closed. The mappings stay valid whatever happens to the daemon: they are ours.
 */
#include "remote.h"
#include "common.h"
#include "model.h"

#include <pthread.h>
#include <stdlib.h>
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
    uint64_t gen;            /* connections made so far; a lease belongs to one */
    pid_t pid;               /* the process that made the connection */
    uint32_t next_id;        /* of requests; RELEASE ids have TD__RELEASE_ID set */
    uint32_t next_rid;
    unsigned unanswered; /* RELEASEs sent whose replies are not read yet */
    uint64_t features;   /* TD__PROTO_F_* agreed on the connection */
    char *socket_path;
};

static void td__client_unlock(td_client *c);

static void td__client_unref(td_client *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* Closed, and its connection with it: the daemon ended those leases already. */
    for (td__rel *r = atomic_exchange(&c->rels, NULL), *next; r; r = next) {
        next = r->next;
        free(r);
    }
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
}

/* Connects and shakes hands unless connected. Under the lock. */
static int td__client_open(td_client *c, td_error *err)
{
    if (c->sock >= 0 && c->pid != getpid()) {
        /* A child after fork(): the socket is its parent's connection, and so are the leases.
         * Closing our copy of the descriptor leaves the parent's alone. */
        close(c->sock);
        c->sock = -1;
        c->gen++;
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
    c->pid = getpid();
    c->next_id = 2;
    c->next_rid = 1;
    return 0;
}

/* Receives the next frame that is not a RELEASE's reply. Under the lock. */
static int td__client_recv(td_client *c, int timeout_ms, td__proto_msg *out, td_error *err)
{
    for (;;) {
        int rc = td__proto_recv_msg(c->sock, NULL, out, timeout_ms, err);
        if (rc || !(out->id & TD__RELEASE_ID))
            return rc;
        td__proto_msg_destroy(out);
        if (c->unanswered)
            c->unanswered--;
    }
}

/* Sends m (its id is set here) and reads its reply of type want, connecting first when needed.
 * A connection that breaks (the daemon restarted) is made again once and the request resent;
 * any other failure of the connection itself drops it, so that the next call starts clean. */
static int td__client_call(td_client *c, td__proto_msg *m, uint32_t want, int timeout_ms,
                           td__proto_msg *reply, uint64_t *gen, td_error *err)
{
    pthread_mutex_lock(&c->lock);
    int rc = TD_ECLOSED;
    for (int attempt = 0; attempt < 2 && rc == TD_ECLOSED; attempt++) {
        if ((rc = td__client_open(c, err)))
            break;
        m->id = c->next_id++;
        if (c->next_id & TD__RELEASE_ID)
            c->next_id = 2;
        rc = td__proto_send_msg(c->sock, m, NULL, TD__HELLO_TIMEOUT_MS, err);
        if (!rc)
            rc = td__client_recv(c, timeout_ms, reply, err);
        if (rc) {
            td__client_drop(c);
            continue;
        }
        if (reply->type == TD__PROTO_ERROR && reply->id == 0) {
            /* Not an answer: the daemon says why it is closing the connection. */
            rc = td__err(err, TD_ECLOSED, "the daemon closed the connection: %s",
                         reply->u.error.message);
            td__proto_msg_destroy(reply);
            td__client_drop(c);
            continue;
        }
        /* The daemon's error answer leaves the connection fine; a wrong reply does not. */
        if ((rc = td__remote_reply_check(reply, m->id, want, err)) == TD_EPROTO)
            td__client_drop(c);
        break;
    }
    if (gen)
        *gen = c->gen;
    td__client_unlock(c);
    return rc;
}

/* Sends RELEASE for lease, unless the connection it was granted on is gone (the daemon then
 * ended it already). Replies are not waited for: they are read with the next request's, or here
 * once TD__RELEASE_BATCH are unread. Under the lock. */
static void td__client_send_release(td_client *c, uint64_t lease, uint64_t gen)
{
    if (c->sock < 0 || c->gen != gen || c->pid != getpid())
        return; /* another connection's lease, or the parent's after fork() */
    td__proto_msg m;
    td_error err = {0};
    td__proto_msg_init(&m, TD__PROTO_RELEASE, TD__RELEASE_ID | c->next_rid++);
    c->next_rid &= ~TD__RELEASE_ID;
    m.u.release.lease = lease;
    int rc = td__proto_send_msg(c->sock, &m, NULL, TD__HELLO_TIMEOUT_MS, &err);
    if (!rc && ++c->unanswered >= TD__RELEASE_BATCH) {
        while (!rc && c->unanswered) {
            td__proto_msg r;
            rc = td__proto_recv_msg(c->sock, NULL, &r, TD__HELLO_TIMEOUT_MS, &err);
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

/* td_client_load of a model of several files (indexed and checked by the caller, descriptors in
 * files->fds): one LOAD flagged SHARD per file, each its own lease in the daemon; one td__lease
 * holds them all and gives every one back when the model's last array goes. A file refused
 * fails the whole load, naming it, and the leases already granted go back. */
static int td__client_load_model(td_client *c, const char *path, const td_load_options *o,
                                 const td__model_files *files, td__table *local, td_dict **arrays,
                                 td_meta **meta, td_error *err)
{
    if (files->n > TD__PROTO_MODEL_FILES_MAX)
        return td__err(err, TD_ELIMIT, "%s: %zu files, over the bound of %u for the daemon", path,
                       files->n, TD__PROTO_MODEL_FILES_MAX);
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
    td__proto_msg *replies = calloc(files->n, sizeof *replies);
    if (lease) {
        lease->ids = calloc(files->n, sizeof *lease->ids);
        lease->gens = calloc(files->n, sizeof *lease->gens);
    }
    if (!lease || !replies || !lease->ids || !lease->gens) {
        if (lease) {
            free(lease->ids);
            free(lease->gens);
        }
        free(lease);
        free(replies);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    atomic_init(&lease->refs, 1);
    lease->end = td__client_end_model_lease;
    lease->owner = c;
    for (size_t f = 0; !rc && f < files->n; f++) {
        td__proto_msg m;
        char *label = td__model_file_label(path, files->names[f]);
        td__remote_load_msg(&m, 0, files->fds[f], label ? label : files->names[f], o);
        m.u.load.flags = TD__PROTO_LOAD_SHARD;
        rc = td__client_call(c, &m, TD__PROTO_LOAD_OK, TD__LOAD_TIMEOUT_MS, &replies[f],
                             &lease->gens[f], err);
        free(label);
        if (rc) {
            td__remote_name_file(err, rc, files->names[f]);
            break;
        }
        atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
        lease->ids[lease->nids++] = replies[f].u.loaded.lease;
    }
    if (rc) {
        for (size_t f = 0; f < lease->nids; f++)
            td__proto_msg_destroy(&replies[f]);
        free(replies);
        td__lease_unref(lease); /* gives back the leases granted so far */
        return td__err_prefix(err, rc, path);
    }
    rc = td__remote_adopt_model(path, files, local, replies, lease, arrays, meta, err);
    free(replies);
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
    int rc = td__client_open(c, err);
    if (rc) {
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
    td__client_unref(c);
}

int td_client_load(td_client *c, const char *path, const td_load_options *opt, td_dict **arrays,
                   td_meta **meta, td_error *err)
{
    td_load_options o;
    int rc = td__load_check(path, opt, arrays, meta, &o, err);
    if (rc)
        return rc;
    td__model_files files = {0};
    td__table local;
    int several;
    rc = td__remote_model_index(path, &o, &files, &local, &several, err);
    if (several) {
        rc = td__client_load_model(c, path, &o, &files, &local, arrays, meta, err);
        td__table_destroy(&local);
        td__model_files_free(&files);
    }
    if (rc || several)
        return rc;
    int fd;
    if ((rc = td__open_ro(path, &fd, err)))
        return rc;
    td__lease *lease = calloc(1, sizeof *lease);
    if (!lease) {
        close(fd);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    td__proto_msg m, reply;
    td__remote_load_msg(&m, 0, fd, path, &o);
    rc = td__client_call(c, &m, TD__PROTO_LOAD_OK, TD__LOAD_TIMEOUT_MS, &reply, &lease->gen, err);
    close(fd);
    if (rc) {
        free(lease);
        return td__err_prefix(err, rc, path);
    }
    atomic_init(&lease->refs, 1);
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    lease->end = td__client_end_lease;
    lease->owner = c;
    lease->id = reply.u.loaded.lease;
    return td__remote_adopt(path, &reply, lease, arrays, meta, err);
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
