/*
 * decode.c - td__decode_entry (see index.h): turning stored bytes into C-order little-endian
 * data: inflate (npz), byte swap, Fortran to C order, copies of misaligned bytes into aligned
 * memory, and dequantization, which it hands to quant/dequant.c. Used by the embedded loader
 * and, through the same table, by the daemon.
 */
#include "common.h"
#include "dtype.h"
#include "npz.h"
#include "table.h"
#include "index.h"
#include "dequant.h"

#include <stdlib.h>

/* Reverses each unit-byte group of n bytes in place. */
static void td__swap_inplace(uint8_t *p, uint64_t n, unsigned unit)
{
    switch (unit) {
    case 2:
        for (uint64_t i = 0; i + 2 <= n; i += 2) {
            uint16_t v;
            memcpy(&v, p + i, 2);
            v = __builtin_bswap16(v);
            memcpy(p + i, &v, 2);
        }
        break;
    case 4:
        for (uint64_t i = 0; i + 4 <= n; i += 4) {
            uint32_t v;
            memcpy(&v, p + i, 4);
            v = __builtin_bswap32(v);
            memcpy(p + i, &v, 4);
        }
        break;
    case 8:
        for (uint64_t i = 0; i + 8 <= n; i += 8) {
            uint64_t v;
            memcpy(&v, p + i, 8);
            v = __builtin_bswap64(v);
            memcpy(p + i, &v, 8);
        }
        break;
    default:
        break;
    }
}

/* Copies a column-major array of shape[ndim] items of size isz from src to dst in row-major
 * order. Walks the output in order with an odometer; the source offset moves by precomputed
 * strides, so each element costs a few adds. */
static void td__fortran_to_c(uint8_t *dst, const uint8_t *src, uint32_t ndim, const int64_t *shape,
                             size_t isz)
{
    uint64_t stride[TD_MAX_DIMS], idx[TD_MAX_DIMS] = {0}, total = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        stride[d] = total * isz; /* Fortran: the first axis varies fastest */
        total *= (uint64_t)shape[d];
    }
    if (!total)
        return;
    uint32_t last = ndim - 1;
    uint64_t n_inner = (uint64_t)shape[last], s_inner = stride[last];
    uint64_t off = 0;
    for (uint64_t done = 0; done < total; done += n_inner) {
        const uint8_t *s = src + off;
        switch (isz) {
        case 1:
            for (uint64_t i = 0; i < n_inner; i++)
                dst[i] = s[i * s_inner];
            break;
        case 2:
            for (uint64_t i = 0; i < n_inner; i++)
                memcpy(dst + 2 * i, s + i * s_inner, 2);
            break;
        case 4:
            for (uint64_t i = 0; i < n_inner; i++)
                memcpy(dst + 4 * i, s + i * s_inner, 4);
            break;
        case 8:
            for (uint64_t i = 0; i < n_inner; i++)
                memcpy(dst + 8 * i, s + i * s_inner, 8);
            break;
        default:
            for (uint64_t i = 0; i < n_inner; i++)
                memcpy(dst + isz * i, s + i * s_inner, isz);
            break;
        }
        dst += n_inner * isz;
        /* Advance the odometer over the outer axes. */
        for (int d = (int)last - 1; d >= 0; d--) {
            off += stride[d];
            if (++idx[d] < (uint64_t)shape[d])
                break;
            off -= stride[d] * (uint64_t)shape[d];
            idx[d] = 0;
        }
    }
}

uint64_t td__decode_scratch(const td__entry *e)
{
    if (!(e->layout & TD__LAYOUT_DEFLATE))
        return 0; /* byte swaps, Fortran order from the file and dequantization write dst only */
    uint64_t n = td__npz_inflate_scratch(e);
    return e->layout & TD__LAYOUT_FORTRAN ? n + e->nbytes : n;
}

int td__decode_entry(const td__entry *e, const uint8_t *file, size_t file_len, void *dst,
                     unsigned threads, const char *fname, td_error *err)
{
    if (e->layout & (TD__LAYOUT_DEQUANT | TD__LAYOUT_MLX_W | TD__LAYOUT_MLX_S | TD__LAYOUT_MLX_B))
        return td__decode_dequant(e, file, file_len, dst, threads, fname, err);
    if (e->layout == TD__LAYOUT_ALIGN) {
        /* Any dtype, block types included: the bytes are right, only their address is not. */
        if (e->src.offset > file_len || file_len - e->src.offset < e->nbytes)
            return td__err(err, TD_ETRUNC, "%s: tensor '%s': data past the end of the file", fname,
                           e->name ? e->name : "");
        memcpy(dst, file + e->src.offset, e->nbytes);
        return 0;
    }
    const td__dtype_desc *d = td__dtype_info(e->dtype);
    if (!d || d->block_elems != 1)
        return td__err(err, TD_EINVAL, "%s: tensor '%s': cannot decode dtype %d", fname,
                       e->name ? e->name : "", (int)e->dtype);
    const uint8_t *src;
    uint8_t *tmp = NULL;
    if (e->layout & TD__LAYOUT_DEFLATE) {
        /* Inflate straight into dst when nothing else must happen, else into a scratch copy. */
        uint8_t *out = dst;
        if (e->layout & TD__LAYOUT_FORTRAN) {
            tmp = malloc(e->nbytes ? e->nbytes : 1);
            if (!tmp)
                return td__err(err, TD_ENOMEM, "%s: tensor '%s': out of memory for %llu bytes",
                               fname, e->name ? e->name : "", (unsigned long long)e->nbytes);
            out = tmp;
        }
        int rc = td__npz_inflate_entry(e, file, file_len, out, fname, err);
        if (rc) {
            free(tmp);
            return rc;
        }
        src = out;
    } else {
        if (e->src.offset > file_len || file_len - e->src.offset < e->nbytes)
            return td__err(err, TD_ETRUNC, "%s: tensor '%s': data past the end of the file", fname,
                           e->name ? e->name : "");
        src = file + e->src.offset;
    }
    if (e->layout & TD__LAYOUT_FORTRAN)
        td__fortran_to_c(dst, src, e->ndim, e->shape, d->block_bytes);
    else if (src != dst)
        memcpy(dst, src, e->nbytes);
    if (e->layout & TD__LAYOUT_SWAP)
        td__swap_inplace(dst, e->nbytes, d->swap);
    free(tmp);
    return 0;
}
