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


@dataclass
class StreamResult:
    events: list[dict] = field(default_factory=list)
    arrival_s: list[float] = field(default_factory=list)  # per event, seconds after the first frame was sent
    sent_s: list[float] = field(default_factory=list)  # per frame, when it was sent
    frame_ms: list[int] = field(default_factory=list)  # per frame, session audio sent up to its end
    end_sent_s: float = 0.0  # when session.end was sent
    close_code: int | None = None

    @property
    def final(self) -> dict | None:
        return next((e for e in reversed(self.events) if e["type"] == "transcript.final"), None)

    def latency_s(self, index: int) -> float:
        """How long after its audio was sent an event arrived: the audio up to its audio_ms."""
        ms = self.events[index]["audio_ms"]
        frame = min(np.searchsorted(self.frame_ms, ms), len(self.frame_ms) - 1)
        return self.arrival_s[index] - self.sent_s[frame]


async def stream_audio(url: str, pcm16: bytes, realtime: bool = False, start: dict | None = None,
                       on_event=None) -> StreamResult:
    """Send 16 kHz PCM16 audio in 100 ms frames (paced at real time if asked); return what came back."""
    import websockets

    out = StreamResult()
    ws_url = url.rstrip("/").replace("http://", "ws://").replace("https://", "wss://")
    if not ws_url.endswith(STREAM_PATH):
        ws_url += STREAM_PATH
    async with websockets.connect(ws_url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start", **(start or {})}))
        started = json.loads(await ws.recv())
        if started["type"] != "session.started":
            raise RuntimeError(f"session refused: {started}")
        t0 = time.monotonic()

        async def read() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    event = json.loads(message)
                    out.events.append(event)
                    out.arrival_s.append(time.monotonic() - t0)
                    if on_event:
                        on_event(out.arrival_s[-1], event)

        reader = asyncio.create_task(read())
        step = int(32000 * FRAME_S)
        for i in range(0, len(pcm16), step):
            if realtime:
                await asyncio.sleep(max(0.0, t0 + i / 32000 - time.monotonic()))
            await ws.send(pcm16[i : i + step])
            out.sent_s.append(time.monotonic() - t0)
            out.frame_ms.append(min(i + step, len(pcm16)) // 32)
        out.end_sent_s = time.monotonic() - t0
        await ws.send(json.dumps({"type": "session.end"}))
        await reader
        out.close_code = ws.close_code
    return out


def to_pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
