/*
 * daemon.c - libtensord's daemon mode, and td_client.
 *
 * A load through the daemon: connect to its socket, open the file ourselves, send HELLO and
 * LOAD (the descriptor attached) in one go, read HELLO_OK and LOAD_OK, map each region the
 * reply carries read-only, close the descriptors, and build the same views as embedded mode.
 *
 * td_load makes a connection per load, and it stays open as long as any array of the load
 * lives: it is the lease. When the last array goes, the connection closes and the daemon drops
 * the lease. A td_client keeps one connection for all its requests (the handshake once); the
 * last array of a load made through it sends RELEASE instead, whose reply is read later, in
 * batches. If the daemon dies, the mappings stay valid (they are ours), and the next load
 * connects afresh.
 */
#include "client.h"
#include "common.h"
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define TD__DEFAULT_SOCKET "/run/tensord/tensord.sock"
/* Connecting and the handshake are quick or the daemon is not well; a LOAD may inflate or
 * decode gigabytes first. */
#define TD__HELLO_TIMEOUT_MS 5000
#define TD__LOAD_TIMEOUT_MS  600000

const char *td__socket_path(const td_load_options *opt)
{
    if (opt && opt->socket_path)
        return opt->socket_path;
    const char *env = getenv("TENSORD_SOCKET");
    return env && *env ? env : TD__DEFAULT_SOCKET;
}

int td__daemon_connect(const char *path, int *out, td_error *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path)
        return td__err(err, TD_EINVAL, "socket path too long (%zu), must be under %zu", n,
                       sizeof sa.sun_path);
    memcpy(sa.sun_path, path, n + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return td__err(err, TD_ESYS, "socket: %s", strerror(errno));
    while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        close(fd);
        return td__err(err, TD_ECONNECT, "no daemon at %s: %s", path, strerror(e));
    }
    *out = fd;
    return 0;
}

/* Sends HELLO and reads HELLO_OK. */
static int td__daemon_hello(int sock, td_error *err)
{
    td__proto_msg m;
    td__proto_msg_init(&m, TD__PROTO_HELLO, 1);
    m.u.hello.version = TD__PROTO_VERSION;
    m.u.hello.min_version = TD__PROTO_MIN_VERSION;
    m.u.hello.features = TD__PROTO_F_ALL;
    m.u.hello.max_frame = TD__PROTO_DEFAULT_MAX_FRAME;
    m.u.hello.max_fds = TD__PROTO_FDS_MAX;
    char software[48];
    snprintf(software, sizeof software, "libtensord %s", td_version_string());
    m.u.hello.software = software;
    return td__proto_send_msg(sock, &m, NULL, TD__HELLO_TIMEOUT_MS, err);
}

/* Checks that out answers request id with type want: 0, or the daemon's error code and message
 * (out is then destroyed). A reply of another type or id is TD_EPROTO. */
static int td__reply_check(td__proto_msg *out, uint32_t id, uint32_t want, td_error *err)
{
    int rc;
    if (out->type == TD__PROTO_ERROR) {
        rc = out->u.error.code < 0 ? out->u.error.code : TD_EPROTO;
        td__err(err, rc, "%s", out->u.error.message);
        td__proto_msg_destroy(out);
        return rc;
    }
    if (out->type != want || out->id != id) {
        rc = td__err(err, TD_EPROTO, "daemon answered %s #%u, expected %s #%u",
                     td__proto_type_name(out->type) ? td__proto_type_name(out->type) : "?", out->id,
                     td__proto_type_name(want), id);
        td__proto_msg_destroy(out);
        return rc;
    }
    return 0;
}

/* Reads the reply to request id of type want (td__reply_check). */
static int td__daemon_reply(int sock, uint32_t id, uint32_t want, int timeout_ms,
                            td__proto_msg *out, td_error *err)
{
    int rc = td__proto_recv_msg(sock, NULL, out, timeout_ms, err);
    return rc ? rc : td__reply_check(out, id, want, err);
}

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
    char *socket_path;
};

/* A load's hold on its daemon entry, shared by the regions of the load. td_load gives each load
 * a connection of its own, closed with the last region (the daemon then drops the lease); a
 * td_client sends RELEASE over its connection instead. */
typedef struct td__lease {
    atomic_long refs;
    int sock;          /* td_load: the load's connection */
    td_client *client; /* td_client_load: the client, referenced */
    uint64_t id, gen;  /* ... the lease and the connection it was granted on */
} td__lease;

static void td__client_release(td_client *c, uint64_t lease, uint64_t gen);
static void td__client_unlock(td_client *c);

static void td__lease_unref(td__lease *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (l->client)
        td__client_release(l->client, l->id, l->gen);
    else
        close(l->sock);
    free(l);
}

static void td__daemon_region_release(void *ctx, void *base, size_t len)
{
    if (base)
        munmap(base, len);
    td__lease_unref(ctx);
}

/* Maps the regions of a LOAD_OK and builds the arrays (and metadata) over them. Consumes the
 * reply and the caller's reference on lease; each region takes one of its own. */
static int td__daemon_adopt(const char *path, td__proto_msg *reply, td__lease *lease,
                            td_dict **arrays, td_meta **meta, td_error *err)
{
    int rc = 0;
    td__proto_loaded *ld = &reply->u.loaded;
    td__region *regions[TD__PROTO_FDS_MAX] = {0};
    uint32_t mapped = 0;
    for (; !rc && mapped < ld->nregions; mapped++) {
        td__proto_region *r = &ld->regions[mapped];
        void *base = NULL;
        if (r->size) {
            base = mmap(NULL, (size_t)r->size, PROT_READ, MAP_SHARED, r->fd, 0);
            if (base == MAP_FAILED) {
                rc = td__err(err, td__err_from_errno(errno), "%s: cannot map region %u: %s", path,
                             mapped, strerror(errno));
                break;
            }
        }
        atomic_fetch_add_explicit(&lease->refs, 1, memory_order_relaxed);
        regions[mapped] = td__region_new(base, (size_t)r->size, td__daemon_region_release, lease);
        if (!regions[mapped]) {
            td__daemon_region_release(lease, base, (size_t)r->size);
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
            break;
        }
        regions[mapped]->provenance = TD_PROVENANCE_DAEMON;
    }
    if (!rc)
        rc = td__table_to_dict(ld->table, regions, ld->nregions, path, arrays, err);
    if (!rc && meta) {
        *meta = ld->table->meta ? ld->table->meta : td_meta_new();
        ld->table->meta = NULL;
        if (!*meta) {
            td_dict_free(*arrays);
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
        }
    }
    for (uint32_t i = 0; i < mapped; i++)
        td__region_release(regions[i]);
    td__proto_msg_destroy(reply); /* closes the region descriptors: the mappings stay */
    td__lease_unref(lease);       /* the regions hold the lease from here on */
    return rc;
}

/* The LOAD request for fd. */
static void td__load_msg(td__proto_msg *m, uint32_t id, int fd, const char *path, td_format format,
                         const td_load_options *opt)
{
    td__proto_msg_init(m, TD__PROTO_LOAD, id);
    m->u.load.fd = fd;
    m->u.load.format = format;
    m->u.load.mode = TD__PROTO_MODE_DEFAULT;
    m->u.load.dequant = opt ? (uint32_t)opt->dequantize : 0;
    m->u.load.max_inflated = opt ? opt->max_inflated : 0;
    m->u.load.name = (char *)path;
}

int td__daemon_load(const char *path, td_format format, const td_load_options *opt,
                    td_dict **arrays, td_meta **meta, td_error *err)
{
    int fd, sock;
    int rc = td__open_ro(path, &fd, err);
    if (!rc)
        rc = td__daemon_connect(td__socket_path(opt), &sock, err);
    if (rc) {
        if (fd >= 0)
            close(fd);
        return rc;
    }
    td__lease *lease = calloc(1, sizeof *lease);
    if (!lease) {
        close(fd);
        close(sock);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    atomic_init(&lease->refs, 1);
    lease->sock = sock;

    td__proto_msg m, hello, reply;
    rc = td__daemon_hello(sock, err);
    if (!rc) {
        td__load_msg(&m, 2, fd, path, format, opt);
        rc = td__proto_send_msg(sock, &m, NULL, TD__HELLO_TIMEOUT_MS, err);
    }
    close(fd); /* the daemon has its own copy now */
    if (!rc) {
        rc = td__daemon_reply(sock, 1, TD__PROTO_HELLO_OK, TD__HELLO_TIMEOUT_MS, &hello, err);
        if (!rc)
            td__proto_msg_destroy(&hello);
    }
    if (!rc)
        rc = td__daemon_reply(sock, 2, TD__PROTO_LOAD_OK, TD__LOAD_TIMEOUT_MS, &reply, err);
    if (rc) {
        td__lease_unref(lease);
        return td__err_prefix(err, rc, path);
    }
    return td__daemon_adopt(path, &reply, lease, arrays, meta, err);
}

/* ---- td_client ---- */

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
    int rc = td__daemon_connect(c->socket_path, &c->sock, err);
    if (rc) {
        c->sock = -1;
        return rc;
    }
    td__proto_msg r;
    rc = td__daemon_hello(c->sock, err);
    if (!rc)
        rc = td__daemon_reply(c->sock, 1, TD__PROTO_HELLO_OK, TD__HELLO_TIMEOUT_MS, &r, err);
    if (rc) {
        td__client_drop(c);
        return rc;
    }
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
        if ((rc = td__reply_check(reply, m->id, want, err)) == TD_EPROTO)
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

int td_client_connect(const char *socket_path, td_client **out, td_error *err)
{
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    o.socket_path = socket_path;
    const char *path = td__socket_path(&o);
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
    td_format format;
    int rc = td__load_check(path, opt, arrays, meta, &format, err);
    if (rc)
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
    td__load_msg(&m, 0, fd, path, format, opt);
    rc = td__client_call(c, &m, TD__PROTO_LOAD_OK, TD__LOAD_TIMEOUT_MS, &reply, &lease->gen, err);
    close(fd);
    if (rc) {
        free(lease);
        return td__err_prefix(err, rc, path);
    }
    atomic_init(&lease->refs, 1);
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
    lease->client = c;
    lease->id = reply.u.loaded.lease;
    return td__daemon_adopt(path, &reply, lease, arrays, meta, err);
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

static int td__status_user_cmp(const void *a, const void *b)
{
    uint32_t x = ((const td_status_user *)a)->uid, y = ((const td_status_user *)b)->uid;
    return (x > y) - (x < y);
}

int td_client_status(td_client *c, td_status **out, td_error *err)
{
    td__proto_msg m, r;
    td__proto_msg_init(&m, TD__PROTO_STATUS, 0);
    m.u.status_req.flags = TD__PROTO_STATUS_FILES;
    int rc = td__client_call(c, &m, TD__PROTO_STATUS_OK, TD__HELLO_TIMEOUT_MS, &r, NULL, err);
    if (rc)
        return rc;
    const td__proto_status *s = &r.u.status;
    td_status *st = calloc(1, sizeof *st);
    size_t names = 0;
    for (uint32_t i = 0; i < s->nfiles; i++)
        names += (s->files[i].name ? strlen(s->files[i].name) : 0) + 1;
    if (st) {
        st->files = calloc(s->nfiles ? s->nfiles : 1, sizeof *st->files);
        st->users = calloc(s->nusers ? s->nusers : 1, sizeof *st->users);
    }
    char *pool = st && st->files && st->users ? malloc(names ? names : 1) : NULL;
    if (!pool) {
        if (st) {
            free(st->files);
            free(st->users);
        }
        free(st);
        td__proto_msg_destroy(&r);
        return td__err(err, TD_ENOMEM, "out of memory");
    }
#define TD__XX(name, text) st->name = s->stats.name;
    TD__PROTO_STATS_MAP(TD__XX)
#undef TD__XX
    st->nfiles = s->nfiles;
    st->names_ = pool;
    for (uint32_t i = 0; i < s->nfiles; i++) {
        const char *n = s->files[i].name ? s->files[i].name : "";
        size_t len = strlen(n) + 1;
        memcpy(pool, n, len);
        st->files[i].name = pool;
        pool += len;
        st->files[i].format = s->files[i].format;
        st->files[i].mode = s->files[i].mode == TD__PROTO_MODE_SNAPSHOT ? "snapshot"
                            : s->files[i].mode == TD__PROTO_MODE_PIN    ? "pin"
                                                                        : "map";
        st->files[i].bytes = s->files[i].bytes;
        st->files[i].leases = s->files[i].leases;
        st->files[i].hits = s->files[i].hits;
        st->files[i].tensors = s->files[i].tensors;
        st->files[i].file_bytes = s->files[i].file_bytes;
        st->files[i].derived_bytes = s->files[i].derived_bytes;
        st->files[i].loads = s->files[i].loads;
        st->files[i].idle_ms = s->files[i].idle_ms;
    }
    st->nusers = s->nusers;
    for (uint32_t i = 0; i < s->nusers; i++)
        st->users[i] = (td_status_user){s->users[i].uid, s->users[i].entries, s->users[i].bytes,
                                        s->users[i].quota};
    qsort(st->users, st->nusers, sizeof *st->users, td__status_user_cmp);
    td__proto_msg_destroy(&r);
    *out = st;
    return 0;
}

void td_status_free(td_status *s)
{
    if (!s)
        return;
    free(s->names_);
    free(s->files);
    free(s->users);
    free(s);
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
