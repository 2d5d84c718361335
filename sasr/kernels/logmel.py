"""Batched log-mel front end: one call for a batch of 30 s windows, on whatever device they are.

`log_mel_batch` computes the STFT of all windows at once and normalises each window by its own
maximum. `log_mel_batch_reference` is the plain per-window loop over sasr's single-window front end
(itself tested against transformers' WhisperFeatureExtractor); tests hold the two together.
"""

from __future__ import annotations

import torch

from sasr.audio.constants import HOP_SAMPLES, N_FFT
from sasr.audio.features import log_mel, mel_filters


def log_mel_batch_reference(audio: torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """[B, num_samples] -> [B, num_mel_bins, num_samples // 160], one window at a time."""
    return torch.stack([log_mel(row, num_mel_bins) for row in audio])


def log_mel_batch(audio: torch.Tensor, num_mel_bins: int = 80) -> torch.Tensor:
    """[B, num_samples] -> [B, num_mel_bins, num_samples // 160], all windows in one pass."""
    window = torch.hann_window(N_FFT, device=audio.device)
    stft = torch.stft(audio.float(), N_FFT, HOP_SAMPLES, window=window, return_complex=True)  # [B, 201, F+1]
    power = stft[..., :-1].abs().square_()  # [B, 201, F]
    mel = mel_filters(num_mel_bins, str(audio.device)) @ power  # [B, n_mels, F]
    log_spec = mel.clamp_(min=1e-10).log10_()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0  # [B, 1, 1]
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0
