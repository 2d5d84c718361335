"""WhisperLive 0.10.0 as the streaming benchmark's peer: its server in its own environment, driven over its protocol.

    make bench-stream-peer        # creates .venv-bench-whisperlive, then runs bench.stream_load --peer whisperlive

The peer runs in a bench-only virtual environment (never the project's): `whisper-live==0.10.0`
installed with --no-deps plus what its server imports (faster-whisper 1.2.0, a CPU torch, websockets,
fastapi, uvicorn, python-multipart, scipy, av, requests). This file is both halves:
- run by the peer environment's python (`python bench/whisperlive_peer.py serve ...`), it starts
  WhisperLive's `TranscriptionServer` on loopback with the faster_whisper backend (int8 on CPU, its
  choice) on the same tiny.en CTranslate2 weights sasr serves (`bundled_model_dir()`), and, when
  asked, its OpenAI-compatible REST upload endpoint on a second loopback port (WhisperLive's own
  `run(enable_rest=True)` binds every interface, so this starts the same app on 127.0.0.1 instead);
- imported by the bench (project environment), `PeerServer` starts and stops that process and
  `stream()` plays one file to it the way WhisperLive's own client does.

Its protocol (whisper_live/client.py and server.py in the package): the client sends a JSON config
(`uid`, `language`, `task`, `model`, `use_vad`, and its client's defaults for `send_last_n_segments`,
`no_speech_thresh`, `clip_audio`, `same_output_threshold`), waits for `SERVER_READY`, then sends
float32 16 kHz frames. The server re-transcribes the unfinished audio in a loop and, after each
pass, sends `{"uid", "segments": [{"start", "end", "text", "completed"}]}`: the last ten completed
segments plus the current unfinished one. It has no flush: `END_OF_AUDIO` ends the session at once.
Like its own file client (which waits until the server has been quiet for 15 s), the bench waits
after the last frame until no message came for a while (three times the longest gap seen in the
session, 3-30 s; at most 60 s, else the session counts as unfinished), then sends END_OF_AUDIO.
The final text is what its client writes out: the completed segments (kept when they start at or
after the previous one's end) plus the unfinished segment of the last message. The final time is
the arrival of the last message that changed that text. Its events, for latency, are the messages
that cover audio beyond what earlier ones covered: it re-sends the same segments after every pass
until one completes, and those repeats carry no news.

One model per session is the default, its best configuration on two cores: in its single-model
mode (`--peer-single-model` in bench.stream_load) the sessions share one model behind a plain lock
that the thread releasing it usually takes again at once, so with two sessions one of them waited
for tens of seconds (event p95 39 s against 2.3 s with a model each, same machine and files).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ENV_DIR = Path(__file__).resolve().parent.parent / ".venv-bench-whisperlive"
FRAME_S = 0.1  # audio per frame, as sasr's client sends
QUIET_MIN_S, QUIET_MAX_S = 3.0, 30.0  # how long the server must be silent before the session ends
MAX_WAIT_S = 60.0  # after the last frame: a session still getting news then is cut off (unfinished)
CLIENT_OPTIONS = {  # whisper_live.client.Client defaults
    "language": "en", "task": "transcribe", "use_vad": True, "send_last_n_segments": 10,
    "no_speech_thresh": 0.45, "clip_audio": False, "same_output_threshold": 10,
}


@dataclass
class PeerStream:
    """What one session sent and got back; times in seconds after the first frame was sent."""
    sent_s: list[float] = field(default_factory=list)  # per frame
    frame_ms: list[int] = field(default_factory=list)  # per frame, audio sent up to its end
    events: list[tuple[float, int]] = field(default_factory=list)  # (arrival, audio covered: latest segment end ms)
    resent: int = 0  # messages that covered no audio beyond what earlier ones did (not in events)
    committed: list[tuple[float, int, str]] = field(default_factory=list)  # (arrival, end ms, text) per completed segment
    first_text_s: float = float("nan")  # first message with any text
    end_sent_s: float = 0.0  # last frame sent
    final_s: float = 0.0  # last message that changed the final text
    text: str = ""  # completed segments + last unfinished segment
    finished: bool = False  # the server went quiet within MAX_WAIT_S of the last frame


# --- the bench side (project environment) ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PeerServer:
    """WhisperLive's server in the peer environment, on free loopback ports."""

    def __init__(self, model_dir: Path, rest: bool = False, model_per_session: bool = True,
                 python: Path | None = None, timeout_s: float = 120) -> None:
        python = Path(python or ENV_DIR / "bin" / "python")
        if not python.exists():
            raise RuntimeError(f"{python} missing: make bench-stream-peer creates the WhisperLive environment")
        self.port = free_port()
        self.rest_url = None
        cmd = [str(python), __file__, "serve", "--port", str(self.port), "--model", str(model_dir)]
        if rest:
            rest_port = free_port()
            self.rest_url = f"http://127.0.0.1:{rest_port}"
            cmd += ["--rest-port", str(rest_port)]
        if model_per_session:
            cmd.append("--model-per-session")
        if os.environ.get("BENCH_PEER_LOG"):  # its log (INFO, a few lines per pass) is dropped unless asked for
            cmd += ["--log", os.environ["BENCH_PEER_LOG"]]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not (_listening(self.port) and (not rest or _listening(int(self.rest_url.rsplit(":", 1)[1])))):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"WhisperLive server did not start (exit code {self.proc.returncode})")
            time.sleep(0.2)
        self.url = f"ws://127.0.0.1:{self.port}"
        self.model_dir = str(model_dir)

    def peak_rss_mb(self) -> float:
        # the bench side only: the peer's own environment never calls it
        from tests.support.server import peak_rss_mb

        return peak_rss_mb(self.proc.pid)

    def stop(self) -> None:
        from tests.support.server import stop_process

        stop_process(self.proc)

    async def upload(self, path: Path) -> str:
        """The file through WhisperLive's REST endpoint (faster-whisper, whole file at once)."""
        import httpx

        async with httpx.AsyncClient(timeout=600) as client:
            r = await client.post(f"{self.rest_url}/v1/audio/transcriptions", files={"file": (path.name, path.read_bytes())},
                                  data={"model": self.model_dir, "language": "en"})
        r.raise_for_status()
        return r.json()["text"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def stream(server: PeerServer, audio: np.ndarray, realtime: bool = True) -> PeerStream:
    """Play 16 kHz float32 audio to the peer in 100 ms frames; collect its segments with arrival times."""
    import websockets

    out = PeerStream()
    uid = str(uuid.uuid4())
    async with websockets.connect(server.url, max_size=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"uid": uid, "model": server.model_dir, **CLIENT_OPTIONS}))
        while True:  # the model loads before SERVER_READY; WAIT or ERROR refuse the session
            ready = json.loads(await ws.recv())
            if ready.get("message") == "SERVER_READY":
                break
            if "status" in ready and ready["status"] in ("WAIT", "ERROR"):
                raise RuntimeError(f"WhisperLive refused the session: {ready}")
        t0 = time.monotonic()
        state = _Transcript()
        last_message_s, max_gap_s = [0.0], [0.0]

        async def read() -> None:
            with contextlib.suppress(websockets.ConnectionClosed):
                async for message in ws:
                    now = time.monotonic() - t0
                    max_gap_s[0] = max(max_gap_s[0], now - last_message_s[0]) if last_message_s[0] else 0.0
                    last_message_s[0] = now
                    segments = json.loads(message).get("segments")
                    if segments:
                        state.update(now, segments, out)

        reader = asyncio.create_task(read())
        step = int(16000 * FRAME_S)
        for i in range(0, len(audio), step):
            if realtime:
                await asyncio.sleep(max(0.0, t0 + i / 16000 - time.monotonic()))
            await ws.send(audio[i : i + step].astype(np.float32).tobytes())
            out.sent_s.append(time.monotonic() - t0)
            out.frame_ms.append(min(i + step, len(audio)) * 1000 // 16000)
        out.end_sent_s = time.monotonic() - t0
        while time.monotonic() - t0 < out.end_sent_s + MAX_WAIT_S:
            quiet_s = min(QUIET_MAX_S, max(QUIET_MIN_S, 3 * max_gap_s[0]))
            if time.monotonic() - t0 - max(last_message_s[0], out.end_sent_s) >= quiet_s:
                out.finished = True
                break
            await asyncio.sleep(0.1)
        await ws.send(b"END_OF_AUDIO")
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    out.text = state.text()
    return out


class _Transcript:
    """The text as WhisperLive's client assembles it from the messages."""

    def __init__(self) -> None:
        self.completed: list[dict] = []
        self.partial: dict | None = None
        self.last_text = ""

    def update(self, now: float, segments: list[dict], out: PeerStream) -> None:
        covered_ms = int(max(float(s["end"]) for s in segments) * 1000)
        if out.events and covered_ms <= max(ms for _, ms in out.events):
            out.resent += 1  # the same audio again (it re-sends until a segment completes): no news to time
        else:
            out.events.append((now, covered_ms))
        for seg in segments:
            fresh = not self.completed or float(seg["start"]) >= float(self.completed[-1]["end"])
            if seg.get("completed") and fresh:
                self.completed.append(seg)
                out.committed.append((now, int(float(seg["end"]) * 1000), seg["text"]))
        last = segments[-1]
        self.partial = None if last.get("completed") else last
        text = self.text()
        if text.strip() and np.isnan(out.first_text_s):
            out.first_text_s = now
        if text != self.last_text:
            self.last_text, out.final_s = text, now

    def text(self) -> str:
        parts = [s["text"].strip() for s in self.completed]
        if self.partial and (not parts or parts[-1] != self.partial["text"].strip()):
            parts.append(self.partial["text"].strip())
        return " ".join(p for p in parts if p)


# --- the server side (peer environment) ------------------------------------------------------------

def serve(port: int, model: str, rest_port: int | None, model_per_session: bool, log: str | None) -> None:
    """WhisperLive's TranscriptionServer on 127.0.0.1 (faster_whisper backend), as its run_server.py starts it."""
    import threading

    if log:
        with open(log, "a") as f:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)

    import uvicorn
    from whisper_live.server import TranscriptionServer

    server = TranscriptionServer()
    if rest_port:
        server.default_model = model  # what run() sets; the REST app loads this model on first use
        app = server.build_rest_app("faster_whisper", faster_whisper_custom_model_path=model)
        threading.Thread(target=uvicorn.run, args=(app,), daemon=True,
                         kwargs={"host": "127.0.0.1", "port": rest_port, "log_level": "warning"}).start()
    server.run("127.0.0.1", port=port, backend="faster_whisper", faster_whisper_custom_model_path=model,
               single_model=not model_per_session, max_clients=256, max_connection_time=3600)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run WhisperLive's server (in the peer environment)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", required=True, help="CTranslate2 model directory")
    p.add_argument("--rest-port", type=int, default=None)
    p.add_argument("--model-per-session", action="store_true")
    p.add_argument("--log", default=None, help="append its output to this file")
    args = parser.parse_args()
    serve(args.port, args.model, args.rest_port, args.model_per_session, args.log)


if __name__ == "__main__":
    main()
