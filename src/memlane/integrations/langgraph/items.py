"""How a LangGraph item lives in a memlane record, and LangGraph's filters, as pure functions.

A LangGraph item ``(namespace, key) -> value`` is one memlane memory (kind ``fact``) of
the user the namespace names. Its text is what LangGraph would embed (the value's
``index`` fields, joined by newlines); its metadata carries the item::

    lg_v           1 (marks a LangGraph item; the format's version)
    lg_ns_0 ...    the namespace's labels, one key each (a prefix is an equality filter)
    lg_depth       the namespace's length (an exact namespace is prefix + depth)
    lg_namespace   the namespace as a list
    lg_key         the item's key
    lg_value       the value, as put
    lg_ttl         minutes to live after each put or read, or None
    lg_indexed     whether the value had text to index (False: found only by listing)
    lg_created_at, lg_updated_at   the item's own times (a TTL refresh changes neither)
    lg_f_<field>   a copy of each top-level scalar field of the value (strings up to 256
                   characters), so equality filters on them run in memlane's store
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from langgraph.store.base import get_text_at_path, tokenize_path

from memlane.core.base import MAX_JSON_DEPTH, json_shape
from memlane.errors import ValidationError
from memlane.models import MemoryRecord, from_iso, to_iso

MARK = "lg_v"
LABEL = "lg_ns_"
DEPTH = "lg_depth"
NAMESPACE = "lg_namespace"
KEY = "lg_key"
VALUE = "lg_value"
TTL = "lg_ttl"
INDEXED = "lg_indexed"
CREATED = "lg_created_at"
UPDATED = "lg_updated_at"
FIELD = "lg_f_"
MAX_FIELD_CHARS = 256

OPERATORS = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})
UNINDEXED_TEXT = "(not indexed)"
"""The text of an item with nothing to index: memlane needs some; it is never searched
(search asks for ``lg_indexed`` items only)."""

Namespace = tuple[str, ...]


# ---------------------------------------------------------------------------- namespaces


def namespace_filter(
    prefix: Sequence[str], *, exact: bool = False, wildcards: bool = False
) -> dict[str, Any]:
    """Metadata equalities selecting the items under ``prefix``; with ``exact``, only the
    items of exactly that namespace; with ``wildcards`` (namespace listings), a "*"
    label matches any label (elsewhere it is a label like any other)."""
    wanted: dict[str, Any] = {MARK: 1}
    for position, label in enumerate(prefix):
        if not (wildcards and label == "*"):
            wanted[f"{LABEL}{position}"] = label
    if exact:
        wanted[DEPTH] = len(prefix)
    return wanted


def item_filter(namespace: Namespace, key: str) -> dict[str, Any]:
    """Metadata equalities selecting the one item ``(namespace, key)``."""
    return {**namespace_filter(namespace, exact=True), KEY: key}


def namespace_of(record: MemoryRecord) -> Namespace:
    return tuple(record.metadata[NAMESPACE])


def matches_path(namespace: Namespace, path: Sequence[str], match_type: str) -> bool:
    """LangGraph's namespace match: ``path`` is a prefix (or suffix) of ``namespace``,
    label by label, "*" matching any one label."""
    if len(path) > len(namespace):
        return False
    if match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    elif match_type == "suffix":
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    else:
        raise ValidationError(f"match_type must be 'prefix' or 'suffix', got {match_type!r}")
    return all(want in ("*", label) for label, want in pairs)


# ---------------------------------------------------------------------------- index text


def check_fields(fields: object, what: str) -> tuple[str, ...]:
    """Index fields are a list of LangGraph JSON paths ("$" is the whole value)."""
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise ValidationError(f"{what} must be a list of field paths, got {fields!r}")
    out = []
    for path in fields:
        if not isinstance(path, str) or not path:
            raise ValidationError(f"{what} must hold non-empty path strings, got {path!r}")
        if path != "$":
            try:
                tokenize_path(path)
            except (ValueError, IndexError) as exc:
                raise ValidationError(f"{what}: bad field path {path!r}: {exc}") from exc
        out.append(path)
    return tuple(out)


def index_text(value: Mapping[str, Any], fields: Sequence[str]) -> str | None:
    """The text LangGraph would embed for ``value`` at ``fields``, one piece per line
    (LangGraph embeds each piece apart; memlane embeds and indexes them as one memory).
    None when no field has text."""
    pieces: list[str] = []
    for path in fields:
        pieces.extend(t for t in get_text_at_path(value, path) if t.strip())
    return "\n".join(pieces) if pieces else None


# ---------------------------------------------------------------------------- metadata


def item_metadata(
    namespace: Namespace,
    key: str,
    value: Mapping[str, Any],
    *,
    ttl: float | None,
    indexed: bool,
    created_at: str,
    updated_at: datetime,
) -> dict[str, Any]:
    meta: dict[str, Any] = namespace_filter(namespace, exact=True)
    meta.update(
        {
            NAMESPACE: list(namespace),
            KEY: key,
            VALUE: dict(value),
            TTL: ttl,
            INDEXED: indexed,
            CREATED: created_at,
            UPDATED: to_iso(updated_at),
            **field_copies(value),
        }
    )
    return meta


def field_copies(value: Mapping[str, Any]) -> dict[str, Any]:
    """The value's top-level scalar fields as metadata keys memlane can filter on."""
    return {FIELD + k: v for k, v in value.items() if _copyable(k, v)}


def pushdown(filter: Mapping[str, Any]) -> dict[str, Any]:
    """The equality conditions of a checked filter that memlane's store can apply itself
    (on the copies of :func:`field_copies`). The whole filter is still checked on each
    value: this only narrows what is read."""
    wanted: dict[str, Any] = {}
    for field, condition in filter.items():
        if isinstance(condition, Mapping) and set(condition) == {"$eq"}:
            condition = condition["$eq"]
        if _copyable(field, condition):
            wanted[FIELD + field] = condition
    return wanted


def _copyable(name: str, value: Any) -> bool:
    if not name or any(c in name for c in '."'):
        return False
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    if isinstance(value, float):
        return math.isfinite(value)
    # A NUL never reaches a stored value; PostgreSQL would refuse it even in a filter.
    return isinstance(value, str) and len(value) <= MAX_FIELD_CHARS and "\x00" not in value


def item_times(record: MemoryRecord) -> tuple[datetime, datetime]:
    return from_iso(record.metadata[CREATED]), from_iso(record.metadata[UPDATED])


def check_value(value: object) -> dict[str, Any]:
    """A value is a JSON object (a mapping with string keys) memlane can keep: no NUL
    character (PostgreSQL cannot store one) and not nested past memlane's limit. Returns
    it as a dict."""
    if not isinstance(value, Mapping):
        raise ValidationError(f"a LangGraph item's value must be a dict, got {type(value)!r}")
    if not all(isinstance(k, str) for k in value):
        raise ValidationError("a LangGraph item's value must have string keys")
    try:
        decoded = json.loads(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"a LangGraph item's value must be JSON: {exc}") from exc
    except RecursionError as exc:
        raise ValidationError("a LangGraph item's value is nested too deeply") from exc
    depth, nul = json_shape(decoded)
    if depth >= MAX_JSON_DEPTH:  # the value sits one level down in the memory's metadata
        raise ValidationError(f"a LangGraph item's value nests {depth} levels deep")
    if nul:
        raise ValidationError("a LangGraph item's value contains a NUL character (\\x00)")
    return dict(value)


def check_key(key: object) -> str:
    """An item key is a string without a NUL character (PostgreSQL cannot store one)."""
    if not isinstance(key, str):
        raise ValidationError(f"a LangGraph item key must be a string, got {key!r}")
    if "\x00" in key:
        raise ValidationError("a LangGraph item key cannot contain a NUL character (\\x00)")
    return key


def check_ttl(ttl: object) -> float | None:
    """A TTL is None (no expiry) or a positive number of minutes."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ValidationError(f"ttl must be None or minutes (a number), got {ttl!r}")
    if ttl <= 0:
        raise ValidationError(f"ttl must be a positive number of minutes, got {ttl!r}")
    return float(ttl)


# ---------------------------------------------------------------------------- filters


def check_filter(filter: object) -> dict[str, Any]:
    """A search filter maps value fields (a dotted path reaches into nested dicts) to a
    value (equality; a dict matches nested fields) or to operators (``{"$gt": 3}``:
    $eq, $ne, $gt, $gte, $lt, $lte)."""
    if filter is None:
        return {}
    if not isinstance(filter, Mapping) or not all(isinstance(k, str) for k in filter):
        raise ValidationError(f"filter must be a dict of field to condition, got {filter!r}")
    for field, condition in filter.items():
        _check_condition(field, condition)
    return dict(filter)


def _check_condition(field: str, condition: object) -> None:
    if not isinstance(condition, Mapping):
        return
    ops = [k for k in condition if isinstance(k, str) and k.startswith("$")]
    if not ops:
        for sub, inner in condition.items():
            _check_condition(f"{field}.{sub}", inner)
        return
    if len(ops) != len(condition):
        raise ValidationError(f"filter on {field!r} mixes operators and fields: {condition!r}")
    unknown = sorted(set(ops) - OPERATORS)
    if unknown:
        raise ValidationError(
            f"filter on {field!r}: unknown operator {unknown[0]!r} "
            f"(supported: {', '.join(sorted(OPERATORS))})"
        )


def matches(value: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """Whether an item's value passes a checked filter (every condition must hold)."""
    return all(_holds(_lookup(value, field), condition) for field, condition in filter.items())


def _lookup(value: Mapping[str, Any], field: str) -> Any:
    """The value's ``field``: a key of its own, else a dotted path into nested dicts
    (``"user.name"``), as LangGraph's SQL stores read filter keys. None when missing."""
    if field in value or "." not in field:
        return value.get(field)
    found: Any = value
    for part in field.split("."):
        if not isinstance(found, Mapping) or part not in found:
            return None
        found = found[part]
    return found


def _holds(actual: Any, condition: Any) -> bool:
    if isinstance(condition, Mapping):
        if any(k.startswith("$") for k in condition):
            return all(_compare(actual, op, operand) for op, operand in condition.items())
        return isinstance(actual, Mapping) and matches(actual, condition)
    return _equal(actual, condition)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, [1, 2] equals (1, 2), 1 equals 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _compare(actual: Any, op: str, operand: Any) -> bool:
    if op == "$eq":
        return _equal(actual, operand)
    if op == "$ne":
        return not _equal(actual, operand)
    if not _comparable(actual, operand):
        return False  # a missing field, or a number against text, matches no comparison
    if op == "$gt":
        return bool(actual > operand)
    if op == "$gte":
        return bool(actual >= operand)
    if op == "$lt":
        return bool(actual < operand)
    return bool(actual <= operand)  # $lte (check_filter refused anything else)


def _comparable(a: Any, b: Any) -> bool:
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    return (number(a) and number(b)) or (isinstance(a, str) and isinstance(b, str))
