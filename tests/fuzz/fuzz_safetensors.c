/*
 * fuzz_safetensors.c - libFuzzer target for the safetensors reader (formats/safetensors.c).
 *
 * Input: the bytes of a .safetensors file, as is.
 *
 * Path: td__st_index; for an accepted file, besides the common entry checks (fuzzutil.h), the
 * tensors' byte ranges must tile the data buffer exactly (sorted: contiguous from its start,
 * no gaps, no overlaps, ending at the end of the file), as the Rust reference requires. The
 * tensors and the metadata are then written with td__st_write and read back equal.
 */
#include "fuzzutil.h"
#include "safetensors.h"

typedef struct range {
    uint64_t b, e;
} range;

static int range_cmp(const void *a, const void *b)
{
    const range *x = a, *y = b;
    if (x->b != y->b)
        return x->b < y->b ? -1 : 1;
    return x->e < y->e ? -1 : x->e > y->e;
}

/* The data buffer starts at 8 + N; the ranges must tile [8 + N, size). */
static void check_tiling(const td__table *t, const uint8_t *data, size_t size)
{
    uint64_t start = 8 + td__le64(data);
    range *r = malloc((t->n ? t->n : 1) * sizeof *r);
    if (!r)
        fz_die("malloc", NULL);
    for (size_t i = 0; i < t->n; i++) {
        r[i].b = t->entries[i].offset;
        r[i].e = t->entries[i].offset + t->entries[i].nbytes;
    }
    qsort(r, t->n, sizeof *r, range_cmp);
    uint64_t at = start;
    for (size_t i = 0; i < t->n; i++) {
        if (r[i].b != at)
            fz_die("accepted tensor ranges leave a gap or overlap", NULL);
        at = r[i].e;
    }
    if (at != size)
        fz_die("accepted tensor ranges do not end at the end of the file", NULL);
    free(r);
}

static void roundtrip(const td__table *t, const uint8_t *data, size_t size)
{
    fz_roundtrip(t, data, size, TD_FORMAT_SAFETENSORS, "rt.safetensors", td__st_write,
                 td__st_index);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    td_error err = {0};
    td__table t;
    td__table_init(&t, TD_FORMAT_SAFETENSORS);
    int rc = td__st_index(TD__RD_MEM(data, size, "fuzz.safetensors"), &t, &err);
    if (rc) {
        fz_check_failure(rc, &err, size);
        if (!strstr(err.message, "fuzz.safetensors"))
            fz_die("message does not name the file", &err);
        td__table_destroy(&t);
        return 0;
    }
    if (!t.meta)
        fz_die("td__st_index left no metadata object", NULL);
    for (size_t i = 0; i < t.n; i++) {
        const td__entry *e = &t.entries[i];
        fz_check_entry(e, size);
        if (!e->name || e->layout)
            fz_die("a safetensors entry without a name or with a layout", NULL);
        fz_touch(data + e->offset, e->nbytes);
        for (size_t k = 0; k < i; k++)
            if (strcmp(t.entries[k].name, e->name) == 0)
                fz_die("td__st_index accepted a duplicate tensor name", NULL);
    }
    for (size_t i = 0; i < td_meta_size(t.meta); i++)
        if (td_value_type(td_meta_at(t.meta, i, NULL)) != TD_META_STRING)
            fz_die("safetensors metadata that is not a string", NULL);
    fz_walk_meta(t.meta);
    check_tiling(&t, data, size);
    roundtrip(&t, data, size);
    td__table_destroy(&t);
    return 0;
}
