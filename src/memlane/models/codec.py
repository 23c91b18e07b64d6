"""One way every stored value becomes a JSON-ready dict and back.

The conversion follows each field's declared type, so a record type declares only its
fields: a time becomes an ISO string, an enum its value, a tuple a list, a mapping a plain
dict; ``from_dict`` reverses that and turns bad data into :class:`ValidationError`. The
export format (:mod:`memlane.transfer`), the Redis tier and the job rows all go through it.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, fields
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar, Self

from memlane.errors import ValidationError
from memlane.models.basics import from_iso, to_iso

Decode = Callable[[Any], Any]

_DECODERS: dict[Any, Decode] = {
    datetime: from_iso,
    tuple: lambda value: tuple(value or ()),
    Mapping: lambda value: dict(value or {}),
}
"""How a value of each declared type (the type's origin: ``tuple`` for ``tuple[str, ...]``)
is read back; a missing or empty tuple or mapping reads as an empty one."""


class DictCodec:
    """Mixin of a frozen dataclass: :meth:`to_dict` and :meth:`from_dict` from its fields."""

    __slots__ = ()
    _label: ClassVar[str]
    """What the type is called in errors (``malformed <label>: ...``)."""

    if TYPE_CHECKING:
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (times as ISO strings); inverse of :meth:`from_dict`."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build one from :meth:`to_dict` output; raises ValidationError on bad data."""
        try:
            decoders = _decoders(cls)
            unknown = set(data) - decoders.keys()
            if unknown:
                raise ValidationError(f"unknown {cls._label} fields: {sorted(unknown)}")
            missing = _required(cls) - set(data)
            if missing:
                raise ValidationError(f"malformed {cls._label}: missing {sorted(missing)}")
            return cls(**{name: decoders[name](value) for name, value in data.items()})
        except ValidationError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"malformed {cls._label}: {exc}") from exc


def _plain(value: Any) -> Any:
    """A field's value as JSON holds it. Mappings and lists are copied all the way down,
    so changing the dict never changes the stored value it came from."""
    if isinstance(value, datetime):
        return to_iso(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping | list):
        return copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
    return value


def _required(cls: type[DictCodec]) -> set[str]:
    """The fields of ``cls`` that have no default."""
    return {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}


_FIELD_DECODERS: dict[type[DictCodec], dict[str, Decode]] = {}


def _decoders(cls: type[DictCodec]) -> dict[str, Decode]:
    """The decoder of each field of ``cls``, from its type hints (resolved once per type)."""
    decoders = _FIELD_DECODERS.get(cls)
    if decoders is None:
        hints = typing.get_type_hints(cls)
        decoders = _FIELD_DECODERS[cls] = {f.name: _decoder(hints[f.name]) for f in fields(cls)}
    return decoders


def _decoder(hint: Any) -> Decode:
    args = typing.get_args(hint)
    if type(None) in args:  # ``X | None``: None stays None, anything else is read as an X
        (inner,) = (a for a in args if a is not type(None))
        decode = _decoder(inner)
        return lambda value: None if value is None else decode(value)
    origin = typing.get_origin(hint) or hint
    if isinstance(origin, type) and issubclass(origin, Enum):
        return origin
    return _DECODERS.get(origin, _as_is)


def _as_is(value: Any) -> Any:
    return value
