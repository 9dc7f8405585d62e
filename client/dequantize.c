/*
 * dequantize.c - the array-level dequantizers: td_array_dequantize and td_array_to_mlx, on top
 * of quant/ggml_quants.c.
 */
#include "client.h"
#include "common.h"
#include "ggml_quants.h"

#include <stdlib.h>

static void gq_free_buffer(void *ctx, void *data)
{
    (void)ctx;
    free(data);
}

int td_array_dequantize(const td_array *a, td_dtype out, unsigned threads, td_array **result,
                        td_error *err)
{
    if (!a || !result)
        return td__err(err, TD_EINVAL, "dequantize: array and result must not be NULL");
    *result = NULL;
    td_dtype type = td_array_dtype(a);
    int ndim = td_array_ndim(a);
    const int64_t *shape = td_array_shape(a);
    uint64_t nelems = (uint64_t)td_array_size(a);
    uint64_t nbytes;
    int rc = td__gq_output_nbytes(type, nelems, out, &nbytes, "dequantize", err);
    if (rc)
        return rc;
    if (nbytes > SIZE_MAX - 64)
        return td__err(err, TD_ERANGE, "dequantize: %llu bytes do not fit in memory",
                       (unsigned long long)nbytes);
    size_t cap = ((size_t)nbytes + 63) / 64 * 64;
    void *buf = aligned_alloc(64, cap ? cap : 64);
    if (!buf)
        return td__err(err, TD_ENOMEM, "dequantize: out of memory for %llu bytes",
                       (unsigned long long)nbytes);
    td__gq_options gq = {.nthreads = td__gq_threads(nelems, threads)};
    rc = td__gq_dequantize(type, td_array_data(a), td_array_nbytes(a), nelems,
                           ndim ? (uint64_t)shape[ndim - 1] : 0, out, buf, nbytes, &gq,
                           "dequantize", err);
    if (rc == 0)
        rc = td_array_wrap(out, ndim, shape, buf, gq_free_buffer, NULL, result, err);
    if (rc)
        free(buf);
    return rc;
}

int td_dtype_dequantizable(td_dtype t)
{
    return td_dtype_is_block(t) && td__gq_supported(t);
}

int td_array_to_mlx(const td_array *a, td_array **weights, td_array **scales, td_array **biases,
                    td_error *err)
{
    if (!a || !weights || !scales || !biases)
        return td__err(err, TD_EINVAL, "mlx pack: arguments must not be NULL");
    *weights = *scales = *biases = NULL;
    td_dtype type = td_array_dtype(a);
    int ndim = td_array_ndim(a);
    int64_t wshape[TD_MAX_DIMS], sshape[TD_MAX_DIMS];
    int rc = td__gq_mlx_shapes(type, ndim, td_array_shape(a), wshape, sshape, "mlx pack", err);
    if (rc)
        return rc;
    td_array *w = NULL, *s = NULL, *b = NULL;
    rc = td_array_new(TD_UINT32, ndim, wshape, NULL, &w, err);
    if (!rc)
        rc = td_array_new(TD_FLOAT16, ndim, sshape, NULL, &s, err);
    if (!rc)
        rc = td_array_new(TD_FLOAT16, ndim, sshape, NULL, &b, err);
    if (!rc)
        rc = td__gq_mlx_pack(type, td_array_data(a), td_array_nbytes(a), (uint64_t)td_array_size(s),
                             td_array_data_mut(w), td_array_data_mut(s), td_array_data_mut(b),
                             "mlx pack", err);
    if (rc) {
        td_array_release(w);
        td_array_release(s);
        td_array_release(b);
        return rc;
    }
    *weights = w;
    *scales = s;
    *biases = b;
    return 0;
}
