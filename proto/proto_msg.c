/*
 * proto_msg.c - the messages: building them, the checks shared with the encoder
 * (proto_enc.c), and decoding with strict checks.
 *
 * Every message is one msgpack map with string keys (PROTOCOL.md, "Messages"). Decoding runs in
 * three steps: the pre-walk (proto_walk.c) bounds every count by the bytes present; msgpack-c
 * unpacks into a zone sized exactly by the pre-walk; then the fields are checked one by one
 * while the C structs are built. Descriptors are only moved into the message at the very end,
 * so that every failure leaves them with the caller, who closes them.
 */
#include "proto_internal.h"
#include "common.h"
#include "dtype.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------------
 * Messages as C structs
 */

const char *td__proto_type_name(uint32_t type)
{
    switch (type) {
    case TD__PROTO_HELLO:
        return "HELLO";
    case TD__PROTO_LOAD:
        return "LOAD";
    case TD__PROTO_RELEASE:
        return "RELEASE";
    case TD__PROTO_STATUS:
        return "STATUS";
    case TD__PROTO_EVICT:
        return "EVICT";
    case TD__PROTO_PING:
        return "PING";
    case TD__PROTO_HELLO_OK:
        return "HELLO_OK";
    case TD__PROTO_LOAD_OK:
        return "LOAD_OK";
    case TD__PROTO_RELEASE_OK:
        return "RELEASE_OK";
    case TD__PROTO_STATUS_OK:
        return "STATUS_OK";
    case TD__PROTO_EVICT_OK:
        return "EVICT_OK";
    case TD__PROTO_PONG:
        return "PONG";
    case TD__PROTO_ERROR:
        return "ERROR";
    default:
        return NULL;
    }
}

void td__proto_msg_init(td__proto_msg *m, uint32_t type, uint32_t id)
{
    memset(m, 0, sizeof *m);
    m->type = type;
    m->id = id;
    if (type == TD__PROTO_LOAD)
        m->u.load.fd = -1;
    else if (type == TD__PROTO_EVICT)
        m->u.evict.fd = -1;
    else if (type == TD__PROTO_LOAD_OK)
        m->u.loaded.table_fd = -1;
}

static void td__close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void td__proto_msg_destroy(td__proto_msg *m)
{
    if (!m)
        return;
    switch (m->type) {
    case TD__PROTO_HELLO:
    case TD__PROTO_HELLO_OK:
        free(m->u.hello.software);
        break;
    case TD__PROTO_LOAD:
        td__close_fd(&m->u.load.fd);
        free(m->u.load.name);
        break;
    case TD__PROTO_LOAD_OK:
        if (m->u.loaded.table) {
            td__table_destroy(m->u.loaded.table);
            free(m->u.loaded.table);
        }
        if (m->u.loaded.regions) {
            for (uint32_t i = 0; i < m->u.loaded.nregions; i++)
                td__close_fd(&m->u.loaded.regions[i].fd);
            free(m->u.loaded.regions);
        }
        td__close_fd(&m->u.loaded.table_fd);
        break;
    case TD__PROTO_STATUS_OK:
        if (m->u.status.files) {
            for (uint32_t i = 0; i < m->u.status.nfiles; i++)
                free(m->u.status.files[i].name);
            free(m->u.status.files);
        }
        free(m->u.status.users);
        break;
    case TD__PROTO_EVICT:
        td__close_fd(&m->u.evict.fd);
        break;
    default:
        break;
    }
    td__proto_msg_init(m, m->type, m->id);
}

void td__proto_msg_error(td__proto_msg *m, uint32_t id, int code, const td_error *e)
{
    td__proto_msg_init(m, TD__PROTO_ERROR, id);
    m->u.error.code = code < 0 ? code : TD_EPROTO;
    const char *text = e && e->message[0] ? e->message : td_strerror(m->u.error.code);
    size_t n = strnlen(text, sizeof m->u.error.message - 1);
    memcpy(m->u.error.message, text, n);
    m->u.error.message[n] = '\0';
}

int td__proto_negotiate(const td__proto_hello *theirs, uint32_t min_version, uint32_t max_version,
                        uint64_t features, uint32_t *version, uint64_t *agreed, td_error *err)
{
    uint32_t their_min = theirs->min_version ? theirs->min_version : theirs->version;
    uint32_t v = theirs->version < max_version ? theirs->version : max_version;
    if (v < min_version || v < their_min || their_min > theirs->version)
        return td__err(err, TD_EVERSION,
                       "HELLO: no common protocol version: peer speaks %u..%u, we speak %u..%u",
                       their_min, theirs->version, min_version, max_version);
    *version = v;
    *agreed = theirs->features & features;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Shared checks
 */

/* The entry's name, quoted for a message (only computed on failure paths). */
static const char *td__ename(const td__entry *e, char *q, size_t cap)
{
    return e->name ? td__quote(e->name, strlen(e->name), q, cap) : "";
}

int td__proto_entry_check(const td__entry *e, size_t idx, const td__proto_region *regions,
                          uint32_t nregions, int code, const char *what, td_error *err)
{
    char q[80];
    if (e->layout)
        return td__err(err, code,
                       "%s: entries[%zu] '%s': layout %u is not 0 (send decoded entries)", what,
                       idx, td__ename(e, q, sizeof q), e->layout);
    if (!td__dtype_info(e->dtype))
        return td__err(err, code == TD_EPROTO ? TD_EDTYPE : code,
                       "%s: entries[%zu] '%s': dtype %d is unknown", what, idx,
                       td__ename(e, q, sizeof q), (int)e->dtype);
    if (e->ndim > TD_MAX_DIMS || (e->ndim && !e->shape))
        return td__err(err, code, "%s: entries[%zu] '%s': %u dimensions (at most %d)", what, idx,
                       td__ename(e, q, sizeof q), e->ndim, TD_MAX_DIMS);
    uint64_t nbytes;
    td_error tmp;
    if (td__shape_nbytes(e->dtype, e->ndim, e->shape, &nbytes, &tmp))
        return td__err(err, code, "%s: entries[%zu] '%s': shape: %s", what, idx,
                       td__ename(e, q, sizeof q), tmp.message);
    if (nbytes != e->nbytes)
        return td__err(err, code, "%s: entries[%zu] '%s': nbytes %llu, but %s x shape is %llu",
                       what, idx, td__ename(e, q, sizeof q), (unsigned long long)e->nbytes,
                       td_dtype_name(e->dtype), (unsigned long long)nbytes);
    if (e->region >= nregions)
        return td__err(err, code, "%s: entries[%zu] '%s': region %u, but there are %u", what, idx,
                       td__ename(e, q, sizeof q), e->region, nregions);
    uint64_t end;
    if (!td__add_u64(e->offset, e->nbytes, &end) || end > regions[e->region].size)
        return td__err(err, code,
                       "%s: entries[%zu] '%s': bytes %llu + %llu are past the end of region %u "
                       "(%llu bytes)",
                       what, idx, td__ename(e, q, sizeof q), (unsigned long long)e->offset,
                       (unsigned long long)e->nbytes, e->region,
                       (unsigned long long)regions[e->region].size);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding: field access
 */

/* Fields of a map with string keys: the map's own checks (keys are strings, no key twice, at
 * most TD__PROTO_FIELDS_MAX of them) and lookups by name. */
typedef struct td__fields {
    const msgpack_object_map *map;
    const char *what;
    const td__proto_dec *d;
} td__fields;

static int td__fields_init(td__fields *f, const td__proto_dec *d, const msgpack_object *o,
                           const char *what)
{
    f->d = d;
    f->what = what;
    if (o->type != MSGPACK_OBJECT_MAP)
        return td__err(d->err, TD_EPROTO, "%s: expected a map, got msgpack type %d", what,
                       (int)o->type);
    f->map = &o->via.map;
    if (f->map->size > TD__PROTO_FIELDS_MAX)
        return td__err(d->err, TD_ELIMIT, "%s: %u fields (limit %u)", what, f->map->size,
                       TD__PROTO_FIELDS_MAX);
    for (uint32_t i = 0; i < f->map->size; i++) {
        const msgpack_object *k = &f->map->ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return td__err(d->err, TD_EPROTO, "%s: field %u has a key that is not a string", what,
                           i);
        for (uint32_t j = 0; j < i; j++) {
            const msgpack_object *k2 = &f->map->ptr[j].key;
            if (k2->via.str.size == k->via.str.size &&
                memcmp(td__proto_bytes(k2), td__proto_bytes(k), k->via.str.size) == 0) {
                char q[80];
                return td__err(d->err, TD_EPROTO, "%s: field '%s' appears twice", what,
                               td__quote(td__proto_bytes(k), k->via.str.size, q, sizeof q));
            }
        }
    }
    return 0;
}

static const msgpack_object *td__field(const td__fields *f, const char *key)
{
    size_t n = strlen(key); /* every key is a string (td__fields_init) */
    for (uint32_t i = 0; i < f->map->size; i++) {
        const msgpack_object *k = &f->map->ptr[i].key;
        if (k->via.str.size == n && memcmp(td__proto_bytes(k), key, n) == 0)
            return &f->map->ptr[i].val;
    }
    return NULL;
}

/* An unsigned integer in [0, max]. A missing field is 0 unless required. */
static int td__field_u64(const td__fields *f, const char *key, int required, uint64_t max,
                         uint64_t *out)
{
    const msgpack_object *o = td__field(f, key);
    *out = 0;
    if (!o) {
        if (required)
            return td__err(f->d->err, TD_EPROTO, "%s: field '%s' is missing", f->what, key);
        return 0;
    }
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return td__err(f->d->err, TD_EPROTO,
                       "%s: field '%s' is not an unsigned integer (msgpack type %d)", f->what, key,
                       (int)o->type);
    if (o->via.u64 > max)
        return td__err(f->d->err, TD_EPROTO, "%s: field '%s' = %llu is out of range (max %llu)",
                       f->what, key, (unsigned long long)o->via.u64, (unsigned long long)max);
    *out = o->via.u64;
    return 0;
}

/* A copy of a string field (missing or nil: NULL), at most max bytes, no NUL inside. */
static int td__copy_str(const td__proto_dec *d, const msgpack_object *o, size_t max,
                        const char *what, const char *field, char **out)
{
    *out = NULL;
    if (!o || o->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (o->type != MSGPACK_OBJECT_STR)
        return td__err(d->err, TD_EPROTO, "%s: %s is not a string (msgpack type %d)", what, field,
                       (int)o->type);
    size_t n = o->via.str.size;
    if (n > max)
        return td__err(d->err, TD_ELIMIT, "%s: %s of %zu bytes (limit %zu)", what, field, n, max);
    if (memchr(td__proto_bytes(o), '\0', n))
        return td__err(d->err, TD_EPROTO, "%s: %s contains a NUL byte", what, field);
    char *s = malloc(n + 1);
    if (!s)
        return td__err(d->err, TD_ENOMEM, "%s: out of memory for %s", what, field);
    memcpy(s, td__proto_bytes(o), n);
    s[n] = '\0';
    *out = s;
    return 0;
}

/* An element of a fixed-position array as an unsigned integer in [0, max]. */
static int td__elem_u64(const td__proto_dec *d, const msgpack_object *o, uint64_t max,
                        const char *what, size_t idx, const char *field, uint64_t *out)
{
    *out = 0;
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return td__err(d->err, TD_EPROTO, "%s[%zu]: %s is not an unsigned integer", what, idx,
                       field);
    if (o->via.u64 > max)
        return td__err(d->err, TD_EPROTO, "%s[%zu]: %s = %llu is out of range (max %llu)", what,
                       idx, field, (unsigned long long)o->via.u64, (unsigned long long)max);
    *out = o->via.u64;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Decoding: the messages
 */

static int td__dec_hello(const td__fields *f, td__proto_msg *m)
{
    td__proto_hello *h = &m->u.hello;
    uint64_t v;
    int rc;
    if ((rc = td__field_u64(f, "version", 1, UINT32_MAX, &v)))
        return rc;
    if (!v)
        return td__err(f->d->err, TD_EPROTO, "%s: version 0", f->what);
    h->version = (uint32_t)v;
    if ((rc = td__field_u64(f, "min_version", 0, UINT32_MAX, &v)))
        return rc;
    h->min_version = v ? (uint32_t)v : h->version;
    if (h->min_version > h->version)
        return td__err(f->d->err, TD_EPROTO, "%s: min_version %u above version %u", f->what,
                       h->min_version, h->version);
    if ((rc = td__field_u64(f, "features", 0, UINT64_MAX, &h->features)))
        return rc;
    if ((rc = td__field_u64(f, "max_frame", 0, UINT32_MAX, &v)))
        return rc;
    h->max_frame = (uint32_t)v;
    if ((rc = td__field_u64(f, "max_fds", 0, TD__PROTO_FDS_MAX, &v)))
        return rc;
    h->max_fds = (uint32_t)v;
    return td__copy_str(f->d, td__field(f, "software"), TD__PROTO_TEXT_MAX, f->what, "software",
                        &h->software);
}

static int td__dec_load(const td__fields *f, td__proto_msg *m)
{
    td__proto_load *l = &m->u.load;
    uint64_t v;
    int rc;
    if ((rc = td__field_u64(f, "format", 0, TD_FORMAT_GGUF, &v)))
        return rc;
    l->format = (td_format)v;
    if ((rc = td__field_u64(f, "mode", 0, TD__PROTO_MODE_COUNT - 1, &v)))
        return rc;
    l->mode = (uint32_t)v;
    if ((rc = td__field_u64(f, "dequant", 0, TD__DEQUANT_MLX, &v)))
        return rc;
    if (v && !td__dequant_target_ok((long long)v))
        return td__err(f->d->err, TD_EPROTO,
                       "LOAD: dequant %llu is not float32, float16, bfloat16 or the MLX form",
                       (unsigned long long)v);
    l->dequant = (uint32_t)v;
    if ((rc = td__field_u64(f, "max_inflated", 0, UINT64_MAX, &l->max_inflated)) ||
        (rc = td__field_u64(f, "flags", 0, UINT64_MAX, &l->flags)))
        return rc;
    if ((rc = td__field_u64(f, "have", 0, UINT64_MAX, &l->have)))
        return rc;
    return td__copy_str(f->d, td__field(f, "name"), TD__PROTO_NAME_MAX, f->what, "name", &l->name);
}

/* LOAD_OK. fdidx[i] receives the frame descriptor index of region i (TD__PROTO_FDS_MAX for an
 * OWN region, which has none), fdidx[TD__PROTO_FDS_MAX] that of the flat table's memfd. */
static int td__dec_loaded(const td__fields *f, td__proto_msg *m, unsigned nfds, uint8_t *fdidx)
{
    const td__proto_dec *d = f->d;
    td__proto_loaded *l = &m->u.loaded;
    uint64_t v;
    int rc;
    if ((rc = td__field_u64(f, "lease", 1, UINT64_MAX, &l->lease)))
        return rc;
    if (!l->lease)
        return td__err(d->err, TD_EPROTO, "LOAD_OK: lease 0");
    if ((rc = td__field_u64(f, "format", 1, TD_FORMAT_GGUF, &v)))
        return rc;
    if (v < TD_FORMAT_NPY)
        return td__err(d->err, TD_EPROTO, "LOAD_OK: format %llu is not a file format",
                       (unsigned long long)v);
    l->format = (td_format)v;

    /* The flat form: "table" is [fd, size] (fd nil: the table the LOAD's `have` named) and
     * "entry" names the daemon's entry. */
    uint8_t used[TD__PROTO_FDS_MAX] = {0};
    unsigned nused = 0;
    const msgpack_object *to = td__field(f, "table");
    if (to && to->type == MSGPACK_OBJECT_ARRAY) {
        if (to->via.array.size < 2)
            return td__err(d->err, TD_EPROTO, "LOAD_OK: table is not [fd, size]");
        if (to->via.array.ptr[0].type == MSGPACK_OBJECT_NIL) {
            l->table_kept = true;
        } else {
            if (!nfds)
                return td__err(d->err, TD_EPROTO, "LOAD_OK: table names a descriptor, none came");
            if ((rc = td__elem_u64(d, &to->via.array.ptr[0], nfds - 1, "LOAD_OK: table", 0, "fd",
                                   &v)))
                return rc;
            used[v] = 1;
            nused = 1;
            fdidx[TD__PROTO_FDS_MAX] = (uint8_t)v;
        }
        if ((rc = td__elem_u64(d, &to->via.array.ptr[1], UINT64_MAX, "LOAD_OK: table", 0, "size",
                               &l->table_size)) ||
            (rc = td__field_u64(f, "entry", 1, UINT64_MAX, &l->entry)))
            return rc;
        if (!l->entry)
            return td__err(d->err, TD_EPROTO, "LOAD_OK: entry 0");
        if (td__field(f, "entries") || td__field(f, "meta"))
            return td__err(d->err, TD_EPROTO, "LOAD_OK: entries or meta beside a shared table");
    } else if (to) {
        return td__err(d->err, TD_EPROTO, "LOAD_OK: field 'table' is not an array");
    } else {
        l->table = malloc(sizeof *l->table);
        if (!l->table)
            return td__err(d->err, TD_ENOMEM, "LOAD_OK: out of memory");
        td__table_init(l->table, (td_format)v);
    }

    /* Regions: each names a descriptor of the frame, or (fd nil, flags OWN) the LOAD's own;
     * every descriptor of the frame is used exactly once. */
    const msgpack_object *ro = td__field(f, "regions");
    if (!ro || ro->type != MSGPACK_OBJECT_ARRAY)
        return td__err(d->err, TD_EPROTO, "LOAD_OK: field 'regions' is %s",
                       ro ? "not an array" : "missing");
    unsigned nregions = ro->via.array.size;
    if (nregions > TD__PROTO_FDS_MAX)
        return td__err(d->err, TD_EPROTO, "LOAD_OK: %u regions (limit %u)", nregions,
                       TD__PROTO_FDS_MAX);
    if (nregions) {
        l->regions = calloc(nregions, sizeof *l->regions);
        if (!l->regions)
            return td__err(d->err, TD_ENOMEM, "LOAD_OK: out of memory for %u regions", nregions);
    }
    for (uint32_t i = 0; i < nregions; i++) {
        const msgpack_object *r = &ro->via.array.ptr[i];
        l->regions[i].fd = -1;
        l->nregions = i + 1;
        if (r->type != MSGPACK_OBJECT_ARRAY || r->via.array.size < 2)
            return td__err(d->err, TD_EPROTO, "LOAD_OK: regions[%u] is not [fd, size]", i);
        if ((rc = td__elem_u64(d, &r->via.array.ptr[1], UINT64_MAX, "LOAD_OK: regions", i, "size",
                               &l->regions[i].size)))
            return rc;
        if (r->via.array.size > 2) {
            if ((rc = td__elem_u64(d, &r->via.array.ptr[2], UINT32_MAX, "LOAD_OK: regions", i,
                                   "flags", &v)))
                return rc;
            l->regions[i].flags = (uint32_t)v;
        }
        uint32_t fl = l->regions[i].flags;
        int own = r->via.array.ptr[0].type == MSGPACK_OBJECT_NIL;
        if (own != ((fl & TD__PROTO_REGION_OWN) != 0) || (own && !(fl & TD__PROTO_REGION_FILE)))
            return td__err(d->err, TD_EPROTO,
                           "LOAD_OK: regions[%u]: fd %s with flags 0x%x (a nil fd is the flags "
                           "OWN and FILE, and only they)",
                           i, own ? "nil" : "given", (unsigned)fl);
        if (own) {
            fdidx[i] = TD__PROTO_FDS_MAX; /* none of the frame's */
            continue;
        }
        if (!nfds)
            return td__err(d->err, TD_EPROTO, "LOAD_OK: regions[%u] names a descriptor, none came",
                           i);
        if ((rc = td__elem_u64(d, &r->via.array.ptr[0], nfds - 1, "LOAD_OK: regions", i, "fd", &v)))
            return rc;
        if (used[v]++)
            return td__err(d->err, TD_EPROTO, "LOAD_OK: regions[%u]: descriptor %llu used twice", i,
                           (unsigned long long)v);
        fdidx[i] = (uint8_t)v;
        nused++;
    }
    if (nused != nfds)
        return td__err(d->err, TD_EPROTO, "LOAD_OK: %u descriptors came, the reply names %u", nfds,
                       nused);
    if (!l->table)
        return 0;

    /* Entries. The table is sized once: the count is bounded by the frame (the pre-walk saw
     * at least one byte per entry), and this spares a chain of reallocations. */
    const msgpack_object *eo = td__field(f, "entries");
    if (!eo || eo->type != MSGPACK_OBJECT_ARRAY)
        return td__err(d->err, TD_EPROTO, "LOAD_OK: field 'entries' is %s",
                       eo ? "not an array" : "missing");
    if ((rc = td__table_reserve(l->table, eo->via.array.size, d->err)))
        return td__err_prefix(d->err, rc, "LOAD_OK");
    for (uint32_t i = 0; i < eo->via.array.size; i++) {
        const msgpack_object *a = &eo->via.array.ptr[i];
        if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size < 6)
            return td__err(d->err, TD_EPROTO,
                           "LOAD_OK: entries[%u] is not [name, dtype, shape, region, offset, "
                           "nbytes]",
                           i);
        const msgpack_object *x = a->via.array.ptr;
        const char *name = NULL;
        size_t name_len = 0;
        if (x[0].type == MSGPACK_OBJECT_STR) {
            name = td__proto_bytes(&x[0]);
            name_len = x[0].via.str.size;
            if (!name_len || name_len > TD__PROTO_NAME_MAX || memchr(name, '\0', name_len))
                return td__err(d->err, TD_EPROTO,
                               "LOAD_OK: entries[%u]: name is empty, too long (%zu bytes) or "
                               "holds a NUL byte",
                               i, name_len);
        } else if (x[0].type != MSGPACK_OBJECT_NIL) {
            return td__err(d->err, TD_EPROTO, "LOAD_OK: entries[%u]: name is not a string", i);
        }
        uint64_t dtype, region, offset, nbytes;
        if ((rc = td__elem_u64(d, &x[1], UINT32_MAX, "LOAD_OK: entries", i, "dtype", &dtype)) ||
            (rc = td__elem_u64(d, &x[3], UINT32_MAX, "LOAD_OK: entries", i, "region", &region)) ||
            (rc = td__elem_u64(d, &x[4], UINT64_MAX, "LOAD_OK: entries", i, "offset", &offset)) ||
            (rc = td__elem_u64(d, &x[5], UINT64_MAX, "LOAD_OK: entries", i, "nbytes", &nbytes)))
            return rc;
        if (x[2].type != MSGPACK_OBJECT_ARRAY || x[2].via.array.size > TD_MAX_DIMS)
            return td__err(d->err, TD_EPROTO,
                           "LOAD_OK: entries[%u]: shape is not an array of at most %d sizes", i,
                           TD_MAX_DIMS);
        int64_t shape[TD_MAX_DIMS];
        uint32_t ndim = x[2].via.array.size;
        for (uint32_t k = 0; k < ndim; k++) {
            uint64_t dim;
            if ((rc = td__elem_u64(d, &x[2].via.array.ptr[k], INT64_MAX, "LOAD_OK: entries", i,
                                   "shape", &dim)))
                return rc;
            shape[k] = (int64_t)dim;
        }
        td__entry *e = td__table_add(l->table, name, name_len, d->err);
        if (!e)
            return d->err ? d->err->code : TD_ENOMEM;
        if ((rc = td__entry_set_shape(e, ndim, shape, d->err)))
            return rc;
        e->dtype = (td_dtype)dtype;
        e->region = (uint32_t)region;
        e->offset = offset;
        e->nbytes = nbytes;
        e->layout = 0;
        if (dtype >= TD_DTYPE_COUNT)
            return td__err(d->err, TD_EDTYPE, "LOAD_OK: entries[%u]: dtype %llu is unknown", i,
                           (unsigned long long)dtype);
        if ((rc = td__proto_entry_check(e, i, l->regions, l->nregions, TD_EPROTO, "LOAD_OK",
                                        d->err)))
            return rc;
    }
    if ((rc = td__table_check_unique(l->table, "LOAD_OK", d->err)))
        return rc;

    const msgpack_object *mo = td__field(f, "meta");
    if (mo && mo->type != MSGPACK_OBJECT_NIL)
        return td__proto_meta_decode(d, mo, "LOAD_OK: meta", &l->table->meta);
    return 0;
}

/* STATUS_OK "users": [uid, entries, bytes, quota] per uid (later elements are ignored). The
 * array's size is bounded by the bytes present (the pre-walk), and so is the allocation. */
static int td__dec_status_users(const td__proto_dec *d, const msgpack_object *uo,
                                td__proto_status *s)
{
    if (!uo || uo->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (uo->type != MSGPACK_OBJECT_ARRAY)
        return td__err(d->err, TD_EPROTO, "STATUS_OK: field 'users' is not an array");
    uint32_t n = uo->via.array.size;
    s->users = calloc(n ? n : 1, sizeof *s->users);
    if (!s->users)
        return td__err(d->err, TD_ENOMEM, "STATUS_OK: out of memory for %u users", n);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *a = &uo->via.array.ptr[i];
        td__proto_status_user *u = &s->users[i];
        s->nusers = i + 1;
        if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size < 4)
            return td__err(d->err, TD_EPROTO,
                           "STATUS_OK: users[%u] is not [uid, entries, bytes, quota]", i);
        const msgpack_object *x = a->via.array.ptr;
        uint64_t uid;
        int rc;
        if ((rc = td__elem_u64(d, &x[0], UINT32_MAX, "STATUS_OK: users", i, "uid", &uid)) ||
            (rc = td__elem_u64(d, &x[1], UINT64_MAX, "STATUS_OK: users", i, "entries",
                               &u->entries)) ||
            (rc = td__elem_u64(d, &x[2], UINT64_MAX, "STATUS_OK: users", i, "bytes", &u->bytes)) ||
            (rc = td__elem_u64(d, &x[3], UINT64_MAX, "STATUS_OK: users", i, "quota", &u->quota)))
            return rc;
        u->uid = (uint32_t)uid;
    }
    return 0;
}

static int td__dec_status(const td__fields *f, td__proto_msg *m)
{
    const td__proto_dec *d = f->d;
    td__proto_status *s = &m->u.status;
    int rc;
    const msgpack_object *so = td__field(f, "stats");
    if (!so || so->type != MSGPACK_OBJECT_MAP)
        return td__err(d->err, TD_EPROTO, "STATUS_OK: field 'stats' is %s",
                       so ? "not a map" : "missing");
    /* Unknown figures (from newer daemons) are skipped; known ones must be unsigned. */
    for (uint32_t i = 0; i < so->via.map.size; i++) {
        const msgpack_object *k = &so->via.map.ptr[i].key, *v = &so->via.map.ptr[i].val;
        uint64_t *slot = NULL;
#define TD__XX(name, text)                                                                         \
    if (!slot && td__proto_str_is(k, #name))                                                       \
        slot = &s->stats.name;
        TD__PROTO_STATS_MAP(TD__XX)
#undef TD__XX
        if (!slot)
            continue;
        if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            return td__err(d->err, TD_EPROTO, "STATUS_OK: stats[%u] is not an unsigned integer", i);
        *slot = v->via.u64;
    }
    if ((rc = td__dec_status_users(d, td__field(f, "users"), s)))
        return rc;
    const msgpack_object *fo = td__field(f, "files");
    if (!fo || fo->type == MSGPACK_OBJECT_NIL)
        return 0;
    if (fo->type != MSGPACK_OBJECT_ARRAY)
        return td__err(d->err, TD_EPROTO, "STATUS_OK: field 'files' is not an array");
    uint32_t n = fo->via.array.size;
    s->files = calloc(n ? n : 1, sizeof *s->files);
    if (!s->files)
        return td__err(d->err, TD_ENOMEM, "STATUS_OK: out of memory for %u files", n);
    for (uint32_t i = 0; i < n; i++) {
        const msgpack_object *a = &fo->via.array.ptr[i];
        td__proto_status_file *sf = &s->files[i];
        s->nfiles = i + 1;
        if (a->type != MSGPACK_OBJECT_ARRAY || a->via.array.size < 6)
            return td__err(d->err, TD_EPROTO,
                           "STATUS_OK: files[%u] is not [name, format, mode, bytes, leases, hits]",
                           i);
        const msgpack_object *x = a->via.array.ptr;
        uint64_t fmt, mode;
        if ((rc = td__copy_str(d, &x[0], TD__PROTO_NAME_MAX, "STATUS_OK: files", "name",
                               &sf->name)) ||
            (rc = td__elem_u64(d, &x[1], TD_FORMAT_GGUF, "STATUS_OK: files", i, "format", &fmt)) ||
            (rc = td__elem_u64(d, &x[2], TD__PROTO_MODE_COUNT - 1, "STATUS_OK: files", i, "mode",
                               &mode)) ||
            (rc = td__elem_u64(d, &x[3], UINT64_MAX, "STATUS_OK: files", i, "bytes", &sf->bytes)) ||
            (rc = td__elem_u64(d, &x[4], UINT64_MAX, "STATUS_OK: files", i, "leases",
                               &sf->leases)) ||
            (rc = td__elem_u64(d, &x[5], UINT64_MAX, "STATUS_OK: files", i, "hits", &sf->hits)))
            return rc;
        /* Trailing figures, present from daemons that know them. */
        uint64_t *extra[] = {&sf->tensors, &sf->file_bytes, &sf->derived_bytes,
                             &sf->loads,   &sf->idle_ms,    &sf->flags};
        static const char *const extra_names[] = {"tensors", "file_bytes", "derived_bytes",
                                                  "loads",   "idle_ms",    "flags"};
        for (uint32_t k = 0; k < 6 && 6 + k < a->via.array.size; k++)
            if ((rc = td__elem_u64(d, &x[6 + k], UINT64_MAX, "STATUS_OK: files", i, extra_names[k],
                                   extra[k])))
                return rc;
        sf->format = (td_format)fmt;
        sf->mode = (uint32_t)mode;
    }
    return 0;
}

static int td__dec_error(const td__fields *f, td__proto_msg *m)
{
    const td__proto_dec *d = f->d;
    const msgpack_object *c = td__field(f, "code"), *t = td__field(f, "message");
    if (!c || c->type != MSGPACK_OBJECT_NEGATIVE_INTEGER || c->via.i64 < -32768)
        return td__err(d->err, TD_EPROTO, "ERROR: field 'code' is %s",
                       c ? "not a negative integer above -32769" : "missing");
    m->u.error.code = (int)c->via.i64;
    if (!t || t->type != MSGPACK_OBJECT_STR)
        return td__err(d->err, TD_EPROTO, "ERROR: field 'message' is %s",
                       t ? "not a string" : "missing");
    if (t->via.str.size > TD__PROTO_TEXT_MAX)
        return td__err(d->err, TD_ELIMIT, "ERROR: message of %u bytes (limit %u)", t->via.str.size,
                       TD__PROTO_TEXT_MAX);
    /* Kept on one line and printable: the text ends up in the caller's td_error. */
    size_t n = t->via.str.size;
    if (n > sizeof m->u.error.message - 1)
        n = sizeof m->u.error.message - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)td__proto_bytes(t)[i];
        m->u.error.message[i] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    m->u.error.message[n] = '\0';
    return 0;
}

/* Whether a message of this type may carry nfds descriptors: LOAD exactly one, EVICT none or
 * one, LOAD_OK one per region (checked against the regions), everything else none. */
static int td__expected_fds(uint32_t type, unsigned nfds)
{
    switch (type) {
    case TD__PROTO_LOAD:
        return nfds == 1;
    case TD__PROTO_EVICT:
        return nfds <= 1;
    case TD__PROTO_LOAD_OK:
        return 1;
    default:
        return nfds == 0;
    }
}

int td__proto_decode(const uint8_t *body, size_t len, int *fds, unsigned *nfds,
                     const td__proto_limits *lim_in, td__proto_msg *out, td_error *err)
{
    td__proto_limits lim;
    td__proto_limits_resolve(lim_in, &lim);
    td__proto_dec d = {&lim, err};
    td__proto_walk walk;
    msgpack_zone zone;
    msgpack_object root;
    td__fields f;
    uint8_t fdidx[TD__PROTO_FDS_MAX + 1];
    unsigned have = *nfds;
    uint64_t v;
    int rc;

    memset(out, 0, sizeof *out);
    if (len > lim.max_frame)
        return td__err(err, TD_ELIMIT, "message of %zu bytes (limit %u)", len, lim.max_frame);
    if (have > lim.max_fds)
        return td__err(err, TD_ELIMIT, "%u descriptors on one frame (limit %u)", have, lim.max_fds);
    if ((rc = td__proto_prewalk(body, len, &lim, &walk, err)))
        return rc;
    if (!(body[0] >= 0x80 && body[0] <= 0x8f) && body[0] != 0xde && body[0] != 0xdf)
        return td__err(err, TD_EPROTO, "message: not a map (first byte 0x%02x)", body[0]);

    /* One chunk holds every container the pre-walk counted, so msgpack-c allocates once and
     * exactly what the bytes present justify. */
    if (!msgpack_zone_init(&zone, (size_t)walk.zone_bytes + 64))
        return td__err(err, TD_ENOMEM, "message: out of memory for %llu bytes of objects",
                       (unsigned long long)walk.zone_bytes);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack((const char *)body, len, &off, &zone, &root);
    if (ur != MSGPACK_UNPACK_SUCCESS) {
        rc = td__err(err, ur == MSGPACK_UNPACK_NOMEM_ERROR ? TD_ENOMEM : TD_EPROTO,
                     "message: msgpack-c refused it (%d) after the pre-walk passed", (int)ur);
        goto out;
    }

    if ((rc = td__fields_init(&f, &d, &root, "message")))
        goto out;
    if ((rc = td__field_u64(&f, "type", 1, UINT32_MAX, &v)))
        goto out;
    out->type = (uint32_t)v;
    if ((rc = td__field_u64(&f, "id", 1, UINT32_MAX, &v)))
        goto out;
    out->id = (uint32_t)v;
    const char *what = td__proto_type_name(out->type);
    if (!what) {
        rc = td__err(err, TD_ENOTSUP, "message type %u is unknown", out->type);
        goto out;
    }
    f.what = what;
    if ((rc = td__field_u64(&f, "fds", 0, TD__PROTO_FDS_MAX, &v)))
        goto out;
    if (v != have) {
        rc = td__err(err, TD_EPROTO, "%s: declares %llu descriptors, %u attached", what,
                     (unsigned long long)v, have);
        goto out;
    }
    if (!td__expected_fds(out->type, have)) {
        rc = td__err(err, TD_EPROTO,
                     "%s: %u descriptors attached, which this message does not take", what, have);
        goto out;
    }

    td__proto_msg tmp;
    td__proto_msg_init(&tmp, out->type, out->id);
    switch (out->type) {
    case TD__PROTO_HELLO:
    case TD__PROTO_HELLO_OK:
        rc = td__dec_hello(&f, &tmp);
        break;
    case TD__PROTO_LOAD:
        rc = td__dec_load(&f, &tmp);
        break;
    case TD__PROTO_LOAD_OK:
        rc = td__dec_loaded(&f, &tmp, have, fdidx);
        break;
    case TD__PROTO_RELEASE:
    case TD__PROTO_RELEASE_OK:
        rc = td__field_u64(&f, "lease", 1, UINT64_MAX, &tmp.u.release.lease);
        if (!rc && !tmp.u.release.lease)
            rc = td__err(err, TD_EPROTO, "%s: lease 0", what);
        if (!rc)
            rc = td__field_u64(&f, "flags", 0, UINT64_MAX, &tmp.u.release.flags);
        break;
    case TD__PROTO_STATUS:
        rc = td__field_u64(&f, "flags", 0, UINT64_MAX, &tmp.u.status_req.flags);
        break;
    case TD__PROTO_STATUS_OK:
        rc = td__dec_status(&f, &tmp);
        break;
    case TD__PROTO_EVICT:
        rc = 0;
        break;
    case TD__PROTO_EVICT_OK:
        rc = td__field_u64(&f, "entries", 0, UINT64_MAX, &tmp.u.evicted.entries);
        if (!rc)
            rc = td__field_u64(&f, "bytes", 0, UINT64_MAX, &tmp.u.evicted.bytes);
        break;
    case TD__PROTO_PING:
    case TD__PROTO_PONG:
        rc = td__field_u64(&f, "data", 0, UINT64_MAX, &tmp.u.ping.data);
        break;
    case TD__PROTO_ERROR:
        rc = td__dec_error(&f, &tmp);
        break;
    default:
        rc = td__err(err, TD_ENOTSUP, "message type %u is unknown", out->type);
        break;
    }
    if (rc) {
        td__proto_msg_destroy(&tmp); /* holds no descriptor yet */
        goto out;
    }

    /* Success: the descriptors move into the message. */
    if (out->type == TD__PROTO_LOAD)
        tmp.u.load.fd = fds[0];
    else if (out->type == TD__PROTO_EVICT && have)
        tmp.u.evict.fd = fds[0];
    else if (out->type == TD__PROTO_LOAD_OK) {
        for (unsigned i = 0; i < tmp.u.loaded.nregions; i++)
            tmp.u.loaded.regions[i].fd = fdidx[i] < TD__PROTO_FDS_MAX ? fds[fdidx[i]] : -1;
        if (!tmp.u.loaded.table && !tmp.u.loaded.table_kept)
            tmp.u.loaded.table_fd = fds[fdidx[TD__PROTO_FDS_MAX]];
    }
    for (unsigned i = 0; i < have; i++)
        fds[i] = -1;
    *nfds = 0;
    *out = tmp;
out:
    msgpack_zone_destroy(&zone);
    return rc;
}

int td__proto_decode_frame(td__proto_frame *f, const td__proto_limits *lim, td__proto_msg *out,
                           td_error *err)
{
    return td__proto_decode(f->body, f->len, f->fds, &f->nfds, lim, out, err);
}

int td__proto_parse(const uint8_t *p, size_t n, int *fds, unsigned *nfds,
                    const td__proto_limits *lim_in, td__proto_msg *out, td_error *err)
{
    td__proto_limits lim;
    td__proto_limits_resolve(lim_in, &lim);
    memset(out, 0, sizeof *out);
    if (n < TD__PROTO_PREFIX)
        return td__err(err, TD_EPROTO, "frame: %zu bytes, shorter than the length prefix", n);
    uint32_t len = td__le32(p);
    if (len == 0)
        return td__err(err, TD_EPROTO, "frame: length 0");
    if (len > lim.max_frame)
        return td__err(err, TD_ELIMIT, "frame: length %u above the limit of %u bytes", len,
                       lim.max_frame);
    if (len != n - TD__PROTO_PREFIX)
        return td__err(err, TD_EPROTO, "frame: length %u, but %zu body bytes", len,
                       n - TD__PROTO_PREFIX);
    return td__proto_decode(p + TD__PROTO_PREFIX, len, fds, nfds, &lim, out, err);
}

int td__proto_meta_unpack(const uint8_t *p, size_t n, const char *what, td_meta **out,
                          td_error *err)
{
    td__proto_limits lim = {.max_frame = TD__PROTO_FRAME_MAX};
    td__proto_limits_resolve(&lim, &lim);
    td__proto_dec d = {&lim, err};
    td__proto_walk walk;
    msgpack_zone zone;
    msgpack_object root;
    *out = NULL;
    int rc = td__proto_prewalk(p, n, &lim, &walk, err);
    if (rc)
        return td__err_prefix(err, rc, what);
    if (!msgpack_zone_init(&zone, (size_t)walk.zone_bytes + 64))
        return td__err(err, TD_ENOMEM, "%s: out of memory for %llu bytes of objects", what,
                       (unsigned long long)walk.zone_bytes);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack((const char *)p, n, &off, &zone, &root);
    if (ur != MSGPACK_UNPACK_SUCCESS)
        rc = td__err(err, ur == MSGPACK_UNPACK_NOMEM_ERROR ? TD_ENOMEM : TD_EPROTO,
                     "%s: msgpack-c refused it (%d) after the pre-walk passed", what, (int)ur);
    else
        rc = td__proto_meta_decode(&d, &root, what, out);
    msgpack_zone_destroy(&zone);
    return rc;
}
