/*
 * fuzz_npy.c - libFuzzer target for the .npy reader (formats/npy.c).
 *
 * Input: the bytes of a .npy file, as is (so that any .npy is a seed).
 *
 * Path: td__npy_parse_header on the whole input, then td__npy_index; for an accepted file the entry
 * is decoded (byte swap, Fortran to C order) into a buffer of exactly its size, written again with
 * td__npy_write and read back: same dtype, same shape, same bytes. See fuzzutil.h for the oracles
 * common to every codec target.
 */
#include "fuzzutil.h"
#include "npy.h"

static void roundtrip(const td__entry *e, const uint8_t *bytes)
{
    td_error err = {0};
    td__writer w;
    if (td__writer_init(&w, -1, "rt.npy", &err))
        fz_die("writer", &err);
    td__item item = {NULL, e->dtype, (int)e->ndim, e->shape, bytes, e->nbytes};
    if (td__npy_write(&w, &item, "rt.npy", &err))
        fz_die("td__npy_write refuses an array td__npy_index accepted", &err);
    size_t len;
    uint8_t *buf = td__writer_take(&w, &len);
    td__writer_destroy(&w);
    if (!buf)
        fz_die("writer_take", NULL);
    td__table t2;
    td__table_init(&t2, TD_FORMAT_NPY);
    if (td__npy_index(TD__RD_MEM(buf, len, "rt.npy"), &t2, &err))
        fz_die("td__npy_index refuses what td__npy_write wrote", &err);
    if (t2.n != 1 || t2.entries[0].layout)
        fz_die("a written .npy is not one plain entry", NULL);
    /* Compare through the decoded bytes: e may have a layout, so present it as a plain entry
     * viewing `bytes`. */
    td__entry plain = *e;
    plain.layout = 0;
    plain.offset = 0;
    td__table t1 = {.format = TD_FORMAT_NPY, .n = 1, .cap = 1, .entries = &plain};
    fz_tables_equal(&t1, bytes, e->nbytes, &t2, buf, len);
    td__table_destroy(&t2);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    td_error err = {0};
    td__npy_header h;
    int rc = td__npy_parse_header(data, size, "fuzz.npy", &h, &err);
    if (rc) {
        fz_check_failure(rc, &err, size);
    } else {
        if (h.ndim > TD_MAX_DIMS || h.data_offset > size)
            fz_die("parsed header out of range", NULL);
    }

    td__table t;
    td__table_init(&t, TD_FORMAT_NPY);
    memset(&err, 0, sizeof err);
    rc = td__npy_index(TD__RD_MEM(data, size, "fuzz.npy"), &t, &err);
    if (rc) {
        fz_check_failure(rc, &err, size);
        if (!strstr(err.message, "fuzz.npy"))
            fz_die("message does not name the file", &err);
        td__table_destroy(&t);
        return 0;
    }
    if (t.n != 1 || t.entries[0].name)
        fz_die("td__npy_index made other than one unnamed entry", NULL);
    const td__entry *e = &t.entries[0];
    fz_check_entry(e, size);
    uint8_t *owned;
    const uint8_t *bytes = fz_entry_bytes(e, data, size, &owned, &rc, &err);
    if (!bytes)
        fz_die("an indexed npy entry does not decode", &err);
    roundtrip(e, bytes);
    free(owned);
    td__table_destroy(&t);
    return 0;
}
