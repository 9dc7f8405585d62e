/*
 * module.c - the Python module `tensord`: MLX's save and load functions over libtensord.
 *
 *   save(file, arr)                          .npy
 *   savez(file, *args, **kwargs)             .npz, stored; positional arrays are arr_0, arr_1...
 *   savez_compressed(file, *args, **kwargs)  .npz, deflated
 *   save_safetensors(file, arrays, metadata=None)
 *   save_gguf(file, arrays, metadata=None)
 *   load(file, format=None, return_metadata=False, *, mode=None, socket=None, dequantize=None)
 *
 * with MLX's signatures and behaviour (the extension is appended on save, never on load; npy
 * loads as one bare array; metadata exists for safetensors and gguf only). `file` is a str or an
 * os.PathLike. Every call releases the GIL while the library works: the arrays being saved are
 * wrapped (or copied) first, with the GIL, and released after, with the GIL.
 */
#include "tdpy.h"

#include <string.h>

/* ---- names ---- */

PyObject *td__py_str(const char *s, size_t len)
{
    return PyUnicode_DecodeUTF8(s, (Py_ssize_t)len, "surrogateescape");
}

PyObject *td__py_utf8(PyObject *s)
{
    return PyUnicode_AsEncodedString(s, "utf-8", "surrogateescape");
}

PyObject *td__py_key_bytes(PyObject *key, const char *what)
{
    PyObject *b = td__py_utf8(key);
    if (b && memchr(PyBytes_AS_STRING(b), 0, (size_t)PyBytes_GET_SIZE(b))) {
        PyErr_Format(PyExc_ValueError, "%s: the name %R holds a NUL character", what, key);
        Py_CLEAR(b);
    }
    return b;
}

/* ---- saving ---- */

/* The library's saver, called without the GIL. */
typedef int (*td__py_saver)(const char *path, const td_dict *arrays, const td_meta *meta,
                            td_error *err);

static int td__py_savez_stored(const char *path, const td_dict *d, const td_meta *m, td_error *err)
{
    (void)m;
    return td_savez(path, d, err);
}

static int td__py_savez_deflated(const char *path, const td_dict *d, const td_meta *m,
                                 td_error *err)
{
    (void)m;
    return td_savez_compressed(path, d, err);
}

/* Saves d (and m) to path with the GIL released, then frees both with the GIL held (the
 * arrays may wrap Python buffers). */
static PyObject *td__py_run_save(td__py_saver save, PyObject *path, td_dict *d, td_meta *m)
{
    td_error err = {0};
    PyThreadState *ts = PyEval_SaveThread();
    int rc = save(PyBytes_AS_STRING(path), d, m, &err);
    PyEval_RestoreThread(ts);
    td_dict_free(d);
    td_meta_free(m);
    if (rc < 0)
        return td__py_raise(&err);
    Py_RETURN_NONE;
}

/* Adds obj to d, named (key, a str) or unnamed (key NULL); what names it in messages. */
static int td__py_dict_add(td_dict *d, PyObject *key, PyObject *obj, const char *what)
{
    td_array *a;
    PyObject *kb = NULL;
    if (key && !(kb = td__py_key_bytes(key, what)))
        return -1;
    if (td__py_to_array(obj, what, &a) < 0) {
        Py_XDECREF(kb);
        return -1;
    }
    td_error err = {0};
    int rc = kb ? td_dict_set(d, PyBytes_AS_STRING(kb), a, &err) : td_dict_push(d, a, &err);
    td_array_release(a); /* the dict holds its own reference */
    Py_XDECREF(kb);
    if (rc < 0) {
        td__py_raise(&err);
        return -1;
    }
    return 0;
}

/* "fn: array 'key'" for messages (the key's bytes as they are, cut at 200). */
static void td__py_what(char *buf, size_t size, const char *fn, PyObject *key)
{
    PyObject *b = td__py_utf8(key);
    PyOS_snprintf(buf, size, "%s: array '%.200s'", fn, b ? PyBytes_AS_STRING(b) : "?");
    if (!b)
        PyErr_Clear();
    Py_XDECREF(b);
}

static PyObject *td__py_save(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *kwlist[] = {"file", "arr", NULL};
    PyObject *path = NULL, *arr;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O:save", kwlist, PyUnicode_FSConverter, &path,
                                     &arr))
        return NULL;
    PyObject *r = NULL;
    td_array *a;
    if (td__py_to_array(arr, "save: arr", &a) == 0) {
        td_error err = {0};
        PyThreadState *ts = PyEval_SaveThread();
        int rc = td_save(PyBytes_AS_STRING(path), a, &err);
        PyEval_RestoreThread(ts);
        td_array_release(a);
        r = rc < 0 ? td__py_raise(&err) : Py_NewRef(Py_None);
    }
    Py_DECREF(path);
    return r;
}

static PyObject *td__py_savez_any(PyObject *args, PyObject *kwargs, const char *fn,
                                  td__py_saver save)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n < 1) {
        PyErr_Format(PyExc_TypeError, "%s() missing its first argument: file", fn);
        return NULL;
    }
    PyObject *path = NULL;
    if (!PyUnicode_FSConverter(PyTuple_GET_ITEM(args, 0), &path))
        return NULL;
    td_dict *d = td_dict_new();
    if (!d) {
        Py_DECREF(path);
        return PyErr_NoMemory();
    }
    char what[256];
    for (Py_ssize_t i = 1; i < n; i++) {
        PyOS_snprintf(what, sizeof what, "%s: array arr_%zd", fn, i - 1);
        if (td__py_dict_add(d, NULL, PyTuple_GET_ITEM(args, i), what) < 0)
            goto fail;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (kwargs && PyDict_Next(kwargs, &pos, &key, &value)) {
        td__py_what(what, sizeof what, fn, key);
        if (td__py_dict_add(d, key, value, what) < 0)
            goto fail;
    }
    PyObject *r = td__py_run_save(save, path, d, NULL);
    Py_DECREF(path);
    return r;
fail:
    td_dict_free(d);
    Py_DECREF(path);
    return NULL;
}

static PyObject *td__py_savez(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    return td__py_savez_any(args, kwargs, "savez", td__py_savez_stored);
}

static PyObject *td__py_savez_compressed(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    return td__py_savez_any(args, kwargs, "savez_compressed", td__py_savez_deflated);
}

/* save_safetensors and save_gguf: a dict of arrays and optional metadata. */
static PyObject *td__py_save_dict(PyObject *args, PyObject *kwargs, const char *fn, int gguf)
{
    static char *kwlist[] = {"file", "arrays", "metadata", NULL};
    char format[64];
    PyOS_snprintf(format, sizeof format, "O&O|O:%s", fn);
    PyObject *path = NULL, *arrays, *metadata = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, format, kwlist, PyUnicode_FSConverter, &path,
                                     &arrays, &metadata))
        return NULL;
    td_dict *d = NULL;
    td_meta *m = NULL;
    if (!PyDict_Check(arrays)) {
        PyErr_Format(PyExc_TypeError, "%s: arrays must be a dict of str to arrays, not %.80s", fn,
                     Py_TYPE(arrays)->tp_name);
        goto fail;
    }
    if (!(d = td_dict_new())) {
        PyErr_NoMemory();
        goto fail;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    char what[256];
    while (PyDict_Next(arrays, &pos, &key, &value)) {
        if (!PyUnicode_Check(key)) {
            PyErr_Format(PyExc_TypeError, "%s: array names must be str, not %.80s", fn,
                         Py_TYPE(key)->tp_name);
            goto fail;
        }
        td__py_what(what, sizeof what, fn, key);
        if (td__py_dict_add(d, key, value, what) < 0)
            goto fail;
    }
    if (metadata != Py_None && td__py_meta_from_python(metadata, !gguf, fn, &m) < 0)
        goto fail;
    PyObject *r = td__py_run_save(gguf ? td_save_gguf : td_save_safetensors, path, d, m);
    Py_DECREF(path);
    return r;
fail:
    td_dict_free(d);
    Py_DECREF(path);
    return NULL;
}

static PyObject *td__py_save_safetensors(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    return td__py_save_dict(args, kwargs, "save_safetensors", 0);
}

static PyObject *td__py_save_gguf(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    return td__py_save_dict(args, kwargs, "save_gguf", 1);
}

/* ---- loading ---- */

static PyObject *td__py_load(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    td__py_load_args la;
    if (td__py_load_args_parse(args, kwargs, 1, &la) < 0)
        return NULL;
    td_dict *d = NULL;
    td_meta *m = NULL;
    td_error err = {0};
    PyThreadState *ts = PyEval_SaveThread();
    int rc = td_load(td__py_load_path(&la), &la.opt, &d, la.return_metadata ? &m : NULL, &err);
    PyEval_RestoreThread(ts);
    PyObject *r = rc < 0 ? td__py_raise(&err) : td__py_load_result(d, m, &la);
    td__py_load_args_clear(&la);
    return r;
}

/* ---- the module ---- */

#define TD__PY_FN(f) ((PyCFunction)(void (*)(void))(f))

static PyMethodDef td__py_functions[] = {
    {"save", TD__PY_FN(td__py_save), METH_VARARGS | METH_KEYWORDS,
     "save(file, arr)\n--\n\n"
     "Saves one array to a binary file in .npy format (\".npy\" is appended when missing).\n\n"
     "arr is anything that exports the buffer protocol, __array_interface__ or __dlpack__: a "
     "numpy array, a torch tensor, a tensord.Array. Non-contiguous input is written in C order; "
     "numpy's V2 is written as bfloat16 ('<V2'). The save is atomic."},
    {"savez", TD__PY_FN(td__py_savez), METH_VARARGS | METH_KEYWORDS,
     "savez(file, *args, **kwargs)\n--\n\n"
     "Saves several arrays to a binary file in uncompressed .npz format (\".npz\" appended when "
     "missing). Positional arrays are named arr_0, arr_1, ...; keyword arrays by their "
     "keyword. A keyword that clashes with a positional name is a DuplicateError."},
    {"savez_compressed", TD__PY_FN(td__py_savez_compressed), METH_VARARGS | METH_KEYWORDS,
     "savez_compressed(file, *args, **kwargs)\n--\n\n"
     "As savez, with deflated members."},
    {"save_safetensors", TD__PY_FN(td__py_save_safetensors), METH_VARARGS | METH_KEYWORDS,
     "save_safetensors(file, arrays, metadata=None)\n--\n\n"
     "Saves a dict of str to arrays in .safetensors format (\".safetensors\" appended when "
     "missing). metadata, when given, is a dict of str to str."},
    {"save_gguf", TD__PY_FN(td__py_save_gguf), METH_VARARGS | METH_KEYWORDS,
     "save_gguf(file, arrays, metadata=None)\n--\n\n"
     "Saves a dict of str to arrays in .gguf format (\".gguf\" appended when missing). "
     "metadata values are str, list of str, int, float, bool, numpy scalars and one-dimensional "
     "arrays (and lists of those); a tensord.Metadata from load keeps each key's GGUF type."},
    {"load", TD__PY_FN(td__py_load), METH_VARARGS | METH_KEYWORDS,
     "load(file, format=None, return_metadata=False, *, mode=None, socket=None, "
     "dequantize=None)\n--\n\n"
     "Loads arrays from a .npy, .npz, .safetensors or .gguf file (the format from the "
     "extension unless format names one).\n\n"
     "Returns a tensord.Array for .npy, a dict of name to tensord.Array otherwise, or "
     "(arrays, metadata) when return_metadata is true (safetensors: dict[str, str]; gguf: "
     "tensord.Metadata). Arrays are read-only, zero-copy views that keep the file's mapping "
     "(or the daemon's lease) alive.\n\n"
     "mode: 'auto' (default: through tensord when a daemon answers on the socket, else in "
     "this process), 'embedded' or 'daemon'. socket: the daemon's socket (default "
     "$TENSORD_SOCKET, then /run/tensord/tensord.sock). dequantize: None (GGML block tensors "
     "as stored), 'float32', 'float16', 'bfloat16', or 'mlx' (MLX's packed form)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef td__py_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "tensord",
    .m_doc = "MLX's array save/load API (.npy, .npz, .safetensors, .gguf) over libtensord: "
             "zero-copy views shared through the tensord daemon.",
    .m_size = -1,
    .m_methods = td__py_functions,
};

/* The one symbol the module exports: CPython calls it on `import tensord`. */
PyMODINIT_FUNC PyInit_tensord(void);

PyMODINIT_FUNC PyInit_tensord(void)
{
    td__py_metadata_type.tp_base = &PyDict_Type;
    if (PyType_Ready(&td__py_array_type) < 0 || PyType_Ready(&td__py_metadata_type) < 0 ||
        PyType_Ready(&td__py_client_type) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&td__py_module);
    if (!m)
        return NULL;
    if (PyModule_AddObjectRef(m, "Array", (PyObject *)&td__py_array_type) < 0 ||
        PyModule_AddObjectRef(m, "Metadata", (PyObject *)&td__py_metadata_type) < 0 ||
        PyModule_AddObjectRef(m, "Client", (PyObject *)&td__py_client_type) < 0 ||
        PyModule_AddStringConstant(m, "__version__", td_version_string()) < 0 ||
        td__py_errors_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
