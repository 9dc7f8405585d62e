/*
 * npy.c - NumPy .npy header parsing and writing (see npy.h).
 *
 * The header is a Python literal; we parse the subset numpy writes, in any key order, with any
 * whitespace, Python 2 long suffixes ("2L") and trailing commas, and nothing else: no eval.
 */
#include "npy.h"
#include "common.h"
#include "dtype.h"

#include <stdio.h>
#include <stdlib.h>

/* A cursor over the header text. */
typedef struct npy_lex {
    const char *p, *end;
    const char *what;
    td_error *err;
} npy_lex;

static void npy_ws(npy_lex *x)
{
    while (x->p < x->end && (*x->p == ' ' || *x->p == '\t' || *x->p == '\n' || *x->p == '\r'))
        x->p++;
}

static int npy_expect(npy_lex *x, char c, const char *where)
{
    npy_ws(x);
    if (x->p >= x->end || *x->p != c) {
        char got[16];
        if (x->p >= x->end)
            snprintf(got, sizeof got, "end of header");
        else
            snprintf(got, sizeof got, "'%c'", (unsigned char)*x->p >= 0x20 ? *x->p : '?');
        return td__err(x->err, TD_EFORMAT, "%s: npy header: expected '%c' %s, found %s", x->what, c,
                       where, got);
    }
    x->p++;
    return 0;
}

/* A quoted string, single or double quotes, no escapes (numpy never writes any in the keys and
 * descrs it accepts). Returns a pointer into the header and its length. */
static int npy_string(npy_lex *x, const char **s, size_t *n, const char *where)
{
    npy_ws(x);
    if (x->p >= x->end || (*x->p != '\'' && *x->p != '"'))
        return td__err(x->err, TD_EFORMAT, "%s: npy header: expected a quoted string %s", x->what,
                       where);
    char q = *x->p++;
    const char *b = x->p;
    while (x->p < x->end && *x->p != q) {
        if (*x->p == '\\')
            return td__err(x->err, TD_EFORMAT, "%s: npy header: escape in string %s", x->what,
                           where);
        x->p++;
    }
    if (x->p >= x->end)
        return td__err(x->err, TD_EFORMAT, "%s: npy header: unterminated string %s", x->what,
                       where);
    *s = b;
    *n = (size_t)(x->p - b);
    x->p++;
    return 0;
}

static int npy_word(npy_lex *x, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(x->end - x->p) >= n && memcmp(x->p, w, n) == 0) {
        x->p += n;
        return 1;
    }
    return 0;
}

/* True or False. */
static int npy_bool(npy_lex *x, int *v)
{
    npy_ws(x);
    if (npy_word(x, "True"))
        *v = 1;
    else if (npy_word(x, "False"))
        *v = 0;
    else
        return td__err(x->err, TD_EFORMAT, "%s: npy header: fortran_order is not True or False",
                       x->what);
    return 0;
}

/* A tuple of non-negative integers: "()", "(3,)", "(2L, 3L)", "(2, 3, )". */
static int npy_shape(npy_lex *x, td__npy_header *h)
{
    if (npy_expect(x, '(', "to open shape"))
        return x->err ? x->err->code : TD_EFORMAT;
    h->ndim = 0;
    for (;;) {
        npy_ws(x);
        if (x->p < x->end && *x->p == ')') {
            x->p++;
            break;
        }
        if (x->p < x->end && *x->p == '-')
            return td__err(x->err, TD_ERANGE, "%s: npy header: shape[%u] is negative", x->what,
                           h->ndim);
        if (x->p >= x->end || *x->p < '0' || *x->p > '9')
            return td__err(x->err, TD_EFORMAT, "%s: npy header: shape[%u] is not an integer",
                           x->what, h->ndim);
        if (h->ndim == TD_MAX_DIMS)
            return td__err(x->err, TD_ELIMIT, "%s: npy header: shape has more than %d dimensions",
                           x->what, TD_MAX_DIMS);
        uint64_t v = 0;
        while (x->p < x->end && *x->p >= '0' && *x->p <= '9') {
            if (!td__mul_u64(v, 10, &v) || !td__add_u64(v, (uint64_t)(*x->p - '0'), &v) ||
                v > (uint64_t)INT64_MAX)
                return td__err(x->err, TD_ERANGE, "%s: npy header: shape[%u] overflows", x->what,
                               h->ndim);
            x->p++;
        }
        if (x->p < x->end && (*x->p == 'L' || *x->p == 'l'))
            x->p++;
        h->shape[h->ndim++] = (int64_t)v;
        npy_ws(x);
        if (x->p < x->end && *x->p == ',') {
            x->p++;
            continue;
        }
        if (npy_expect(x, ')', "after a shape entry"))
            return x->err ? x->err->code : TD_EFORMAT;
        /* Python needs "(3,)" for a 1-tuple; "(3)" is the integer 3. */
        if (h->ndim == 1)
            return td__err(x->err, TD_EFORMAT, "%s: npy header: shape (N) is not a tuple", x->what);
        break;
    }
    return 0;
}

/* descr: [<>|=]? kind size. */
static int npy_descr(npy_lex *x, const char *s, size_t n, td__npy_header *h)
{
    char shown[40];
    td__quote(s, n, shown, sizeof shown);
    char order = '=';
    if (n && (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '=')) {
        order = s[0];
        s++;
        n--;
    }
    static const struct {
        const char *code;
        td_dtype t;
    } kinds[] = {
        {"b1", TD_BOOL},    {"?", TD_BOOL},       {"u1", TD_UINT8},       {"u2", TD_UINT16},
        {"u4", TD_UINT32},  {"u8", TD_UINT64},    {"i1", TD_INT8},        {"i2", TD_INT16},
        {"i4", TD_INT32},   {"i8", TD_INT64},     {"f2", TD_FLOAT16},     {"f4", TD_FLOAT32},
        {"f8", TD_FLOAT64}, {"c8", TD_COMPLEX64}, {"c16", TD_COMPLEX128}, {"V2", TD_BFLOAT16},
        {"B", TD_UINT8},    {"b", TD_INT8},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        if (strlen(kinds[i].code) == n && memcmp(kinds[i].code, s, n) == 0) {
            h->dtype = kinds[i].t;
            h->big_endian = order == '>' && td__dtype_info(h->dtype)->swap;
            return 0;
        }
    }
    const char *why = "is not a supported dtype";
    if (n && s[0] == 'O')
        why = "is a Python object dtype, refused (it would need unpickling)";
    else if (n && (s[0] == 'S' || s[0] == 'U' || s[0] == 'a'))
        why = "is a string dtype, not supported";
    else if (n && (s[0] == 'M' || s[0] == 'm'))
        why = "is a datetime dtype, not supported";
    else if (n && s[0] == 'V')
        why = "is a void dtype other than V2 (bfloat16), not supported";
    return td__err(x->err, TD_EDTYPE, "%s: npy header: descr '%s' %s", x->what, shown, why);
}

int td__npy_parse_header(const uint8_t *p, size_t len, const char *what, td__npy_header *h,
                         td_error *err)
{
    memset(h, 0, sizeof *h);
    if (len < NPY_MAGIC_LEN + 2 || memcmp(p, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        if (len < NPY_MAGIC_LEN && memcmp(p, NPY_MAGIC, len) == 0)
            return td__err(err, TD_ETRUNC, "%s: truncated in the npy magic (%zu bytes)", what, len);
        if (len >= NPY_MAGIC_LEN && memcmp(p, NPY_MAGIC, NPY_MAGIC_LEN) == 0)
            return td__err(err, TD_ETRUNC, "%s: truncated in the npy version", what);
        return td__err(err, TD_EFORMAT, "%s: not an npy file (bad magic)", what);
    }
    unsigned major = p[6], minor = p[7];
    size_t pre;
    uint64_t hlen;
    if (major == 1 && minor == 0) {
        pre = 10;
        if (len < pre)
            return td__err(err, TD_ETRUNC, "%s: truncated in the npy header length", what);
        hlen = td__le16(p + 8);
    } else if ((major == 2 || major == 3) && minor == 0) {
        pre = 12;
        if (len < pre)
            return td__err(err, TD_ETRUNC, "%s: truncated in the npy header length", what);
        hlen = td__le32(p + 8);
    } else {
        return td__err(err, TD_EVERSION, "%s: npy version %u.%u not supported (1.0, 2.0, 3.0)",
                       what, major, minor);
    }
    if (hlen > NPY_MAX_HEADER)
        return td__err(err, TD_ELIMIT, "%s: npy header length %llu exceeds %u", what,
                       (unsigned long long)hlen, NPY_MAX_HEADER);
    if (len - pre < hlen)
        return td__err(err, TD_ETRUNC, "%s: npy header of %llu bytes is truncated at %zu", what,
                       (unsigned long long)hlen, len - pre);

    npy_lex x = {(const char *)p + pre, (const char *)p + pre + hlen, what, err};
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
    const char *descr = NULL;
    size_t descr_len = 0;
    if (npy_expect(&x, '{', "at the start of the header"))
        return err ? err->code : TD_EFORMAT;
    for (;;) {
        npy_ws(&x);
        if (x.p < x.end && *x.p == '}') {
            x.p++;
            break;
        }
        const char *key;
        size_t klen;
        if (npy_string(&x, &key, &klen, "as a header key") ||
            npy_expect(&x, ':', "after a header key"))
            return err ? err->code : TD_EFORMAT;
        int rc = 0, *seen;
        if (klen == 5 && memcmp(key, "descr", 5) == 0) {
            seen = &have_descr;
            npy_ws(&x);
            if (x.p < x.end && *x.p == '[')
                return td__err(err, TD_EDTYPE,
                               "%s: npy header: structured dtypes are not "
                               "supported",
                               what);
            rc = npy_string(&x, &descr, &descr_len, "as descr");
        } else if (klen == 13 && memcmp(key, "fortran_order", 13) == 0) {
            seen = &have_fortran;
            rc = npy_bool(&x, &fortran);
        } else if (klen == 5 && memcmp(key, "shape", 5) == 0) {
            seen = &have_shape;
            rc = npy_shape(&x, h);
        } else {
            char q[64];
            return td__err(err, TD_EFORMAT, "%s: npy header: unexpected key '%s'", what,
                           td__quote(key, klen, q, sizeof q));
        }
        if (rc)
            return rc;
        if (*seen)
            return td__err(err, TD_EFORMAT, "%s: npy header: key '%.*s' given twice", what,
                           (int)klen, key);
        *seen = 1;
        npy_ws(&x);
        if (x.p < x.end && *x.p == ',') {
            x.p++;
            continue;
        }
        if (npy_expect(&x, '}', "after a header value"))
            return err ? err->code : TD_EFORMAT;
        break;
    }
    npy_ws(&x);
    if (x.p != x.end)
        return td__err(err, TD_EFORMAT, "%s: npy header: text after the dict", what);
    if (!have_descr || !have_fortran || !have_shape)
        return td__err(err, TD_EFORMAT, "%s: npy header: missing key '%s'", what,
                       !have_descr     ? "descr"
                       : !have_fortran ? "fortran_order"
                                       : "shape");
    if (npy_descr(&x, descr, descr_len, h))
        return err ? err->code : TD_EDTYPE;
    h->fortran = fortran && h->ndim >= 2;
    h->data_offset = pre + hlen;
    int rc = td__shape_nbytes(h->dtype, h->ndim, h->shape, &h->nbytes, err);
    if (rc)
        return td__err_prefix(err, rc, what);
    return 0;
}

size_t td__npy_header_need(const uint8_t *p, size_t got)
{
    if (got < 10 || memcmp(p, NPY_MAGIC, NPY_MAGIC_LEN) != 0 || p[7] != 0)
        return got;
    uint64_t need;
    if (p[6] == 1)
        need = 10u + td__le16(p + 8);
    else if ((p[6] == 2 || p[6] == 3) && got >= 12)
        need = 12u + (uint64_t)td__le32(p + 8);
    else
        return got;
    /* An overlong header is named by the parser from its length field alone. */
    return need > 12u + NPY_MAX_HEADER ? got : (size_t)need;
}

int td__npy_read_header(td__rd *r, uint64_t off, uint64_t avail, const char *what,
                        td__npy_header *h, td_error *err)
{
    const uint8_t *p;
    /* Enough for the headers numpy writes (64 to a few hundred bytes): usually one read. */
    size_t got = avail < 4096 ? (size_t)avail : 4096;
    int rc = td__rd_get(r, off, got, &p, err);
    if (rc)
        return rc;
    size_t need = td__npy_header_need(p, got);
    if (need > avail)
        need = (size_t)avail; /* the parser names the truncated header */
    if (need > got && (rc = td__rd_get(r, off, need, &p, err)))
        return rc;
    return td__npy_parse_header(p, need > got ? need : got, what, h, err);
}

int td__npy_index(td__rd *r, td__table *t, td_error *err)
{
    td__npy_header h;
    const char *fname = r->fname;
    int rc = td__npy_read_header(r, 0, r->len, fname, &h, err);
    if (rc)
        return rc;
    if (r->len - h.data_offset < h.nbytes)
        return td__err(err, TD_ETRUNC, "%s: data of %llu bytes is truncated at %llu", fname,
                       (unsigned long long)h.nbytes, (unsigned long long)(r->len - h.data_offset));
    td__entry *e = td__table_add(t, NULL, 0, err);
    if (!e)
        return err ? err->code : TD_ENOMEM;
    e->dtype = h.dtype;
    e->nbytes = h.nbytes;
    e->layout = (h.big_endian ? TD__LAYOUT_SWAP : 0) | (h.fortran ? TD__LAYOUT_FORTRAN : 0);
    if (e->layout) {
        e->src.offset = h.data_offset;
        e->src.nbytes = h.nbytes;
    } else {
        e->offset = h.data_offset;
    }
    return td__entry_set_shape(e, h.ndim, h.shape, err);
}

int td__npy_build_header(td_dtype dtype, int ndim, const int64_t *shape, uint8_t *out, size_t cap,
                         size_t *out_len, const char *what, td_error *err)
{
    char order;
    const char *descr = td__dtype_npy_descr(dtype, &order);
    if (!descr)
        return td__err(err, TD_EDTYPE, "%s: npy cannot hold dtype %s", what,
                       td_dtype_name(dtype) ? td_dtype_name(dtype) : "(invalid)");
    if (ndim < 0 || ndim > TD_MAX_DIMS)
        return td__err(err, TD_EINVAL, "%s: %d dimensions", what, ndim);
    char dict[NPY_HEADER_CAP];
    int n = snprintf(dict, sizeof dict, "{'descr': '%c%s', 'fortran_order': False, 'shape': (",
                     order, descr);
    for (int i = 0; i < ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%lld", i ? ", " : "",
                      (long long)shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", ndim == 1 ? "," : "");
    /* version 1.0: 10 bytes before the dict; the dict, padding and '\n' fill to 64. */
    size_t pre = 10, body = (size_t)n + 1;
    size_t total = (pre + body + 63) / 64 * 64;
    if (total - pre > 65535) {
        pre = 12;
        total = (pre + body + 63) / 64 * 64;
    }
    if (total > cap)
        return td__err(err, TD_ELIMIT, "%s: npy header of %zu bytes too long", what, total);
    memcpy(out, NPY_MAGIC, NPY_MAGIC_LEN);
    out[6] = pre == 10 ? 1 : 2;
    out[7] = 0;
    if (pre == 10)
        td__put16(out + 8, (uint16_t)(total - pre));
    else
        td__put32(out + 8, (uint32_t)(total - pre));
    memcpy(out + pre, dict, (size_t)n);
    memset(out + pre + (size_t)n, ' ', total - pre - (size_t)n - 1);
    out[total - 1] = '\n';
    *out_len = total;
    return 0;
}

int td__npy_write(td__writer *w, const td__item *item, const char *fname, td_error *err)
{
    uint8_t hdr[NPY_HEADER_CAP];
    size_t hlen;
    int rc = td__npy_build_header(item->dtype, item->ndim, item->shape, hdr, sizeof hdr, &hlen,
                                  fname, err);
    if (rc)
        return rc;
    td__writer_write(w, hdr, hlen);
    return td__writer_write(w, item->data, (size_t)item->nbytes);
}
