"""A fault in the engine reaches the live clients it touched at once, in their protocol's shape.

The fault is injected (a mock where a real one cannot be made to order): the server runs in this
process on the real tiny.en engine, wrapped so that its decodes raise while `failing` is set.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time

import numpy as np
import openai
import pytest
import soxr
import uvicorn
import websockets

from sasr.config import ServerConfig
from sasr.server.app import create_app
from tests.support.server import free_port
from tests.support.speech import read16k


class FaultyEngine:
    """The engine, with decodes that raise while `failing` is set: True for every decode, or the set of
    live decode kinds that fail (sasr.models.whisper.live: "partial", "commit", "final", "forced", and
    "window", a file sender's)."""

    def __init__(self, engine) -> None:
        self.engine, self.failing = engine, False

    def __getattr__(self, name):
        return getattr(self.engine, name)

    async def run_window(self, job):
        if self.failing is True or getattr(job, "kind", None) in (self.failing or ()):
            raise RuntimeError("injected fault")
        return await self.engine.run_window(job)

    def close(self) -> None:  # the shared engine outlives this server
        pass


@pytest.fixture(scope="module")
def faulty(engine):
    """(url, engine wrapper): uvicorn in a thread of this process, serving the wrapped engine."""
    wrapped = FaultyEngine(engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServerConfig(port=port), wrapped, "whisper-tiny.en"),
                                           host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", wrapped
    server.should_exit = True
    thread.join(10)


def speech(speech_dir, rate: int) -> bytes:
    audio = np.concatenate([read16k(speech_dir / "h0.wav"), np.zeros(16000, np.float32)])
    audio = soxr.resample(audio, 16000, rate) if rate != 16000 else audio
    return (audio * 32767).astype("<i2").tobytes()


async def test_realtime_item_fails_then_the_session_ends(faulty, speech_dir):
    url, engine = faulty
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-unused", max_retries=0)
    events = []
    # the item's transcription fails: partials that the appended audio starts before the commit is
    # read succeed (one that failed would end the session before there is an item to fail)
    engine.failing = {"final", "forced", "window"}
    try:
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
            data = speech(speech_dir, 24000)
            for i in range(0, len(data), 4800):
                await conn.input_audio_buffer.append(audio=base64.b64encode(data[i : i + 4800]).decode())
            await conn.input_audio_buffer.commit()
            with pytest.raises(Exception):  # the server closes after its error
                async with asyncio.timeout(30):
                    async for event in conn:
                        events.append(event.model_dump(exclude_unset=True))
    finally:
        engine.failing = False
    kinds = [e["type"] for e in events]
    assert kinds[-3:] == ["input_audio_buffer.committed", "conversation.item.input_audio_transcription.failed", "error"]
    committed, failed, error = events[-3:]
    assert failed["item_id"] == committed["item_id"] and failed["error"]["code"] == "internal_error"
    assert error["error"] == {**error["error"], "type": "server_error", "code": "internal_error"}


async def test_live_session_hears_of_a_fault_without_sending_more(faulty, speech_dir):
    """The client sends a file, then waits: the fault of the decode of its utterance arrives as an
    error event and a 1011 close, without another frame from the client."""
    url, engine = faulty
    engine.failing = True
    try:
        async with websockets.connect(url.replace("http", "ws") + "/v1/audio/transcriptions/stream") as ws:
            await ws.send(json.dumps({"type": "session.start"}))
            assert json.loads(await ws.recv())["type"] == "session.started"
            await ws.send(speech(speech_dir, 16000))
            async with asyncio.timeout(30):
                event = json.loads(await ws.recv())
                with pytest.raises(websockets.ConnectionClosedError):
                    await ws.recv()
            code = ws.close_code
    finally:
        engine.failing = False
    assert event["type"] == "error" and event["code"] == "internal_error" and code == 1011


def test_health_says_when_the_engine_cannot_go_on(faulty):
    """/health is what load balancers read: an engine that gave up (see test_engine.py) makes it 503."""
    import httpx

    url, engine = faulty
    assert httpx.get(f"{url}/health").json() == {"status": "ok"}
    engine.failure = RuntimeError("gave up")  # what the engine thread sets after repeated faults
    try:
        response = httpx.get(f"{url}/health")
    finally:
        del engine.failure  # back to the real engine's (None)
    assert response.status_code == 503 and response.json() == {"status": "engine_failed"}
