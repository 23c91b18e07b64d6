"""The values memlane stores and returns.

All are immutable dataclasses, one module per area: the plain values they are made of
(``basics``: times, text hashes, checked ids, the scope), memories and their history
(``records``), sessions (``sessions``), background jobs (``jobs``), the audit trail
(``audit``) and what a listing or search asks and returns (``queries``). Those that are
stored convert to and from JSON-ready dicts in one way (``codec``). Import them from here.
"""

from memlane.models.audit import TOMBSTONE_ACTION, AuditEvent, AuditLevel
from memlane.models.basics import (
    ANONYMOUS_USER,
    MAX_ID_CHARS,
    Scope,
    check_count,
    check_id,
    content_hash,
    format_period,
    from_iso,
    normalize_text,
    opt_iso,
    opt_time,
    parse_period,
    period_words,
    to_iso,
    utcnow,
)
from memlane.models.graph import MENTIONED_WITH, Entity, EntityType, Mention, Neighbor, Relation
from memlane.models.jobs import Job, JobStatus
from memlane.models.queries import Filters, Page, SearchHit
from memlane.models.records import (
    ROLE_TRUST,
    HistoryAction,
    HistoryEvent,
    MemoryKind,
    MemoryRecord,
    Trust,
    trust_of_role,
)
from memlane.models.sessions import Message, Run, Session, StateVersion, WorkflowState

__all__ = [
    "ANONYMOUS_USER",
    "MAX_ID_CHARS",
    "MENTIONED_WITH",
    "ROLE_TRUST",
    "TOMBSTONE_ACTION",
    "AuditEvent",
    "AuditLevel",
    "Entity",
    "EntityType",
    "Filters",
    "HistoryAction",
    "HistoryEvent",
    "Job",
    "JobStatus",
    "MemoryKind",
    "MemoryRecord",
    "Mention",
    "Message",
    "Neighbor",
    "Page",
    "Relation",
    "Run",
    "Scope",
    "SearchHit",
    "Session",
    "StateVersion",
    "Trust",
    "WorkflowState",
    "check_count",
    "check_id",
    "content_hash",
    "format_period",
    "from_iso",
    "normalize_text",
    "opt_iso",
    "opt_time",
    "parse_period",
    "period_words",
    "to_iso",
    "trust_of_role",
    "utcnow",
]
