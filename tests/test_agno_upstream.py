"""Agno's own db tests, run against MemlaneDb.

Agno's integration tests for its SQLite db (memories, sessions, session isolation) are
read from an Agno source tree, never copied into this repository: ``AGNO_SOURCE`` names
a checkout or a bare git directory of github.com/agno-agi/agno (by default the mirror
this project's tooling fetches, when present); without one the test is skipped. The
files run unchanged except that their ``SqliteDb`` import names MemlaneDb, and their
``sqlite_db_real`` fixture is a MemlaneDb (tests/agno_upstream/conftest.py).

Every test that names its user must pass. Tests that read, rename or delete without a
user (Agno's "all users" wildcard, or ``user_id=""``) must fail with MissingUserError:
memlane never lets an unscoped call through (docs/integrations/agno.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest.importorskip("agno")

HERE = Path(__file__).resolve().parent
MIRROR = Path("/work/.mirror/agno-agi+agno/repo")
FILES = tuple(
    f"libs/agno/tests/integration/db/sqlite/{name}.py"
    for name in ("test_memory", "test_session", "test_session_isolation")
)
IMPORT = "from agno.db.sqlite.sqlite import SqliteDb"
SHIM = "from memlane.integrations.agno import MemlaneDb as SqliteDb"


def _read(source: Path, path: str) -> str | None:
    if (source / path).is_file():
        return (source / path).read_text()
    if (source / "HEAD").is_file():  # a bare git directory
        done = subprocess.run(
            ["git", "--git-dir", str(source), "show", f"HEAD:{path}"],
            capture_output=True, text=True,
        )  # fmt: skip
        return done.stdout if done.returncode == 0 else None
    return None


def test_agnos_db_tests_pass_where_a_user_is_named(tmp_path: Path) -> None:
    source = Path(os.environ.get("AGNO_SOURCE", MIRROR))
    texts = {path: _read(source, path) for path in FILES} if source.exists() else {}
    if not texts or None in texts.values():
        pytest.skip(f"no Agno source tree at {source} (set AGNO_SOURCE)")
    shutil.copy(HERE / "agno_upstream" / "conftest.py", tmp_path / "conftest.py")
    for path, text in texts.items():
        assert text is not None and IMPORT in text
        (tmp_path / Path(path).name).write_text(text.replace(IMPORT, SHIM))
    report = tmp_path / "report.xml"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "AGNO_TELEMETRY": "false"}
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         "--rootdir", str(tmp_path), f"--junitxml={report}", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    cases = ET.parse(report).getroot().iter("testcase")
    passed, refused, other = [], [], []
    for case in cases:
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        name = f"{case.get('classname')}::{case.get('name')}"
        if problem is None and case.find("skipped") is None:
            passed.append(name)
        elif problem is not None and "MissingUserError" in (problem.get("message") or ""):
            refused.append(name)
        else:
            other.append(name)
    print(f"Agno db tests on MemlaneDb: {len(passed)} passed, {len(refused)} refused (no user)")
    assert other == [], f"failed for another reason than a missing user: {other}"
    assert len(passed) >= 15 and len(passed) + len(refused) >= 49
