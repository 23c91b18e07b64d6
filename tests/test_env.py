"""Where the environment is read: only in the explicit ``from_env()`` constructors (used by
the CLI and server), never by ``Memory()``, ``AsyncMemory()`` or ``MemoryManager()``."""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import memlane
from chat_server import ChatServer
from memlane import AsyncMemory, Memory
from memlane.embedders.onnx import OnnxEmbedder
from memlane.errors import ConfigurationError
from memlane.llm import OpenAIChat
from memlane.manager import AsyncMemoryManager, MemoryManager
from memlane.testing import FakeEmbedder


@pytest.fixture()
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def everything_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chat: ChatServer) -> Path:
    """Every MEMLANE_ variable a constructor could be tempted to read, and a private
    platform data directory (XDG_DATA_HOME) for the default store."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("MEMLANE_STORE", f"sqlite:///{tmp_path}/from-env.db")
    monkeypatch.setenv("MEMLANE_DATA_DIR", str(tmp_path / "env-data"))
    monkeypatch.setenv("MEMLANE_EMBEDDER", "fake")
    monkeypatch.setenv("MEMLANE_LLM_BASE_URL", chat.base_url)
    monkeypatch.setenv("MEMLANE_LLM_MODEL", "scripted")
    return tmp_path


def test_constructors_ignore_the_environment(everything_set: Path) -> None:
    default = f"sqlite:///{everything_set}/xdg/memlane/memlane.db"
    memory = Memory()
    assert memory.store.url == default
    assert isinstance(memory.embedder, OnnxEmbedder)
    assert MemoryManager(memory).llm is None
    amemory = AsyncMemory()
    assert amemory.store.url == default
    assert isinstance(amemory.embedder, OnnxEmbedder)
    assert AsyncMemoryManager(amemory).llm is None
    # Nothing was opened: no file appeared anywhere the environment names.
    assert not (everything_set / "from-env.db").exists()
    assert not (everything_set / "env-data").exists()


def test_from_env_honours_the_store_embedder_and_chat_model(
    everything_set: Path, chat: ChatServer
) -> None:
    with Memory.from_env() as memory:
        assert memory.store.url == f"sqlite:///{everything_set}/from-env.db"
        assert memory.embedder.model_id == FakeEmbedder().model_id
        memory.add("Lives in Paris", user_id="alice")
        manager = MemoryManager.from_env(memory, allow_delete=False)
        assert isinstance(manager.llm, OpenAIChat) and manager.llm.model == "scripted"
        assert manager.config.allow_delete is False
        chat.queue({"memories": []})
        assert manager.process([("user", "hello")], user_id="alice").candidates == ()
    assert chat.requests[-1]["model"] == "scripted"

    async def main() -> None:
        async with AsyncMemory.from_env() as amemory:
            assert amemory.store.url == f"sqlite:///{everything_set}/from-env.db"
            assert [r.text for r in (await amemory.list(user_id="alice")).items] == [
                "Lives in Paris"
            ]
            assert AsyncMemoryManager.from_env(amemory).llm is not None

    asyncio.run(main())


def test_from_env_puts_the_default_store_in_memlane_data_dir(
    everything_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEMLANE_STORE")
    assert Memory.from_env().store.url == f"sqlite:///{everything_set}/env-data/memlane.db"
    # An explicit mapping is read instead of os.environ.
    explicit = Memory.from_env({"MEMLANE_EMBEDDER": "fake"})
    assert explicit.store.url == f"sqlite:///{everything_set}/xdg/memlane/memlane.db"


def test_half_a_chat_model_configuration_is_an_error(
    everything_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEMLANE_LLM_MODEL")
    memory = Memory("memory://", embedder=FakeEmbedder())
    with pytest.raises(ConfigurationError, match="MEMLANE_LLM_MODEL"):
        MemoryManager.from_env(memory)
    with pytest.raises(ConfigurationError, match="MEMLANE_LLM_MODEL"):
        OpenAIChat.from_env()
    # Neither variable: from_env gives a manager without a model (extractive fallbacks),
    # while OpenAIChat.from_env, asked for a model, says what is missing.
    monkeypatch.delenv("MEMLANE_LLM_BASE_URL")
    assert MemoryManager.from_env(memory).llm is None
    with pytest.raises(ConfigurationError, match="MEMLANE_LLM_BASE_URL"):
        OpenAIChat.from_env()


ENV_NAMES = frozenset({"environ", "environb", "getenv", "putenv"})


def environment_uses(node: ast.AST, imported: set[str], function: str) -> Iterator[tuple[str, int]]:
    """(enclosing function, line) of each ``os.environ``/``os.getenv``... under ``node``;
    ``imported`` are the names taken with ``from os import ...``."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        function = node.name
    via_os = (
        isinstance(node, ast.Attribute)
        and node.attr in ENV_NAMES
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )
    if via_os or (isinstance(node, ast.Name) and node.id in imported):
        yield function, getattr(node, "lineno", 0)
    for child in ast.iter_child_nodes(node):
        yield from environment_uses(child, imported, function)


def environment_reads(src: Path) -> list[tuple[str, str, int]]:
    """Every use of the environment through ``os`` in ``src``, as (module path, enclosing
    function, line)."""
    found: list[tuple[str, str, int]] = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        imported = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "os"
            for alias in node.names
            if alias.name in ENV_NAMES
        }
        module = path.relative_to(src).as_posix()
        found += [(module, f, line) for f, line in environment_uses(tree, imported, "<module>")]
    return found


def test_only_from_env_constructors_read_the_environment() -> None:
    """The library reads the environment only in ``from_env()`` (Settings.from_env, which the
    other constructors, the CLI and the server use, and OpenAIChat.from_env). The torch
    embedder's ``_load`` only writes defaults (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE,
    OMP_WAIT_POLICY) for the libraries it is about to import; it reads no setting."""
    src = Path(memlane.__file__).parent
    found = environment_reads(src)
    readers = {(module, function) for module, function, _ in found}
    assert ("settings.py", "from_env") in readers
    assert ("llm/openai_chat.py", "from_env") in readers
    allowed = {("embedders/torch.py", "_load")}
    stray = [(m, f, line) for m, f, line in found if f != "from_env" and (m, f) not in allowed]
    assert stray == []
    torch_source = (src / "embedders" / "torch.py").read_text().splitlines()
    for module, _, line in found:
        if module == "embedders/torch.py":
            assert "os.environ.setdefault(" in torch_source[line - 1]
