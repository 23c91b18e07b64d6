"""Shared fixtures. Tests never touch the user's real data directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from chat_server import ChatServer

# Real PostgreSQL and Redis servers for the tests that need them (see tests/servers.py).
pytest_plugins = ("tests.servers",)


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("MEMLANE_DATA_DIR", str(tmp_path / "data"))  # from_env() and the CLI
    # Memory() reads no MEMLANE_ variable: its default file is in the platform's user data
    # directory, which platformdirs takes from XDG_DATA_HOME on Linux.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MEMLANE_STORE", raising=False)
    monkeypatch.delenv("MEMLANE_EMBEDDER", raising=False)
    yield


@pytest.fixture(scope="module")
def server() -> Iterator[ChatServer]:
    """The scripted chat-completions server on loopback (tests/chat_server.py), one per
    test module; tests call ``server.reset()`` before they script it."""
    s = ChatServer().start()
    yield s
    s.stop()
