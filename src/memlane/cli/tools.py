"""The demo and the evaluation commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from memlane.api import Memory
from memlane.cli._base import (
    _Context,
    cli,
    pass_ctx,
)
from memlane.core.search import RECIPES

if TYPE_CHECKING:
    from memlane.evals.locomo import Memories


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
    "--memories",
    type=click.Choice(["turns", "observations"]),
    default="turns",
    show_default=True,
    help="What to store: one episode per dialog turn, or one fact per LoCoMo observation "
    "(a fact counts as evidence when the turns it came from do).",
)
@click.option(
    "--eval-store",
    help="Store to ingest into (default: a scratch SQLite file in the data dir, removed after).",
)
@click.option(
    "--encrypted",
    is_flag=True,
    help="Ingest into an encrypted store (a fresh master key and keyring in the scratch "
    "folder): what encryption at rest costs in recall and latency.",
)
@pass_ctx
def locomo(
    ctx: _Context,
    directory: Path,
    json_path: Path | None,
    markdown_path: Path | None,
    recipe: str,
    memories: Memories,
    eval_store: str | None,
    encrypted: bool,
) -> None:
    """Recall@k and hit@k of the evidence turns on a LoCoMo-format DIRECTORY."""
    import tempfile

    from tqdm import tqdm

    from memlane.evals.locomo import evaluate, load_dir

    conversations = load_dir(directory)

    def progress(items: Any, desc: str, total: int) -> Any:
        return tqdm(items, desc=desc, total=total, unit="q" if desc == "search" else "conv")

    embedder = ctx.settings.build_embedder()
    with tempfile.TemporaryDirectory(dir=_scratch_dir(ctx.settings.data_dir)) as scratch:
        url = eval_store or f"sqlite:///{scratch}/locomo.db"
        cipher = None
        if encrypted:
            from memlane.ciphers import AesGcmCipher, Keyring, LocalMasterKey, generate_key

            master = LocalMasterKey.parse(generate_key())
            cipher = AesGcmCipher(Keyring(Path(scratch) / "locomo.keys", master))
        sparse = ctx.settings.build_sparse()
        with Memory(url, embedder=embedder, cipher=cipher, sparse=sparse) as memory:
            report = evaluate(
                memory, conversations, recipe=recipe, progress=progress, memories=memories
            )
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
