"""Qwen3-ASR live streaming policy.

Live streaming follows the reference design and the official SDK: 2 s chunks; each decode re-reads
the segment's audio; the first UNFIXED_CHUNKS decodes get no text prefix, later ones the previous
hypothesis less its last ROLLBACK_TOKENS tokens, and the hypothesis is that prefix plus what the
model continues with (the reference wrongly took the continuation alone). Words are sent once they
are ROLLBACK_WORDS words from the end of the hypothesis (and, before any prefix is forced, agreed by
two decodes). A segment ends at a quiet point once it holds MAX_CONTEXT_S of audio; the next one
starts there with the last committed text as system-prompt context, so a decode's cost is bounded.
Within a segment, consecutive prompts share the system turn and every complete 8 s window, which
the engine's prefix cache finds instead of recomputing. No torch here.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from sasr.audio.constants import SAMPLE_RATE
from sasr.audio.energy import is_silent, quiet_point
from sasr.live.commit import LiveBuffer, TimedWord
from sasr.models.qwen3_asr.decode import (
    CONTEXT_CHARS,
    CUT_SEARCH_S,
    Qwen3Job,
    Qwen3Result,
    make_job,
    read_output,
)
from sasr.models.qwen3_asr.vocab import Qwen3Vocab

UNFIXED_CHUNKS = 2
ROLLBACK_TOKENS = 5
ROLLBACK_WORDS = 5
MAX_CONTEXT_S = 32.0  # audio of one live segment (four encoder windows)


def word_starts(vocab: Qwen3Vocab, tokens: list[int]) -> list[int]:
    """Indices of the tokens that begin a word (a space before it, or a CJK character)."""
    starts = []
    for i, token in enumerate(tokens):
        text = vocab.decode([token])
        if i == 0 or text[:1].isspace() or (text and "\u2e80" <= text[0] <= "\u9fff"):
            starts.append(i)
    return starts


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Qwen3StreamingPolicy(LiveBuffer):
    vocab: Qwen3Vocab
    language: str | None = None  # given by the client, or detected by the first decode that says
    chunk_samples: int = 2 * SAMPLE_RATE
    max_context_samples: int = round(MAX_CONTEXT_S * SAMPLE_RATE)
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # the segment's audio
    buffer_start: int = 0  # session samples before the segment
    processed: int = 0  # samples of the segment covered by the last decode
    num_decodes: int = 0  # decodes of this segment so far
    hypothesis: list[int] = field(default_factory=list)  # text tokens of the segment's last decode
    committed: list[int] = field(default_factory=list)  # text tokens of the segment already sent
    context: str = ""  # committed text of earlier segments
    speech_probs: deque = field(default_factory=deque)  # voice activity: unused here (energy gate)
    files: bool = False

    @property
    def heard_samples(self) -> int:
        return self.buffer_start + self.processed

    @property
    def partial(self) -> str:
        return self.vocab.text(self.hypothesis[len(self.committed) :]).strip()

    def next_job(self, final: bool = False, catch_up: bool = False) -> Qwen3Job | None:
        """The next decode of the segment (one chunk more than the last), or None if it is silent or a
        chunk has not arrived yet."""
        self.speech_probs.clear()
        if not final and len(self.buffer) - self.processed < self.chunk_samples:
            return None
        if final and len(self.buffer) <= self.processed:
            return None
        num_chunks = max(1, (len(self.buffer) - self.processed) // self.chunk_samples) if catch_up else 1
        end = len(self.buffer) if final else min(len(self.buffer), self.processed + num_chunks * self.chunk_samples)
        roll = not final and end >= self.max_context_samples
        if roll:
            end = quiet_point(self.buffer, self.max_context_samples - round(CUT_SEARCH_S * SAMPLE_RATE), end)
        self.processed = end
        if is_silent(self.buffer[:end]):
            self._drop_silence()
            return None
        prefix = self.committed
        if self.num_decodes >= UNFIXED_CHUNKS:
            rolled = self.hypothesis[:-ROLLBACK_TOKENS]
            if len(rolled) > len(prefix) and rolled[: len(prefix)] == prefix:
                prefix = rolled
        job = make_job(self.vocab, self.buffer[:end], self.language, self.context[-CONTEXT_CHARS:], prefix)
        job.end, job.roll = end, roll
        return job

    def update(self, job: Qwen3Job, result: Qwen3Result, final: bool = False) -> list[TimedWord]:
        """Digest a decode of `job`; return the words it commits, in order."""
        language, hypothesis = read_output(self.vocab, job, result.tokens)
        if self.language is None and language is not None:
            self.language = language  # later prompts carry the header
        everything = final or job.roll
        if everything:
            stable = len(hypothesis)
        else:
            starts = word_starts(self.vocab, hypothesis)
            stable = starts[-ROLLBACK_WORDS] if len(starts) >= ROLLBACK_WORDS else 0
            if not job.text_prefix:  # nothing forced yet: only what two decodes agree on
                stable = min(stable, common_prefix(self.hypothesis, hypothesis))
        words = []
        if stable > len(self.committed) and hypothesis[: len(self.committed)] == self.committed:
            words = self.vocab.text(hypothesis[len(self.committed) : stable]).split()
            self.committed = hypothesis[:stable]
        elif everything:  # an unforced last decode that disagrees with what was sent: send its rest
            sent = len(self.vocab.text(self.committed).split())
            words = self.vocab.text(hypothesis).split()[sent:]
            self.committed = hypothesis
        self.hypothesis = hypothesis
        self.num_decodes += 1
        if everything:
            self._end_segment(job.end)
        return [TimedWord(w) for w in words]

    def _end_segment(self, end: int) -> None:
        self.context = (self.context + self.vocab.text(self.committed))[-CONTEXT_CHARS:]
        self._cut(end)
        self.num_decodes, self.hypothesis, self.committed = 0, [], []

    def _drop_silence(self) -> None:
        """A silent segment holds nothing to wait for: keep only its last second, for the next onset."""
        cut = len(self.buffer) - min(len(self.buffer), SAMPLE_RATE)
        if cut > 0 and not self.hypothesis:
            self._cut(cut)
