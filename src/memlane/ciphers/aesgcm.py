"""AES-256-GCM behind the :class:`~memlane.ports.cipher.Cipher` port.

Each user has a random 32-byte data key in the keyring; from it two keys are derived
(HMAC-SHA256 with fixed labels): one seals with AES-256-GCM (a random 96-bit nonce per
value, the context as associated data), one blinds with HMAC-SHA256. The store-wide
digest key is one more random key in the keyring.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections import OrderedDict

from memlane.ciphers.keyring import Keyring
from memlane.ciphers.keys import NONCE_BYTES
from memlane.errors import DecryptionError

FORMAT = b"\x01"
"""First byte of every sealed value: AES-256-GCM, 96-bit nonce, 128-bit tag."""
_CACHE = 4096
_BLINDED = 65_536
"""Blinded values remembered per user key (a few MB at most)."""


class AesGcmUserKey:
    """One user's derived keys."""

    __slots__ = ("_aead", "_blind", "_blinded")

    def __init__(self, data_key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        seal_key = hmac.digest(data_key, b"memlane seal v1", "sha256")
        self._aead = AESGCM(seal_key)
        self._blind = hmac.new(
            hmac.digest(data_key, b"memlane blind v1", "sha256"), digestmod=hashlib.sha256
        )
        self._blinded: dict[bytes, bytes] = {}  # words repeat: most are blinded once

    def seal(self, data: bytes, context: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return FORMAT + nonce + self._aead.encrypt(nonce, data, context)

    def open(self, sealed: bytes, context: bytes) -> bytes:
        from cryptography.exceptions import InvalidTag

        if sealed[:1] != FORMAT or len(sealed) < 1 + NONCE_BYTES + 16:
            raise DecryptionError("not a value sealed by memlane (unknown format)")
        nonce = sealed[1 : 1 + NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[1 + NONCE_BYTES :], context)
        except InvalidTag as exc:
            raise DecryptionError(
                "a sealed value did not open: another key sealed it, or it was altered"
            ) from exc

    def blind(self, data: bytes) -> bytes:
        found = self._blinded.get(data)
        if found is None:
            mac = self._blind.copy()
            mac.update(data)
            found = mac.digest()
            if len(self._blinded) >= _BLINDED:
                self._blinded.clear()
            self._blinded[data] = found
        return found


class AesGcmCipher:
    """Per-user AES-256-GCM keys from a :class:`~memlane.ciphers.keyring.Keyring`.

    The keyring is read on every lookup (a forget in another process is seen at once);
    derived keys are cached by data key, never across a destroyed entry."""

    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring
        self._keys: OrderedDict[bytes, AesGcmUserKey] = OrderedDict()
        self._digest_key: bytes | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AesGcmCipher({self.keyring!r})"

    def user_key(self, user_id: str, *, create: bool) -> AesGcmUserKey | None:
        if create:
            data_key = self.keyring.get_or_create("user", user_id)
        else:
            found = self.keyring.get("user", user_id)
            if found is None:
                return None
            data_key = found
        with self._lock:
            key = self._keys.get(data_key)
            if key is None:
                key = self._keys[data_key] = AesGcmUserKey(data_key)
                if len(self._keys) > _CACHE:
                    self._keys.popitem(last=False)
            else:
                self._keys.move_to_end(data_key)
            return key

    def digest(self, data: bytes) -> bytes:
        key = self._digest_key
        if key is None:
            key = self._digest_key = self.keyring.get_or_create("store", "digest")
        return hmac.digest(key, data, hashlib.sha256)

    def forget(self, user_id: str) -> bool:
        return self.keyring.destroy("user", user_id)

    def close(self) -> None:
        self.keyring.close()
