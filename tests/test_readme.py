"""Every Python block of the README runs as written (with the real local model), twice in
a row against the same default store, as a reader would run it. The chat model of the
memory-manager block is the scripted OpenAI-compatible server of tests/chat_server.py on
loopback, named by the ``MEMLANE_LLM_*`` variables that ``OpenAIChat.from_env`` reads."""

from __future__ import annotations

import asyncio
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat_server import ChatServer
from memlane.ports.store import Store

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)


def _blocks() -> list[tuple[str, str]]:
    """(language tag, code) of every fenced block."""
    return FENCE.findall(README.read_text(encoding="utf-8"))


def _python_blocks() -> list[str]:
    return [code for tag, code in _blocks() if tag.strip().lower() in ("python", "py")]


def test_every_python_block_is_tagged_python() -> None:
    """No example escapes the test through a different tag (``py``, ``pycon``,
    ``python3``) or none: every block is Python, shell or a plain listing."""
    tags = {tag.strip() for tag, _ in _blocks()}
    assert tags <= {"python", "bash", ""}, tags
    for tag, code in _blocks():
        if tag.strip() == "":
            assert "import " not in code and "memlane." not in code.replace("memlane.db", "")


def _answer(body: dict[str, Any]) -> object:
    """The scripted chat model: one fact per conversation, NOOP on every decision."""
    schema = body.get("response_format", {}).get("json_schema", {}).get("name")
    if schema == "Extraction":
        fact = {"text": "The user moved to Paris", "kind": "fact", "topics": ["home"]}
        return {"memories": [{**fact, "importance": 0.6}]}
    if schema == "Decisions":
        return {"decisions": [{"candidate": 0, "action": "NOOP", "reason": "known"}]}
    if schema == "Summary":
        return {"summary": "Alice moved to Paris."}
    return "ok"


@pytest.fixture()
def chat(monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatServer]:
    server = ChatServer().start()
    server.responder = _answer
    monkeypatch.setenv("MEMLANE_LLM_BASE_URL", server.base_url)
    monkeypatch.setenv("MEMLANE_LLM_MODEL", "scripted")
    yield server
    server.stop()


def _run(code: str, name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    if "await " in code:
        imports = "\n".join(line for line in code.splitlines() if line.startswith("from "))
        body = "\n".join(line for line in code.splitlines() if not line.startswith("from "))
        code = f"{imports}\nasync def _main():\n{textwrap.indent(body, '    ')}\n"
        exec(compile(code, name, "exec"), namespace)
        asyncio.run(namespace["_main"]())
    else:
        exec(compile(code, name, "exec"), namespace)
    return namespace


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_example_runs_twice(
    index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chat: ChatServer
) -> None:
    code = _python_blocks()[index]
    monkeypatch.chdir(tmp_path)
    for run in ("first", "second"):
        namespace = _run(code, f"README block {index} ({run} run)")
    if "LLM" in code or "OpenAIChat" in code:
        assert chat.requests, "the block never reached the chat model"
    if "class TestMyStore" in code:
        assert isinstance(namespace["TestMyStore"]().make_store(), Store)
