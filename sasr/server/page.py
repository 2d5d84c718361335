"""The web page at `/` (files in server/web/, served as they are: no build step, nothing from a CDN)
and `GET /info`, what the page needs to know about the server before any key is given."""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.datastructures import State
from litestar.response import File
from litestar.static_files import create_static_files_router

WEB_DIR = Path(__file__).with_name("web")


@get("/", include_in_schema=False)
async def index() -> File:
    return File(WEB_DIR / "index.html", content_disposition_type="inline", media_type="text/html; charset=utf-8")


@get("/info")
async def info(state: State) -> dict:
    """The served model, the languages `language` may take, whether API keys are required."""
    return {
        "model": state.served_model_name,
        "languages": sorted(state.engine.languages),
        "auth": bool(state.config.api_keys),
    }


PAGE_ROUTES = [index, info, create_static_files_router("/web", directories=[WEB_DIR], include_in_schema=False)]
