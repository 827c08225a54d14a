"""One gevent hub per process, on a native daemon thread, serving every proxy.

Starting and stopping a thread with a hub of its own for each proxy cost
about a millisecond a test. So the first ``Proxy.start()`` of a process
starts one thread, ``vaurien-hub``, whose hub then runs every proxy: each
proxy is only its listener's watcher there, and its connections' watchers
(a transparent one's whole life runs in loop callbacks) or greenlets.
Other threads hand it work with ``loop.run_callback_threadsafe``, the one
gevent call meant for crossing threads, and wait on native events.

The thread blocks the program's signals (they belong to the main thread),
is a daemon, and is ended at interpreter exit (bounded: a handler blocking
the hub must not hang the exit). A fork after it started leaves the child
without it: the child's first ``start()`` starts a hub of its own.

A handler that blocks (``time.sleep``, a blocking call instead of gevent's)
now stalls every proxy of the process, not only its own: it was a misuse
before, it is a visible one now.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
from gevent import GreenletExit

from pytest_vaurien.engine.native import NativeEvent, allocate_lock, get_ident, start_native_thread
from pytest_vaurien.errors import ProxyError

__all__ = ["HUB_THREAD_NAME", "SharedHub", "destroy_hub", "shared_hub"]

#: The shared hub's thread, as ``threading.enumerate()`` names it.
HUB_THREAD_NAME = "vaurien-hub"
START_TIMEOUT = 10.0
#: How long interpreter exit waits for the hub to wind down.
EXIT_TIMEOUT = 1.0


class SharedHub:
    """The hub thread of this process and how to hand it work."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.loop: Any = None
        self.ident: int | None = None
        self.thread: Any = None
        #: The proxies running on this hub (each removes itself once stopped).
        self.proxies: set[Any] = set()
        self._ready = NativeEvent()
        self.done = NativeEvent()
        self._quit: gevent.event.Event | None = None
        self._error: BaseException | None = None

    @property
    def alive(self) -> bool:
        return self.loop is not None and not self.done.is_set() and self.pid == os.getpid()

    def start(self) -> None:
        self.thread = start_native_thread(self._run, HUB_THREAD_NAME)
        if not self._ready.wait(START_TIMEOUT) or self.loop is None:
            raise ProxyError(
                f"the {HUB_THREAD_NAME} thread did not start within {START_TIMEOUT:g}s"
                + (f": {self._error!r}" if self._error else "")
            )

    def call(self, func: Callable[..., Any], *args: Any) -> None:
        """Run ``func(*args)`` in the hub, as a loop callback (it must not block).

        :raises ProxyError: if the hub is gone.
        """
        loop = self.loop
        if loop is None:
            raise ProxyError(f"the {HUB_THREAD_NAME} thread is gone")
        try:
            loop.run_callback_threadsafe(func, *args)
        except ValueError as error:  # the loop is being destroyed
            raise ProxyError(f"the {HUB_THREAD_NAME} thread is gone") from error

    def spawn(self, func: Callable[[], Any]) -> None:
        """Run ``func`` in a greenlet of the hub, from any thread."""
        if self.in_thread():
            gevent.spawn(func)
        else:
            self.call(gevent.spawn, func)

    def in_thread(self) -> bool:
        """True when called from the hub's own thread (a handler, a callback)."""
        ident: int = get_ident()
        return ident == self.ident

    def quit(self, timeout: float) -> None:
        """End the hub's thread (at interpreter exit): stop what still runs, bounded."""
        quit = self._quit
        if quit is None or not self.alive or self.in_thread():
            return
        try:
            self.call(quit.set)
        except ProxyError:
            return
        self.done.wait(timeout)

    def _run(self) -> None:
        _keep_signals_for_the_main_thread()
        hub = gevent.get_hub()
        try:
            self.ident = get_ident()
            self._quit = gevent.event.Event()
            # an active timer keeps the loop alive while no proxy listens:
            # else waiting raises LoopExit
            keepalive = gevent.spawn(gevent.sleep, 10**9)
            self.loop = hub.loop
            self._ready.set()
            self._quit.wait()
            self._stop_proxies()
            keepalive.kill()
        except BaseException as error:  # never let the thread die silently
            self._error = error
            print(f"{HUB_THREAD_NAME}: {error!r}", file=sys.stderr)
        finally:
            self.loop = None
            self._ready.set()
            destroy_hub(hub)
            self.done.set()

    def _stop_proxies(self) -> None:
        """Take down whatever proxy was left running (exit without ``stop()``)."""
        downs = [gevent.spawn(proxy._go_down, GreenletExit) for proxy in list(self.proxies)]
        gevent.joinall(downs, timeout=EXIT_TIMEOUT / 2)
        self.proxies.clear()


_lock = allocate_lock()
_current: SharedHub | None = None


def shared_hub() -> SharedHub:
    """The process's hub thread, started on first use (again after a fork).

    :raises ProxyError: if its thread does not start.
    """
    global _current
    hub = _current
    if hub is not None and hub.alive:
        return hub
    with _lock:
        hub = _current
        if hub is None or not hub.alive:
            hub = SharedHub()
            hub.start()
            _current = hub
    return hub


def _after_fork_in_child() -> None:
    """The hub's thread did not cross the fork: the child starts its own."""
    global _current, _lock
    _current = None
    _lock = allocate_lock()


def _at_exit() -> None:
    hub = _current
    if hub is not None:
        hub.quit(EXIT_TIMEOUT)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)


#: Signals meant for the program (Ctrl-C, a stop, a reload, pytest-timeout's alarm).
_PROGRAM_SIGNALS = frozenset(
    getattr(signal, name)
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGALRM", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, name)
)


def _keep_signals_for_the_main_thread() -> None:
    """Block the program's signals in the hub's thread.

    The kernel hands a process's signal to any thread that does not block it;
    if it lands here, Python only flags it, and a main thread blocked on a
    lock (the command waiting for SIGTERM) may never see it.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, _PROGRAM_SIGNALS)


def destroy_hub(hub: Any) -> None:
    """Destroy a thread's hub so that nothing of it outlives the thread.

    ``Hub.destroy`` leaves the hub greenlet suspended where it told its parent
    the loop had exited; a thread that ends then leaks that greenlet and its
    frames. Ending the greenlet with ``GreenletExit`` lets all of it be freed.
    """
    hub.destroy(destroy_loop=True)
    if not hub.dead:
        try:
            hub.throw(GreenletExit)
        except BaseException:  # whatever it says on the way out, it is gone
            pass
