"""API keys: with --api-key set, every endpoint but /health, /info and the web page needs one.

HTTP: `Authorization: Bearer KEY` (the openai SDK's api_key); a missing or wrong key gets 401 in
OpenAI's shape (`invalid_api_key`). WebSocket: the same header, or for browsers, which cannot set
headers, the `openai-insecure-api-key.KEY` subprotocol as OpenAI's Realtime API takes it; the
handlers refuse with their protocol's `unauthorized` error event and close 1008. Keys are compared
in constant time and never logged.
"""

from __future__ import annotations

import hmac

from litestar import Request, WebSocket

from sasr.config import ServerConfig
from sasr.protocol import ErrorCode
from sasr.server.errors import APIError

KEY_SUBPROTOCOL = "openai-insecure-api-key."
OPEN_PATHS = frozenset({"/", "/health", "/info"})


def is_open(path: str, config: ServerConfig) -> bool:
    return (not config.api_keys or path in OPEN_PATHS or path.startswith("/web/")
            or (path == "/metrics" and config.open_metrics))


def valid(key: str | None, config: ServerConfig) -> bool:
    """Whether key is one of the configured keys (every key compared, in constant time)."""
    given = (key or "").encode()
    return bool(key) and sum(hmac.compare_digest(given, k.encode()) for k in config.api_keys) > 0


def bearer(headers) -> str | None:
    scheme, _, key = (headers.get("authorization") or "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else None


async def require_key(request: Request) -> None:
    """before_request: refuse an HTTP request without a valid key where one is needed."""
    config = request.app.state.config
    if not is_open(request.url.path, config) and not valid(bearer(request.headers), config):
        raise APIError(401, "a valid API key is required: send Authorization: Bearer KEY", ErrorCode.INVALID_API_KEY)


async def accept(socket: WebSocket) -> bool:
    """Accept the WebSocket (choosing one of the client's subprotocols, as browsers require) and say
    whether it may go on."""
    offered = socket.scope.get("subprotocols") or []
    keys = [p[len(KEY_SUBPROTOCOL):] for p in offered if p.startswith(KEY_SUBPROTOCOL)]
    others = [p for p in offered if not p.startswith(KEY_SUBPROTOCOL)]
    await socket.accept(subprotocols=(others or offered or [None])[0])
    config = socket.app.state.config
    return is_open(socket.scope["path"], config) or valid(bearer(socket.headers) or (keys or [None])[0], config)
