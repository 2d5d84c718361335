"""Live audio frames (PCM16 or float32 at 8-48 kHz, G.711 at 8 kHz, any frame size) to 16 kHz float32."""

from __future__ import annotations

import numpy as np
import soxr

from sasr.audio.constants import SAMPLE_RATE
from sasr.protocol import AUDIO_FORMATS

_DTYPES = {"pcm16": np.dtype("<i2"), "f32": np.dtype("<f4"), "ulaw": np.dtype("u1"), "alaw": np.dtype("u1")}


def _ulaw_table() -> np.ndarray:
    """PCM16 value of each G.711 mu-law byte (ITU-T G.711: bits inverted, bias 0x84)."""
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = ((((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)) - 0x84
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


def _alaw_table() -> np.ndarray:
    """PCM16 value of each G.711 A-law byte (ITU-T G.711: even bits inverted; sign bit set = positive)."""
    a = np.arange(256, dtype=np.int32) ^ 0x55
    mantissa, exponent = (a & 0x0F) << 4, (a >> 4) & 0x07
    magnitude = np.where(exponent == 0, mantissa + 8, (mantissa + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude).astype(np.int16)


_G711 = {"ulaw": _ulaw_table(), "alaw": _alaw_table()}


class FrameDecoder:
    """Stateful: a sample split across two frames is joined, and resampling runs across frames."""

    def __init__(self, audio_format: str) -> None:
        if audio_format not in AUDIO_FORMATS:
            raise ValueError(f"audio_format {audio_format!r} is not one of {', '.join(AUDIO_FORMATS)}")
        encoding, rate, _ = audio_format.split("_")
        self.dtype, self.table = _DTYPES[encoding], _G711.get(encoding)
        self.rate = int(rate.removesuffix("k")) * 1000
        self.pending = b""  # bytes of an incomplete sample
        self.resampler = None if self.rate == SAMPLE_RATE else soxr.ResampleStream(self.rate, SAMPLE_RATE, 1, dtype="float32")

    def decode(self, data: bytes, last: bool = False) -> np.ndarray:
        data = self.pending + data
        usable = len(data) - len(data) % self.dtype.itemsize
        self.pending = data[usable:]
        samples = np.frombuffer(data[:usable], dtype=self.dtype)
        if self.table is not None:
            samples = self.table[samples]
        audio = samples.astype(np.float32) if samples.dtype.kind == "f" else samples.astype(np.float32) / 32768.0
        audio = np.nan_to_num(np.clip(audio, -1.0, 1.0))
        if self.resampler is not None:
            audio = self.resampler.resample_chunk(audio, last=last)
        return audio

    def flush(self) -> np.ndarray:
        return self.decode(b"", last=True) if self.resampler is not None else np.zeros(0, np.float32)
