"""An engine that runs one request at a time on a worker thread, off the event loop."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from sasr.audio.features import SAMPLE_RATE
from sasr.decoding.transcribe import Options, transcribe
from sasr.engine import EngineBusy, TranscriptionRequest, TranscriptionResult
from sasr.models.loader import LoadedWhisper
from sasr.models.whisper import WhisperRunner


class LocalEngine:
    """FIFO over a single worker thread; at most max_queued requests wait or run at once."""

    def __init__(self, loaded: LoadedWhisper, max_queued: int = 64) -> None:
        self.vocab = loaded.vocab
        self.runner = WhisperRunner(loaded.model)
        self.languages = frozenset(self.vocab.language_ids) or frozenset({"en"})
        self.max_queued = max_queued
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sasr-engine")
        self.lock = threading.Lock()
        self.num_queued = 0  # requests admitted and not yet finished

    def _run(self, request: TranscriptionRequest) -> TranscriptionResult:
        options = Options(language=request.language, prompt=request.prompt, temperature=request.temperature)
        segments = transcribe(self.runner, self.vocab, request.audio, options)
        return TranscriptionResult(
            text="".join(s.text for s in segments).strip(),
            language=request.language or "en",
            duration_s=len(request.audio) / SAMPLE_RATE,
            segments=segments,
        )

    async def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        with self.lock:
            if self.num_queued >= self.max_queued:
                raise EngineBusy()
            self.num_queued += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._run, request)
        finally:
            with self.lock:
                self.num_queued -= 1

    def stats(self) -> dict[str, float]:
        return {"queued_requests": self.num_queued}

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


def build_engine(model: str | None, device: str, dtype: str, max_queued: int) -> LocalEngine:
    from sasr.models.loader import load_whisper

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[
        dtype if dtype != "auto" else ("float16" if device.startswith("cuda") else "float32")
    ]
    return LocalEngine(load_whisper(model, device, torch_dtype), max_queued=max_queued)
