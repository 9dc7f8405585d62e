/*
 * convert.c - what save takes: a Python object that is an array, as a td_array.
 *
 * Tried in this order, the first the object speaks wins:
 *   1. a tensord.Array: its td_array, as it is (block types and float8 included);
 *   2. the buffer protocol (numpy arrays and scalars, memoryview, bytes);
 *   3. __array_interface__ (numpy-compatible objects without the buffer protocol);
 *   4. __dlpack__ (torch tensors, bfloat16 included);
 *   5. when __dlpack__ fails (torch cannot export bool through DLPack 0.6), __array__() and
 *      then 2.
 * C-contiguous little-endian memory is wrapped without a copy: the td_array's release gives
 * the buffer (or the object) back, with the GIL, when the save is done. Anything else (strided,
 * Fortran order, big-endian) is copied into a new C-ordered, little-endian array first.
 */
#include "tdpy.h"

#include <stdlib.h>
#include <string.h>

/* What a wrapped td_array keeps of the Python object it views. */
typedef struct td__py_hold {
    Py_buffer view; /* view.obj is NULL when there is no buffer */
    PyObject *obj;  /* a reference kept for __array_interface__ memory, or NULL */
} td__py_hold;

static void td__py_hold_release(void *ctx, void *data)
{
    (void)data;
    td__py_hold *h = ctx;
    /* Save paths free their arrays with the GIL held; Ensure makes any other caller safe. */
    PyGILState_STATE g = PyGILState_Ensure();
    if (h->view.obj)
        PyBuffer_Release(&h->view);
    Py_XDECREF(h->obj);
    PyGILState_Release(g);
    free(h);
}

static void td__py_swap_bytes(char *p, size_t n)
{
    for (size_t i = 0; i < n / 2; i++) {
        char t = p[i];
        p[i] = p[n - 1 - i];
        p[n - 1 - i] = t;
    }
}

void td__py_copy_strided(void *dst, const void *src, int ndim, const int64_t *shape,
                         const int64_t *strides, size_t itemsize, size_t swap)
{
    int64_t total = 1;
    for (int i = 0; i < ndim; i++)
        total *= shape[i];
    if (total <= 0)
        return;
    /* Rows whose items are adjacent and need no swapping are copied whole. */
    size_t unit = itemsize;
    int outer = ndim;
    if (ndim > 0 && !swap && strides[ndim - 1] == (int64_t)itemsize) {
        unit = itemsize * (size_t)shape[ndim - 1];
        outer = ndim - 1;
    }
    int64_t idx[TD_MAX_DIMS] = {0};
    const char *p = src;
    char *d = dst;
    for (int64_t k = 0, n = total / (int64_t)(unit / itemsize); k < n; k++) {
        memcpy(d, p, unit);
        if (swap)
            for (size_t off = 0; off < itemsize; off += swap)
                td__py_swap_bytes(d + off, swap);
        d += unit;
        for (int i = outer - 1; i >= 0; i--) {
            p += strides[i];
            if (++idx[i] < shape[i])
                break;
            p -= strides[i] * shape[i];
            idx[i] = 0;
        }
    }
}

/* The name of obj's dtype for a message: str(obj.dtype) when it has one, else fallback. */
static PyObject *td__py_dtype_text(PyObject *obj, const char *fallback)
{
    PyObject *dt = PyObject_GetAttrString(obj, "dtype");
    if (dt) {
        PyObject *s = PyObject_Str(dt);
        Py_DECREF(dt);
        if (s)
            return s;
    }
    PyErr_Clear();
    return PyUnicode_FromString(fallback);
}

static int td__py_unsupported_dtype(PyObject *obj, const char *what, const char *spelled)
{
    PyObject *name = td__py_dtype_text(obj, spelled);
    if (!name)
        return -1;
    td__py_raise_code(TD_EDTYPE, "%s: dtype %U is not supported (%s)", what, name, spelled);
    Py_DECREF(name);
    return -1;
}

int td__py_check_shape(int ndim, const int64_t *shape, size_t itemsize, const void *data,
                       const char *what)
{
    uint64_t n = itemsize;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            PyErr_Format(PyExc_ValueError, "%s: shape[%d] is negative (%lld)", what, i,
                         (long long)shape[i]);
            return -1;
        }
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n) || n > (uint64_t)PY_SSIZE_T_MAX) {
            PyErr_Format(PyExc_ValueError, "%s: shape[%d] = %lld makes the array too large", what,
                         i, (long long)shape[i]);
            return -1;
        }
    }
    if (n && !data) {
        PyErr_Format(PyExc_ValueError, "%s: the data pointer is NULL for %llu bytes", what,
                     (unsigned long long)n);
        return -1;
    }
    return 0;
}

/* Wraps (contiguous, no swap) or copies n-d memory described by shape and byte strides, once
 * td__py_check_shape accepted them. On a wrap, hold is taken over by the array (released by
 * it); otherwise released here. */
static int td__py_make_array(td_dtype dt, int ndim, const int64_t *shape, const int64_t *strides,
                             const void *data, size_t swap, td__py_hold *hold, const char *what,
                             td_array **out)
{
    size_t itemsize = td_dtype_size(dt);
    if (td__py_check_shape(ndim, shape, itemsize, data, what) < 0) {
        td__py_hold_release(hold, NULL);
        return -1;
    }
    int64_t expect = (int64_t)itemsize, n = 1;
    int contiguous = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        if (shape[i] > 1 && strides[i] != expect)
            contiguous = 0;
        expect *= shape[i];
        n *= shape[i];
    }
    td_error err = {0};
    int rc;
    if (contiguous && !swap && n > 0 && data) {
        rc = td_array_wrap(dt, ndim, shape, (void *)data, td__py_hold_release, hold, out, &err);
        if (rc == 0)
            return 0;
    } else {
        rc = td_array_new(dt, ndim, shape, NULL, out, &err);
        if (rc == 0 && n > 0)
            td__py_copy_strided(td_array_data_mut(*out), data, ndim, shape, strides, itemsize,
                                swap);
    }
    td__py_hold_release(hold, NULL);
    if (rc < 0) {
        td__py_raise(&err);
        return -1;
    }
    return 0;
}

static td__py_hold *td__py_hold_new(void)
{
    td__py_hold *h = calloc(1, sizeof *h);
    if (!h)
        PyErr_NoMemory();
    return h;
}

/* 2. The buffer protocol. Returns 1 when obj refused to export one (try the next way). */
static int td__py_from_buffer(PyObject *obj, const char *what, td_array **out)
{
    td__py_hold *h = td__py_hold_new();
    if (!h)
        return -1;
    if (PyObject_GetBuffer(obj, &h->view, PyBUF_RECORDS_RO) < 0) {
        free(h);
        if (!PyErr_ExceptionMatches(PyExc_BufferError))
            return -1;
        PyErr_Clear();
        return 1;
    }
    Py_buffer *v = &h->view;
    td_dtype dt;
    int swap;
    if (td__py_dtype_from_format(v->format, v->itemsize, &dt, &swap) < 0) {
        char spelled[64];
        PyOS_snprintf(spelled, sizeof spelled, "buffer format '%.40s'",
                      v->format ? v->format : "B");
        td__py_hold_release(h, NULL);
        return td__py_unsupported_dtype(obj, what, spelled);
    }
    if (v->ndim > TD_MAX_DIMS || v->suboffsets) {
        int ndim = v->ndim; /* v goes with h */
        td__py_hold_release(h, NULL);
        PyErr_Format(PyExc_ValueError, "%s: %d dimensions (or indirect memory) are not supported",
                     what, ndim);
        return -1;
    }
    int64_t shape[TD_MAX_DIMS], strides[TD_MAX_DIMS];
    int ndim = v->ndim;
    if (!v->shape && ndim != 0) { /* bytes-like: one dimension */
        ndim = 1;
        shape[0] = v->len / v->itemsize;
        strides[0] = v->itemsize;
    } else {
        uint64_t s = (uint64_t)v->itemsize; /* as above */
        for (int i = ndim - 1; i >= 0; i--) {
            shape[i] = v->shape[i];
            strides[i] = v->strides ? v->strides[i] : (int64_t)s;
            s *= (uint64_t)v->shape[i];
        }
    }
    return td__py_make_array(dt, ndim, shape, strides, v->buf, (size_t)swap, h, what, out);
}

/* Reads a tuple of at most TD_MAX_DIMS ints into v, and its length into *n. */
static int td__py_int_tuple(PyObject *t, int64_t *v, int *n, const char *what, const char *field)
{
    if (!PyTuple_Check(t) || PyTuple_GET_SIZE(t) > TD_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError,
                     "%s: __array_interface__['%s'] is not a tuple of at most %d ints", what, field,
                     TD_MAX_DIMS);
        return -1;
    }
    *n = (int)PyTuple_GET_SIZE(t);
    for (int i = 0; i < *n; i++) {
        v[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(t, i));
        if (v[i] == -1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

/* 3. __array_interface__ (version 3), with data given as (pointer, read-only). */
static int td__py_from_interface(PyObject *obj, PyObject *ai, const char *what, td_array **out)
{
    if (!PyDict_Check(ai)) {
        PyErr_Format(PyExc_TypeError, "%s: __array_interface__ is not a dict", what);
        return -1;
    }
    PyObject *ts = PyDict_GetItemString(ai, "typestr");
    PyObject *shp = PyDict_GetItemString(ai, "shape");
    PyObject *str = PyDict_GetItemString(ai, "strides");
    PyObject *data = PyDict_GetItemString(ai, "data");
    PyObject *mask = PyDict_GetItemString(ai, "mask");
    const char *tss = ts && PyUnicode_Check(ts) ? PyUnicode_AsUTF8(ts) : NULL;
    if (!tss || !shp || !data || !PyTuple_Check(data) || PyTuple_GET_SIZE(data) != 2 ||
        (mask && mask != Py_None)) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError,
                     "%s: __array_interface__ lacks typestr, shape or data as (pointer, "
                     "read-only), or has a mask",
                     what);
        return -1;
    }
    td_dtype dt;
    int swap;
    if (td__py_dtype_from_typestr(tss, &dt, &swap) < 0) {
        char spelled[64];
        PyOS_snprintf(spelled, sizeof spelled, "typestr '%.40s'", tss);
        return td__py_unsupported_dtype(obj, what, spelled);
    }
    int64_t shape[TD_MAX_DIMS], strides[TD_MAX_DIMS];
    int ndim, nstrides;
    if (td__py_int_tuple(shp, shape, &ndim, what, "shape") < 0)
        return -1;
    if (str && str != Py_None) {
        if (td__py_int_tuple(str, strides, &nstrides, what, "strides") < 0)
            return -1;
        if (nstrides != ndim) {
            PyErr_Format(PyExc_ValueError,
                         "%s: __array_interface__ has %d strides for %d dimensions", what, nstrides,
                         ndim);
            return -1;
        }
    } else {
        uint64_t s = td_dtype_size(dt); /* wraps on absurd shapes, refused in make_array */
        for (int i = ndim - 1; i >= 0; i--) {
            strides[i] = (int64_t)s;
            s *= (uint64_t)shape[i];
        }
    }
    void *p = PyLong_AsVoidPtr(PyTuple_GET_ITEM(data, 0));
    if (!p && PyErr_Occurred())
        return -1;
    td__py_hold *h = td__py_hold_new();
    if (!h)
        return -1;
    h->obj = Py_NewRef(obj);
    return td__py_make_array(dt, ndim, shape, strides, p, (size_t)swap, h, what, out);
}

int td__py_is_arraylike(PyObject *obj)
{
    return td__py_array_get(obj) || PyObject_CheckBuffer(obj) ||
           PyObject_HasAttrString(obj, "__array_interface__") ||
           PyObject_HasAttrString(obj, "__dlpack__");
}

static int td__py_to_array_depth(PyObject *obj, const char *what, td_array **out, int depth)
{
    td_array *a = td__py_array_get(obj);
    if (a) {
        *out = td_array_retain(a);
        return 0;
    }
    if (PyObject_CheckBuffer(obj)) {
        int rc = td__py_from_buffer(obj, what, out);
        if (rc <= 0)
            return rc;
    }
    PyObject *ai = PyObject_GetAttrString(obj, "__array_interface__");
    if (ai) {
        int rc = td__py_from_interface(obj, ai, what, out);
        Py_DECREF(ai);
        return rc;
    }
    PyErr_Clear();
    if (!PyObject_HasAttrString(obj, "__dlpack__")) {
        PyErr_Format(PyExc_TypeError,
                     "%s: a %.80s is not an array (it has neither the buffer protocol, "
                     "__array_interface__ nor __dlpack__)",
                     what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (td__py_dlpack_import(obj, what, out) == 0)
        return 0;
    /* torch cannot export every dtype through DLPack 0.6 (bool): numpy's view may do. */
    PyObject *exc = td__py_err_take();
    if (depth == 0 && PyObject_HasAttrString(obj, "__array__")) {
        PyObject *np = PyObject_CallMethod(obj, "__array__", NULL);
        if (np) {
            int rc = td__py_to_array_depth(np, what, out, 1);
            Py_DECREF(np);
            if (rc == 0) {
                Py_XDECREF(exc);
                return 0;
            }
        }
        PyErr_Clear();
    }
    /* Say which array it was, and why its data could not be taken. */
    PyObject *name = td__py_dtype_text(obj, "unknown");
    if (name)
        td__py_raise_code(TD_EDTYPE, "%s: cannot take its data (dtype %U): %S", what, name,
                          exc ? exc : Py_None);
    Py_XDECREF(name);
    Py_XDECREF(exc);
    return -1;
}

int td__py_to_array(PyObject *obj, const char *what, td_array **out)
{
    return td__py_to_array_depth(obj, what, out, 0);
}
