"""Model-neutral pieces of the live policies: the audio a live session holds, and commit rules.

No torch here.
"""

from __future__ import annotations

import re

import numpy as np

from sasr.audio.constants import SAMPLE_RATE


def word_key(word: str) -> str:
    """A word as compared between hypotheses: lower case, no punctuation."""
    return re.sub(r"[^\w']", "", word.lower())


def split_words(text: str) -> list[str]:
    return text.split()


class LocalAgreement:
    """Commit the longest prefix two consecutive hypotheses agree on (LocalAgreement-2)."""

    def __init__(self) -> None:
        self.previous: list[str] = []  # the last hypothesis' uncommitted words

    def update(self, words: list[str]) -> list[str]:
        agreed = 0
        for old, new in zip(self.previous, words):
            if word_key(old) != word_key(new):
                break
            agreed += 1
        self.previous = words[agreed:]
        return words[:agreed]

    def reset(self) -> None:
        self.previous = []


class LiveBuffer:
    """The audio a live policy still holds (`buffer`, after `buffer_start` samples of the session) and
    how much of it the last decode heard (`processed`); the policy dataclasses declare the fields."""

    buffer: np.ndarray
    buffer_start: int
    processed: int

    @property
    def received_samples(self) -> int:
        return self.buffer_start + len(self.buffer)

    @property
    def unprocessed_s(self) -> float:
        return (len(self.buffer) - self.processed) / SAMPLE_RATE

    @property
    def buffered_s(self) -> float:
        return len(self.buffer) / SAMPLE_RATE

    def add_audio(self, samples: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, samples.astype(np.float32, copy=False)])

    def _cut(self, num_samples: int) -> None:
        """Forget the first num_samples of the buffer."""
        self.buffer = self.buffer[num_samples:]
        self.buffer_start += num_samples
        self.processed = max(0, self.processed - num_samples)
