"""The "application code" under test: a small HTTP client with a timeout and retries."""

from __future__ import annotations

import http.client
import json
from typing import Any


def fetch_status(host: str, port: int, timeout: float = 2.0, retries: int = 0) -> dict[str, Any]:
    """GET /status and decode the JSON reply, retrying on connection trouble."""
    attempt = 0
    while True:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            connection.request("GET", "/status")
            response = connection.getresponse()
            document: dict[str, Any] = json.loads(response.read())
            return document
        except (OSError, http.client.HTTPException, ValueError):
            attempt += 1
            if attempt > retries:
                raise
        finally:
            connection.close()
