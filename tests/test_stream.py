"""The live WebSocket protocol against a real server, with the real `websockets` client."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import socket
import time

import httpx
import numpy as np
import pytest
import soundfile as sf
import soxr
import websockets

from tests.support.server import Server
from tests.support.speech import HARVARD, concat, read16k
from tests.support.wer import wer

PATH = "/v1/audio/transcriptions/stream"
FRAME_S = 0.1


def wav_bytes(audio: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def stream(url: str, audio_bytes: bytes, start: dict | None = None, realtime: bool = False,
                 bytes_per_s: int = 32000, head_s: float = 0.0) -> dict:
    """Stream audio; return the events received, when session.end was sent, and the close code.
    realtime: at the pace of speech, after head_s seconds of it sent at once (what a client buffered
    while it connected)."""
    events, times = [], []
    # the websockets library's default keepalive (a ping every 20 s, 20 s to answer): the server reads
    # as frames arrive, so pings never wait behind audio
    async with websockets.connect(url.replace("http", "ws") + PATH, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start", **(start or {})}))
        started = json.loads(await ws.recv())

        async def read():
            async for message in ws:
                events.append(json.loads(message))
                times.append(time.monotonic())

        reader = asyncio.create_task(read())
        step = int(bytes_per_s * FRAME_S) // 2 * 2
        head = int(bytes_per_s * head_s) // step * step
        if head:
            await ws.send(audio_bytes[:head])
        t0 = time.monotonic() - head_s
        for i in range(head, len(audio_bytes), step):
            await ws.send(audio_bytes[i : i + step])
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (i + step) / bytes_per_s - time.monotonic()))
        end_sent = time.monotonic()
        await ws.send(json.dumps({"type": "session.end"}))
        await reader
        code = ws.close_code
    return {"started": started, "events": events, "times": times, "end_sent": end_sent, "close_code": code}


def deltas(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "transcript.delta"]


@pytest.fixture(scope="module")
def twenty_seconds(speech_dir) -> tuple[np.ndarray, str]:
    idx = range(6)
    return concat([read16k(speech_dir / f"h{i}.wav") for i in idx]), " ".join(HARVARD[i] for i in idx)


async def test_happy_path_deltas_join_to_final(server, twenty_seconds):
    audio, text = twenty_seconds
    out = await stream(server.url, pcm16(audio))
    assert out["started"]["type"] == "session.started" and out["started"]["session_id"].startswith("sess_")
    events = out["events"]
    assert events[-1]["type"] == "transcript.final" and out["close_code"] == 1000
    words = deltas(events)
    assert len(words) >= 20 and all(" " not in d["delta"].strip() for d in words)  # one word each
    assert "".join(d["delta"] for d in words) == events[-1]["text"]
    assert wer(text, events[-1]["text"]) <= 0.45
    audio_ms = [d["audio_ms"] for d in words]
    assert audio_ms == sorted(audio_ms) and audio_ms[-1] <= events[-1]["audio_ms"] == round(len(audio) / 16)


async def test_streaming_wer_close_to_one_shot(server, client, long_speech):
    path, text = long_speech
    audio = read16k(path)
    one_shot = client.audio.transcriptions.create(model="whisper-1", file=path).text
    out = await stream(server.url, pcm16(audio))
    final = out["events"][-1]["text"]
    assert wer(text, final) <= wer(text, one_shot) + 0.05, (final, one_shot)


@pytest.mark.parametrize("head_s", [0.0, 2.0])
async def test_realtime_words_arrive_while_speaking(server, twenty_seconds, head_s):
    """At the pace of speech, most words come before the speaker stops; also for a client whose first
    2 s come at once (buffered while it connected: it was taken for a file sender, and got no word
    until it ended, while the server allowed 1 s)."""
    audio, _ = twenty_seconds
    out = await stream(server.url, pcm16(audio[: 16000 * 12]), realtime=True, head_s=head_s)
    words = deltas(out["events"])
    early = [t for t, e in zip(out["times"], out["events"]) if e["type"] == "transcript.delta" and t < out["end_sent"]]
    assert len(words) >= 15 and len(early) >= 0.6 * len(words), (len(early), len(words))


def live_decodes(url: str, kind: str) -> float:
    pattern = re.compile(rf'^sasr_live_decodes_total{{kind="{kind}"}} (\S+)$', re.M)
    found = pattern.search(httpx.get(f"{url}/metrics").text)
    return float(found.group(1)) if found else 0.0


async def test_commits_at_utterance_ends_when_asked(server, twenty_seconds):
    """commits "final" with an 800 ms endpoint (what measured closest to uploads at the pace of speech):
    no commit decode runs, partials show the words while the speaker talks, every word is committed by
    its utterance's final, and the transcript is as close to the text as the default's."""
    audio, text = twenty_seconds
    audio = audio[: 16000 * 12]
    commits, finals = live_decodes(server.url, "commit"), live_decodes(server.url, "final")
    out = await stream(server.url, pcm16(audio), {"commits": "final", "endpoint_ms": 800, "partials": True},
                       realtime=True)
    assert live_decodes(server.url, "commit") == commits and live_decodes(server.url, "final") > finals
    early_partials = [e for t, e in zip(out["times"], out["events"])
                      if e["type"] == "transcript.partial" and e["text"] and t < out["end_sent"]]
    assert len(early_partials) >= 5
    final = out["events"][-1]["text"]
    assert final == " ".join(d["delta"].strip() for d in deltas(out["events"]))
    default = (await stream(server.url, pcm16(audio), realtime=True))["events"][-1]["text"]
    spoken = " ".join(text.split()[: len(final.split())])  # the 12 s hold the first sentences
    assert wer(spoken, final) <= wer(spoken, default) + 0.05, (final, default)


async def test_silence_gives_no_words(server):
    out = await stream(server.url, pcm16(np.zeros(16000 * 6, np.float32)))
    assert deltas(out["events"]) == [] and out["events"][-1] == {"type": "transcript.final", "text": "", "audio_ms": 6000}


@pytest.mark.parametrize("fmt", ["pcm16_8k_mono", "pcm16_24k_mono", "pcm16_48k_mono", "f32_16k_mono", "f32_48k_mono"])
async def test_audio_formats(server, twenty_seconds, fmt):
    """Each format is resampled on the server: the transcript matches the same signal sent as 16 kHz PCM16."""
    audio, text = twenty_seconds
    audio = audio[: 16000 * 9]
    encoding, rate = fmt.split("_")[:2]
    rate = int(rate[:-1]) * 1000
    signal = soxr.resample(audio, 16000, rate) if rate != 16000 else audio  # what the client has
    data = pcm16(signal) if encoding == "pcm16" else signal.astype("<f4").tobytes()
    # at the pace of speech, so the text depends on the audio alone: sent at once, the first 3 s are decoded
    # live until the session is taken for a file sender, and how many live decodes commit words by then
    # turns on the server's speed (a slower CPU's 48 kHz stream committed "Blue machine" that way, its
    # reference did not: WER 0.26)
    out = await stream(server.url, data, {"audio_format": fmt}, bytes_per_s=rate * (2 if encoding == "pcm16" else 4),
                       realtime=True)
    assert out["events"][-1]["audio_ms"] == pytest.approx(9000, abs=20)  # the rate was understood
    if rate < 16000:
        return  # 8 kHz telephone audio lacks the band tiny.en hears espeak-ng's voice in (WER 0.76)
    same_at_16k = soxr.resample(signal, rate, 16000) if rate != 16000 else signal
    reference = (await stream(server.url, pcm16(same_at_16k), realtime=True))["events"][-1]["text"]
    # Not identical: resampling in frames vs at once leaves differences that flip tiny.en's close calls
    # (seen: 3 words of 25). A wrong rate or sample type would give garbage (WER near 1).
    assert reference and wer(reference, out["events"][-1]["text"]) <= 0.25, (reference, out["events"][-1]["text"])
    assert wer(" ".join(HARVARD[:3]), out["events"][-1]["text"]) <= 0.5


async def test_eight_sessions_are_isolated(server, speech_dir):
    clips = [concat([read16k(speech_dir / f"h{i}.wav"), read16k(speech_dir / f"h{i + 1}.wav")]) for i in range(0, 16, 2)]
    alone = [(await stream(server.url, pcm16(c)))["events"][-1]["text"] for c in clips]
    together = await asyncio.gather(*(stream(server.url, pcm16(c)) for c in clips))
    assert [t["events"][-1]["text"] for t in together] == alone
    assert all(alone)


async def test_disconnect_mid_stream_leaves_server_healthy(server, twenty_seconds):
    audio, _ = twenty_seconds
    async with websockets.connect(server.url.replace("http", "ws") + PATH) as ws:
        await ws.send(json.dumps({"type": "session.start"}))
        await ws.recv()
        await ws.send(pcm16(audio[: 16000 * 5]))
        await asyncio.sleep(0.5)
    deadline = time.monotonic() + 10
    while "sasr_engine_running_sequences 0.0\n" not in httpx.get(f"{server.url}/metrics").text:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert server.healthy()
    out = await stream(server.url, pcm16(audio[: 16000 * 4]))  # and serves the next one
    assert out["events"][-1]["text"]


async def expect_error(url: str, messages: list, code: str) -> None:
    async with websockets.connect(url.replace("http", "ws") + PATH, max_size=None) as ws:
        for m in messages:
            await ws.send(m if isinstance(m, bytes) else m if isinstance(m, str) else json.dumps(m))
        received = []
        with contextlib.suppress(websockets.ConnectionClosedError):  # closes with 1008/1011/1013
            async for message in ws:
                received.append(json.loads(message))
        assert received[-1]["type"] == "error" and received[-1]["code"] == code, received
        assert received[-1]["message"]
        assert ws.close_code in (1008, 1011, 1013)


START = {"type": "session.start"}
ERRORS = {
    "invalid_json": (["{not json"], "invalid_json"),
    "wrong_field_type": ([{"type": "session.start", "language": 5}], "invalid_payload"),
    "unknown_field": ([{"type": "session.start", "speed": 2}], "invalid_payload"),
    "endpoint_too_short": ([{"type": "session.start", "endpoint_ms": 50}], "invalid_payload"),
    "unknown_commits": ([{"type": "session.start", "commits": "late"}], "invalid_payload"),
    "not_an_object": (["[1, 2]"], "invalid_payload"),
    "audio_before_start": ([b"\x00\x00" * 100], "invalid_state"),
    "start_twice": ([START, START], "invalid_state"),
    "end_before_start": ([{"type": "session.end"}], "invalid_state"),
    "bad_audio_format": ([{"type": "session.start", "audio_format": "mp3"}], "invalid_audio_format"),
    "unknown_message": ([{"type": "session.pause"}], "unknown_message"),
    "unsupported_model": ([{"type": "session.start", "model": "whisper-large-v9"}], "unsupported_model"),
    # more than --max-audio-seconds (100 here) waiting: what a file sender may have queued
    "buffer_overflow": ([START, b"\x00\x01" * 16000 * 101], "buffer_overflow"),
}


@pytest.mark.parametrize("case", ERRORS)
async def test_error_codes_close_the_socket(server, case):
    messages, code = ERRORS[case]
    await expect_error(server.url, messages, code)
    assert server.healthy()


async def test_too_many_sessions(cache_dir):
    small = Server("--max-sessions", "1")
    try:
        async with websockets.connect(small.url.replace("http", "ws") + PATH) as first:
            await first.send(json.dumps(START))
            assert json.loads(await first.recv())["type"] == "session.started"
            await expect_error(small.url, [START], "too_many_sessions")
        assert small.healthy()
    finally:
        small.stop()


async def test_a_file_sender_with_keepalive_gets_its_whole_transcript(server, long_speech):
    """A client with keepalive pings every second (2 s to answer) streams 90 s of speech as fast as the
    socket takes it: the server reads its frames as they come (the audio waits in the session), so its
    pings are answered while the file is transcribed, and it gets the final text, never a timeout."""
    path, text = long_speech
    audio = pcm16(read16k(path))
    async with websockets.connect(server.url.replace("http", "ws") + PATH, max_size=None,
                                  ping_interval=1, ping_timeout=2) as ws:
        await ws.send(json.dumps(START))
        assert json.loads(await ws.recv())["type"] == "session.started"
        started = time.monotonic()
        for i in range(0, len(audio), 3200):
            await ws.send(audio[i : i + 3200])
        await ws.send(json.dumps({"type": "session.end"}))
        events = [json.loads(m) async for m in ws]
        took_s = time.monotonic() - started
        code = ws.close_code
    assert events[-1]["type"] == "transcript.final" and code == 1000
    assert took_s > 4  # long enough that a 2 s keepalive timeout would have struck before
    assert len(events[-1]["text"].split()) >= 0.9 * len(text.split())


def open_raw_session(port: int) -> socket.socket:
    """A WebSocket client that starts a session and then never reads again (so never answers a ping):
    a peer that vanished without closing."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall((f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    assert b" 101 " in sock.recv(4096).split(b"\r\n")[0]
    payload, mask = json.dumps(START).encode(), b"\x01\x02\x03\x04"
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
    return sock


async def test_a_vanished_peer_is_reaped(cache_dir):
    small = Server("--max-sessions", "1", "--ws-ping-interval", "0.5", "--ws-ping-timeout", "1")
    try:
        metrics = lambda: httpx.get(f"{small.url}/metrics").text  # noqa: E731
        ghost = open_raw_session(small.port)
        deadline = time.monotonic() + 5
        while "sasr_live_sessions 1.0" not in metrics():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 10  # one ping interval and timeout, and the close handshake's
        while "sasr_live_sessions 0.0" not in metrics():
            assert time.monotonic() < deadline, "the silent peer still holds its slot"
            await asyncio.sleep(0.2)
        assert 'sasr_live_sessions_lost_total{protocol="stream"} 1.0' in metrics()
        async with websockets.connect(small.url.replace("http", "ws") + PATH) as ws:  # the slot is free again
            await ws.send(json.dumps(START))
            assert json.loads(await ws.recv())["type"] == "session.started"
        ghost.close()
    finally:
        small.stop()


async def test_the_client_reconnects_through_a_restart_and_loses_nothing(cache_dir, twenty_seconds):
    """sasr.client (and `sasr stream`) at the pace of speech while the server restarts on the same
    port: the draining server sends the final of what it heard and closes 1012; the client reconnects
    once the server is back, sends the rest, and the transcript across both sessions is whole."""
    from sasr.client import stream_audio

    audio, text = twenty_seconds
    audio = audio[: 16000 * 12]
    first = Server()
    second = None
    try:
        client = asyncio.create_task(stream_audio(first.url, pcm16(audio), realtime=True))
        await asyncio.sleep(4)
        await asyncio.to_thread(first.stop)  # SIGTERM: the drain
        second = await asyncio.to_thread(Server, port=first.port)
        out = await asyncio.wait_for(client, 120)
        upload = await asyncio.to_thread(httpx.post, f"{second.url}/v1/audio/transcriptions", timeout=120,
                                         files={"file": ("a.wav", wav_bytes(audio))})
    finally:
        first.stop()
        if second is not None:
            second.stop()
    finals = [e for e in out.events if e["type"] == "transcript.final"]
    assert out.reconnects >= 1 and len(finals) == 2 and out.close_code == 1000
    assert finals[0]["audio_ms"] >= 3000  # the first session's final covers what it heard
    # both sessions heard their part and together as many words as the same 12 s uploaded: nothing
    # lost at the seam, nothing heard twice (which words tiny.en hears in these hard sentences varies
    # with the context, live or uploaded: measured word counts 2026-11-26: 31 and 32 against 33)
    uploaded = upload.json()["text"]
    assert all(out.texts) and len(out.texts) == 2
    assert 0.85 * len(uploaded.split()) <= len(out.text.split()) <= 1.2 * len(uploaded.split()), (out.text, uploaded)
