"""A real ``vaurien --control`` process for the tests of the control API.

``control_server`` (module scope) is one ``vaurien --control 127.0.0.1:0``
subprocess; its ``url`` is the API's. ``client`` is a :class:`Client` of it
that deletes every proxy a test left behind. ``start_control_server()``
starts another one (a token, a config file) for as long as a ``with`` lasts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pytest_vaurien.client import Client, ControlClientError
from tests.backends import ControlProcess, start_control_server

__all__ = ["ControlProcess", "start_control_server"]


@pytest.fixture(scope="module")
def control_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlProcess]:
    """One ``vaurien --control 127.0.0.1:0`` process for the module's tests."""
    with start_control_server(tmp_path_factory.mktemp("control")) as server:
        yield server


@pytest.fixture
def client(control_server: ControlProcess) -> Iterator[Client]:
    """A client of ``control_server``; the proxies a test leaves are deleted after it."""
    client = control_server.client()
    yield client
    for proxy in client.proxies():
        try:
            client.delete(proxy.name)
        except ControlClientError as error:
            if error.status != 404:
                raise
