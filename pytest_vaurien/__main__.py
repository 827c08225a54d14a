"""``python -m pytest_vaurien``: the ``vaurien`` command.

``-m`` already puts the current directory on ``sys.path``: this calls
``run``, not the console script's ``main``, which adds it itself.
"""

from __future__ import annotations

import sys

from pytest_vaurien.cli import run

sys.exit(run())
