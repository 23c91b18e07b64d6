"""Helpers shared by test modules: running the scripts in examples/ as real processes.

The examples are documentation users copy; the tests run them unchanged, in a subprocess
with the environment a user would set, so what the docs promise is what they do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from chat_server import ChatServer

REPO = Path(__file__).resolve().parents[1]


def example_env(store: Path, chat: ChatServer | None = None) -> dict[str, str]:
    """This process's environment plus a SQLite store at ``store``, the fake embedder and,
    with ``chat``, the scripted chat server as the model."""
    env = {
        **os.environ,
        "MEMLANE_STORE": f"sqlite:///{store}",
        "MEMLANE_EMBEDDER": "fake",
        "HF_HUB_OFFLINE": "1",
    }
    if chat is not None:
        env |= {"MEMLANE_LLM_BASE_URL": chat.base_url, "MEMLANE_LLM_MODEL": "scripted"}
    return env


def run_example(
    name: str, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` with ``args``; the caller checks its exit code and output."""
    command = [sys.executable, str(REPO / "examples" / name), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
