"""The ``vaurien`` process at run time: its proxies and, with ``--control``, the
control API, until SIGINT or SIGTERM (SIGHUP reloads ``--config``).

``cli.py`` reads the command line and hands over here; this module starts
what it was given, says where it listens, and stops everything on the way
out, whatever happens.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import tempfile
from pathlib import Path
from typing import Any

from pytest_vaurien.address import format_address
from pytest_vaurien.api import ControlServer
from pytest_vaurien.control import Control, ControlError
from pytest_vaurien.echo import echo
from pytest_vaurien.engine.proxy import Proxy
from pytest_vaurien.errors import ConfigError
from pytest_vaurien.records import ConnectionRecord
from pytest_vaurien.reload import Reloader

__all__ = ["DEFAULT_PROXY", "log_record", "serve"]

#: The name of the proxy made from --local/--distant (vaurien 1.x's /behavior acts on it).
DEFAULT_PROXY = "default"
#: SIGHUP does not exist on Windows.
SIGHUP: int | None = getattr(signal, "SIGHUP", None)

log = logging.getLogger("vaurien")


def log_record(record: ConnectionRecord) -> None:
    if log.isEnabledFor(logging.INFO):  # describe() is not free: skip it when unseen
        log.info("%s", record.describe())


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _write_port_file(path: str, port: int, flag: str) -> None:
    """Write ``PORT\\n`` atomically: a reader sees no file or the whole number."""
    target = Path(path)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w") as stream:
                stream.write(f"{port}\n")
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError as error:
        raise ConfigError(f"{flag}: cannot write {echo(path)}: {error.strerror or error}") from None


def serve(
    control: Control,
    proxies: list[Proxy],
    reloader: Reloader | None,
    *,
    port_file: str | None = None,
    control_address: tuple[str, int] | None = None,
    control_token: str | None = None,
    control_port_file: str | None = None,
) -> int:
    """Start ``proxies`` (held by ``control``) and the control API if it has an
    address; run until SIGINT or SIGTERM; SIGHUP reloads.

    Signal handlers only queue the signal (``SimpleQueue.put`` is safe in
    one); the main loop acts on it, outside the handler.
    """
    signals: queue.SimpleQueue[int] = queue.SimpleQueue()
    server = (
        ControlServer(control, control_address[0], control_address[1], token=control_token)
        if control_address is not None
        else None
    )

    def queue_signal(signum: int, frame: Any) -> None:
        signals.put(signum)

    handled = [signal.SIGINT, signal.SIGTERM] + ([SIGHUP] if SIGHUP is not None else [])
    previous = {sig: signal.signal(sig, queue_signal) for sig in handled}
    written: list[str] = []
    try:
        for proxy in proxies:
            try:
                control.add(proxy)
            except ControlError as error:
                raise ConfigError(error.message) from None
            if port_file is not None and not written:
                _write_port_file(port_file, proxy.port, "--port-file")
                written.append(port_file)
            _say(f"listening on {format_address(proxy.address)}")
            log.info(
                "proxying %s -> %s, behavior %s, seed %s%s",
                format_address(proxy.address),
                proxy.distant,
                proxy.behavior,
                proxy.seed,
                "" if proxy.name == DEFAULT_PROXY else f" ({proxy.name})",
            )
        if server is not None:
            server.start()
            _say(f"control API on {server.url}")
            log.info("control API on %s", server.url)
            if control_port_file is not None:
                _write_port_file(control_port_file, server.port, "--control-port-file")
                written.append(control_port_file)
        while True:
            try:  # bounded: pending signal handlers run at least this often
                signum = signals.get(timeout=1.0)
            except queue.Empty:
                continue
            if signum != SIGHUP:
                break
            if reloader is None:
                log.warning("SIGHUP: no --config file to reload; ignored")
            else:
                reloader.reload()
        if server is not None:
            server.stop()
        for proxy in control.proxies():
            open_connections = proxy.open_connections
            proxy.stop()
            log.info(
                "stopped%s; %s relayed, %d %s open",
                "" if proxy.name == DEFAULT_PROXY else f" {proxy.name}",
                _plural(proxy.accepted, "connection"),
                open_connections,
                "was" if open_connections == 1 else "were",
            )
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if server is not None:
            server.stop()
        control.stop_all()
        for proxy in proxies:
            proxy.stop()
        for path in written:
            try:
                os.unlink(path)
            except OSError:
                pass


def _say(line: str) -> None:
    try:
        print(line, flush=True)
    except OSError:  # stdout closed (a pipe nobody reads): the proxy runs on
        pass
