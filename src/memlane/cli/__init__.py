"""The ``memlane`` command line. Commands parse, call the library, and format."""

from __future__ import annotations

import click

# The command modules register their commands on ``cli`` when imported.
from memlane.cli import graph, records, tools, transfer
from memlane.cli._base import cli, embedder_option, store_option

__all__ = ["cli", "graph", "main", "records", "tools", "transfer"]


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
