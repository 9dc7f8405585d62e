/*
 * client.c - tensord.Client: one kept connection to the daemon (a td_client), for long-lived
 * processes.
 *
 * Every load goes over the one connection (no connect and handshake per load); the last Array
 * of a load gives its lease back; the connection comes back by itself after a daemon restart.
 * The td_client is thread-safe, and every call releases the GIL, so threads may share a Client.
 *
 * Closing: close() (or leaving a `with` block) while other threads are inside a call only marks
 * the client closed; the last call to return closes the td_client. `busy` and `closed` are
 * touched with the GIL held only. Arrays loaded through a client stay valid after it is closed.
 *
 * td_status appears in this file only (td__py_status_dict).
 */
#include "tdpy.h"

#include <string.h>

typedef struct td__py_client_obj {
    PyObject ob_base;
    td_client *c; /* NULL once closed for good */
    int busy;     /* calls in flight, without the GIL */
    int closed;   /* close() was called */
} td__py_client_obj;

#define TD__PY_CL(o) ((td__py_client_obj *)(o))

/* Enters a call: the td_client to use, or NULL with ValueError when closed. */
static td_client *td__py_client_enter(td__py_client_obj *o)
{
    if (o->closed || !o->c) {
        PyErr_SetString(PyExc_ValueError, "tensord.Client: the client is closed");
        return NULL;
    }
    o->busy++;
    return o->c;
}

/* Leaves a call (GIL held); the last one out of a closed client closes the connection. */
static void td__py_client_leave(td__py_client_obj *o)
{
    if (--o->busy == 0 && o->closed && o->c) {
        td_client *c = o->c;
        o->c = NULL;
        PyThreadState *ts = PyEval_SaveThread();
        td_client_close(c);
        PyEval_RestoreThread(ts);
    }
}

static int td__py_client_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"socket", NULL};
    td__py_client_obj *o = TD__PY_CL(self);
    PyObject *socket = Py_None, *sb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:Client", kwlist, &socket))
        return -1;
    if (o->c) {
        PyErr_SetString(PyExc_RuntimeError, "tensord.Client: already connected");
        return -1;
    }
    if (socket != Py_None && !PyUnicode_FSConverter(socket, &sb))
        return -1;
    td_error err = {0};
    td_client *c = NULL;
    PyThreadState *ts = PyEval_SaveThread();
    int rc = td_client_connect(sb ? PyBytes_AS_STRING(sb) : NULL, &c, &err);
    PyEval_RestoreThread(ts);
    Py_XDECREF(sb);
    if (rc < 0) {
        td__py_raise(&err);
        return -1;
    }
    o->c = c;
    o->closed = 0;
    return 0;
}

static void td__py_client_dealloc(PyObject *self)
{
    td__py_client_obj *o = TD__PY_CL(self);
    /* No call can be in flight: each holds a reference to self. */
    if (o->c) {
        PyThreadState *ts = PyEval_SaveThread();
        td_client_close(o->c);
        PyEval_RestoreThread(ts);
    }
    Py_TYPE(self)->tp_free(self);
}

static PyObject *td__py_client_load(PyObject *self, PyObject *args, PyObject *kwargs)
{
    td__py_client_obj *o = TD__PY_CL(self);
    td__py_load_args la;
    if (td__py_load_args_parse(args, kwargs, 0, &la) < 0)
        return NULL;
    td_client *c = td__py_client_enter(o);
    if (!c) {
        td__py_load_args_clear(&la);
        return NULL;
    }
    td_dict *d = NULL;
    td_meta *m = NULL;
    td_error err = {0};
    PyThreadState *ts = PyEval_SaveThread();
    int rc =
        td_client_load(c, td__py_load_path(&la), &la.opt, &d, la.return_metadata ? &m : NULL, &err);
    PyEval_RestoreThread(ts);
    td__py_client_leave(o);
    PyObject *r = rc < 0 ? td__py_raise(&err) : td__py_load_result(d, m, &la);
    td__py_load_args_clear(&la);
    return r;
}

static PyObject *td__py_client_ping(PyObject *self, PyObject *unused)
{
    (void)unused;
    td__py_client_obj *o = TD__PY_CL(self);
    td_client *c = td__py_client_enter(o);
    if (!c)
        return NULL;
    td_error err = {0};
    PyThreadState *ts = PyEval_SaveThread();
    int rc = td_client_ping(c, &err);
    PyEval_RestoreThread(ts);
    td__py_client_leave(o);
    if (rc < 0)
        return td__py_raise(&err);
    Py_RETURN_NONE;
}

/* The daemon's figures as a dict: the names tensorctl status --json uses, read through the
 * status accessors. */
static const struct {
    const char *name;
    td_status_key key;
} td__py_status_keys[] = {
    {"entries", TD_STATUS_ENTRIES},
    {"bytes", TD_STATUS_BYTES},
    {"derived_bytes", TD_STATUS_DERIVED_BYTES},
    {"budget", TD_STATUS_BUDGET},
    {"quota", TD_STATUS_QUOTA},
    {"hits", TD_STATUS_HITS},
    {"misses", TD_STATUS_MISSES},
    {"evictions", TD_STATUS_EVICTIONS},
    {"clients", TD_STATUS_CLIENTS},
    {"leases", TD_STATUS_LEASES},
    {"decodes", TD_STATUS_DECODES},
    {"decode_ns_total", TD_STATUS_DECODE_NS_TOTAL},
    {"decode_ns_max", TD_STATUS_DECODE_NS_MAX},
    {"errors", TD_STATUS_ERRORS},
    {"refused", TD_STATUS_REFUSED},
    {"pressure", TD_STATUS_PRESSURE},
    {"uptime_ms", TD_STATUS_UPTIME_MS},
};

static const struct {
    const char *name;
    td_status_file_key key;
} td__py_file_keys[] = {
    {"bytes", TD_STATUS_FILE_BYTES},
    {"leases", TD_STATUS_FILE_LEASES},
    {"hits", TD_STATUS_FILE_HITS},
    {"tensors", TD_STATUS_FILE_TENSORS},
    {"file_bytes", TD_STATUS_FILE_FILE_BYTES},
    {"derived_bytes", TD_STATUS_FILE_DERIVED_BYTES},
    {"loads", TD_STATUS_FILE_LOADS},
    {"idle_ms", TD_STATUS_FILE_IDLE_MS},
    {"preloaded", TD_STATUS_FILE_PRELOADED},
};

static const struct {
    const char *name;
    td_status_user_key key;
} td__py_user_keys[] = {
    {"uid", TD_STATUS_USER_UID},
    {"entries", TD_STATUS_USER_ENTRIES},
    {"bytes", TD_STATUS_USER_BYTES},
    {"quota", TD_STATUS_USER_QUOTA},
};

/* Sets d[name] = v (a new reference, stolen); 0 or -1 with an exception. */
static int td__py_dict_steal(PyObject *d, const char *name, PyObject *v)
{
    int rc = v ? PyDict_SetItemString(d, name, v) : -1;
    Py_XDECREF(v);
    return rc;
}

static PyObject *td__py_status_dict(const td_status *st)
{
    PyObject *d = PyDict_New();
    PyObject *files = d ? PyList_New(0) : NULL;
    PyObject *users = files ? PyList_New(0) : NULL;
    int rc = users ? 0 : -1;
    for (size_t k = 0; !rc && k < sizeof td__py_status_keys / sizeof td__py_status_keys[0]; k++)
        rc = td__py_dict_steal(
            d, td__py_status_keys[k].name,
            PyLong_FromUnsignedLongLong(td_status_get(st, td__py_status_keys[k].key)));
    for (size_t i = 0; !rc && i < td_status_nfiles(st); i++) {
        const char *name = td_status_file_name(st, i);
        const char *fmt = td_format_name(td_status_file_format(st, i));
        PyObject *f = PyDict_New();
        rc = f ? 0 : -1;
        if (!rc)
            rc = td__py_dict_steal(f, "name", td__py_str(name, strlen(name)));
        if (!rc)
            rc = td__py_dict_steal(f, "format", PyUnicode_FromString(fmt ? fmt : "unknown"));
        if (!rc)
            rc = td__py_dict_steal(f, "mode", PyUnicode_FromString(td_status_file_mode(st, i)));
        for (size_t k = 0; !rc && k < sizeof td__py_file_keys / sizeof td__py_file_keys[0]; k++)
            rc = td__py_dict_steal(
                f, td__py_file_keys[k].name,
                PyLong_FromUnsignedLongLong(td_status_file_get(st, i, td__py_file_keys[k].key)));
        if (!rc)
            rc = PyList_Append(files, f);
        Py_XDECREF(f);
    }
    for (size_t i = 0; !rc && i < td_status_nusers(st); i++) {
        PyObject *u = PyDict_New();
        rc = u ? 0 : -1;
        for (size_t k = 0; !rc && k < sizeof td__py_user_keys / sizeof td__py_user_keys[0]; k++)
            rc = td__py_dict_steal(
                u, td__py_user_keys[k].name,
                PyLong_FromUnsignedLongLong(td_status_user_get(st, i, td__py_user_keys[k].key)));
        if (!rc)
            rc = PyList_Append(users, u);
        Py_XDECREF(u);
    }
    if (!rc) {
        rc = PyDict_SetItemString(d, "files", files);
        if (!rc)
            rc = PyDict_SetItemString(d, "users", users);
    }
    Py_XDECREF(files);
    Py_XDECREF(users);
    if (rc) {
        Py_XDECREF(d);
        return NULL;
    }
    return d;
}

static PyObject *td__py_client_status(PyObject *self, PyObject *unused)
{
    (void)unused;
    td__py_client_obj *o = TD__PY_CL(self);
    td_client *c = td__py_client_enter(o);
    if (!c)
        return NULL;
    td_error err = {0};
    td_status *st = NULL;
    PyThreadState *ts = PyEval_SaveThread();
    int rc = td_client_status(c, &st, &err);
    PyEval_RestoreThread(ts);
    td__py_client_leave(o);
    if (rc < 0)
        return td__py_raise(&err);
    PyObject *r = td__py_status_dict(st);
    td_status_free(st);
    return r;
}

static PyObject *td__py_client_evict(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"file", NULL};
    td__py_client_obj *o = TD__PY_CL(self);
    PyObject *file = Py_None, *fb = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:evict", kwlist, &file))
        return NULL;
    if (file != Py_None && !PyUnicode_FSConverter(file, &fb))
        return NULL;
    td_client *c = td__py_client_enter(o);
    if (!c) {
        Py_XDECREF(fb);
        return NULL;
    }
    td_error err = {0};
    uint64_t entries = 0, bytes = 0;
    PyThreadState *ts = PyEval_SaveThread();
    int rc = td_client_evict(c, fb ? PyBytes_AS_STRING(fb) : NULL, &entries, &bytes, &err);
    PyEval_RestoreThread(ts);
    td__py_client_leave(o);
    Py_XDECREF(fb);
    if (rc < 0)
        return td__py_raise(&err);
    return Py_BuildValue("{s:K,s:K}", "entries", (unsigned long long)entries, "bytes",
                         (unsigned long long)bytes);
}

static PyObject *td__py_client_close(PyObject *self, PyObject *unused)
{
    (void)unused;
    td__py_client_obj *o = TD__PY_CL(self);
    o->closed = 1;
    o->busy++;
    td__py_client_leave(o); /* closes now unless a call is in flight */
    Py_RETURN_NONE;
}

static PyObject *td__py_client_enter_ctx(PyObject *self, PyObject *unused)
{
    (void)unused;
    if (TD__PY_CL(self)->closed) {
        PyErr_SetString(PyExc_ValueError, "tensord.Client: the client is closed");
        return NULL;
    }
    return Py_NewRef(self);
}

static PyObject *td__py_client_exit_ctx(PyObject *self, PyObject *args)
{
    (void)args;
    PyObject *r = td__py_client_close(self, NULL);
    Py_XDECREF(r);
    return r ? Py_NewRef(Py_False) : NULL;
}

static PyObject *td__py_client_get_closed(PyObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(TD__PY_CL(self)->closed || !TD__PY_CL(self)->c);
}

#define TD__PY_FN(f) ((PyCFunction)(void (*)(void))(f))

static PyMethodDef td__py_client_methods[] = {
    {"load", TD__PY_FN(td__py_client_load), METH_VARARGS | METH_KEYWORDS,
     "load(file, format=None, return_metadata=False, *, dequantize=None)\n--\n\n"
     "tensord.load through this client's connection (always the daemon)."},
    {"status", td__py_client_status, METH_NOARGS,
     "status()\n--\n\n"
     "The daemon's figures: a dict with entries, bytes, derived_bytes, budget, hits, misses, "
     "evictions, clients, leases, decodes, decode_ns_total, decode_ns_max, errors, uptime_ms, "
     "and files (a list of dicts: name, format, mode, bytes, leases, hits, tensors, "
     "file_bytes, derived_bytes, loads, idle_ms), most recently used first."},
    {"evict", TD__PY_FN(td__py_client_evict), METH_VARARGS | METH_KEYWORDS,
     "evict(file=None)\n--\n\n"
     "Drops the cached entries of file (or of every file) that no client holds; returns "
     "{'entries': n, 'bytes': n}. Mappings clients already have stay valid."},
    {"ping", td__py_client_ping, METH_NOARGS, "ping()\n--\n\nChecks that the daemon answers."},
    {"close", td__py_client_close, METH_NOARGS,
     "close()\n--\n\nCloses the connection (once calls in flight return). Arrays stay valid."},
    {"__enter__", td__py_client_enter_ctx, METH_NOARGS, NULL},
    {"__exit__", td__py_client_exit_ctx, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef td__py_client_getset[] = {
    {"closed", td__py_client_get_closed, NULL, "True once close() was called.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject td__py_client_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tensord.Client",
    .tp_basicsize = sizeof(td__py_client_obj),
    .tp_dealloc = td__py_client_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Client(socket=None)\n--\n\n"
              "A kept connection to tensord (socket: default $TENSORD_SOCKET, then "
              "/run/tensord/tensord.sock). Fails with ConnectError when no daemon answers. "
              "Thread-safe; usable as a context manager.",
    .tp_methods = td__py_client_methods,
    .tp_getset = td__py_client_getset,
    .tp_init = td__py_client_init,
    .tp_new = PyType_GenericNew,
};
