"""``transient``: the first connections fail, the retry goes through."""

from __future__ import annotations

from pytest_vaurien.handlers.base import Range
from pytest_vaurien.handlers.error import Error
from pytest_vaurien.schedule import Schedule, parse_schedule

__all__ = ["Transient"]


class Transient(Error):
    """The first ``agitate`` connections fail as ``error`` does; later ones pass.

    Counts connections given to it on one proxy (after ``warmup``), so a test
    sees its first attempt(s) fail and its retry succeed.
    """

    name = "transient"
    options = {
        **Error.options,
        "agitate": (
            "Connections that fail before the handler turns transparent",
            int,
            1,
            Range(0),
        ),
    }

    def faulty_schedule(self) -> Schedule:
        """``warmup`` and ``agitate`` as a schedule: ``after:W&first:W+A``."""
        warmup: int = self.option("warmup")
        agitate: int = self.option("agitate")
        return parse_schedule(f"after:{warmup}&first:{warmup + agitate}")
