"""Int8 Linear layers for the CPU: int8 weights, inputs quantised on the fly, int8 x int8 products.

Whisper's encoder spends most of its time in Linear layers over 1500 frames per window; with int8
products (torch's quantized engine: fbgemm on x86) they run about twice as fast (bench/step.py,
bench/http_load.py). The weights get one scale per output channel. The input gets one scale per
sample (a window: the input's leading dimensions), never one for the whole batch, so a window
encodes the same whatever it is batched with. The MLP's second layer gets one per 100 frames: its
input (after GELU) carries a few loud frames, which would flatten the whole window's grid, and it
was most of the encoder's int8 error (rel. error of the cross-attention keys over six speech
windows: 6.8% with a scale per window everywhere, 5.2% with fc2's per 100 frames, 4.3% with fc2 fp32).

Only layers that see whole windows are quantised to int8 (`quantize_whisper`): the decoder's token
steps stay fp32, but for the vocabulary projection. A few rows a step are bound by reading its
51864 x 384 weights (5 ms of a 9.5 ms step at one row on this project's CPU); where the CPU has
AVX-512 BF16 they are read in bf16 (`Bf16Projection`: 1.2 ms), each row on its own.

A CPU with AMX (Intel's tile units: Sapphire Rapids and later) multiplies bf16 matrices several
times faster than fbgemm's int8 on AVX-512: there the whole model runs in bf16 (mode bf16: encoder,
decoder and KV arena; products accumulate in fp32). Two 30 s windows encode in 88 ms against int8's
256 ms and fp32's 289 ms (Intel Xeon with AMX, 2 cores), nearer fp32 too: the encoder output's
relative error is 1.1% against int8's 3.7%. A decode step is bound by reading the cross-attention
K/V and the weights, half as many bytes in bf16: 8 rows 37 -> 24 ms, 16 rows 58 -> 39 ms against
an fp32 decoder (bench/step.py). oneDNN's bf16 products give a row the same numbers whatever rows
are beside it up to 32 rows, but a kernel for more rows may round otherwise, and so does attention
over a masked tail: the runner prefills each sequence on its own, and on the CPU each decode row
attends to its own positions alone, so a sequence's tokens do not depend on its batch.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import torch
from torch import nn

QUANTIZE_MODES = ("none", "int8", "bf16")
FC2_ROWS_PER_SCALE = 100  # input rows of the encoder MLP's fc2 sharing a scale: 2 s of frames


@functools.cache
def cpu_flags() -> frozenset[str]:
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return frozenset()
    return frozenset(flags.split(":", 1)[-1].split())


def has_vnni() -> bool:
    """Whether the CPU has AVX-512 VNNI: int8 products accumulate in int32 without saturating, so
    inputs keep all 8 bits. Without it fbgemm's int16 pair sums can overflow unless inputs use 7."""
    return "avx512_vnni" in cpu_flags()


def has_amx_bf16() -> bool:
    """Whether the CPU has AMX tiles for bf16 (oneDNN runs bf16 matrix products on them)."""
    return "amx_bf16" in cpu_flags()


def int8_supported() -> bool:
    """Whether this torch build has a quantized engine (fbgemm/x86 on x86, qnnpack on ARM) and its
    dynamic int8 Linear ops (deprecated in torch 2.13, so a later torch may not)."""
    ops = torch.ops.quantized
    return torch.backends.quantized.engine != "none" and hasattr(ops, "linear_dynamic") and hasattr(ops, "linear_prepack")


def default_quantize(device: str | torch.device) -> str:
    """What was measured to pay at fp32's word error rate: bf16 on a CPU with AMX, else int8 on one
    with VNNI, else none. CUDA runs fp16."""
    if torch.device(device).type != "cpu":
        return "none"
    if has_amx_bf16() and torch.backends.mkldnn.is_available():
        return "bf16"
    return "int8" if int8_supported() and has_vnni() else "none"


class Int8Linear(nn.Module):
    """nn.Linear with int8 weights (a scale per output channel) and int8 inputs (a scale per sample,
    or per group of rows_per_scale rows of a sample).

    forward(x): x [..., T, in_features] float32 -> [..., T, out_features] float32, where every x[i]
    over the leading dimensions is one sample of T rows (a 2-d input is one sample).
    """

    def __init__(self, linear: nn.Linear, reduce_range: bool | None = None, rows_per_scale: int | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(1).clamp(min=1e-8) / 127  # [out]
        zero_points = torch.zeros(len(scales), dtype=torch.long)
        with warnings.catch_warnings():  # quantized tensors are deprecated (torch 2.13); the ops still run
            warnings.simplefilter("ignore", UserWarning)
            qweight = torch.quantize_per_channel(weight, scales.double(), zero_points, 0, torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self._packed = torch.ops.quantized.linear_prepack(qweight, bias)  # the engine's own layout
        self.reduce_range = not has_vnni() if reduce_range is None else reduce_range
        self.rows_per_scale = rows_per_scale  # None: the whole sample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        samples = x.reshape(-1, *x.shape[-2:]) if x.dim() > 2 else x[None]  # [S, T, in]
        groups = [group for sample in samples for group in split_rows(sample, self.rows_per_scale)]
        outputs = [torch.ops.quantized.linear_dynamic(g, self._packed, reduce_range=self.reduce_range) for g in groups]
        out = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"reduce_range={self.reduce_range}, rows_per_scale={self.rows_per_scale}")


def split_rows(sample: torch.Tensor, rows_per_scale: int | None) -> tuple[torch.Tensor, ...]:
    return (sample,) if rows_per_scale is None else sample.split(rows_per_scale)


def int8_linear_reference(linear: nn.Linear, x: torch.Tensor, reduce_range: bool,
                          rows_per_scale: int | None = None) -> torch.Tensor:
    """What Int8Linear computes, in plain fp32 torch: the weights and each group of input rows
    rounded to their int8 grids (the input's asymmetric, as the engine picks it), then an fp32 product."""
    weight = linear.weight.detach().float()
    scales = weight.abs().amax(1).clamp(min=1e-8) / 127
    weight = (weight / scales[:, None]).round().clamp(-127, 127) * scales[:, None]
    levels = 127 if reduce_range else 255
    samples = x.reshape(-1, *x.shape[-2:]) if x.dim() > 2 else x[None]
    out = []
    for group in (g for sample in samples for g in split_rows(sample, rows_per_scale)):
        # the range's qparams as fbgemm picks them: scale in double, then float; x * (1 / scale) rounded
        low, high = group.min().clamp(max=0).double(), group.max().clamp(min=0).double()
        scale = ((high - low) / levels).clamp(min=1e-8).float()
        zero = (-low / scale).round().clamp(0, levels).float()
        fake = (group * (1 / scale)).round().add(zero).clamp(0, levels).sub(zero).mul(scale)
        out.append(nn.functional.linear(fake, weight, linear.bias))
    return torch.cat(out).view(*x.shape[:-1], linear.out_features)


def quantize_linears(module: nn.Module, rows_per_scale: dict[str, int] | None = None) -> int:
    """Replace every nn.Linear under module with an Int8Linear, in place; returns how many.
    rows_per_scale: by attribute name (e.g. "fc2"), the rows sharing an input scale (default: a sample)."""
    count = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8Linear(child, rows_per_scale=(rows_per_scale or {}).get(name)))
            count += 1
        else:
            count += quantize_linears(child, rows_per_scale)
    return count


def quantize_whisper(model, mode: str) -> None:
    """Quantise a transformers Whisper model in place for CPU inference (mode: QUANTIZE_MODES).

    int8: the encoder's Linear layers (fc2 with a scale per FC2_ROWS_PER_SCALE frames) and the
    cross-attention key/value projections (which only ever see encoder output); the decoder's token
    path stays fp32, but for the vocabulary projection, which reads a bf16 copy of the tied embedding
    where the CPU has AVX-512 BF16 (`Bf16Projection`; token embeddings stay fp32).
    bf16: the whole model in bf16 (encoder, decoder, and so the KV arena), for a CPU with AMX; the
    vocabulary projection reads its own bf16 copy and returns fp32 logits.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, not {mode!r}")
    if mode == "none":
        return
    if next(model.parameters()).device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
        raise ValueError(f"{mode} is for fp32 models on the CPU")
    if mode == "bf16":
        model.model.to(torch.bfloat16)  # encoder and decoder
    else:
        if not int8_supported():
            raise ValueError("this torch build has no quantized engine for int8")
        quantize_linears(model.model.encoder, {"fc2": FC2_ROWS_PER_SCALE})
        for layer in model.model.decoder.layers:  # the cross-attention K/V projections see only encoder output
            layer.encoder_attn.k_proj = Int8Linear(layer.encoder_attn.k_proj)
            layer.encoder_attn.v_proj = Int8Linear(layer.encoder_attn.v_proj)
    if "avx512_bf16" in cpu_flags():
        model.proj_out = Bf16Projection(model.proj_out.weight)


class Bf16Projection(nn.Module):
    """The vocabulary projection (tied to the token embedding) with a bf16 copy of its weights:
    logits [M, V] fp32 of hidden states [M, D]. No scale is shared between rows, so a row's logits do
    not depend on what it is batched with."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight.detach().to(torch.bfloat16), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.mm(self.weight, hidden.to(torch.bfloat16).T).T.float()  # W @ h.T: see WhisperModel.logits
