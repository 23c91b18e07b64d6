"""The memory commands: add, search, list, get, history, forget, audit, and quarantine
list and release."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import timedelta

import click

from memlane.cli._base import (
    KINDS,
    _Context,
    _echo_json,
    _line,
    _positive_days,
    _time,
    as_of_time,
    cli,
    filter_options,
    json_option,
    pass_ctx,
    user_option,
)
from memlane.core.search import RECIPES
from memlane.errors import ValidationError
from memlane.models import AuditEvent, Filters, SearchHit, Trust


@cli.command()
@click.argument("text")
@user_option
@click.option("--kind", type=click.Choice(KINDS), default="fact", show_default=True)
@click.option("--topic", "topics", multiple=True, help="Topic (repeatable).")
@click.option("--importance", type=float, default=0.5, show_default=True)
@click.option("--session", help="Session the memory came from.")
@click.option("--agent", help="Agent the memory belongs to.")
@click.option("--team", help="Team whose agents share the memory.")
@click.option("--event-time", help="When the content happened (ISO time).")
@click.option(
    "--ttl-days", type=float, callback=_positive_days, help="Expire after this many days."
)
@click.option("--metadata", help="JSON object of metadata.")
@click.option(
    "--trust",
    type=click.Choice([t.value for t in Trust]),
    default="user",
    show_default=True,
    help="Whose word it is: the user's, inferred by an agent or model, a tool's, imported.",
)
@json_option
@pass_ctx
def add(
    ctx: _Context,
    text: str,
    user_id: str,
    kind: str,
    topics: tuple[str, ...],
    importance: float,
    session: str | None,
    agent: str | None,
    team: str | None,
    event_time: str | None,
    ttl_days: float | None,
    metadata: str | None,
    trust: str,
    as_json: bool,
) -> None:
    """Remember TEXT for a user (quarantined, and said so, when it holds instruction-like
    content)."""
    try:
        meta = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError as exc:
        raise ValidationError(f"--metadata is not valid JSON: {exc.msg}") from exc
    record = ctx.memory().add(
        text,
        user_id=user_id,
        kind=kind,
        topics=topics,
        importance=importance,
        session_id=session,
        agent_id=agent,
        team=team,
        event_at=_time(event_time),
        ttl=None if ttl_days is None else timedelta(days=ttl_days),
        metadata=meta,
        trust=trust,
    )
    if as_json:
        _echo_json(record.to_dict())
        return
    click.echo(record.id)
    if record.quarantine:
        click.echo(
            f"quarantined ({', '.join(record.quarantine)}): not recalled until "
            f"`memlane quarantine release --user {user_id} {record.id}`",
            err=True,
        )


def one_record_command(f: Callable[..., None]) -> click.Command:
    """A command about one of a user's memories: RECORD_ID, --user and --json."""
    return cli.command()(click.argument("record_id")(user_option(json_option(pass_ctx(f)))))


@cli.command()
@click.argument("query")
@user_option
@click.option("--limit", "-k", type=int, default=10, show_default=True)
@click.option("--recipe", type=click.Choice(sorted(RECIPES)), default="hybrid", show_default=True)
@click.option("--explain", is_flag=True, help="Show how each score was made.")
@filter_options
@json_option
@pass_ctx
def search(
    ctx: _Context,
    query: str,
    user_id: str,
    limit: int,
    recipe: str,
    explain: bool,
    filters: Filters,
    as_json: bool,
) -> None:
    """Find a user's memories most relevant to QUERY."""
    hits = ctx.memory(create=False).search(
        query,
        user_id=user_id,
        limit=limit,
        recipe=recipe,
        explain=explain or as_json,
        filters=filters,
    )
    if as_json:
        _echo_json([h.to_dict() for h in hits])
        return
    for hit in hits:
        click.echo(_line(hit.record, hit.score))
        if explain:
            click.echo("        " + _explain(hit))
    if not hits:
        click.echo("no memories found", err=True)


def _explain(hit: SearchHit) -> str:
    parts = []
    for method in ("vector", "lexical"):
        info = (hit.explanation or {}).get(method)
        if info:
            parts.append(f"{method}: rank {info['rank']} score {info['score']:.4f}")
    return "; ".join(parts) or "no breakdown"


@cli.command(name="list")
@user_option
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", help="Continue after this cursor (printed at the end of a page).")
@click.option("--all-versions", is_flag=True, help="Include superseded memories.")
@filter_options
@json_option
@pass_ctx
def list_(
    ctx: _Context,
    user_id: str,
    limit: int,
    cursor: str | None,
    all_versions: bool,
    filters: Filters,
    as_json: bool,
) -> None:
    """List a user's memories, newest first, one page at a time."""
    page = ctx.memory(create=False).list(
        user_id=user_id,
        limit=limit,
        cursor=cursor,
        filters=dataclasses.replace(filters, include_superseded=all_versions),
    )
    if as_json:
        _echo_json({"items": [r.to_dict() for r in page.items], "next_cursor": page.next_cursor})
        return
    for record in page.items:
        click.echo(_line(record))
    if page.next_cursor:
        click.echo(f"-- more: --cursor {page.next_cursor}", err=True)


@one_record_command
def get(ctx: _Context, record_id: str, user_id: str, as_json: bool) -> None:
    """Show one memory (a quarantined one too: the CLI is an operator's tool)."""
    record = ctx.memory(create=False).get(record_id, user_id=user_id, include_quarantined=True)
    if as_json:
        _echo_json(record.to_dict())
        return
    for key, value in record.to_dict().items():
        if value not in (None, [], {}):
            click.echo(f"{key:>16}: {value}")


@one_record_command
@click.option("--as-of", "as_of", help="Only the changes made by this ISO date or time.")
def history(ctx: _Context, record_id: str, user_id: str, as_json: bool, as_of: str | None) -> None:
    """Show every recorded change of a memory (with --as-of, those made by then)."""
    events = ctx.memory(create=False).history(record_id, user_id=user_id, as_of=as_of_time(as_of))
    if as_json:
        _echo_json([e.to_dict() for e in events])
        return
    for e in events:
        text = (e.snapshot or {}).get("text", "")
        why = f"  ({e.reason})" if e.reason else ""
        click.echo(f"{e.at.isoformat()}  v{e.version:<3} {e.action.value:<9} {text}{why}")


@cli.command()
@click.argument("record_id", required=False)
@user_option
@click.option("--all", "everything", is_flag=True, help="Forget everything of the user.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation with --all.")
@click.option("--reason", help="Why (kept in history).")
@json_option
@pass_ctx
def forget(
    ctx: _Context,
    record_id: str | None,
    user_id: str,
    everything: bool,
    yes: bool,
    reason: str | None,
    as_json: bool,
) -> None:
    """Delete one memory (recorded, restorable), or with --all every trace of a user."""
    if everything == (record_id is not None):
        raise click.UsageError("give either a RECORD_ID or --all")
    if everything:
        if not yes:
            click.confirm(f"Forget everything of user {user_id!r}?", abort=True)
        counts = ctx.memory().forget_user(user_id)
        _echo_json(counts) if as_json else click.echo(
            ", ".join(f"{n} {table}" for table, n in counts.items()) + " removed"
        )
        return
    assert record_id is not None
    record = ctx.memory().delete(record_id, user_id=user_id, reason=reason)
    _echo_json(record.to_dict()) if as_json else click.echo(f"forgot {record.id}")


@cli.group()
def quarantine() -> None:
    """Memories held back for instruction-like content: list and release them."""


@quarantine.command(name="list")
@user_option
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--cursor", help="Continue after this cursor (printed at the end of a page).")
@json_option
@pass_ctx
def quarantine_list(
    ctx: _Context, user_id: str, limit: int, cursor: str | None, as_json: bool
) -> None:
    """List a user's quarantined memories, newest first, with what was found in each."""
    page = ctx.memory(create=False).list(
        user_id=user_id,
        limit=limit,
        cursor=cursor,
        filters=Filters(quarantined_only=True, include_deleted=True, include_superseded=True),
    )
    if as_json:
        _echo_json({"items": [r.to_dict() for r in page.items], "next_cursor": page.next_cursor})
        return
    for record in page.items:
        click.echo(_line(record))
    if page.next_cursor:
        click.echo(f"-- more: --cursor {page.next_cursor}", err=True)
    if not page.items:
        click.echo("no quarantined memories", err=True)


@quarantine.command(name="release")
@click.argument("record_id")
@user_option
@click.option("--reason", help="Why it may be recalled (kept in history).")
@json_option
@pass_ctx
def quarantine_release(
    ctx: _Context, record_id: str, user_id: str, reason: str | None, as_json: bool
) -> None:
    """Let a quarantined memory be searched and put in a context again."""
    record = ctx.memory().release(record_id, user_id=user_id, reason=reason, actor="cli")
    _echo_json(record.to_dict()) if as_json else click.echo(f"released {record.id}")


@cli.command()
@user_option
@click.option("--since", help="Only entries at or after this ISO time.")
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--after", help="Continue after this cursor (printed at the end of a page).")
@json_option
@pass_ctx
def audit(
    ctx: _Context,
    user_id: str,
    since: str | None,
    limit: int,
    after: str | None,
    as_json: bool,
) -> None:
    """Show who read or changed a user's data, oldest first (never what it said)."""
    page = ctx.memory(create=False).audit(user_id, since=_time(since), after=after, limit=limit)
    if as_json:
        items = [e.to_dict() for e in page.items]
        _echo_json({"items": items, "next_cursor": page.next_cursor})
        return
    for event in page.items:
        click.echo(_audit_line(event))
    if page.next_cursor:
        click.echo(f"-- more: --after {page.next_cursor}", err=True)
    if not page.items:
        click.echo("no audit entries", err=True)


def _audit_line(e: AuditEvent, shown: int = 5) -> str:
    """One entry: time, actor, action, counts, then the first ``shown`` ids (``--json``
    has them all)."""
    counts = " ".join(f"{name}={n}" for name, n in sorted(e.counts.items()))
    ids = [*(f"record:{i}" for i in e.record_ids), *(f"session:{s}" for s in e.session_ids)]
    more = [f"(+{len(ids) - shown} more)"] if len(ids) > shown else []
    parts = (e.at.isoformat(), e.actor, e.action, counts, *ids[:shown], *more)
    return "  ".join(part for part in parts if part)
