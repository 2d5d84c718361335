"""What both WebSocket protocols share: decoding a client's event (and saying why one is refused),
waiting for the client's next message without missing a failure of the session meanwhile,
counting sessions whose client went away, and live sessions' options from the server's flags."""

from __future__ import annotations

import asyncio
import typing

import msgspec
from litestar import WebSocket

from sasr.config import ServerConfig
from sasr.engine import LiveOptions
from sasr.live.session import Session


class BadEvent(Exception):
    """Text the typed decoder refused. kind: "json" (not JSON, or nested too deeply), "shape" (not an
    object with a string `type`), "unknown" (no such event type), "fields" (a known type, wrong fields)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def decode_event(decoder: msgspec.json.Decoder, text: str | bytes):
    """One client event through the protocol's typed decoder; BadEvent says why it is refused."""
    try:
        return decoder.decode(text)
    except msgspec.ValidationError as exc:  # a DecodeError too: caught first
        try:  # valid as far as the typed decoder read (e.g. `7`), but is it JSON at all?
            raw = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            raise BadEvent("json", "not valid JSON (or nested too deeply)") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise BadEvent("shape", "an event is a JSON object with a string 'type'") from None
        if raw["type"] not in {event.__struct_config__.tag for event in typing.get_args(decoder.type)}:
            raise BadEvent("unknown", f"unknown type {raw['type']!r}") from None
        raise BadEvent("fields", f"{raw['type']}: {exc}") from None
    except (msgspec.DecodeError, RecursionError):
        raise BadEvent("json", "not valid JSON (or nested too deeply)") from None


class Draining(Exception):
    """The server is shutting down: the session ends with the text of the audio it has received."""


def draining(state) -> asyncio.Future:
    """Done once the server starts to drain (one per connection; cancel it when the connection ends)."""
    return asyncio.ensure_future(state.draining.wait())


async def next_message(socket: WebSocket, session: Session | None, stop: asyncio.Future) -> dict:
    """The next ASGI message from the client. If the session's inference loop fails first, its error is
    raised at once (the client learns of it without sending another frame); if the server starts to
    drain (`stop`), Draining is raised."""
    receive = asyncio.ensure_future(socket.receive())
    await asyncio.wait({receive, stop, *([session.task] if session else [])}, return_when=asyncio.FIRST_COMPLETED)
    if receive.done():
        return receive.result()
    receive.cancel()
    if session is not None and session.task.done():
        raise session.task.exception() or RuntimeError("the live session stopped")
    raise Draining()


def count_lost(state, message: dict, protocol: str) -> None:
    """A disconnect without a normal close (1000, 1001): the client vanished, or stopped answering pings
    and was reaped (--ws-ping-timeout)."""
    if message.get("code") not in (1000, 1001):
        state.metrics.inc("sasr_live_sessions_lost_total", protocol=protocol,
                          help="Live sessions whose client went away without a normal close (gone, or reaped)")


def live_defaults(config: ServerConfig) -> LiveOptions:
    """Live sessions' options from the server's flags (a seed-protocol client may choose its own)."""
    return LiveOptions(config.live_commits, config.endpoint_ms)
