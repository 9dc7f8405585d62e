/*
 * dlpack.c - DLPack capsules (Debian's libdlpack-dev: DLPack 0.6, unversioned), both ways.
 *
 * Export: a "dltensor" capsule whose DLManagedTensor holds its own td_array reference, released
 * by the tensor's deleter. The consumer (torch.from_dlpack) renames the capsule
 * "used_dltensor" and calls the deleter when its tensor dies, from whatever thread, with or
 * without the GIL: the deleter touches no Python object, and td_array_release is thread-safe.
 * A capsule that nobody consumed calls the deleter when it is collected.
 *
 * Import (save of a torch tensor): obj.__dlpack__(), the capsule renamed "used_dltensor" (it is
 * ours then), and the tensor's memory wrapped into a td_array whose release calls the
 * producer's deleter; or, for strided or empty tensors, copied into C order at once.
 */
#include "tdpy.h"

#include <stdlib.h>
#include <string.h>

typedef struct td__py_dl {
    DLManagedTensor mt;
    int64_t shape[TD_MAX_DIMS];
    int64_t strides[TD_MAX_DIMS]; /* in elements, as DLPack counts */
    td_array *arr;                /* one reference, this tensor's */
} td__py_dl;

static void td__py_dl_deleter(DLManagedTensor *mt)
{
    td__py_dl *d = mt->manager_ctx;
    td_array_release(d->arr);
    free(d);
}

/* A capsule collected before anyone consumed it still owns its tensor. */
static void td__py_dl_capsule_free(PyObject *cap)
{
    if (!PyCapsule_IsValid(cap, "dltensor"))
        return; /* consumed: the consumer calls the deleter */
    PyObject *exc = td__py_err_take();
    DLManagedTensor *mt = PyCapsule_GetPointer(cap, "dltensor");
    if (mt && mt->deleter)
        mt->deleter(mt);
    td__py_err_give(exc);
}

PyObject *td__py_dlpack_export(td_array *a)
{
    td__py_dl *d = calloc(1, sizeof *d);
    if (!d)
        return PyErr_NoMemory();
    td__py_layout l;
    td__py_layout_of(a, &l);
    int64_t stride = 1;
    for (int i = l.ndim - 1; i >= 0; i--) {
        d->shape[i] = l.shape[i];
        d->strides[i] = stride;
        stride *= l.shape[i];
    }
    d->arr = td_array_retain(a);
    DLTensor *t = &d->mt.dl_tensor;
    t->data = (void *)td_array_data(a);
    t->device.device_type = kDLCPU;
    t->device.device_id = 0;
    t->ndim = l.ndim;
    t->dtype.code = l.spell->dl_code;
    t->dtype.bits = l.spell->dl_bits;
    t->dtype.lanes = 1;
    t->shape = d->shape;
    t->strides = d->strides;
    t->byte_offset = 0;
    d->mt.manager_ctx = d;
    d->mt.deleter = td__py_dl_deleter;
    PyObject *cap = PyCapsule_New(&d->mt, "dltensor", td__py_dl_capsule_free);
    if (!cap)
        td__py_dl_deleter(&d->mt);
    return cap;
}

/* td_array_wrap's release: the producer's deleter frees what it lent us. */
static void td__py_dl_release(void *ctx, void *data)
{
    (void)data;
    DLManagedTensor *mt = ctx;
    if (mt->deleter)
        mt->deleter(mt);
}

int td__py_dlpack_import(PyObject *obj, const char *what, td_array **out)
{
    PyObject *cap = PyObject_CallMethod(obj, "__dlpack__", NULL);
    if (!cap)
        return -1;
    DLManagedTensor *mt =
        PyCapsule_IsValid(cap, "dltensor") ? PyCapsule_GetPointer(cap, "dltensor") : NULL;
    if (!mt || PyCapsule_SetName(cap, "used_dltensor") < 0) {
        Py_DECREF(cap);
        PyErr_Format(PyExc_TypeError, "%s: __dlpack__ did not return a DLPack tensor capsule",
                     what);
        return -1;
    }
    Py_DECREF(cap); /* the tensor is ours now, until we call its deleter */
    const DLTensor *t = &mt->dl_tensor;
    td_dtype dt;
    int rc = -1;
    if (t->device.device_type != kDLCPU && t->device.device_type != kDLCUDAHost) {
        PyErr_Format(PyExc_TypeError,
                     "%s: the tensor is on device type %d, not in host memory (move it with "
                     ".cpu() first)",
                     what, (int)t->device.device_type);
    } else if (t->ndim < 0 || t->ndim > TD_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "%s: %d dimensions, at most %d are supported", what,
                     (int)t->ndim, TD_MAX_DIMS);
    } else if (td__py_dtype_from_dl(t->dtype, &dt) < 0) {
        td__py_raise_code(TD_EDTYPE,
                          "%s: DLPack dtype (code %d, %d bits, %d lanes) is not supported", what,
                          (int)t->dtype.code, (int)t->dtype.bits, (int)t->dtype.lanes);
    } else if (td__py_check_shape(t->ndim, t->shape, td_dtype_size(dt),
                                  (const char *)t->data + t->byte_offset, what) == 0) {
        size_t itemsize = td_dtype_size(dt);
        int64_t strides[TD_MAX_DIMS], expect = (int64_t)itemsize, n = 1;
        int contiguous = 1;
        for (int i = t->ndim - 1; i >= 0; i--) {
            strides[i] = t->strides ? t->strides[i] * (int64_t)itemsize : expect;
            if (t->shape[i] > 1 && strides[i] != expect)
                contiguous = 0;
            expect *= t->shape[i];
            n *= t->shape[i];
        }
        const char *data = (const char *)t->data + t->byte_offset;
        td_error err = {0};
        if (contiguous && n > 0) {
            rc = td_array_wrap(dt, t->ndim, t->shape, (void *)data, td__py_dl_release, mt, out,
                               &err);
            if (rc == 0)
                return 0; /* the array calls the deleter */
        } else {
            rc = td_array_new(dt, t->ndim, t->shape, NULL, out, &err);
            if (rc == 0 && n > 0)
                td__py_copy_strided(td_array_data_mut(*out), data, t->ndim, t->shape, strides,
                                    itemsize, 0);
        }
        if (rc < 0)
            td__py_raise(&err);
    }
    if (mt->deleter)
        mt->deleter(mt);
    return rc < 0 ? -1 : 0;
}
