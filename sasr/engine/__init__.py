"""The engine contract the server codes against: requests in, transcriptions out. No torch here.

The server only sees `Engine`; how requests are batched and run (sasr.engine.core:
continuous batching on a worker thread, with a model family's runner and policies) stays behind it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from sasr.protocol import Segment, Word


class EngineBusy(Exception):
    """The engine's queue is full; the client should retry later."""

    def __init__(self, retry_after_s: int = 1) -> None:
        super().__init__("the server is at capacity; retry shortly")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class LiveOptions:
    """How a live session's words are committed, where its model's policy lets a session choose
    (`Engine.live_options` names the fields its policy takes; Whisper's takes both)."""

    commits: str = "early"  # early: settled words while the speaker talks; final: at their utterance's end only
    endpoint_ms: int | None = None  # the silence that ends an utterance (None: the policy's default)

    def chosen(self) -> set[str]:
        """The fields set to other than their defaults."""
        return {f.name for f in fields(self) if getattr(self, f.name) != f.default}


@dataclass
class TranscriptionRequest:
    audio: np.ndarray  # 16 kHz mono float32
    language: str | None = None  # ISO 639-1 code; None: the model's default
    prompt: str | None = None  # earlier text that conditions the decoding
    temperature: float = 0.0  # 0: greedy with fallback to sampling where a window looks unreliable
    word_timestamps: bool = False  # also time each word (engines with supports_word_timestamps only)
    words: list[Word] = field(default_factory=list)  # with word_timestamps: filled by the engine as it decodes


@dataclass
class TranscriptionResult:
    text: str
    language: str  # ISO 639-1 code
    duration_s: float
    segments: list[Segment] = field(default_factory=list)
    words: list[Word] | None = None  # with word_timestamps: every word of the segments, timed


class LivePolicy(Protocol):
    """A live session's model-specific half: its audio buffer, its next decode, the words each commits."""

    partial: str  # the not-yet-stable tail after the committed words
    language: str | None  # the session's language (None: detected); may be changed between decodes
    received_samples: int  # session audio received so far
    heard_samples: int  # session audio fully accounted for: decoded, or known to hold no speech
    unprocessed_s: float  # audio received that the policy has not looked at yet
    buffered_s: float  # audio held in the buffer
    files: bool  # the client streams a file (faster than speech): set by the session

    def add_audio(self, samples: np.ndarray, speech_probs: np.ndarray | None = None) -> None:
        """Append audio and the speech probability of each 32 ms frame it completes."""
        ...

    def next_job(self, final: bool = False, catch_up: bool = False) -> Any | None:
        """The next decode to run (one chunk more than the last), or None if there is nothing to hear."""
        ...

    def update(self, job: Any, result: Any, final: bool = False) -> list[Any]:
        """Digest a decode of `job`; return the words it commits, in order (live.commit.TimedWord)."""
        ...


class Engine(Protocol):
    """Implemented by WhisperEngine and Qwen3Engine; each brings its own live policy and the job
    type that policy asks the engine to run."""

    languages: frozenset[str]  # codes `language` may take
    served_name: str  # the model's default name in `model` (whisper-tiny.en, the checkpoint's directory name)
    stream_chunk_s: float  # default seconds of new audio per live decode
    metrics: Any  # sasr.metrics.Metrics: the engine's counters (live sessions count their decodes there)
    failure: BaseException | None  # set once the engine cannot continue (every request then fails at once)
    faults_to_inject: int  # test hook: this many coming steps fail (served as POST /_test/fault with SASR_TEST_FAULTS=1)

    live_options: frozenset[str]  # the LiveOptions fields its live policy takes (the server refuses the others)

    def stream_policy(self, language: str | None, chunk_s: float, prompt: str | None = None,
                      options: LiveOptions = LiveOptions()) -> LivePolicy:
        """A live session's policy: its buffer, its next decode, and the words each decode commits;
        `prompt` is text as if said before the session (vocabulary, style); `options`: how its words are
        committed (only those in live_options differ from the defaults)."""
        ...

    def new_vad(self) -> Any:
        """A voice-activity stream for one live session (its state; the model is shared)."""
        ...

    async def run_vad(self, stream: Any, samples: np.ndarray) -> np.ndarray:
        """Speech probabilities of the 32 ms frames these samples complete, computed off the event loop."""
        ...

    async def run_window(self, job: Any) -> Any:
        """Run one decode the policy asked for (a live session's chunk), batched with everything else."""
        ...

    async def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult: ...

    def transcribe_segments(self, request: TranscriptionRequest) -> AsyncIterator[Segment]:
        """Segments as each window is decoded (for streamed responses)."""
        ...

    def reserve(self) -> None:
        """Count one more request in, or raise EngineBusy (--max-queued-requests): the server reserves
        before it reads an upload, so a burst is refused before it is buffered or decoded."""
        ...

    def release(self) -> None:
        """Give a reserved place back."""
        ...

    def render_metrics(self) -> str:
        """The engine's own metrics in Prometheus text format."""
        ...

    def close(self) -> None: ...
