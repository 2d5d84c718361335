"""What both WebSocket protocols share: waiting for the client's next message without missing a failure
of the session meanwhile, and counting sessions whose client went away."""

from __future__ import annotations

import asyncio

from litestar import WebSocket

from sasr.live.session import Session


async def next_message(socket: WebSocket, session: Session | None) -> dict:
    """The next ASGI message from the client; if the session's inference loop fails first, its error is
    raised at once (the client learns of it without sending another frame)."""
    if session is None:
        return await socket.receive()
    receive = asyncio.ensure_future(socket.receive())
    await asyncio.wait({receive, session.task}, return_when=asyncio.FIRST_COMPLETED)
    if not receive.done():
        receive.cancel()
        raise session.task.exception() or RuntimeError("the live session stopped")
    return receive.result()


def count_lost(state, message: dict, protocol: str) -> None:
    """A disconnect without a normal close (1000, 1001): the client vanished, or stopped answering pings
    and was reaped (--ws-ping-timeout)."""
    if message.get("code") not in (1000, 1001):
        state.metrics.inc("sasr_live_sessions_lost_total", protocol=protocol,
                          help="Live sessions whose client went away without a normal close (gone, or reaped)")
