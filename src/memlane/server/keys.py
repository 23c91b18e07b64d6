"""API keys: each belongs to one tenant and may be limited to some users and agents.

Keys are random (``ml_`` + 43 URL-safe characters) and only their SHA-256 is stored —
in the memlane store itself, as versioned state of a reserved system scope, so every
backend (SQLite, PostgreSQL) and every server process sees the same keys. A tenant's
users live in the store as ``<tenant>::<user>``; tenant names cannot contain ``:``, so no
tenant can name another's users. A key of the reserved tenant ``local`` reaches the data
written without a server (Python API, CLI) under its plain user ids. What a key may do
is its :class:`~memlane.access.Grant`; :mod:`memlane.access` holds the rule.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from memlane.access import (
    ALL_PERMISSIONS,
    LOCAL_TENANT,
    Grant,
    Permission,
    check_tenant,
    public_user,
    storage_user,
)
from memlane.errors import ConflictError, NotFoundError, ValidationError
from memlane.models import StateVersion, from_iso, to_iso, utcnow
from memlane.ports import store as ops
from memlane.ports.store import Store

SYSTEM_USER = "::memlane"
KEYS_SESSION = "api-keys"

__all__ = [
    "LOCAL_TENANT",
    "ApiKey",
    "KeyStore",
    "check_tenant",
    "public_user",
    "storage_user",
]


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key's record: its grant (``users``/``agents`` None means any of the tenant's)
    and bookkeeping."""

    key_id: str
    tenant: str
    users: tuple[str, ...] | None
    agents: tuple[str, ...] | None
    label: str
    created_at: datetime
    revoked: bool = False
    permissions: frozenset[Permission] = ALL_PERMISSIONS

    @property
    def grant(self) -> Grant:
        """What this key may touch, for :func:`memlane.access.authorize`."""
        return Grant(self.tenant, self.users, self.agents, self.permissions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "users": None if self.users is None else list(self.users),
            "agents": None if self.agents is None else list(self.agents),
            "label": self.label,
            "created_at": to_iso(self.created_at),
            "revoked": self.revoked,
            "permissions": sorted(p.value for p in self.permissions),
        }

    @classmethod
    def from_state(cls, state: StateVersion) -> ApiKey:
        d = state.data
        return cls(
            key_id=str(d["key_id"]),
            tenant=str(d["tenant"]),
            users=None if d.get("users") is None else tuple(d["users"]),
            agents=None if d.get("agents") is None else tuple(d["agents"]),
            label=str(d.get("label", "")),
            created_at=from_iso(str(d["created_at"])),
            revoked=bool(d.get("revoked", False)),
            # Keys made before permissions existed may do everything, as they did.
            permissions=frozenset(Permission(p) for p in d.get("permissions", ALL_PERMISSIONS)),
        )


class KeyStore:
    """Creates, checks and revokes keys. A valid key is cached for ``cache_s`` seconds,
    so a key revoked by another process stops working within that time."""

    def __init__(self, store: Store, *, cache_s: float = 5.0, max_cached: int = 10_000) -> None:
        self.store = store
        self.cache_s = cache_s
        self.max_cached = max_cached
        self._cache: OrderedDict[str, tuple[float, ApiKey]] = OrderedDict()
        self._lock = threading.Lock()

    def create(
        self,
        tenant: str,
        *,
        users: Sequence[str] | None = None,
        agents: Sequence[str] | None = None,
        label: str = "",
        permissions: Sequence[str] = ("read", "write"),
    ) -> tuple[str, ApiKey]:
        """A new key (returned once, in clear) and its record. Raises ValidationError
        for a bad tenant, user, agent or permission, and for limits no call could
        pass: an empty list of users or agents, or a user no request can name."""
        if users is not None and not users:
            raise ValidationError("users is empty: name at least one, or none for all")
        if agents is not None and not agents:
            raise ValidationError("agents is empty: name at least one, or none for any")
        for user in users or ():
            storage_user(tenant, user)  # '::' for tenant local, '/' for the others
        grant = Grant(
            tenant,
            None if users is None else tuple(users),
            None if agents is None else tuple(agents),
            frozenset(permissions),  # type: ignore[arg-type]  # Grant validates
        )
        key = "ml_" + secrets.token_urlsafe(32)
        record = ApiKey(
            key_id=_digest(key)[:16],
            tenant=tenant,
            users=grant.users,
            agents=grant.agents,
            label=label,
            created_at=utcnow(),
            permissions=grant.permissions,
        )
        self._put(_digest(key), record, expected=0)
        return key, record

    def _put(self, digest: str, record: ApiKey, *, expected: int) -> None:
        state = StateVersion(
            SYSTEM_USER, KEYS_SESSION, digest, expected + 1, record.to_dict(), utcnow()
        )
        self.store.setup()
        self.store.batch([ops.PutState(state, expected)])

    def _cached(self, key: str) -> tuple[str, ApiKey | None, bool]:
        """(digest, cached record, whether the cache answered)."""
        digest = _digest(key)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
            if hit is not None and now - hit[0] < self.cache_s:
                self._cache.move_to_end(digest)
                return digest, hit[1], True
        return digest, None, False

    def _remember(self, digest: str, state: StateVersion | None) -> ApiKey | None:
        found = None if state is None else ApiKey.from_state(state)
        if found is not None and found.revoked:
            found = None
        if found is not None:  # misses are not cached: bogus keys cannot fill memory
            with self._lock:
                self._cache[digest] = (time.monotonic(), found)
                while len(self._cache) > self.max_cached:
                    self._cache.popitem(last=False)
        return found

    def check(self, key: str) -> ApiKey | None:
        """The key's record if it exists and is not revoked."""
        if not isinstance(key, str) or not key.startswith("ml_") or len(key) > 200:
            return None
        digest, found, hit = self._cached(key)
        if hit:
            return found
        state = self.store.batch([ops.GetState(SYSTEM_USER, KEYS_SESSION, digest)])[0]
        return self._remember(digest, state)

    async def acheck(self, key: str) -> ApiKey | None:
        """:meth:`check` without blocking the event loop."""
        if not isinstance(key, str) or not key.startswith("ml_") or len(key) > 200:
            return None
        digest, found, hit = self._cached(key)
        if hit:
            return found
        state = (await self.store.abatch([ops.GetState(SYSTEM_USER, KEYS_SESSION, digest)]))[0]
        return self._remember(digest, state)

    def list(self) -> list[ApiKey]:
        self.store.setup()
        states = self.store.batch([ops.ListStates(SYSTEM_USER, KEYS_SESSION)])[0]
        return [ApiKey.from_state(s) for s in states]

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke by key id (the first 16 hex digits of its hash)."""
        self.store.setup()
        states = self.store.batch([ops.ListStates(SYSTEM_USER, KEYS_SESSION)])[0]
        for s in states:
            if s.data.get("key_id") == key_id:
                record = ApiKey.from_state(s)
                revoked = replace(record, revoked=True)
                try:
                    self._put(s.name, revoked, expected=s.version)
                except ConflictError:
                    raise
                with self._lock:
                    self._cache.clear()
                return revoked
        raise NotFoundError(f"no key {key_id!r}")
