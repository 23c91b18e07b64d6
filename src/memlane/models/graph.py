"""The knowledge graph of a user's scope: entities (the people, places, organizations,
dates and things memories mention), mentions (which memory names which entity) and
relations between entities (bi-temporal edges, with the memories that state them)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from memlane.models.basics import opt_iso


class EntityType(StrEnum):
    """What an entity is. ``name`` is a proper name whose kind was not told (the offline
    extractor finds names without a model, and does not guess what they name)."""

    PERSON = "person"
    PLACE = "place"
    ORGANIZATION = "organization"
    DATE = "date"
    THING = "thing"
    NAME = "name"


MENTIONED_WITH = "mentioned_with"
"""The predicate of a co-occurrence edge: both entities are named in one memory."""


@dataclass(frozen=True, slots=True)
class Entity:
    """One person, place, organization, date or thing of a user's scope.

    Mentions are resolved to an entity by its normalized name and aliases (case, spaces
    and a final possessive aside). An entity merged into another keeps its row, with
    ``merged_into`` naming the entity that took its mentions, names and edges."""

    user_id: str
    id: str
    name: str
    type: EntityType
    aliases: tuple[str, ...] = ()
    created_at: datetime | None = None
    updated_at: datetime | None = None
    merged_into: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The entity as JSON-ready values."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "name": self.name,
            "type": self.type.value,
            "aliases": list(self.aliases),
            "created_at": opt_iso(self.created_at),
            "updated_at": opt_iso(self.updated_at),
            "merged_into": self.merged_into,
        }


@dataclass(frozen=True, slots=True)
class Mention:
    """Memory ``record_id`` (of session ``session_id``) names entity ``entity_id``."""

    user_id: str
    entity_id: str
    record_id: str
    session_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The mention as JSON-ready values."""
        return {
            "user_id": self.user_id,
            "entity_id": self.entity_id,
            "record_id": self.record_id,
            "session_id": self.session_id,
        }


@dataclass(frozen=True, slots=True)
class Relation:
    """A bi-temporal edge ``subject --predicate--> object`` between two entities (ids).

    ``valid_from``/``valid_to`` bound when it held (``valid_to`` None: it still does);
    ``created_at`` is when memlane learned it; ``sources`` are the ids of the memories
    that state it (its provenance). A co-occurrence edge (:data:`MENTIONED_WITH`) has
    the lesser entity id as its subject."""

    user_id: str
    id: str
    subject_id: str
    predicate: str
    object_id: str
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    created_at: datetime | None = None
    sources: tuple[str, ...] = ()

    @property
    def is_current(self) -> bool:
        """Whether the edge still holds (no end of validity)."""
        return self.valid_to is None

    def valid_at(self, at: datetime) -> bool:
        """Whether the edge held at ``at``: ``valid_from <= at < valid_to``, an open end
        unbounded."""
        began = self.valid_from is None or self.valid_from <= at
        return began and (self.valid_to is None or at < self.valid_to)

    def to_dict(self) -> dict[str, Any]:
        """The relation as JSON-ready values."""
        return {
            "id": self.id,
            "user_id": self.user_id,
            "subject_id": self.subject_id,
            "predicate": self.predicate,
            "object_id": self.object_id,
            "valid_from": opt_iso(self.valid_from),
            "valid_to": opt_iso(self.valid_to),
            "created_at": opt_iso(self.created_at),
            "sources": list(self.sources),
        }

    def other(self, entity_id: str) -> str:
        """The entity at the other end from ``entity_id``."""
        return self.object_id if entity_id == self.subject_id else self.subject_id


@dataclass(frozen=True, slots=True)
class Neighbor:
    """An entity ``depth`` edges away from the one asked about (1: directly related)."""

    entity: Entity
    depth: int

    def to_dict(self) -> dict[str, Any]:
        """The neighbor as JSON-ready values: the entity's, and its depth."""
        return {**self.entity.to_dict(), "depth": self.depth}
