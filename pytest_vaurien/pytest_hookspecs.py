"""Hooks pytest-vaurien adds to pytest, for ``conftest.py`` files and plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_vaurien.handlers.base import BaseHandler


@pytest.hookspec
def pytest_vaurien_add_handlers(config: pytest.Config) -> list[type[BaseHandler]]:  # type: ignore[empty-body]
    """Return handler classes to make available, by their ``name``.

    Called for each test that uses a vaurien fixture, through the test's own
    hook proxy: a ``conftest.py`` implementation applies to the tests in its
    directory and below, an installed pytest plugin's to every test. Also
    called once at start-up so that ``--vaurien-behavior`` and the ini options
    can name these handlers.

    Not ``firstresult``: every implementation's list is used. A name defined
    twice (or shadowing a built-in) fails the test, naming both sources.

    :param config: the pytest config object.
    :return: a list of ``pytest_vaurien.BaseHandler`` subclasses, or ``None``.

    Use in conftest plugins
    =======================

    Any conftest file can implement this hook; no decorator is needed.
    """
