"""The knowledge graph command: ``memlane graph``."""

from __future__ import annotations

import click

from memlane.cli._base import (
    _Context,
    _echo_json,
    as_of_time,
    cli,
    json_option,
    pass_ctx,
    user_option,
)
from memlane.core.graph import MAX_DEPTH
from memlane.models import Entity, Relation


@cli.command()
@user_option
@click.option("--entity", help="Show this entity (an id or a name) and what is around it.")
@click.option(
    "--depth",
    type=click.IntRange(1, MAX_DEPTH),
    default=1,
    show_default=True,
    help="How many edges away --entity's neighbors may be.",
)
@click.option("--limit", type=int, default=100, show_default=True)
@click.option("--as-of", "as_of", help="Only the relations valid at this ISO date or time.")
@json_option
@pass_ctx
def graph(
    ctx: _Context,
    user_id: str,
    entity: str | None,
    depth: int,
    limit: int,
    as_of: str | None,
    as_json: bool,
) -> None:
    """List a user's entities and relations, or one entity's neighbors, relations and
    the memories that name it (with --as-of, the relations as they stood then)."""
    memory = ctx.memory(create=False)
    moment = as_of_time(as_of)
    if entity is None:
        entities = memory.entities(user_id=user_id, limit=limit)
        relations = memory.relations(user_id=user_id, limit=limit, as_of=moment)
        if as_json:
            _echo_json(
                {
                    "entities": [e.to_dict() for e in entities],
                    "relations": [r.to_dict() for r in relations],
                }
            )
            return
        names = {e.id: e.name for e in entities}
        for e in entities:
            click.echo(_entity_line(e))
        for r in relations:
            click.echo(_relation_line(r, names))
        return
    neighbors = memory.neighbors(entity, depth, user_id=user_id, limit=limit, as_of=moment)
    relations = memory.relations(entity, user_id=user_id, limit=limit, as_of=moment)
    mentions = memory.mentions(user_id=user_id, entity=entity, limit=limit)
    if as_json:
        _echo_json(
            {
                "neighbors": [n.to_dict() for n in neighbors],
                "relations": [r.to_dict() for r in relations],
                "memories": list(dict.fromkeys(m.record_id for m in mentions)),
            }
        )
        return
    names = {n.entity.id: n.entity.name for n in neighbors}
    for n in neighbors:
        click.echo(f"{'  ' * (n.depth - 1)}{_entity_line(n.entity)}  (depth {n.depth})")
    for r in relations:
        click.echo(_relation_line(r, names))
    for record_id in dict.fromkeys(m.record_id for m in mentions):
        click.echo(f"memory {record_id}")


def _entity_line(e: Entity) -> str:
    aliases = f"  aka {', '.join(e.aliases)}" if e.aliases else ""
    return f"{e.id}  {e.type.value:<12} {e.name}{aliases}"


def _relation_line(r: Relation, names: dict[str, str]) -> str:
    valid = (
        f"{r.valid_from.date() if r.valid_from else '…'}-{r.valid_to.date() if r.valid_to else ''}"
    )
    subject = names.get(r.subject_id, r.subject_id)
    obj = names.get(r.object_id, r.object_id)
    return f"{subject} --{r.predicate}--> {obj}  [{valid}]  ({len(r.sources)} memories)"
