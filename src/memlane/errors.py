"""memlane's exception tree.

Every error memlane raises on purpose derives from :class:`MemlaneError`, so callers can
catch one type. Lower-layer errors (``sqlite3``, HTTP, model loading) are mapped to these
at the seam where they occur and chained with ``raise ... from exc``.

::

    MemlaneError
    ├── ValidationError (also ValueError)     bad input: empty text, missing scope, bad filter
    │   ├── PiiRefusedError                   personal data the scope's PII policy refuses
    │   ├── InjectionRefusedError             instruction-like content the policy refuses
    │   └── ImportFormatError                 a broken JSONL line on import
    ├── NotFoundError (also LookupError)      no such memory / session / state in this scope
    ├── ConflictError                         a compare-and-swap lost: someone wrote first
    ├── AccessDeniedError (also PermissionError)  the caller's grant does not reach this
    ├── StoreError                            the backend failed
    │   ├── CorruptStoreError                 the file is not a database, or is damaged
    │   ├── ForeignStoreError                 a database that memlane did not create
    │   └── SchemaVersionError                written by a newer memlane than this one
    ├── UnsupportedError                      the backend or URL cannot do what was asked
    ├── EncryptionError                       sealed data could not be sealed or opened
    │   ├── DecryptionError                   wrong key material, or the data was altered
    │   └── KeyDestroyedError                 the user's key is gone (the user was forgotten)
    ├── EmbeddingError                        the embedding model or endpoint failed
    ├── LLMError                              the chat model endpoint failed or timed out
    │   ├── LLMOutputError                    its answer stayed invalid after repair attempts
    │   └── NoModelError                      no chat model is configured (retrying won't help)
    └── ConfigurationError                    settings that cannot work (bad URL, bad env)
        ├── EmbeddingModelMismatchError       the store's vectors come from another model
        └── PluginError                       a store plugin (entry point) failed to load
"""

from __future__ import annotations


class MemlaneError(Exception):
    """Root of every error memlane raises on purpose."""


class ValidationError(MemlaneError, ValueError):
    """The caller passed input memlane cannot accept; nothing was changed."""


class PiiRefusedError(ValidationError):
    """The text holds a kind of personal data the scope's PII policy refuses (the message
    names the kinds, never the values); nothing was stored."""


class InjectionRefusedError(ValidationError):
    """The text holds instruction-like content ("ignore previous instructions", a fake
    system prompt or tool call, hidden characters: :mod:`memlane.injection`) and the
    scope's injection policy is ``refuse``. ``kinds`` names what was found; the message
    names the kinds, never the text. Nothing was stored."""

    def __init__(self, message: str, *, kinds: tuple[str, ...] = ()) -> None:
        self.kinds = kinds
        super().__init__(message)


class ImportFormatError(ValidationError):
    """A line of a JSON-lines input (an import file, the messages of ``memlane learn``)
    is not what it must be."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}" if line is not None else message)


class NotFoundError(MemlaneError, LookupError):
    """The requested object does not exist in the caller's scope.

    One about a user's object names the user apart from the rest of its text:
    ``user_id`` (the store's id, None if it names none) goes between ``parts``, so an
    edge that knows the user by another name (a server's tenant) says it with
    :meth:`naming` instead of the store's id."""

    def __init__(self, message: str, *, user_id: str | None = None, after: str = "") -> None:
        self.user_id = user_id
        self.parts = (message, after)
        super().__init__(self.naming(user_id))

    def naming(self, user: str | None) -> str:
        """The text, calling the user ``user``: ``message``, the user, then ``after``."""
        message, after = self.parts
        return message + after if user is None else f"{message} {user!r}{after}"


def no_memory(record_id: str, user_id: str) -> NotFoundError:
    """The one answer about a memory a caller cannot have: missing, expired, or another
    agent's (:mod:`memlane.access`). One text, so the answer tells none of them apart."""
    return NotFoundError(f"no memory {record_id!r} for user", user_id=user_id)


def no_history(record_id: str, user_id: str) -> NotFoundError:
    """As :func:`no_memory`, for a memory's history."""
    return NotFoundError(f"no history for memory {record_id!r} of user", user_id=user_id)


def no_session(session_id: str, user_id: str) -> NotFoundError:
    """As :func:`no_memory`, for a session."""
    return NotFoundError(f"no session {session_id!r} for user", user_id=user_id)


class ConflictError(MemlaneError):
    """A compare-and-swap update found a different version than expected."""

    def __init__(self, message: str, *, expected: int | None, actual: int | None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(message)


class AccessDeniedError(MemlaneError, PermissionError):
    """The caller's grant (API key, bound user, tool scope) does not allow this user,
    agent or action (:mod:`memlane.access`); nothing was read or changed."""


class StoreError(MemlaneError):
    """The storage backend failed."""


class CorruptStoreError(StoreError):
    """The database file is not a database or is damaged."""


class ForeignStoreError(StoreError):
    """The database exists but was not created by memlane."""


class SchemaVersionError(StoreError):
    """The database was written by a newer memlane schema than this version knows."""


class UnsupportedError(MemlaneError):
    """The backend or configuration does not support the requested operation."""


class EncryptionError(MemlaneError):
    """Data of an encrypted store could not be sealed or opened (the keyring or the
    master key failed)."""


class DecryptionError(EncryptionError):
    """Sealed data did not open: the key material is not the one it was sealed with, or
    the data was altered. Nothing is returned in its place."""


class KeyDestroyedError(EncryptionError):
    """The user's data key no longer exists (the user was forgotten): what was sealed
    with it cannot be read by anyone."""


class EmbeddingError(MemlaneError):
    """The embedding model or endpoint failed."""


class LLMError(MemlaneError):
    """The chat model endpoint failed (after retries), timed out, or is not configured."""


class LLMOutputError(LLMError):
    """The model's answer did not match the expected schema, even after repair attempts.

    ``answer`` is the last raw answer, ``problems`` what was wrong with it, and
    ``usage`` what the attempts cost (a ``memlane.ports.llm.Usage``, or None)."""

    def __init__(
        self, message: str, *, answer: str, problems: str, usage: object | None = None
    ) -> None:
        self.answer = answer
        self.problems = problems
        self.usage = usage
        super().__init__(message)


class NoModelError(LLMError):
    """The work needs a chat model and none is configured: not a failure to retry, a
    setting to make (``llm=``, or ``MEMLANE_LLM_BASE_URL`` and ``MEMLANE_LLM_MODEL``)."""


class ConfigurationError(MemlaneError):
    """Settings or URLs that cannot work."""


class MissingExtraError(ConfigurationError, ImportError):
    """A feature needs packages of one of memlane's extras that are not installed.
    ``extra`` names it (``pip install 'memlane[<extra>]'``); ``module`` is what was missing."""

    def __init__(self, extra: str, feature: str, module: str | None = None) -> None:
        self.extra = extra
        self.feature = feature
        self.module = module
        missing = f" ({module} is not installed)" if module else ""
        super().__init__(
            f"{feature} needs memlane's {extra!r} extra{missing}: pip install 'memlane[{extra}]'"
        )
        self.name = module


def require_extra(extra: str, feature: str, *modules: str) -> None:
    """Raise :class:`MissingExtraError` naming ``extra`` unless every module in
    ``modules`` can be imported. Looks modules up without importing them."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise MissingExtraError(extra, feature, module)


class EmbeddingModelMismatchError(ConfigurationError):
    """The store holds vectors of another embedding model than the one in use: mixing
    them would silently find nothing by vector. ``stored`` and ``used`` name the two
    models; ``memlane reembed`` (or :meth:`Memory.reembed`) moves a store to a model."""

    def __init__(self, stored: str, used: str) -> None:
        self.stored = stored
        self.used = used
        super().__init__(
            f"this store's vectors were made by embedding model {stored!r}, not {used!r}: "
            f"use the embedder of {stored!r}, or move the store with "
            f"`memlane reembed --embedder ...` (Memory.reembed())"
        )


class PluginError(ConfigurationError):
    """A store plugin registered through the ``memlane.stores`` entry point group could
    not be used: it failed to import, or it is not a store factory. ``distribution`` and
    ``entry_point`` (``name = value``) say which one; the cause is chained."""

    def __init__(self, message: str, *, distribution: str, entry_point: str) -> None:
        self.distribution = distribution
        self.entry_point = entry_point
        super().__init__(message)
