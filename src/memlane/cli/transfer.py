"""The store-wide commands: export, import, reembed, reindex, convert-vectors, sweep and
migrate."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import click

from memlane.cli._base import (
    _Context,
    _echo_json,
    cli,
    json_option,
    pass_ctx,
    store_option,
)


@cli.command()
@click.option("--user", "user_id", help="Only this user (default: everyone).")
@click.option("--output", "-o", type=click.File("w", encoding="utf-8"), default="-")
@click.option(
    "--plaintext",
    is_flag=True,
    help="From an encrypted store: write the rows readable instead of sealed per user.",
)
@pass_ctx
def export(ctx: _Context, user_id: str | None, output: Any, plaintext: bool) -> None:
    """Write memories, history, sessions and state as JSONL (a progress count on a
    terminal). From an encrypted store each row is sealed under its user's key unless
    --plaintext is given."""
    from memlane.transfer import write_jsonl

    with _progress("export", None) as bar:
        rows = ctx.memory(create=False).export_rows(
            user_id=user_id, progress=bar.update, plaintext=plaintext
        )
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


@cli.command()
@json_option
@pass_ctx
def reindex(ctx: _Context, as_json: bool) -> None:
    """Read again what search derives from each memory's text: the periods its time
    expressions name ("yesterday", said on 8 May 2023, is 7 May 2023) and their words in
    the lexical index, and the sparse terms of memories that have none; then build the
    search indexes beside a SQLite file afresh (they are rebuilt by themselves when
    missing or stale; this forces it). Run it once after upgrading from a memlane that
    did not read time or keep sparse terms. No new versions, no history; safe
    to run again. A progress bar on a terminal."""
    memory = ctx.memory(create=False)
    with _progress("reindex", None, unit=" memories") as bar:
        counts = memory.reindex(progress=bar.update)
    _echo_json(counts) if as_json else click.echo(
        f"read {counts['memories']} memories again; {counts['updated']} changed; "
        f"{counts['indexed']} indexed afresh; {counts['sparse']} given sparse terms"
    )


@cli.command("convert-vectors")
@click.argument("form", type=click.Choice(["int8", "float16"]))
@json_option
@pass_ctx
def convert_vectors(ctx: _Context, form: str, as_json: bool) -> None:
    """Rewrite a SQLite store's vectors in FORM and keep writing them so: int8 (one byte a
    dimension, the form of a new store; ~410 B a memory less than float16 at 384
    dimensions) or float16. No model is loaded; safe to run again. The file keeps its size
    until VACUUM is run with no process holding the store. A progress bar on a terminal."""
    from memlane.stores import open_store
    from memlane.stores.sqlite import SqliteStore

    store = open_store(ctx.settings.store_url, create=False)  # the file, not a Redis tier
    if not isinstance(store, SqliteStore):
        store.close()
        raise click.UsageError("only a SQLite store keeps its vectors in a form to convert")
    try:
        total = store.vector_count()
        with _progress("convert-vectors", total, unit=" vectors") as bar:
            rewritten = store.convert_vectors(form, progress=bar.update)
    finally:
        store.close()
    counts = {"vectors": int(total), "rewritten": rewritten}
    _echo_json(counts) if as_json else click.echo(
        f"{rewritten} of {total} vectors rewritten as {form}; the store now writes {form}"
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
@click.option(
    "--encrypt",
    is_flag=True,
    help="Seal the target under the master key (MEMLANE_MASTER_KEY; keyring MEMLANE_KEYRING).",
)
@click.option(
    "--decrypt",
    is_flag=True,
    help="Open an encrypted source with the master key (keyring MEMLANE_KEYRING).",
)
@json_option
@store_option
@pass_ctx
def migrate(
    ctx: _Context,
    source_url: str,
    target_url: str,
    no_progress: bool,
    encrypt: bool,
    decrypt: bool,
    as_json: bool,
) -> None:
    """Copy everything from one store to another and verify it (safe to run again).
    With --encrypt the copy is sealed (a store moves into encryption), with --decrypt
    the source is opened (out of it); both copy between encrypted stores."""
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

    def cipher(url: str, wanted: bool) -> Any:
        if not wanted:
            return None
        settings = dataclasses.replace(ctx.settings, store_url=url)
        if not settings.encrypted:
            raise click.UsageError("--encrypt and --decrypt need MEMLANE_MASTER_KEY")
        return settings.build_cipher()

    report = run_migration(
        source_url,
        target_url,
        embedder=ctx.settings.build_embedder(),
        progress=bar,
        source_cipher=cipher(source_url, decrypt),
        target_cipher=cipher(target_url, encrypt),
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
