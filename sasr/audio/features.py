"""Whisper's log-mel front end in torch (the plain reference; kernels/ may hold faster ones)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from sasr.audio.constants import HOP_SAMPLES, N_FFT, SAMPLE_RATE


@lru_cache(maxsize=4)
def mel_filters(num_mel_bins: int, device: str) -> torch.Tensor:
    """Slaney-normalised mel filter bank, [num_mel_bins, N_FFT // 2 + 1], as Whisper was trained on."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=num_mel_bins,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(bank.T.astype(np.float32)).to(device)


def log_mel(audio: torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """Log-mel spectrogram of 16 kHz mono audio [num_samples] -> [num_mel_bins, num_samples // 160].

    Normalised as Whisper does: log10, floor at (max - 8), then (x + 4) / 4, with the max taken over
    the whole input, so callers pass the whole recording (plus any padding) at once.
    """
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio.float(), N_FFT, HOP_SAMPLES, window=window, return_complex=True)
    power = stft[..., :-1].abs() ** 2  # [201, frames]; the last frame is dropped, as Whisper does
    mel = mel_filters(num_mel_bins, str(audio.device)) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0
