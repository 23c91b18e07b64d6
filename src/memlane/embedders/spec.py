"""Embedder specs: the one string (``MEMLANE_EMBEDDER``, ``--embedder``) that names an
embedder, in the ``scheme:rest`` form of store URLs.

=======================================  ===============================================
``onnx`` (default; ``local`` is the      all-MiniLM-L6-v2 on ONNX Runtime (no torch)
same)
``onnx:DIR``                             a sentence-transformers model exported to ONNX:
                                         ``DIR/model.onnx`` beside its tokenizer files
                                         (mean or first-token pooling)
``torch``                                all-MiniLM-L6-v2 on torch (``memlane[torch]``)
``torch:MODEL``                          any sentence-transformers model on this machine:
                                         a directory, or a name in the Hugging Face cache
``openai:MODEL``                         an OpenAI-compatible ``/embeddings`` endpoint at
                                         ``MEMLANE_EMBEDDING_BASE_URL``
``openai+https://HOST/v1?model=MODEL``   the same, with the endpoint in the spec
``openai``                               base URL and model from the environment
``fake``, ``fake:DIM``                   deterministic bag-of-words vectors (tests)
=======================================  ===============================================

``onnx:`` and ``torch:`` take ``?model_id=NAME`` (what the store records; default: the
directory's or model's name). API keys never go in a spec: ``MEMLANE_EMBEDDING_API_KEY``.
Parsing does no I/O; the model loads on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from memlane.errors import ConfigurationError
from memlane.ports.embedder import Embedder

#: The spec used when none is given.
DEFAULT_SPEC = "onnx"

KNOWN = (
    "onnx, onnx:DIR, torch, torch:MODEL, openai, openai:MODEL, "
    "openai+https://HOST/v1?model=M, fake, fake:DIM"
)


@dataclass(frozen=True, slots=True)
class EmbedderEnv:
    """What a spec may take from the environment (see :class:`memlane.settings.Settings`)."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    threads: int | None = None


def build_embedder(spec: str, env: EmbedderEnv | None = None) -> Embedder:
    """The embedder ``spec`` names. Raises ConfigurationError (MissingExtraError when the
    embedder's extra is not installed)."""
    env = env or EmbedderEnv()
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"not an embedder: {spec!r} (use one of: {KNOWN})")
    spec = spec.strip()
    scheme, _, rest = spec.partition(":")
    scheme = scheme.lower()
    if scheme in ("onnx", "local"):
        return _onnx(spec, rest, env)
    if scheme == "torch":
        return _torch(spec, rest, env)
    if scheme == "openai" or scheme.startswith("openai+"):
        return _openai(spec, scheme, rest, env)
    if scheme == "fake":
        return _fake(spec, rest)
    raise ConfigurationError(f"unknown embedder {spec!r}: use one of {KNOWN}")


def _path_and_options(spec: str, rest: str) -> tuple[str, dict[str, str]]:
    """``DIR?model_id=X`` (``//`` before an absolute path allowed, as in file URLs)."""
    path, _, query = rest.partition("?")
    if path.startswith("//"):
        path = path[2:]
    options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(options) - {"model_id"})
    if unknown:
        raise ConfigurationError(f"unknown option(s) {unknown} in embedder {spec!r}")
    if "model_id" in options and not options["model_id"].strip():
        raise ConfigurationError(f"empty model_id in embedder {spec!r}")
    return path, options


def _onnx(spec: str, rest: str, env: EmbedderEnv) -> Embedder:
    from memlane.embedders.onnx import OnnxEmbedder

    path, options = _path_and_options(spec, rest)
    if not path:
        if options:
            raise ConfigurationError(f"{spec!r}: model_id is for onnx:DIR models only")
        return OnnxEmbedder(threads=env.threads)
    return OnnxEmbedder.from_dir(path, model_id=options.get("model_id"), threads=env.threads)


def _torch(spec: str, rest: str, env: EmbedderEnv) -> Embedder:
    from memlane.embedders.torch import TorchEmbedder

    path, options = _path_and_options(spec, rest)
    return TorchEmbedder(path or None, model_id=options.get("model_id"), threads=env.threads)


def _openai(spec: str, scheme: str, rest: str, env: EmbedderEnv) -> Embedder:
    from memlane.embedders.openai import OpenAIEmbedder

    base_url, model = env.base_url, env.model
    if scheme != "openai":  # openai+https://host/v1?model=M
        transport = scheme.split("+", 1)[1]
        if transport not in ("http", "https") or not rest.startswith("//"):
            raise ConfigurationError(
                f"not an embedding endpoint: {spec!r} (try openai+https://HOST/v1?model=M)"
            )
        parts = urlsplit(f"{transport}:{rest}")
        query = parse_qs(parts.query)
        if not parts.hostname or set(query) - {"model"} or not query.get("model"):
            raise ConfigurationError(
                f"{spec!r}: give the host and only ?model=NAME (the API key goes in "
                "MEMLANE_EMBEDDING_API_KEY)"
            )
        if parts.username or parts.password:
            raise ConfigurationError(
                "no credentials in an embedder spec: set MEMLANE_EMBEDDING_API_KEY"
            )
        base_url, model = f"{transport}://{parts.netloc}{parts.path}", query["model"][-1]
    elif rest:
        model = rest
    if not base_url or not model:
        raise ConfigurationError(
            f"embedder {spec!r} needs an endpoint and a model: MEMLANE_EMBEDDING_BASE_URL "
            "and MEMLANE_EMBEDDING_MODEL (or openai:MODEL, or openai+https://HOST/v1?model=M)"
        )
    return OpenAIEmbedder(base_url=base_url, model=model, api_key=env.api_key)


def _fake(spec: str, rest: str) -> Embedder:
    from memlane.embedders.fake import FakeEmbedder

    if not rest:
        return FakeEmbedder()
    if rest.isdigit() and int(rest) > 0:
        dim = int(rest)
        return FakeEmbedder(dim, model_id=f"fake-bow-{dim}")
    raise ConfigurationError(f"{spec!r}: fake takes a positive dimension (fake:384)")
