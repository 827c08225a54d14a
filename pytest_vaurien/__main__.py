"""``python -m pytest_vaurien``: the ``vaurien`` command."""

from __future__ import annotations

import sys

from pytest_vaurien.cli import main

sys.exit(main())
