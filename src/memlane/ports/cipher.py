"""The encryption seam: one key per user, held apart from the data it protects.

A :class:`Cipher` hands out a :class:`UserKey` per user. A user key seals (authenticated
encryption) and opens that user's data, and blinds terms: a keyed hash that lets a store
match equal words, topics and metadata values without ever holding them. Destroying a
user's key (:meth:`Cipher.forget`) makes everything sealed with it unreadable, in the live
store and in every copy of it (crypto-shredding).

``memlane.ciphers`` implements it with AES-256-GCM, per-user data keys wrapped by a master
key, in a keyring file; anything else (a KMS, an HSM) can stand behind the same protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class UserKey(Protocol):
    """One user's key material."""

    def seal(self, data: bytes, context: bytes) -> bytes:
        """``data`` encrypted and authenticated; ``context`` (not secret, not stored in
        the result) must be given again to open it, binding the result to where it is."""
        ...

    def open(self, sealed: bytes, context: bytes) -> bytes:
        """What :meth:`seal` sealed with this key and ``context``. Raises DecryptionError
        when the key or the context differs or the data was altered."""
        ...

    def blind(self, data: bytes) -> bytes:
        """A keyed hash of ``data``: equal inputs give equal outputs under this key, and
        without the key an output tells nothing of its input."""
        ...


@runtime_checkable
class Cipher(Protocol):
    """Where user keys come from. Construction does no I/O."""

    def user_key(self, user_id: str, *, create: bool) -> UserKey | None:
        """The user's key; with ``create`` a new one when the user has none yet, else
        None. Raises KeyDestroyedError for a forgotten user only when the cipher keeps
        that fact; EncryptionError when the key material cannot be read."""
        ...

    def digest(self, data: bytes) -> bytes:
        """A keyed hash of ``data`` under a key of the whole store (not of one user): for
        values every user's rows share, such as the hashes that name cached vectors."""
        ...

    def forget(self, user_id: str) -> bool:
        """Destroy the user's key. Returns whether there was one."""
        ...
