"""CLI commands around the memory manager: ``context``, ``learn``, ``optimize``, ``jobs``
(registered on the main ``memlane`` group)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def _memory(ctx: click.Context, *, create: bool = True) -> Any:
    """The command's memory; ``create=False`` for commands that only read (a store that
    does not exist is then an error, never created)."""
    return ctx.obj.memory(create=create)


def _manager(ctx: click.Context, *, create: bool = True) -> Any:
    """A manager over the command's memory, with the chat model of MEMLANE_LLM_* (if any)."""
    from memlane.manager import MemoryManager

    return MemoryManager(_memory(ctx, create=create), ctx.obj.settings.build_llm())


@click.command()
@click.option("--user", "user_id", required=True)
@click.option("--budget", type=int, default=800, show_default=True, help="Tokens at most.")
@click.option("--query", help="Select memories relevant to this.")
@click.option("--session", "session_id", help="Add this session's summary, runs and state.")
@click.option("--last-runs", type=int, default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the breakdown and ids as JSON.")
@click.pass_context
def context(
    ctx: click.Context,
    user_id: str,
    budget: int,
    query: str | None,
    session_id: str | None,
    last_runs: int,
    as_json: bool,
) -> None:
    """Print a context block for a prompt that fits BUDGET tokens."""
    built = _memory(ctx, create=False).build_context(
        user_id=user_id, budget=budget, query=query, session_id=session_id, last_runs=last_runs
    )
    if as_json:
        click.echo(json.dumps(built.to_dict(), indent=2, ensure_ascii=False))
        return
    click.echo(built.text)
    click.echo(f"{built.tokens}/{budget} tokens: {built.breakdown}", err=True)


@click.command()
@click.option("--user", "user_id", required=True)
@click.option("--session", "session_id")
@click.option(
    "--file",
    "source",
    type=click.File("r", encoding="utf-8"),
    default="-",
    help="JSON lines of {role, content} (default: stdin).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def learn(
    ctx: click.Context, user_id: str, session_id: str | None, source: Any, as_json: bool
) -> None:
    """Extract memories from a conversation with the configured chat model
    (MEMLANE_LLM_BASE_URL, MEMLANE_LLM_MODEL) and print what happened to each."""
    from memlane.errors import NoModelError
    from memlane.manager import MemoryManager
    from memlane.manager.results import conversation_text
    from memlane.models import check_id
    from memlane.transfer import read_numbered_jsonl

    messages = [row for _, row in read_numbered_jsonl(source)]

    # Bad input first, then the missing model: either way before the store is touched.
    check_id("user_id", user_id)
    conversation_text(messages)
    llm = ctx.obj.settings.build_llm()
    if llm is None:
        raise NoModelError(
            "learn needs a chat model: set MEMLANE_LLM_BASE_URL and MEMLANE_LLM_MODEL"
        )
    manager = MemoryManager(_memory(ctx), llm)
    result = manager.process(messages, user_id=user_id, session_id=session_id)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    for c in result.candidates:
        click.echo(f"{c.outcome.value:<10} {c.text}" + (f"  ({c.reason})" if c.reason else ""))
    click.echo(json.dumps(result.usage.to_dict()), err=True)


@click.command()
@click.option("--user", "user_id", required=True)
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    type=click.Choice(["deduplicate", "merge", "summarize", "decay", "token-cap"]),
    required=True,
    help="Repeatable; applied in order.",
)
@click.option("--max-tokens", type=int, default=4000, show_default=True, help="For token-cap.")
@click.option("--max-memories", type=int, help="For decay: keep at most this many.")
@click.option("--apply", "apply_", is_flag=True, help="Apply (default: dry run, show the diff).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON for scripts.")
@click.pass_context
def optimize(
    ctx: click.Context,
    user_id: str,
    strategies: tuple[str, ...],
    max_tokens: int,
    max_memories: int | None,
    apply_: bool,
    as_json: bool,
) -> None:
    """Deduplicate, merge, summarize or evict a user's memories. Nothing is destroyed:
    merged memories are superseded and evicted ones soft-deleted, each change in their
    history (`memlane history`); MemoryManager.revert(report) undoes a run in code."""
    from memlane.manager import Decay, Deduplicate, Merge, Summarize, TokenCap
    from memlane.manager.strategies import Strategy

    made: dict[str, Strategy] = {
        "deduplicate": Deduplicate(),
        "merge": Merge(),
        "summarize": Summarize(),
        "decay": Decay(max_memories=max_memories),
        "token-cap": TokenCap(max_tokens=max_tokens),
    }
    manager = _manager(ctx, create=False)  # a store that does not exist has nothing to change
    report = manager.optimize([made[s] for s in strategies], user_id=user_id, dry_run=not apply_)
    if as_json:
        click.echo(json.dumps(report.to_dict(), ensure_ascii=False))
        return
    click.echo(report.diff or "nothing to change")
    click.echo(
        f"memories {report.memories_before} -> {report.memories_after}, tokens "
        f"{report.tokens_before} -> {report.tokens_after}"
        + ("" if apply_ else " (dry run: --apply to make the change)"),
        err=True,
    )


@click.command()
@click.option("--user", "user_id", help="Only this user's jobs.")
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["pending", "running", "done", "failed"]),
    help="Only jobs in this status (repeatable).",
)
@click.option("--run", is_flag=True, help="Run due jobs in this process until none is left.")
@click.pass_context
def jobs(ctx: click.Context, user_id: str | None, statuses: tuple[str, ...], run: bool) -> None:
    """List background jobs (or run the due ones)."""

    manager = _manager(ctx, create=False)
    failed_before = 0
    if run:
        failed_before = len(manager.list_jobs(user_id=user_id, statuses=["failed"]))
        done = manager.flush(timeout=None, user_id=user_id)  # LLMError without a model
        click.echo("all jobs finished" if done else "jobs left", err=True)
    for job in manager.list_jobs(user_id=user_id, statuses=statuses):
        click.echo(json.dumps(job.to_dict(), ensure_ascii=False))
    sys.stdout.flush()
    if run:
        failed = len(manager.list_jobs(user_id=user_id, statuses=["failed"])) - failed_before
        if failed:
            raise click.ClickException(f"{failed} job(s) failed; see their error")


def register(group: Any) -> None:
    for command in (context, learn, optimize, jobs):
        group.add_command(command)
