/* The per-chunk callback of minimal_relay.py, in C: built by
 * ``minimal_relay.py --c`` for pinned.py, never shipped.
 *
 * relay(watcher, source_fd, dest_fd): one recv into a static buffer and one
 * send of what it read, as the Python callback does, with no bytes object
 * and no Python frame. Stops the watcher at EOF; the socket's errors raise.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <sys/socket.h>

static char buffer[65536];

static PyObject *relay(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "relay(watcher, source_fd, dest_fd)");
        return NULL;
    }
    int source = (int)PyLong_AsLong(args[1]);
    int dest = (int)PyLong_AsLong(args[2]);
    if (PyErr_Occurred())
        return NULL;
    ssize_t got = recv(source, buffer, sizeof buffer, 0);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            Py_RETURN_NONE;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (got == 0)
        return PyObject_CallMethod(args[0], "stop", NULL);
    if (send(dest, buffer, (size_t)got, 0) < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"relay", (PyCFunction)(void (*)(void))relay, METH_FASTCALL, "recv a chunk, send it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "minimal_relay_c", NULL, -1, methods};

PyMODINIT_FUNC PyInit_minimal_relay_c(void) { return PyModule_Create(&module); }
