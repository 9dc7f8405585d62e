/*
 * npz.c - .npz load (index, inflate) and save (see npz.h).
 */
#include "npz.h"
#include "common.h"
#include "npy.h"
#include "flate.h"
#include "zip.h"
#include "zip_writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NPZ__DEFAULT_MAX_INFLATED (16ull << 30)
/* The most of a deflated member inflated while indexing: the longest npy header we accept. */
#define NPZ__HEADER_MAX (12u + NPY_MAX_HEADER)
/* With libdeflate, td__npz_inflate_entry inflates members of this size range whole (see there). */
#define NPZ__WHOLE_MIN (4u << 10)
#define NPZ__WHOLE_MAX (256ull << 20)

/* "FILE: member 'NAME'" for messages. */
static const char *npz__what(char *out, size_t cap, const char *fname, const char *name, size_t len)
{
    char q[80];
    snprintf(out, cap, "%s: member %s", fname, td__quote(name, len, q, sizeof q));
    return out;
}

/* Inflates at most cap bytes of the start of deflated member m into buf (*got: how many came),
 * from the first 4 KiB of the stream, then four times more while it needs more input. Both
 * readers take the same steps (zlib may look past the bytes it outputs, so the input it is given
 * decides which errors show up here): a descriptor reader then copies only the start. */
static int npz__inflate_prefix(td__rd *r, const td__zip_member *m, uint8_t *buf, size_t cap,
                               size_t *got, const char *what, td_error *err)
{
    uint64_t have = 4096;
    for (;;) {
        if (have > m->csize)
            have = m->csize;
        const uint8_t *src;
        int rc = td__rd_get(r, m->data_offset, have, &src, err);
        if (rc)
            return rc;
        rc = td__flate_inflate_prefix(src, have, buf, cap, got, what, err);
        if (rc != TD_ETRUNC || have == m->csize)
            return rc;
        have *= 4;
    }
}

/* Inflates just the npy header at the start of a deflated member into buf (NPZ__HEADER_MAX
 * bytes): first the 12 bytes that give the header length, then exactly the header. */
static int npz__inflate_header(td__rd *r, const td__zip_member *m, uint8_t *buf, size_t *got,
                               const char *what, td_error *err)
{
    size_t cap = m->usize < 12 ? (size_t)m->usize : 12;
    int rc = npz__inflate_prefix(r, m, buf, cap, got, what, err);
    if (rc)
        return rc;
    uint64_t need = td__npy_header_need(buf, *got);
    if (need > m->usize)
        need = m->usize; /* td__npy_parse_header names the truncated header */
    if (need <= *got)
        return 0;
    return npz__inflate_prefix(r, m, buf, (size_t)need, got, what, err);
}

/* Adds the entry for member m (name already checked to end in ".npy"). */
static int npz__add_member(td__rd *r, const td__zip_member *m, uint8_t *hbuf, td__table *t,
                           td_error *err)
{
    char what[400];
    npz__what(what, sizeof what, r->fname, m->name, m->name_len);
    td__npy_header h;
    int rc;
    if (m->method == ZIP_METHOD_STORED) {
        rc = td__npy_read_header(r, m->data_offset, m->csize, what, &h, err);
    } else {
        size_t got;
        rc = npz__inflate_header(r, m, hbuf, &got, what, err);
        if (!rc)
            rc = td__npy_parse_header(hbuf, got, what, &h, err);
    }
    if (rc)
        return rc;
    uint64_t want;
    if (!td__add_u64(h.data_offset, h.nbytes, &want))
        return td__err(err, TD_ERANGE, "%s: npy size overflows", what);
    if (m->usize < want)
        return td__err(err, TD_ETRUNC,
                       "%s: %llu bytes, but its npy header and %llu bytes of data need %llu", what,
                       (unsigned long long)m->usize, (unsigned long long)h.nbytes,
                       (unsigned long long)want);
    if (m->usize > want)
        return td__err(err, TD_EFORMAT,
                       "%s: %llu bytes, %llu more than its npy header and data (%llu)", what,
                       (unsigned long long)m->usize, (unsigned long long)(m->usize - want),
                       (unsigned long long)want);

    td__entry *e = td__table_add(t, m->name, m->name_len - 4, err);
    if (!e)
        return err ? err->code : TD_ENOMEM;
    e->dtype = h.dtype;
    e->nbytes = h.nbytes;
    e->region = 0;
    e->layout = (h.big_endian ? TD__LAYOUT_SWAP : 0u) | (h.fortran ? TD__LAYOUT_FORTRAN : 0u);
    if (m->method == ZIP_METHOD_DEFLATE) {
        e->layout |= TD__LAYOUT_DEFLATE;
        e->src.offset = m->data_offset;
        e->src.nbytes = m->csize;
        e->src.inflated = m->usize;
        e->src.skip = h.data_offset;
        e->src.crc32 = m->crc32;
    } else if (e->layout) {
        e->src.offset = m->data_offset + h.data_offset;
        e->src.nbytes = h.nbytes;
    } else {
        e->offset = m->data_offset + h.data_offset;
    }
    return td__entry_set_shape(e, h.ndim, h.shape, err);
}

int td__npz_index(td__rd *r, uint64_t max_inflated, td__table *t, td_error *err)
{
    const char *fname = r->fname;
    if (!max_inflated)
        max_inflated = NPZ__DEFAULT_MAX_INFLATED;
    td__zip_archive z;
    int rc = td__zip_open(r, &z, err);
    if (rc)
        return rc;
    uint8_t *hbuf = NULL;
    /* The bound first, from the directory alone: a bomb is refused before any inflating. */
    uint64_t total = 0;
    for (size_t i = 0; i < z.n; i++) {
        const td__zip_member *m = &z.members[i];
        if (m->method != ZIP_METHOD_DEFLATE)
            continue;
        if (!td__add_u64(total, m->usize, &total) || total > max_inflated) {
            char q[80];
            rc =
                td__err(err, TD_ELIMIT,
                        "%s: deflated members declare more than %llu bytes in all (at member "
                        "%s, %llu bytes): raise td_load_options.max_inflated to load this file",
                        fname, (unsigned long long)max_inflated,
                        td__quote(m->name, m->name_len, q, sizeof q), (unsigned long long)m->usize);
            goto done;
        }
    }
    for (size_t i = 0; i < z.n; i++) {
        const td__zip_member *m = &z.members[i];
        if (m->name_len <= 4 || memcmp(m->name + m->name_len - 4, ".npy", 4) != 0) {
            char what[400];
            rc = td__err(err, TD_EFORMAT,
                         "%s: is not an .npy member (an npz holds only NAME.npy members)",
                         npz__what(what, sizeof what, fname, m->name, m->name_len));
            goto done;
        }
        if (m->method == ZIP_METHOD_DEFLATE && !hbuf && !(hbuf = malloc(NPZ__HEADER_MAX))) {
            rc = td__err(err, TD_ENOMEM, "%s: out of memory", fname);
            goto done;
        }
        rc = npz__add_member(r, m, hbuf, t, err);
        if (rc)
            goto done;
    }
    rc = td__table_check_unique(t, fname, err);
done:
    free(hbuf);
    td__zip_close(&z);
    return rc;
}

/* Checks what td__npz_index put in e before inflating from it. */
static int npz__check_src(const td__entry *e, size_t file_len, const char *what, td_error *err)
{
    uint64_t want;
    if (!(e->layout & TD__LAYOUT_DEFLATE))
        return td__err(err, TD_EINVAL, "%s: not a deflated entry", what);
    if (e->src.offset > file_len || file_len - e->src.offset < e->src.nbytes)
        return td__err(err, TD_ETRUNC, "%s: compressed bytes [%llu, +%llu) outside the file", what,
                       (unsigned long long)e->src.offset, (unsigned long long)e->src.nbytes);
    if (!td__add_u64(e->src.skip, e->nbytes, &want) || want != e->src.inflated)
        return td__err(err, TD_EINVAL, "%s: inconsistent entry (%llu + %llu != %llu)", what,
                       (unsigned long long)e->src.skip, (unsigned long long)e->nbytes,
                       (unsigned long long)e->src.inflated);
    return 0;
}

static int npz__crc_check(const td__entry *e, uint32_t crc, const char *what, td_error *err)
{
    if (crc != e->src.crc32)
        return td__err(err, TD_ECHECKSUM,
                       "%s: CRC-32 of the inflated member is 0x%08x, the archive says 0x%08x", what,
                       crc, e->src.crc32);
    return 0;
}

/* "FILE: tensor 'NAME'" into what (400 bytes), then npz__check_src. */
static int npz__begin(const td__entry *e, size_t file_len, const char *fname, char *what,
                      td_error *err)
{
    snprintf(what, 400, "%s: tensor '%s'", fname ? fname : "(npz)", e->name ? e->name : "");
    return npz__check_src(e, file_len, what, err);
}

uint64_t td__npz_inflate_scratch(const td__entry *e)
{
#ifdef TD_HAVE_LIBDEFLATE
    if (e->src.inflated >= NPZ__WHOLE_MIN && e->src.inflated <= NPZ__WHOLE_MAX)
        return e->src.inflated;
#else
    (void)e;
#endif
    return 0;
}

int td__npz_inflate_entry(const td__entry *e, const uint8_t *file, size_t file_len, uint8_t *dst,
                          const char *fname, td_error *err)
{
    char what[400];
    int rc = npz__begin(e, file_len, fname, what, err);
    if (rc)
        return rc;
    uint32_t crc = 0;
#ifdef TD_HAVE_LIBDEFLATE
    /* libdeflate needs the whole member, header included, in one buffer: inflate into a
     * scratch copy and move the data (a copy costs a few percent of an inflate). Bigger
     * members stream through zlib instead of doubling their memory; td__npz_inflate_member
     * avoids the copy for callers that can hold the header. */
    if (e->src.inflated >= NPZ__WHOLE_MIN && e->src.inflated <= NPZ__WHOLE_MAX) {
        uint8_t *tmp = malloc((size_t)e->src.inflated);
        if (!tmp)
            return td__err(err, TD_ENOMEM, "%s: out of memory for %llu inflated bytes", what,
                           (unsigned long long)e->src.inflated);
        rc = td__npz_inflate_member(e, file, file_len, tmp, fname, err);
        if (!rc)
            memcpy(dst, tmp + e->src.skip, (size_t)e->nbytes);
        free(tmp);
        return rc;
    }
#endif
    rc = td__flate_inflate(file + e->src.offset, e->src.nbytes, e->src.skip, dst, e->nbytes, &crc,
                           what, err);
    return rc ? rc : npz__crc_check(e, crc, what, err);
}

int td__npz_inflate_member(const td__entry *e, const uint8_t *file, size_t file_len, uint8_t *buf,
                           const char *fname, td_error *err)
{
    char what[400];
    int rc = npz__begin(e, file_len, fname, what, err);
    if (rc)
        return rc;
    uint32_t crc = 0;
    rc = td__flate_inflate_whole(file + e->src.offset, e->src.nbytes, buf, e->src.inflated, &crc,
                                 what, err);
    return rc ? rc : npz__crc_check(e, crc, what, err);
}

static int npz__ptr_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Refuses missing and repeated names before anything is written. */
static int npz__check_names(const td__item *items, size_t n, const char *fname, td_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (!items[i].name || !items[i].name[0])
            return td__err(err, TD_EINVAL, "%s: entry %zu has no name", fname, i);
    if (n < 2)
        return 0;
    const char **v = malloc(n * sizeof *v);
    if (!v)
        return td__err(err, TD_ENOMEM, "%s: out of memory", fname);
    for (size_t i = 0; i < n; i++)
        v[i] = items[i].name;
    qsort(v, n, sizeof *v, npz__ptr_cmp);
    int rc = 0;
    for (size_t i = 1; i < n && !rc; i++)
        if (strcmp(v[i], v[i - 1]) == 0) {
            char q[80];
            rc = td__err(err, TD_EDUP, "%s: two arrays named %s", fname,
                         td__quote(v[i], strlen(v[i]), q, sizeof q));
        }
    free(v);
    return rc;
}

int td__npz_write(td__writer *w, const td__item *items, size_t n, int compressed, const char *fname,
                  td_error *err)
{
    if (!fname)
        fname = "(npz)";
    int rc = npz__check_names(items, n, fname, err);
    if (rc)
        return rc;
    td__zip_writer zw;
    td__zip_writer_init(&zw, w, fname);
    char *mname = NULL;
    size_t mcap = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const td__item *it = &items[i];
        size_t nl = strlen(it->name);
        if (nl + 5 > mcap) {
            char *p = realloc(mname, nl + 5);
            if (!p) {
                rc = td__err(err, TD_ENOMEM, "%s: out of memory", fname);
                break;
            }
            mname = p;
            mcap = nl + 5;
        }
        memcpy(mname, it->name, nl);
        memcpy(mname + nl, ".npy", 5);
        char what[400];
        npz__what(what, sizeof what, fname, mname, nl + 4);
        uint64_t nbytes;
        if (it->ndim < 0 || it->ndim > TD_MAX_DIMS)
            rc = td__err(err, TD_EINVAL, "%s: %d dimensions", what, it->ndim);
        else if (!(rc = td__shape_nbytes(it->dtype, (uint32_t)it->ndim, it->shape, &nbytes, err)) &&
                 nbytes != it->nbytes)
            rc = td__err(err, TD_EINVAL, "%s: %llu data bytes for a shape that needs %llu", what,
                         (unsigned long long)it->nbytes, (unsigned long long)nbytes);
        if (rc)
            break;
        uint8_t hdr[NPY_HEADER_CAP];
        size_t hlen;
        rc =
            td__npy_build_header(it->dtype, it->ndim, it->shape, hdr, sizeof hdr, &hlen, what, err);
        if (rc)
            break;
        uint64_t usize = hlen + it->nbytes; /* nbytes < 2^63 (td__shape_nbytes) */
        rc = td__zip_writer_begin(&zw, mname, compressed ? ZIP_METHOD_DEFLATE : ZIP_METHOD_STORED,
                                  -1, usize, NPZ_ALIGN, hlen, err);
        if (!rc)
            rc = td__zip_writer_data(&zw, hdr, hlen, err);
        if (!rc)
            rc = td__zip_writer_data_last(&zw, it->data, (size_t)it->nbytes, err);
        if (!rc)
            rc = td__zip_writer_end(&zw, err);
    }
    if (!rc)
        rc = td__zip_writer_finish(&zw, err);
    td__zip_writer_destroy(&zw);
    free(mname);
    return rc;
}
