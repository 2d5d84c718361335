"""Shared fixtures: the bundled model, speech with known text, and a real server on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from speech import HARVARD, concat, read16k, speak  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """A fresh conversion cache, so every run converts the bundled model once from scratch."""
    path = tmp_path_factory.mktemp("sasr-cache")
    os.environ["SASR_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def loaded(cache_dir):
    from sasr.models.loader import load_whisper

    return load_whisper(None)


@pytest.fixture(scope="session")
def whisper(loaded):
    from sasr.models.whisper import WhisperModel

    return WhisperModel(loaded.model)


@pytest.fixture(scope="session")
def engine(loaded):
    """The continuous-batching engine on the bundled model, in this process."""
    from sasr.engine.engine import BatchEngine

    eng = BatchEngine(loaded, max_num_seqs=8)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def speech_dir(tmp_path_factory) -> Path:
    """One 16 kHz mono wav per Harvard sentence: h0.wav ... h29.wav."""
    path = tmp_path_factory.mktemp("speech")
    for i, text in enumerate(HARVARD):
        speak(text, path / f"h{i}.wav")
    return path


@pytest.fixture(scope="session")
def long_speech(speech_dir) -> tuple[Path, str]:
    """All 30 sentences in one file of about 90 s, and its text."""
    import soundfile as sf

    audio = concat([read16k(speech_dir / f"h{i}.wav") for i in range(len(HARVARD))])
    path = speech_dir / "long.wav"
    sf.write(path, audio, 16000)
    return path, " ".join(HARVARD)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m sasr serve` in a subprocess, as a user starts it."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "sasr", "serve", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("server did not become healthy in 120 s")

    def healthy(self) -> bool:
        return self.proc.poll() is None and httpx.get(f"{self.url}/health", timeout=5).status_code == 200

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="session")
def server(cache_dir):
    srv = Server("--max-audio-seconds", "100")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-unused", max_retries=0, timeout=300)
