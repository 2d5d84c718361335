"""Live streaming policy: which audio to re-decode, and which words are stable enough to send.

Every chunk the session re-decodes its buffer (the audio since the last trim, at most 30 s): the
committed text before the buffer is the prompt, the committed tokens inside it are forced (prefilled
in one pass, not decoded again), and of the words decoded after them only the prefix two consecutive
hypotheses agree on is committed (LocalAgreement-2). Once the buffer is longer than TRIM_S it is cut
at the end of its last committed segment, so the cost per chunk does not grow with the session.
No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sasr.audio.constants import (
    FRAMES_PER_S,
    HOP_SAMPLES,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    WINDOW_SAMPLES,
)
from sasr.audio.energy import is_silent
from sasr.live.commit import LiveBuffer, LocalAgreement, split_words
from sasr.models.whisper.decode import (
    COMPRESSION_RATIO_MAX,
    WindowJob,
    WindowResult,
    compression_ratio,
    is_no_speech,
    prefix_for,
)
from sasr.models.whisper.vocab import TIMESTAMP_S, WhisperVocab

TRIM_S = 6.0  # beyond this the buffer is cut at a committed segment boundary
FORCE_S = 24.0  # beyond this everything decoded is committed and the buffer cut, whatever agrees
# Encode the buffer plus 5 s of silence (rounded up to whole seconds), not a padded 30 s: far cheaper,
# and on tiny.en as accurate as 30 s windows were in streaming (WER measured with 1, 3, 5, 10 s of pad:
# 0.271, 0.263, 0.250, 0.250 on a 90 s file whose one-shot WER is 0.217).
PAD_FRAMES = 5 * FRAMES_PER_S
PROMPT_TOKENS = 100  # committed tokens before the buffer passed as the prompt


def token_cut(vocab: WhisperVocab, tokens: list[int], num_words: int) -> int:
    """Number of leading tokens that spell the first num_words words (and any timestamps after them)."""
    if num_words == 0:
        return 0
    for i in range(len(tokens)):
        if len(split_words(vocab.decode(tokens[: i + 1]))) > num_words:
            return i  # token i starts the next word
    return len(tokens)


def last_segment_end(tokens: list[int], begin: int) -> int:
    """Index just past the last closed segment (a closing timestamp followed by an opening one), or 0."""
    for i in range(len(tokens) - 2, -1, -1):
        if tokens[i] >= begin and tokens[i + 1] >= begin and tokens[i] > begin:
            return i + 1
    return 0


@dataclass
class StreamingPolicy(LiveBuffer):
    vocab: WhisperVocab
    max_len: int
    language: str | None = None
    chunk_samples: int = SAMPLE_RATE  # each decode hears exactly one chunk more than the last
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # audio since buffer_start
    buffer_start: int = 0  # samples of the session before the buffer
    context: list[int] = field(default_factory=list)  # committed tokens before the buffer, timestamps included
    committed: list[int] = field(default_factory=list)  # committed tokens of the buffer, timestamps included
    processed: int = 0  # samples of the buffer covered by the last decode
    agreement: LocalAgreement = field(default_factory=LocalAgreement)

    @property
    def partial(self) -> str:
        return " ".join(self.agreement.previous)

    def next_job(self, final: bool = False, catch_up: bool = False) -> WindowJob | None:
        """The next decode of the buffer, or None if there is nothing to hear.

        It covers one chunk more than the last one (all that is left, up to 30 s, when final), so what
        a session commits depends on its audio alone, never on how busy the server was; a live session
        that has fallen behind may `catch_up`: skip to its last whole chunk. The committed tokens are
        forced (prefilled in one pass): only the words after them are decoded.
        """
        num_chunks = max(1, (len(self.buffer) - self.processed) // self.chunk_samples) if catch_up else 1
        end = len(self.buffer) if final else self.processed + num_chunks * self.chunk_samples
        window = self.buffer[: min(end, WINDOW_SAMPLES)]
        self.processed = len(window)
        if is_silent(window):
            self._drop_silence()
            return None
        # timestamps stay in the prompt, as in Whisper's own long-form decoding: a prompt of plain text
        # was seen to make the model drop timestamps, and with them every place to cut the buffer
        prefix, sot_index = prefix_for(self.vocab, self.context[-PROMPT_TOKENS:], self.language, self.max_len)
        frames = math.ceil((len(window) // HOP_SAMPLES + PAD_FRAMES) / FRAMES_PER_S) * FRAMES_PER_S
        room = self.max_len - len(prefix) - len(self.committed) - 1
        return WindowJob(
            audio=window, prefix=prefix, sot_index=sot_index, temperature=0.0, seed=0,
            max_new_tokens=max(1, min(self.max_len // 2, room)), num_frames=min(frames, WINDOW_FRAMES),
            forced=list(self.committed),
        )

    def update(self, job: WindowJob, result: WindowResult, final: bool = False) -> list[str]:
        """Digest the decode of `job`; return the words committed by it, in order."""
        new = result.tokens[len(job.forced) :]
        unreliable = is_no_speech(result) or compression_ratio(self.vocab.decode(result.tokens)) > COMPRESSION_RATIO_MAX
        fresh = [] if unreliable else split_words(self.vocab.decode(new))
        force = final or len(job.audio) >= FORCE_S * SAMPLE_RATE
        if force:
            words = fresh
            self.agreement.reset()
        else:
            words = self.agreement.update(fresh)
        self.committed = list(job.forced) + new[: token_cut(self.vocab, new, len(words))]
        if force or self.buffered_s >= TRIM_S:
            self._trim(len(job.audio), everything=final)
        return words

    def _trim(self, processed: int, everything: bool) -> None:
        """Cut the buffer at the end of its last committed segment (or all it decoded, when told to)."""
        begin = self.vocab.timestamp_begin
        cut = 0 if everything else last_segment_end(self.committed, begin)
        if cut:
            # cut where the next segment opens, so the forced rest starts at <|0.00|> as Whisper's own
            # windows do (rest starting at a later time was seen to stop the model's timestamps)
            end_step = self.committed[cut] - begin
            cut_samples = round(end_step * TIMESTAMP_S * SAMPLE_RATE)
            rest = [t - end_step if t >= begin else t for t in self.committed[cut:]]  # re-based to the cut
        elif everything or len(self.buffer) >= FORCE_S * SAMPLE_RATE:
            cut, cut_samples, rest = len(self.committed), processed, []
        else:
            return
        self.context += self.committed[:cut]
        self.committed = rest
        self._cut(cut_samples)

    def _drop_silence(self) -> None:
        """A silent buffer holds nothing to wait for: keep only its last second, for the next word's onset."""
        keep = min(len(self.buffer), SAMPLE_RATE)
        cut = len(self.buffer) - keep
        if cut > 0 and not self.committed and not self.agreement.previous:
            self._cut(cut)
