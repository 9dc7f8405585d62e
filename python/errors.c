/*
 * errors.c - tensord.Error and one subclass per library error code.
 *
 * Every failure the library reports (a negative TD_E* code and a one-line message naming the
 * file, the tensor, the field and the value) becomes an instance of the class of its code, with
 * the message as its text and the attributes `code` (the negative number) and `code_name`
 * ("TD_EFORMAT"). Each class also derives from the built-in exception a Python user would catch
 * for it: a missing file is a FileNotFoundError, a malformed file a ValueError, an unsupported
 * dtype a TypeError, a daemon that does not answer a ConnectionError. A code this module does not
 * know (a newer library) raises tensord.Error itself.
 */
#include "tdpy.h"

#include <errno.h>

typedef struct td__py_errdef {
    int code;
    const char *name;   /* the class name in the module */
    PyObject **builtin; /* the built-in exception it also derives from, or NULL */
    int parent;         /* the code of the parent class, or 0 for tensord.Error */
    int os_errno;       /* errno for OSError subclasses (0: none) */
} td__py_errdef;

/* Parents come before their children. Truncation and checksums are malformed files too. */
static const td__py_errdef td__py_errdefs[] = {
    {TD_EINVAL, "InvalidArgumentError", &PyExc_ValueError, 0, 0},
    {TD_ENOMEM, "OutOfMemoryError", &PyExc_MemoryError, 0, 0},
    {TD_EIO, "InputOutputError", &PyExc_OSError, 0, EIO},
    {TD_ENOENT, "FileNotFoundError", &PyExc_FileNotFoundError, 0, ENOENT},
    {TD_EACCES, "PermissionError", &PyExc_PermissionError, 0, EACCES},
    {TD_ENOTSUP, "NotSupportedError", &PyExc_ValueError, 0, 0},
    {TD_EFORMAT, "FormatError", &PyExc_ValueError, 0, 0},
    {TD_ETRUNC, "TruncatedError", NULL, TD_EFORMAT, 0},
    {TD_EDTYPE, "DtypeError", &PyExc_TypeError, 0, 0},
    {TD_ERANGE, "RangeError", &PyExc_ValueError, 0, 0},
    {TD_ELIMIT, "LimitError", NULL, 0, 0},
    {TD_EDUP, "DuplicateError", &PyExc_ValueError, 0, 0},
    {TD_ENOTFOUND, "NotFoundError", &PyExc_LookupError, 0, 0},
    {TD_ECHECKSUM, "ChecksumError", NULL, TD_EFORMAT, 0},
    {TD_EVERSION, "VersionError", NULL, 0, 0},
    {TD_EPROTO, "ProtocolError", NULL, 0, 0},
    {TD_ECONNECT, "ConnectError", &PyExc_ConnectionError, 0, 0},
    {TD_ECLOSED, "ClosedError", &PyExc_ConnectionError, 0, 0},
    {TD_EAGAIN, "TryAgainError", NULL, 0, 0},
    {TD_EEXIST, "FileExistsError", &PyExc_FileExistsError, 0, EEXIST},
    {TD_ENOSPC, "NoSpaceError", &PyExc_OSError, 0, ENOSPC},
    {TD_EBUSY, "BusyError", NULL, 0, 0},
    {TD_ESYS, "SystemCallError", &PyExc_OSError, 0, 0},
    {TD_ENOMETA, "NoMetadataError", &PyExc_ValueError, 0, 0},
};
#define TD__PY_NERR (sizeof td__py_errdefs / sizeof td__py_errdefs[0])

/* The classes, made once at import (the module is single-phase, so once per process). */
static PyObject *td__py_error_base;
static PyObject *td__py_error_classes[TD__PY_NERR];

int td__py_errors_init(PyObject *module)
{
    PyObject *all = PyDict_New();
    if (!all)
        return -1;
    td__py_error_base = PyErr_NewExceptionWithDoc(
        "tensord.Error",
        "A failure reported by libtensord. `code` is its negative TD_E* number, `code_name` its "
        "name; the message names the file, the tensor, the field and the value.",
        NULL, NULL);
    if (!td__py_error_base || PyModule_AddObjectRef(module, "Error", td__py_error_base) < 0)
        goto fail;
    for (size_t i = 0; i < TD__PY_NERR; i++) {
        const td__py_errdef *d = &td__py_errdefs[i];
        PyObject *parent = td__py_error_base;
        for (size_t k = 0; k < i; k++)
            if (d->parent && td__py_errdefs[k].code == d->parent)
                parent = td__py_error_classes[k];
        PyObject *bases =
            d->builtin ? PyTuple_Pack(2, parent, *d->builtin) : PyTuple_Pack(1, parent);
        if (!bases)
            goto fail;
        char qualname[96];
        PyOS_snprintf(qualname, sizeof qualname, "tensord.%s", d->name);
        PyObject *cls = PyErr_NewException(qualname, bases, NULL);
        Py_DECREF(bases);
        if (!cls)
            goto fail;
        td__py_error_classes[i] = cls; /* the module's reference, kept for the process */
        if (PyModule_AddObjectRef(module, d->name, cls) < 0 ||
            PyDict_SetItemString(all, td_err_name(d->code), cls) < 0)
            goto fail;
    }
    /* ERRORS: "TD_EFORMAT" -> FormatError, for every code. */
    if (PyModule_AddObject(module, "ERRORS", all) < 0)
        goto fail;
    return 0;
fail:
    Py_DECREF(all);
    return -1;
}

static PyObject *td__py_class_of(int code, int *os_errno)
{
    *os_errno = 0;
    for (size_t i = 0; i < TD__PY_NERR; i++)
        if (td__py_errdefs[i].code == code) {
            *os_errno = td__py_errdefs[i].os_errno;
            return td__py_error_classes[i];
        }
    return td__py_error_base;
}

/* Raises cls(message) with code, code_name and errno set. */
static PyObject *td__py_raise_msg(int code, PyObject *message)
{
    if (!message)
        return NULL;
    int os_errno;
    PyObject *cls = td__py_class_of(code, &os_errno);
    PyObject *exc = PyObject_CallOneArg(cls, message);
    Py_DECREF(message);
    if (!exc)
        return NULL;
    PyObject *c = PyLong_FromLong(code);
    PyObject *n = PyUnicode_FromString(td_err_name(code));
    int bad = !c || !n || PyObject_SetAttrString(exc, "code", c) < 0 ||
              PyObject_SetAttrString(exc, "code_name", n) < 0;
    Py_XDECREF(c);
    Py_XDECREF(n);
    if (!bad && os_errno) {
        PyObject *e = PyLong_FromLong(os_errno);
        bad = !e || PyObject_SetAttrString(exc, "errno", e) < 0;
        Py_XDECREF(e);
    }
    if (bad) {
        Py_DECREF(exc);
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}

PyObject *td__py_raise(const td_error *err)
{
    int code = err->code ? err->code : TD_EINVAL;
    const char *text = err->message[0] ? err->message : td_strerror(code);
    /* The library's messages are UTF-8 but may quote bytes of a hostile file. */
    return td__py_raise_msg(code, PyUnicode_DecodeUTF8(text, (Py_ssize_t)strlen(text), "replace"));
}

PyObject *td__py_raise_code(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, ap);
    va_end(ap);
    return td__py_raise_msg(code, msg);
}
