"""Transfer: a user's data out and in as NDJSON (what `memlane export` writes)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from memlane.access import Action
from memlane.errors import ValidationError
from memlane.server.responses import ImportedOut, public_row
from memlane.server.routes.common import Area, UserCall
from memlane.server.schemas import JSON_ERRORS, NDJSON_CONTENT, NDJSONResponse
from memlane.transfer import read_numbered_jsonl

area = Area("transfer")
router = area.router


@area.route(
    "GET",
    "/export",
    response_class=NDJSONResponse,
    responses={
        200: {"description": "The user's data as NDJSON.", "content": NDJSON_CONTENT},
        **JSON_ERRORS,
    },
)
async def export(call: UserCall) -> Response:
    # Readable rows even from an encrypted store: the caller holds a key granted this
    # user's data, and the rows' user ids are mapped to the tenant's below (a sealed row
    # would carry the store's). What memlane writes to files stays sealed.
    user_id = call.scope(Action.READ_ALL).user_id
    rows = await call.memory.export_rows(user_id=user_id, plaintext=True)
    tenant = call.caller.tenant
    lines = [json.dumps(public_row(row, tenant), ensure_ascii=False) for row in rows]
    return NDJSONResponse("\n".join(lines) + "\n")


@area.route(
    "POST",
    "/import",
    409,
    openapi_extra={"requestBody": {"required": True, "content": NDJSON_CONTENT}},
)
async def import_rows(request: Request, call: UserCall) -> ImportedOut:
    stored = call.scope(Action.WRITE_ALL).user_id
    raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"body is not UTF-8: {exc.reason}") from exc
    numbered = list(read_numbered_jsonl(text.splitlines()))
    rows = [_into_scope(row, call.user_id, stored, n) for n, row in numbered]
    result = await call.memory.import_rows(rows, lines=[n for n, _ in numbered])
    return ImportedOut(imported=dict(result.counts))


def _into_scope(row: Any, public: str, stored: str, line: int) -> Any:
    """An export row of ``public`` with store user ids; any other user is refused."""
    if not isinstance(row, dict):
        raise ValidationError(f"line {line}: each line must be a JSON object")
    data = row.get("data")
    if isinstance(data, dict) and "user_id" in data:
        if data["user_id"] != public:
            raise ValidationError(f"line {line}: row of another user ({data['user_id']!r})")
        data = {**data, "user_id": stored}
        snapshot = data.get("snapshot")
        if isinstance(snapshot, dict) and "user_id" in snapshot:
            if snapshot["user_id"] != public:
                raise ValidationError(f"line {line}: snapshot of another user")
            data["snapshot"] = {**snapshot, "user_id": stored}
        row = {**row, "data": data}
    return row
