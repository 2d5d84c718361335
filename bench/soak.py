"""Soak: a bounded load-and-fault run against a real server; exits non-zero on lost words, hangs or leaks.

    python -m bench.soak [--duration 600] [--sessions 3] [--json out.json]

For --duration seconds: --sessions live sessions at the pace of speech (1.5x what this 2-core machine
holds at event p95 < 1 s), each replaying speech files one after another over the seed protocol or
OpenAI's Realtime API (alternately); an upload every few seconds; and, among them, clients that
disconnect mid-decode, clients that send malformed frames, bodies over the size limit, and a fault
injected into the engine halfway (the test hook: SASR_TEST_FAULTS=1, POST /_test/fault). At the end a
SIGTERM drains the server. Every 5 s it samples the server's resident memory and open file
descriptors.

Reports sessions completed, words lost (each completed session's final text aligned with the text the
same file gets streamed alone before the load: a stretch of more than MAX_LOST_RUN words missing or
written twice is lost words; single words may differ, as a live session commits from partial context
what the file-speed stream decodes whole, and one the server falls behind commits at finals), errors by
code (the injected fault's internal_error is expected), memory and descriptors over time. Fails when
a session loses words, a client waits past its deadline (a hang), an upload or a session ends in an
unexpected error, memory or descriptors grow (the last third's mean over the first third's, after a
warm-up), the server dies, or the drain does not end every session with its final text.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import openai
import soundfile as sf
import soxr
import websockets

from bench.http_load import machine
from tests.support.server import Server
from tests.support.speech import HARVARD, concat, read16k, speak
from tests.support.wer import longest_runs, wer

MAX_LOST_RUN = 3  # words in a row missing from (or doubled in) a session's final against the file alone;
# the files' sentences are 6-10 words, so a lost sentence or a replayed stretch is far longer
MAX_RSS_GROWTH = 1.15  # the last third's mean resident memory over the first third's
MAX_FD_GROWTH = 10  # open descriptors, last third's mean minus the first third's
WARMUP_S = 20.0
STREAM_PATH = "/v1/audio/transcriptions/stream"


@dataclass
class Tally:
    completed: int = 0
    drained: int = 0  # ended by the drain with their final text
    lost: list = field(default_factory=list)  # (file, longest missing run, longest doubled run, final, alone)
    session_wers: list = field(default_factory=list)  # each completed session's final against the file alone
    hangs: list = field(default_factory=list)
    errors: dict = field(default_factory=dict)  # code -> count
    unexpected: list = field(default_factory=list)
    uploads: int = 0
    samples: list = field(default_factory=list)  # (t, rss MB, fds)

    def error(self, code: str, expected: bool = True, detail: str = "") -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        if not expected:
            self.unexpected.append(f"{code}: {detail}"[:300])


def make_files(directory: Path) -> list[tuple[np.ndarray, str]]:
    """Six 8-14 s files of two to four Harvard sentences."""
    files = []
    for n, first in enumerate(range(0, 24, 4)):
        count = 2 + n % 3
        parts = [read16k(speak(HARVARD[i], directory / f"s{i}.wav")) for i in range(first, first + count)]
        files.append((concat(parts, gap_s=0.6), " ".join(HARVARD[first : first + count])))
    return files


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def seed_session(url: str, audio: np.ndarray, paced: bool, abandon_at: float | None = None) -> dict:
    """One seed-protocol session; returns its last event and close code."""
    events = []
    async with websockets.connect(url.replace("http", "ws") + STREAM_PATH, max_size=None) as ws:
        await ws.send(json.dumps({"type": "session.start", "partials": True}))
        json.loads(await ws.recv())

        async def read():
            try:
                async for message in ws:
                    events.append(json.loads(message))
            except websockets.ConnectionClosed:
                pass

        reader = asyncio.create_task(read())
        data = pcm16(audio)
        try:
            for i in range(0, len(data), 3200):
                if abandon_at is not None and i >= abandon_at * len(data):
                    reader.cancel()
                    return {"abandoned": True}
                await ws.send(data[i : i + 3200])
                if paced:
                    await asyncio.sleep(0.1)
            await ws.send(json.dumps({"type": "session.end"}))
        except websockets.ConnectionClosed:
            pass
        await reader
        return {"last": events[-1] if events else None, "code": ws.close_code}


async def realtime_session(url: str, audio: np.ndarray) -> dict:
    """One Realtime session (manual commits), paced; returns its items' transcripts or its error."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-unused", max_retries=0)
    transcripts, error = [], None
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()
        await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
        data = pcm16(soxr.resample(audio, 16000, 24000))
        try:
            for i in range(0, len(data), 4800):
                await conn.input_audio_buffer.append(audio=base64.b64encode(data[i : i + 4800]).decode())
                await asyncio.sleep(0.1)
            await conn.input_audio_buffer.commit()
        except websockets.ConnectionClosed:
            pass  # the server ended the session (a fault, the drain): its last events say why
        try:
            async for event in conn:
                if event.type.endswith("transcription.completed"):
                    transcripts.append(event.transcript)
                    break
                if event.type == "error":
                    error = event.error.code
                    break
        except Exception:  # closed: by the drain (its item completed first) or after an error
            pass
    return {"text": " ".join(transcripts), "error": error}


async def live_worker(n: int, url: str, files, alone: list[str], tally: Tally, stop: asyncio.Event) -> None:
    rng = random.Random(n)
    while not stop.is_set():
        index = rng.randrange(len(files))
        audio, _ = files[index]
        roll = rng.random()
        deadline = len(audio) / 16000 * 3 + 60
        try:
            if roll < 0.15:  # a client that goes away mid-decode
                await asyncio.wait_for(seed_session(url, audio, paced=True, abandon_at=rng.uniform(0.3, 0.9)), deadline)
                tally.error("client_abandoned")
                continue
            if n % 2:
                out = await asyncio.wait_for(realtime_session(url, audio), deadline)
                final, code = out["text"], out["error"]
            else:
                out = await asyncio.wait_for(seed_session(url, audio, paced=True), deadline)
                last = out["last"] or {}
                final = last.get("text") if last.get("type") == "transcript.final" else None
                code = last.get("code") if last.get("type") == "error" else None
        except TimeoutError:
            tally.hangs.append(f"session {n} on file {index}")
            continue
        except websockets.ConnectionClosed as exc:  # closed before its events were read
            if stop.is_set():
                return
            faulted = exc.rcvd is not None and exc.rcvd.code == 1011  # the injected fault's close
            tally.error("internal_error" if faulted else type(exc).__name__, expected=faulted, detail=str(exc))
            continue
        except Exception as exc:  # the server went away (the drain at the end) or refused us
            if stop.is_set():
                return
            tally.error(type(exc).__name__, expected=False, detail=str(exc))
            continue
        if code is not None:
            tally.error(code, expected=code in ("internal_error", "too_many_sessions", "shutting_down"))
            continue
        if stop.is_set():  # ended by the drain: its final holds the audio sent until then
            tally.drained += final is not None
            return
        missing, doubled = longest_runs(alone[index], final)
        tally.completed += 1
        tally.session_wers.append(round(wer(alone[index], final), 3))
        if max(missing, doubled) > MAX_LOST_RUN:
            tally.lost.append((index, missing, doubled, final, alone[index]))


async def misbehaving_worker(url: str, tally: Tally, stop: asyncio.Event, limit_mb: float, speech: np.ndarray) -> None:
    """Uploads, with now and then a malformed frame or a body over the limit."""
    rng = random.Random(99)
    wav = Path(tempfile.mkdtemp()) / "upload.wav"
    async with httpx.AsyncClient(timeout=120) as client:
        while not stop.is_set():
            await asyncio.sleep(rng.uniform(2, 5))
            if stop.is_set():
                return  # the drain began meanwhile
            roll = rng.random()
            try:
                if roll < 0.2:
                    async with websockets.connect(url.replace("http", "ws") + STREAM_PATH) as ws:
                        await ws.send(rng.choice(["{not json", '{"type": "session.pause"}', "[1]"]))
                        tally.error(json.loads(await ws.recv())["code"])
                elif roll < 0.35:
                    body = b"\0" * int((limit_mb + 0.5) * 1_000_000)
                    r = await client.post(f"{url}/v1/audio/transcriptions", files={"file": ("big.wav", body)})
                    code = r.json()["error"]["code"]  # shutting_down: the drain began while it was sent
                    tally.error(code, expected=r.status_code == 413 or code == "shutting_down", detail=str(r.status_code))
                else:
                    sf.write(wav, np.zeros(8000, np.float32) if roll < 0.4 else speech, 16000)
                    r = await client.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", wav.read_bytes())})
                    if r.status_code == 200:
                        tally.uploads += 1
                    else:
                        code = r.json()["error"]["code"]
                        tally.error(code, expected=code in ("server_busy", "internal_error", "shutting_down"))
            except Exception as exc:
                if not stop.is_set():
                    tally.error(type(exc).__name__, expected=False, detail=str(exc))


def sample(pid: int, started: float, tally: Tally) -> None:
    with open(f"/proc/{pid}/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    tally.samples.append((round(time.monotonic() - started, 1), round(rss_kb / 1024, 1), len(os.listdir(f"/proc/{pid}/fd"))))


def growth(tally: Tally) -> tuple[float, float]:
    """(RSS ratio, descriptor difference): the last third's mean against the first third's, after warm-up."""
    kept = [s for s in tally.samples if s[0] >= WARMUP_S]
    if len(kept) < 6:
        return 1.0, 0.0
    third = len(kept) // 3
    first, last = kept[:third], kept[-third:]
    rss = statistics.mean(s[1] for s in last) / statistics.mean(s[1] for s in first)
    return rss, statistics.mean(s[2] for s in last) - statistics.mean(s[2] for s in first)


async def soak(args) -> dict:
    files = make_files(Path(tempfile.mkdtemp()))
    server = Server("--max-upload-mb", str(args.max_upload_mb), "--shutdown-timeout", "30",
                    env={"SASR_TEST_FAULTS": "1"})
    tally = Tally()
    try:
        alone = [(await seed_session(server.url, audio, paced=False))["last"]["text"] for audio, _ in files]
        stop = asyncio.Event()
        started = time.monotonic()
        workers = [asyncio.create_task(live_worker(n, server.url, files, alone, tally, stop)) for n in range(args.sessions)]
        workers.append(asyncio.create_task(misbehaving_worker(server.url, tally, stop, args.max_upload_mb, files[0][0])))
        injected = False
        while time.monotonic() - started < args.duration:
            await asyncio.sleep(5)
            sample(server.proc.pid, started, tally)
            if not injected and time.monotonic() - started >= args.duration / 2:
                httpx.post(f"{server.url}/_test/fault").raise_for_status()
                injected = True
            if server.proc.poll() is not None:
                tally.unexpected.append("the server died")
                break
        stop.set()
        server.proc.send_signal(signal.SIGTERM)  # drain: sessions in flight get their final text
        await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True), 90)
        exit_code = server.proc.wait(60)
    finally:
        server.stop()
    rss_growth, fd_growth = growth(tally)
    return {
        "machine": machine(), "duration_s": args.duration, "sessions": args.sessions,
        "completed": tally.completed, "drained": tally.drained, "uploads": tally.uploads,
        "lost": tally.lost, "session_wer_max": max(tally.session_wers, default=0.0), "hangs": tally.hangs, "errors": tally.errors, "unexpected": tally.unexpected,
        "rss_growth": round(rss_growth, 3), "fd_growth": round(fd_growth, 1), "samples": tally.samples,
        "server_exit": exit_code, "injected_fault": injected,
    }


def verdict(out: dict) -> list[str]:
    problems = []
    if out["lost"]:
        problems.append(f"{len(out['lost'])} sessions lost words: {out['lost'][:3]}")
    if out["hangs"]:
        problems.append(f"hangs: {out['hangs'][:5]}")
    if out["unexpected"]:
        problems.append(f"unexpected errors: {out['unexpected'][:5]}")
    if out["rss_growth"] > MAX_RSS_GROWTH:
        problems.append(f"resident memory grew {out['rss_growth']:.2f}x")
    if out["fd_growth"] > MAX_FD_GROWTH:
        problems.append(f"open descriptors grew by {out['fd_growth']:.0f}")
    if out["completed"] == 0:
        problems.append("no session completed")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--max-upload-mb", type=float, default=2.0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    out = asyncio.run(soak(args))
    problems = verdict(out)
    rss = [s[1] for s in out["samples"]] or [0]
    print(f"soak {out['duration_s']:.0f}s sessions={out['sessions']} completed={out['completed']} "
          f"drained={out['drained']} uploads={out['uploads']} lost={len(out['lost'])} hangs={len(out['hangs'])} "
          f"errors={out['errors']} rss={min(rss):.0f}-{max(rss):.0f}MB (x{out['rss_growth']}) "
          f"fds +{out['fd_growth']} exit={out['server_exit']} -> {'FAIL: ' + '; '.join(problems) if problems else 'ok'}")
    if args.json:
        Path(args.json).write_text(json.dumps({**out, "problems": problems}, indent=2))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
