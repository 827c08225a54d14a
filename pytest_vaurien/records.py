"""What happened to each connection, kept for tests and reports."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

__all__ = ["ConnectionRecord", "Ending", "format_records"]


class Ending(str, enum.Enum):
    """How a connection ended."""

    CLIENT_CLOSED = "client closed"
    BACKEND_CLOSED = "backend closed"
    HANDLER_CLOSED = "handler closed"
    BACKEND_REFUSED = "backend refused"
    RESET = "reset"
    PROXY_STOPPED = "proxy stopped"
    ERROR = "error"

    def __str__(self) -> str:
        return self.value


@dataclass
class ConnectionRecord:
    """One accepted connection, filled in by the relay as it runs.

    ``handler`` is the chain the connection drew (``"delay"``,
    ``"latency+bandwidth"``); after a live behavior change it is the chain in
    force last, and ``handlers`` lists every chain in order.
    """

    index: int
    client: str
    handler: str = ""
    handlers: list[str] = field(default_factory=list)
    bytes_to_backend: int = 0
    bytes_to_client: int = 0
    started: float = field(default_factory=time.time)
    duration: float | None = None
    ending: Ending | None = None
    error: str | None = None

    @property
    def open(self) -> bool:
        """True while the connection is still being relayed."""
        return self.ending is None

    def end(self, ending: Ending, error: str | None = None) -> None:
        """Mark the connection ended; the first ending recorded wins."""
        if self.ending is None:
            self.ending = ending
            self.error = error
            self.duration = time.time() - self.started

    def describe(self) -> str:
        """A one-line summary, as the report and the command log print it."""
        how = "open" if self.ending is None else str(self.ending)
        if self.error:
            how = f"{how}: {self.error}"
        took = "" if self.duration is None else f" in {self.duration:.3f}s"
        return (
            f"#{self.index} {self.client} {self.handler or '-'}: "
            f"{self.bytes_to_backend} B to backend, {self.bytes_to_client} B to client, "
            f"{how}{took}"
        )


def format_records(records: list[ConnectionRecord]) -> str:
    """The records as lines, one per connection."""
    return "\n".join(record.describe() for record in records)
