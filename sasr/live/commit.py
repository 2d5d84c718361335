"""Model-neutral pieces of the live policies: the audio a live session holds, where its utterances
begin and end (from voice activity), and the commit rules. No torch here.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

import numpy as np

from sasr.audio.constants import SAMPLE_RATE

VAD_FRAME_SAMPLES = 512  # one speech probability per 32 ms (Silero VAD at 16 kHz)
SPEECH_ON = 0.5  # a frame this likely to be speech starts an utterance
SPEECH_OFF = 0.35  # below this, a frame counts as silence (hysteresis)
MIN_SPEECH_S = 0.1  # shorter bursts (clicks, a cough) are not utterances
CONFIRM_WORDS = 2  # a settled word two hypotheses word differently counts as agreed if this many after it agree


@dataclass
class TimedWord:
    """A committed word and where it was heard on the session's audio clock (None: not known)."""

    text: str
    start_s: float | None = None
    end_s: float | None = None
    logprobs: list[tuple[str, float]] | None = None  # its tokens and their log probabilities, where known


def word_key(word: str) -> str:
    """A word as compared between hypotheses: lower case, no punctuation."""
    return re.sub(r"[^\w']", "", word.lower())


def agreed_prefix(previous: list[str], current: list[str], settled: int = 0, confirm: int = CONFIRM_WORDS) -> int:
    """How many leading words two hypotheses share (LocalAgreement). Of the first `settled` words, one
    the two word differently counts as shared where the `confirm` words after it agree: the current
    hypothesis, which heard more, words it."""
    agreed = 0
    for i, (old, new) in enumerate(zip(previous, current)):
        if word_key(old) != word_key(new):
            after = list(zip(previous[i + 1 : i + 1 + confirm], current[i + 1 : i + 1 + confirm]))
            if i >= settled or len(after) < confirm or any(word_key(a) != word_key(b) for a, b in after):
                break
        agreed += 1
    return agreed


class SpeechTracker:
    """Utterances in a stream of per-frame speech probabilities, frame by frame.

    An utterance starts at a frame at least `on` likely to be speech and ends once frames below
    `off` have lasted endpoint_s; its end is just after its last voiced frame. Positions are
    session samples. Fed one frame at a time by the policy, so what it says at a frame depends on the
    audio up to that frame alone.
    """

    def __init__(self, endpoint_s: float, on: float = SPEECH_ON, off: float = SPEECH_OFF) -> None:
        self.endpoint_samples = round(endpoint_s * SAMPLE_RATE)
        self.on, self.off = on, off
        self.in_speech = False
        self.start = 0  # session sample where the current utterance began
        self.last_voiced = 0  # session sample just after its last voiced frame
        self.num_frames = 0  # frames seen

    @property
    def position(self) -> int:
        return self.num_frames * VAD_FRAME_SAMPLES

    def step(self, prob: float) -> tuple[int, int] | None:
        """Take one frame; return (start, end) of the utterance it ends, if it ends one."""
        self.num_frames += 1
        if not self.in_speech:
            if prob >= self.on:
                self.in_speech, self.start, self.last_voiced = True, self.position - VAD_FRAME_SAMPLES, self.position
            return None
        if prob >= self.off:
            self.last_voiced = self.position
        elif self.position - self.last_voiced >= self.endpoint_samples:
            return self.close()
        return None

    def close(self) -> tuple[int, int] | None:
        """End the current utterance now (the stream ended); None if it was too short to count."""
        self.in_speech = False
        if self.last_voiced - self.start < MIN_SPEECH_S * SAMPLE_RATE:
            return None
        return self.start, self.last_voiced


class LiveBuffer:
    """The audio a live policy still holds (`buffer`, after `buffer_start` samples of the session), how
    much of it the last decode heard (`processed`), and the speech probability of every 32 ms frame
    received (`speech_probs`, not yet consumed by the policy); the policy dataclasses declare the fields."""

    buffer: np.ndarray
    buffer_start: int
    processed: int
    speech_probs: deque

    @property
    def received_samples(self) -> int:
        return self.buffer_start + len(self.buffer)

    @property
    def unprocessed_s(self) -> float:
        return (len(self.buffer) - self.processed) / SAMPLE_RATE

    @property
    def buffered_s(self) -> float:
        return len(self.buffer) / SAMPLE_RATE

    def add_audio(self, samples: np.ndarray, speech_probs: np.ndarray | None = None) -> None:
        """Append audio and the speech probabilities of the 32 ms frames it completes."""
        self.buffer = np.concatenate([self.buffer, samples.astype(np.float32, copy=False)])
        if speech_probs is not None:
            self.speech_probs.extend(speech_probs.tolist())

    def _cut(self, num_samples: int) -> None:
        """Forget the first num_samples of the buffer."""
        self.buffer = self.buffer[num_samples:]
        self.buffer_start += num_samples
        self.processed = max(0, self.processed - num_samples)
