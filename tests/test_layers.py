"""The import contracts in pyproject.toml ([tool.importlinter]) hold: layers point down and no
package has an import cycle. ``lint-imports`` runs here as well as in scripts/test.sh, so the
suite fails too; the other tests prove the contracts fail when a layer is crossed."""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import memlane
import memlane.embedders.fake
import memlane.testing
from memlane.embedders.spec import build_embedder

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the project's contracts over the package in ``src``."""
    assert LINT_IMPORTS.exists(), "install the dev extra: pip install -e '.[dev]'"
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(ROOT / "pyproject.toml")],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def copy_with_import(tmp_path: Path, module: str, statement: str) -> Path:
    """A copy of src/ in which ``module`` (a path under src/memlane) ends with ``statement``."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__"))
    target = src / "memlane" / module
    target.write_text(target.read_text() + f"\n\ndef _crossing() -> None:\n    {statement}\n")
    return src


def test_the_import_contracts_hold() -> None:
    done = lint_imports(ROOT / "src")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_top_level_module_has_a_layer() -> None:
    """A new ``memlane.<name>`` must be placed in a layer of pyproject.toml, or the layers
    contract would not constrain it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c["layers"] for c in config["contracts"] if c["type"] == "layers"]
    placed = {name.strip() for layer in layers for name in layer.split("|")}
    modules = {m.name for m in pkgutil.iter_modules(memlane.__path__)}
    assert modules - placed == set(), "add these to a layer in pyproject.toml"
    assert placed - modules == set()


CROSSINGS = {
    "the core importing the API breaks the layers": (
        "core/flow.py",
        "from memlane.api import Memory  # noqa",
        "memlane.core is not allowed to import memlane.api",
    ),
    "an adapter importing settings breaks the layers": (
        "llm/openai_chat.py",
        "from memlane.settings import Settings  # noqa",
        "memlane.llm is not allowed to import memlane.settings",
    ),
    "a cycle inside one layer breaks the acyclic contract": (
        "manager/subjects.py",
        "from memlane.manager.flows import ManagerConfig  # noqa",
        "No cycles are allowed in memlane.manager",
    ),
    "one store backend importing another breaks independence": (
        "stores/sqlite.py",
        "from memlane.stores.memory import MemoryStore  # noqa",
        "memlane.stores.sqlite is not allowed to import memlane.stores.memory",
    ),
    "the core importing a driver breaks the forbidden contract": (
        "core/records.py",
        "import sqlite3  # noqa",
        "memlane.core is not allowed to import sqlite3",
    ),
}


@pytest.mark.parametrize(("module", "statement", "complaint"), CROSSINGS.values(), ids=CROSSINGS)
def test_a_crossing_import_breaks_a_contract(
    tmp_path: Path, module: str, statement: str, complaint: str
) -> None:
    done = lint_imports(copy_with_import(tmp_path, module, statement))
    assert done.returncode != 0
    assert complaint in done.stdout


def test_the_fake_embedder_lives_with_the_embedders() -> None:
    """The ``fake`` spec is built from memlane.embedders, not from memlane.testing (which
    sits above the API); memlane.testing re-exports the same class."""
    assert memlane.testing.FakeEmbedder is memlane.embedders.fake.FakeEmbedder
    assert type(build_embedder("fake:8")) is memlane.embedders.fake.FakeEmbedder
