"""The checks of :class:`MemlaneStore`'s construction arguments: the memory it wraps,
whose items are whose, LangGraph's index and TTL configs. Each turns what LangGraph
accepts into what memlane can honour, or refuses it when built, not at the first put."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from langgraph.store.base import IndexConfig, TTLConfig

from memlane.api import AsyncMemory, Memory
from memlane.errors import ConfigurationError, ValidationError
from memlane.integrations.langgraph import items as it
from memlane.models import check_id

M = TypeVar("M", Memory, AsyncMemory)


def twins(memory: Memory | AsyncMemory) -> tuple[Memory, AsyncMemory]:
    """A blocking and an async memory over one store, embedder, clock and config."""
    if isinstance(memory, Memory):
        return memory, _twin(AsyncMemory, memory)
    if isinstance(memory, AsyncMemory):
        return _twin(Memory, memory), memory
    raise ValidationError(f"MemlaneStore needs a memlane Memory or AsyncMemory, got {memory!r}")


def _twin(kind: type[M], memory: Memory | AsyncMemory) -> M:
    """A ``kind`` memory over the store, embedder, clock, config and actor of ``memory``."""
    core = memory.core
    return kind(
        memory.store,
        embedder=memory.embedder,
        clock=core.clock,
        config=core.config,
        actor=core.actor,
    )


def check_user(user_id: object, user_position: object) -> tuple[str | None, int | None]:
    """Whose items are whose: one bound user, or the label at ``user_position`` (default
    0) of each namespace."""
    if user_id is not None and user_position is not None:
        raise ValidationError("give user_id (one user) or user_position, not both")
    if user_id is not None:
        return check_id("user_id", user_id), None
    position = 0 if user_position is None else user_position
    if isinstance(position, bool) or not isinstance(position, int):
        raise ValidationError(f"user_position must be an int, got {position!r}")
    if position < 0:
        raise ValidationError(f"user_position must be >= 0, got {position}")
    return None, position


def check_index(index: object) -> IndexConfig:
    if index is None:
        return {}
    if not isinstance(index, Mapping):
        raise ConfigurationError(f"index must be a LangGraph IndexConfig dict, got {index!r}")
    unknown = sorted(set(index) - {"dims", "embed", "fields"})
    if unknown:
        raise ConfigurationError(f"unknown index settings {unknown} (dims, embed, fields)")
    if index.get("embed") is not None:
        raise ConfigurationError(
            "MemlaneStore embeds with the Memory's embedder: build Memory(embedder=...) "
            "instead of passing index['embed']"
        )
    dims = index.get("dims")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise ConfigurationError(f"index dims must be a positive integer, got {dims!r}")
    config: IndexConfig = {}
    if dims is not None:
        config["dims"] = dims
    if index.get("fields") is not None:
        config["fields"] = list(it.check_fields(index["fields"], "index fields"))
    return config


def check_ttl_config(ttl: object) -> TTLConfig:
    if ttl is None:
        return {}
    if not isinstance(ttl, Mapping):
        raise ConfigurationError(f"ttl must be a LangGraph TTLConfig dict, got {ttl!r}")
    known = {"default_ttl", "refresh_on_read", "sweep_interval_minutes", "omit_expired"}
    unknown = sorted(set(ttl) - known)
    if unknown:
        raise ConfigurationError(f"unknown ttl settings {unknown} ({', '.join(sorted(known))})")
    if ttl.get("omit_expired", True) is not True:
        raise ConfigurationError(
            "memlane never returns expired items: omit_expired=False cannot be honoured"
        )
    refresh = ttl.get("refresh_on_read", True)
    if not isinstance(refresh, bool):
        raise ConfigurationError(f"ttl refresh_on_read must be a bool, got {refresh!r}")
    try:
        default = it.check_ttl(ttl.get("default_ttl"))
    except ValidationError as exc:
        raise ConfigurationError(f"ttl default_ttl: {exc}") from exc
    sweep = ttl.get("sweep_interval_minutes")
    if sweep is not None and (isinstance(sweep, bool) or not isinstance(sweep, int | float)):
        raise ConfigurationError(f"ttl sweep_interval_minutes must be minutes, got {sweep!r}")
    config: TTLConfig = {"refresh_on_read": refresh, "default_ttl": default}
    if sweep is not None:
        config["sweep_interval_minutes"] = int(sweep)
    return config
