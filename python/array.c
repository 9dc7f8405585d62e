/*
 * array.c - tensord.Array: one td_array seen from Python.
 *
 * An Array holds one reference to a td_array and nothing else; the td_array holds its mapping
 * (embedded mode) or its share of the daemon's lease (daemon mode). So anything that keeps an
 * Array alive keeps the bytes valid: numpy arrays made from it (their base is a memoryview of
 * the Array, or the Array itself), torch tensors (the DLPack capsule holds a td_array reference
 * of its own, so a tensor outlives even the Array), and nothing else is needed.
 *
 * Arrays from load are read-only: the buffer protocol refuses a writable view and
 * __array_interface__ says read-only, so numpy marks its view read-only. DLPack 0.6 cannot say
 * so; see __dlpack__ for what that means. Arrays made by copy() and dequantize() own their
 * memory and are writable.
 *
 * What the three protocols show of a dtype is in dtypes.c (bfloat16 as V2, float8 and GGML
 * blocks as uint8).
 */
#include "tdpy.h"

#include <string.h>

typedef struct td__py_array_obj {
    PyObject ob_base;
    td_array *arr; /* one reference, this object's */
    int writable;
    td__py_layout layout;               /* the exported shape and spelling */
    Py_ssize_t shape[TD_MAX_DIMS];      /* layout.shape for the buffer protocol */
    Py_ssize_t strides[TD_MAX_DIMS];    /* C order, in bytes */
    Py_ssize_t byte_shape, byte_stride; /* the bytes as one dimension (no format asked) */
    PyObject *weakrefs;
} td__py_array_obj;

#define TD__PY_ARR(o) ((td__py_array_obj *)(o))

PyObject *td__py_array_new(td_array *a, int writable)
{
    td__py_array_obj *o = PyObject_New(td__py_array_obj, &td__py_array_type);
    if (!o) {
        td_array_release(a);
        return NULL;
    }
    o->arr = a;
    o->writable = writable;
    o->weakrefs = NULL;
    td__py_layout_of(a, &o->layout);
    Py_ssize_t stride = o->layout.itemsize;
    for (int i = o->layout.ndim - 1; i >= 0; i--) {
        o->shape[i] = (Py_ssize_t)o->layout.shape[i];
        o->strides[i] = stride;
        stride *= o->shape[i];
    }
    o->byte_shape = (Py_ssize_t)td_array_nbytes(a);
    o->byte_stride = 1;
    return (PyObject *)o;
}

td_array *td__py_array_get(PyObject *obj)
{
    return PyObject_TypeCheck(obj, &td__py_array_type) ? TD__PY_ARR(obj)->arr : NULL;
}

static void td__py_array_dealloc(PyObject *self)
{
    td__py_array_obj *o = TD__PY_ARR(self);
    if (o->weakrefs)
        PyObject_ClearWeakRefs(self);
    td_array_release(o->arr);
    PyObject_Free(self);
}

/* ---- the buffer protocol ---- */

static int td__py_array_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    td__py_array_obj *o = TD__PY_ARR(self);
    view->obj = NULL;
    if ((flags & PyBUF_WRITABLE) == PyBUF_WRITABLE && !o->writable) {
        PyErr_SetString(PyExc_BufferError,
                        "tensord.Array: a loaded array is a read-only view of the file (or of "
                        "the daemon's buffer); a.copy() gives a writable copy");
        return -1;
    }
    int with_format = (flags & PyBUF_FORMAT) == PyBUF_FORMAT;
    if (with_format && !o->layout.spell->format) {
        PyErr_Format(PyExc_BufferError,
                     "tensord.Array: %s has no buffer-protocol format; numpy.asarray(a) gives "
                     "dtype V2 through __array_interface__, torch.from_dlpack(a) gives bfloat16",
                     td_dtype_name(td_array_dtype(o->arr)));
        return -1;
    }
    /* Views are C-contiguous; Fortran order is possible only when at most one dimension is
     * longer than 1. */
    if ((flags & PyBUF_F_CONTIGUOUS) == PyBUF_F_CONTIGUOUS) {
        int long_dims = 0;
        for (int i = 0; i < o->layout.ndim; i++)
            long_dims += o->shape[i] > 1;
        if (long_dims > 1 && o->byte_shape) {
            PyErr_SetString(PyExc_BufferError,
                            "tensord.Array: the array is in C order, not Fortran order");
            return -1;
        }
    }
    view->buf = (void *)td_array_data(o->arr);
    view->len = (Py_ssize_t)td_array_nbytes(o->arr);
    view->readonly = !o->writable;
    if (with_format) {
        view->format = (char *)o->layout.spell->format;
        view->itemsize = o->layout.itemsize;
        view->ndim = o->layout.ndim;
        view->shape = o->shape;
        view->strides = o->strides;
    } else {
        /* No format asked: unsigned bytes, as PEP 3118 says a NULL format means. */
        view->format = NULL;
        view->itemsize = 1;
        view->ndim = 1;
        view->shape = &o->byte_shape;
        view->strides = &o->byte_stride;
    }
    if ((flags & PyBUF_ND) != PyBUF_ND)
        view->shape = NULL;
    if ((flags & PyBUF_STRIDES) != PyBUF_STRIDES)
        view->strides = NULL;
    view->suboffsets = NULL;
    view->internal = NULL;
    view->obj = Py_NewRef(self);
    return 0;
}

static PyBufferProcs td__py_array_as_buffer = {
    .bf_getbuffer = td__py_array_getbuffer,
    .bf_releasebuffer = NULL,
};

/* ---- properties ---- */

static PyObject *td__py_shape_tuple(int ndim, const int64_t *shape)
{
    PyObject *t = PyTuple_New(ndim);
    for (int i = 0; t && i < ndim; i++) {
        PyObject *v = PyLong_FromLongLong(shape[i]);
        if (!v) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, v);
    }
    return t;
}

static PyObject *td__py_array_get_dtype(PyObject *self, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(td_dtype_name(td_array_dtype(TD__PY_ARR(self)->arr)));
}

static PyObject *td__py_array_get_shape(PyObject *self, void *closure)
{
    (void)closure;
    td_array *a = TD__PY_ARR(self)->arr;
    return td__py_shape_tuple(td_array_ndim(a), td_array_shape(a));
}

static PyObject *td__py_array_get_ndim(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(td_array_ndim(TD__PY_ARR(self)->arr));
}

static PyObject *td__py_array_get_size(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(td_array_size(TD__PY_ARR(self)->arr));
}

static PyObject *td__py_array_get_nbytes(PyObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(td_array_nbytes(TD__PY_ARR(self)->arr));
}

static PyObject *td__py_array_get_readonly(PyObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(!TD__PY_ARR(self)->writable);
}

static const char *td__py_provenance_name(td_provenance p)
{
    switch (p) {
    case TD_PROVENANCE_OWNED:
        return "owned";
    case TD_PROVENANCE_CALLER:
        return "caller";
    case TD_PROVENANCE_EMBEDDED:
        return "embedded";
    case TD_PROVENANCE_DAEMON:
        return "daemon";
    }
    return "unknown";
}

static PyObject *td__py_array_get_provenance(PyObject *self, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(td__py_provenance_name(td_array_provenance(TD__PY_ARR(self)->arr)));
}

static PyObject *td__py_array_get_interface(PyObject *self, void *closure)
{
    (void)closure;
    td__py_array_obj *o = TD__PY_ARR(self);
    const char *ts = o->layout.spell->typestr;
    PyObject *shape = td__py_shape_tuple(o->layout.ndim, o->layout.shape);
    if (!shape)
        return NULL;
    return Py_BuildValue("{s:i,s:N,s:s,s:[(s,s)],s:(N,O),s:O}", "version", 3, "shape", shape,
                         "typestr", ts, "descr", "", ts, "data",
                         PyLong_FromVoidPtr((void *)td_array_data(o->arr)),
                         o->writable ? Py_False : Py_True, "strides", Py_None);
}

static PyGetSetDef td__py_array_getset[] = {
    {"dtype", td__py_array_get_dtype, NULL,
     "The dtype's name: 'float32', 'bfloat16', 'q4_0', ... (numpy sees bfloat16 as V2 and "
     "float8 and GGML block types as uint8).",
     NULL},
    {"shape", td__py_array_get_shape, NULL, "The shape, C order; for GGML block types in elements.",
     NULL},
    {"ndim", td__py_array_get_ndim, NULL, "The number of dimensions.", NULL},
    {"size", td__py_array_get_size, NULL, "The number of elements.", NULL},
    {"nbytes", td__py_array_get_nbytes, NULL, "The number of bytes.", NULL},
    {"readonly", td__py_array_get_readonly, NULL,
     "True for loaded arrays (views of a read-only mapping); False for copy() and dequantize() "
     "results.",
     NULL},
    {"provenance", td__py_array_get_provenance, NULL,
     "Where the bytes live: 'embedded' (this process's mapping of the file), 'daemon' (a buffer "
     "tensord shares with every process), 'owned' or 'caller' (memory of the array's own: "
     "decoded in embedded mode, copied, dequantized).",
     NULL},
    {"__array_interface__", td__py_array_get_interface, NULL,
     "numpy's array interface (version 3): the array without a copy.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* ---- methods ---- */

/* A writable copy of a with memory of its own (one reference, the caller's), or NULL with an
 * exception. */
static td_array *td__py_array_copy_of(td_array *a)
{
    td_array *c = NULL;
    td_error err = {0};
    PyThreadState *ts = PyEval_SaveThread();
    int rc = td_array_new(td_array_dtype(a), td_array_ndim(a), td_array_shape(a), td_array_data(a),
                          &c, &err);
    PyEval_RestoreThread(ts);
    if (rc < 0) {
        td__py_raise(&err);
        return NULL;
    }
    return c;
}

static PyObject *td__py_array_copy(PyObject *self, PyObject *unused)
{
    (void)unused;
    td_array *c = td__py_array_copy_of(TD__PY_ARR(self)->arr);
    return c ? td__py_array_new(c, 1) : NULL;
}

static PyObject *td__py_array_dequantize(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"dtype", NULL};
    const char *name = "float32";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|s:dequantize", kwlist, &name))
        return NULL;
    td_dtype out;
    if (td_dtype_from_name(name, &out) < 0 ||
        (out != TD_FLOAT32 && out != TD_FLOAT16 && out != TD_BFLOAT16)) {
        PyErr_Format(PyExc_ValueError,
                     "dequantize: dtype '%s' is not one of 'float32', 'float16', 'bfloat16'", name);
        return NULL;
    }
    td_array *a = TD__PY_ARR(self)->arr, *r = NULL;
    td_error err = {0};
    PyThreadState *ts = PyEval_SaveThread();
    int rc = td_array_dequantize(a, out, 0, &r, &err);
    PyEval_RestoreThread(ts);
    if (rc < 0)
        return td__py_raise(&err);
    return td__py_array_new(r, 1);
}

static PyObject *td__py_array_dlpack(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"stream", "max_version", "dl_device", "copy", NULL};
    PyObject *stream = Py_None, *max_version = Py_None, *dl_device = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$OOOO:__dlpack__", kwlist, &stream,
                                     &max_version, &dl_device, &copy))
        return NULL;
    (void)max_version; /* we make DLPack 0.6 capsules, which every consumer reads */
    if (stream != Py_None) {
        PyErr_SetString(PyExc_BufferError,
                        "tensord.Array.__dlpack__: a CPU array takes no stream (stream=None)");
        return NULL;
    }
    if (dl_device != Py_None) {
        int type = -1, id = -1;
        if (!PyArg_ParseTuple(dl_device, "ii", &type, &id) || type != kDLCPU || id != 0) {
            PyErr_Clear();
            PyErr_SetString(PyExc_BufferError,
                            "tensord.Array.__dlpack__: the array lives on the CPU (1, 0) only");
            return NULL;
        }
    }
    int want_copy = copy == Py_None ? 0 : PyObject_IsTrue(copy);
    if (want_copy < 0)
        return NULL;
    td_array *a = TD__PY_ARR(self)->arr;
    if (!want_copy)
        return td__py_dlpack_export(a);
    td_array *c = td__py_array_copy_of(a);
    if (!c)
        return NULL;
    PyObject *cap = td__py_dlpack_export(c);
    td_array_release(c); /* the capsule holds its own reference */
    return cap;
}

static PyObject *td__py_array_dlpack_device(PyObject *self, PyObject *unused)
{
    (void)self, (void)unused;
    return Py_BuildValue("(ii)", (int)kDLCPU, 0);
}

static PyMethodDef td__py_array_methods[] = {
    {"__dlpack__", (PyCFunction)(void (*)(void))td__py_array_dlpack, METH_VARARGS | METH_KEYWORDS,
     "__dlpack__(*, stream=None, max_version=None, dl_device=None, copy=None)\n--\n\n"
     "A DLPack capsule of the array, for torch.from_dlpack(a): no copy, unless copy=True.\n\n"
     "DLPack 0.6 cannot mark memory read-only, so the tensor a consumer makes from a loaded "
     "array looks writable but is not: the pages are mapped read-only (and the daemon's buffers "
     "are sealed), and writing into them kills the process with SIGSEGV. Nothing a process "
     "does can change the file or another process's view. For a tensor to write into, ask for "
     "a copy: torch.from_dlpack(a.__dlpack__(copy=True)) or torch.from_dlpack(a.copy())."},
    {"__dlpack_device__", td__py_array_dlpack_device, METH_NOARGS,
     "__dlpack_device__()\n--\n\n(kDLCPU, 0): the array is in host memory."},
    {"copy", td__py_array_copy, METH_NOARGS,
     "copy()\n--\n\nA writable copy of the array in memory of its own."},
    {"dequantize", (PyCFunction)(void (*)(void))td__py_array_dequantize,
     METH_VARARGS | METH_KEYWORDS,
     "dequantize(dtype='float32')\n--\n\n"
     "A GGML block array (q4_0, q8_0, q4_k, ...) as a new writable array of the same shape and "
     "dtype 'float32', 'float16' or 'bfloat16', bit-identical to llama.cpp. The GIL is released "
     "while it runs."},
    {NULL, NULL, 0, NULL},
};

static Py_ssize_t td__py_array_len(PyObject *self)
{
    td_array *a = TD__PY_ARR(self)->arr;
    if (td_array_ndim(a) == 0) {
        PyErr_SetString(PyExc_TypeError, "len() of a 0-d tensord.Array");
        return -1;
    }
    return (Py_ssize_t)td_array_shape(a)[0];
}

static PySequenceMethods td__py_array_as_sequence = {
    .sq_length = td__py_array_len,
};

static PyObject *td__py_array_repr(PyObject *self)
{
    td_array *a = TD__PY_ARR(self)->arr;
    PyObject *shape = td__py_shape_tuple(td_array_ndim(a), td_array_shape(a));
    if (!shape)
        return NULL;
    PyObject *r = PyUnicode_FromFormat("tensord.Array(shape=%R, dtype=%s, provenance=%s%s)", shape,
                                       td_dtype_name(td_array_dtype(a)),
                                       td__py_provenance_name(td_array_provenance(a)),
                                       TD__PY_ARR(self)->writable ? "" : ", readonly");
    Py_DECREF(shape);
    return r;
}

PyTypeObject td__py_array_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tensord.Array",
    .tp_basicsize = sizeof(td__py_array_obj),
    .tp_dealloc = td__py_array_dealloc,
    .tp_repr = td__py_array_repr,
    .tp_as_sequence = &td__py_array_as_sequence,
    .tp_as_buffer = &td__py_array_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An n-d array loaded by tensord: a read-only, zero-copy view that keeps its "
              "mapping (or its daemon lease) alive.\n\n"
              "numpy.asarray(a) and torch.from_dlpack(a) view it without copying; save() and "
              "friends take it as it is.",
    .tp_weaklistoffset = offsetof(td__py_array_obj, weakrefs),
    .tp_methods = td__py_array_methods,
    .tp_getset = td__py_array_getset,
};
