"""Redis pipelines framed in one pass: the common commands and replies as regular expressions.

A pipeline of 100 commands framed by a Python loop costs microseconds a
command; the same bytes matched by one compiled pattern cost a fraction of
one. The patterns here recognise only a *subset* of RESP, exactly: a bulk
string is matched by its length (an alternation over the decimal lengths
0..:data:`MAX_BULK`, each followed by exactly that many bytes), so wherever a
pattern matches, the message ends where the full parser in :mod:`redis` and
:mod:`redis_reply` would end it. What they do not recognise (a longer value,
an inline command, a nested reply, a command that changes the connection's
state) is left to those parsers, one message at a time.

Each pattern is a run (as many whole messages as follow each other from a
position, anchored) and a single message (without groups, for ``findall``
and ``subn``): the run says where the batch ends, ``findall`` over that span
how many messages it holds; a chunk that is nothing but messages is counted
by one ``subn`` (see :func:`count_run`). All are linear in the bytes they see.
Compiled when the module loads (about 0.08 s), which is when a plan that
frames Redis is built, before its proxy listens: the first pipeline a client
sends does not wait for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

__all__ = ["MAX_ARGS", "MAX_BULK", "SPECIAL", "Span", "commands", "count_run", "replies"]

#: The longest bulk string the patterns recognise; longer ones go to the parser.
MAX_BULK = 255
#: The most arguments (command name included) of a command, or elements of a
#: flat array reply, the patterns recognise.
MAX_ARGS = 5

#: Commands that are never batched: the handshake, transactions, and what
#: switches the stream or changes how it is framed (the parser keeps their state).
SPECIAL = (
    "HELLO", "AUTH", "CLIENT", "SELECT", "MULTI", "EXEC", "DISCARD", "RESET", "WATCH",
    "QUIT", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "SYNC", "PSYNC",
)  # fmt: skip


class Span(NamedTuple):
    """One kind of message's compiled pattern, three ways."""

    #: Anchored: as many whole messages as follow each other from a position.
    run: Callable[..., re.Match[bytes] | None]
    #: The messages, each as bytes.
    findall: Callable[..., list[bytes]]
    #: With ``b""``: what is not a message, and how many messages there were.
    subn: Callable[..., tuple[bytes, int]]


_compiled: dict[str, Span] = {}


def _lengths(node: bytes = b"") -> bytes:
    """``"N\\r\\n"`` followed by exactly N bytes and CRLF, for N in 0..MAX_BULK,
    as a trie of the decimal digits (no leading zero): the C engine rejects a
    wrong branch on its first byte."""
    branches = []
    if node:
        size = int(node)
        branches.append(b"\r\n" + (b".{%d}" % size if size else b"") + b"\r\n")
    if node != b"0":
        for digit in b"0123456789":
            longer = node + bytes([digit])
            if int(longer) <= MAX_BULK:
                branches.append(bytes([digit]) + b"(?:" + _lengths(longer) + b")")
    return b"|".join(branches)


def _span(one: bytes) -> Span:
    single = re.compile(b"(?s:" + one + b")")
    return Span(re.compile(b"(?s:(?:" + one + b")*)").match, single.findall, single.subn)


def commands() -> Span:
    """The :class:`Span` of multibulk commands of 1 to MAX_ARGS bulk strings
    whose name is none of :data:`SPECIAL`."""
    span = _compiled.get("commands")
    if span is None:
        bulk = b"\\$(?:" + _lengths() + b")"
        # the special names grouped by length, after their "$": an ordinary
        # command name fails the look-ahead at its length's digits
        by_length: dict[int, list[str]] = {}
        for name in SPECIAL:
            by_length.setdefault(len(name), []).append(name)
        special = b"|".join(
            b"%d\r\n(?i:%s)" % (size, "|".join(names).encode())
            for size, names in sorted(by_length.items())
        )
        # the look-ahead sits on the name's bulk string, inside each count's
        # branch: checked where the name starts, not from the count again
        first = b"(?!\\$(?:" + special + b")\r\n)" + bulk
        one = (
            b"\\*(?:"
            + b"|".join(
                b"%d\r\n%s(?:%s){%d}" % (count, first, bulk, count - 1)
                for count in range(1, MAX_ARGS + 1)
            )
            + b")"
        )
        span = _compiled["commands"] = _span(one)
    return span


def replies() -> Span:
    """The :class:`Span` of simple replies (``+OK``, ``-ERR ...``, ``:1``,
    RESP3 nulls, doubles, booleans, big numbers), bulk strings, RESP2 nulls
    and flat arrays of up to MAX_ARGS of those. Not pushes, attributes, maps,
    sets, verbatim strings or nested arrays: the parser frames those."""
    span = _compiled.get("replies")
    if span is None:
        value = b"(?:[-+:_,#(][^\r\n]*\r\n|\\$(?:-1\r\n|" + _lengths() + b"))"
        one = (
            b"(?:"
            + value
            + b"|\\*(?:-1\r\n|0\r\n|"
            + b"|".join(
                b"%d\r\n(?:%s){%d}" % (count, value, count) for count in range(1, MAX_ARGS + 1)
            )
            + b"))"
        )
        span = _compiled["replies"] = _span(one)
    return span


def count_run(
    span: Span, buf: bytes | bytearray, pos: int, first: bool = False
) -> tuple[int, int, list[bytes] | None]:
    """Where the run of whole messages from ``pos`` ends, how many it holds,
    and the messages themselves, unless they were not needed to count them
    (``None``).

    ``first``: try once whether the whole rest of ``buf`` is messages the
    pattern recognises (the common case: a pipeline, whole in its chunk).
    From the start of a ``bytes`` buffer, one ``subn`` says so with no object
    per message: nothing left over means the matches tile the buffer. Else
    one ``findall``: the matches are consecutive from ``pos`` exactly when
    their concatenation is what ``buf`` holds from ``pos``. Either way a
    message's extent is fixed by its first bytes, so the matches are the
    messages, and the run cannot go further. When not, the anchored run says
    where to stop. Only a feed's first attempt tries that, so a feed costs at
    most one extra pass.
    """
    if first:
        if pos == 0 and isinstance(buf, bytes):
            rest, count = span.subn(b"", buf)
            if count and not rest:
                return len(buf), count, None
        else:
            found = span.findall(buf, pos)
            if found:
                joined = found[0] if len(found) == 1 else b"".join(found)
                if buf.startswith(joined, pos):
                    return pos + len(joined), len(found), found
    match = span.run(buf, pos)
    end = match.end() if match is not None else pos
    found = span.findall(buf, pos, end) if end > pos else []
    return end, len(found), found


commands()
replies()
