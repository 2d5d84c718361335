"""Serving the app with uvicorn, and draining on the way down.

The first SIGTERM or SIGINT starts a drain: new sessions and requests are refused (`shutting_down`,
/health 503), every live session is sent the final text of the audio it has received and closed
with 1012, in-flight HTTP requests finish; then the process exits, all within --shutdown-timeout.
A second signal (a second Ctrl-C) exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import time

import uvicorn
from litestar import Litestar

from sasr.config import ServerConfig

log = logging.getLogger("sasr")
SAME_SIGNAL_S = 1.0  # a second signal sooner than this is the first one again, passed on by a parent


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Litestar, shutdown_timeout_s: float) -> None:
        super().__init__(config)
        self.app, self.shutdown_timeout_s = app, shutdown_timeout_s
        self.loop: asyncio.AbstractEventLoop | None = None
        self.drain: asyncio.Task | None = None
        self.signalled_at: float | None = None  # when the first signal came

    async def serve(self, sockets=None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig, frame) -> None:
        """A signal (in the main thread, between the loop's callbacks)."""
        now = time.monotonic()
        if self.signalled_at is not None and now - self.signalled_at < SAME_SIGNAL_S:
            return  # the same signal passed on (make sends its children the SIGTERM it got)
        if self.signalled_at is not None or self.loop is None or self.should_exit:
            super().handle_exit(sig, frame)
            self.force_exit = self.should_exit = True  # the second: now
            return
        self.signalled_at = now
        self._captured_signals.append(sig)  # re-raised by uvicorn once it has shut down
        self.loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self.drain = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        state = self.app.state
        deadline = time.monotonic() + self.shutdown_timeout_s
        log.info("draining: %d live sessions, up to %g s", len(state.sessions), self.shutdown_timeout_s)
        state.draining.set()
        while state.sessions and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        # what is left of the timeout goes to in-flight HTTP requests (uvicorn waits for them)
        self.config.timeout_graceful_shutdown = max(1.0, deadline - time.monotonic())
        self.should_exit = True


def serve_app(app: Litestar, config: ServerConfig, log_level: str) -> None:
    # Sockets are read as frames arrive (a file sender's audio waits in its session, bounded), so pings
    # and pongs never queue behind audio: a peer that stops answering is gone.
    uvicorn_config = uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level,
                                    ws_ping_interval=config.ws_ping_interval, ws_ping_timeout=config.ws_ping_timeout,
                                    timeout_graceful_shutdown=config.shutdown_timeout)
    DrainingServer(uvicorn_config, app, config.shutdown_timeout).run()
