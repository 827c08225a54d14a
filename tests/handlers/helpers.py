"""What the inner test files of the handler tests share: a plain socket client."""

from __future__ import annotations

import textwrap

import pytest

CLIENT = '''
import socket
import time

import pytest


def roundtrip(address, payload=b"ping", timeout=10):
    """Send, half-close, read to EOF; a reset counts as the end too."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except ConnectionResetError:
            pass
        return b"".join(chunks)


def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data
'''


def run_inner(
    pytester: pytest.Pytester, body: str, *args: str, passed: int = 1
) -> pytest.RunResult:
    """Write ``body`` as a test file after the client helpers, run it, expect it to pass."""
    pytester.makepyfile(CLIENT + textwrap.dedent(body))
    result = pytester.runpytest("-p", "no:randomly", *args)
    result.assert_outcomes(passed=passed)
    return result
