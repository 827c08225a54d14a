"""The optional C relay (``_relay.c``): ``fastpath.Stream``'s per-chunk loop."""

from collections.abc import Callable
from typing import Any

def relay(
    source_fd: int,
    dest_fd: int,
    size: int,
    host: Any,
    plan: object,
    record: Any,
    counter: str,
    settle: Callable[[int, Any, int], bool],
) -> None: ...
