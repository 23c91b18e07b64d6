"""The ``memlane`` command line. Commands parse, call the library, and format."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from memlane.api import Memory
from memlane.core.search import RECIPES
from memlane.errors import MemlaneError, ValidationError
from memlane.models import Filters, MemoryKind, MemoryRecord, SearchHit, from_iso
from memlane.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

KINDS = [k.value for k in MemoryKind]


class _Context:
    """What the commands share: settings, read when first needed (after every ``--store``
    on the command line was parsed), and the Memory built from them."""

    def __init__(self) -> None:
        self.store_url: str | None = None
        self.embedder: str | None = None
        self._settings: Settings | None = None
        self._memory: Memory | None = None

    def choose_store(self, url: str) -> None:
        """Take ``--store`` (before or after the command); two different ones are a usage
        error."""
        if self.store_url is not None and url != self.store_url:
            raise click.UsageError(f"--store is given twice: {self.store_url!r} and {url!r}")
        self.store_url = url

    def choose_embedder(self, name: str) -> None:
        """Take ``--embedder`` (before or after the command), as ``--store``."""
        if self.embedder is not None and name != self.embedder:
            raise click.UsageError(f"--embedder is given twice: {self.embedder!r} and {name!r}")
        self.embedder = name

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            settings = Settings.from_env(store_url=self.store_url)
            if self.embedder is not None:
                settings = dataclasses.replace(settings, embedder=self.embedder)
            self._settings = settings
        return self._settings

    def memory(self, *, create: bool = True) -> Memory:
        """The Memory over the chosen store; with ``create=False`` (commands that only
        read) a store that does not exist yet is an error instead of being created."""
        if self._memory is None:
            self._memory = Memory(
                self.settings.build_store(create=create), embedder=self.settings.build_embedder()
            )
        return self._memory

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()


pass_ctx = click.make_pass_decorator(_Context)


def _store_given(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    if not value.strip():
        raise click.BadParameter("is empty: give a store URL or a SQLite file path")
    ctx.ensure_object(_Context).choose_store(value)


def store_option(f: F) -> F:
    """``--store``: on the group and on every command that uses the store, so it may come
    before or after the command name."""
    return click.option(
        "--store",
        callback=_store_given,
        expose_value=False,
        help="Store URL (sqlite:///PATH, postgresql://..., memory://) or a SQLite file path. "
        "Default: $MEMLANE_STORE, else memlane.db in the user data dir.",
    )(f)


def _embedder_given(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    if not value.strip():
        raise click.BadParameter("is empty: give an embedder name")
    ctx.ensure_object(_Context).choose_embedder(value)


def embedder_option(f: F) -> F:
    """``--embedder``: on the group and on every command, before or after its name."""
    return click.option(
        "--embedder",
        callback=_embedder_given,
        expose_value=False,
        help="Embedder spec: onnx (the bundled model), onnx:DIR, torch, torch:MODEL, "
        "openai:MODEL, fake ... Default: $MEMLANE_EMBEDDER, else onnx.",
    )(f)


def user_option(f: F) -> F:
    return click.option(
        "--user",
        "user_id",
        required=True,
        help="Whose memory (required; 'anonymous' is the explicit shared anonymous scope).",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(f)


def _time(value: str | None) -> datetime | None:
    return None if value is None else from_iso(value)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True))


def _line(record: MemoryRecord, score: float | None = None) -> str:
    flags = "" if record.is_current else (" [deleted]" if record.deleted_at else " [superseded]")
    head = f"{score:.4f}  " if score is not None else ""
    return f"{head}{record.id}  {record.kind.value:<10} {record.text}{flags}"


def _filters(
    kind: Sequence[str],
    topic: Sequence[str],
    session: str | None,
    since: str | None,
    until: str | None,
    meta: Sequence[str],
    include_superseded: bool = False,
) -> Filters:
    metadata: dict[str, Any] = {}
    for item in meta:
        if "=" not in item:
            raise ValidationError(f"--meta wants KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        metadata[key] = value
    return Filters(
        kinds=tuple(MemoryKind(k) for k in kind),
        topics=tuple(topic),
        session_id=session,
        since=_time(since),
        until=_time(until),
        metadata=metadata,
        include_superseded=include_superseded,
    )


def filter_options(f: F) -> F:
    for decorator in reversed(
        [
            click.option(
                "--kind", multiple=True, type=click.Choice(KINDS), help="Only these kinds."
            ),
            click.option("--topic", multiple=True, help="Only memories with any of these topics."),
            click.option("--session", help="Only memories of this session."),
            click.option("--since", help="Only memories at or after this ISO time."),
            click.option("--until", help="Only memories at or before this ISO time."),
            click.option("--meta", multiple=True, help="KEY=VALUE metadata equality filter."),
        ]
    ):
        f = decorator(f)
    return f


class _Group(click.Group):
    """Maps memlane's errors to a one-line message and exit status 1 (no traceback)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # Python hands argv bytes that are not UTF-8 over as lone surrogates, which no
        # store, hash or JSON encoder accepts: refuse them here, once, for every command.
        for arg in args:
            try:
                arg.encode("utf-8")
            except UnicodeEncodeError:
                shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                raise click.ClickException(f"argument is not UTF-8: {shown!r}") from None
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MemlaneError as exc:
            raise click.ClickException(f"{type(exc).__name__}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise click.ClickException(f"input is not UTF-8: {exc.reason}") from exc
        except RecursionError as exc:
            raise click.ClickException("input is nested too deeply") from exc
        except OverflowError as exc:
            raise click.ClickException(f"a number or date is out of range: {exc}") from exc


@click.group(cls=_Group)
@store_option
@embedder_option
@click.version_option(package_name="memlane")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """memlane: memory for AI agents."""
    state = ctx.ensure_object(_Context)
    ctx.call_on_close(state.close)


def _positive_days(ctx: click.Context, param: click.Parameter, value: float | None) -> Any:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"must be a positive number of days, got {value}")
    return value


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
    as_json: bool,
) -> None:
    """Remember TEXT for a user."""
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
    )
    _echo_json(record.to_dict()) if as_json else click.echo(record.id)


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
    kind: tuple[str, ...],
    topic: tuple[str, ...],
    session: str | None,
    since: str | None,
    until: str | None,
    meta: tuple[str, ...],
    as_json: bool,
) -> None:
    """Find a user's memories most relevant to QUERY."""
    hits = ctx.memory(create=False).search(
        query,
        user_id=user_id,
        limit=limit,
        recipe=recipe,
        explain=explain or as_json,
        filters=_filters(kind, topic, session, since, until, meta),
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
    kind: tuple[str, ...],
    topic: tuple[str, ...],
    session: str | None,
    since: str | None,
    until: str | None,
    meta: tuple[str, ...],
    as_json: bool,
) -> None:
    """List a user's memories, newest first, one page at a time."""
    page = ctx.memory(create=False).list(
        user_id=user_id,
        limit=limit,
        cursor=cursor,
        filters=_filters(kind, topic, session, since, until, meta, all_versions),
    )
    if as_json:
        _echo_json({"items": [r.to_dict() for r in page.items], "next_cursor": page.next_cursor})
        return
    for record in page.items:
        click.echo(_line(record))
    if page.next_cursor:
        click.echo(f"-- more: --cursor {page.next_cursor}", err=True)


@cli.command()
@click.argument("record_id")
@user_option
@json_option
@pass_ctx
def get(ctx: _Context, record_id: str, user_id: str, as_json: bool) -> None:
    """Show one memory."""
    record = ctx.memory(create=False).get(record_id, user_id=user_id)
    if as_json:
        _echo_json(record.to_dict())
        return
    for key, value in record.to_dict().items():
        if value not in (None, [], {}):
            click.echo(f"{key:>16}: {value}")


@cli.command()
@click.argument("record_id")
@user_option
@json_option
@pass_ctx
def history(ctx: _Context, record_id: str, user_id: str, as_json: bool) -> None:
    """Show every recorded change of a memory."""
    events = ctx.memory(create=False).history(record_id, user_id=user_id)
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


@cli.command()
@click.option("--user", "user_id", help="Only this user (default: everyone).")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-")
@pass_ctx
def export(ctx: _Context, user_id: str | None, output: Any) -> None:
    """Write memories, history, sessions and state as JSONL (a progress count on a
    terminal)."""
    from memlane.transfer import write_jsonl

    with _progress("export", None) as bar:
        rows = ctx.memory(create=False).export_rows(user_id=user_id, progress=bar.update)
    n = write_jsonl(rows, output)
    click.echo(f"exported {n} lines", err=True)


@cli.command(name="import")
@click.argument("source", type=click.File("r", encoding="utf-8"))
@json_option
@pass_ctx
def import_(ctx: _Context, source: Any, as_json: bool) -> None:
    """Read a JSONL export: all or nothing (a bad line, or a failure while embedding or
    writing, changes nothing); re-running is safe. A progress bar on a terminal."""
    from memlane.transfer import read_numbered_jsonl

    numbered = list(read_numbered_jsonl(source))
    with _progress("import", len(numbered)) as bar:
        result = ctx.memory().import_rows(
            [row for _, row in numbered], lines=[n for n, _ in numbered], progress=bar.update
        )
    counts = dict(result.counts)
    _echo_json(counts) if as_json else click.echo(
        "imported " + (", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())) or "nothing")
    )


@cli.command()
@json_option
@pass_ctx
def reembed(ctx: _Context, as_json: bool) -> None:
    """Move the store to the embedder in use (--embedder or $MEMLANE_EMBEDDER): embed
    every memory again, record the model, remove the old vectors. Safe to run again; an
    interrupted run is finished by running it again. A progress bar on a terminal."""
    memory = ctx.memory(create=False)
    with _progress("reembed", None, unit=" texts") as bar:
        counts = memory.reembed(progress=bar.update)
    _echo_json(counts) if as_json else click.echo(
        f"re-embedded {counts['memories']} memories and {counts['contexts']} contexts with "
        f"{memory.embedder.model_id} ({counts['embedded']} texts embedded, "
        f"{counts['removed']} old vectors removed)"
    )


def _progress(desc: str, total: int | None, unit: str = " lines") -> Any:
    """A tqdm bar of lines on stderr, shown only when stderr is a terminal (never in
    pipes, logs or --json consumers' captured output)."""
    from tqdm import tqdm

    return tqdm(
        desc=desc,
        total=total,
        unit=unit,
        file=sys.stderr,
        disable=not sys.stderr.isatty(),
    )


@cli.command()
@json_option
@pass_ctx
def sweep(ctx: _Context, as_json: bool) -> None:
    """Purge expired memories (recorded in their history)."""
    n = ctx.memory().sweep()
    _echo_json({"purged": n}) if as_json else click.echo(f"purged {n} expired memories")


@cli.command()
@click.argument("source_url")
@click.argument("target_url")
@click.option("--no-progress", is_flag=True, help="No progress bar (none when piped either).")
@json_option
@store_option
@pass_ctx
def migrate(
    ctx: _Context, source_url: str, target_url: str, no_progress: bool, as_json: bool
) -> None:
    """Copy everything from one store to another and verify it (safe to run again)."""
    from memlane.migrate import migrate as run_migration

    if ctx.store_url is not None:  # before or after the command: never silently ignored
        raise click.UsageError(
            "migrate names its stores as SOURCE_URL TARGET_URL; --store does not apply"
        )

    def bar(users: Any, total: int) -> Any:
        from tqdm import tqdm

        return tqdm(
            users,
            total=total,
            desc="users",
            unit="user",
            file=sys.stderr,
            disable=no_progress or not sys.stderr.isatty(),
        )

    report = run_migration(
        source_url, target_url, embedder=ctx.settings.build_embedder(), progress=bar
    )
    if as_json:
        _echo_json(report.to_dict())
    else:
        counts = ", ".join(f"{n} {kind}" for kind, n in report.counts.items()) or "nothing"
        click.echo(f"copied {len(report.users)} users: {counts}")
        click.echo(f"verified: {'ok' if report.ok else 'MISMATCH'}")
    if not report.ok:
        errors = "; ".join(f"{u.user_id}: {u.error}" for u in report.users if u.error)
        raise click.ClickException(
            f"copy differs for users: {', '.join(report.mismatches)}"
            + (f" (not copied: {errors})" if errors else "")
        )


@cli.command()
@click.option(
    "--store", "demo_store", help="Store for the demo (default: demo.db in the data dir)."
)
@pass_ctx
def demo(ctx: _Context, demo_store: str | None) -> None:
    """Two users, two processes: remember, restart, recall."""
    store = demo_store or "sqlite:///" + str(ctx.settings.data_dir / "demo.db")
    for step in ("remember", "recall"):
        click.echo(f"\n=== process {'1' if step == 'remember' else '2'}: {step} ===")
        done = subprocess.run(
            [sys.executable, "-m", "memlane.demo", step, store],
            check=False,
            capture_output=True,
            text=True,
        )
        click.echo(done.stdout, nl=False)
        if done.returncode != 0:
            click.echo(done.stderr, err=True, nl=False)
            raise click.ClickException(f"demo step {step!r} failed (exit {done.returncode})")
    click.echo(f"\nThe demo's memories are in {store}.")


@cli.group(name="eval")
def eval_() -> None:
    """Measure recall on public benchmarks."""


@eval_.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--recipe",
    type=click.Choice(sorted(RECIPES)),
    default="hybrid",
    show_default=True,
    help="Search recipe to evaluate (checked before anything is ingested).",
)
@click.option(
    "--eval-store",
    help="Store to ingest into (default: a scratch SQLite file in the data dir, removed after).",
)
@pass_ctx
def locomo(
    ctx: _Context,
    directory: Path,
    json_path: Path | None,
    markdown_path: Path | None,
    recipe: str,
    eval_store: str | None,
) -> None:
    """Turn-level recall@k and hit@k on a LoCoMo-format DIRECTORY."""
    import tempfile

    from tqdm import tqdm

    from memlane.evals.locomo import evaluate, load_dir

    conversations = load_dir(directory)

    def progress(items: Any, desc: str, total: int) -> Any:
        return tqdm(items, desc=desc, total=total, unit="q" if desc == "search" else "conv")

    embedder = ctx.settings.build_embedder()
    with tempfile.TemporaryDirectory(dir=_scratch_dir(ctx.settings.data_dir)) as scratch:
        url = eval_store or f"sqlite:///{scratch}/locomo.db"
        with Memory(url, embedder=embedder) as memory:
            report = evaluate(memory, conversations, recipe=recipe, progress=progress)
    markdown = report.to_markdown()
    click.echo(markdown)
    if json_path:
        json_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    if markdown_path:
        markdown_path.write_text(markdown, encoding="utf-8")


def _scratch_dir(data_dir: Path) -> Path:
    path = data_dir / "scratch"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _register_server_commands() -> None:
    from memlane.manager.commands import register as register_manager
    from memlane.server.commands import register

    register(cli)
    register_manager(cli)


_register_server_commands()

# Commands that name their stores themselves (migrate's two URLs, refusing --store; demo's
# and eval's own).
_OWN_STORES = {"migrate", "demo", "eval"}
# Commands that pick their embedder themselves.
_OWN_EMBEDDERS = {"demo"}


def _accept_store_after(group: click.Group, own_store: bool = False) -> None:
    """Give every command that uses the store (and the embedder) the one ``--store``
    (``--embedder``) option too."""
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            _accept_store_after(command, own_store or name in _OWN_STORES)
            continue
        if not own_store and name not in _OWN_STORES:
            store_option(command)
        if name not in _OWN_EMBEDDERS:
            embedder_option(command)


_accept_store_after(cli)


def main() -> None:
    """Console entry point."""
    cli(prog_name="memlane")


if __name__ == "__main__":
    main()
