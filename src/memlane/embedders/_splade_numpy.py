"""SPLADE-tiny's forward pass in numpy (:mod:`memlane.embedders.splade` loads this
module on first use, so that importing memlane and constructing a memory load no numpy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from memlane.errors import EmbeddingError
from memlane.ports.sparse import SparseTerms


def load(folder: Path) -> dict[str, np.ndarray]:
    """The model's tensors by canonical name, plus ``head.decoder``: the output layer,
    which shares the input embeddings (tied), laid out for (tokens x hidden) @ (hidden x
    vocabulary), twice as fast as a transposed view."""
    named = {canonical(k): v for k, v in safetensors(folder / "model.safetensors").items()}
    vocabulary = named["embeddings.word_embeddings.weight"].shape[0]
    if vocabulary > 65536:  # the stored form keeps ids as uint16
        raise EmbeddingError(f"{folder}: a vocabulary of {vocabulary} words (at most 65,536)")
    named["head.decoder"] = np.ascontiguousarray(named["embeddings.word_embeddings.weight"].T)
    return named


def safetensors(path: Path) -> dict[str, np.ndarray]:
    """The float32 tensors of a ``.safetensors`` file (its format: a little-endian u64
    header length, a JSON header of offsets, the raw data)."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    base = 8 + size
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if spec["dtype"] != "F32":
            raise EmbeddingError(f"{path}: tensor {name} is {spec['dtype']}, expected F32")
        start, end = spec["data_offsets"]
        array = np.frombuffer(raw, dtype="<f4", count=(end - start) // 4, offset=base + start)
        out[name] = array.reshape(spec["shape"]).copy()  # aligned (the header's length is not)
    return out


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    out: np.ndarray = (x - mean) / np.sqrt(var + 1e-12) * gamma + beta
    return out


def gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, x * Phi(x), with erf from Abramowitz & Stegun 7.1.26 (error
    under 1.5e-7; numpy has no erf): the model's config asks for "gelu", not the tanh
    approximation (0.003 off on this model's outputs)."""
    z = np.abs(x) * 0.7071067811865476
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    out: np.ndarray = 0.5 * x * (1.0 + erf)
    return out


def forward(w: dict[str, np.ndarray], config: dict[str, Any], batch: list[list[int]]) -> np.ndarray:
    """Each text's max over its tokens of the masked-LM logits, through
    log(1 + relu(.)): shape (texts, vocabulary)."""
    heads = int(config.get("num_attention_heads", 2))
    layers = int(config.get("num_hidden_layers", 2))
    lengths = [len(ids) for ids in batch]
    width = max(lengths)
    ids = np.zeros((len(batch), width), dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.float32)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1.0
    h = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][:width]
        + w["embeddings.token_type_embeddings.weight"][0]
    )
    h = layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    n, length, hidden = h.shape
    size = hidden // heads
    blocked = ((1.0 - mask) * -1e9)[:, None, None, :]
    for i in range(layers):
        p = f"encoder.layer.{i}."

        def lin(x: np.ndarray, name: str, p: str = p) -> np.ndarray:
            out: np.ndarray = x @ w[p + name + ".weight"].T + w[p + name + ".bias"]
            return out

        def split(x: np.ndarray) -> np.ndarray:
            return x.reshape(n, length, heads, size).transpose(0, 2, 1, 3)

        q = split(lin(h, "attention.self.query"))
        k = split(lin(h, "attention.self.key"))
        v = split(lin(h, "attention.self.value"))
        a = q @ k.transpose(0, 1, 3, 2) * (size**-0.5) + blocked
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        c = (a @ v).transpose(0, 2, 1, 3).reshape(n, length, hidden)
        h = layer_norm(
            lin(c, "attention.output.dense") + h,
            w[p + "attention.output.LayerNorm.weight"],
            w[p + "attention.output.LayerNorm.bias"],
        )
        f = lin(gelu(lin(h, "intermediate.dense")), "output.dense")
        h = layer_norm(f + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    tokens = h[mask.astype(bool)]  # the real tokens, text after text
    t = gelu(tokens @ w["head.dense.weight"].T + w["head.dense.bias"])
    t = layer_norm(t, w["head.LayerNorm.weight"], w["head.LayerNorm.bias"])
    # One text's logits at a time (its tokens x the vocabulary: ~5 MB for a turn),
    # not the batch's: the batch's would be hundreds of MB at once.
    decoder = w["head.decoder"]
    pooled = np.empty((len(batch), decoder.shape[1]), dtype=np.float32)
    start = 0
    for row, n in enumerate(lengths):
        np.max(t[start : start + n] @ decoder, axis=0, out=pooled[row])
        start += n
    out: np.ndarray = np.log1p(np.maximum(pooled + w["head.bias"], 0.0))
    return out


def terms(row: np.ndarray, keep: int | None) -> SparseTerms:
    """The positive entries of one pooled row (the ``keep`` largest), by id."""
    ids = np.flatnonzero(row > 0)
    if keep is not None and ids.shape[0] > keep:
        ids = ids[np.argpartition(-row[ids], keep - 1)[:keep]]
        ids.sort()
    return SparseTerms(ids.astype(np.uint16), row[ids].astype(np.float32))


_RENAMES = (
    ("bert.", ""),
    ("cls.predictions.transform.", "head."),
    ("cls.predictions.bias", "head.bias"),
    ("LayerNorm.gamma", "LayerNorm.weight"),
    ("LayerNorm.beta", "LayerNorm.bias"),
)


def canonical(name: str) -> str:
    """One name for a BERT masked-LM tensor, whichever naming its checkpoint uses."""
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name
