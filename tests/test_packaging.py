"""What ships is what the checkout holds: every module, py.typed, the license.

A file missing from the package passes every test run from the checkout and
breaks every user; so the sdist and the wheel are built here and read. The
README is the package's long description: its first example and its
Quickstart are checked here too.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_vaurien"
NAME = "pytest_vaurien-0.1.0"

#: Build output and environments a checkout may hold: not sources.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "dist",
    "site",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
)


def source_files() -> set[str]:
    """The package's files as the checkout holds them, relative to its parent."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist and a wheel built as a release would be (the wheel from the sdist).

    From a copy: a build writes ``*.egg-info`` and ``build/`` into its source
    tree, where parallel runs would collide.
    """
    if importlib.util.find_spec("build") is None or importlib.util.find_spec("twine") is None:
        pytest.fail("build and twine are missing: pip install '.[test]'", pytrace=False)
    source = tmp_path_factory.mktemp("source") / "pytest-vaurien"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_the_sdist_and_wheel_ship_every_module_py_typed_and_the_license(dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    expected = source_files()
    assert "pytest_vaurien/py.typed" in expected
    assert {"pytest_vaurien/engine/__init__.py", "pytest_vaurien/handlers/__init__.py"} <= expected

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = Parser().parsestr(archive.read(f"{NAME}.dist-info/METADATA").decode())
        entry_points = archive.read(f"{NAME}.dist-info/entry_points.txt").decode()
        license_text = archive.read(f"{NAME}.dist-info/licenses/LICENSE").decode()
    missing = expected - names
    assert not missing, f"the wheel lacks {sorted(missing)}"
    assert license_text == (ROOT / "LICENSE").read_text()
    assert "Copyright (c) 2026 the pytest-vaurien authors" in license_text
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata.get_all("Provides-Extra") == ["examples", "test"]
    assert re.search(r"^\[pytest11\]\nvaurien = pytest_vaurien\.plugin$", entry_points, re.M)
    assert re.search(
        r"^\[console_scripts\]\nvaurien = pytest_vaurien\.cli:main$", entry_points, re.M
    )

    with tarfile.open(sdist) as archive:
        in_sdist = {name.removeprefix(f"{NAME}/") for name in archive.getnames()}
    missing = (expected | {"LICENSE", "README.md", "pyproject.toml"}) - in_sdist
    assert not missing, f"the sdist lacks {sorted(missing)}"

    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_readmes_first_example_is_the_runnable_file_it_names() -> None:
    """The first example once imported a ``myapp`` nobody had and talked to a
    server it did not start; now it is a copy of tests that ``pytest examples``
    runs, with the server of ``examples/conftest.py``."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A first example", 1)[1].split("\n## ", 1)[0]
    assert "examples/test_http_faults.py" in section
    example = (ROOT / "examples" / "test_http_faults.py").read_text()
    [block] = python_blocks(section)
    for piece in re.split(r"\n\n\n", block.strip()):
        assert piece.strip() in example, f"not in examples/test_http_faults.py:\n{piece}"


def test_the_quickstart_keeps_its_virtual_environments_in_the_checkout() -> None:
    """Fixed paths in /tmp were shared by every checkout on the machine."""
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("```", 2)[1]
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    for line in filter(None, quickstart.splitlines()):
        venv = re.match(r"python3 -m venv (\S+) && ", line)
        assert venv, line
        name = venv.group(1)
        assert "/" not in name, f"{name} is not a folder of the checkout"
        assert not name.startswith("~"), f"{name} is not a folder of the checkout"
        assert f"{name}/" in ignored, f"{name}/ is not in .gitignore"
        assert line.count(f"{name}/bin/") == 2, line
