"""Master keys: what wraps (encrypts) each user's data key.

A master key never touches the data itself; it only wraps the small per-user keys in the
keyring. :class:`LocalMasterKey` is 32 secret bytes the operator supplies (an environment
variable or a file); :class:`KmsMasterKey` hands wrapping to the operator's own service
(a cloud KMS, Vault's transit engine, an HSM) through two callbacks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from memlane.errors import ConfigurationError, DecryptionError

KEY_BYTES = 32
NONCE_BYTES = 12


@runtime_checkable
class MasterKey(Protocol):
    """Wraps and unwraps data keys. ``key_id`` names the key (not secret) so a keyring
    can tell which master key wrapped each entry."""

    key_id: str

    def wrap(self, key: bytes, context: bytes) -> bytes:
        """``key`` encrypted under the master key, bound to ``context``."""
        ...

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """The key :meth:`wrap` wrapped with ``context``. Raises DecryptionError."""
        ...


def generate_key() -> str:
    """A new random master key, base64-encoded (what ``memlane keys generate`` prints)."""
    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


class LocalMasterKey:
    """A 32-byte AES-256-GCM master key held by this process."""

    def __init__(self, secret: bytes) -> None:
        if not isinstance(secret, bytes) or len(secret) != KEY_BYTES:
            raise ConfigurationError(f"a master key is {KEY_BYTES} bytes")
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(secret)
        mac = hmac.new(secret, b"memlane master key id", hashlib.sha256)
        self.key_id = "local:" + mac.hexdigest()[:16]

    @classmethod
    def parse(cls, text: str, *, source: str = "the master key") -> LocalMasterKey:
        """A key written as base64 (44 characters, as ``memlane keys generate`` prints)
        or hex (64). Raises ConfigurationError naming ``source``, never the key."""
        value = text.strip()
        secret: bytes | None = None
        try:
            if len(value) == 2 * KEY_BYTES:
                secret = bytes.fromhex(value)
            else:
                secret = base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            secret = None
        if secret is None or len(secret) != KEY_BYTES:
            raise ConfigurationError(
                f"{source} is not a {KEY_BYTES}-byte key in base64 or hex "
                "(make one with `memlane keys generate`)"
            )
        return cls(secret)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> LocalMasterKey:
        """The key in a file (base64 or hex, surrounding whitespace ignored)."""
        try:
            text = Path(path).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read the master key file {path}: {exc}") from exc
        return cls.parse(text, source=f"the master key file {path}")

    def wrap(self, key: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError(f"a data key did not open with master key {self.key_id}") from exc

    def __repr__(self) -> str:
        return f"LocalMasterKey({self.key_id!r})"


class KmsMasterKey:
    """A master key that lives in the operator's key service: ``wrap(key, context)`` and
    ``unwrap(wrapped, context)`` call it (e.g. AWS KMS Encrypt/Decrypt with ``context``
    as the encryption context). ``key_id`` names the key there."""

    def __init__(
        self,
        key_id: str,
        *,
        wrap: Callable[[bytes, bytes], bytes],
        unwrap: Callable[[bytes, bytes], bytes],
    ) -> None:
        if not isinstance(key_id, str) or not key_id.strip():
            raise ConfigurationError("a KMS master key needs a key_id")
        self.key_id = key_id
        self._wrap = wrap
        self._unwrap = unwrap

    def wrap(self, key: bytes, context: bytes) -> bytes:
        return bytes(self._wrap(key, context))

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        key = bytes(self._unwrap(wrapped, context))
        if len(key) != KEY_BYTES:
            raise DecryptionError(f"the key service returned no {KEY_BYTES}-byte data key")
        return key

    def __repr__(self) -> str:
        return f"KmsMasterKey({self.key_id!r})"
