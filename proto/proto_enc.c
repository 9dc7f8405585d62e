/*
 * proto_enc.c - encoding messages into frames: a msgpack-c packer writing into a td__proto_out
 * with a size bound, and the same checks the decoder makes, so that a sender learns at once
 * (TD_EINVAL, TD_ELIMIT) what its peer would refuse.
 */
#include "proto_internal.h"
#include "common.h"
#include "dtype.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Encoding
 */

static int td__enc_write(void *data, const char *buf, size_t len)
{
    td__proto_enc *e = data;
    td__proto_out *o = e->out;
    if (e->status)
        return -1;
    if (len > e->max - o->len) {
        e->status = TD_ELIMIT;
        return -1;
    }
    if (len > o->cap - o->len) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap - o->len < len)
            cap = cap > e->max / 2 ? e->max : cap * 2;
        uint8_t *nb = realloc(o->buf, cap);
        if (!nb) {
            e->status = TD_ENOMEM;
            return -1;
        }
        o->buf = nb;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, buf, len);
    o->len += len;
    return 0;
}

static void td__pk_key(td__proto_enc *e, const char *k)
{
    msgpack_pack_str_with_body(&e->pk, k, strlen(k));
}

static void td__pk_kv_u64(td__proto_enc *e, const char *k, uint64_t v)
{
    td__pk_key(e, k);
    msgpack_pack_uint64(&e->pk, v);
}

static void td__pk_str_or_nil(td__proto_enc *e, const char *s)
{
    if (s)
        msgpack_pack_str_with_body(&e->pk, s, strlen(s));
    else
        msgpack_pack_nil(&e->pk);
}

/* Checks a string the encoder is about to send against a bound. */
static int td__enc_text(const char *s, size_t max, const char *what, const char *field,
                        td_error *err)
{
    if (s && strlen(s) > max)
        return td__err(err, TD_ELIMIT, "%s: %s of %zu bytes (limit %zu)", what, field, strlen(s),
                       max);
    return 0;
}

static int td__enc_add_fd(td__proto_out *o, int fd, const char *what, td_error *err)
{
    if (fd < 0)
        return td__err(err, TD_EINVAL, "%s: descriptor %d is not valid", what, fd);
    if (o->nfds >= TD__PROTO_FDS_MAX)
        return td__err(err, TD_ELIMIT, "%s: more than %u descriptors", what, TD__PROTO_FDS_MAX);
    o->fds[o->nfds++] = fd;
    return 0;
}

/* Fields common to every message; n counts the type-specific ones. */
static void td__enc_head(td__proto_enc *e, const td__proto_msg *m, size_t n, unsigned nfds)
{
    msgpack_pack_map(&e->pk, 3 + n);
    td__pk_kv_u64(e, "type", m->type);
    td__pk_kv_u64(e, "id", m->id);
    td__pk_kv_u64(e, "fds", nfds);
}

static int td__enc_hello(td__proto_enc *e, const td__proto_msg *m, td_error *err)
{
    const td__proto_hello *h = &m->u.hello;
    const char *what = td__proto_type_name(m->type);
    if (!h->version)
        return td__err(err, TD_EINVAL, "%s: version 0", what);
    if (h->min_version > h->version)
        return td__err(err, TD_EINVAL, "%s: min_version %u above version %u", what, h->min_version,
                       h->version);
    if (h->max_fds > TD__PROTO_FDS_MAX)
        return td__err(err, TD_EINVAL, "%s: max_fds %u above %u", what, h->max_fds,
                       TD__PROTO_FDS_MAX);
    int rc = td__enc_text(h->software, TD__PROTO_TEXT_MAX, what, "software", err);
    if (rc)
        return rc;
    td__enc_head(e, m, 5 + (h->software != NULL), 0);
    td__pk_kv_u64(e, "version", h->version);
    td__pk_kv_u64(e, "min_version", h->min_version ? h->min_version : h->version);
    td__pk_kv_u64(e, "features", h->features);
    td__pk_kv_u64(e, "max_frame", h->max_frame);
    td__pk_kv_u64(e, "max_fds", h->max_fds);
    if (h->software) {
        td__pk_key(e, "software");
        td__pk_str_or_nil(e, h->software);
    }
    return 0;
}

static int td__enc_load(td__proto_enc *e, const td__proto_msg *m, td_error *err)
{
    const td__proto_load *l = &m->u.load;
    if ((unsigned)l->format > TD_FORMAT_GGUF)
        return td__err(err, TD_EINVAL, "LOAD: format %d is unknown", (int)l->format);
    if (l->mode >= TD__PROTO_MODE_COUNT)
        return td__err(err, TD_EINVAL, "LOAD: mode %u is unknown", l->mode);
    if (l->dequant && !td__dequant_target_ok(l->dequant))
        return td__err(err, TD_EINVAL, "LOAD: dequant dtype %u is unknown", l->dequant);
    int rc = td__enc_text(l->name, TD__PROTO_NAME_MAX, "LOAD", "name", err);
    if (rc || (rc = td__enc_add_fd(e->out, l->fd, "LOAD", err)))
        return rc;
    td__enc_head(e, m, 5 + (l->name != NULL) + (l->have != 0), 1);
    td__pk_kv_u64(e, "format", (uint64_t)l->format);
    td__pk_kv_u64(e, "mode", l->mode);
    td__pk_kv_u64(e, "dequant", l->dequant);
    td__pk_kv_u64(e, "max_inflated", l->max_inflated);
    td__pk_kv_u64(e, "flags", l->flags);
    if (l->name) {
        td__pk_key(e, "name");
        td__pk_str_or_nil(e, l->name);
    }
    if (l->have)
        td__pk_kv_u64(e, "have", l->have);
    return 0;
}

static int td__enc_loaded(td__proto_enc *e, const td__proto_msg *m, td_error *err)
{
    const td__proto_loaded *l = &m->u.loaded;
    const td__table *t = l->table;
    int flat = l->table_fd >= 0 || l->table_kept;
    td_format format = flat ? l->format : t ? t->format : TD_FORMAT_AUTO;
    if (!l->lease)
        return td__err(err, TD_EINVAL, "LOAD_OK: lease 0");
    if (!t && !flat)
        return td__err(err, TD_EINVAL, "LOAD_OK: no table");
    if (flat && (t || !l->entry))
        return td__err(err, TD_EINVAL, "LOAD_OK: a shared table %s",
                       t ? "beside a msgpack one" : "without its entry");
    if (format < TD_FORMAT_NPY || format > TD_FORMAT_GGUF)
        return td__err(err, TD_EINVAL, "LOAD_OK: table format %d is not a file format",
                       (int)format);
    if (l->table_kept && l->table_fd >= 0)
        return td__err(err, TD_EINVAL, "LOAD_OK: a kept table with a descriptor");
    if (l->nregions > TD__PROTO_FDS_MAX)
        return td__err(err, TD_ELIMIT, "LOAD_OK: %u regions (limit %u)", l->nregions,
                       TD__PROTO_FDS_MAX);
    if (l->nregions && !l->regions)
        return td__err(err, TD_EINVAL, "LOAD_OK: %u regions but no region array", l->nregions);
    /* Regions flagged OWN are the LOAD's descriptor: they pass none. */
    unsigned nfds = l->table_fd >= 0;
    for (uint32_t i = 0; i < l->nregions; i++) {
        uint32_t fl = l->regions[i].flags;
        if ((fl & TD__PROTO_REGION_OWN) && !(fl & TD__PROTO_REGION_FILE))
            return td__err(err, TD_EINVAL, "LOAD_OK: region %u is OWN but not FILE", i);
        nfds += !(fl & TD__PROTO_REGION_OWN);
    }
    if (nfds > e->peer.max_fds)
        return td__err(err, TD_ELIMIT, "LOAD_OK: %u descriptors, the peer takes %u", nfds,
                       e->peer.max_fds);
    if (t && t->n > e->peer.max_count)
        return td__err(err, TD_ELIMIT, "LOAD_OK: %zu entries, the peer takes %u", t->n,
                       e->peer.max_count);
    for (uint32_t i = 0; i < l->nregions; i++) {
        if (l->regions[i].flags & TD__PROTO_REGION_OWN)
            continue;
        int rc = td__enc_add_fd(e->out, l->regions[i].fd, "LOAD_OK: region", err);
        if (rc)
            return rc;
    }
    if (l->table_fd >= 0) {
        int rc = td__enc_add_fd(e->out, l->table_fd, "LOAD_OK: table", err);
        if (rc)
            return rc;
    }
    for (size_t i = 0; t && i < t->n && !l->tail; i++) {
        const td__entry *en = &t->entries[i];
        int rc = td__proto_entry_check(en, i, l->regions, l->nregions, TD_EINVAL, "LOAD_OK", err);
        if (rc)
            return rc;
        if (en->name && strlen(en->name) > TD__PROTO_NAME_MAX)
            return td__err(err, TD_ELIMIT, "LOAD_OK: entries[%zu]: name of %zu bytes", i,
                           strlen(en->name));
    }

    td__enc_head(e, m, 5, nfds);
    td__pk_kv_u64(e, "lease", l->lease);
    td__pk_kv_u64(e, "format", (uint64_t)format);
    td__pk_key(e, "regions");
    msgpack_pack_array(&e->pk, l->nregions);
    unsigned fdi = 0; /* descriptors go in region order, the table's last */
    for (uint32_t i = 0; i < l->nregions; i++) {
        msgpack_pack_array(&e->pk, 2 + (l->regions[i].flags != 0));
        if (l->regions[i].flags & TD__PROTO_REGION_OWN)
            msgpack_pack_nil(&e->pk);
        else
            msgpack_pack_uint32(&e->pk, fdi++);
        msgpack_pack_uint64(&e->pk, l->regions[i].size);
        if (l->regions[i].flags)
            msgpack_pack_uint32(&e->pk, l->regions[i].flags);
    }
    if (flat) {
        td__pk_kv_u64(e, "entry", l->entry);
        td__pk_key(e, "table");
        msgpack_pack_array(&e->pk, 2);
        if (l->table_kept)
            msgpack_pack_nil(&e->pk);
        else
            msgpack_pack_uint32(&e->pk, fdi);
        msgpack_pack_uint64(&e->pk, l->table_size);
        return 0;
    }
    e->out->tail = e->out->len;
    if (l->tail) {
        td__enc_write(e, (const char *)l->tail, l->tail_len);
        return 0;
    }
    td__pk_key(e, "entries");
    msgpack_pack_array(&e->pk, t->n);
    for (size_t i = 0; i < t->n && !e->status; i++) {
        const td__entry *en = &t->entries[i];
        msgpack_pack_array(&e->pk, 6);
        td__pk_str_or_nil(e, en->name);
        msgpack_pack_uint32(&e->pk, (uint32_t)en->dtype);
        msgpack_pack_array(&e->pk, en->ndim);
        for (uint32_t k = 0; k < en->ndim; k++)
            msgpack_pack_uint64(&e->pk, (uint64_t)en->shape[k]);
        msgpack_pack_uint32(&e->pk, en->region);
        msgpack_pack_uint64(&e->pk, en->offset);
        msgpack_pack_uint64(&e->pk, en->nbytes);
    }
    td__pk_key(e, "meta");
    if (!t->meta) {
        msgpack_pack_nil(&e->pk);
        return 0;
    }
    return td__proto_meta_encode(e, t->meta, err);
}

static int td__enc_status(td__proto_enc *e, const td__proto_msg *m, td_error *err)
{
    const td__proto_status *s = &m->u.status;
    if (s->nfiles && !s->files)
        return td__err(err, TD_EINVAL, "STATUS_OK: %u files but no file array", s->nfiles);
    if (s->nfiles > e->peer.max_count)
        return td__err(err, TD_ELIMIT, "STATUS_OK: %u files, the peer takes %u", s->nfiles,
                       e->peer.max_count);
    if (s->nusers && !s->users)
        return td__err(err, TD_EINVAL, "STATUS_OK: %u users but no user array", s->nusers);
    if (s->nusers > e->peer.max_count)
        return td__err(err, TD_ELIMIT, "STATUS_OK: %u users, the peer takes %u", s->nusers,
                       e->peer.max_count);
    for (uint32_t i = 0; i < s->nfiles; i++) {
        const td__proto_status_file *sf = &s->files[i];
        if ((unsigned)sf->format > TD_FORMAT_GGUF || sf->mode >= TD__PROTO_MODE_COUNT)
            return td__err(err, TD_EINVAL, "STATUS_OK: files[%u]: format %d or mode %u unknown", i,
                           (int)sf->format, sf->mode);
        int rc = td__enc_text(sf->name, TD__PROTO_NAME_MAX, "STATUS_OK", "file name", err);
        if (rc)
            return rc;
    }
    td__enc_head(e, m, 1 + (s->files != NULL) + (s->users != NULL), 0);
    td__pk_key(e, "stats");
    size_t nstats = 0;
#define TD__XX(name, text) nstats++;
    TD__PROTO_STATS_MAP(TD__XX)
#undef TD__XX
    msgpack_pack_map(&e->pk, nstats);
#define TD__XX(name, text) td__pk_kv_u64(e, #name, s->stats.name);
    TD__PROTO_STATS_MAP(TD__XX)
#undef TD__XX
    if (s->files) {
        td__pk_key(e, "files");
        msgpack_pack_array(&e->pk, s->nfiles);
        for (uint32_t i = 0; i < s->nfiles; i++) {
            const td__proto_status_file *f = &s->files[i];
            msgpack_pack_array(&e->pk, 12);
            td__pk_str_or_nil(e, f->name);
            msgpack_pack_uint32(&e->pk, (uint32_t)f->format);
            msgpack_pack_uint32(&e->pk, f->mode);
            msgpack_pack_uint64(&e->pk, f->bytes);
            msgpack_pack_uint64(&e->pk, f->leases);
            msgpack_pack_uint64(&e->pk, f->hits);
            msgpack_pack_uint64(&e->pk, f->tensors);
            msgpack_pack_uint64(&e->pk, f->file_bytes);
            msgpack_pack_uint64(&e->pk, f->derived_bytes);
            msgpack_pack_uint64(&e->pk, f->loads);
            msgpack_pack_uint64(&e->pk, f->idle_ms);
            msgpack_pack_uint64(&e->pk, f->flags);
        }
    }
    if (s->users) {
        td__pk_key(e, "users");
        msgpack_pack_array(&e->pk, s->nusers);
        for (uint32_t i = 0; i < s->nusers; i++) {
            const td__proto_status_user *u = &s->users[i];
            msgpack_pack_array(&e->pk, 4);
            msgpack_pack_uint32(&e->pk, u->uid);
            msgpack_pack_uint64(&e->pk, u->entries);
            msgpack_pack_uint64(&e->pk, u->bytes);
            msgpack_pack_uint64(&e->pk, u->quota);
        }
    }
    return 0;
}

static int td__enc_body(td__proto_enc *e, const td__proto_msg *m, td_error *err)
{
    int rc;
    switch (m->type) {
    case TD__PROTO_HELLO:
    case TD__PROTO_HELLO_OK:
        return td__enc_hello(e, m, err);
    case TD__PROTO_LOAD:
        return td__enc_load(e, m, err);
    case TD__PROTO_LOAD_OK:
        return td__enc_loaded(e, m, err);
    case TD__PROTO_RELEASE:
    case TD__PROTO_RELEASE_OK:
        if (!m->u.release.lease)
            return td__err(err, TD_EINVAL, "%s: lease 0", td__proto_type_name(m->type));
        td__enc_head(e, m, 1 + (m->u.release.flags != 0), 0);
        td__pk_kv_u64(e, "lease", m->u.release.lease);
        if (m->u.release.flags)
            td__pk_kv_u64(e, "flags", m->u.release.flags);
        return 0;
    case TD__PROTO_STATUS:
        td__enc_head(e, m, 1, 0);
        td__pk_kv_u64(e, "flags", m->u.status_req.flags);
        return 0;
    case TD__PROTO_STATUS_OK:
        return td__enc_status(e, m, err);
    case TD__PROTO_EVICT:
        if (m->u.evict.fd >= 0 && (rc = td__enc_add_fd(e->out, m->u.evict.fd, "EVICT", err)))
            return rc;
        td__enc_head(e, m, 0, m->u.evict.fd >= 0);
        return 0;
    case TD__PROTO_EVICT_OK:
        td__enc_head(e, m, 2, 0);
        td__pk_kv_u64(e, "entries", m->u.evicted.entries);
        td__pk_kv_u64(e, "bytes", m->u.evicted.bytes);
        return 0;
    case TD__PROTO_PING:
    case TD__PROTO_PONG:
        td__enc_head(e, m, 1, 0);
        td__pk_kv_u64(e, "data", m->u.ping.data);
        return 0;
    case TD__PROTO_ERROR: {
        if (m->u.error.code >= 0)
            return td__err(err, TD_EINVAL, "ERROR: code %d is not negative", m->u.error.code);
        size_t n = strnlen(m->u.error.message, sizeof m->u.error.message);
        td__enc_head(e, m, 2, 0);
        td__pk_key(e, "code");
        msgpack_pack_int64(&e->pk, m->u.error.code);
        td__pk_key(e, "message");
        msgpack_pack_str_with_body(&e->pk, m->u.error.message, n);
        return 0;
    }
    default:
        return td__err(err, TD_EINVAL, "cannot encode message type %u", m->type);
    }
}

int td__proto_encode(const td__proto_msg *m, const td__proto_limits *peer, td__proto_out *out,
                     td_error *err)
{
    td__proto_enc e;
    memset(out, 0, sizeof *out);
    memset(&e, 0, sizeof e);
    td__proto_limits_resolve(peer, &e.peer);
    e.out = out;
    e.max = (size_t)e.peer.max_frame + TD__PROTO_PREFIX;
    msgpack_packer_init(&e.pk, &e, td__enc_write);

    static const char zero[TD__PROTO_PREFIX];
    td__enc_write(&e, zero, sizeof zero);
    int rc = td__enc_body(&e, m, err);
    if (!rc && e.status == TD_ELIMIT)
        rc = td__err(err, TD_ELIMIT, "%s: message larger than the peer's limit of %u bytes",
                     td__proto_type_name(m->type), e.peer.max_frame);
    else if (!rc && e.status)
        rc = td__err(err, e.status, "%s: out of memory encoding the message",
                     td__proto_type_name(m->type));
    if (!rc && out->nfds > e.peer.max_fds)
        rc = td__err(err, TD_ELIMIT, "%s: %u descriptors, the peer takes %u",
                     td__proto_type_name(m->type), out->nfds, e.peer.max_fds);
    if (rc) {
        free(out->buf);
        memset(out, 0, sizeof *out);
        return rc;
    }
    td__put32(out->buf, (uint32_t)(out->len - TD__PROTO_PREFIX));
    return 0;
}

void td__proto_out_destroy(td__proto_out *out)
{
    if (!out)
        return;
    free(out->buf);
    memset(out, 0, sizeof *out);
}

int td__proto_meta_pack(const td_meta *m, uint8_t **out, size_t *len, td_error *err)
{
    td__proto_out o;
    td__proto_enc e;
    td__proto_limits lim = {.max_frame = TD__PROTO_FRAME_MAX};
    memset(&o, 0, sizeof o);
    memset(&e, 0, sizeof e);
    td__proto_limits_resolve(&lim, &e.peer);
    e.out = &o;
    e.max = e.peer.max_frame;
    msgpack_packer_init(&e.pk, &e, td__enc_write);
    int rc = td__proto_meta_encode(&e, m, err);
    if (!rc && e.status)
        rc = td__err(err, e.status, "metadata: %s",
                     e.status == TD_ELIMIT ? "over 1 GiB encoded" : "out of memory");
    if (rc) {
        free(o.buf);
        return rc;
    }
    *out = o.buf;
    *len = o.len;
    return 0;
}
