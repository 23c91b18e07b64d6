"""Where the environment is read: only in the explicit ``from_env()`` constructors (used by
the CLI and server), never by ``Memory()``, ``AsyncMemory()`` or ``MemoryManager()``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

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
