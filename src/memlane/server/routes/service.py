"""Service routes, outside /v1 and without a key: health, metrics, the dashboard, the
API docs (served from local files, no CDN) and the root."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from memlane.server.routes.common import State, operation_id

router = APIRouter(generate_unique_id_function=operation_id)


@functools.cache
def _docs_assets() -> dict[str, Any]:
    """Swagger UI's files, shipped by the fastapi-offline package: /docs needs no CDN."""
    folder = resources.files("fastapi_offline") / "static"
    return {f.name: f for f in folder.iterdir() if f.name.endswith((".js", ".css", ".png"))}


@router.get("/health", tags=["service"])
async def health(srv: State) -> dict[str, Any]:
    store = srv.memory.store
    try:
        await store.abatch([])
        ok = True
    except Exception:
        ok = False
    backend = store.url.split(":", 1)[0]
    body: dict[str, Any] = {"status": "ok" if ok else "degraded", "store": backend}
    health_of = getattr(store, "health", None)
    if callable(health_of):  # a Redis tier: its state and counters, not its URLs
        tiers = {k: v for k, v in health_of().items() if k != "store"}
        body["tiers"] = tiers
        if tiers.get("redis") == "degraded":
            body["status"] = "degraded"
    return body


@router.get("/metrics", tags=["service"], response_class=PlainTextResponse)
async def prometheus(srv: State) -> Response:
    return srv.metrics.render()


@router.get("/dashboard", include_in_schema=False, response_class=HTMLResponse)
async def dashboard() -> str:
    return resources.files("memlane.server").joinpath("dashboard.html").read_text("utf-8")


_PAGE: dict[str, Any] = {"openapi_url": "/openapi.json", "title": "memlane API"}
"""What both API documentation pages show; their scripts come from :func:`docs_asset`."""


def _asset(name: str) -> str:
    return f"/docs/assets/{name}"


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        **_PAGE,
        swagger_js_url=_asset("swagger-ui-bundle.js"),
        swagger_css_url=_asset("swagger-ui.css"),
        swagger_favicon_url=_asset("favicon.png"),
    )


@router.get("/redoc", include_in_schema=False)
async def redoc() -> HTMLResponse:
    return get_redoc_html(
        **_PAGE,
        redoc_js_url=_asset("redoc.standalone.js"),
        redoc_favicon_url=_asset("favicon.png"),
        with_google_fonts=False,
    )


@router.get("/docs/assets/{name}", include_in_schema=False)
async def docs_asset(name: str) -> Response:
    assets = _docs_assets()
    if name not in assets:
        raise StarletteHTTPException(404, "no such file")
    return FileResponse(str(assets[name]))


@router.get("/", include_in_schema=False)
async def root() -> dict[str, str]:
    return {"service": "memlane", "docs": "/docs", "openapi": "/openapi.json"}
