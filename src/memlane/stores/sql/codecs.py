"""Values both SQL stores write the same way."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from memlane.models import Message
from memlane.ports import store as ops

APPLICATION = "memlane"
"""Recorded in a database memlane created; a database without it is never adopted."""

WRITE_OPS = (
    ops.WriteRecord,
    ops.AppendHistory,
    ops.TouchRecords,
    ops.RemoveRecords,
    ops.PutEmbeddings,
    ops.PruneEmbeddings,
    ops.SetEmbeddingModel,
    ops.DropEmbeddings,
    ops.UpsertSession,
    ops.AppendMessages,
    ops.DeleteSessions,
    ops.PutState,
    ops.DeleteUser,
    ops.PutJob,
    ops.ClaimJob,
)
"""The ops that write: a batch with none of them runs as a read-only transaction."""


def to_json(value: Any) -> str:
    """memlane's canonical JSON text: sorted keys, UTF-8 as is, no spaces."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def message_values(m: Message, time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """A message as the columns of ``messages``, its time written by ``time``."""
    return (
        m.user_id,
        m.session_id,
        m.seq,
        m.id,
        m.run_id,
        m.role,
        m.content,
        time(m.created_at),
        to_json(dict(m.metadata)),
    )
