"""The optional C relay (``pytest_vaurien/engine/_relay.c``): built where a C
compiler is at hand; without one the package installs all the same and
relays in Python (everything else is in pyproject.toml)."""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pytest_vaurien.engine._relay",
            ["pytest_vaurien/engine/_relay.c"],
            optional=True,
        )
    ]
)
