/* The per-chunk path of a transparent direction, in C: fastpath.Stream's
 * _on_readable without a Python frame, a bytes object or a bound method per
 * chunk. Optional: built when the package is installed with a C compiler at
 * hand; fastpath.py falls back to its own Python loop otherwise (or when
 * VAURIEN_NO_EXTENSIONS is set), and that loop is the reference this one
 * follows step for step.
 *
 * relay(source_fd, dest_fd, size, host, plan, record, counter, settle) is an
 * io watcher's callback, run in the hub's thread with the GIL held; both
 * descriptors are non-blocking. Up to CHUNKS times: recv up to ``size``
 * bytes, check that ``host.plan`` is still ``plan``, send, add what was sent
 * to ``record.<counter>``. A chunk read short and sent whole ends the call
 * (the usual case, all in C); everything else is handed to
 * ``settle(what, data, sent)`` with the numbers fastpath.py names (EOF,
 * PLAN_CHANGED, ...): the rest of a partial send, the chunk read under a plan
 * no longer in force, the OSError met, or, for a full read, what was sent
 * (settle's truth then says whether to stop).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <sys/socket.h>
#include <sys/types.h>

/* fastpath.py: EOF, PLAN_CHANGED, PARTIAL, FULL, RECV_FAILED, SEND_FAILED, FAILED */
enum { EOF_ = 0, PLAN_CHANGED, PARTIAL, FULL, RECV_FAILED, SEND_FAILED, FAILED };

/* fastpath.CHUNKS_PER_WAKEUP: chunks one call moves before others may run */
#define CHUNKS 16

static char *buffer = NULL;
static Py_ssize_t capacity = 0;
static PyObject *plan_name = NULL; /* "plan", interned */

/* settle(what, data, sent), ``data`` stolen; -1 on a Python error, else its truth. */
static int settle_with(PyObject *settle, int what, PyObject *data, Py_ssize_t sent)
{
    if (data == NULL)
        return -1;
    PyObject *result = PyObject_CallFunction(settle, "iOn", what, data, sent);
    Py_DECREF(data);
    if (result == NULL)
        return -1;
    int truth = PyObject_IsTrue(result);
    Py_DECREF(result);
    return truth;
}

/* The error just set (errno's OSError, or whatever failed), as an object. */
static PyObject *take_error(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (value != NULL && traceback != NULL)
        PyException_SetTraceback(value, traceback);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    return value;
#endif
}

static int ensure_buffer(Py_ssize_t size)
{
    if (size <= capacity)
        return 0;
    char *grown = PyMem_RawRealloc(buffer, (size_t)size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer = grown;
    capacity = size;
    return 0;
}

static PyObject *relay(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError,
                        "relay(source_fd, dest_fd, size, host, plan, record, counter, settle)");
        return NULL;
    }
    int source = (int)PyLong_AsLong(args[0]);
    int dest = (int)PyLong_AsLong(args[1]);
    Py_ssize_t size = PyLong_AsSsize_t(args[2]);
    PyObject *host = args[3], *plan = args[4], *record = args[5], *counter = args[6];
    PyObject *settle = args[7];
    if (PyErr_Occurred())
        return NULL;
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "relay: size must be positive");
        return NULL;
    }
    if (ensure_buffer(size) < 0)
        goto failed;

    for (int chunk = 0; chunk < CHUNKS; chunk++) {
        ssize_t got;
        do
            got = recv(source, buffer, (size_t)size, 0);
        while (got < 0 && errno == EINTR);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                Py_RETURN_NONE;
            PyErr_SetFromErrno(PyExc_OSError);
            if (settle_with(settle, RECV_FAILED, take_error(), 0) < 0)
                return NULL;
            Py_RETURN_NONE;
        }
        if (got == 0) {
            if (settle_with(settle, EOF_, Py_NewRef(Py_None), 0) < 0)
                return NULL;
            Py_RETURN_NONE;
        }

        PyObject *now = PyObject_GetAttr(host, plan_name);
        if (now == NULL)
            goto failed;
        Py_DECREF(now); /* only its identity is compared */
        if (now != plan) { /* a live change: the new chain takes over */
            PyObject *data = PyBytes_FromStringAndSize(buffer, got);
            if (settle_with(settle, PLAN_CHANGED, data, 0) < 0)
                return NULL;
            Py_RETURN_NONE;
        }

        ssize_t sent;
        do
            sent = send(dest, buffer, (size_t)got, 0);
        while (sent < 0 && errno == EINTR);
        if (sent < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyErr_SetFromErrno(PyExc_OSError);
                if (settle_with(settle, SEND_FAILED, take_error(), 0) < 0)
                    return NULL;
                Py_RETURN_NONE;
            }
            sent = 0;
        }

        PyObject *before = PyObject_GetAttr(record, counter);
        if (before == NULL)
            goto failed;
        PyObject *moved = PyLong_FromSsize_t(sent);
        PyObject *after = moved == NULL ? NULL : PyNumber_Add(before, moved);
        Py_DECREF(before);
        Py_XDECREF(moved);
        if (after == NULL)
            goto failed;
        int stored = PyObject_SetAttr(record, counter, after);
        Py_DECREF(after);
        if (stored < 0)
            goto failed;

        if (sent < got) { /* the destination is full: wait for room */
            PyObject *rest = PyBytes_FromStringAndSize(buffer + sent, got - sent);
            if (settle_with(settle, PARTIAL, rest, sent) < 0)
                return NULL;
            Py_RETURN_NONE;
        }
        if (got < size) /* most likely drained: wait for more */
            Py_RETURN_NONE;
        int stop = settle_with(settle, FULL, Py_NewRef(Py_None), sent);
        if (stop < 0)
            return NULL;
        if (stop)
            Py_RETURN_NONE;
    }
    Py_RETURN_NONE;

failed: /* never leave an error in the hub: the stream ends with it */
    if (settle_with(settle, FAILED, take_error(), 0) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"relay", (PyCFunction)(void (*)(void))relay, METH_FASTCALL,
     "relay(source_fd, dest_fd, size, host, plan, record, counter, settle): move chunks"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pytest_vaurien.engine._relay",
    .m_doc = "fastpath.Stream's per-chunk path in C (optional)",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__relay(void)
{
    plan_name = PyUnicode_InternFromString("plan");
    if (plan_name == NULL)
        return NULL;
    return PyModule_Create(&module);
}
