"""Signal energy: is there anything to hear, and where is it quietest. numpy only."""

from __future__ import annotations

import numpy as np

from sasr.audio.constants import SAMPLE_RATE

SILENCE_RMS = 1e-3  # about -60 dBFS: a window quieter than this in every 30 ms frame is silent


def is_silent(audio: np.ndarray) -> bool:
    """True if no 30 ms frame of the audio rises above SILENCE_RMS."""
    frame = 480
    usable = len(audio) // frame * frame
    if usable == 0:
        return True
    rms = np.sqrt(np.mean(audio[:usable].reshape(-1, frame) ** 2, axis=1))
    return bool(rms.max() < SILENCE_RMS)


def quiet_point(audio: np.ndarray, lo: int, hi: int) -> int:
    """The start of the quietest 100 ms frame of audio[lo:hi] (hi if the span is too short)."""
    frame = SAMPLE_RATE // 10
    lo = max(0, lo)
    num = (hi - lo) // frame
    if num < 2:
        return hi
    energy = (audio[lo : lo + num * frame].reshape(num, frame) ** 2).sum(axis=1)
    return lo + int(np.argmin(energy[1:]) + 1) * frame  # never at lo itself: pieces stay long
