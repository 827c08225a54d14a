"""Native threads and events, whether or not the user's process is monkey-patched.

The shared hub's thread must be a real OS thread with a hub of its own, and
the test thread must wait on it with a real lock: in a patched process
``threading`` is green and would wait on the wrong hub.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import gevent.monkey

__all__ = ["NativeEvent", "allocate_lock", "get_ident", "start_native_thread"]

allocate_lock = gevent.monkey.get_original("_thread", "allocate_lock")
#: The OS thread's identity (a patched ``threading.get_ident`` names greenlets).
get_ident = gevent.monkey.get_original("_thread", "get_ident")
_start_new_thread = gevent.monkey.get_original("_thread", "start_new_thread")


class NativeEvent:
    """A one-shot event on a native lock: safe across threads even when the
    user's process is monkey-patched (where ``threading.Event`` is green)."""

    def __init__(self) -> None:
        self._lock = allocate_lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        if self._set:
            return True
        if self._lock.acquire(True, timeout):
            self._lock.release()
        return self._set


def start_native_thread(target: Callable[[], None], name: str) -> threading.Thread | None:
    """Start ``target`` on a real OS thread, named when ``threading`` is ours
    (then returned, to be joined)."""
    if gevent.monkey.is_module_patched("threading"):
        _start_new_thread(target, ())
        return None
    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    return thread
