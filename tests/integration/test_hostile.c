/*
 * test_hostile.c - the hostile corpus: cases grouped by class of defect (counts,
 * lengths, offsets, overlaps, alignment, overflowing products, duplicate names, unknown types,
 * nesting, truncation at every structure, zip bombs, path names in zip members) for every
 * format, driven through the public td_load in embedded mode and again through a real tensord
 * in daemon mode.
 *
 * The per-codec tests (test_npy.c, test_safetensors.c, test_zip.c, test_gguf.c) check the
 * parsers field by field with their internal entry points; this file checks what a user of the
 * library sees for each class: a clean negative code (the expected one), a message that names
 * the file, nothing returned, no descriptor left open, the same answer from the daemon as from
 * the embedded loader, and a daemon that keeps serving and returns to its descriptor baseline.
 * Files that must be accepted (unaligned data, legal nesting, odd but valid layouts) are in the
 * table too: every byte of each array is read, and most have their values checked (four, whose
 * point is only that they load, do not: CK_NONE).
 *
 * Every case is built from scratch in memory by small writers here (npy, zip, safetensors,
 * gguf), so that each defect sits exactly where it is meant to. The npz cases are a table of
 * their own (zip_cases): members, then patches of single fields, built by one builder, each with
 * the code and the words its message must have.
 */
#include "client.h"
#include "common.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

/* ---------------------------------------------------------------------------------------------
 * Byte buffers
 */
typedef tu_buf buf;

static void b_str(buf *b, const char *s)
{
    tu_buf_put(b, s, strlen(s));
}
/* The float32 ramp every valid tensor here holds: value i is i + 0.5. */
static void b_ramp_f32(buf *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float f = (float)i + 0.5f;
        tu_buf_put(b, &f, 4);
    }
}

/* ---------------------------------------------------------------------------------------------
 * npy
 */

/* magic, version, header length, header (padded with spaces to `align` and ended by '\n'). */
static void npy_hdr(buf *b, int version, const char *dict, size_t align)
{
    size_t pre = version == 1 ? 10 : 12;
    size_t hl = strlen(dict) + 1;
    if (align)
        hl += (align - (pre + hl) % align) % align;
    tu_buf_put(b, "\x93NUMPY", 6);
    tu_buf_u8(b, (uint8_t)version);
    tu_buf_u8(b, 0);
    if (version == 1)
        tu_buf_u16(b, (uint16_t)hl);
    else
        tu_buf_u32(b, (uint32_t)hl);
    b_str(b, dict);
    for (size_t i = strlen(dict) + 1; i < hl; i++)
        tu_buf_u8(b, ' ');
    tu_buf_u8(b, '\n');
}

/* A valid npy of a float32 ramp of n elements with shape text sh. */
static void npy_f32(buf *b, const char *shape, size_t n)
{
    char d[256];
    snprintf(d, sizeof d, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }", shape);
    npy_hdr(b, 1, d, 64);
    b_ramp_f32(b, n);
}

static void npy_with_dict(buf *b, const char *dict, size_t data)
{
    npy_hdr(b, 1, dict, 64);
    tu_buf_zeros(b, data);
}

#define NPY_DICT(descr, fortran, shape)                                                            \
    "{'descr': '" descr "', 'fortran_order': " fortran ", 'shape': " shape ", }"

static void npy_ok(buf *b)
{
    npy_f32(b, "(3, 4)", 12);
}
static void npy_dims_33(buf *b)
{
    npy_with_dict(b,
                  NPY_DICT("<f4", "False",
                           "(1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1)"),
                  4);
}
static void npy_dims_32(buf *b)
{
    npy_f32(b, "(1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,2)", 2);
}
static void npy_hlen_past_end(buf *b)
{
    npy_ok(b);
    tu_buf_set16(b, 8, 0xfff0);
}
static void npy_v2_hlen_huge(buf *b)
{
    npy_hdr(b, 2, NPY_DICT("<f4", "False", "(2,)"), 64);
    b_ramp_f32(b, 2);
    tu_buf_set32(b, 8, 0xffffffffu);
}
static void npy_hlen_over_limit(buf *b)
{
    /* A real 70000-byte header (numpy refuses more than 10000 by default; we, 65536). */
    char *d = malloc(70100);
    ck_assert_ptr_nonnull(d);
    snprintf(d, 70100, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), %*s}", 70000, "");
    npy_hdr(b, 2, d, 64);
    free(d);
    b_ramp_f32(b, 2);
}
static void npy_data_short(buf *b)
{
    npy_f32(b, "(3, 4)", 11);
}
static void npy_data_long(buf *b)
{
    /* Trailing bytes after the data: numpy ignores them, and so do we (np.load reads a
     * stream); the array is the declared one. */
    npy_f32(b, "(3, 4)", 13);
}
static void npy_align_16(buf *b)
{
    npy_hdr(b, 1, NPY_DICT("<f4", "False", "(3, 4)"), 16);
    b_ramp_f32(b, 12);
}
static void npy_align_odd(buf *b)
{
    /* Data at an odd offset: copied into aligned memory, and must still read right. */
    npy_hdr(b, 1, NPY_DICT("<f4", "False", "(3, 4)"), 0);
    b_ramp_f32(b, 12);
}
static void npy_overflow(buf *b)
{
    npy_with_dict(b, NPY_DICT("<f8", "False", "(4294967296, 4294967296)"), 8);
}
static void npy_overflow_2(buf *b)
{
    npy_with_dict(b, NPY_DICT("<c16", "False", "(2305843009213693952,)"), 16);
}
static void npy_negative(buf *b)
{
    npy_with_dict(b, NPY_DICT("<f4", "False", "(-1, 4)"), 16);
}
static void npy_dup_key(buf *b)
{
    npy_with_dict(b, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'shape': (3,), }",
                  12);
}
static void npy_object(buf *b)
{
    npy_with_dict(b, NPY_DICT("|O", "False", "(2,)"), 16);
}
static void npy_unicode(buf *b)
{
    npy_with_dict(b, NPY_DICT("<U4", "False", "(2,)"), 32);
}
static void npy_f3(buf *b)
{
    npy_with_dict(b, NPY_DICT("<f3", "False", "(2,)"), 6);
}
static void npy_datetime(buf *b)
{
    npy_with_dict(b, NPY_DICT("<M8[ns]", "False", "(2,)"), 16);
}
static void npy_nested_shape(buf *b)
{
    npy_with_dict(b, NPY_DICT("<f4", "False", "((1, 2), 3)"), 24);
}
static void npy_structured(buf *b)
{
    npy_with_dict(b, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8);
}
static void npy_deep_parens(buf *b)
{
    char d[2200];
    char *p = d + sprintf(d, "{'descr': '<f4', 'fortran_order': False, 'shape': ");
    for (int i = 0; i < 1000; i++)
        *p++ = '(';
    for (int i = 0; i < 1000; i++)
        *p++ = ')';
    strcpy(p, ", }");
    npy_with_dict(b, d, 4);
}

/* ---------------------------------------------------------------------------------------------
 * zip / npz: one writer with every field under control, and a table of archives it builds
 */

/* What a member holds (its uncompressed bytes). */
typedef enum zdata {
    ZD_SMALL,    /* npy_small: a valid float32 ramp (2, 3) */
    ZD_BIG0,     /* npy_big0: 16 MiB of float32 zeros, deflates ~1000:1 */
    ZD_OVERFLOW, /* an npy whose shape product overflows */
    ZD_OBJECT,   /* an npy of Python objects */
    ZD_NPZ       /* a whole valid npz (two stored members), named .npy */
} zdata;

typedef struct zmember {
    const char *name;  /* central directory name */
    size_t name_len;   /* 0: strlen(name) (set for names with a NUL byte) */
    const char *lname; /* local header name (NULL: the same) */
    uint16_t method;   /* 0 or 8 (anything else is written as given, with the data stored) */
    uint16_t flags;
    zdata data;
    int bad_crc;        /* store a wrong CRC-32 */
    int64_t usize_adj;  /* added to the declared uncompressed size */
    uint64_t usize_set; /* when non-zero: the declared uncompressed size */
    int same_local_as;  /* > 0: point the central record at member same_local_as-1's header */
} zmember;

/* Where the records of a built archive are. */
typedef struct zinfo {
    size_t local[8], data[8], central[8], cd_start, eocd;
} zinfo;

/* A patch of a built archive: the field at record + off, set to a value (2 or 4 bytes wide), or
 * width bytes there XORed with value. */
typedef enum zrec { ZR_LOCAL0 = 1, ZR_CENTRAL0, ZR_EOCD, ZR_CD_START } zrec;
typedef enum zval {
    ZV_LIT,      /* value */
    ZV_DATA0,    /* member 0's data offset + value */
    ZV_CD_START, /* the central directory's offset + value */
    ZV_SMALL     /* npy_small's length + value */
} zval;
typedef struct zpatch {
    zrec rec; /* 0: no patch */
    int off;
    int width; /* 2 or 4 (set), or the bytes to XOR */
    int xor ;
    zval kind;
    uint32_t value;
} zpatch;

/* One archive: members (copies > 1: member 0 that many times, named a.npy, b.npy, ...), then
 * patches. */
typedef struct zspec {
    zmember m[2];
    size_t n; /* members; 0 means 1 */
    int copies;
    zpatch patch[4];
} zspec;

static buf npy_small;     /* float32 ramp (2, 3) */
static buf npy_big0;      /* float32 zeros, 16 MiB: deflates ~1000:1 */
static buf m_overflow;    /* an npy of shape (2^32, 2^32) of float64 */
static buf m_object;      /* an npy of descr '|O' */
static buf npz_small;     /* two stored ZD_SMALL members */
static uint8_t *big_comp; /* npy_big0 deflated, made once */
static size_t big_clen;

static uint8_t *deflate_raw(const void *p, size_t n, size_t *out_len)
{
    if (p == npy_big0.p && big_comp) {
        uint8_t *c = malloc(big_clen);
        ck_assert_ptr_nonnull(c);
        memcpy(c, big_comp, big_clen);
        *out_len = big_clen;
        return c;
    }
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    ck_assert_int_eq(deflateInit2(&zs, 9, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&zs, n) + 16;
    uint8_t *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    zs.next_in = (Bytef *)p;
    zs.avail_in = (uInt)n;
    zs.next_out = out;
    zs.avail_out = (uInt)cap;
    ck_assert_int_eq(deflate(&zs, Z_FINISH), Z_STREAM_END);
    *out_len = zs.total_out;
    deflateEnd(&zs);
    if (p == npy_big0.p) {
        big_comp = malloc(*out_len);
        ck_assert_ptr_nonnull(big_comp);
        memcpy(big_comp, out, *out_len);
        big_clen = *out_len;
    }
    return out;
}

static const buf *zdata_buf(zdata d)
{
    switch (d) {
    case ZD_BIG0:
        return &npy_big0;
    case ZD_OVERFLOW:
        return &m_overflow;
    case ZD_OBJECT:
        return &m_object;
    case ZD_NPZ:
        return &npz_small;
    default:
        return &npy_small;
    }
}

/* Local headers with their data, the central directory, the end record; no zip64, no
 * descriptors. n <= 8. */
static void zip_build(buf *b, const zmember *m, size_t n, zinfo *zi)
{
    uint32_t crc[8];
    size_t csize[8];
    ck_assert_uint_le(n, 8);
    for (size_t i = 0; i < n; i++) {
        const buf *d = zdata_buf(m[i].data);
        size_t nl = m[i].name_len ? m[i].name_len : strlen(m[i].name);
        const char *ln = m[i].lname ? m[i].lname : m[i].name;
        size_t lnl = m[i].lname ? strlen(m[i].lname) : nl;
        crc[i] = (uint32_t)crc32(0, d->p, (uInt)d->len) ^ (m[i].bad_crc ? 0x5a5a5a5au : 0);
        size_t clen = d->len;
        uint8_t *comp = NULL;
        if (m[i].method == 8)
            comp = deflate_raw(d->p, d->len, &clen);
        csize[i] = clen;
        uint64_t us =
            m[i].usize_set ? m[i].usize_set : (uint64_t)((int64_t)d->len + m[i].usize_adj);
        zi->local[i] = b->len;
        tu_buf_u32(b, 0x04034b50u);
        tu_buf_u16(b, 20);
        tu_buf_u16(b, m[i].flags);
        tu_buf_u16(b, m[i].method);
        tu_buf_u16(b, 0);
        tu_buf_u16(b, 0x21);
        tu_buf_u32(b, crc[i]);
        tu_buf_u32(b, (uint32_t)clen);
        tu_buf_u32(b, (uint32_t)us);
        tu_buf_u16(b, (uint16_t)lnl);
        tu_buf_u16(b, 0);
        tu_buf_put(b, ln, lnl);
        zi->data[i] = b->len;
        tu_buf_put(b, comp ? comp : d->p, clen);
        free(comp);
    }
    zi->cd_start = b->len;
    for (size_t i = 0; i < n; i++) {
        const buf *d = zdata_buf(m[i].data);
        size_t nl = m[i].name_len ? m[i].name_len : strlen(m[i].name);
        uint64_t us =
            m[i].usize_set ? m[i].usize_set : (uint64_t)((int64_t)d->len + m[i].usize_adj);
        zi->central[i] = b->len;
        tu_buf_u32(b, 0x02014b50u);
        tu_buf_u16(b, 20);
        tu_buf_u16(b, 20);
        tu_buf_u16(b, m[i].flags);
        tu_buf_u16(b, m[i].method);
        tu_buf_u16(b, 0);
        tu_buf_u16(b, 0x21);
        tu_buf_u32(b, crc[i]);
        tu_buf_u32(b, (uint32_t)csize[i]);
        tu_buf_u32(b, (uint32_t)us);
        tu_buf_u16(b, (uint16_t)nl);
        tu_buf_u16(b, 0);
        tu_buf_u16(b, 0);
        tu_buf_u16(b, 0);
        tu_buf_u16(b, 0);
        tu_buf_u32(b, 0);
        tu_buf_u32(
            b, (uint32_t)(m[i].same_local_as ? zi->local[m[i].same_local_as - 1] : zi->local[i]));
        tu_buf_put(b, m[i].name, nl);
    }
    zi->eocd = b->len;
    tu_buf_u32(b, 0x06054b50u);
    tu_buf_u16(b, 0);
    tu_buf_u16(b, 0);
    tu_buf_u16(b, (uint16_t)n);
    tu_buf_u16(b, (uint16_t)n);
    tu_buf_u32(b, (uint32_t)(zi->eocd - zi->cd_start));
    tu_buf_u32(b, (uint32_t)zi->cd_start);
    tu_buf_u16(b, 0);
}

/* Builds the archive spec describes into b: the one builder of every zip case. */
static void zip_case_build(buf *b, const zspec *spec)
{
    static const char *const names[8] = {"a.npy", "b.npy", "c.npy", "d.npy",
                                         "e.npy", "f.npy", "g.npy", "h.npy"};
    zmember m[8];
    size_t n = spec->n ? spec->n : 1;
    memcpy(m, spec->m, n * sizeof *m);
    if (spec->copies > 1) {
        n = (size_t)spec->copies;
        for (size_t i = 0; i < n; i++) {
            m[i] = spec->m[0];
            m[i].name = names[i];
        }
    }
    zinfo zi;
    zip_build(b, m, n, &zi);
    for (size_t k = 0; k < 4 && spec->patch[k].rec; k++) {
        const zpatch *p = &spec->patch[k];
        size_t at = p->rec == ZR_LOCAL0     ? zi.local[0]
                    : p->rec == ZR_CENTRAL0 ? zi.central[0]
                    : p->rec == ZR_EOCD     ? zi.eocd
                                            : zi.cd_start;
        at = (size_t)((ptrdiff_t)at + p->off);
        uint32_t v = p->value + (p->kind == ZV_DATA0      ? (uint32_t)zi.data[0]
                                 : p->kind == ZV_CD_START ? (uint32_t)zi.cd_start
                                 : p->kind == ZV_SMALL    ? (uint32_t)npy_small.len
                                                          : 0);
        if (p->xor) {
            ck_assert_uint_le(at + (size_t)p->width, b->len);
            for (int i = 0; i < p->width; i++)
                b->p[at + (size_t)i] ^= (uint8_t)v;
        } else if (p->width == 2) {
            tu_buf_set16(b, at, (uint16_t)v);
        } else {
            tu_buf_set32(b, at, v);
        }
    }
}

/* Npy and npz contents for members, made once and kept for the whole run. */
static void make_members(void)
{
    if (npy_small.len)
        return;
    npy_f32(&npy_small, "(2, 3)", 6);
    npy_hdr(&npy_big0, 1, NPY_DICT("<f4", "False", "(4194304,)"), 64);
    tu_buf_zeros(&npy_big0, 16u << 20);
    npy_with_dict(&m_overflow, NPY_DICT("<f8", "False", "(4294967296, 4294967296)"), 8);
    npy_with_dict(&m_object, NPY_DICT("|O", "False", "(2,)"), 16);
    const zspec two = {.m = {{.name = "a.npy"}, {.name = "b.npy"}}, .n = 2};
    zip_case_build(&npz_small, &two);
}

static void free_members(void)
{
    free(npy_small.p);
    free(npy_big0.p);
    free(m_overflow.p);
    free(m_object.p);
    free(npz_small.p);
    free(big_comp);
}

/* Shorthands for the table: a member, a name with its exact length (NUL bytes included),
 * patches of the central record of member 0, its local header, the end record. */
#define ZM(nm, meth, ...)                                                                          \
    {                                                                                              \
        .name = (nm), .name_len = sizeof(nm) - 1, .method = (meth), __VA_ARGS__                    \
    }
#define CEN16(o, v)                                                                                \
    {                                                                                              \
        ZR_CENTRAL0, (o), 2, 0, ZV_LIT, (v)                                                        \
    }
#define CEN32(o, v)                                                                                \
    {                                                                                              \
        ZR_CENTRAL0, (o), 4, 0, ZV_LIT, (v)                                                        \
    }
#define LOC16(o, v)                                                                                \
    {                                                                                              \
        ZR_LOCAL0, (o), 2, 0, ZV_LIT, (v)                                                          \
    }
#define LOC32(o, v)                                                                                \
    {                                                                                              \
        ZR_LOCAL0, (o), 4, 0, ZV_LIT, (v)                                                          \
    }
#define EOCD16(o, v)                                                                               \
    {                                                                                              \
        ZR_EOCD, (o), 2, 0, ZV_LIT, (v)                                                            \
    }
#define EOCD32(o, v)                                                                               \
    {                                                                                              \
        ZR_EOCD, (o), 4, 0, ZV_LIT, (v)                                                            \
    }
#define ONE(m0, ...)                                                                               \
    {                                                                                              \
        .m = {m0}, .n = 1, __VA_ARGS__                                                             \
    }
#define TWO(a, b, ...)                                                                             \
    {                                                                                              \
        .m = {a, b}, .n = 2, __VA_ARGS__                                                           \
    }

/* ---------------------------------------------------------------------------------------------
 * safetensors
 */

/* 8-byte length, the header (padded with spaces to a multiple of 8 from the file start), data. */
static void st_file(buf *b, const char *json, size_t data_len, int pad)
{
    size_t n = strlen(json);
    size_t padded = pad ? n + (8 - (8 + n) % 8) % 8 : n;
    tu_buf_u64(b, padded);
    b_str(b, json);
    for (size_t i = n; i < padded; i++)
        tu_buf_u8(b, ' ');
    b_ramp_f32(b, data_len / 4);
    tu_buf_zeros(b, data_len % 4);
}
static void st_ok(buf *b)
{
    st_file(b,
            "{\"__metadata__\":{\"k\":\"v\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],"
            "\"data_offsets\":[0,24]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,"
            "32]}}",
            32, 1);
}
#define ST_CASE(fn, json, data)                                                                    \
    static void fn(buf *b)                                                                         \
    {                                                                                              \
        st_file(b, json, data, 1);                                                                 \
    }
#define T1(dt, shape, b, e)                                                                        \
    "{\"a\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":[" b "," e "]}}"
ST_CASE(st_dims_33,
        T1("F32", "[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]", "0", "4"),
        4)
ST_CASE(st_empty_ok, "{}", 0)
static void st_hlen_past_end(buf *b)
{
    st_ok(b);
    tu_buf_set32(b, 0, 4096);
}
static void st_hlen_huge(buf *b)
{
    st_ok(b);
    tu_buf_set32(b, 0, 0);
    tu_buf_set32(b, 4, 0x80000000u);
}
static void st_hlen_over_cap(buf *b)
{
    st_ok(b);
    tu_buf_set32(b, 0, 100000001);
}
static void st_hlen_zero(buf *b)
{
    tu_buf_u64(b, 0);
    b_ramp_f32(b, 2);
}
static void st_not_object(buf *b)
{
    st_file(b, "[{\"a\":1}]", 0, 1);
}
ST_CASE(st_trailing_data, T1("F32", "[2]", "0", "8"), 12)
ST_CASE(st_end_past_buffer, T1("F32", "[2]", "0", "8"), 4)
ST_CASE(st_begin_after_end, T1("F32", "[2]", "8", "0"), 8)
ST_CASE(st_offsets_huge, T1("F32", "[2]", "18446744073709551608", "0"), 8)
ST_CASE(st_offset_negative, T1("F32", "[2]", "-8", "0"), 8)
ST_CASE(st_gap,
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\","
        "\"shape\":[1],\"data_offsets\":[8,12]}}",
        12)
ST_CASE(st_overlap,
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
        "\"shape\":[2],\"data_offsets\":[4,12]}}",
        12)
ST_CASE(st_same_range,
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\","
        "\"shape\":[2],\"data_offsets\":[0,8]}}",
        8)
static void st_unaligned_ok(buf *b)
{
    /* One U8, then a float32 tensor at data offset 1: legal, and copied once into aligned
     * memory. */
    const char *j = "{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"a\":{"
                    "\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[1,9]}}";
    st_file(b, j, 0, 1);
    tu_buf_u8(b, 7);
    b_ramp_f32(b, 2);
}
static void st_unaligned_header_ok(buf *b)
{
    /* A header length that is not a multiple of 8 (no padding): data starts at an odd offset. */
    st_file(b, T1("F32", "[2]", "0", "8"), 8, 0);
}
ST_CASE(st_overflow, T1("F32", "[4294967296,4294967296,16]", "0", "4"), 4)
ST_CASE(st_overflow_2, T1("F64", "[2305843009213693952]", "0", "0"), 0)
ST_CASE(st_shape_negative, T1("F32", "[-1,2]", "0", "8"), 8)
ST_CASE(st_shape_float, T1("F32", "[1e300]", "0", "8"), 8)
ST_CASE(st_dup,
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\","
        "\"shape\":[1],\"data_offsets\":[4,8]}}",
        8)
ST_CASE(st_dup_metadata,
        "{\"__metadata__\":{\"k\":\"v\"},\"__metadata__\":{\"k\":\"w\"},\"a\":{\"dtype\":\"F32\","
        "\"shape\":[1],\"data_offsets\":[0,4]}}",
        4)
ST_CASE(st_dup_meta_key,
        "{\"__metadata__\":{\"k\":\"v\",\"k\":\"w\"},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
        "\"data_offsets\":[0,4]}}",
        4)
ST_CASE(st_dtype_f128, T1("F128", "[1]", "0", "16"), 16)
ST_CASE(st_dtype_lower, T1("f32", "[1]", "0", "4"), 4)
ST_CASE(st_dtype_ggml, T1("Q4_0", "[32]", "0", "18"), 18)
ST_CASE(st_dtype_number, "{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4)
ST_CASE(st_unknown_field,
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", 4)
ST_CASE(st_meta_number,
        "{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,"
        "4]}}",
        4)
ST_CASE(st_meta_object,
        "{\"__metadata__\":{\"k\":{\"x\":\"y\"}},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
        "\"data_offsets\":[0,4]}}",
        4)
ST_CASE(st_shape_nested, T1("F32", "[[2]]", "0", "8"), 8)
static void st_deep_json(buf *b)
{
    /* 100000 nested arrays: a recursive JSON parser without a depth bound overflows its stack. */
    size_t n = 100000;
    char *j = malloc(2 * n + 16);
    ck_assert_ptr_nonnull(j);
    char *p = j + sprintf(j, "{\"a\":");
    for (size_t i = 0; i < n; i++)
        *p++ = '[';
    for (size_t i = 0; i < n; i++)
        *p++ = ']';
    strcpy(p, "}");
    st_file(b, j, 0, 1);
    free(j);
}

/* ---------------------------------------------------------------------------------------------
 * gguf
 */
static void g_kv_u32(buf *b, const char *k, uint32_t v)
{
    tu_gguf_str(b, k);
    tu_buf_u32(b, TD_META_UINT32);
    tu_buf_u32(b, v);
}
/* Two F32 tensors a [2,3] at 0 and b [2] at 32, alignment 32, one string KV. */
static void gguf_ok(buf *b)
{
    uint64_t ne_a[2] = {3, 2}, ne_b[1] = {2};
    tu_gguf_header(b, 3, 2, 1);
    tu_gguf_str(b, "general.name");
    tu_buf_u32(b, TD_META_STRING);
    tu_gguf_str(b, "hostile");
    tu_gguf_tensor(b, "a", 2, ne_a, 0, 0);
    tu_gguf_tensor(b, "b", 1, ne_b, 0, 32);
    tu_buf_pad(b, 32);
    b_ramp_f32(b, 6);
    tu_buf_zeros(b, 8);
    b_ramp_f32(b, 2);
}
/* One F32 tensor "t" of ne elements, after kvs written by kv(). */
static void g_one(buf *b, uint64_t nkv, void (*kv)(buf *), uint64_t ne0, uint32_t type,
                  uint64_t off, size_t align, size_t data)
{
    tu_gguf_header(b, 3, 1, nkv);
    if (kv)
        kv(b);
    uint64_t ne[1] = {ne0};
    tu_gguf_tensor(b, "t", 1, ne, type, off);
    tu_buf_pad(b, align);
    b_ramp_f32(b, data / 4);
}
static void gguf_n_tensors_huge(buf *b)
{
    tu_gguf_header(b, 3, 1ull << 62, 0);
    tu_buf_zeros(b, 64);
}
static void gguf_n_kv_max(buf *b)
{
    tu_gguf_header(b, 3, 0, UINT64_MAX);
    tu_buf_zeros(b, 64);
}
static void gguf_array_count_past_end(buf *b)
{
    tu_gguf_header(b, 3, 0, 1);
    tu_gguf_str(b, "arr");
    tu_buf_u32(b, TD_META_ARRAY);
    tu_buf_u32(b, TD_META_UINT32);
    tu_buf_u64(b, 1ull << 40);
    tu_buf_zeros(b, 16);
}
static void gguf_array_count_overflow(buf *b)
{
    tu_gguf_header(b, 3, 0, 1);
    tu_gguf_str(b, "arr");
    tu_buf_u32(b, TD_META_ARRAY);
    tu_buf_u32(b, TD_META_UINT64);
    tu_buf_u64(b, 1ull << 61); /* x 8 bytes = 2^64 */
    tu_buf_zeros(b, 16);
}
static void gguf_key_len_huge(buf *b)
{
    tu_gguf_header(b, 3, 0, 1);
    tu_buf_u64(b, 1ull << 40);
    b_str(b, "abcdefgh");
}
static void gguf_str_len_max(buf *b)
{
    tu_gguf_header(b, 3, 0, 1);
    tu_gguf_str(b, "s");
    tu_buf_u32(b, TD_META_STRING);
    tu_buf_u64(b, UINT64_MAX);
    b_str(b, "abc");
}
static void gguf_name_len_past_end(buf *b)
{
    tu_gguf_header(b, 3, 1, 0);
    tu_buf_u64(b, 4096);
    b_str(b, "t");
}
static void gguf_off_past_end(buf *b)
{
    g_one(b, 0, NULL, 2, 0, 1u << 20, 32, 8);
}
static void gguf_off_huge(buf *b)
{
    g_one(b, 0, NULL, 2, 0, UINT64_MAX - 31, 32, 8);
}
static void gguf_data_short(buf *b)
{
    g_one(b, 0, NULL, 4, 0, 0, 32, 12);
}
static void gguf_overlap(buf *b)
{
    uint64_t ne[1] = {8};
    tu_gguf_header(b, 3, 2, 0);
    tu_gguf_tensor(b, "a", 1, ne, 0, 0);
    tu_gguf_tensor(b, "b", 1, ne, 0, 0);
    tu_buf_pad(b, 32);
    b_ramp_f32(b, 8);
}
static void gguf_overlap_partial(buf *b)
{
    uint64_t ne[1] = {16};
    tu_gguf_header(b, 3, 2, 0);
    tu_gguf_tensor(b, "a", 1, ne, 0, 0);
    tu_gguf_tensor(b, "b", 1, ne, 0, 32);
    tu_buf_pad(b, 32);
    b_ramp_f32(b, 24);
}
static void gguf_misaligned(buf *b)
{
    g_one(b, 0, NULL, 2, 0, 4, 32, 12);
}
static void kv_align_0(buf *b)
{
    g_kv_u32(b, "general.alignment", 0);
}
static void kv_align_3(buf *b)
{
    g_kv_u32(b, "general.alignment", 3);
}
static void kv_align_huge(buf *b)
{
    g_kv_u32(b, "general.alignment", 1u << 31);
}
static void kv_align_64(buf *b)
{
    g_kv_u32(b, "general.alignment", 64);
}
static void kv_align_u64(buf *b)
{
    tu_gguf_str(b, "general.alignment");
    tu_buf_u32(b, TD_META_UINT64);
    tu_buf_u64(b, 32);
}
static void kv_align_string(buf *b)
{
    tu_gguf_str(b, "general.alignment");
    tu_buf_u32(b, TD_META_STRING);
    tu_gguf_str(b, "32");
}
static void gguf_align_0(buf *b)
{
    g_one(b, 1, kv_align_0, 2, 0, 0, 32, 8);
}
static void gguf_align_3(buf *b)
{
    g_one(b, 1, kv_align_3, 2, 0, 0, 32, 8);
}
static void gguf_align_huge(buf *b)
{
    g_one(b, 1, kv_align_huge, 2, 0, 0, 32, 8);
}
static void gguf_align_u64(buf *b)
{
    g_one(b, 1, kv_align_u64, 2, 0, 0, 32, 8);
}
static void gguf_align_string(buf *b)
{
    g_one(b, 1, kv_align_string, 2, 0, 0, 32, 8);
}
static void gguf_align_64_ok(buf *b)
{
    uint64_t ne_a[1] = {3}, ne_b[1] = {2};
    tu_gguf_header(b, 3, 2, 1);
    kv_align_64(b);
    tu_gguf_tensor(b, "a", 1, ne_a, 0, 0);
    tu_gguf_tensor(b, "b", 1, ne_b, 0, 64);
    tu_buf_pad(b, 64);
    b_ramp_f32(b, 3);
    tu_buf_zeros(b, 64 - 12);
    b_ramp_f32(b, 2);
}
static void gguf_align_64_misaligned(buf *b)
{
    /* Offset 32 is aligned to the default but not to the file's 64. */
    uint64_t ne_a[1] = {3}, ne_b[1] = {2};
    tu_gguf_header(b, 3, 2, 1);
    kv_align_64(b);
    tu_gguf_tensor(b, "a", 1, ne_a, 0, 0);
    tu_gguf_tensor(b, "b", 1, ne_b, 0, 32);
    tu_buf_pad(b, 64);
    b_ramp_f32(b, 3);
    tu_buf_zeros(b, 32 - 12);
    b_ramp_f32(b, 2);
}
static void gguf_overflow(buf *b)
{
    uint64_t ne[3] = {1ull << 32, 1ull << 32, 1ull << 32};
    tu_gguf_header(b, 3, 1, 0);
    tu_gguf_tensor(b, "t", 3, ne, 0, 0);
    tu_buf_pad(b, 32);
    tu_buf_zeros(b, 32);
}
static void gguf_overflow_bytes(buf *b)
{
    /* 2^62 elements fit in an i64, their bytes (x4) do not fit in a u64. */
    uint64_t ne[2] = {1ull << 31, 1ull << 31};
    tu_gguf_header(b, 3, 1, 0);
    tu_gguf_tensor(b, "t", 2, ne, 0, 0);
    tu_buf_pad(b, 32);
    tu_buf_zeros(b, 32);
}
static void gguf_ne_negative(buf *b)
{
    uint64_t ne[2] = {4, UINT64_MAX};
    tu_gguf_header(b, 3, 1, 0);
    tu_gguf_tensor(b, "t", 2, ne, 0, 0);
    tu_buf_pad(b, 32);
    tu_buf_zeros(b, 32);
}
static void gguf_block_partial(buf *b)
{
    /* q4_0 (32 elements per block) with ne0 = 33. */
    g_one(b, 0, NULL, 33, 2, 0, 32, 64);
}
static void gguf_dims_5(buf *b)
{
    uint64_t ne[5] = {1, 1, 1, 1, 2};
    tu_gguf_header(b, 3, 1, 0);
    tu_gguf_tensor(b, "t", 5, ne, 0, 0);
    tu_buf_pad(b, 32);
    b_ramp_f32(b, 2);
}
static void kv_dup(buf *b)
{
    g_kv_u32(b, "k", 1);
    g_kv_u32(b, "k", 2);
}
static void gguf_dup_kv(buf *b)
{
    g_one(b, 2, kv_dup, 2, 0, 0, 32, 8);
}
static void gguf_dup_tensor(buf *b)
{
    uint64_t ne[1] = {2};
    tu_gguf_header(b, 3, 2, 0);
    tu_gguf_tensor(b, "t", 1, ne, 0, 0);
    tu_gguf_tensor(b, "t", 1, ne, 0, 32);
    tu_buf_pad(b, 32);
    b_ramp_f32(b, 8);
    b_ramp_f32(b, 2);
}
static void kv_type_13(buf *b)
{
    tu_gguf_str(b, "v");
    tu_buf_u32(b, 13);
    tu_buf_u32(b, 0);
}
static void kv_elem_type_99(buf *b)
{
    tu_gguf_str(b, "v");
    tu_buf_u32(b, TD_META_ARRAY);
    tu_buf_u32(b, 99);
    tu_buf_u64(b, 1);
    tu_buf_u32(b, 0);
}
static void kv_bool_2(buf *b)
{
    tu_gguf_str(b, "v");
    tu_buf_u32(b, TD_META_BOOL);
    tu_buf_u8(b, 2);
}
static void gguf_kv_type_13(buf *b)
{
    g_one(b, 1, kv_type_13, 2, 0, 0, 32, 8);
}
static void gguf_kv_elem_99(buf *b)
{
    g_one(b, 1, kv_elem_type_99, 2, 0, 0, 32, 8);
}
static void gguf_kv_bool_2(buf *b)
{
    g_one(b, 1, kv_bool_2, 2, 0, 0, 32, 8);
}
static void gguf_type_999(buf *b)
{
    g_one(b, 0, NULL, 2, 999, 0, 32, 8);
}
static void gguf_type_removed(buf *b)
{
    g_one(b, 0, NULL, 32, 4, 0, 32, 32); /* Q4_2, removed from ggml */
}
/* Arrays of arrays, depth levels deep, innermost one u8 element. */
static void kv_nested(buf *b, int depth)
{
    tu_gguf_str(b, "nested");
    tu_buf_u32(b, TD_META_ARRAY);
    for (int i = 1; i < depth; i++) {
        tu_buf_u32(b, TD_META_ARRAY);
        tu_buf_u64(b, 1);
    }
    tu_buf_u32(b, TD_META_UINT8);
    tu_buf_u64(b, 1);
    tu_buf_u8(b, 7);
    g_kv_u32(b, "after", 42);
}
static void kv_nested_2(buf *b)
{
    kv_nested(b, 2);
}
static void kv_nested_8(buf *b)
{
    kv_nested(b, TD_META_MAX_DEPTH);
}
static void kv_nested_9(buf *b)
{
    kv_nested(b, TD_META_MAX_DEPTH + 1);
}
static void kv_nested_100000(buf *b)
{
    kv_nested(b, 100000);
}
static void gguf_nested_2_ok(buf *b)
{
    g_one(b, 2, kv_nested_2, 2, 0, 0, 32, 8);
}
static void gguf_nested_max_ok(buf *b)
{
    g_one(b, 2, kv_nested_8, 2, 0, 0, 32, 8);
}
static void gguf_nested_9(buf *b)
{
    g_one(b, 2, kv_nested_9, 2, 0, 0, 32, 8);
}
static void gguf_nested_deep(buf *b)
{
    g_one(b, 2, kv_nested_100000, 2, 0, 0, 32, 8);
}

/* ---------------------------------------------------------------------------------------------
 * The table
 */
#define ACCEPT   1 /* must load; the check function (if any) looks at the values */
#define ANY_FAIL 2 /* must fail with a clean code; which one is not pinned down */

typedef struct hcase {
    const char *cls; /* class of defect: counts, lengths, offsets, overlaps, ... */
    td_format fmt;
    const char *name; /* file name stem */
    void (*build)(buf *b);
    int expect;            /* ACCEPT, ANY_FAIL, or the exact negative TD_E* code */
    uint64_t max_inflated; /* td_load_options.max_inflated for this case (0: default) */
    int check;             /* for ACCEPT: which value check (see check_values) */
    const char *known;     /* a finding not fixed yet: reported, not failed (see the report) */
} hcase;

enum {
    CK_NONE,
    CK_RAMP12,
    CK_FIRST6,
    CK_NPZ2,
    CK_ST_OK,
    CK_GGUF_OK,
    CK_UNALIGNED_ST,
    CK_EMPTY,
    CK_NESTED
};

/* Field offsets: local header 14 crc, 18 csize, 22 usize, 26 name length; central record 20
 * csize, 24 usize, 28 name length, 30 extra length, 42 local header offset; end record 8 and 10
 * member counts, 16 directory offset, 20 comment length. */
typedef struct zcase {
    const char *cls; /* class of defect */
    const char *name;
    int expect;            /* ACCEPT or the exact negative TD_E* code */
    const char *msg;       /* for a failure: what the message must say (besides the file name) */
    uint64_t max_inflated; /* td_load_options.max_inflated (0: default) */
    int check;             /* for ACCEPT: which value check (see check_values) */
    zspec spec;            /* the archive */
} zcase;

static const zcase zip_cases[] = {
    /* The valid archives the defects below are carved from. */
    {"valid", "npz_ok_stored", ACCEPT, NULL, 0, CK_NPZ2, TWO(ZM("a.npy", 0), ZM("b.npy", 0))},
    {"valid", "npz_ok_deflated", ACCEPT, NULL, 0, CK_NPZ2, TWO(ZM("a.npy", 8), ZM("b.npy", 8))},

    {"counts", "npz_count_more", TD_EFORMAT, "end record claims 3 members", 0, 0,
     TWO(ZM("a.npy", 0), ZM("b.npy", 0), .patch = {EOCD16(8, 3), EOCD16(10, 3)})},
    {"counts", "npz_count_fewer", TD_EFORMAT, "bytes after the 1 members", 0, 0,
     TWO(ZM("a.npy", 0), ZM("b.npy", 0), .patch = {EOCD16(8, 1), EOCD16(10, 1)})},
    {"counts", "npz_count_ffff", TD_EFORMAT, "end record claims 65535 members", 0, 0,
     ONE(ZM("a.npy", 0), .patch = {EOCD16(8, 0xffff), EOCD16(10, 0xffff)})},

    {"lengths", "npz_name_len_past_cd", TD_EFORMAT, "runs past the directory's end", 0, 0,
     ONE(ZM("a.npy", 0), .patch = {CEN16(28, 0xfff0)})},
    {"lengths", "npz_extra_len_past_cd", TD_EFORMAT, "runs past the directory's end", 0, 0,
     ONE(ZM("a.npy", 0), .patch = {CEN16(30, 0x8000)})},
    {"lengths", "npz_comment_past_end", TD_EFORMAT, "no end of central directory", 0, 0,
     ONE(ZM("a.npy", 0), .patch = {EOCD16(20, 500)})},
    {"lengths", "npz_local_name_len", TD_EFORMAT, "runs into the central directory", 0, 0,
     ONE(ZM("a.npy", 0), .patch = {LOC16(26, 0xffff)})},
    {"lengths", "npz_csize_past_end", TD_EFORMAT, "run past the start of the central directory", 0,
     0, ONE(ZM("a.npy", 0), .patch = {CEN32(20, 0x7fffffff), CEN32(24, 0x7fffffff)})},

    {"offsets", "npz_local_off_past_end", TD_EFORMAT, "local header offset 1073741824 is past", 0,
     0, ONE(ZM("a.npy", 0), .patch = {CEN32(42, 0x40000000)})},
    {"offsets", "npz_cd_off_past_end", TD_EFORMAT, "runs past its end record", 0, 0,
     ONE(ZM("a.npy", 0), .patch = {EOCD32(16, 0x7ffffff0)})},
    {"offsets", "npz_cd_off_into_data", TD_EFORMAT, "signature", 0, 0,
     ONE(ZM("a.npy", 0), .patch = {{ZR_EOCD, 16, 4, 0, ZV_DATA0, 0}})},
    {"offsets", "npz_local_off_into_cd", TD_EFORMAT, "is past the start of the central directory",
     0, 0, ONE(ZM("a.npy", 0), .patch = {{ZR_CENTRAL0, 42, 4, 0, ZV_CD_START, 0}})},

    /* two directory entries, one local header: the overlapping-member bomb's shape */
    {"overlaps", "npz_overlap_same_local", TD_EFORMAT, "names another file", 0, 0,
     TWO(ZM("a.npy", 0), ZM("b.npy", 0, .lname = "a.npy", .same_local_as = 1))},
    /* member a's compressed size runs into member b's local header */
    {"overlaps", "npz_overlap_csize", TD_EFORMAT, "overlap", 0, 0,
     TWO(ZM("a.npy", 0), ZM("b.npy", 0),
         .patch = {{ZR_CENTRAL0, 20, 4, 0, ZV_SMALL, 40},
                   {ZR_CENTRAL0, 24, 4, 0, ZV_SMALL, 40},
                   {ZR_LOCAL0, 18, 4, 0, ZV_SMALL, 40},
                   {ZR_LOCAL0, 22, 4, 0, ZV_SMALL, 40}})},

    /* a stored member whose data sits at offset 30 + 7 + 64 = 101: not 4-byte aligned */
    {"alignment", "npz_unaligned_stored", ACCEPT, NULL, 0, CK_FIRST6, ONE(ZM("abc.npy", 0))},

    {"overflow", "npz_member_overflow", TD_ERANGE, "shape product overflows", 0, 0,
     ONE(ZM("a.npy", 0, .data = ZD_OVERFLOW))},
    {"overflow", "npz_usize_huge", TD_EFORMAT, "claims 4294967280 bytes", 0, 0,
     ONE(ZM("a.npy", 8, .usize_set = 0xfffffff0u))},

    {"duplicates", "npz_dup", TD_EDUP, "appears twice", 0, 0, TWO(ZM("a.npy", 0), ZM("a.npy", 8))},

    {"types", "npz_method_bzip2", TD_ENOTSUP, "method 12 (bzip2)", 0, 0, ONE(ZM("a.npy", 12))},
    {"types", "npz_method_99", TD_ENOTSUP, "method 99", 0, 0, ONE(ZM("a.npy", 99))},
    {"types", "npz_encrypted", TD_ENOTSUP, "encrypted", 0, 0, ONE(ZM("a.npy", 0, .flags = 1))},
    {"types", "npz_not_npy", TD_EFORMAT, "readme.txt: is not an .npy member", 0, 0,
     TWO(ZM("a.npy", 0), ZM("readme.txt", 0))},
    {"types", "npz_object_member", TD_EDTYPE, "Python object", 0, 0,
     ONE(ZM("a.npy", 0, .data = ZD_OBJECT))},

    /* a member that is itself an npz, named .npy */
    {"nesting", "npz_nested_zip", TD_EFORMAT, "bad magic", 0, 0,
     ONE(ZM("inner.npy", 0, .data = ZD_NPZ))},

    /* a directory that claims 2000x the compressed size (~90 bytes): refused before inflating */
    {"zip bombs", "npz_ratio", TD_EFORMAT, "1032:1", 0, 0,
     ONE(ZM("a.npy", 8, .usize_set = 180000))},
    /* 16 MiB of zeros deflated (~1000:1, within deflate's limit): refused by max_inflated */
    {"zip bombs", "npz_bomb_real", TD_ELIMIT, "max_inflated", 1u << 20, 0,
     ONE(ZM("zeros.npy", 8, .data = ZD_BIG0))},
    {"zip bombs", "npz_bomb_real_allowed", ACCEPT, NULL, 0, CK_NONE,
     ONE(ZM("zeros.npy", 8, .data = ZD_BIG0))},
    /* eight members of 16 MiB each: 128 MiB declared in all, over a 64 MiB max_inflated */
    {"zip bombs", "npz_bomb_many", TD_ELIMIT, "max_inflated", 64u << 20, 0,
     ONE(ZM("a.npy", 8, .data = ZD_BIG0), .copies = 8)},
    /* the stream inflates to more than declared: never written past the buffer */
    {"zip bombs", "npz_inflates_more", TD_ETRUNC, "need 152", 0, 0,
     ONE(ZM("a.npy", 8, .usize_adj = -8))},
    {"zip bombs", "npz_inflates_less", TD_EFORMAT, "8 more than its npy header and data", 0, 0,
     ONE(ZM("a.npy", 8, .usize_adj = 8))},
    {"zip bombs", "npz_bad_crc", TD_ECHECKSUM, "CRC-32", 0, 0, ONE(ZM("a.npy", 8, .bad_crc = 1))},
    /* the last bytes of the stream: the npy header inflates fine, the data does not */
    {"zip bombs", "npz_corrupt_stream", TD_EFORMAT, "corrupt deflate stream", 0, 0,
     ONE(ZM("a.npy", 8), .patch = {{ZR_CD_START, -10, 8, 1, ZV_LIT, 0xa5}})},

    {"zip names", "npz_name_dotdot", TD_EFORMAT, "'..' component", 0, 0, ONE(ZM("../evil.npy", 0))},
    {"zip names", "npz_name_dotdot_mid", TD_EFORMAT, "'..' component", 0, 0,
     ONE(ZM("a/../../evil.npy", 0))},
    {"zip names", "npz_name_abs", TD_EFORMAT, "absolute path", 0, 0, ONE(ZM("/etc/evil.npy", 0))},
    {"zip names", "npz_name_backslash", TD_EFORMAT, "backslash", 0, 0, ONE(ZM("..\\evil.npy", 0))},
    {"zip names", "npz_name_nul", TD_EFORMAT, "NUL byte", 0, 0, ONE(ZM("a\0b.npy", 0))},
    {"zip names", "npz_name_empty", TD_EFORMAT, "empty name", 0, 0, ONE(ZM("", 0))},
    {"zip names", "npz_name_only_ext", TD_EFORMAT, "is not an .npy member", 0, 0,
     ONE(ZM(".npy", 0))},
    {"zip names", "npz_local_name_differs", TD_EFORMAT, "names another file", 0, 0,
     ONE(ZM("a.npy", 0, .lname = "../a.npy"))},
    {"zip names", "npz_name_dir_ok", ACCEPT, NULL, 0, CK_FIRST6, ONE(ZM("dir/sub/a.npy", 0))},
    {"zip names", "npz_name_dots_ok", ACCEPT, NULL, 0, CK_FIRST6, ONE(ZM("a..b.npy", 0))},
};
#define NZIPCASES (sizeof zip_cases / sizeof zip_cases[0])

static const hcase cases[] = {
    /* The valid files every defect below is carved from. */
    {"valid", TD_FORMAT_NPY, "npy_ok", npy_ok, ACCEPT, 0, CK_RAMP12, NULL},
    {"valid", TD_FORMAT_SAFETENSORS, "st_ok", st_ok, ACCEPT, 0, CK_ST_OK, NULL},
    {"valid", TD_FORMAT_GGUF, "gguf_ok", gguf_ok, ACCEPT, 0, CK_GGUF_OK, NULL},

    {"counts", TD_FORMAT_NPY, "npy_dims_33", npy_dims_33, TD_ELIMIT, 0, 0, NULL},
    {"counts", TD_FORMAT_NPY, "npy_dims_32", npy_dims_32, ACCEPT, 0, CK_NONE, NULL},
    {"counts", TD_FORMAT_SAFETENSORS, "st_dims_33", st_dims_33, TD_ELIMIT, 0, 0, NULL},
    {"counts", TD_FORMAT_SAFETENSORS, "st_empty_ok", st_empty_ok, ACCEPT, 0, CK_EMPTY, NULL},
    {"counts", TD_FORMAT_GGUF, "gguf_n_tensors_huge", gguf_n_tensors_huge, TD_EFORMAT, 0, 0, NULL},
    {"counts", TD_FORMAT_GGUF, "gguf_n_kv_max", gguf_n_kv_max, TD_EFORMAT, 0, 0, NULL},
    {"counts", TD_FORMAT_GGUF, "gguf_array_count_past_end", gguf_array_count_past_end, TD_ETRUNC, 0,
     0, NULL},
    {"counts", TD_FORMAT_GGUF, "gguf_dims_5", gguf_dims_5, TD_EFORMAT, 0, 0, NULL},

    {"lengths", TD_FORMAT_NPY, "npy_hlen_past_end", npy_hlen_past_end, TD_ETRUNC, 0, 0, NULL},
    {"lengths", TD_FORMAT_NPY, "npy_v2_hlen_huge", npy_v2_hlen_huge, TD_ELIMIT, 0, 0, NULL},
    {"lengths", TD_FORMAT_NPY, "npy_hlen_over_limit", npy_hlen_over_limit, TD_ELIMIT, 0, 0, NULL},
    {"lengths", TD_FORMAT_NPY, "npy_data_short", npy_data_short, TD_ETRUNC, 0, 0, NULL},
    {"lengths", TD_FORMAT_NPY, "npy_data_long", npy_data_long, ACCEPT, 0, CK_RAMP12, NULL},
    {"lengths", TD_FORMAT_SAFETENSORS, "st_hlen_past_end", st_hlen_past_end, TD_ETRUNC, 0, 0, NULL},
    {"lengths", TD_FORMAT_SAFETENSORS, "st_hlen_huge", st_hlen_huge, TD_ELIMIT, 0, 0, NULL},
    {"lengths", TD_FORMAT_SAFETENSORS, "st_hlen_over_cap", st_hlen_over_cap, TD_ELIMIT, 0, 0, NULL},
    {"lengths", TD_FORMAT_SAFETENSORS, "st_hlen_zero", st_hlen_zero, TD_EFORMAT, 0, 0, NULL},
    {"lengths", TD_FORMAT_SAFETENSORS, "st_not_object", st_not_object, TD_EFORMAT, 0, 0, NULL},
    {"lengths", TD_FORMAT_SAFETENSORS, "st_trailing_data", st_trailing_data, TD_EFORMAT, 0, 0,
     NULL},
    {"lengths", TD_FORMAT_GGUF, "gguf_key_len_huge", gguf_key_len_huge, TD_ETRUNC, 0, 0, NULL},
    {"lengths", TD_FORMAT_GGUF, "gguf_str_len_max", gguf_str_len_max, TD_ETRUNC, 0, 0, NULL},
    {"lengths", TD_FORMAT_GGUF, "gguf_name_len_past_end", gguf_name_len_past_end, TD_EFORMAT, 0, 0,
     NULL},
    {"lengths", TD_FORMAT_GGUF, "gguf_data_short", gguf_data_short, TD_ETRUNC, 0, 0, NULL},

    {"offsets", TD_FORMAT_SAFETENSORS, "st_end_past_buffer", st_end_past_buffer, TD_ETRUNC, 0, 0,
     NULL},
    {"offsets", TD_FORMAT_SAFETENSORS, "st_begin_after_end", st_begin_after_end, TD_EFORMAT, 0, 0,
     NULL},
    {"offsets", TD_FORMAT_SAFETENSORS, "st_offsets_huge", st_offsets_huge, TD_EFORMAT, 0, 0, NULL},
    {"offsets", TD_FORMAT_SAFETENSORS, "st_offset_negative", st_offset_negative, TD_EFORMAT, 0, 0,
     NULL},
    {"offsets", TD_FORMAT_SAFETENSORS, "st_gap", st_gap, TD_EFORMAT, 0, 0, NULL},
    {"offsets", TD_FORMAT_GGUF, "gguf_off_past_end", gguf_off_past_end, TD_ETRUNC, 0, 0, NULL},
    {"offsets", TD_FORMAT_GGUF, "gguf_off_huge", gguf_off_huge, TD_ETRUNC, 0, 0, NULL},

    {"overlaps", TD_FORMAT_SAFETENSORS, "st_overlap", st_overlap, TD_EFORMAT, 0, 0, NULL},
    {"overlaps", TD_FORMAT_SAFETENSORS, "st_same_range", st_same_range, TD_EFORMAT, 0, 0, NULL},
    {"overlaps", TD_FORMAT_GGUF, "gguf_overlap", gguf_overlap, TD_EFORMAT, 0, 0, NULL},
    {"overlaps", TD_FORMAT_GGUF, "gguf_overlap_partial", gguf_overlap_partial, TD_EFORMAT, 0, 0,
     NULL},

    {"alignment", TD_FORMAT_NPY, "npy_align_16", npy_align_16, ACCEPT, 0, CK_RAMP12, NULL},
    {"alignment", TD_FORMAT_NPY, "npy_align_odd", npy_align_odd, ACCEPT, 0, CK_RAMP12, NULL},
    {"alignment", TD_FORMAT_SAFETENSORS, "st_unaligned_ok", st_unaligned_ok, ACCEPT, 0,
     CK_UNALIGNED_ST, NULL},
    {"alignment", TD_FORMAT_SAFETENSORS, "st_unaligned_header_ok", st_unaligned_header_ok, ACCEPT,
     0, CK_NONE, NULL},
    {"alignment", TD_FORMAT_GGUF, "gguf_misaligned", gguf_misaligned, TD_EFORMAT, 0, 0, NULL},
    {"alignment", TD_FORMAT_GGUF, "gguf_align_0", gguf_align_0, TD_EFORMAT, 0, 0, NULL},
    {"alignment", TD_FORMAT_GGUF, "gguf_align_3", gguf_align_3, TD_EFORMAT, 0, 0, NULL},
    {"alignment", TD_FORMAT_GGUF, "gguf_align_huge", gguf_align_huge, TD_ELIMIT, 0, 0, NULL},
    {"alignment", TD_FORMAT_GGUF, "gguf_align_u64", gguf_align_u64, TD_EFORMAT, 0, 0, NULL},
    {"alignment", TD_FORMAT_GGUF, "gguf_align_string", gguf_align_string, TD_EFORMAT, 0, 0, NULL},
    {"alignment", TD_FORMAT_GGUF, "gguf_align_64_ok", gguf_align_64_ok, ACCEPT, 0, CK_NONE, NULL},
    {"alignment", TD_FORMAT_GGUF, "gguf_align_64_misaligned", gguf_align_64_misaligned, TD_EFORMAT,
     0, 0, NULL},

    {"overflow", TD_FORMAT_NPY, "npy_overflow", npy_overflow, TD_ERANGE, 0, 0, NULL},
    {"overflow", TD_FORMAT_NPY, "npy_overflow_2", npy_overflow_2, TD_ERANGE, 0, 0, NULL},
    {"overflow", TD_FORMAT_NPY, "npy_negative", npy_negative, TD_ERANGE, 0, 0, NULL},
    {"overflow", TD_FORMAT_SAFETENSORS, "st_overflow", st_overflow, TD_ERANGE, 0, 0, NULL},
    {"overflow", TD_FORMAT_SAFETENSORS, "st_overflow_2", st_overflow_2, TD_ERANGE, 0, 0, NULL},
    {"overflow", TD_FORMAT_SAFETENSORS, "st_shape_negative", st_shape_negative, TD_EFORMAT, 0, 0,
     NULL},
    {"overflow", TD_FORMAT_SAFETENSORS, "st_shape_float", st_shape_float, TD_EFORMAT, 0, 0, NULL},
    {"overflow", TD_FORMAT_GGUF, "gguf_overflow", gguf_overflow, TD_ERANGE, 0, 0, NULL},
    {"overflow", TD_FORMAT_GGUF, "gguf_overflow_bytes", gguf_overflow_bytes, TD_ERANGE, 0, 0, NULL},
    {"overflow", TD_FORMAT_GGUF, "gguf_ne_negative", gguf_ne_negative, TD_EFORMAT, 0, 0, NULL},
    {"overflow", TD_FORMAT_GGUF, "gguf_block_partial", gguf_block_partial, TD_EFORMAT, 0, 0, NULL},
    {"overflow", TD_FORMAT_GGUF, "gguf_array_count_overflow", gguf_array_count_overflow, TD_ETRUNC,
     0, 0, NULL},

    {"duplicates", TD_FORMAT_NPY, "npy_dup_key", npy_dup_key, TD_EFORMAT, 0, 0, NULL},
    {"duplicates", TD_FORMAT_SAFETENSORS, "st_dup", st_dup, TD_EDUP, 0, 0, NULL},
    {"duplicates", TD_FORMAT_SAFETENSORS, "st_dup_metadata", st_dup_metadata, TD_EDUP, 0, 0, NULL},
    {"duplicates", TD_FORMAT_SAFETENSORS, "st_dup_meta_key", st_dup_meta_key, TD_EDUP, 0, 0, NULL},
    {"duplicates", TD_FORMAT_GGUF, "gguf_dup_kv", gguf_dup_kv, TD_EDUP, 0, 0, NULL},
    {"duplicates", TD_FORMAT_GGUF, "gguf_dup_tensor", gguf_dup_tensor, TD_EDUP, 0, 0, NULL},

    {"types", TD_FORMAT_NPY, "npy_object", npy_object, TD_EDTYPE, 0, 0, NULL},
    {"types", TD_FORMAT_NPY, "npy_unicode", npy_unicode, TD_EDTYPE, 0, 0, NULL},
    {"types", TD_FORMAT_NPY, "npy_f3", npy_f3, TD_EDTYPE, 0, 0, NULL},
    {"types", TD_FORMAT_NPY, "npy_datetime", npy_datetime, TD_EDTYPE, 0, 0, NULL},
    {"types", TD_FORMAT_SAFETENSORS, "st_dtype_f128", st_dtype_f128, TD_EDTYPE, 0, 0, NULL},
    {"types", TD_FORMAT_SAFETENSORS, "st_dtype_lower", st_dtype_lower, TD_EDTYPE, 0, 0, NULL},
    {"types", TD_FORMAT_SAFETENSORS, "st_dtype_ggml", st_dtype_ggml, TD_EDTYPE, 0, 0, NULL},
    {"types", TD_FORMAT_SAFETENSORS, "st_dtype_number", st_dtype_number, TD_EFORMAT, 0, 0, NULL},
    {"types", TD_FORMAT_SAFETENSORS, "st_unknown_field", st_unknown_field, TD_EFORMAT, 0, 0, NULL},
    {"types", TD_FORMAT_SAFETENSORS, "st_meta_number", st_meta_number, TD_EFORMAT, 0, 0, NULL},
    {"types", TD_FORMAT_GGUF, "gguf_kv_type_13", gguf_kv_type_13, TD_EFORMAT, 0, 0, NULL},
    {"types", TD_FORMAT_GGUF, "gguf_kv_elem_99", gguf_kv_elem_99, TD_EFORMAT, 0, 0, NULL},
    {"types", TD_FORMAT_GGUF, "gguf_kv_bool_2", gguf_kv_bool_2, TD_EFORMAT, 0, 0, NULL},
    {"types", TD_FORMAT_GGUF, "gguf_type_999", gguf_type_999, TD_EDTYPE, 0, 0, NULL},
    {"types", TD_FORMAT_GGUF, "gguf_type_removed", gguf_type_removed, TD_EDTYPE, 0, 0, NULL},

    {"nesting", TD_FORMAT_NPY, "npy_nested_shape", npy_nested_shape, TD_EFORMAT, 0, 0, NULL},
    {"nesting", TD_FORMAT_NPY, "npy_structured", npy_structured, TD_EDTYPE, 0, 0, NULL},
    {"nesting", TD_FORMAT_NPY, "npy_deep_parens", npy_deep_parens, TD_EFORMAT, 0, 0, NULL},
    {"nesting", TD_FORMAT_SAFETENSORS, "st_meta_object", st_meta_object, TD_EFORMAT, 0, 0, NULL},
    {"nesting", TD_FORMAT_SAFETENSORS, "st_shape_nested", st_shape_nested, TD_EFORMAT, 0, 0, NULL},
    {"nesting", TD_FORMAT_SAFETENSORS, "st_deep_json", st_deep_json, TD_EFORMAT, 0, 0, NULL},
    {"nesting", TD_FORMAT_GGUF, "gguf_nested_2_ok", gguf_nested_2_ok, ACCEPT, 0, CK_NESTED, NULL},
    {"nesting", TD_FORMAT_GGUF, "gguf_nested_max_ok", gguf_nested_max_ok, ACCEPT, 0, CK_NESTED,
     NULL},
    {"nesting", TD_FORMAT_GGUF, "gguf_nested_9", gguf_nested_9, TD_ELIMIT, 0, 0, NULL},
    {"nesting", TD_FORMAT_GGUF, "gguf_nested_deep", gguf_nested_deep, TD_ELIMIT, 0, 0, NULL},

};
#define NCASES (sizeof cases / sizeof cases[0])
#define NALL   (NCASES + NZIPCASES)

/* Case i of both tables: the built ones, then the zip ones, whose message must have *msg (NULL:
 * not checked) and which zip_case_build builds from *zip (NULL: c->build builds it). */
static hcase case_at(size_t i, const char **msg, const zspec **zip)
{
    *msg = NULL;
    *zip = NULL;
    if (i < NCASES)
        return cases[i];
    const zcase *z = &zip_cases[i - NCASES];
    *msg = z->msg;
    *zip = &z->spec;
    return (hcase){z->cls,    TD_FORMAT_NPZ,   z->name,  NULL,
                   z->expect, z->max_inflated, z->check, NULL};
}

static void build_case(const hcase *c, const zspec *zip, buf *b)
{
    make_members();
    if (zip)
        zip_case_build(b, zip);
    else
        c->build(b);
}

/* ---------------------------------------------------------------------------------------------
 * Running a case
 */
static char dir[64], sock[128], logpath[160];
static pid_t daemon_pid = -1;

static const char *ext_of(td_format f)
{
    return td_format_name(f);
}

static int ramp_ok(const td_array *a, size_t n)
{
    if (!a || td_array_dtype(a) != TD_FLOAT32 || (size_t)td_array_size(a) != n)
        return 0;
    const uint8_t *p = td_array_data(a);
    for (size_t i = 0; i < n; i++) {
        float f;
        memcpy(&f, p + 4 * i, 4); /* the view may be unaligned */
        if (f != (float)i + 0.5f)
            return 0;
    }
    return 1;
}

static void check_values(const hcase *c, td_dict *d, td_meta *m)
{
    switch (c->check) {
    case CK_RAMP12:
        ck_assert_msg(ramp_ok(td_dict_at(d, 0, NULL), 12), "%s: values", c->name);
        break;
    case CK_FIRST6:
        ck_assert_msg(ramp_ok(td_dict_at(d, 0, NULL), 6), "%s: values", c->name);
        break;
    case CK_NPZ2:
        ck_assert_uint_eq(td_dict_size(d), 2);
        ck_assert(ramp_ok(td_dict_get(d, "a"), 6));
        ck_assert(ramp_ok(td_dict_get(d, "b"), 6));
        break;
    case CK_ST_OK: {
        ck_assert_uint_eq(td_dict_size(d), 2);
        ck_assert(ramp_ok(td_dict_get(d, "a"), 6));
        const td_array *b = td_dict_get(d, "b");
        ck_assert(b && td_array_size(b) == 2);
        const char *s;
        size_t len;
        ck_assert_int_eq(td_meta_get_string(m, "k", &s, &len), 0);
        ck_assert_str_eq(s, "v");
        break;
    }
    case CK_GGUF_OK:
        ck_assert_uint_eq(td_dict_size(d), 2);
        ck_assert(ramp_ok(td_dict_get(d, "a"), 6));
        ck_assert(ramp_ok(td_dict_get(d, "b"), 2));
        ck_assert_int_eq(td_array_shape(td_dict_get(d, "a"))[0], 2);
        break;
    case CK_UNALIGNED_ST:
        ck_assert(ramp_ok(td_dict_get(d, "a"), 2));
        ck_assert_uint_eq(((uintptr_t)td_array_data(td_dict_get(d, "a"))) % 4, 0);
        break;
    case CK_EMPTY:
        ck_assert_uint_eq(td_dict_size(d), 0);
        break;
    case CK_NESTED: {
        int64_t v;
        ck_assert_int_eq(td_meta_get_int(m, "after", &v), 0);
        ck_assert_int_eq(v, 42);
        const td_value *n = td_meta_get(m, "nested");
        ck_assert_ptr_nonnull(n);
        ck_assert_int_eq(td_value_type(n), TD_META_ARRAY);
        break;
    }
    default:
        break;
    }
}

/* Mismatches are collected, not fatal, so that one run lists every case that misbehaves. */
static int g_failures, g_known;

#define HFAIL(...)                                                                                 \
    do {                                                                                           \
        printf("hostile: FAIL: " __VA_ARGS__);                                                     \
        printf("\n");                                                                              \
        g_failures++;                                                                              \
    } while (0)

/* Loads path in the given mode and checks the outcome against c. Returns the code. */
static int load_and_check(const hcase *c, const char *msg, const char *path, td_load_mode mode,
                          const char *what)
{
    td_load_options opt = TD_LOAD_OPTIONS_INIT;
    opt.mode = mode;
    opt.socket_path = sock;
    opt.max_inflated = c->max_inflated;
    int has_meta = c->fmt == TD_FORMAT_SAFETENSORS || c->fmt == TD_FORMAT_GGUF;
    td_dict *d = (td_dict *)&d; /* poison: must come back NULL on failure */
    td_meta *m = (td_meta *)&m;
    td_error err = {0};
    int fds = tu_count_fds();
    int rc = td_load(path, &opt, &d, has_meta ? &m : NULL, &err);
    if (getenv("TD_TEST_VERBOSE"))
        printf("hostile: %-28s %-10s %-8s %-12s %s\n", c->name, c->cls, what,
               rc ? td_err_name(rc) : "loaded", rc ? err.message : "");
    int as_expected = rc == 0 ? c->expect == ACCEPT
                              : c->expect == ANY_FAIL || (c->expect != ACCEPT && rc == c->expect);
    if (!as_expected && c->known) {
        printf("hostile: KNOWN FINDING %s [%s] %s: %s (%s)\n", c->name, c->cls, what,
               rc ? td_err_name(rc) : "loaded", c->known);
        g_known++;
    } else if (!as_expected) {
        HFAIL("%s [%s] %s: %s, expected %s: %s", c->name, c->cls, what,
              rc ? td_err_name(rc) : "loaded",
              c->expect == ACCEPT     ? "success"
              : c->expect == ANY_FAIL ? "a failure"
                                      : td_err_name(c->expect),
              rc ? err.message : "");
    } else if (c->known) {
        printf("hostile: %s [%s] %s: the known finding is fixed; drop its note\n", c->name, c->cls,
               what);
    }
    if (rc == 0) {
        if (as_expected)
            check_values(c, d, has_meta ? m : NULL);
        /* Every byte of every array is readable. */
        for (size_t i = 0; i < td_dict_size(d); i++) {
            const td_array *a = td_dict_at(d, i, NULL);
            const volatile uint8_t *p = td_array_data(a);
            uint8_t x = 0;
            for (uint64_t k = 0; k < td_array_nbytes(a); k++)
                x ^= p[k];
            (void)x;
        }
        td_dict_free(d);
        if (has_meta)
            td_meta_free(m);
    } else {
        if (rc >= 0 || strcmp(td_err_name(rc), "TD_UNKNOWN") == 0)
            HFAIL("%s %s: code %d is not in the table", c->name, what, rc);
        if (rc == TD_ENOMEM || rc == TD_ESYS || rc == TD_EINVAL)
            HFAIL("%s [%s] %s: %s is not a file defect's code: %s", c->name, c->cls, what,
                  td_err_name(rc), err.message);
        if (err.code != rc)
            HFAIL("%s %s: err.code %d, returned %d", c->name, what, err.code, rc);
        const char *base = strrchr(path, '/') + 1;
        if (!strstr(err.message, base))
            HFAIL("%s %s: the message does not name the file: %s", c->name, what, err.message);
        if (as_expected && msg && !strstr(err.message, msg))
            HFAIL("%s %s: the message lacks '%s': %s", c->name, what, msg, err.message);
        if (strchr(err.message, '\n'))
            HFAIL("%s %s: multi-line message", c->name, what);
        if (d || (has_meta && m))
            HFAIL("%s %s: failed but returned a dict or meta", c->name, what);
    }
    int after = tu_count_fds();
    if (after != fds)
        HFAIL("%s %s: descriptors %d -> %d", c->name, what, fds, after);
    return rc;
}

static void case_path(const hcase *c, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s.%s", dir, c->name, ext_of(c->fmt));
}

static void write_case(const hcase *c, const zspec *zip, char *path, size_t cap)
{
    buf b = {0};
    build_case(c, zip, &b);
    case_path(c, path, cap);
    ck_assert_int_eq(tu_write_file(path, b.p, b.len), 0);
    free(b.p);
}

/* ---------------------------------------------------------------------------------------------
 * The daemon
 */
/* Aborts the test when the daemon does not come up. */
static void start_daemon(void)
{
    daemon_pid = tu_daemon_start(sock, logpath, "--log-level info");
}

static void stop_daemon(void)
{
    if (daemon_pid <= 0)
        return;
    int st = tu_daemon_stop(daemon_pid, SIGTERM);
    daemon_pid = -1;
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tensord exited badly (status 0x%x)", st);
}

static void daemon_alive(void)
{
    ck_assert_msg(waitpid(daemon_pid, NULL, WNOHANG) == 0, "tensord died; see %s", logpath);
    td_client *cl;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &cl, &err), &err);
    TU_OK(td_client_ping(cl, &err), &err);
    td_client_close(cl);
}

/* Evicts every cached entry and waits until the daemon serves no client but the one asking. */
static void evict_and_wait_idle(void)
{
    td_client *cl;
    td_error err = {0};
    TU_OK(td_client_connect(sock, &cl, &err), &err);
    TU_OK(td_client_evict(cl, NULL, NULL, NULL, &err), &err);
    for (int i = 0; i < 200; i++) {
        td_status *st;
        TU_OK(td_client_status(cl, &st, &err), &err);
        uint64_t clients = td_status_get(st, TD_STATUS_CLIENTS),
                 leases = td_status_get(st, TD_STATUS_LEASES);
        td_status_free(st);
        if (clients <= 1 && !leases)
            break;
        usleep(10000);
    }
    td_client_close(cl);
    usleep(50000); /* our own connection's close reaches the daemon */
}

static void setup(void)
{
    tu_tmpdir(dir);
    snprintf(sock, sizeof sock, "%s/tensord.sock", dir);
    snprintf(logpath, sizeof logpath, "%s/tensord.log", dir);
}

static void teardown(void)
{
    stop_daemon();
    tu_rmtree(dir);
}

/* ---------------------------------------------------------------------------------------------
 * Tests
 */

/* Every case of the table, embedded then through the daemon: the same verdict from both. */
START_TEST(test_hostile_table)
{
    start_daemon();
    int base_fds = 0;
    {
        /* The baseline after one load and an eviction: the first load makes descriptors the
         * daemon keeps for good (libuv's inotify descriptor for its file watches). */
        buf b = {0};
        npy_ok(&b);
        char path[256];
        snprintf(path, sizeof path, "%s/warm.npy", dir);
        ck_assert_int_eq(tu_write_file(path, b.p, b.len), 0);
        free(b.p);
        td_load_options opt = TD_LOAD_OPTIONS_INIT;
        opt.mode = TD_MODE_DAEMON;
        opt.socket_path = sock;
        td_dict *d;
        td_error err = {0};
        TU_OK(td_load(path, &opt, &d, NULL, &err), &err);
        td_dict_free(d);
        unlink(path);
        evict_and_wait_idle();
        base_fds = tu_count_pid_fds(daemon_pid);
    }
    int per_class_fail[16] = {0}, per_class_ok[16] = {0};
    const char *classes[16] = {0};
    size_t nclasses = 0;
    for (size_t i = 0; i < NALL; i++) {
        const char *msg;
        const zspec *zip;
        const hcase cc = case_at(i, &msg, &zip), *c = &cc;
        char path[256];
        write_case(c, zip, path, sizeof path);
        int rc = load_and_check(c, msg, path, TD_MODE_EMBEDDED, "embedded");
        int rd = load_and_check(c, msg, path, TD_MODE_DAEMON, "daemon");
        if (rd != rc)
            HFAIL("%s: embedded %s, daemon %s", c->name, td_err_name(rc), td_err_name(rd));
        unlink(path);
        size_t k = 0;
        while (k < nclasses && strcmp(classes[k], c->cls) != 0)
            k++;
        if (k == nclasses)
            classes[nclasses++] = c->cls;
        (rc ? per_class_fail : per_class_ok)[k]++;
    }
    for (size_t k = 0; k < nclasses; k++)
        printf("hostile: %-10s %2d refused, %2d accepted as valid\n", classes[k], per_class_fail[k],
               per_class_ok[k]);
    {
        daemon_alive();
        /* Evict what the accepted cases left cached, then the daemon is back to its baseline. */
        evict_and_wait_idle();
        int after = -1;
        for (int tries = 0; tries < 100 && after != base_fds; tries++) {
            usleep(20000);
            after = tu_count_pid_fds(daemon_pid);
        }
        ck_assert_int_eq(after, base_fds);
        printf("hostile: daemon descriptors %d before, %d after\n", base_fds, after);
    }
    printf("hostile: %zu cases, %d mismatches, %d known findings\n", (size_t)NALL, g_failures,
           g_known);
    ck_assert_msg(g_failures == 0, "%d mismatches (see the output)", g_failures);
}
END_TEST

/* Truncation at every structure: every strict prefix of each valid file is refused cleanly, in
 * both modes (the valid gguf ends with its last tensor's bytes, so no prefix of it is whole). */
START_TEST(test_truncation_everywhere)
{
    start_daemon();
    size_t loads = 0;
    for (size_t i = 0; i < NALL; i++) {
        const char *msg;
        const zspec *zip;
        const hcase cc = case_at(i, &msg, &zip), *c = &cc;
        if (strcmp(c->cls, "valid") != 0)
            continue;
        buf b = {0};
        build_case(c, zip, &b);
        char path[256];
        case_path(c, path, sizeof path);
        /* gguf_ok ends with tensor b's 8 bytes right at the end: no padding to spare. */
        for (size_t cut = 0; cut < b.len; cut++) {
            ck_assert_int_eq(tu_write_file(path, b.p, cut), 0);
            hcase t = *c;
            t.expect = ANY_FAIL;
            load_and_check(&t, NULL, path, TD_MODE_EMBEDDED, "embedded");
            loads++;
            /* The daemon: every prefix for the small files, a stride for long ones. */
            if (b.len < 1024 || cut % 7 == 0 || cut + 64 > b.len) {
                load_and_check(&t, NULL, path, TD_MODE_DAEMON, "daemon");
                loads++;
            }
        }
        ck_assert_int_eq(tu_write_file(path, b.p, b.len), 0);
        load_and_check(c, msg, path, TD_MODE_EMBEDDED, "embedded");
        unlink(path);
        free(b.p);
    }
    daemon_alive();
    printf("hostile: %zu truncated loads refused\n", loads);
    ck_assert_msg(g_failures == 0, "%d mismatches (see the output)", g_failures);
}
END_TEST

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    Suite *s = suite_create("hostile");
    TCase *tc = tcase_create("hostile");
    tcase_set_timeout(tc, 300);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_hostile_table);
    tcase_add_test(tc, test_truncation_everywhere);
    suite_add_tcase(s, tc);
    int rc = tu_run(s);
    free_members();
    return rc;
}
