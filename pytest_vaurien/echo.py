"""How a value the user wrote is echoed back in an error message.

A message names the value it rejects, but a pasted 5000-digit number or a
runaway environment variable must not flood the terminal: long values are
cut to their beginning and their length. Pure: imports nothing of ours.
"""

from __future__ import annotations

import math

__all__ = ["cut", "echo"]

#: Longer reprs are cut to ``KEEP`` characters and the value's length.
LIMIT = 60
KEEP = 40


def echo(value: object) -> str:
    """``repr(value)``, or its first ``KEEP`` characters and the length when long.

    ``echo("1" * 5000)`` gives ``'1111...'... (5000 characters)``. Never
    raises: an int too long for ``repr`` (Python 3.11's digit limit) is
    described by its number of digits.
    """
    try:
        text = repr(value)
    except ValueError:  # int longer than sys.get_int_max_str_digits()
        if isinstance(value, int):
            digits = int(abs(value).bit_length() * math.log10(2)) + 1
            return f"an integer of about {digits} digits"
        return f"a {type(value).__name__}"
    if len(text) <= LIMIT:
        return text
    if isinstance(value, int):
        return f"{text[:KEEP]}... ({len(text.lstrip('-'))} digits)"
    length = len(value) if isinstance(value, (str, bytes)) else len(text)
    return f"{text[:KEEP]}... ({length} characters)"


def cut(text: str) -> str:
    """``text`` unquoted (a section or flag name in its place), cut as :func:`echo` cuts."""
    if len(text) <= LIMIT:
        return text
    return f"{text[:KEEP]}... ({len(text)} characters)"
