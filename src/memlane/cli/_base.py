"""What the ``memlane`` commands share: the context, the common options, output
helpers and the command group itself."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import click

from memlane.api import Memory
from memlane.errors import MemlaneError, ValidationError
from memlane.models import Filters, MemoryKind, MemoryRecord, from_iso
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
                self.settings.build_store(create=create),
                embedder=self.settings.build_embedder(),
                sparse=self.settings.build_sparse(),
                config=self.settings.build_config(),
                cipher=self.settings.build_cipher(),
                actor=self.settings.build_actor("cli"),
            )
        return self._memory

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()


pass_ctx = click.make_pass_decorator(_Context)


def _context_option(
    name: str, choose: Callable[[_Context, str], None], empty: str, help: str
) -> Callable[[F], F]:
    """An option for the group and for every command, so it may come before or after the
    command name: a non-empty value goes to ``choose`` on the shared context."""

    def given(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is None:
            return
        if not value.strip():
            raise click.BadParameter(f"is empty: {empty}")
        choose(ctx.ensure_object(_Context), value)

    return click.option(name, callback=given, expose_value=False, help=help)


store_option = _context_option(
    "--store",
    _Context.choose_store,
    "give a store URL or a SQLite file path",
    "Store URL (sqlite:///PATH, postgresql://..., memory://) or a SQLite file path. "
    "Default: $MEMLANE_STORE, else memlane.db in the user data dir.",
)
embedder_option = _context_option(
    "--embedder",
    _Context.choose_embedder,
    "give an embedder name",
    "Embedder spec: onnx (the bundled model), onnx:DIR, torch, torch:MODEL, "
    "openai:MODEL, fake ... Default: $MEMLANE_EMBEDDER, else onnx.",
)


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
    if record.quarantine:
        flags += f" [quarantined: {', '.join(record.quarantine)}]"
    head = f"{score:.4f}  " if score is not None else ""
    return f"{head}{record.id}  {record.kind.value:<10} {record.text}{flags}"


_FILTER_OPTIONS = ("kind", "topic", "session", "since", "until", "meta", "as_of")
"""The parameters of :func:`_filters`, each given by the option of its name."""


def _filters(
    *,
    kind: Sequence[str],
    topic: Sequence[str],
    session: str | None,
    since: str | None,
    until: str | None,
    meta: Sequence[str],
    as_of: str | None,
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
        as_of=as_of_time(as_of),
    )


AS_OF_HELP = (
    "Time travel: what was valid at this ISO date or time (2024-03-01, "
    "2024-03-01T09:30+01:00; no zone: UTC), not superseded, deleted or expired by then."
)


def as_of_time(value: str | None) -> datetime | None:
    """The moment ``--as-of`` names (a date is its midnight, a time without zone is
    UTC). Raises ValidationError naming the option."""
    try:
        return _time(value)
    except ValidationError as exc:
        raise ValidationError(f"--as-of wants an ISO date or time, got {value!r}") from exc


def filter_options(f: F) -> F:
    """``--kind``, ``--topic``, ``--session``, ``--since``, ``--until``, ``--meta`` and
    ``--as-of``,
    handed to the command as one ``filters`` argument (a :class:`Filters`)."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        chosen = {name: kwargs.pop(name) for name in _FILTER_OPTIONS}
        return f(*args, filters=_filters(**chosen), **kwargs)

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
            click.option("--as-of", "as_of", help=AS_OF_HELP),
        ]
    ):
        command = decorator(command)
    return cast(F, command)


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
