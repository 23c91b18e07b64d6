"""CLI commands of the server: ``serve``, ``keys`` and ``mcp`` (registered on the main
``memlane`` group; heavy imports happen only when a command runs)."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import click

from memlane.settings import Settings
from memlane.urls import redact_url

if TYPE_CHECKING:
    from memlane.ports.store import Store


def _settings(ctx: click.Context) -> Settings:
    settings: Settings = ctx.obj.settings
    return settings


def _keys_store(ctx: click.Context, *, create: bool = True) -> Store:
    """The store API keys live in, as the server reads it: through the cipher when the
    store is encrypted (keys made through an encrypted memory are sealed). Without a
    master key, an encrypted store is refused for reading (``create=False``), as by a
    memory. Raises ConfigurationError."""
    from memlane.errors import ConfigurationError
    from memlane.stores.sealed import SealedStore, is_encrypted

    settings = _settings(ctx)
    store = settings.build_store(create=create)
    cipher = settings.build_cipher()
    if cipher is not None:
        return SealedStore(store, cipher)
    if create:  # opened (and made) only once the key's limits are checked
        return store
    store.setup()
    if is_encrypted(store):
        store.close()
        raise ConfigurationError(
            f"the store {store.url} is encrypted: open it with its master key "
            "(MEMLANE_MASTER_KEY or MEMLANE_MASTER_KEY_FILE, and MEMLANE_KEYRING)"
        )
    return store


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=int)
@click.option("--max-body-bytes", default=1_000_000, show_default=True, type=int)
@click.option("--no-mcp", is_flag=True, help="Do not mount the MCP endpoint at /mcp/.")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, max_body_bytes: int, no_mcp: bool) -> None:
    """Serve the REST API (/v1, /openapi.json, /health, /metrics), the MCP endpoint
    (/mcp/) and the dashboard (/dashboard). Requests need an API key: `memlane keys create`."""
    from memlane.errors import require_extra

    require_extra("server", "memlane serve", "fastapi", "fastapi_offline", "uvicorn", "mcp")
    import uvicorn

    from memlane.api import AsyncMemory, Memory
    from memlane.manager import MemoryManager
    from memlane.server.app import create_app
    from memlane.server.keys import KeyStore

    settings = _settings(ctx)
    embedder = settings.build_embedder()
    config = settings.build_config()
    actor = settings.build_actor("serve")  # requests act for their API keys instead
    cipher = settings.build_cipher()
    memory = AsyncMemory(
        settings.build_store(),
        embedder=embedder,
        config=config,
        actor=actor,
        cipher=cipher,
        sparse=settings.build_sparse(),
    )
    # The manager's memory shares the encrypting store (and so the sparse encoder, or
    # none); the cipher seals its exports.
    blocking = Memory(
        memory.store, embedder=embedder, config=config, actor=actor, sparse=memory.sparse
    )
    manager = MemoryManager(blocking, settings.build_llm())
    manager.start()
    app = create_app(
        memory,
        KeyStore(memory.store),
        manager=manager,
        max_body_bytes=max_body_bytes,
        mcp=not no_mcp,
        host=host,
    )
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    tier = f" behind Redis {redact_url(settings.redis_url)}" if settings.redis_url else ""
    click.echo(
        f"memlane serving {redact_url(settings.store_url)}{tier} on http://{host}:{port} "
        "(dashboard: /dashboard)"
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
    finally:
        manager.close()
        blocking.close()


@click.group()
def keys() -> None:
    """Create, list and revoke API keys; make and rotate the master key of encryption at
    rest (generate, rotate)."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new random master key (base64) for MEMLANE_MASTER_KEY or a key file."""
    from memlane.ciphers import generate_key

    click.echo(generate_key())


@keys.command("rotate")
@click.option(
    "--new-key-file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="A file holding the new master key (base64 or hex; `memlane keys generate`).",
)
@click.pass_context
def keys_rotate(ctx: click.Context, new_key_file: str) -> None:
    """Wrap every user's data key under a new master key, in one transaction; the data
    itself is not touched. The current key comes from MEMLANE_MASTER_KEY(_FILE); set
    the new one there afterwards."""
    from memlane.ciphers import Keyring, LocalMasterKey

    settings = _settings(ctx)
    if not settings.encrypted:
        raise click.UsageError("rotate needs the current master key in MEMLANE_MASTER_KEY")
    path = settings.keyring_path()
    if path is None or not path.exists():
        raise click.UsageError(f"no keyring at {path} (set MEMLANE_KEYRING)")
    keyring = Keyring(path, settings.build_master_key())
    try:
        n = keyring.rotate(LocalMasterKey.from_file(new_key_file))
    finally:
        keyring.close()
    click.echo(f"rewrapped {n} keys in {path}; now set MEMLANE_MASTER_KEY to the new key")


@keys.command("create")
@click.option(
    "--tenant",
    required=True,
    help="The tenant the key belongs to; 'local' reaches the users written through "
    "Python or the CLI (stored under their plain ids).",
)
@click.option("--users", help="Comma-separated user ids the key may access (default: all).")
@click.option("--agents", help="Comma-separated agent ids the key may act as (default: any).")
@click.option(
    "--permissions",
    default="read,write",
    show_default=True,
    help="What the key may do: read, write, or both.",
)
@click.option("--label", default="", help="A note for whoever lists keys later.")
@click.pass_context
def keys_create(
    ctx: click.Context,
    tenant: str,
    users: str | None,
    agents: str | None,
    permissions: str,
    label: str,
) -> None:
    """Print a new API key (shown once; only its hash is stored)."""
    from memlane.server.keys import KeyStore

    store = _keys_store(ctx)
    try:
        key, record = KeyStore(store).create(
            tenant,
            users=_split(users),
            agents=_split(agents),
            permissions=_split(permissions) or (),
            label=label,
        )
    finally:
        store.close()
    click.echo(key)
    click.echo(f"key id {record.key_id} for tenant {tenant}", err=True)


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """List keys (ids, tenants, limits; never the keys themselves)."""
    from memlane.server.keys import KeyStore

    store = _keys_store(ctx, create=False)
    try:
        for record in KeyStore(store).list():
            click.echo(json.dumps(record.to_dict()))
    finally:
        store.close()


@keys.command("revoke")
@click.argument("key_id")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key by its id (from `keys list`)."""
    from memlane.server.keys import KeyStore

    store = _keys_store(ctx, create=False)
    try:
        KeyStore(store).revoke(key_id)
    finally:
        store.close()
    click.echo(f"revoked {key_id}")


@click.command()
@click.option("--user", "user_id", required=True, help="The one user this MCP server serves.")
@click.option(
    "--agent",
    "agent_id",
    help="Act as this agent: its memories and the user's shared ones (default: no agent, "
    "which sees all of the user's memories).",
)
@click.pass_context
def mcp(ctx: click.Context, user_id: str, agent_id: str | None) -> None:
    """Run an MCP server on stdio bound to one user (for desktop and IDE assistants): its
    tools take no user_id (with --agent, no agent_id either) and reach no one else."""
    from memlane.api import AsyncMemory
    from memlane.server.mcp import build_mcp, stdio_resolver

    resolver = stdio_resolver(user_id, agent_id)  # checks the ids before opening anything
    settings = _settings(ctx)
    memory = AsyncMemory(
        settings.build_store(),
        embedder=settings.build_embedder(),
        sparse=settings.build_sparse(),
        config=settings.build_config(),
        cipher=settings.build_cipher(),
        actor=settings.build_actor("cli"),  # each call: mcp:<client> and this process
    )
    build_mcp(memory, resolver).run("stdio")


def _split(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def register(group: Any) -> None:
    for command in (serve, keys, mcp):
        group.add_command(command)
