"""The import contracts in pyproject.toml ([tool.importlinter]) hold: layers point down and no
package has an import cycle. ``lint-imports`` runs here as well as in scripts/test.sh, so the
suite fails too; the other tests prove the contracts fail when a layer is crossed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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


def test_the_core_importing_the_api_breaks_the_layers(tmp_path: Path) -> None:
    src = copy_with_import(tmp_path, "core/flow.py", "from memlane.api import Memory  # noqa")
    done = lint_imports(src)
    assert done.returncode != 0
    assert "memlane.core is not allowed to import memlane.api" in done.stdout


def test_an_adapter_importing_settings_breaks_the_layers(tmp_path: Path) -> None:
    statement = "from memlane.settings import Settings  # noqa"
    done = lint_imports(copy_with_import(tmp_path, "llm/openai_chat.py", statement))
    assert done.returncode != 0
    assert "memlane.llm is not allowed to import memlane.settings" in done.stdout


def test_a_cycle_inside_one_layer_breaks_the_acyclic_contract(tmp_path: Path) -> None:
    statement = "from memlane.manager.flows import ManagerConfig  # noqa"
    done = lint_imports(copy_with_import(tmp_path, "manager/subjects.py", statement))
    assert done.returncode != 0
    assert "No cycles are allowed in memlane.manager" in done.stdout


def test_one_store_backend_importing_another_breaks_independence(tmp_path: Path) -> None:
    statement = "from memlane.stores.memory import MemoryStore  # noqa"
    done = lint_imports(copy_with_import(tmp_path, "stores/sqlite.py", statement))
    assert done.returncode != 0
    assert "memlane.stores.sqlite is not allowed to import memlane.stores.memory" in done.stdout


def test_the_core_importing_a_driver_breaks_the_forbidden_contract(tmp_path: Path) -> None:
    done = lint_imports(copy_with_import(tmp_path, "core/records.py", "import sqlite3  # noqa"))
    assert done.returncode != 0
    assert "memlane.core is not allowed to import sqlite3" in done.stdout


def test_the_fake_embedder_lives_with_the_embedders() -> None:
    """The ``fake`` spec is built from memlane.embedders, not from memlane.testing (which
    sits above the API); memlane.testing re-exports the same class."""
    assert memlane.testing.FakeEmbedder is memlane.embedders.fake.FakeEmbedder
    assert type(build_embedder("fake:8")) is memlane.embedders.fake.FakeEmbedder
