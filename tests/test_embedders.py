"""Embedders: the real bundled model (ONNX Runtime), and an OpenAI-compatible endpoint on
loopback."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from helpers import add_three_and_find_the_dog_by_meaning
from memlane import EmbeddingError, Memory
from memlane.embedders import OnnxEmbedder, OpenAIEmbedder
from memlane.errors import ConfigurationError
from memlane.settings import Settings


@pytest.fixture(scope="module")
def local() -> OnnxEmbedder:
    return OnnxEmbedder()


def test_local_model_embeds_offline(local: OnnxEmbedder) -> None:
    vectors = local.embed(["I adopted a golden retriever", "What pet do I have?", "Tax forms"])
    assert [v.shape for v in vectors] == [(384,)] * 3
    assert all(abs(float(np.linalg.norm(v)) - 1) < 1e-4 for v in vectors)
    assert float(vectors[0] @ vectors[1]) > float(vectors[2] @ vectors[1])


def test_local_model_finds_paraphrases(local: OnnxEmbedder) -> None:
    with Memory("sqlite:///:memory:", embedder=local) as m:
        add_three_and_find_the_dog_by_meaning(m)
        assert asyncio.run(local.aembed(["x"]))[0].shape == (384,)


class _Endpoint(BaseHTTPRequestHandler):
    script: list[int] = []
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), **body}
        )
        status = type(self).script.pop(0) if type(self).script else 200
        if status != 200:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b'{"error": "scripted"}')
            return
        data = [
            {"index": i, "embedding": [float(len(text)), 1.0, 0.0]}
            for i, text in enumerate(body["input"])
        ]
        payload = json.dumps({"data": list(reversed(data)), "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Endpoint.script, _Endpoint.seen = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_embedder_retries_and_orders(endpoint: str) -> None:
    _Endpoint.script = [429, 503]
    e = OpenAIEmbedder(base_url=endpoint, model="m", api_key="k", batch_size=2, max_backoff_s=0)
    vectors = e.embed(["a", "bbb", "cc"])
    assert len(vectors) == 3 and len(_Endpoint.seen) == 4  # 2 failures, then 2 batches
    expected = np.array([1.0, 1.0, 0.0]) / np.sqrt(2)
    assert np.allclose(vectors[0], expected)
    assert _Endpoint.seen[0]["path"] == "/v1/embeddings" and _Endpoint.seen[0]["auth"] == "Bearer k"
    assert len(asyncio.run(e.aembed(["x", "y", "z"]))) == 3


def test_openai_embedder_reports_final_errors(endpoint: str) -> None:
    _Endpoint.script = [400]
    with pytest.raises(EmbeddingError, match="400"):
        OpenAIEmbedder(base_url=endpoint, model="m", max_backoff_s=0).embed(["a"])
    _Endpoint.script = [500] * 10
    failing = OpenAIEmbedder(base_url=endpoint, model="m", max_retries=2, max_backoff_s=0)
    with pytest.raises(EmbeddingError, match="gave up"):
        asyncio.run(failing.aembed(["a"]))


def test_openai_embedder_from_settings(endpoint: str) -> None:
    settings = Settings.from_env(
        {"MEMLANE_EMBEDDER": "openai", "MEMLANE_EMBEDDING_BASE_URL": endpoint,
         "MEMLANE_EMBEDDING_MODEL": "m"},
        store_url="memory://",
    )  # fmt: skip
    embedder = settings.build_embedder()
    with Memory("memory://", embedder=embedder) as m:
        rec = m.add("remembered via an HTTP embedder", user_id="u")
        assert m.search("HTTP embedder", user_id="u")[0].record.id == rec.id
    with pytest.raises(ConfigurationError):
        Settings.from_env({"MEMLANE_EMBEDDER": "openai"}, store_url="memory://").build_embedder()
    with pytest.raises(ConfigurationError):
        Settings.from_env({"MEMLANE_EMBEDDER": "nope"}, store_url="memory://").build_embedder()


def test_a_failing_embedder_stores_nothing() -> None:
    from memlane.testing import FakeEmbedder

    fake = FakeEmbedder()
    with Memory("sqlite:///:memory:", embedder=fake) as m:
        m.add("kept", user_id="u")
        fake.fail = True
        with pytest.raises(EmbeddingError):
            m.add("lost?", user_id="u")
        assert [r.text for r in m.list(user_id="u").items] == ["kept"]
