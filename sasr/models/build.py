"""Build the engine for --model: the family is told by the checkpoint (Whisper by default).

The one place that knows every model family; the engine core below it knows none.
"""

from __future__ import annotations

import torch

from sasr.engine.core import EngineCore
from sasr.models.qwen3_asr.engine import Qwen3Engine
from sasr.models.qwen3_asr.load import is_qwen3_asr, load_qwen3_asr
from sasr.models.whisper.engine import WhisperEngine
from sasr.models.whisper.load import load_whisper


def build_engine(model: str | None, device: str = "auto", dtype: str = "auto", max_num_seqs: int = 16,
                 max_queued: int = 64, enforce_eager: bool = False, load_format: str = "auto",
                 enable_prefix_caching: bool = True, num_kv_blocks: int | None = None,
                 quantize: str = "auto") -> EngineCore:
    """The engine for --model: Whisper (the bundled tiny.en by default) or Qwen3-ASR."""
    qwen = is_qwen3_asr(model)  # once: for a hub id it asks the hub for the config
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = ("bfloat16" if qwen else "float16") if device.startswith("cuda") else "float32"
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    if qwen:
        loaded = load_qwen3_asr(model, device, torch_dtype, load_format)
        return Qwen3Engine(loaded, max_num_seqs=max_num_seqs, max_queued=max_queued,
                           enable_prefix_caching=enable_prefix_caching, num_blocks=num_kv_blocks)
    if load_format != "auto":
        raise ValueError("--load-format dummy is for Qwen3-ASR models")
    loaded = load_whisper(model, device, torch_dtype, quantize=quantize)
    return WhisperEngine(loaded, max_num_seqs=max_num_seqs,
                       max_queued=max_queued, enforce_eager=enforce_eager)
