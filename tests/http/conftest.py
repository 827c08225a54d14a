from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.http.backend import HttpBackend


@pytest.fixture
def http_backend() -> Iterator[HttpBackend]:
    """A real HTTP/1.1 server of this test's own."""
    server = HttpBackend()
    yield server
    server.close()
    # a client's exception (a read timeout, a retry) keeps its socket in a
    # reference cycle: collect it now, before the descriptor check
    gc.collect()
