"""``delay``: vaurien's latency fault."""

from __future__ import annotations

from pytest_vaurien.handlers.base import BaseHandler, Range
from pytest_vaurien.handlers.context import ExchangeFault, SocketView
from pytest_vaurien.handlers.streams import forward_later, relay

__all__ = ["Delay", "jittered"]


def jittered(handler: BaseHandler, base: float, jitter: float) -> float:
    """``base`` plus a uniform draw in [-jitter, +jitter] from the seeded source, at least 0."""
    spread = handler.random.uniform(-jitter, jitter) if jitter else 0.0
    return max(0.0, base + spread)


class Delay(BaseHandler):
    """Delays each chunk: to the backend (before=True) or back to the client.

    Every chunk is delivered ``sleep`` seconds plus a uniform draw in
    [-jitter, +jitter] (never below 0) after it arrived, in order; reading
    goes on meanwhile, so a stream is shifted, not slowed down.
    """

    name = "delay"
    options = {
        "sleep": ("Delay in seconds", float, 1.0, Range(0)),
        "before": ("If True adds before the backend is called, otherwise after", bool, True),
        "jitter": ("Random variation of the delay, in seconds (+/-)", float, 0.0, Range(0)),
    }

    def pause(self) -> float:
        """The delay for one chunk, in seconds."""
        sleep: float = self.option("sleep")
        jitter: float = self.option("jitter")
        return jittered(self, sleep, jitter)

    def exchange_fault(self) -> ExchangeFault:
        """Waits before forwarding the request (``before``), else before relaying the reply."""
        if self.option("before"):
            return ExchangeFault(delay_request=self.pause())
        return ExchangeFault(delay_reply=self.pause())

    def __call__(self, client_sock: SocketView, backend_sock: SocketView, to_backend: bool) -> bool:
        if to_backend != self.option("before"):
            return relay(self, client_sock, backend_sock, to_backend)
        return forward_later(self, client_sock, backend_sock, to_backend, self.pause())
