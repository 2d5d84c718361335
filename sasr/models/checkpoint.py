"""Where checkpoints come from: a local directory, or a hub id on machines that can reach the hub."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("SASR_CACHE_DIR") or Path.home() / ".cache" / "sasr")


def resolve_checkpoint(model: str) -> Path:
    """A local checkpoint directory for --model: the directory itself, or a hub snapshot."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model.startswith((".", "/", "~")):
        raise FileNotFoundError(f"--model {model}: not a model directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model, allow_patterns=["*.json", "*.safetensors", "*.txt"]))
    except Exception as exc:
        raise RuntimeError(
            f"--model {model}: not a local directory, and the hub could not provide it ({exc})"
        ) from exc
