"""Shared fixtures: the bundled model, speech with known text, and a real server on a free port."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.server import Server
from tests.support.speech import HARVARD, concat, read16k, speak


@pytest.fixture(scope="session", autouse=True)
def cache_dir(tmp_path_factory) -> Path:
    """A fresh conversion cache, so every run converts the bundled model once from scratch."""
    path = tmp_path_factory.mktemp("sasr-cache")
    os.environ["SASR_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def loaded(cache_dir):
    """fp32 whatever the CPU default: test_convert compares greedy tokens with CTranslate2's fp32
    (the int8 model has its own tests, tests/test_quant.py; the server runs the default)."""
    from sasr.models.whisper.load import load_whisper

    return load_whisper(None, quantize="none")


@pytest.fixture(scope="session")
def whisper(loaded):
    from sasr.models.whisper.model import WhisperModel

    return WhisperModel(loaded.model)


@pytest.fixture(scope="session")
def engine(loaded):
    """The continuous-batching engine on the bundled model, in this process."""
    from sasr.models.whisper.engine import WhisperEngine

    eng = WhisperEngine(loaded, max_num_seqs=8)
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


@pytest.fixture(scope="session")
def server(cache_dir):
    srv = Server("--max-audio-seconds", "100")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def keyed_server(cache_dir):
    """A server that wants an API key (sk-right or sk-other) and holds one live session at a time."""
    srv = Server("--max-sessions", "1", "--api-key", "sk-right", "--api-key", "sk-other")
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-unused", max_retries=0, timeout=300)
