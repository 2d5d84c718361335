"""Decode uploaded audio of any format libsndfile reads into 16 kHz mono float32."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
import soxr

from sasr.audio.constants import SAMPLE_RATE


class AudioError(ValueError):
    """The bytes are not usable audio; the message is safe to show to the client."""


class AudioTooLongError(AudioError):
    """The audio is longer than the server accepts."""


def decode_audio(data: bytes, max_seconds: float | None = None) -> np.ndarray:
    """Mix down to mono and resample (band-limited, soxr) to 16 kHz float32 in [-1, 1]."""
    if not data:
        raise AudioError("the audio file is empty")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.samplerate <= 0:
                raise AudioError("the audio file has no sample rate")
            if max_seconds is not None and f.frames / f.samplerate > max_seconds:
                raise AudioTooLongError(
                    f"the audio is {f.frames / f.samplerate:.1f} s long; this server accepts at most {max_seconds:g} s"
                )
            audio = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        reason = getattr(exc, "error_string", None) or "unreadable data"
        raise AudioError(f"could not decode the file as audio: {reason.rstrip('.').lower()}") from None
    if audio.shape[0] == 0:
        raise AudioError("the audio file contains no samples")
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(np.clip(mono, -1.0, 1.0), dtype=np.float32)
