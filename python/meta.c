/*
 * meta.c - metadata between td_meta and Python, and tensord.Metadata.
 *
 * safetensors metadata is a dict[str, str] both ways.
 *
 * GGUF values come back as Python values: str; list[str]; int, float or bool; a tensord.Array
 * (one dimension) for an array of numbers or bools; a list of those for arrays of arrays. The
 * dict they come in is a tensord.Metadata, a dict whose `types` maps each key to its GGUF type
 * ("uint32", "float32", "string", "array[int32]", "array[array]", ...), so that a value read
 * and saved again keeps its type: 7 stays a uint8, 0.5 stays a float64. Arrays keep their
 * element type in their dtype.
 *
 * save_gguf takes the same forms, plus numpy scalars and arrays (and anything else that is an
 * array to save: torch tensors, Arrays): a 0-d array is a scalar of its dtype, a 1-d array an
 * array of it. A key without a kept type gets gguf-py's defaults: int -> int32 (int64 or uint64
 * when it does not fit), float -> float32, a list of ints or floats likewise.
 *
 * td_meta_type and TD_META_* appear in this file only.
 */
#include "tdpy.h"

#include <string.h>

/* ---- tensord.Metadata: a dict with the GGUF type of each key ---- */

typedef struct td__py_metadata_obj {
    PyDictObject dict;
    PyObject *types; /* dict[str, str], created on first use */
} td__py_metadata_obj;

#define TD__PY_MD(o) ((td__py_metadata_obj *)(o))

static int td__py_md_traverse(PyObject *self, visitproc visit, void *arg)
{
    Py_VISIT(TD__PY_MD(self)->types);
    return PyDict_Type.tp_traverse(self, visit, arg);
}

static int td__py_md_clear(PyObject *self)
{
    Py_CLEAR(TD__PY_MD(self)->types);
    return PyDict_Type.tp_clear(self);
}

static void td__py_md_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    Py_CLEAR(TD__PY_MD(self)->types);
    PyDict_Type.tp_dealloc(self);
}

static PyObject *td__py_md_types(PyObject *self)
{
    td__py_metadata_obj *o = TD__PY_MD(self);
    if (!o->types)
        o->types = PyDict_New();
    return o->types; /* borrowed */
}

static PyObject *td__py_md_get_types(PyObject *self, void *closure)
{
    (void)closure;
    return Py_XNewRef(td__py_md_types(self));
}

static int td__py_md_set_types(PyObject *self, PyObject *value, void *closure)
{
    (void)closure;
    if (!value || !PyDict_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "Metadata.types must be a dict");
        return -1;
    }
    Py_XSETREF(TD__PY_MD(self)->types, Py_NewRef(value));
    return 0;
}

static PyGetSetDef td__py_md_getset[] = {
    {"types", td__py_md_get_types, td__py_md_set_types,
     "dict[str, str]: the GGUF type of each key ('uint32', 'float32', 'string', 'bool', "
     "'array[int32]', 'array[string]', 'array[array]', ...), used by save_gguf for int, float "
     "and list values.",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject td__py_metadata_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tensord.Metadata",
    .tp_basicsize = sizeof(td__py_metadata_obj),
    .tp_dealloc = td__py_md_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "GGUF metadata: a dict of key -> value whose `types` attribute keeps each key's "
              "GGUF type, so that saving it again with save_gguf is lossless.",
    .tp_traverse = td__py_md_traverse,
    .tp_clear = td__py_md_clear,
    .tp_getset = td__py_md_getset,
    /* tp_base (dict) is set before PyType_Ready, in module.c */
};

/* ---- GGUF value types ---- */

static const struct {
    td_meta_type type;
    td_dtype dtype;
} td__py_numeric[] = {
    {TD_META_UINT8, TD_UINT8},     {TD_META_INT8, TD_INT8},       {TD_META_UINT16, TD_UINT16},
    {TD_META_INT16, TD_INT16},     {TD_META_UINT32, TD_UINT32},   {TD_META_INT32, TD_INT32},
    {TD_META_FLOAT32, TD_FLOAT32}, {TD_META_BOOL, TD_BOOL},       {TD_META_UINT64, TD_UINT64},
    {TD_META_INT64, TD_INT64},     {TD_META_FLOAT64, TD_FLOAT64},
};
#define TD__PY_NNUM (sizeof td__py_numeric / sizeof td__py_numeric[0])

static int td__py_type_to_dtype(td_meta_type t, td_dtype *out)
{
    for (size_t i = 0; i < TD__PY_NNUM; i++)
        if (td__py_numeric[i].type == t) {
            *out = td__py_numeric[i].dtype;
            return 0;
        }
    return -1;
}

static int td__py_dtype_to_type(td_dtype d, td_meta_type *out)
{
    for (size_t i = 0; i < TD__PY_NNUM; i++)
        if (td__py_numeric[i].dtype == d) {
            *out = td__py_numeric[i].type;
            return 0;
        }
    return -1;
}

static int td__py_is_int_type(td_meta_type t)
{
    return t == TD_META_UINT8 || t == TD_META_INT8 || t == TD_META_UINT16 || t == TD_META_INT16 ||
           t == TD_META_UINT32 || t == TD_META_INT32 || t == TD_META_UINT64 || t == TD_META_INT64;
}

static int td__py_is_float_type(td_meta_type t)
{
    return t == TD_META_FLOAT32 || t == TD_META_FLOAT64;
}

/* "uint8" -> TD_META_UINT8; TD_META_COUNT for an unknown name. */
static td_meta_type td__py_type_from_name(const char *s, size_t n)
{
    for (int t = 0; t < TD_META_COUNT; t++) {
        const char *name = td_meta_type_name((td_meta_type)t);
        if (name && strlen(name) == n && memcmp(name, s, n) == 0)
            return (td_meta_type)t;
    }
    return TD_META_COUNT;
}

/* A kept type: "uint8" gives (uint8, none), "array[int32]" gives (array, int32). */
typedef struct td__py_kept {
    td_meta_type type; /* TD_META_COUNT: none kept */
    td_meta_type elem; /* for arrays; TD_META_COUNT: none */
} td__py_kept;

static td__py_kept td__py_kept_parse(PyObject *s)
{
    td__py_kept k = {TD_META_COUNT, TD_META_COUNT};
    Py_ssize_t n;
    const char *p = s && PyUnicode_Check(s) ? PyUnicode_AsUTF8AndSize(s, &n) : NULL;
    if (!p) {
        PyErr_Clear();
        return k;
    }
    if (n > 7 && memcmp(p, "array[", 6) == 0 && p[n - 1] == ']') {
        k.type = TD_META_ARRAY;
        k.elem = td__py_type_from_name(p + 6, (size_t)n - 7);
    } else {
        k.type = td__py_type_from_name(p, (size_t)n);
    }
    return k;
}

/* The GGUF type of a value as kept in Metadata.types. */
static PyObject *td__py_type_string(const td_value *v)
{
    td_meta_type t = td_value_type(v);
    if (t != TD_META_ARRAY)
        return PyUnicode_FromString(td_meta_type_name(t));
    return PyUnicode_FromFormat("array[%s]", td_meta_type_name(td_value_array_type(v)));
}

/* ---- td_meta -> Python ---- */

static PyObject *td__py_value_to_python(const td_value *v)
{
    td_meta_type t = td_value_type(v);
    switch (t) {
    case TD_META_STRING: {
        size_t len;
        const char *s = td_value_string(v, &len);
        return td__py_str(s, len);
    }
    case TD_META_BOOL:
    case TD_META_UINT8:
    case TD_META_INT8:
    case TD_META_UINT16:
    case TD_META_INT16:
    case TD_META_UINT32:
    case TD_META_INT32:
    case TD_META_INT64: {
        int64_t i = 0;
        td_value_get_int(v, &i);
        return t == TD_META_BOOL ? PyBool_FromLong(i != 0) : PyLong_FromLongLong(i);
    }
    case TD_META_UINT64: {
        uint64_t u = 0;
        td_value_get_uint(v, &u);
        return PyLong_FromUnsignedLongLong(u);
    }
    case TD_META_FLOAT32:
    case TD_META_FLOAT64: {
        double d = 0;
        td_value_get_float(v, &d);
        return PyFloat_FromDouble(d);
    }
    case TD_META_ARRAY:
        break;
    default:
        return td__py_raise_code(TD_EFORMAT, "metadata value of unknown type %d", (int)t);
    }
    td_meta_type et = td_value_array_type(v);
    size_t n = td_value_array_len(v);
    td_dtype dt;
    if (td__py_type_to_dtype(et, &dt) == 0) {
        /* Numbers and bools: a one-dimensional Array of their own. */
        int64_t shape = (int64_t)n;
        const void *items = td_value_array_data(v);
        td_array *a;
        td_error err = {0};
        if (td_array_new(dt, 1, &shape, n ? items : NULL, &a, &err) < 0)
            return td__py_raise(&err);
        return td__py_array_new(a, 0);
    }
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        PyObject *item = td__py_value_to_python(td_value_array_at(v, i));
        if (!item) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    return list;
}

PyObject *td__py_meta_to_python(const td_meta *m, td_format format)
{
    int gguf = format == TD_FORMAT_GGUF;
    PyObject *d = gguf ? PyObject_CallNoArgs((PyObject *)&td__py_metadata_type) : PyDict_New();
    if (!d)
        return NULL;
    PyObject *types = gguf ? td__py_md_types(d) : NULL;
    if (gguf && !types)
        goto fail;
    for (size_t i = 0; i < td_meta_size(m); i++) {
        const char *key;
        const td_value *v = td_meta_at(m, i, &key);
        PyObject *k = td__py_str(key, strlen(key));
        PyObject *val = k ? td__py_value_to_python(v) : NULL;
        PyObject *ts = val && types ? td__py_type_string(v) : NULL;
        int bad = !val || PyDict_SetItem(d, k, val) < 0 || (types && !ts) ||
                  (ts && PyDict_SetItem(types, k, ts) < 0);
        Py_XDECREF(k);
        Py_XDECREF(val);
        Py_XDECREF(ts);
        if (bad)
            goto fail;
    }
    return d;
fail:
    Py_DECREF(d);
    return NULL;
}

/* ---- Python -> td_value ---- */

/* Which key a conversion is about, for messages: "save_gguf: metadata 'general.name'". */
typedef struct td__py_mctx {
    char what[256];
} td__py_mctx;

/* Scalar of type t from a Python number (or bool), range-checked. */
static td_value *td__py_scalar(td_meta_type t, PyObject *num, const td__py_mctx *c)
{
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
        float f32;
        double f64;
    } u;
    if (td__py_is_float_type(t)) {
        double d = PyFloat_AsDouble(num);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
        if (t == TD_META_FLOAT32)
            u.f32 = (float)d;
        else
            u.f64 = d;
    } else if (t == TD_META_BOOL) {
        int b = PyObject_IsTrue(num);
        if (b < 0)
            return NULL;
        u.u8 = (uint8_t)b;
    } else if (t == TD_META_UINT64) {
        unsigned long long v = PyLong_AsUnsignedLongLong(num);
        if (v == (unsigned long long)-1 && PyErr_Occurred())
            goto range;
        u.u64 = v;
    } else {
        long long v = PyLong_AsLongLong(num);
        if (v == -1 && PyErr_Occurred())
            goto range;
        long long lo, hi;
        switch (t) {
        case TD_META_UINT8:
            lo = 0, hi = UINT8_MAX, u.u8 = (uint8_t)v;
            break;
        case TD_META_INT8:
            lo = INT8_MIN, hi = INT8_MAX, u.i8 = (int8_t)v;
            break;
        case TD_META_UINT16:
            lo = 0, hi = UINT16_MAX, u.u16 = (uint16_t)v;
            break;
        case TD_META_INT16:
            lo = INT16_MIN, hi = INT16_MAX, u.i16 = (int16_t)v;
            break;
        case TD_META_UINT32:
            lo = 0, hi = UINT32_MAX, u.u32 = (uint32_t)v;
            break;
        case TD_META_INT32:
            lo = INT32_MIN, hi = INT32_MAX, u.i32 = (int32_t)v;
            break;
        default:
            lo = INT64_MIN, hi = INT64_MAX, u.i64 = (int64_t)v;
            break;
        }
        if (v < lo || v > hi)
            goto range;
    }
    td_value *v = td_value_new_scalar(t, &u);
    if (!v)
        PyErr_NoMemory();
    return v;
range:
    if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_OverflowError))
        return NULL;
    PyErr_Clear();
    PyErr_Format(PyExc_OverflowError, "%s: %R does not fit in a GGUF %s", c->what, num,
                 td_meta_type_name(t));
    return NULL;
}

/* The default type of a Python int: int32, then int64, then uint64. */
static int td__py_int_type(PyObject *num, td_meta_type *t)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(num, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (!overflow)
        *t = v >= INT32_MIN && v <= INT32_MAX ? TD_META_INT32 : TD_META_INT64;
    else
        *t = overflow > 0 ? TD_META_UINT64 : TD_META_INT64; /* the range check reports it */
    return 0;
}

/* The wider of two default int types. */
static td_meta_type td__py_wider(td_meta_type a, td_meta_type b)
{
    if (a == TD_META_UINT64 || b == TD_META_UINT64)
        return TD_META_UINT64;
    if (a == TD_META_INT64 || b == TD_META_INT64)
        return TD_META_INT64;
    return TD_META_INT32;
}

static int td__py_push(td_value *arr, td_value *item, const td__py_mctx *c)
{
    int is_array = td_value_type(item) == TD_META_ARRAY;
    td_error err = {0};
    int rc = td_value_array_push(arr, item, &err);
    if (!is_array)
        td_value_free(item); /* pushed as a copy */
    if (rc < 0) {
        td__py_raise_code(err.code, "%s: %s", c->what, err.message);
        return -1;
    }
    return 0;
}

static td_value *td__py_value_from(PyObject *obj, td__py_kept kept, const td__py_mctx *c,
                                   int depth);

/* A numeric array or scalar from anything that is an array to save. */
static td_value *td__py_value_from_array(PyObject *obj, const td__py_mctx *c)
{
    td_array *a;
    if (td__py_to_array(obj, c->what, &a) < 0)
        return NULL;
    td_meta_type t;
    td_value *v = NULL;
    if (td__py_dtype_to_type(td_array_dtype(a), &t) < 0) {
        td__py_raise_code(TD_EDTYPE, "%s: dtype %s has no GGUF value type", c->what,
                          td_dtype_name(td_array_dtype(a)));
    } else if (td_array_ndim(a) > 1) {
        PyErr_Format(PyExc_ValueError, "%s: GGUF arrays have one dimension, this one has %d",
                     c->what, td_array_ndim(a));
    } else {
        const uint8_t *p = td_array_data(a);
        size_t size = td_dtype_size(td_array_dtype(a));
        if (td_array_ndim(a) == 0) {
            uint8_t b = t == TD_META_BOOL ? p[0] != 0 : 0;
            v = td_value_new_scalar(t, t == TD_META_BOOL ? &b : (const void *)p);
            if (!v)
                PyErr_NoMemory();
        } else {
            v = td_value_new_array(t);
            if (!v)
                PyErr_NoMemory();
            for (int64_t i = 0; v && i < td_array_shape(a)[0]; i++) {
                uint8_t b = t == TD_META_BOOL ? p[i] != 0 : 0;
                td_value *item = td_value_new_scalar(
                    t, t == TD_META_BOOL ? &b : (const void *)(p + (size_t)i * size));
                if (!item) {
                    PyErr_NoMemory();
                } else if (td__py_push(v, item, c) == 0) {
                    continue;
                }
                td_value_free(v);
                v = NULL;
            }
        }
    }
    td_array_release(a);
    return v;
}

static td_value *td__py_value_from_list(PyObject *seq, td__py_kept kept, const td__py_mctx *c,
                                        int depth)
{
    PyObject *fast = PySequence_Fast(seq, "a list");
    if (!fast)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    PyObject **items = PySequence_Fast_ITEMS(fast);
    td_meta_type elem = kept.type == TD_META_ARRAY ? kept.elem : TD_META_COUNT;
    /* Plain Python numbers share one type: the kept one, else the widest default. */
    int numbers = n > 0, any_float = 0;
    td_meta_type ints = TD_META_INT32;
    for (Py_ssize_t i = 0; i < n && numbers; i++) {
        PyObject *it = items[i];
        if (PyLong_CheckExact(it) || (PyLong_Check(it) && !PyBool_Check(it))) {
            td_meta_type t;
            if (td__py_int_type(it, &t) < 0)
                goto fail_fast;
            ints = td__py_wider(ints, t);
        } else if (PyFloat_CheckExact(it)) {
            any_float = 1;
        } else {
            numbers = 0;
        }
    }
    td_value *arr = NULL;
    if (n == 0) {
        arr = td_value_new_array(elem != TD_META_COUNT ? elem : TD_META_STRING);
        if (!arr)
            PyErr_NoMemory();
    } else if (numbers) {
        td_meta_type t;
        if (any_float)
            t = elem != TD_META_COUNT && td__py_is_float_type(elem) ? elem : TD_META_FLOAT32;
        else
            t = elem != TD_META_COUNT && (td__py_is_int_type(elem) || td__py_is_float_type(elem))
                    ? elem
                    : ints;
        arr = td_value_new_array(t);
        if (!arr)
            PyErr_NoMemory();
        for (Py_ssize_t i = 0; arr && i < n; i++) {
            td_value *item = td__py_scalar(t, items[i], c);
            if (!item || td__py_push(arr, item, c) < 0) {
                td_value_free(arr);
                arr = NULL;
            }
        }
    } else {
        td__py_kept none = {TD_META_COUNT, TD_META_COUNT};
        for (Py_ssize_t i = 0; i < n; i++) {
            td_value *item = td__py_value_from(items[i], none, c, depth + 1);
            if (!item)
                goto fail_arr;
            td_meta_type t = td_value_type(item);
            if (!arr) {
                arr = td_value_new_array(t);
                if (!arr) {
                    td_value_free(item);
                    PyErr_NoMemory();
                    goto fail_fast;
                }
            } else if (t != td_value_array_type(arr)) {
                td_value_free(item);
                PyErr_Format(PyExc_TypeError,
                             "%s: a GGUF array holds one type: item %zd is a %s, item 0 a %s",
                             c->what, i, td_meta_type_name(t),
                             td_meta_type_name(td_value_array_type(arr)));
                goto fail_arr;
            }
            if (td__py_push(arr, item, c) < 0)
                goto fail_arr;
        }
    }
    Py_DECREF(fast);
    return arr;
fail_arr:
    td_value_free(arr);
fail_fast:
    Py_DECREF(fast);
    return NULL;
}

static td_value *td__py_value_from(PyObject *obj, td__py_kept kept, const td__py_mctx *c, int depth)
{
    if (depth > TD_META_MAX_DEPTH) {
        PyErr_Format(PyExc_ValueError, "%s: arrays nest deeper than %d levels", c->what,
                     TD_META_MAX_DEPTH);
        return NULL;
    }
    td_value *v = NULL;
    if (PyBool_Check(obj)) {
        uint8_t b = obj == Py_True;
        v = td_value_new_scalar(TD_META_BOOL, &b);
    } else if (PyUnicode_Check(obj)) {
        PyObject *b = td__py_utf8(obj);
        if (!b)
            return NULL;
        v = td_value_new_string(PyBytes_AS_STRING(b), (size_t)PyBytes_GET_SIZE(b));
        Py_DECREF(b);
    } else if (PyBytes_Check(obj) || PyByteArray_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: bytes are not a GGUF value (decode them to a str)",
                     c->what);
        return NULL;
    } else if (td__py_is_arraylike(obj)) {
        return td__py_value_from_array(obj, c);
    } else if (PyLong_Check(obj)) {
        td_meta_type t = kept.type;
        if (!td__py_is_int_type(t) && !td__py_is_float_type(t) && td__py_int_type(obj, &t) < 0)
            return NULL;
        return td__py_scalar(t, obj, c);
    } else if (PyFloat_Check(obj)) {
        return td__py_scalar(td__py_is_float_type(kept.type) ? kept.type : TD_META_FLOAT32, obj, c);
    } else if (PyList_Check(obj) || PyTuple_Check(obj)) {
        return td__py_value_from_list(obj, kept, c, depth);
    } else {
        PyErr_Format(PyExc_TypeError,
                     "%s: a %.80s is not a GGUF value (str, int, float, bool, a list of them, "
                     "or a numpy array or scalar)",
                     c->what, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    if (!v)
        PyErr_NoMemory();
    return v;
}

int td__py_meta_from_python(PyObject *mapping, int strings_only, const char *fn, td_meta **out)
{
    if (!PyDict_Check(mapping)) {
        PyErr_Format(PyExc_TypeError, "%s: metadata must be a dict, not %.80s", fn,
                     Py_TYPE(mapping)->tp_name);
        return -1;
    }
    PyObject *types =
        PyObject_TypeCheck(mapping, &td__py_metadata_type) ? td__py_md_types(mapping) : NULL;
    td_meta *m = td_meta_new();
    if (!m) {
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(mapping, &pos, &key, &value)) {
        td__py_mctx c;
        if (!PyUnicode_Check(key)) {
            PyErr_Format(PyExc_TypeError, "%s: metadata keys must be str, not %.80s", fn,
                         Py_TYPE(key)->tp_name);
            goto fail;
        }
        PyObject *kb = td__py_key_bytes(key, fn);
        if (!kb)
            goto fail;
        PyOS_snprintf(c.what, sizeof c.what, "%s: metadata '%.200s'", fn, PyBytes_AS_STRING(kb));
        td_error err = {0};
        int rc;
        if (strings_only) {
            if (!PyUnicode_Check(value)) {
                PyErr_Format(PyExc_TypeError, "%s: safetensors metadata values are str, not %.80s",
                             c.what, Py_TYPE(value)->tp_name);
                Py_DECREF(kb);
                goto fail;
            }
            PyObject *vb = td__py_utf8(value);
            if (!vb) {
                Py_DECREF(kb);
                goto fail;
            }
            rc = td_meta_set_string(m, PyBytes_AS_STRING(kb), PyBytes_AS_STRING(vb),
                                    (size_t)PyBytes_GET_SIZE(vb), &err);
            Py_DECREF(vb);
        } else {
            td__py_kept kept = {TD_META_COUNT, TD_META_COUNT};
            if (types)
                kept = td__py_kept_parse(PyDict_GetItemWithError(types, key));
            if (PyErr_Occurred()) {
                Py_DECREF(kb);
                goto fail;
            }
            td_value *v = td__py_value_from(value, kept, &c, 0);
            if (!v) {
                Py_DECREF(kb);
                goto fail;
            }
            rc = td_meta_set_value(m, PyBytes_AS_STRING(kb), v, &err); /* takes v */
        }
        Py_DECREF(kb);
        if (rc < 0) {
            td__py_raise(&err);
            goto fail;
        }
    }
    *out = m;
    return 0;
fail:
    td_meta_free(m);
    return -1;
}
