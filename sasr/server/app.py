"""The Litestar application: routes, error handlers and the engine on app.state."""

from __future__ import annotations

import asyncio
import os
import time

from litestar import Litestar, Request, post
from litestar.datastructures import State

from sasr.config import ServerConfig
from sasr.engine import Engine
from sasr.metrics import Metrics
from sasr.protocol import ErrorCode
from sasr.server.auth import require_key
from sasr.server.errors import EXCEPTION_HANDLERS, APIError
from sasr.server.http import ROUTES
from sasr.server.page import PAGE_ROUTES
from sasr.server.sockets import live_defaults
from sasr.server.realtime import realtime
from sasr.server.ws import transcription_stream

_KNOWN_PATHS = frozenset(route.paths.copy().pop() for route in ROUTES)


async def _count_response(message, scope) -> None:
    """Count every HTTP response by path and status, errors included."""
    if message["type"] == "http.response.start" and scope["type"] == "http":
        path = scope["path"] if scope["path"] in _KNOWN_PATHS else "other"
        scope["app"].state.metrics.inc(
            "sasr_requests_total", help="HTTP responses by path and status", path=path, status=str(message["status"])
        )


async def _before_request(request: Request) -> None:
    """API keys; and while the server drains, new requests are refused (in-flight ones finish)."""
    await require_key(request)
    if request.app.state.draining.is_set() and request.url.path != "/health":
        raise APIError(503, "the server is shutting down; retry shortly", ErrorCode.SHUTTING_DOWN,
                       headers={"Retry-After": "5"})


@post("/_test/fault", include_in_schema=False)
async def inject_fault(state: State) -> dict:
    """Test hook, served only with SASR_TEST_FAULTS=1 (make soak): the engine's next step fails."""
    state.engine.faults_to_inject += 1
    return {"injected": state.engine.faults_to_inject}


def app_for(config: ServerConfig) -> Litestar:
    """The whole server for its settings: the engine built (the model loaded) and the app around it.
    What `sasr serve` runs, and each Ray Serve replica (sasr/ray_serve.py)."""
    from sasr.models.build import build_engine  # torch stays below the server layer

    engine = build_engine(config.model, config.device, config.dtype, max_num_seqs=config.max_num_seqs,
                          max_queued=config.max_queued_requests, enforce_eager=config.enforce_eager,
                          load_format=config.load_format, enable_prefix_caching=config.enable_prefix_caching,
                          num_kv_blocks=config.num_kv_blocks, quantize=config.quantize)
    return create_app(config, engine, config.served_model_name or engine.served_name)


def create_app(config: ServerConfig, engine: Engine, served_model_name: str) -> Litestar:
    """An app serving `engine`; the engine is closed when the app shuts down."""
    if config.endpoint_ms is not None and not 100 <= config.endpoint_ms <= 5000:
        raise ValueError(f"--endpoint-ms must be 100-5000, not {config.endpoint_ms}")
    if unsupported := sorted(live_defaults(config).chosen() - engine.live_options):
        flags = {"commits": "--live-commits", "endpoint_ms": "--endpoint-ms"}
        raise ValueError(f"{', '.join(flags.get(name, name) for name in unsupported)}: not a choice this model's live policy takes")
    state = State(
        {
            "config": config,
            "engine": engine,
            "served_model_name": served_model_name,
            "metrics": Metrics(),
            "started_at": int(time.time()),
            "sessions": set(),  # live sessions
            "draining": asyncio.Event(),  # set on the first SIGTERM/SIGINT (server/run.py)
            "decode_slots": asyncio.Semaphore(os.cpu_count() or 2),  # uploads decoded at once
        }
    )
    return Litestar(
        route_handlers=[*ROUTES, *PAGE_ROUTES, transcription_stream, realtime,
                        *([inject_fault] if os.environ.get("SASR_TEST_FAULTS") == "1" else [])],
        before_request=_before_request,
        exception_handlers=EXCEPTION_HANDLERS,
        state=state,
        before_send=[_count_response],
        on_shutdown=[engine.close],
        request_max_body_size=int(config.max_upload_mb * 1_000_000),
    )
