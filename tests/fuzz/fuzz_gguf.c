/*
 * fuzz_gguf.c - libFuzzer target for the GGUF reader (formats/gguf.c).
 *
 * Input: the bytes of a .gguf file, as is.
 *
 * Path: td__gguf_index; for an accepted file, besides the common checks (fuzzutil.h): at most 4
 * dimensions, unique tensor names, tensor data that does not overlap, the metadata walked
 * with every public accessor, and general.alignment (when present) a u32 power of two. Then
 * the tensors and metadata are written with td__gguf_write and read back equal: same tensors,
 * same bytes, same typed metadata. Tensor names of 64 bytes or more are readable but not
 * writable (llama.cpp's limit, see gguf.h); files with such names skip the round trip.
 */
#include "fuzzutil.h"
#include "gguf.h"

static void roundtrip(const td__table *t, const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < t->n; i++) {
        const td__entry *e = &t->entries[i];
        uint64_t nb;
        if (strlen(e->name) > GGUF_MAX_NAME)
            return;
        /* The known finding fz_check_entry tolerated: not writable either. */
        if (td__shape_nbytes(e->dtype, e->ndim, e->shape, &nb, NULL))
            return;
    }
    fz_roundtrip(t, data, size, TD_FORMAT_GGUF, "rt.gguf", td__gguf_write, td__gguf_index);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    td_error err = {0};
    td__table t;
    td__table_init(&t, TD_FORMAT_GGUF);
    int rc = td__gguf_index(TD__RD_MEM(data, size, "fuzz.gguf"), &t, &err);
    if (rc) {
        fz_check_failure(rc, &err, size);
        if (!strstr(err.message, "fuzz.gguf"))
            fz_die("message does not name the file", &err);
        if (t.n || t.meta)
            fz_die("td__gguf_index failed but left entries or metadata", NULL);
        td__table_destroy(&t);
        return 0;
    }
    if (!t.meta)
        fz_die("td__gguf_index left no metadata object", NULL);
    fz_walk_meta(t.meta);
    const td_value *al = td_meta_get(t.meta, GGUF_KEY_ALIGNMENT);
    uint64_t align = GGUF_DEFAULT_ALIGNMENT;
    if (al) {
        if (td_value_type(al) != TD_META_UINT32 || td_value_get_uint(al, &align) || !align ||
            (align & (align - 1)) || align > GGUF_MAX_ALIGNMENT)
            fz_die("accepted a bad general.alignment", NULL);
    }
    for (size_t i = 0; i < t.n; i++) {
        const td__entry *e = &t.entries[i];
        fz_check_entry(e, size);
        if (!e->name || e->layout || e->ndim > GGUF_MAX_DIMS)
            fz_die("a gguf entry without a name, with a layout or more than 4 dims", NULL);
        fz_touch(data + e->offset, e->nbytes);
        for (size_t k = 0; k < i; k++) {
            const td__entry *o = &t.entries[k];
            if (strcmp(o->name, e->name) == 0)
                fz_die("td__gguf_index accepted a duplicate tensor name", NULL);
            if (e->nbytes && o->nbytes && e->offset < o->offset + o->nbytes &&
                o->offset < e->offset + e->nbytes)
                fz_die("td__gguf_index accepted overlapping tensors", NULL);
        }
    }
    roundtrip(&t, data, size);
    td__table_destroy(&t);
    return 0;
}
