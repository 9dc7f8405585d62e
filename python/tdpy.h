/*
 * tdpy.h - what the files of the Python module `tensord` share.
 *
 * The module is a thin layer over libtensord's public header (tensord.h) and nothing else:
 *   module.c   the module, MLX's six functions (save, savez, savez_compressed,
 *              save_safetensors, save_gguf, load)
 *   load.c     load options (format, mode, socket, dequantize) and turning a loaded dict into
 *              Python objects
 *   array.c    tensord.Array: a read-only view exported through the buffer protocol,
 *              __array_interface__ and DLPack
 *   dlpack.c   DLPack capsules, made (export) and consumed (import)
 *   dtypes.c   how each dtype is spelled in the buffer protocol, __array_interface__ and DLPack
 *   convert.c  Python objects (numpy arrays, torch tensors, Arrays, ...) to td_array for saving
 *   meta.c     metadata both ways, and tensord.Metadata (a dict that keeps GGUF value types)
 *   client.c   tensord.Client, a kept connection to the daemon
 *   errors.c   the tensord.Error hierarchy and raising it from a td_error
 *
 * Conventions: functions that return PyObject * return a new reference, or NULL with a Python
 * exception set; functions that return int return 0, or -1 with an exception set. Every one of
 * them is called with the GIL held. td_array references are counted as the library counts them;
 * a Python object that holds one says so.
 */
#ifndef TD_PY_H
#define TD_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlpack/dlpack.h>
#include <tensord.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tensord's arrays are little-endian; the module exports them as native data"
#endif

/* ---- errors.c ---- */

/* Takes the pending exception (NULL when none) and puts one back: PyErr_Fetch before 3.12,
 * PyErr_GetRaisedException from 3.12 on (where PyErr_Fetch is deprecated). */
static inline PyObject *td__py_err_take(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static inline void td__py_err_give(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    if (exc)
        PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, PyException_GetTraceback(exc));
#endif
}

/* Adds Error and its subclasses to the module. */
int td__py_errors_init(PyObject *module);
/* Raises the exception class of err->code with err->message as its text. Returns NULL. */
PyObject *td__py_raise(const td_error *err);
/* Raises the class of code with a formatted message. Returns NULL. */
PyObject *td__py_raise_code(int code, const char *fmt, ...);

/* ---- dtypes.c ---- */

/* How a dtype is spelled outside: buffer protocol format (NULL: none; bfloat16), numpy
 * typestr, DLPack code and bits. Block and float8 types are spelled as bytes ("B", "|u1"). */
typedef struct td__py_spell {
    const char *format;
    const char *typestr;
    uint8_t dl_code;
    uint8_t dl_bits;
} td__py_spell;

/* The spelling of t (never NULL for a valid dtype). */
const td__py_spell *td__py_spell_of(td_dtype t);
/* A buffer-protocol format with its itemsize: the dtype, and in *swap the size of the units to
 * byte-swap when the items are big-endian (0: none; half the itemsize for complex numbers).
 * -1 without an exception when the format names no dtype of ours. */
int td__py_dtype_from_format(const char *format, Py_ssize_t itemsize, td_dtype *out, int *swap);
/* A numpy typestr ("<f4", "|b1", "<V2"), *swap as above; -1 without an exception when it names
 * none of ours. */
int td__py_dtype_from_typestr(const char *typestr, td_dtype *out, int *swap);
/* A DLPack dtype; -1 without an exception when it names none of ours. */
int td__py_dtype_from_dl(DLDataType dt, td_dtype *out);

/* The shape an array is exported with: its own, except for block types, whose innermost
 * dimension is given in bytes (a block array is exported as the uint8 rows it stores). */
typedef struct td__py_layout {
    int ndim;
    int64_t shape[TD_MAX_DIMS];
    Py_ssize_t itemsize;
    const td__py_spell *spell;
} td__py_layout;
void td__py_layout_of(const td_array *a, td__py_layout *l);

/* ---- array.c ---- */

extern PyTypeObject td__py_array_type;
/* A tensord.Array holding a (the new object takes over the caller's reference, also on
 * failure). writable: whether the buffer protocol may hand out writable views. */
PyObject *td__py_array_new(td_array *a, int writable);
/* The array a tensord.Array holds (borrowed), or NULL when obj is not one. */
td_array *td__py_array_get(PyObject *obj);

/* ---- dlpack.c ---- */

/* A "dltensor" capsule for a, holding its own reference to a (DLPack 0.6, CPU). */
PyObject *td__py_dlpack_export(td_array *a);
/* Calls obj.__dlpack__() and wraps the tensor it describes into *out without copying, when it
 * is C-contiguous; otherwise copies it into C order. what names the array in messages. */
int td__py_dlpack_import(PyObject *obj, const char *what, td_array **out);

/* ---- convert.c ---- */

/* Anything exporting the buffer protocol, __array_interface__ or __dlpack__ (numpy arrays and
 * scalars, torch tensors, tensord.Array), as a td_array (one reference, the caller's). C-ordered
 * little-endian input is wrapped without copying and kept alive by the array; other input is
 * copied into C order. what names the array in messages ("save_gguf: array 'w'"). */
int td__py_to_array(PyObject *obj, const char *what, td_array **out);
/* Checks a shape that came from outside (a buffer, an array interface, a DLPack tensor): no
 * negative size, a byte size that fits in memory, and a data pointer when there are bytes. */
int td__py_check_shape(int ndim, const int64_t *shape, size_t itemsize, const void *data,
                       const char *what);
/* Whether obj looks like an array to td__py_to_array (it may still fail). */
int td__py_is_arraylike(PyObject *obj);
/* Copies an n-d strided array into C order at dst, byte-swapping each unit of swap bytes
 * (0: none). strides in bytes. */
void td__py_copy_strided(void *dst, const void *src, int ndim, const int64_t *shape,
                         const int64_t *strides, size_t itemsize, size_t swap);

/* ---- meta.c ---- */

extern PyTypeObject td__py_metadata_type;
/* The metadata of a loaded file: a dict[str, str] for safetensors, a tensord.Metadata for
 * gguf. */
PyObject *td__py_meta_to_python(const td_meta *m, td_format format);
/* A Python mapping into a new td_meta (*out, the caller's). strings_only: safetensors. */
int td__py_meta_from_python(PyObject *mapping, int strings_only, const char *fn, td_meta **out);

/* ---- load.c ---- */

/* The options of one load, unpacked from Python arguments. Holds the bytes the options point
 * into; release with td__py_load_args_clear. */
typedef struct td__py_load_args {
    PyObject *path;   /* bytes (PyUnicode_FSConverter) */
    PyObject *socket; /* bytes or NULL */
    td_load_options opt;
    int return_metadata;
} td__py_load_args;

/* Parses load's arguments (file, format, return_metadata, and when with_mode: mode and socket;
 * dequantize always). */
int td__py_load_args_parse(PyObject *args, PyObject *kwargs, int with_mode, td__py_load_args *la);
void td__py_load_args_clear(td__py_load_args *la);
/* The file to load, as bytes for the library. */
const char *td__py_load_path(const td__py_load_args *la);
/* What load returns for a loaded dict and metadata (both consumed): a bare Array for npy, a
 * dict of Arrays, or (dict, metadata). */
PyObject *td__py_load_result(td_dict *d, td_meta *m, const td__py_load_args *la);

/* ---- client.c ---- */

extern PyTypeObject td__py_client_type;

/* ---- names ---- */

/* Decodes a name from a file (UTF-8, undecodable bytes kept as surrogates so that saving it
 * again gives the same bytes). */
PyObject *td__py_str(const char *s, size_t len);
/* A str as bytes for the library (UTF-8, surrogates back to the bytes they stand for). */
PyObject *td__py_utf8(PyObject *s);
/* The same for a name or key, which the library takes as a C string: one holding a NUL is a
 * ValueError naming what. */
PyObject *td__py_key_bytes(PyObject *key, const char *what);

#endif
