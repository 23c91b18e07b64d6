"""Statements both SQL stores run with the same text, but for the parameter placeholder
(``mark``: ``?`` or ``%s``)."""

from __future__ import annotations

from typing import Any

from memlane.ports import store as ops


def get_messages(mark: str, op: ops.GetMessages) -> tuple[str, list[Any]]:
    """The session's messages in order, or those of its last ``op.last_runs`` runs."""
    sql = f"SELECT * FROM messages WHERE user_id = {mark} AND session_id = {mark}"
    params: list[Any] = [op.user_id, op.session_id]
    if op.last_runs is not None:
        sql += (
            f" AND run_id IN (SELECT run_id FROM messages WHERE user_id = {mark} "
            f"AND session_id = {mark} GROUP BY run_id ORDER BY MAX(seq) DESC LIMIT {mark})"
        )
        params += [op.user_id, op.session_id, op.last_runs]
    return sql + " ORDER BY seq", params


def last_seq(mark: str) -> str:
    """The highest message number of one session (0 for none); parameters: user, session."""
    return (
        f"SELECT COALESCE(MAX(seq), 0) FROM messages WHERE user_id = {mark} AND session_id = {mark}"
    )
