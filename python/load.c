/*
 * load.c - load's arguments, and what load returns.
 *
 * load(file, format=None, return_metadata=False, *, mode=None, socket=None, dequantize=None)
 * becomes a td_load_options here, and the dict (and metadata) td_load gives becomes MLX's
 * return value: a bare Array for .npy, a dict of Arrays otherwise, or (arrays, metadata).
 * Client.load takes the same arguments but mode and socket.
 *
 * td_load_options (its initialisation, its fields, its dequantize values) appears in this
 * file only.
 */
#include "tdpy.h"

#include <string.h>

/* The reference page loads with `mx.load("array.npy", a)`: an array where the format goes. That
 * call runs here too; the array is ignored, with a warning. */
static int td__py_parse_format(PyObject *f, td_format *out)
{
    *out = TD_FORMAT_AUTO;
    if (f == Py_None)
        return 0;
    if (!PyUnicode_Check(f)) {
        if (td__py_is_arraylike(f))
            return PyErr_WarnEx(PyExc_UserWarning,
                                "tensord.load: format is a str or None; the array given in its "
                                "place (as in MLX's load example) is ignored",
                                1);
        PyErr_Format(PyExc_TypeError, "load: format must be a str or None, not %.80s",
                     Py_TYPE(f)->tp_name);
        return -1;
    }
    const char *s = PyUnicode_AsUTF8(f);
    if (!s)
        return -1;
    for (int i = TD_FORMAT_NPY; i <= TD_FORMAT_GGUF; i++)
        if (strcmp(s, td_format_name((td_format)i)) == 0) {
            *out = (td_format)i;
            return 0;
        }
    td__py_raise_code(TD_ENOTSUP,
                      "[load] Unknown file format %s (expected npy, npz, safetensors or gguf)", s);
    return -1;
}

static int td__py_parse_mode(PyObject *m, td_load_mode *out)
{
    *out = TD_MODE_AUTO;
    if (m == Py_None)
        return 0;
    const char *s = PyUnicode_Check(m) ? PyUnicode_AsUTF8(m) : NULL;
    if (s && strcmp(s, "auto") == 0)
        *out = TD_MODE_AUTO;
    else if (s && strcmp(s, "embedded") == 0)
        *out = TD_MODE_EMBEDDED;
    else if (s && strcmp(s, "daemon") == 0)
        *out = TD_MODE_DAEMON;
    else {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "load: mode must be 'auto', 'embedded' or 'daemon', not %R",
                     m);
        return -1;
    }
    return 0;
}

static int td__py_parse_dequantize(PyObject *d, td_dequant *out)
{
    *out = TD_DEQUANT_NONE;
    if (d == Py_None || d == Py_False)
        return 0;
    const char *s = PyUnicode_Check(d) ? PyUnicode_AsUTF8(d) : NULL;
    if (s && strcmp(s, "float32") == 0)
        *out = TD_DEQUANT_F32;
    else if (s && strcmp(s, "float16") == 0)
        *out = TD_DEQUANT_F16;
    else if (s && strcmp(s, "bfloat16") == 0)
        *out = TD_DEQUANT_BF16;
    else if (s && strcmp(s, "mlx") == 0)
        *out = TD_DEQUANT_MLX;
    else {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError,
                     "load: dequantize must be None, 'float32', 'float16', 'bfloat16' or 'mlx', "
                     "not %R",
                     d);
        return -1;
    }
    return 0;
}

int td__py_load_args_parse(PyObject *args, PyObject *kwargs, int with_mode, td__py_load_args *la)
{
    static char *kw_mode[] = {"file",       "format", "return_metadata", "mode", "socket",
                              "dequantize", NULL};
    static char *kw_client[] = {"file", "format", "return_metadata", "dequantize", NULL};
    PyObject *file, *format = Py_None, *mode = Py_None, *socket = Py_None, *deq = Py_None;
    int return_metadata = 0;
    td_load_options o = TD_LOAD_OPTIONS_INIT;
    memset(la, 0, sizeof *la);
    la->opt = o;
    int ok = with_mode
                 ? PyArg_ParseTupleAndKeywords(args, kwargs, "O|Op$OOO:load", kw_mode, &file,
                                               &format, &return_metadata, &mode, &socket, &deq)
                 : PyArg_ParseTupleAndKeywords(args, kwargs, "O|Op$O:load", kw_client, &file,
                                               &format, &return_metadata, &deq);
    if (!ok)
        return -1;
    la->return_metadata = return_metadata;
    if (!PyUnicode_FSConverter(file, &la->path))
        return -1;
    if (td__py_parse_format(format, &la->opt.format) < 0 ||
        td__py_parse_mode(mode, &la->opt.mode) < 0 ||
        td__py_parse_dequantize(deq, &la->opt.dequantize) < 0)
        goto fail;
    if (socket != Py_None) {
        if (!PyUnicode_FSConverter(socket, &la->socket))
            goto fail;
        la->opt.socket_path = PyBytes_AS_STRING(la->socket);
    }
    return 0;
fail:
    td__py_load_args_clear(la);
    return -1;
}

void td__py_load_args_clear(td__py_load_args *la)
{
    Py_CLEAR(la->path);
    Py_CLEAR(la->socket);
}

const char *td__py_load_path(const td__py_load_args *la)
{
    return PyBytes_AS_STRING(la->path);
}

PyObject *td__py_load_result(td_dict *d, td_meta *m, const td__py_load_args *la)
{
    PyObject *result = NULL, *arrays = NULL, *meta = NULL;
    size_t n = td_dict_size(d);
    const char *name = NULL;
    /* .npy: one unnamed entry, returned bare, as MLX does. */
    if (n == 1 && td_dict_at(d, 0, &name) && !name) {
        result = td__py_array_new(td_array_retain(td_dict_at(d, 0, NULL)), 0);
        goto done;
    }
    arrays = PyDict_New();
    for (size_t i = 0; arrays && i < n; i++) {
        const td_array *a = td_dict_at(d, i, &name);
        PyObject *k = td__py_str(name ? name : "", name ? strlen(name) : 0);
        PyObject *v = k ? td__py_array_new(td_array_retain(a), 0) : NULL;
        if (!v || PyDict_SetItem(arrays, k, v) < 0)
            Py_CLEAR(arrays);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    if (!arrays || !la->return_metadata) {
        result = arrays;
        goto done;
    }
    td_format f = la->opt.format ? la->opt.format : td_format_from_path(td__py_load_path(la));
    meta = td__py_meta_to_python(m, f);
    if (meta)
        result = PyTuple_Pack(2, arrays, meta);
    Py_DECREF(arrays);
    Py_XDECREF(meta);
done:
    td_dict_free(d);
    td_meta_free(m);
    return result;
}
