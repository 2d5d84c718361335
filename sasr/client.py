"""A live-protocol client: stream audio over the WebSocket and collect the events with arrival times.

Used by `sasr stream` and by the streaming benchmark; no torch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

import numpy as np

FRAME_S = 0.1  # audio per binary frame
STREAM_PATH = "/v1/audio/transcriptions/stream"


RECONNECT_CODES = frozenset({1006, 1011, 1012, 1013})  # abnormal close, fault, restart, try again later
RECONNECT_DELAYS_S = (0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0)  # a restarting server has about half a minute
# A path that goes silent (a replica's link cut behind a proxy that forwards pings) is given up after
# at most PING_S + PING_TIMEOUT_S + CLOSE_TIMEOUT_S (no closing handshake comes back over it either),
# then the session reconnects elsewhere.
PING_S, PING_TIMEOUT_S, CLOSE_TIMEOUT_S = 5.0, 10.0, 2.0


@dataclass
class StreamResult:
    events: list[dict] = field(default_factory=list)
    arrival_s: list[float] = field(default_factory=list)  # per event, seconds after the first frame was sent
    sent_s: list[float] = field(default_factory=list)  # per frame, when it was sent
    frame_ms: list[int] = field(default_factory=list)  # per frame, session audio sent up to its end
    end_sent_s: float = 0.0  # when session.end was sent
    close_code: int | None = None
    texts: list[str] = field(default_factory=list)  # the final text of each connection (more after reconnects)
    reconnects: int = 0  # connections resumed after an abnormal close
    started_at: float = 0.0  # time.monotonic() when the first connection began
    dropped_s: list[float] = field(default_factory=list)  # per abnormal close, when (after started_at)
    resumed_s: list[float] = field(default_factory=list)  # per reconnect, when the new connection was made
    resumed_ms: list[int] = field(default_factory=list)  # per reconnect, where in the audio it went on from

    @property
    def final(self) -> dict | None:
        return next((e for e in reversed(self.events) if e["type"] == "transcript.final"), None)

    @property
    def text(self) -> str:
        """The whole transcript, across reconnects."""
        return " ".join(t for t in self.texts if t)

    def latency_s(self, index: int) -> float:
        """How long after its audio was sent an event arrived: the audio up to its audio_ms."""
        ms = self.events[index]["audio_ms"]
        frame = min(np.searchsorted(self.frame_ms, ms), len(self.frame_ms) - 1)
        return self.arrival_s[index] - self.sent_s[frame]


async def stream_audio(url: str, pcm16: bytes, realtime: bool = False, start: dict | None = None,
                       on_event=None, reconnect: bool = True) -> StreamResult:
    """Send 16 kHz PCM16 audio in 100 ms frames (paced at real time if asked); return what came back.

    On an abnormal close (1006, 1011, 1012 restart, 1013), reconnect and go on from the audio the
    server has accounted for: all it received where it sent transcript.final first (as a draining
    server does), else the end of the last word it committed; so the transcript is complete.
    """
    import websockets

    out = StreamResult()
    ws_url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
    if not ws_url.endswith(STREAM_PATH):
        ws_url += STREAM_PATH
    t0 = out.started_at = time.monotonic()
    offset = 0  # bytes of pcm16 already accounted for by earlier connections
    tries = 0  # reconnection attempts so far (RECONNECT_DELAYS_S bounds them)
    while True:
        resume = await _connection(ws_url, pcm16, offset, realtime, start, on_event, out, t0)
        code = out.close_code
        if resume is None or not reconnect or code not in RECONNECT_CODES or tries >= len(RECONNECT_DELAYS_S):
            return out
        offset += resume
        out.dropped_s.append(time.monotonic() - t0)
        for delay in RECONNECT_DELAYS_S[tries:]:
            tries += 1
            await asyncio.sleep(delay)
            try:
                async with websockets.connect(ws_url, open_timeout=5):
                    out.resumed_s.append(time.monotonic() - t0)
                    out.resumed_ms.append(offset // 32)
                    out.reconnects += 1
                    break  # it is back
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                continue


async def _connection(ws_url: str, pcm16: bytes, offset: int, realtime: bool, start, on_event,
                      out: StreamResult, t0: float) -> int | None:
    """One session over pcm16[offset:]. Returns None when it ended normally (or cannot be resumed),
    else how many of its bytes the server accounted for."""
    import websockets

    session_events: list[dict] = []
    try:
        async with websockets.connect(ws_url, max_size=None, ping_interval=PING_S, ping_timeout=PING_TIMEOUT_S,
                                      close_timeout=CLOSE_TIMEOUT_S) as ws:
            await ws.send(json.dumps({"type": "session.start", **(start or {})}))
            started = json.loads(await ws.recv())
            if started["type"] != "session.started":  # refused: full, draining, or a bad start
                out.events.append(started)
                out.arrival_s.append(time.monotonic() - t0)
                with contextlib.suppress(websockets.ConnectionClosed):
                    await ws.recv()
                out.close_code = ws.close_code
                return 0

            async def read() -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for message in ws:
                        event = json.loads(message)
                        session_events.append(event)
                        out.events.append(event)
                        out.arrival_s.append(time.monotonic() - t0)
                        if on_event:
                            on_event(out.arrival_s[-1], event)

            reader = asyncio.create_task(read())
            step = int(32000 * FRAME_S)
            with contextlib.suppress(websockets.ConnectionClosed):
                for i in range(offset, len(pcm16), step):
                    if realtime:
                        await asyncio.sleep(max(0.0, t0 + i / 32000 - time.monotonic()))
                    if reader.done():
                        break  # the server closed the session
                    await ws.send(pcm16[i : i + step])
                    out.sent_s.append(time.monotonic() - t0)
                    out.frame_ms.append(min(i + step, len(pcm16)) // 32)
                out.end_sent_s = time.monotonic() - t0
                await ws.send(json.dumps({"type": "session.end"}))
            await reader
            out.close_code = ws.close_code
    except (OSError, websockets.InvalidHandshake):
        out.close_code = 1006
    final = next((e for e in reversed(session_events) if e["type"] == "transcript.final"), None)
    if final is not None:
        out.texts.append(final["text"])
        return None if out.close_code == 1000 else final["audio_ms"] * 32
    deltas = [e for e in session_events if e["type"] == "transcript.delta"]
    out.texts.append("".join(e["delta"] for e in deltas).strip())
    if not deltas:
        return 0
    last = deltas[-1]
    return (last.get("end_ms") if last.get("end_ms") is not None else last["audio_ms"]) * 32


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
