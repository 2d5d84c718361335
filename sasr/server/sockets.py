"""What both WebSocket protocols share: waiting for the client's next message without missing a failure
of the session meanwhile."""

from __future__ import annotations

import asyncio

from litestar import WebSocket

from sasr.live.session import Session


async def next_message(socket: WebSocket, session: Session | None) -> dict:
    """The next ASGI message from the client; if the session's inference loop fails first, its error is
    raised at once (the client learns of it without sending another frame)."""
    if session is None:
        return await socket.receive()
    await session.wait_for_room()
    receive = asyncio.ensure_future(socket.receive())
    await asyncio.wait({receive, session.task}, return_when=asyncio.FIRST_COMPLETED)
    if not receive.done():
        receive.cancel()
        raise session.task.exception() or RuntimeError("the live session stopped")
    return receive.result()
