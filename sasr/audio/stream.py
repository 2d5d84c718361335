"""Live audio frames (PCM16 or float32 at 8-48 kHz, any frame size) to 16 kHz float32."""

from __future__ import annotations

import numpy as np
import soxr

from sasr.audio.constants import SAMPLE_RATE
from sasr.protocol import AUDIO_FORMATS

_DTYPES = {"pcm16": np.dtype("<i2"), "f32": np.dtype("<f4")}


class FrameDecoder:
    """Stateful: a sample split across two frames is joined, and resampling runs across frames."""

    def __init__(self, audio_format: str) -> None:
        if audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format {audio_format!r} is not one of {', '.join(AUDIO_FORMATS)}")
        encoding, rate, _ = audio_format.split("_")
        self.dtype = _DTYPES[encoding]
        self.rate = int(rate.removesuffix("k")) * 1000
        self.pending = b""  # bytes of an incomplete sample
        self.resampler = None if self.rate == SAMPLE_RATE else soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")

    def decode(self, data: bytes, last: bool = False) -> np.ndarray:
        data = self.pending + data
        usable = len(data) - len(data) % self.dtype.itemsize
        self.pending = data[usable:]
        samples = np.frombuffer(data[:usable], dtype=self.dtype)
        audio = samples.astype(np.float32) / 32768.0 if self.dtype.kind == "i" else samples.astype(np.float32)
        audio = np.nan_to_num(np.clip(audio, -1.0, 1.0))
        if self.resampler is not None:
            audio = self.resampler.resample_chunk(audio, last=last)
        return audio

    def flush(self) -> np.ndarray:
        return self.decode(b"", last=True) if self.resampler is not None else np.zeros(0, np.float32)
