/*
 * remote_load.c - the client side of daemon mode (see remote.h): the socket path, connecting,
 * the handshake and replies, adopting a LOAD_OK's regions as views, and td_load's one-shot load
 * through the daemon, whose connection is the load's lease.
 */
#include "remote.h"
#include "common.h"
#include "model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
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

void td__remote_block_end(void *ctx)
{
    td__lease_unref(ctx);
}

/* A region of a LOAD_OK against its descriptor, before it is mapped (every reply's descriptors
 * are new, so every mapping is checked): the descriptor holds at least the region's size, and
 * one of the daemon's memory (not FILE) is sealed against shrinking, so that no view checked
 * against the size can run past the end of what is mapped. */
static int td__remote_check_region(const char *path, const td__proto_region *r, uint32_t i,
                                   td_error *err)
{
    struct stat st;
    if (fstat(r->fd, &st) < 0) {
        int e = errno;
        return td__err(err, TD_EPROTO, "%s: region %u: fstat: %s", path, i, strerror(e));
    }
    if ((uint64_t)st.st_size < r->size)
        return td__err(err, TD_EPROTO, "%s: region %u of %llu bytes, but its descriptor holds %lld",
                       path, i, (unsigned long long)r->size, (long long)st.st_size);
    int seals = r->flags & TD__PROTO_REGION_FILE ? F_SEAL_SHRINK : fcntl(r->fd, F_GET_SEALS);
    if (seals < 0 || !(seals & F_SEAL_SHRINK))
        return td__err(err, TD_EPROTO,
                       "%s: region %u, the daemon's memory, is not sealed against shrinking "
                       "(seals 0x%x)",
                       path, i, seals < 0 ? 0 : seals);
    return 0;
}

int td__remote_map_region(const char *path, const td__proto_region *r, uint32_t i, td__lease *lease,
                          td__region **out, td_error *err)
{
    void *base = NULL;
    if (r->size > SIZE_MAX)
        return td__err(err, TD_ERANGE, "%s: region %u of %llu bytes", path, i,
                       (unsigned long long)r->size);
    int rc = td__remote_check_region(path, r, i, err);
    if (rc)
        return rc;
    if (r->size) {
        base = mmap(NULL, (size_t)r->size, PROT_READ, MAP_SHARED, r->fd, 0);
        if (base == MAP_FAILED) {
            int e = errno;
            return td__err(err, td__err_from_errno(e), "%s: cannot map region %u: %s", path, i,
                           strerror(e));
        }
    }
    if (lease) {
        atomic_fetch_add_explicit(&lease->refs, 1, memory_order_relaxed);
        *out = td__region_new(base, (size_t)r->size, td__remote_region_release, lease);
        if (!*out)
            td__remote_region_release(lease, base, (size_t)r->size);
    } else {
        *out =
            r->size ? td__region_mmap(base, (size_t)r->size) : td__region_new(NULL, 0, NULL, NULL);
        if (!*out && base)
            munmap(base, (size_t)r->size);
    }
    if (!*out)
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    (*out)->provenance = TD_PROVENANCE_DAEMON;
    return 0;
}

int td__remote_map_tab(const char *path, const td__proto_loaded *ld, td__tab **out, td_error *err)
{
    uint64_t sizes[TD__PROTO_FDS_MAX];
    for (uint32_t i = 0; i < ld->nregions; i++)
        sizes[i] = ld->regions[i].size;
    return td__tab_map(ld->table_fd, ld->table_size, sizes, ld->nregions, path, out, err);
}

int td__remote_finish_tab(const char *path, td__tab *tab, td__region *const *regions, uint32_t n,
                          td__lease *lease, td_dict **arrays, td_meta **meta, td_error *err)
{
    int rc = td__tab_to_dict(tab, regions, n, TD_PROVENANCE_DAEMON, td__remote_block_end, lease,
                             arrays, err);
    if (!rc && meta && (rc = td__tab_meta(tab, path, meta, err))) {
        td_dict_free(*arrays);
        *arrays = NULL;
    }
    return rc;
}

/* td__remote_adopt of the flat form, for a load of its own (nothing kept): maps the table and
 * the regions, builds the dict over them. */
static int td__remote_adopt_tab(const char *path, td__proto_loaded *ld, td__lease *lease,
                                td_dict **arrays, td_meta **meta, td_error *err)
{
    td__region *regions[TD__PROTO_FDS_MAX] = {0};
    td__tab *tab = NULL;
    int rc = td__remote_map_tab(path, ld, &tab, err);
    for (uint32_t i = 0; !rc && i < ld->nregions; i++)
        rc = td__remote_map_region(path, &ld->regions[i], i, NULL, &regions[i], err);
    if (!rc)
        rc = td__remote_finish_tab(path, tab, regions, ld->nregions, lease, arrays, meta, err);
    else
        td__lease_unref(lease);
    for (uint32_t i = 0; i < ld->nregions; i++)
        td__region_release(regions[i]);
    td__tab_release(tab);
    return rc;
}

int td__remote_adopt(const char *path, td__proto_msg *reply, td__lease *lease, td_dict **arrays,
                     td_meta **meta, td_error *err)
{
    int rc = 0;
    td__proto_loaded *ld = &reply->u.loaded;
    if (ld->table_fd >= 0) {
        rc = td__remote_adopt_tab(path, ld, lease, arrays, meta, err);
        td__proto_msg_destroy(reply); /* closes the descriptors: the mappings stay */
        return rc;
    }
    td__region *regions[TD__PROTO_FDS_MAX] = {0};
    uint32_t mapped = 0;
    for (; !rc && mapped < ld->nregions; mapped++)
        rc =
            td__remote_map_region(path, &ld->regions[mapped], mapped, lease, &regions[mapped], err);
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

int td__remote_take_own(const char *path, td__proto_loaded *ld, int *fd, uint64_t have,
                        td_error *err)
{
    if (ld->table_kept && (!have || have != ld->entry))
        return td__err(err, TD_EPROTO,
                       "%s: the daemon left out the table of entry %llu, which this load does not "
                       "keep",
                       path, (unsigned long long)ld->entry);
    uint32_t own = ld->nregions;
    for (uint32_t i = 0; i < ld->nregions; i++) {
        if (!(ld->regions[i].flags & TD__PROTO_REGION_OWN))
            continue;
        if (own < ld->nregions || *fd < 0)
            return td__err(err, TD_EPROTO,
                           "%s: region %u names the load's descriptor, as region "
                           "%u did",
                           path, i, own);
        own = i;
    }
    if (own < ld->nregions) {
        ld->regions[own].fd = *fd;
        *fd = -1;
    }
    return 0;
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

/* Turns the flat table of ld into ld->table (the msgpack form's), validated against its
 * regions; the table's memfd is closed. */
static int td__remote_tab_table(const char *name, td__proto_loaded *ld, td_error *err)
{
    td__tab *tab;
    int rc = td__remote_map_tab(name, ld, &tab, err);
    if (rc)
        return rc;
    if (!(ld->table = malloc(sizeof *ld->table)))
        rc = td__err(err, TD_ENOMEM, "%s: out of memory", name);
    else if ((rc = td__tab_to_table(tab, ld->table, err))) {
        free(ld->table);
        ld->table = NULL;
    }
    td__tab_release(tab);
    close(ld->table_fd);
    ld->table_fd = -1;
    return rc;
}

/* Builds the model's dict from the daemon's one table per file (replies[f], in file order): the
 * entries are checked against local, the table the client merged and checked from the same
 * descriptors (same names, in the same order, file by file), take their metadata from it, and
 * view the regions of their own reply. Consumes the replies and one reference of lease. */
int td__remote_name_file(td_error *err, int rc, const char *name)
{
    if (err && !strstr(err->message, name))
        td__err_prefix(err, rc, name);
    return rc;
}

int td__remote_adopt_model(const char *path, const td__model_files *files, td__table *local,
                           td__proto_msg *replies, td__lease *lease, td_dict **arrays,
                           td_meta **meta, td_error *err)
{
    size_t nregions = 0, k = 0, mapped = 0;
    int rc = 0;
    for (size_t f = 0; f < files->n; f++) {
        td__proto_loaded *ld = &replies[f].u.loaded;
        nregions += ld->nregions;
        /* A flat table becomes a td__table like the msgpack form's, owned by the reply. */
        if (!rc && ld->table_fd >= 0)
            rc = td__remote_tab_table(files->names[f], ld, err);
    }
    td__region **regions = calloc(nregions ? nregions : 1, sizeof *regions);
    td__table t;
    td__table_init(&t, local->format);
    if (!rc && !regions)
        rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
    if (!rc)
        rc = td__table_reserve(&t, local->n, err);
    for (size_t f = 0; !rc && f < files->n; f++) {
        td__proto_loaded *ld = &replies[f].u.loaded;
        size_t first = mapped;
        for (uint32_t i = 0; !rc && i < ld->nregions; i++) {
            rc = td__remote_map_region(files->names[f], &ld->regions[i], i, lease, &regions[mapped],
                                       err);
            if (!rc)
                mapped++;
        }
        if (rc)
            td__err_prefix(err, rc, path);
        td__table *dt = ld->table;
        for (size_t i = 0; !rc && i < dt->n; i++, k++) {
            td__entry *e = &dt->entries[i];
            if (k >= local->n || local->entries[k].file != f || !e->name ||
                strcmp(e->name, local->entries[k].name) != 0)
                rc = td__err(err, TD_EPROTO, "%s: %s: the daemon's table differs from the file's",
                             path, files->names[f]);
            else if (e->region >= ld->nregions)
                rc = td__err(err, TD_EPROTO, "%s: %s: region %u of %u", path, files->names[f],
                             e->region, ld->nregions);
            if (rc)
                break;
            t.entries[t.n] = *e;
            t.entries[t.n].region = (uint32_t)(first + e->region);
            t.entries[t.n].file = (uint32_t)f;
            t.n++;
            e->name = NULL; /* t owns the name and shape now */
            e->shape = NULL;
            e->ndim = 0;
        }
    }
    if (!rc && k != local->n)
        rc = td__err(err, TD_EPROTO, "%s: the daemon's tables hold %zu tensors, the files %zu",
                     path, k, local->n);
    if (!rc)
        rc = td__table_to_dict(&t, regions, nregions, 0, path, arrays, err);
    if (!rc && meta) {
        *meta = local->meta ? local->meta : td_meta_new();
        local->meta = NULL;
        if (!*meta) {
            td_dict_free(*arrays);
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", path);
        }
    }
    for (size_t i = 0; i < mapped; i++)
        td__region_release(regions[i]);
    free(regions);
    td__table_destroy(&t);
    for (size_t f = 0; f < files->n; f++)
        td__proto_msg_destroy(&replies[f]); /* closes the region descriptors */
    td__lease_unref(lease);                 /* the regions hold the lease from here on */
    return rc;
}

/* td_load of a model of several files through the daemon: files (opened, indexed and checked
 * as a model by the caller, descriptors in files->fds) go out as one LOAD per file, flagged
 * SHARD and pipelined on the load's own connection, which is the model's one lease: closing it
 * releases every file's entry. Any file refused fails the whole load, naming it; nothing stays
 * held. A daemon without TD__PROTO_F_MODEL gives TD_ENOTSUP (auto mode loads embedded). */
static int td__remote_load_model(const char *path, const td_load_options *opt,
                                 const td__model_files *files, td__table *local, td_dict **arrays,
                                 td_meta **meta, td_error *err)
{
    if (files->n > TD__PROTO_MODEL_FILES_MAX)
        return td__err(err, TD_ELIMIT, "%s: %zu files, over the bound of %u for the daemon", path,
                       files->n, TD__PROTO_MODEL_FILES_MAX);
    int sock;
    int rc = td__remote_connect(td__socket_path(opt->socket_path), &sock, err);
    if (rc)
        return rc;
    td__lease *lease = calloc(1, sizeof *lease);
    td__proto_msg *replies = calloc(files->n, sizeof *replies);
    char *got = calloc(files->n, 1);
    if (!lease || !replies || !got) {
        free(lease);
        free(replies);
        free(got);
        close(sock);
        return td__err(err, TD_ENOMEM, "%s: out of memory", path);
    }
    atomic_init(&lease->refs, 1);
    lease->end = td__remote_end_connection;
    lease->sock = sock;
    td__proto_msg hello, m;
    rc = td__remote_hello(sock, err);
    if (!rc)
        rc = td__remote_reply(sock, 1, TD__PROTO_HELLO_OK, TD__HELLO_TIMEOUT_MS, &hello, err);
    if (!rc) {
        if (!(hello.u.hello.features & TD__PROTO_F_MODEL))
            rc = td__err(err, TD_ENOTSUP, "the daemon does not serve models of several files");
        td__proto_msg_destroy(&hello);
    }
    for (size_t f = 0; !rc && f < files->n; f++) {
        char *label = td__model_file_label(path, files->names[f]);
        td__remote_load_msg(&m, (uint32_t)(2 + f), files->fds[f], label ? label : files->names[f],
                            opt);
        m.u.load.flags = TD__PROTO_LOAD_SHARD;
        rc = td__proto_send_msg(sock, &m, NULL, TD__HELLO_TIMEOUT_MS, err);
        free(label);
    }
    size_t ngot = 0;
    while (!rc && ngot < files->n) {
        td__proto_msg r;
        rc = td__proto_recv_msg(sock, NULL, &r, TD__LOAD_TIMEOUT_MS, err);
        if (rc)
            break;
        size_t f = r.id >= 2 && r.id - 2 < files->n ? r.id - 2 : files->n;
        if (f == files->n || got[f]) {
            rc = td__err(err, TD_EPROTO, "daemon answered %s #%u, expected a LOAD reply",
                         td__proto_type_name(r.type) ? td__proto_type_name(r.type) : "?", r.id);
            td__proto_msg_destroy(&r);
            break;
        }
        if ((rc = td__remote_reply_check(&r, r.id, TD__PROTO_LOAD_OK, err))) {
            td__remote_name_file(err, rc, files->names[f]);
            break;
        }
        if ((rc = td__remote_take_own(files->names[f], &r.u.loaded, &files->fds[f], 0, err))) {
            td__proto_msg_destroy(&r);
            break;
        }
        replies[f] = r;
        got[f] = 1;
        ngot++;
    }
    if (rc) {
        for (size_t f = 0; f < files->n; f++)
            if (got[f])
                td__proto_msg_destroy(&replies[f]);
        free(replies);
        free(got);
        td__lease_unref(lease); /* closes the connection: the daemon releases every entry */
        return td__err_prefix(err, rc, path);
    }
    free(got);
    rc = td__remote_adopt_model(path, files, local, replies, lease, arrays, meta, err);
    free(replies);
    return rc;
}

int td__remote_is_model(const char *path, const td_load_options *opt)
{
    /* A GGUF file named as gguf-split names its files may be the first of a split set (opt's
     * format is known, td__load_check); any other GGUF goes as one file, without a read here,
     * and the daemon refuses it if it does claim to be a split. */
    return td__model_is_hf_index(path) ||
           (opt->format == TD_FORMAT_GGUF && td__model_is_split_name(path));
}

int td__remote_model_index(const char *path, const td_load_options *opt, td__model_files *files,
                           td__table *local, int *several, td_error *err)
{
    *several = 0;
    td__table_init(local, opt->format);
    if (!td__remote_is_model(path, opt))
        return 0;
    /* Every model check happens here, before anything is sent: the index (or first split)
     * names the files, each opened relative to its directory, indexed and merged. */
    int rc = td__model_index_files(path, opt, TD__MODEL_KEEP_FDS, files, local, err);
    *several = !rc && (td__model_is_hf_index(path) || files->n > 1);
    if (rc || !*several) {
        td__table_destroy(local);
        td__model_files_free(files);
    }
    return rc;
}

int td__remote_load(const char *path, const td_load_options *opt, td_dict **arrays, td_meta **meta,
                    td_error *err)
{
    td__model_files files = {0};
    td__table local;
    int several;
    int rc = td__remote_model_index(path, opt, &files, &local, &several, err);
    if (several) {
        rc = td__remote_load_model(path, opt, &files, &local, arrays, meta, err);
        td__table_destroy(&local);
        td__model_files_free(&files);
    }
    if (rc || several)
        return rc;
    int fd, sock;
    rc = td__open_ro(path, &fd, err);
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
    if (!rc) {
        rc = td__remote_reply(sock, 1, TD__PROTO_HELLO_OK, TD__HELLO_TIMEOUT_MS, &hello, err);
        if (!rc)
            td__proto_msg_destroy(&hello);
    }
    if (!rc)
        rc = td__remote_reply(sock, 2, TD__PROTO_LOAD_OK, TD__LOAD_TIMEOUT_MS, &reply, err);
    if (!rc && (rc = td__remote_take_own(path, &reply.u.loaded, &fd, 0, err)))
        td__proto_msg_destroy(&reply);
    if (fd >= 0)
        close(fd); /* the daemon has its own copy, and the reply did not take ours */
    if (rc) {
        td__lease_unref(lease);
        return td__remote_name_file(err, rc, path);
    }
    return td__remote_adopt(path, &reply, lease, arrays, meta, err);
}
