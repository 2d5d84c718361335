"""Voice activity: Silero VAD (v5/v6, 16 kHz) in plain torch, on the weights the `silero-vad` wheel ships.

The network reads 32 ms frames (512 samples, with the 64 samples before each as context) and keeps an
LSTM state from frame to frame; `VADStream` holds one live session's state, so the model itself is
shared. The weights are read from the package's TorchScript file; its output is tested equal to that
model's. The package module is never imported (it sets torch's thread count on import).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FRAME_SAMPLES = 512  # 32 ms at 16 kHz
CONTEXT_SAMPLES = 64


def weights_path() -> Path:
    spec = importlib.util.find_spec("silero_vad")  # finds the package without running its __init__
    if spec is None or spec.origin is None:
        raise RuntimeError("the silero-vad package is needed for voice activity detection: pip install silero-vad")
    return Path(spec.origin).parent / "data" / "silero_vad.jit"


# the TorchScript archive's parameter names (its 16 kHz model) -> this module's
_NAMES = {"stft.forward_basis_buffer": "stft_conv.weight", "decoder.decoder.2.weight": "final_conv.weight",
          "decoder.decoder.2.bias": "final_conv.bias",
          **{f"encoder.{i}.reparam_conv.{p}": f"conv{i + 1}.{p}" for i in range(4) for p in ("weight", "bias")},
          **{f"decoder.rnn.{p}": f"lstm_cell.{p}" for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}}


class SileroVAD(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)  # a learned STFT
        self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
        self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
        self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
        self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
        self.lstm_cell = nn.LSTMCell(128, 128)
        self.final_conv = nn.Conv1d(128, 1, 1)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [N, 576] (context + frame) -> [N, 128]: everything before the LSTM, for many frames at once."""
        x = F.pad(frames, (0, 64), mode="reflect")[:, None]  # [N, 1, 640]
        x = self.stft_conv(x)  # [N, 258, 4]
        x = (x[:, :129] ** 2 + x[:, 129:] ** 2).sqrt()  # magnitudes [N, 129, 4]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            x = F.relu(conv(x))
        return x.squeeze(-1)  # [N, 128]

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """LSTM output [N, 128] -> speech probability [N]."""
        return torch.sigmoid(self.final_conv(F.relu(h)[:, :, None]))[:, 0, 0]


@lru_cache(maxsize=1)
def load_vad() -> SileroVAD:
    archive = torch.jit.load(str(weights_path()), map_location="cpu").state_dict()
    model = SileroVAD()
    model.load_state_dict({_NAMES[k.removeprefix("_model.")]: v for k, v in archive.items()
                           if k.startswith("_model.")}, strict=True)
    return model.eval()


class VADStream:
    """One audio stream's VAD: feed it samples, get one speech probability per complete 32 ms frame."""

    def __init__(self, model: SileroVAD | None = None) -> None:
        self.model = model or load_vad()
        self.pending = np.zeros(0, np.float32)  # samples of an incomplete frame
        self.context = np.zeros(CONTEXT_SAMPLES, np.float32)
        self.state: tuple[torch.Tensor, torch.Tensor] | None = None  # LSTM (h, c), [1, 128] each

    @torch.inference_mode()
    def speech_probs(self, samples: np.ndarray) -> np.ndarray:
        """Probabilities [num_new_frames] of the frames these samples complete (16 kHz float32)."""
        audio = np.concatenate([self.pending, samples.astype(np.float32, copy=False)])
        num_frames = len(audio) // FRAME_SAMPLES
        self.pending = audio[num_frames * FRAME_SAMPLES :]
        if num_frames == 0:
            return np.zeros(0, np.float32)
        body = audio[: num_frames * FRAME_SAMPLES]
        with_context = np.concatenate([self.context, body])
        self.context = body[-CONTEXT_SAMPLES:].copy()
        # frame i: its 64 samples of context and its 512 samples, [N, 576]
        frames = np.lib.stride_tricks.sliding_window_view(with_context, CONTEXT_SAMPLES + FRAME_SAMPLES)
        x = self.model.features(torch.from_numpy(frames[::FRAME_SAMPLES].copy()))  # a writable copy
        outputs = []
        for i in range(num_frames):  # the LSTM is the only sequential part
            self.state = self.model.lstm_cell(x[i : i + 1], self.state)
            outputs.append(self.state[0])
        return self.model.head(torch.cat(outputs)).numpy()
