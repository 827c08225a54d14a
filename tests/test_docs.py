"""The docs and the README stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_vaurien.handlers.builtin import BUILTIN_HANDLERS

ROOT = Path(__file__).resolve().parent.parent


def handler_rows(handler: type) -> list[str]:
    return [
        f"| `{option}` | {spec[1].__name__} | `{spec[2]!r}` | {spec[0]} |"
        for option, spec in handler.options.items()
    ]


@pytest.mark.parametrize("handler", BUILTIN_HANDLERS, ids=lambda h: h.name)
def test_every_builtin_handler_and_option_is_documented(handler):
    page = (ROOT / "docs" / "handlers.md").read_text()
    heading = re.search(rf"^(#{{2,3}}) {handler.name}$", page, flags=re.MULTILINE)
    assert heading, f"docs/handlers.md has no section {handler.name}"
    section = re.split(r"^#{2,3} ", page[heading.end() :], maxsplit=1, flags=re.MULTILINE)[0]
    for row in handler_rows(handler):
        assert row in section, f"docs/handlers.md, section {handler.name}, lacks: {row}"
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    assert sorted(documented) == sorted(handler.options)


def test_readme_starts_with_a_two_line_quickstart():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("```", 2)[1]
    commands = [line for line in quickstart.splitlines() if line.strip()]
    assert len(commands) == 2
    assert "pytest examples" in commands[0]
    assert commands[1].endswith("python -m pytest")


def test_the_http_recipes_are_the_examples_ci_runs():
    """Each recipe of docs/http.md is, word for word, a test of examples/test_http_recipes.py."""
    page = (ROOT / "docs" / "http.md").read_text().split("## Recipes", 1)[1]
    recipes = [block.split("```", 1)[0] for block in page.split("```python\n")[1:]]
    examples = (ROOT / "examples" / "test_http_recipes.py").read_text()
    assert len(recipes) == 5
    for recipe in recipes:
        assert recipe in examples, recipe
