"""Time-sortable identifiers (ULID layout: 48-bit milliseconds + 80 random bits)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
_lock = threading.Lock()
_last_ms = -1
_last_rand = 0


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(now_ms: int | None = None) -> str:
    """Return a 26-character id that sorts by creation time.

    Ids made in the same millisecond by one process still sort in creation order: the
    random part is incremented instead of redrawn (the ULID monotonic rule).
    """
    global _last_ms, _last_rand
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) & ((1 << 80) - 1)
        else:
            rand = int.from_bytes(os.urandom(10), "big")
        _last_ms, _last_rand = ms, rand
    return _encode(ms, 10) + _encode(rand, 16)


def _forget_in_child() -> None:
    """After a fork: the child draws its own random part. Continuing the parent's
    sequence, two children forked from one state would make the same ids."""
    global _lock, _last_ms, _last_rand
    _lock, _last_ms, _last_rand = threading.Lock(), -1, 0


if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
    os.register_at_fork(after_in_child=_forget_in_child)


def stable_id(*parts: str) -> str:
    """A 26-character id in the same alphabet, the same for the same parts every time
    (a hash, so it does not sort by time). Used where a retry must name the same row."""
    import hashlib

    digest = hashlib.blake2b("\0".join(parts).encode("utf-8"), digest_size=16).digest()
    return _encode(int.from_bytes(digest, "big") >> 2, 26)
