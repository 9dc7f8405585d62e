/*
 * fuzz_zip.c - libFuzzer target for the zip container and the .npz reader (formats/zip.c,
 * formats/flate.c, formats/zip_writer.c, formats/npz.c).
 *
 * Input: the bytes of a .zip / .npz file, as is.
 *
 * Path:
 *   1. td__zip_open: an accepted archive's members must be inside the file, before the central
 *      directory, not overlapping, with safe names and sane sizes (the promises of zip.h);
 *   2. td__zip_verify: CRC-32 and sizes of every member against its data (inflates, in pieces);
 *   3. td__npz_index with a small inflate bound, then every entry decoded into a buffer of
 *      exactly its size (inflate, byte swap, Fortran order);
 *   4. the arrays written again with td__npz_write (stored or deflated, chosen by the input's
 *      length) and read back equal.
 */
#include "fuzzutil.h"
#include "npz.h"
#include "zip.h"

static void check_archive(const td__zip_archive *z, size_t size)
{
    for (size_t i = 0; i < z->n; i++) {
        const td__zip_member *m = &z->members[i];
        td_error err = {0};
        if (td__zip_check_name(m->name, m->name_len, "fuzz.npz", &err))
            fz_die("td__zip_open accepted a member name td__zip_check_name refuses", &err);
        if (m->method != ZIP_METHOD_STORED && m->method != ZIP_METHOD_DEFLATE)
            fz_die("td__zip_open accepted an unknown method", NULL);
        if (m->flags & (ZIP_FLAG_ENCRYPTED | ZIP_FLAG_STRONG_ENC))
            fz_die("td__zip_open accepted an encrypted member", NULL);
        if (m->method == ZIP_METHOD_STORED && m->usize != m->csize)
            fz_die("stored member with usize != csize", NULL);
        if (m->local_offset >= m->data_offset || m->data_offset > m->end_offset ||
            m->end_offset - m->data_offset < m->csize || m->end_offset > z->cd_offset ||
            z->cd_offset > size)
            fz_die("member positions out of order or outside the file", NULL);
        fz_touch((const uint8_t *)m->name, m->name_len);
        for (size_t k = 0; k < i; k++) {
            const td__zip_member *o = &z->members[k];
            if (m->local_offset < o->end_offset && o->local_offset < m->end_offset)
                fz_die("td__zip_open accepted overlapping members", NULL);
        }
    }
}

static void roundtrip(const td__table *t, const uint8_t *data, size_t size, int compressed)
{
    td_error err = {0};
    size_t n = t->n;
    td__item *items = calloc(n ? n : 1, sizeof *items);
    uint8_t **owned = calloc(n ? n : 1, sizeof *owned);
    if (!items || !owned)
        fz_die("calloc", NULL);
    for (size_t i = 0; i < n; i++) {
        const td__entry *e = &t->entries[i];
        int rc;
        const uint8_t *b = fz_entry_bytes(e, data, size, &owned[i], &rc, &err);
        if (!b)
            fz_die("round trip: decoding failed the second time", &err);
        items[i] = (td__item){e->name, e->dtype, (int)e->ndim, e->shape, b, e->nbytes};
    }
    td__writer w;
    if (td__writer_init(&w, -1, "rt.npz", &err))
        fz_die("writer", &err);
    if (td__npz_write(&w, items, n, compressed, "rt.npz", &err))
        fz_die("td__npz_write refuses arrays td__npz_index accepted", &err);
    size_t len;
    uint8_t *buf = td__writer_take(&w, &len);
    td__writer_destroy(&w);
    if (!buf)
        fz_die("writer_take", NULL);
    if (td__zip_verify(buf, len, "rt.npz", &err))
        fz_die("td__zip_verify refuses what td__npz_write wrote", &err);
    td__table t2;
    td__table_init(&t2, TD_FORMAT_NPZ);
    if (td__npz_index(TD__RD_MEM(buf, len, "rt.npz"), FZ_MAX_INFLATED, &t2, &err))
        fz_die("td__npz_index refuses what td__npz_write wrote", &err);
    for (size_t i = 0; i < t2.n; i++) {
        const td__entry *e = &t2.entries[i];
        fz_check_entry(e, len);
        if (!compressed && (e->layout || e->offset % NPZ_ALIGN))
            fz_die("a stored member we wrote is not a 64-byte aligned plain view", NULL);
    }
    fz_tables_equal(t, data, size, &t2, buf, len);
    td__table_destroy(&t2);
    free(buf);
    for (size_t i = 0; i < n; i++)
        free(owned[i]);
    free(owned);
    free(items);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    td_error err = {0};
    td__zip_archive z = {0};
    int rc = td__zip_open(TD__RD_MEM(data, size, "fuzz.npz"), &z, &err);
    if (rc) {
        fz_check_failure(rc, &err, size);
        if (!strstr(err.message, "fuzz.npz"))
            fz_die("message does not name the file", &err);
        if (z.n || z.members)
            fz_die("td__zip_open failed but left members", NULL);
        return 0;
    }
    check_archive(&z, size);
    td__zip_close(&z);

    memset(&err, 0, sizeof err);
    rc = td__zip_verify(data, size, "fuzz.npz", &err);
    if (rc)
        fz_check_failure(rc, &err, size);

    td__table t;
    td__table_init(&t, TD_FORMAT_NPZ);
    memset(&err, 0, sizeof err);
    rc = td__npz_index(TD__RD_MEM(data, size, "fuzz.npz"), FZ_MAX_INFLATED, &t, &err);
    if (rc) {
        fz_check_failure(rc, &err, size);
        if (!strstr(err.message, "fuzz.npz"))
            fz_die("message does not name the file", &err);
        td__table_destroy(&t);
        return 0;
    }
    uint64_t inflated = 0;
    int all_decode = 1;
    for (size_t i = 0; i < t.n; i++) {
        const td__entry *e = &t.entries[i];
        fz_check_entry(e, size);
        if (!e->name)
            fz_die("npz entry without a name", NULL);
        for (size_t k = 0; k < i; k++)
            if (strcmp(t.entries[k].name, e->name) == 0)
                fz_die("td__npz_index accepted a duplicate name", NULL);
        if (e->layout & TD__LAYOUT_DEFLATE)
            inflated += e->src.inflated;
        uint8_t *owned;
        td_error derr = {0};
        const uint8_t *b = fz_entry_bytes(e, data, size, &owned, &rc, &derr);
        if (!b) {
            fz_check_failure(rc, &derr, size);
            all_decode = 0;
        }
        free(owned);
    }
    if (inflated > FZ_MAX_INFLATED)
        fz_die("td__npz_index let deflated members exceed max_inflated", NULL);
    /* A member whose stream is corrupt is only found when decoding: a round trip needs every
     * entry to decode. */
    if (all_decode)
        roundtrip(&t, data, size, (int)(size & 1));
    td__table_destroy(&t);
    return 0;
}
