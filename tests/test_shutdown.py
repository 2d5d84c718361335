"""SIGTERM drains: live sessions get the final text of what they sent, then the process exits. Through
the real `make serve`, signalled as a service manager or a terminal would (its whole process group)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import openai
import soxr
import websockets

from tests.support.server import free_port
from tests.support.speech import HARVARD, concat, read16k

REPO = Path(__file__).resolve().parents[1]
SENT_BEFORE_SIGNAL_S = 6.0


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def live_client(url: str, audio: np.ndarray) -> dict:
    """A seed-protocol client at the pace of speech that never ends its session itself."""
    events = []
    async with websockets.connect(url.replace("http", "ws") + "/v1/audio/transcriptions/stream") as ws:
        await ws.send(json.dumps({"type": "session.start"}))
        assert json.loads(await ws.recv())["type"] == "session.started"

        async def send():
            pcm = (audio * 32767).astype("<i2").tobytes()
            for i in range(0, len(pcm), 3200):
                await ws.send(pcm[i : i + 3200])
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(send())
        try:
            async for message in ws:
                events.append(json.loads(message))
        except websockets.ConnectionClosed:
            pass
        sender.cancel()
        return {"events": events, "code": ws.close_code}


async def realtime_client(url: str, audio: np.ndarray) -> dict:
    events = []
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-unused", max_retries=0)
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        pcm = (soxr.resample(audio, 16000, 24000) * 32767).astype("<i2").tobytes()

        async def send():
            for i in range(0, len(pcm), 4800):
                await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + 4800]).decode())
                await asyncio.sleep(0.1)

        sender = asyncio.create_task(send())
        try:
            async for event in conn:
                events.append(event.model_dump(exclude_unset=True))
        except Exception:  # the close after the drain
            pass
        sender.cancel()
    return {"events": events}


async def test_sigterm_gives_live_sessions_their_final_text_then_exits(speech_dir, cache_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(["make", "-s", "serve", f"PORT={port}", "SERVE_ARGS=--log-level warning --shutdown-timeout 20"],
                            cwd=REPO, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 180
        while not listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
            await asyncio.sleep(0.2)
        # two sentences, the signal comes in the middle of the second; the rest is never heard
        audio = concat([read16k(speech_dir / "h5.wav"), read16k(speech_dir / "h6.wav"), read16k(speech_dir / "h7.wav")])
        live = asyncio.create_task(live_client(url, audio))
        realtime = asyncio.create_task(realtime_client(url, audio))
        await asyncio.sleep(SENT_BEFORE_SIGNAL_S)
        os.killpg(proc.pid, signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.05)
        try:
            health = httpx.get(f"{url}/health", timeout=5)
            assert health.status_code == 503 and health.json() == {"status": "draining"}
        except httpx.TransportError:
            pass  # already gone
        live_out, realtime_out = await asyncio.wait_for(asyncio.gather(live, realtime), 60)
        while listening(port):
            assert time.monotonic() - signalled < 25, "the server did not exit within its shutdown timeout"
            await asyncio.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-f", f"serve --host 127.0.0.1 --port {port}"], check=False)
    events = live_out["events"]
    assert events[-1]["type"] == "transcript.final" and live_out["code"] == 1012
    final = events[-1]
    assert "".join(e["delta"] for e in events if e["type"] == "transcript.delta") == final["text"]
    assert final["audio_ms"] >= (SENT_BEFORE_SIGNAL_S - 1) * 1000
    heard = " ".join(HARVARD[5:7]).lower()
    assert len(final["text"].split()) >= len(HARVARD[5].split()), final  # at least the first sentence, whole
    assert all(w.strip(".,").lower() in heard for w in final["text"].split()[:3])
    completed = [e for e in realtime_out["events"] if e["type"].endswith("transcription.completed")]
    # the item in progress was committed and completed too (empty where the signal fell in a pause)
    assert completed and any(e["transcript"] for e in completed)
    assert len(" ".join(e["transcript"] for e in completed).split()) >= len(HARVARD[5].split())
