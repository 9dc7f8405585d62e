/*
 * test_ftab.c - the flat tensor table (ftab/): a table written and read back field by field,
 * lookups, every check td__ftab_open makes (each hostile table refused with its code and a
 * message naming the field or entry), the writer's refusals, and the client's mapping of a
 * table memfd (td__tab_map: sealed memfds only).
 */
#include "client.h"
#include "ftab.h"
#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const td__hash_seed seed = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};

/* A table of n float32 vectors "layers.K.weight" of K + 1 elements, packed in region K % 2,
 * plus a 0-d int64 "step" and a 2-d float16 "embed" [3, 5]. */
static void make_table(td__table *t, size_t n)
{
    td_error err;
    td__table_init(t, TD_FORMAT_SAFETENSORS);
    uint64_t off[2] = {0, 0};
    for (size_t k = 0; k < n; k++) {
        char name[48];
        snprintf(name, sizeof name, "layers.%zu.weight", k);
        td__entry *e = td__table_add(t, name, strlen(name), &err);
        ck_assert_ptr_nonnull(e);
        int64_t shape[1] = {(int64_t)k + 1};
        ck_assert_int_eq(td__entry_set_shape(e, 1, shape, &err), 0);
        e->dtype = TD_FLOAT32;
        e->nbytes = 4 * (k + 1);
        e->region = (uint32_t)(k % 2);
        e->offset = off[e->region];
        off[e->region] += (e->nbytes + 63) / 64 * 64;
    }
    td__entry *e = td__table_add(t, "step", 4, &err);
    ck_assert_ptr_nonnull(e);
    e->dtype = TD_INT64;
    e->nbytes = 8;
    e->offset = 4096;
    e = td__table_add(t, "embed", 5, &err);
    ck_assert_ptr_nonnull(e);
    int64_t shape[2] = {3, 5};
    ck_assert_int_eq(td__entry_set_shape(e, 2, shape, &err), 0);
    e->dtype = TD_FLOAT16;
    e->nbytes = 30;
    e->offset = 8192;
}

static const uint64_t sizes[2] = {1u << 20, 1u << 20};

/* t written with meta_len bytes of metadata; *len receives the size. The caller frees. */
static uint8_t *write_table(const td__table *t, const void *meta, uint64_t meta_len, uint64_t *len)
{
    td_error err;
    *len = td__ftab_size(t, meta_len);
    ck_assert_uint_gt(*len, 0);
    uint8_t *p = malloc(*len);
    ck_assert_ptr_nonnull(p);
    if (td__ftab_write(t, 2, meta, meta_len, seed, p, *len, &err))
        ck_abort_msg("write: %s", err.message);
    return p;
}

START_TEST(test_roundtrip)
{
    td__table t;
    make_table(&t, 300);
    static const char meta[] = "metadata bytes, opaque here";
    uint64_t len;
    uint8_t *p = write_table(&t, meta, sizeof meta, &len);
    td__ftab ft;
    td_error err;
    if (td__ftab_open(p, len, sizes, 2, "t", &ft, &err))
        ck_abort_msg("open: %s", err.message);
    ck_assert_int_eq(ft.format, TD_FORMAT_SAFETENSORS);
    ck_assert_uint_eq(ft.n, t.n);
    ck_assert_uint_eq(ft.meta_len, sizeof meta);
    ck_assert_mem_eq(ft.meta, meta, sizeof meta);
    for (uint32_t i = 0; i < ft.n; i++) {
        td__ftab_entry e;
        const td__entry *x = &t.entries[i];
        td__ftab_get(&ft, i, &e);
        ck_assert_str_eq(e.name, x->name);
        ck_assert_uint_eq(e.name_len, strlen(x->name));
        ck_assert_int_eq(e.dtype, x->dtype);
        ck_assert_uint_eq(e.ndim, x->ndim);
        for (uint32_t k = 0; k < e.ndim; k++)
            ck_assert_int_eq(td__ftab_dim(e.shape, k), x->shape[k]);
        ck_assert_uint_eq(e.region, x->region);
        ck_assert_uint_eq(e.offset, x->offset);
        ck_assert_uint_eq(e.nbytes, x->nbytes);
        ck_assert_int_eq(td__ftab_find(&ft, x->name, strlen(x->name)), (int64_t)i);
    }
    ck_assert_int_eq(td__ftab_find(&ft, "layers.300.weight", 17), -1);
    ck_assert_int_eq(td__ftab_find(&ft, "", 0), -1);
    ck_assert_int_eq(td__ftab_find(&ft, "step", 3), -1); /* a prefix is another name */
    /* Written twice, the same bytes: nothing depends on addresses or uninitialised memory. */
    uint64_t len2;
    uint8_t *q = write_table(&t, meta, sizeof meta, &len2);
    ck_assert_uint_eq(len, len2);
    ck_assert_mem_eq(p, q, (size_t)len);
    free(q);
    free(p);
    td__table_destroy(&t);
}
END_TEST

/* An empty table, and the one unnamed entry of a bare .npy. */
START_TEST(test_empty_and_unnamed)
{
    td__table t;
    td_error err;
    td__table_init(&t, TD_FORMAT_NPZ);
    uint64_t len;
    uint8_t *p = write_table(&t, NULL, 0, &len);
    td__ftab ft;
    ck_assert_int_eq(td__ftab_open(p, len, sizes, 2, "t", &ft, &err), 0);
    ck_assert_uint_eq(ft.n, 0);
    ck_assert_ptr_null(ft.meta);
    ck_assert_int_eq(td__ftab_find(&ft, "x", 1), -1);
    free(p);

    td__table_init(&t, TD_FORMAT_NPY);
    td__entry *e = td__table_add(&t, NULL, 0, &err);
    ck_assert_ptr_nonnull(e);
    e->dtype = TD_UINT8;
    e->nbytes = 1;
    p = write_table(&t, NULL, 0, &len);
    if (td__ftab_open(p, len, sizes, 2, "t", &ft, &err))
        ck_abort_msg("open: %s", err.message);
    td__ftab_entry x;
    td__ftab_get(&ft, 0, &x);
    ck_assert_ptr_null(x.name);
    ck_assert_uint_eq(x.ndim, 0);
    free(p);
    /* Two unnamed entries: the second cannot be told apart from the first. */
    e = td__table_add(&t, NULL, 0, &err);
    ck_assert_ptr_nonnull(e);
    e->dtype = TD_UINT8;
    e->nbytes = 1;
    e->offset = 1;
    p = write_table(&t, NULL, 0, &len);
    ck_assert_int_eq(td__ftab_open(p, len, sizes, 2, "t", &ft, &err), TD_EPROTO);
    ck_assert_ptr_nonnull(strstr(err.message, "unnamed"));
    free(p);
    td__table_destroy(&t);
}
END_TEST

/* Offsets of the fields the hostile cases change. */
static uint64_t hdr64(const uint8_t *p, size_t at)
{
    return td__le64(p + at);
}

static uint8_t *entry_at(uint8_t *p, uint32_t i)
{
    return p + hdr64(p, 56) + (size_t)i * TD__FTAB_ENTRY;
}

/* One hostile table: a change to a valid one, the code and a word of the message wanted. */
typedef struct hostile {
    const char *what;
    void (*edit)(uint8_t *p, uint64_t *len);
    int code;
    const char *says;
} hostile;

static void e_magic(uint8_t *p, uint64_t *len)
{
    (void)len;
    p[0] = 'X';
}
static void e_version(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(p + 8, 2);
}
static void e_version0(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(p + 8, 0);
}
static void e_total(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put64(p + 16, hdr64(p, 16) + 8);
}
static void e_short(uint8_t *p, uint64_t *len)
{
    (void)p;
    *len = 100;
}
static void e_header(uint8_t *p, uint64_t *len)
{
    td__put32(p + 12, (uint32_t)*len + 1);
}
static void e_format(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(p + 24, 9);
}
static void e_regions(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(p + 32, 3);
}
static void e_slots_pow2(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(p + 36, td__le32(p + 36) - 1);
}
static void e_slots_few(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(p + 36, td__le32(p + 36) / 4);
}
static void e_count(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(p + 28, 0x7fffffff);
}
static void e_entries_off(uint8_t *p, uint64_t *len)
{
    td__put64(p + 56, *len);
}
static void e_entries_unaligned(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put64(p + 56, hdr64(p, 56) + 1);
}
static void e_shapes_huge(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put64(p + 80, UINT64_MAX / 4);
}
static void e_names_wrap(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put64(p + 96, UINT64_MAX - 64);
}
static void e_meta_out(uint8_t *p, uint64_t *len)
{
    td__put64(p + 104, *len - 2);
    td__put64(p + 112, 4);
}
static void e_names_nul(uint8_t *p, uint64_t *len)
{
    (void)len;
    p[hdr64(p, 88) + hdr64(p, 96) - 1] = 'x';
}
static void e_name_off(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(entry_at(p, 1) + 16, (uint32_t)hdr64(p, 96));
}
static void e_name_len0(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(entry_at(p, 1) + 20, 0);
}
static void e_name_nul(uint8_t *p, uint64_t *len)
{
    (void)len;
    p[hdr64(p, 88) + td__le32(entry_at(p, 1) + 16) + 2] = 0;
}
static void e_name_hash(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(entry_at(p, 1) + 40, td__le32(entry_at(p, 1) + 40) ^ 1);
}
static void e_dtype(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(entry_at(p, 1) + 24, 999);
}
static void e_ndim(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(entry_at(p, 1) + 28, TD_MAX_DIMS + 1);
}
static void e_shape_at(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(entry_at(p, 1) + 32, (uint32_t)hdr64(p, 80));
}
static void e_negative_dim(uint8_t *p, uint64_t *len)
{
    (void)len;
    uint32_t at = td__le32(entry_at(p, 1) + 32);
    td__put64(p + hdr64(p, 72) + 8 * at, (uint64_t)-2);
}
static void e_nbytes(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put64(entry_at(p, 1) + 8, 12);
}
static void e_region(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(entry_at(p, 1) + 36, 2);
}
static void e_past_region(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put64(entry_at(p, 1), (1u << 20) - 4);
}
static void e_offset_wrap(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put64(entry_at(p, 1), UINT64_MAX - 3);
}
static void e_misaligned(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put64(entry_at(p, 1), 2);
}
/* Index slot changes: find entry 1's slot. */
static uint8_t *slot_of(uint8_t *p, uint32_t entry)
{
    uint32_t slots = td__le32(p + 36);
    for (uint32_t s = 0; s < slots; s++)
        if (td__le32(p + hdr64(p, 64) + 4 * s) == entry + 1)
            return p + hdr64(p, 64) + 4 * s;
    ck_abort_msg("entry %u is not in the index", entry);
    return NULL;
}
static void e_slot_range(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(slot_of(p, 1), td__le32(p + 28) + 1);
}
static void e_slot_missing(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(slot_of(p, 1), 0);
}
static void e_slot_twice(uint8_t *p, uint64_t *len)
{
    (void)len;
    td__put32(slot_of(p, 1), 1); /* entry 0 in two slots, entry 1 in none */
}
/* Entry 2 takes entry 1's name (and hash): both are indexed, one name twice. */
static void e_duplicate(uint8_t *p, uint64_t *len)
{
    (void)len;
    memcpy(entry_at(p, 2) + 16, entry_at(p, 1) + 16, 8);
    memcpy(entry_at(p, 2) + 40, entry_at(p, 1) + 40, 4);
}

static const hostile cases[] = {
    {"magic", e_magic, TD_EPROTO, "magic"},
    {"newer version", e_version, TD_EVERSION, "version 2"},
    {"version 0", e_version0, TD_EPROTO, "version 0"},
    {"total bytes", e_total, TD_EPROTO, "says"},
    {"shorter than a header", e_short, TD_EPROTO, "100 bytes"},
    {"header past the end", e_header, TD_EPROTO, "header"},
    {"format", e_format, TD_EPROTO, "format 9"},
    {"more regions than the reply", e_regions, TD_EPROTO, "3 regions"},
    {"slots not a power of two", e_slots_pow2, TD_EPROTO, "index slots"},
    {"too few slots", e_slots_few, TD_EPROTO, "index slots"},
    {"huge entry count", e_count, TD_EPROTO, "index slots"},
    {"entries past the end", e_entries_off, TD_EPROTO, "entries"},
    {"entries unaligned", e_entries_unaligned, TD_EPROTO, "entries"},
    {"shape count overflows", e_shapes_huge, TD_EPROTO, "shapes"},
    {"names length wraps", e_names_wrap, TD_EPROTO, "names"},
    {"metadata past the end", e_meta_out, TD_EPROTO, "metadata"},
    {"names without their NUL", e_names_nul, TD_EPROTO, "NUL"},
    {"name past the names", e_name_off, TD_EPROTO, "entries[1]: name"},
    {"empty name", e_name_len0, TD_EPROTO, "entries[1]: name"},
    {"NUL inside a name", e_name_nul, TD_EPROTO, "entries[1]: name"},
    {"wrong name hash", e_name_hash, TD_EPROTO, "hash"},
    {"unknown dtype", e_dtype, TD_EPROTO, "dtype 999"},
    {"33 dimensions", e_ndim, TD_EPROTO, "33 dimensions"},
    {"shape past the sizes", e_shape_at, TD_EPROTO, "dimensions from size"},
    {"negative size", e_negative_dim, TD_EPROTO, "shape"},
    {"nbytes not dtype x shape", e_nbytes, TD_EPROTO, "nbytes 12"},
    {"region out of range", e_region, TD_EPROTO, "region 2"},
    {"bytes past the region", e_past_region, TD_EPROTO, "past the end of region"},
    {"offset + nbytes wraps", e_offset_wrap, TD_EPROTO, "past the end of region"},
    {"offset misaligned", e_misaligned, TD_EPROTO, "not aligned"},
    {"index slot past the entries", e_slot_range, TD_EPROTO, "index slot"},
    {"entry missing from the index", e_slot_missing, TD_EPROTO, "index holds"},
    {"entry indexed twice", e_slot_twice, TD_EPROTO, "entries[1]"},
    {"two entries, one name", e_duplicate, TD_EDUP, "earlier entry"},
};

START_TEST(test_hostile)
{
    td__table t;
    make_table(&t, 5);
    uint64_t good_len;
    uint8_t *good = write_table(&t, "meta", 4, &good_len);
    td__table_destroy(&t);
    const hostile *h = &cases[_i];
    uint8_t *p = malloc(good_len);
    ck_assert_ptr_nonnull(p);
    memcpy(p, good, good_len);
    uint64_t len = good_len;
    h->edit(p, &len);
    td__ftab ft;
    td_error err = {0};
    int rc = td__ftab_open(p, len, sizes, 2, "hostile.safetensors", &ft, &err);
    if (rc != h->code || !strstr(err.message, h->says) ||
        !strstr(err.message, "hostile.safetensors"))
        ck_abort_msg("%s: code %d (want %d): %s (want it to say '%s')", h->what, rc, h->code,
                     err.message, h->says);
    free(p);
    free(good);
}
END_TEST

/* Names picked to share one probe sequence under the table's seed (here a reader can compute
 * them; a writer's seed is secret from file authors): a table that needs more probes than a
 * fair index ever does is refused rather than scanned. */
START_TEST(test_clustered_index)
{
    td__table t;
    td_error err;
    td__table_init(&t, TD_FORMAT_SAFETENSORS);
    const uint32_t want = 128, slots = 512; /* what the writer sizes for 128 entries */
    char name[32];
    for (uint32_t k = 0, made = 0; made < want; k++) {
        snprintf(name, sizeof name, "w%u", k);
        if ((td__hash(seed, name, strlen(name)) & (slots - 1)) != 7)
            continue;
        td__entry *e = td__table_add(&t, name, strlen(name), &err);
        ck_assert_ptr_nonnull(e);
        e->dtype = TD_UINT8;
        e->nbytes = 1;
        made++;
    }
    uint64_t len;
    uint8_t *p = write_table(&t, NULL, 0, &len);
    ck_assert_uint_eq(td__le32(p + 36), slots);
    td__ftab ft;
    ck_assert_int_eq(td__ftab_open(p, len, sizes, 2, "t", &ft, &err), TD_EPROTO);
    ck_assert_ptr_nonnull(strstr(err.message, "probes"));
    free(p);
    td__table_destroy(&t);
}
END_TEST

START_TEST(test_writer_refuses)
{
    td__table t;
    td_error err;
    make_table(&t, 3);
    uint64_t len = td__ftab_size(&t, 0);
    uint8_t *p = malloc(len);
    ck_assert_ptr_nonnull(p);
    t.entries[1].layout = TD__LAYOUT_SWAP;
    ck_assert_int_eq(td__ftab_write(&t, 2, NULL, 0, seed, p, len, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "layers.1.weight"));
    t.entries[1].layout = 0;
    ck_assert_int_eq(td__ftab_write(&t, 1, NULL, 0, seed, p, len, &err), TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.message, "region 1 of 1"));
    ck_assert_int_eq(td__ftab_write(&t, 2, NULL, 0, seed, p, len - 1, &err), TD_EINVAL);
    ck_assert_int_eq(td__ftab_write(&t, 2, NULL, 0, seed, p, len, &err), 0);
    free(p);
    td__table_destroy(&t);
}
END_TEST

/* A memfd holding p[0..len), sealed or not. */
static int table_memfd(const uint8_t *p, uint64_t len, int seal)
{
    int fd = memfd_create("test-ftab", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, p, (size_t)len), (ssize_t)len);
    if (seal)
        ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW), 0);
    return fd;
}

START_TEST(test_client_maps_sealed_only)
{
    td__table t;
    td_error err;
    make_table(&t, 10);
    uint64_t len;
    uint8_t *p = write_table(&t, NULL, 0, &len);
    td__tab *tab = NULL;

    int fd = table_memfd(p, len, 0);
    ck_assert_int_eq(td__tab_map(fd, len, sizes, 2, "x.safetensors", &tab, &err), TD_EPROTO);
    ck_assert_ptr_nonnull(strstr(err.message, "not sealed"));
    close(fd);

    fd = table_memfd(p, len, 1);
    ck_assert_int_eq(td__tab_map(fd, len + 4096, sizes, 2, "x.safetensors", &tab, &err),
                     TD_EPROTO); /* the reply's size is not the memfd's */
    if (td__tab_map(fd, len, sizes, 2, "x.safetensors", &tab, &err))
        ck_abort_msg("map: %s", err.message);
    close(fd); /* the mapping stays */
    const td__ftab *ft = td__tab_ftab(tab);
    ck_assert_int_eq(td__ftab_find(ft, "layers.9.weight", 15), 9);
    ck_assert_uint_eq(td__tab_bytes(tab), len);

    /* A dict over it: views into two regions of ours, names borrowed, lookups by the index. */
    static uint8_t r0[1 << 20] __attribute__((aligned(64))),
        r1[1 << 20] __attribute__((aligned(64)));
    td__region *regions[2] = {td__region_new(r0, sizeof r0, NULL, NULL),
                              td__region_new(r1, sizeof r1, NULL, NULL)};
    td_dict *d = NULL;
    if (td__tab_to_dict(tab, regions, 2, TD_PROVENANCE_DAEMON, NULL, NULL, &d, &err))
        ck_abort_msg("dict: %s", err.message);
    td__region_release(regions[0]);
    td__region_release(regions[1]);
    td__tab_release(tab); /* the dict holds it */
    ck_assert_uint_eq(td_dict_size(d), 12);
    const td_array *a = td_dict_get(d, "layers.3.weight");
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(td_array_shape(a)[0], 4);
    ck_assert_ptr_eq(td_array_data(a), r1 + t.entries[3].offset);
    ck_assert_int_eq(td_array_provenance(a), TD_PROVENANCE_DAEMON);
    ck_assert_ptr_null(td_dict_get(d, "layers.10.weight"));
    /* An array outlives the dict; the dict takes names of its own once something is added. */
    td_array *kept = td_array_retain(td_dict_get(d, "embed"));
    ck_assert_int_eq(td_dict_set(d, "extra", kept, &err), 0);
    ck_assert_ptr_eq(td_dict_get(d, "extra"), kept);
    ck_assert_ptr_eq(td_dict_get(d, "step"), td_dict_at(d, 10, NULL));
    ck_assert_int_eq(td_dict_set(d, "layers.0.weight", kept, &err), TD_EDUP);
    td_dict_free(d);
    ck_assert_int_eq(td_array_shape(kept)[1], 5);
    td_array_release(kept);
    free(p);
    td__table_destroy(&t);
}
END_TEST

/* Entries may share their shape sizes (the format bounds each shape, nothing more): a table of
 * 300 entries of 32 dimensions over 32 sizes in all is taken, and the views of its dicts, made
 * one by one the first time and from an image of them the second, each get their 32 sizes. */
START_TEST(test_client_shared_shapes)
{
    enum { N = 300, D = 32 };
    td__table t;
    td_error err;
    td__table_init(&t, TD_FORMAT_SAFETENSORS);
    int64_t ones[D];
    for (int k = 0; k < D; k++)
        ones[k] = 1;
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        td__entry *e = td__table_add(&t, name, strlen(name), &err);
        ck_assert_ptr_nonnull(e);
        ck_assert_int_eq(td__entry_set_shape(e, D, ones, &err), 0);
        e->dtype = TD_FLOAT32;
        e->nbytes = 4;
        e->offset = 64 * (uint64_t)i;
    }
    uint64_t len;
    uint8_t *p = write_table(&t, NULL, 0, &len);
    /* every entry's shape at the first size, and the shapes as D sizes */
    td__put64(p + 80, D);
    uint64_t entries = td__le64(p + 56);
    for (int i = 0; i < N; i++)
        td__put32(p + entries + (size_t)i * TD__FTAB_ENTRY + 32, 0);
    int fd = table_memfd(p, len, 1);
    td__tab *tab = NULL;
    if (td__tab_map(fd, len, sizes, 2, "x.safetensors", &tab, &err))
        ck_abort_msg("map: %s", err.message);
    close(fd);
    static uint8_t r0[1 << 20] __attribute__((aligned(64)));
    td__region *region = td__region_new(r0, sizeof r0, NULL, NULL);
    for (int round = 0; round < 3; round++) {
        td_dict *d = NULL;
        if (td__tab_to_dict(tab, &region, 1, TD_PROVENANCE_DAEMON, NULL, NULL, &d, &err))
            ck_abort_msg("dict: %s", err.message);
        ck_assert_uint_eq(td_dict_size(d), N);
        for (int i = 0; i < N; i++) {
            const td_array *a = td_dict_at(d, (size_t)i, NULL);
            ck_assert_ptr_nonnull(a);
            ck_assert_int_eq(td_array_ndim(a), D);
            ck_assert_int_eq(td_array_shape(a)[D - 1], 1);
            ck_assert_ptr_eq(td_array_data(a), r0 + 64 * i);
        }
        td_dict_free(d);
    }
    td__region_release(region);
    td__tab_release(tab);
    free(p);
    td__table_destroy(&t);
}
END_TEST

static Suite *ftab_suite(void)
{
    Suite *s = suite_create("ftab");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_empty_and_unnamed);
    tcase_add_loop_test(tc, test_hostile, 0, (int)(sizeof cases / sizeof cases[0]));
    tcase_add_test(tc, test_clustered_index);
    tcase_add_test(tc, test_writer_refuses);
    tcase_add_test(tc, test_client_maps_sealed_only);
    tcase_add_test(tc, test_client_shared_shapes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tu_run(ftab_suite());
}
