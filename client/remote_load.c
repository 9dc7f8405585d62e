/*
 * remote_load.c - the client side of daemon mode (see remote.h): the socket path, connecting,
 * the handshake and replies, adopting a LOAD_OK's regions as views, and td_load's one-shot load
 * through the daemon, whose connection is the load's lease.
 */
#include "remote.h"
#include "common.h"
#include "model.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

const char *td__socket_path(const char *explicit_path)
{
    if (explicit_path)
        return explicit_path;
    /* secure_getenv: a set-user-ID or set-group-ID program linking libtensord must not be made
     * to talk to a socket its caller chose. */
    const char *env = secure_getenv("TENSORD_SOCKET");
    return env && *env ? env : TD_DEFAULT_SOCKET;
}

int td__remote_connect(const char *path, int *out, td_error *err)
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

int td__remote_hello(int sock, td_error *err)
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

int td__remote_reply_check(td__proto_msg *out, uint32_t id, uint32_t want, td_error *err)
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

int td__remote_reply(int sock, uint32_t id, uint32_t want, int timeout_ms, td__proto_msg *out,
                     td_error *err)
{
    int rc = td__proto_recv_msg(sock, NULL, out, timeout_ms, err);
    return rc ? rc : td__remote_reply_check(out, id, want, err);
}

void td__lease_unref(td__lease *l)
{
    if (atomic_fetch_sub_explicit(&l->refs, 1, memory_order_acq_rel) == 1)
        l->end(l);
}

static void td__remote_region_release(void *ctx, void *base, size_t len)
{
    if (base)
        munmap(base, len);
    td__lease_unref(ctx);
}

int td__remote_adopt(const char *path, td__proto_msg *reply, td__lease *lease, td_dict **arrays,
                     td_meta **meta, td_error *err)
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
        regions[mapped] = td__region_new(base, (size_t)r->size, td__remote_region_release, lease);
        if (!regions[mapped]) {
            td__remote_region_release(lease, base, (size_t)r->size);
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
            break;
        }
        regions[mapped]->provenance = TD_PROVENANCE_DAEMON;
    }
    if (!rc)
        rc = td__table_to_dict(ld->table, regions, ld->nregions, 0, path, arrays, err);
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

void td__remote_load_msg(td__proto_msg *m, uint32_t id, int fd, const char *path,
                         const td_load_options *opt)
{
    td__proto_msg_init(m, TD__PROTO_LOAD, id);
    m->u.load.fd = fd;
    m->u.load.format = opt->format;
    m->u.load.mode = TD__PROTO_MODE_DEFAULT;
    m->u.load.dequant = td__dequant_code(opt->dequantize);
    m->u.load.max_inflated = opt->max_inflated;
    m->u.load.name = (char *)path;
}

/* td_load's lease: the load's own connection. Closing it ends the lease in the daemon. */
static void td__remote_end_connection(td__lease *l)
{
    close(l->sock);
    free(l);
}

int td__remote_load(const char *path, const td_load_options *opt, td_dict **arrays, td_meta **meta,
                    td_error *err)
{
    if (td__model_is_hf_index(path))
        return td__err(err, TD_ENOTSUP,
                       "%s: a sharded model: tensord does not serve models of several files "
                       "yet (load it in embedded mode)",
                       path);
    int fd, sock;
    int rc = td__open_ro(path, &fd, err);
    if (!rc)
        rc = td__remote_connect(td__socket_path(opt->socket_path), &sock, err);
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
    lease->end = td__remote_end_connection;
    lease->sock = sock;

    td__proto_msg m, hello, reply;
    rc = td__remote_hello(sock, err);
    if (!rc) {
        td__remote_load_msg(&m, 2, fd, path, opt);
        rc = td__proto_send_msg(sock, &m, NULL, TD__HELLO_TIMEOUT_MS, err);
    }
    close(fd); /* the daemon has its own copy now */
    if (!rc) {
        rc = td__remote_reply(sock, 1, TD__PROTO_HELLO_OK, TD__HELLO_TIMEOUT_MS, &hello, err);
        if (!rc)
            td__proto_msg_destroy(&hello);
    }
    if (!rc)
        rc = td__remote_reply(sock, 2, TD__PROTO_LOAD_OK, TD__LOAD_TIMEOUT_MS, &reply, err);
    if (rc) {
        td__lease_unref(lease);
        return td__err_prefix(err, rc, path);
    }
    return td__remote_adopt(path, &reply, lease, arrays, meta, err);
}
