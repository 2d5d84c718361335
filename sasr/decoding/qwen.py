"""Qwen3-ASR decoding policy: prompts over 8 s audio windows, files piece by piece, and live streaming.

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

import hashlib
from dataclasses import dataclass, field

import numpy as np

from sasr.audio.constants import SAMPLE_RATE
from sasr.decoding.streaming import LiveBuffer
from sasr.decoding.transcribe import is_silent
from sasr.engine.batch import AudioWindow
from sasr.models.qwen3_vocab import MIN_SAMPLES, WINDOW_SAMPLES_QWEN, Prompt, Qwen3Vocab, num_audio_tokens

UNFIXED_CHUNKS = 2
ROLLBACK_TOKENS = 5
ROLLBACK_WORDS = 5
MAX_CONTEXT_S = 32.0  # audio of one live segment (four encoder windows)
CUT_SEARCH_S = 3.0  # a segment ends at the quietest 100 ms of its last few seconds
FILE_PIECE_S = 30.0  # uploads are decoded in pieces of at most this much audio
CONTEXT_CHARS = 200  # committed text carried into the next segment's (or piece's) system prompt
AUDIO_KEY_BIT = 1 << 63  # prefix-cache keys of audio placeholders have it; token ids do not


@dataclass
class Qwen3Job:
    """One decode: a prompt over some audio, its forced text, and how much to sample."""

    prompt: Prompt
    windows: list[AudioWindow]
    hash_keys: list[int]  # per prompt token: the token id, or its audio's digest and index
    max_new_tokens: int
    header: bool  # the prompt already holds `language X<asr_text>`
    text_prefix: list[int] = field(default_factory=list)  # forced text tokens at the end of the prompt
    temperature: float = 0.0
    seed: int = 0
    end: int = 0  # samples of the segment it covers
    roll: bool = False  # the last decode of its segment: commit everything


@dataclass
class Qwen3Result:
    tokens: list[int]  # sampled, without the end of text
    num_prompt_tokens: int
    num_cached_tokens: int  # prompt tokens found in the prefix cache


def split_windows(audio: np.ndarray, first_token: int) -> list[AudioWindow]:
    """The audio as 8 s encoder windows, keyed by a digest of their samples."""
    if len(audio) < MIN_SAMPLES:
        audio = np.pad(audio, (0, MIN_SAMPLES - len(audio)))
    windows, token = [], first_token
    for start in range(0, len(audio), WINDOW_SAMPLES_QWEN):
        samples = np.ascontiguousarray(audio[start : start + WINDOW_SAMPLES_QWEN], dtype=np.float32)
        num_tokens = num_audio_tokens(len(samples))
        if num_tokens == 0:
            break
        key = int.from_bytes(hashlib.blake2b(samples.tobytes(), digest_size=8).digest(), "little")
        windows.append(AudioWindow(key, samples, token, num_tokens, len(samples) == WINDOW_SAMPLES_QWEN))
        token += num_tokens
    return windows


def hash_keys(prompt: Prompt, windows: list[AudioWindow]) -> list[int]:
    keys = list(prompt.ids)
    for w in windows:
        for i in range(w.num_tokens):
            keys[w.first_token + i] = AUDIO_KEY_BIT | ((w.key + i) % AUDIO_KEY_BIT)
    return keys


def make_job(vocab: Qwen3Vocab, audio: np.ndarray, language: str | None, context: str = "",
             text_prefix: list[int] = (), max_new_tokens: int | None = None) -> Qwen3Job:
    windows = split_windows(audio, first_token=0)
    header = vocab.header(language)
    prompt = vocab.prompt(sum(w.num_tokens for w in windows), context, header, list(text_prefix) if header else [])
    for w in windows:
        w.first_token += prompt.audio_at  # placed after the system turn
    if max_new_tokens is None:
        max_new_tokens = 16 + round(8 * len(audio) / SAMPLE_RATE)  # ample for speech, bounded for noise
    return Qwen3Job(prompt, windows, hash_keys(prompt, windows), max_new_tokens, bool(header),
                    list(text_prefix) if header else [])


def read_output(vocab: Qwen3Vocab, job: Qwen3Job, tokens: list[int]) -> tuple[str | None, list[int]]:
    """(detected language, the text tokens of the whole hypothesis: forced prefix included)."""
    if job.header:
        return None, job.text_prefix + tokens
    language, text = vocab.parse(tokens)
    return language, (tokens if text is None else text)  # no header at all: all of it is text


def quiet_point(audio: np.ndarray, lo: int, hi: int) -> int:
    """The start of the quietest 100 ms frame of audio[lo:hi] (hi if the span is too short)."""
    frame = SAMPLE_RATE // 10
    lo = max(0, lo)
    num = (hi - lo) // frame
    if num < 2:
        return hi
    energy = (audio[lo : lo + num * frame].reshape(num, frame) ** 2).sum(axis=1)
    return lo + int(np.argmin(energy[1:]) + 1) * frame  # never at lo itself: pieces stay long


def file_pieces(audio: np.ndarray, piece_s: float = FILE_PIECE_S) -> list[tuple[int, int]]:
    """[start, end) sample ranges of at most piece_s, cut at quiet points."""
    piece, search = round(piece_s * SAMPLE_RATE), round(CUT_SEARCH_S * SAMPLE_RATE)
    pieces, start = [], 0
    while start < len(audio):
        end = len(audio) if len(audio) - start <= piece else quiet_point(audio, start + piece - search, start + piece)
        pieces.append((start, end))
        start = end
    return pieces


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

    @property
    def partial(self) -> str:
        return self.vocab.text(self.hypothesis[len(self.committed) :]).strip()

    def next_job(self, final: bool = False, catch_up: bool = False) -> Qwen3Job | None:
        """The next decode of the segment (one chunk more than the last), or None if it is silent."""
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

    def update(self, job: Qwen3Job, result: Qwen3Result, final: bool = False) -> list[str]:
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
        return words

    def _end_segment(self, end: int) -> None:
        self.context = (self.context + self.vocab.text(self.committed))[-CONTEXT_CHARS:]
        self._cut(end)
        self.num_decodes, self.hypothesis, self.committed = 0, [], []

    def _drop_silence(self) -> None:
        """A silent segment holds nothing to wait for: keep only its last second, for the next onset."""
        cut = len(self.buffer) - min(len(self.buffer), SAMPLE_RATE)
        if cut > 0 and not self.hypothesis:
            self._cut(cut)
