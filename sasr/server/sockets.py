"""What both WebSocket protocols share: waiting for the client's next message without missing a failure
of the session meanwhile, and counting sessions whose client went away."""

from __future__ import annotations

import asyncio

from litestar import WebSocket

from sasr.live.session import Session


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
