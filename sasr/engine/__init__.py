"""The engine contract the server codes against: requests in, transcriptions out. No torch here.

The server only sees `Engine`; how requests are batched and run (sasr.engine.engine.BatchEngine:
continuous batching on a worker thread) stays behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sasr.protocol import Segment

if TYPE_CHECKING:
    from sasr.decoding.streaming import StreamingPolicy
    from sasr.decoding.transcribe import WindowJob, WindowResult


class EngineBusy(Exception):
    """The engine's queue is full; the client should retry later."""

    def __init__(self, retry_after_s: int = 1) -> None:
        super().__init__("the server is at capacity; retry shortly")
        self.retry_after_s = retry_after_s


@dataclass
class TranscriptionRequest:
    audio: np.ndarray  # 16 kHz mono float32
    language: str | None = None  # ISO 639-1 code; None: the model's default
    prompt: str | None = None  # earlier text that conditions the decoding
    temperature: float = 0.0  # 0: greedy with fallback to sampling where a window looks unreliable


@dataclass
class TranscriptionResult:
    text: str
    language: str  # ISO 639-1 code
    duration_s: float
    segments: list[Segment] = field(default_factory=list)


class Engine(Protocol):
    """Implemented by BatchEngine (Whisper) and Qwen3Engine; each brings its own streaming policy
    and the job type that policy asks the engine to run."""

    languages: frozenset[str]  # codes `language` may take
    served_name: str  # the model's default name in `model` (whisper-tiny.en, the checkpoint's directory name)
    stream_chunk_s: float  # default seconds of new audio per live decode

    def stream_policy(self, language: str | None, chunk_s: float) -> "StreamingPolicy":
        """A live session's policy: its buffer, its next decode, and the words each decode commits."""
        ...

    async def run_window(self, job: "WindowJob") -> "WindowResult":
        """Run one decode the policy asked for (a live session's chunk), batched with everything else."""
        ...

    async def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult: ...

    def transcribe_segments(self, request: TranscriptionRequest) -> AsyncIterator[Segment]:
        """Segments as each window is decoded (for streamed responses)."""
        ...

    def check_capacity(self) -> None:
        """Raise EngineBusy if no further request can be admitted now."""
        ...

    def render_metrics(self) -> str:
        """The engine's own metrics in Prometheus text format."""
        ...

    def close(self) -> None: ...
