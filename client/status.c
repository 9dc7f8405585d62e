/*
 * status.c - td_status: the daemon's figures as td_client_status hands them out, behind
 * accessors keyed by enums.
 *
 * The struct is private so that a figure can be added (to the protocol's STATUS_OK, then to a
 * key enum here and in tensord.h) without changing the ABI: programs built earlier never see
 * the layout, and a key they do not know cannot reach them. One allocation holds the struct,
 * the files and their names.
 */
#include "client.h"
#include "common.h"
#include "proto.h"

#include <stdlib.h>

typedef struct td__status_file {
    const char *name; /* in the names pool */
    td_format format;
    const char *mode; /* static */
    uint64_t figures[TD_STATUS_FILE_PRELOADED + 1];
} td__status_file;

struct td_status {
    uint64_t figures[TD_STATUS_PRESSURE + 1];
    size_t nfiles, nusers;
    td__status_file *files;       /* most recently used first; inside this allocation */
    td__proto_status_user *users; /* by uid; inside this allocation */
    /* then the files, then the users, then the file names */
};

static int td__status_user_cmp(const void *a, const void *b)
{
    uint32_t x = ((const td__proto_status_user *)a)->uid;
    uint32_t y = ((const td__proto_status_user *)b)->uid;
    return (x > y) - (x < y);
}

static const char *td__status_mode(uint32_t mode)
{
    return mode == TD__PROTO_MODE_SNAPSHOT ? "snapshot"
           : mode == TD__PROTO_MODE_PIN    ? "pin"
                                           : "map";
}

int td__status_from_proto(const td__proto_status *s, td_status **out, td_error *err)
{
    /* One block: the struct, the file array, the names. Every size is bounded by the frame the
     * reply came in, but add with checks anyway. */
    size_t names = 0, n = s->nfiles, nu = s->nusers;
    for (size_t i = 0; i < n; i++)
        names += (s->files[i].name ? strlen(s->files[i].name) : 0) + 1;
    size_t head = (sizeof(td_status) + _Alignof(td__status_file) - 1) / _Alignof(td__status_file) *
                  _Alignof(td__status_file);
    if (n > (SIZE_MAX - head - names) / sizeof(td__status_file) ||
        nu >
            (SIZE_MAX - head - names - n * sizeof(td__status_file)) / sizeof(td__proto_status_user))
        return td__err(err, TD_ENOMEM, "status: %zu files do not fit in memory", n);
    size_t users_at = head + n * sizeof(td__status_file);
    users_at = (users_at + _Alignof(td__proto_status_user) - 1) / _Alignof(td__proto_status_user) *
               _Alignof(td__proto_status_user);
    td_status *st = calloc(1, users_at + nu * sizeof(td__proto_status_user) + names);
    if (!st)
        return td__err(err, TD_ENOMEM, "status: out of memory for %zu files", n);
    uint64_t *g = st->figures;
    g[TD_STATUS_ENTRIES] = s->stats.entries;
    g[TD_STATUS_BYTES] = s->stats.bytes;
    g[TD_STATUS_DERIVED_BYTES] = s->stats.derived_bytes;
    g[TD_STATUS_BUDGET] = s->stats.budget;
    g[TD_STATUS_HITS] = s->stats.hits;
    g[TD_STATUS_MISSES] = s->stats.misses;
    g[TD_STATUS_EVICTIONS] = s->stats.evictions;
    g[TD_STATUS_CLIENTS] = s->stats.clients;
    g[TD_STATUS_LEASES] = s->stats.leases;
    g[TD_STATUS_DECODES] = s->stats.decodes;
    g[TD_STATUS_DECODE_NS_TOTAL] = s->stats.decode_ns_total;
    g[TD_STATUS_DECODE_NS_MAX] = s->stats.decode_ns_max;
    g[TD_STATUS_ERRORS] = s->stats.errors;
    g[TD_STATUS_UPTIME_MS] = s->stats.uptime_ms;
    g[TD_STATUS_QUOTA] = s->stats.quota;
    g[TD_STATUS_REFUSED] = s->stats.refused;
    g[TD_STATUS_PRESSURE] = s->stats.pressure;
    st->nfiles = n;
    st->files = (td__status_file *)((char *)st + head);
    st->nusers = nu;
    st->users = (td__proto_status_user *)((char *)st + users_at);
    if (nu)
        memcpy(st->users, s->users, nu * sizeof *st->users);
    qsort(st->users, nu, sizeof *st->users, td__status_user_cmp);
    char *pool = (char *)(st->users + nu);
    for (size_t i = 0; i < n; i++) {
        const td__proto_status_file *f = &s->files[i];
        td__status_file *o = &st->files[i];
        size_t len = (f->name ? strlen(f->name) : 0) + 1;
        memcpy(pool, f->name ? f->name : "", len);
        o->name = pool;
        pool += len;
        o->format = f->format;
        o->mode = td__status_mode(f->mode);
        o->figures[TD_STATUS_FILE_BYTES] = f->bytes;
        o->figures[TD_STATUS_FILE_LEASES] = f->leases;
        o->figures[TD_STATUS_FILE_HITS] = f->hits;
        o->figures[TD_STATUS_FILE_TENSORS] = f->tensors;
        o->figures[TD_STATUS_FILE_FILE_BYTES] = f->file_bytes;
        o->figures[TD_STATUS_FILE_DERIVED_BYTES] = f->derived_bytes;
        o->figures[TD_STATUS_FILE_LOADS] = f->loads;
        o->figures[TD_STATUS_FILE_IDLE_MS] = f->idle_ms;
        o->figures[TD_STATUS_FILE_PRELOADED] = (f->flags & TD__PROTO_FILE_PRELOADED) != 0;
    }
    *out = st;
    return 0;
}

/* A figure added to the wire (TD__PROTO_STATS_MAP) and not to td_status_key, or the other way
 * round, stops the build here. */
#define TD__XX(field, text) +1
_Static_assert(0 TD__PROTO_STATS_MAP(TD__XX) == TD_STATUS_PRESSURE + 1,
               "TD__PROTO_STATS_MAP and td_status_key list the same figures");
#undef TD__XX

uint64_t td_status_get(const td_status *s, td_status_key k)
{
    return s && (unsigned)k <= TD_STATUS_PRESSURE ? s->figures[k] : 0;
}

size_t td_status_nfiles(const td_status *s)
{
    return s ? s->nfiles : 0;
}

const char *td_status_file_name(const td_status *s, size_t i)
{
    return s && i < s->nfiles ? s->files[i].name : NULL;
}

td_format td_status_file_format(const td_status *s, size_t i)
{
    return s && i < s->nfiles ? s->files[i].format : TD_FORMAT_AUTO;
}

const char *td_status_file_mode(const td_status *s, size_t i)
{
    return s && i < s->nfiles ? s->files[i].mode : NULL;
}

uint64_t td_status_file_get(const td_status *s, size_t i, td_status_file_key k)
{
    if (!s || i >= s->nfiles || (unsigned)k > TD_STATUS_FILE_PRELOADED)
        return 0;
    return s->files[i].figures[k];
}

size_t td_status_nusers(const td_status *s)
{
    return s ? s->nusers : 0;
}

uint64_t td_status_user_get(const td_status *s, size_t i, td_status_user_key k)
{
    if (!s || i >= s->nusers)
        return 0;
    const td__proto_status_user *u = &s->users[i];
    switch (k) {
    case TD_STATUS_USER_UID:
        return u->uid;
    case TD_STATUS_USER_ENTRIES:
        return u->entries;
    case TD_STATUS_USER_BYTES:
        return u->bytes;
    case TD_STATUS_USER_QUOTA:
        return u->quota;
    default:
        return 0;
    }
}

void td_status_free(td_status *s)
{
    free(s);
}
