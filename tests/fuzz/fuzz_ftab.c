/*
 * fuzz_ftab.c - libFuzzer target for the flat tensor table a daemon shares with its clients
 * (ftab/ftab.h), read as a client reads it.
 *
 * Input layout: byte 0 says how many regions the reply has (bits 0-1: 0..3) and how large each
 * is (bits 2-4: 2^(8 + 2k) bytes); the rest is the table.
 *
 * Oracles, besides the sanitizers:
 *   - td__ftab_open either refuses with a negative TD_E* code and a message, or every entry of
 *     what it accepted is sound: a known dtype, nbytes = dtype x shape, its bytes inside its
 *     region and aligned, a NUL-terminated name that td__ftab_find gives back as that entry;
 *   - an accepted table written again (td__ftab_write) opens again with the same entries;
 *   - lookups of names that are not in it (pieces of the input) return -1 or an entry with
 *     exactly that name;
 *   - the metadata section, decoded as the client decodes it, fails cleanly or gives a td_meta.
 *
 * TD_FUZZ_WRITE_CORPUS=DIR writes the seed corpus (valid tables: empty, one unnamed array,
 * several entries in two regions, with metadata) into DIR and exits; tests/fuzz/corpus_ftab was
 * made that way.
 */
#include "common.h"
#include "dtype.h"
#include "ftab.h"
#include "proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static void die(const char *what, const td_error *err)
{
    fprintf(stderr, "fuzz_ftab: %s: %s\n", what, err ? err->message : "");
    abort();
}

/* The entries of ft as a td__table (for writing again). */
static void to_table(const td__ftab *ft, td__table *t)
{
    td_error err;
    td__table_init(t, ft->format);
    for (uint32_t i = 0; i < ft->n; i++) {
        td__ftab_entry e;
        int64_t shape[TD_MAX_DIMS];
        td__ftab_get(ft, i, &e);
        td__entry *x = td__table_add(t, e.name, e.name_len, &err);
        if (!x)
            die("table_add", &err);
        for (uint32_t k = 0; k < e.ndim; k++)
            shape[k] = td__ftab_dim(e.shape, k);
        if (td__entry_set_shape(x, e.ndim, shape, &err))
            die("set_shape", &err);
        x->dtype = e.dtype;
        x->region = e.region;
        x->offset = e.offset;
        x->nbytes = e.nbytes;
    }
}

static void check_entries(const td__ftab *ft, const uint64_t *sizes)
{
    for (uint32_t i = 0; i < ft->n; i++) {
        td__ftab_entry e;
        int64_t shape[TD_MAX_DIMS];
        td__ftab_get(ft, i, &e);
        if (!td__dtype_info(e.dtype) || e.ndim > TD_MAX_DIMS || e.region >= ft->nregions)
            die("accepted an unsound entry", NULL);
        for (uint32_t k = 0; k < e.ndim; k++)
            if ((shape[k] = td__ftab_dim(e.shape, k)) < 0)
                die("accepted a negative size", NULL);
        uint64_t nbytes;
        td_error err;
        if (td__shape_nbytes(e.dtype, e.ndim, shape, &nbytes, &err) || nbytes != e.nbytes ||
            e.offset > sizes[e.region] || sizes[e.region] - e.offset < e.nbytes ||
            e.offset % td__dtype_align(e.dtype))
            die("accepted bytes outside their region", NULL);
        if (e.name) {
            if (strlen(e.name) != e.name_len || td__ftab_find(ft, e.name, e.name_len) != (int64_t)i)
                die("accepted a name its index does not find", NULL);
        } else if (ft->n != 1) {
            die("accepted an unnamed entry among several", NULL);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t nregions = data[0] & 3;
    uint64_t sizes[3];
    for (uint32_t i = 0; i < 3; i++)
        sizes[i] = 1ull << (8 + 2 * ((data[0] >> 2) & 7));
    /* The table at an 8-aligned address, as a mapping would be. */
    size_t len = size - 1;
    uint8_t *p = malloc(len ? len : 1);
    if (!p)
        return 0;
    memcpy(p, data + 1, len);
    td__ftab ft;
    td_error err = {0};
    int rc = td__ftab_open(p, len, sizes, nregions, "fuzz", &ft, &err);
    if (rc) {
        if (rc >= 0 || !err.message[0])
            die("refused without a code and a message", &err);
        free(p);
        return 0;
    }
    check_entries(&ft, sizes);

    /* Names that may or may not be there: every 16-byte window of the input. */
    for (size_t at = 0; at + 1 < len && at < 4096; at += 16) {
        size_t n = len - at < 16 ? len - at : 16;
        char name[17];
        memcpy(name, p + at, n);
        name[n] = 0;
        int64_t i = td__ftab_find(&ft, name, strlen(name));
        if (i >= 0) {
            td__ftab_entry e;
            td__ftab_get(&ft, (uint32_t)i, &e);
            if (!e.name || e.name_len != strlen(name) || memcmp(e.name, name, e.name_len) != 0)
                die("found the wrong entry", NULL);
        }
    }

    /* What the daemon would write for the same entries opens the same way. */
    td__table t;
    to_table(&ft, &t);
    uint64_t len2 = td__ftab_size(&t, ft.meta_len);
    uint8_t *q = len2 ? malloc(len2) : NULL;
    if (q) {
        td__hash_seed seed = {0x1234, 0x5678};
        td__ftab ft2;
        if (td__ftab_write(&t, ft.nregions, ft.meta, ft.meta_len, seed, q, len2, &err) ||
            td__ftab_open(q, len2, sizes, nregions, "again", &ft2, &err) || ft2.n != ft.n)
            die("an accepted table does not write and open again", &err);
        check_entries(&ft2, sizes);
        free(q);
    }
    td__table_destroy(&t);

    if (ft.meta_len) {
        td_meta *m = NULL;
        rc = td__proto_meta_unpack(ft.meta, (size_t)ft.meta_len, "fuzz: metadata", &m, &err);
        if (rc && (rc >= 0 || !err.message[0]))
            die("metadata refused without a code and a message", &err);
        td_meta_free(m);
    }
    free(p);
    return 0;
}

/* ---- the seed corpus ---- */

static void write_seed(const char *dir, const char *name, uint8_t ctl, const td__table *t,
                       const td_meta *meta)
{
    td_error err;
    uint8_t *mb = NULL;
    size_t ml = 0;
    if (meta && td__proto_meta_pack(meta, &mb, &ml, &err))
        die("seed metadata", &err);
    uint64_t len = td__ftab_size(t, ml);
    uint8_t *p = malloc(len + 1);
    td__hash_seed seed = {0x0123456789abcdefULL, 0x0fedcba987654321ULL};
    p[0] = ctl;
    if (td__ftab_write(t, ctl & 3, mb, ml, seed, p + 1, len, &err))
        die("seed", &err);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, len + 1, f) != len + 1 || fclose(f))
        die(path, NULL);
    free(p);
    free(mb);
}

static void make_corpus(const char *dir)
{
    td_error err;
    td__table t;
    td__table_init(&t, TD_FORMAT_SAFETENSORS);
    write_seed(dir, "empty", 1, &t, NULL);

    td__table_init(&t, TD_FORMAT_NPY);
    td__entry *e = td__table_add(&t, NULL, 0, &err);
    int64_t shape[3] = {2, 3, 4};
    td__entry_set_shape(e, 2, shape, &err);
    e->dtype = TD_FLOAT32;
    e->nbytes = 24;
    e->offset = 128;
    write_seed(dir, "npy", 1, &t, NULL);
    td__table_destroy(&t);

    /* A GGUF-like table in two regions (the file and a decoded buffer), with metadata. */
    td__table_init(&t, TD_FORMAT_GGUF);
    static const char *names[] = {"token_embd.weight", "blk.0.attn_q.weight", "blk.0.ffn_up",
                                  "output_norm.weight", "x"};
    static const td_dtype dtypes[] = {TD_FLOAT16, TD_Q4_0, TD_FLOAT32, TD_FLOAT32, TD_INT8};
    for (size_t i = 0; i < 5; i++) {
        e = td__table_add(&t, names[i], strlen(names[i]), &err);
        int64_t s[2] = {2, dtypes[i] == TD_Q4_0 ? 32 : 3};
        td__entry_set_shape(e, i == 4 ? 1 : 2, s, &err);
        e->dtype = dtypes[i];
        uint64_t nb;
        td__shape_nbytes(e->dtype, e->ndim, e->shape, &nb, &err);
        e->nbytes = nb;
        e->region = (uint32_t)(i % 2);
        e->offset = 64 * i;
    }
    td_meta *m = td_meta_new();
    uint32_t align = 32;
    if (td_meta_set_string(m, "general.architecture", "llama", 5, &err) ||
        td_meta_set_scalar(m, "general.alignment", TD_META_UINT32, &align, &err))
        die("seed metadata", &err);
    write_seed(dir, "gguf_two_regions", 2 | (1 << 2), &t, m);
    write_seed(dir, "gguf_no_meta", 2 | (2 << 2), &t, NULL);
    td_meta_free(m);
    td__table_destroy(&t);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = getenv("TD_FUZZ_WRITE_CORPUS");
    if (dir) {
        make_corpus(dir);
        exit(0);
    }
    return 0;
}
