"""Who may touch what: one rule, written once, for every interface.

A :class:`Grant` is what a caller holds — an API key (REST, MCP over HTTP), the user a
stdio MCP server is bound to, or the scope a :class:`~memlane.manager.MemoryTools` was
made for. Every interface asks the same two functions:

- :func:`authorize` — may this grant do ``action`` for ``user_id``, acting as
  ``agent_id``? Returns the :class:`Scope` to use (the store's user id, the acting agent)
  or raises :class:`~memlane.errors.AccessDeniedError` (REST answers 403).
- :func:`visible` — may a call in that scope see (and, with write permission, change) an
  object owned by agent ``owner``? Anything not visible is simply not found (404).

The agent rule (the one the memory manager follows too): a call acting as an agent sees
and may change that agent's memories and sessions **and the user's shared ones** (owned
by no agent: facts about the user every agent should know); another agent's do not exist
for it. What it writes belongs to the acting agent. A call acting as no agent sees
everything of the user, so a grant limited to some agents must always name one, and
whole-user actions (context, export, import, forget, listings) need a grant that is not
limited to agents.

Tenants: a tenant's users are stored as ``<tenant>::<user>``. The reserved tenant
:data:`LOCAL_TENANT` is the data written locally (Python API, CLI), stored under the
plain user id; a key created for it reaches those users.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import Enum, StrEnum
from typing import Any

from memlane.errors import AccessDeniedError, ValidationError
from memlane.models import Filters, Scope, check_id

LOCAL_TENANT = "local"
"""The tenant of data written without a server: user ``alice`` is stored as ``alice``."""

TENANT_SEP = "::"
_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class Permission(StrEnum):
    """What a grant may do: READ (get, list, search, history) and WRITE (everything
    that changes data)."""

    READ = "read"
    WRITE = "write"


class Action(Enum):
    """What a call does, as the rule sees it: which permission it needs, and whether it
    reaches the whole user (every agent's data at once)."""

    READ = (Permission.READ, False)
    WRITE = (Permission.WRITE, False)
    READ_ALL = (Permission.READ, True)
    WRITE_ALL = (Permission.WRITE, True)

    @property
    def permission(self) -> Permission:
        return self.value[0]

    @property
    def whole_user(self) -> bool:
        return self.value[1]


ALL_PERMISSIONS = frozenset(Permission)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a caller may touch: a tenant's users (``users`` None: all of them), acting
    as which agents (``agents`` None: any, or none), with which permissions. ``tenant``
    None is an in-process caller addressing the store's user ids directly (the library's
    own tools; a stdio MCP server)."""

    tenant: str | None
    users: tuple[str, ...] | None = None
    agents: tuple[str, ...] | None = None
    permissions: frozenset[Permission] = ALL_PERMISSIONS

    def __post_init__(self) -> None:
        if self.tenant is not None:
            check_tenant(self.tenant)
        for u in self.users or ():
            check_id("user_id", u)
        for a in self.agents or ():
            check_id("agent_id", a)
        try:
            perms = frozenset(Permission(p) for p in self.permissions)
        except ValueError as exc:
            raise ValidationError(f"unknown permission: {exc}; have read, write") from exc
        if not perms:
            raise ValidationError("a grant needs at least one permission (read, write)")
        object.__setattr__(self, "permissions", perms)

    def allows_user(self, user_id: str) -> bool:
        """Whether the grant reaches the tenant's user ``user_id`` (listings use it)."""
        return self.users is None or user_id in self.users


def authorize(grant: Grant, action: Action, user_id: str, agent_id: str | None) -> Scope:
    """The scope in which ``grant`` may do ``action`` for the tenant's ``user_id`` acting
    as ``agent_id``. Raises AccessDeniedError (wrong user, agent or permission) or
    ValidationError (an id that cannot be served)."""
    check_action(grant, action, agent_id)
    if grant.tenant is None:
        check_id("user_id", user_id)
        stored = user_id
    else:
        stored = storage_user(grant.tenant, user_id)
    if not grant.allows_user(user_id):
        raise AccessDeniedError(f"this key may not access user {user_id!r}")
    return Scope(stored, agent_id)


def check_action(grant: Grant, action: Action, agent_id: str | None = None) -> None:
    """The part of :func:`authorize` that is not about a user (a tenant's user listing
    asks only this). Raises AccessDeniedError or ValidationError."""
    check_id("agent_id", agent_id, required=False)
    if action.permission not in grant.permissions:
        raise AccessDeniedError(f"this key may not {action.permission.value}")
    if grant.agents is None:
        return
    if action.whole_user:
        raise AccessDeniedError("an agent-limited key cannot act on the whole user")
    if agent_id is None or agent_id not in grant.agents:
        raise AccessDeniedError(f"this key acts only as agents {list(grant.agents)}; pass agent_id")


def visible(scope: Scope, owner: str | None) -> bool:
    """Whether a call in ``scope`` sees an object owned by agent ``owner`` (None: shared
    by every agent of the user)."""
    return scope.agent_id is None or owner is None or owner == scope.agent_id


def visible_filters(scope: Scope, filters: Filters | None = None) -> Filters:
    """``filters`` narrowed to what :func:`visible` lets ``scope`` see, for a store query."""
    base = filters or Filters()
    if scope.agent_id is None:
        return base
    return replace(base, agent_id=scope.agent_id, include_shared=True)


def allows(grant: Grant, action: Action, user_id: str, agent_id: str | None, **target: Any) -> bool:
    """Whether ``grant`` may do ``action`` for ``user_id`` as ``agent_id`` — and, given
    ``owner=`` (an existing object's agent), on that object. The rule in one answer."""
    try:
        scope = authorize(grant, action, user_id, agent_id)
    except AccessDeniedError:
        return False
    return "owner" not in target or visible(scope, target["owner"])


# ---------------------------------------------------------------------------- tenants


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name; raises ValidationError."""
    if not isinstance(tenant, str) or not _TENANT.match(tenant):
        raise ValidationError("tenant must be 1-64 characters of letters, digits, '_', '.', '-'")
    return tenant


def storage_user(tenant: str, user_id: str) -> str:
    """The store's user id for a tenant's user: ``tenant::user``, or the plain id for
    :data:`LOCAL_TENANT` (which cannot contain "::": it would name another tenant's user).
    A new tenant's user id cannot contain "/": the REST routes could not name that user
    again (not even to forget them). Raises ValidationError."""
    check_id("user_id", user_id)
    if tenant == LOCAL_TENANT:
        if TENANT_SEP in user_id:
            raise ValidationError(f"a user id of tenant {LOCAL_TENANT!r} cannot contain '::'")
        return user_id
    if "/" in user_id:
        raise ValidationError("a user id served over HTTP or MCP cannot contain '/'")
    return f"{tenant}{TENANT_SEP}{user_id}"


def public_user(tenant: str, stored: str) -> str | None:
    """The tenant's name for the store's user id ``stored``, or None if not its user."""
    if tenant == LOCAL_TENANT:
        return None if TENANT_SEP in stored else stored
    prefix = tenant + TENANT_SEP
    return stored[len(prefix) :] if stored.startswith(prefix) else None
