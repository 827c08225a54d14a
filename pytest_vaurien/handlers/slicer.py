"""``slicer``: toxiproxy's slicer toxic."""

from __future__ import annotations

import gevent

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import SocketView
from pytest_vaurien.handlers.streams import DIRECTION_OPTION, affects, relay

__all__ = ["Slicer"]


class Slicer(BaseHandler):
    """Cuts each chunk into pieces of ``average_size`` +/- ``size_variation`` bytes.

    Pieces are sent one by one, ``delay`` seconds apart, so the receiver's
    reads return many small pieces. An ``average_size`` of 0 leaves chunks
    whole.
    """

    name = "slicer"
    options = {
        "average_size": (
            "Average size of a piece, in bytes; 0 leaves chunks whole",
            int,
            0,
            Range(0),
        ),
        "size_variation": (
            "Random variation of a piece's size, in bytes (+/-)",
            int,
            0,
            Range(0),
        ),
        "delay": ("Seconds between two pieces", float, 0.0, Range(0)),
        "direction": DIRECTION_OPTION,
    }

    def sizes(self, total: int) -> list[int]:
        """Piece sizes that add up to ``total``, drawn from the seeded source."""
        average: int = self.option("average_size")
        variation: int = min(self.option("size_variation"), max(0, average - 1))
        sizes: list[int] = []
        left = total
        while left > 0:
            size = average + (self.random.randint(-variation, variation) if variation else 0)
            size = min(left, max(1, size))
            sizes.append(size)
            left -= size
        return sizes

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        if self.option("average_size") <= 0 or not affects(self, to_backend):
            return relay(self, client_sock, backend_sock, to_backend)
        data = self._get_data(client_sock, backend_sock, to_backend)
        if not data:
            return False
        dest = backend_sock if to_backend else client_sock
        delay: float = self.option("delay")
        view = memoryview(data)
        start = 0
        for index, size in enumerate(self.sizes(len(data))):
            if index and delay > 0:
                gevent.sleep(delay)
            dest.sendall(view[start : start + size])
            start += size
        return True
