"""One engine step, alone: `runner.step(batch)` at 1, 8 and 16 decode rows, split into torch-op time
and the Python around it.

    python -m bench.step [--models whisper,qwen] [--rows 1,8,16] [--quantize none,int8] [--threads N]
                         [--device cpu|cuda] [--mixed] [--json out.json]

Cases: Whisper tiny.en (the bundled weights) and the tiny Qwen3-ASR of the tests (random weights,
tests/support/qwen_tiny.py). Each decode row is a running sequence part-way through its text
(Whisper at position 40 of 448, Qwen3-ASR at 150: an 8 s window's prompt and some text); every
repeat moves each row one position on, as decoding does. Per case it prints one line:

    step   median wall time of runner.step(batch) (inputs, forward, filters, sampling, outputs)
    ops    the part of step inside top-level torch operators (kernels and their dispatch), by the
           share a profile of the same steps finds there
    python the rest: host-side Python around the operators (batch -> tensors, loops, outputs)
    calls  operator calls per step (what a CUDA graph or a compiled step would fold together)

The KV a row attends over is whatever the arena holds (zeros): the cost does not depend on values.

--device cuda runs the same steps on the GPU in the server's dtypes there (Whisper fp16, with its
CUDA graphs; Qwen3-ASR bf16). A step ends with its one copy back to the host, so its wall time
includes the GPU's work; `ops` then includes the wait for it, and a graph replay counts as `python`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.http_load import machine
from sasr.engine.batch import Batch, DecodeRow, SamplingParams

WHISPER_POSITION = 40  # a 20 s window's text is about 80 tokens
QWEN_POSITION = 150  # an 8 s window is 104 audio tokens, with the prompt's text around them
QWEN_BLOCK_SIZE = 16


def decode_batch(rows: list[tuple[int, int, list[int], list[int]]], inputs) -> Batch:
    """A decode-only Batch as Scheduler.schedule() builds one: per row (seq_id, position, sampled
    tokens, block table), and the model-specific `inputs` every row carries.

    The one place that knows the Batch contract: adapt it here when the contract changes.
    """
    return Batch(decode=[DecodeRow(seq_id, sampled[-1], position, sampled, SamplingParams(), inputs, table)
                         for seq_id, position, sampled, table in rows])


@functools.cache
def load_whisper(quantize: str, device: str):
    from sasr.models.whisper.load import load_whisper

    return load_whisper(None, device, torch.float16 if device == "cuda" else torch.float32, quantize=quantize)


@functools.cache
def load_qwen(device: str):
    from sasr.models.qwen3_asr.load import load_qwen3_asr
    from tests.support.qwen_tiny import write_tiny_checkpoint

    path = write_tiny_checkpoint(Path(tempfile.mkdtemp(prefix="sasr-step-")) / "tiny-qwen3-asr")
    return load_qwen3_asr(str(path), device, torch.bfloat16 if device == "cuda" else torch.float32)


def whisper_case(num_rows: int, quantize: str, num_steps: int, device: str, mixed: bool = False):
    """The Whisper runner and a batch per step: rows in slots 0..num_rows-1 (a full 30 s encoding each;
    mixed: every fourth, the others a 10 s window's 500 frames, as live partials and commit decodes)."""
    from sasr.models.whisper.model import WhisperModel
    from sasr.models.whisper.runner import ModelRunner, WhisperInputs

    loaded = load_whisper(quantize, device)
    vocab = loaded.vocab
    runner = ModelRunner(WhisperModel(loaded.model), vocab, max_num_seqs=max(16, num_rows))
    if mixed:
        lens = [runner.full_cross_len if row % 4 == 0 else 500 for row in range(num_rows)]
        runner.cross_lens[:num_rows] = lens
        runner.arena.cross_len[:num_rows] = torch.tensor(lens)
    text = vocab.encode(" The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background.")
    inputs = WhisperInputs(np.zeros(0, np.float32), num_frames=3000, sot_index=0)
    prefix_len = len(vocab.sot_sequence("en"))
    batches = []
    for step in range(num_steps):
        position = WHISPER_POSITION + step
        num_sampled = position - prefix_len + 1
        sampled = [vocab.timestamp_begin] + [text[i % len(text)] for i in range(num_sampled - 1)]
        batches.append(decode_batch([(row, position, sampled, []) for row in range(num_rows)], inputs))
    return runner, batches


def qwen_case(num_rows: int, quantize: str, num_steps: int, device: str, mixed: bool = False):
    """The Qwen3-ASR paged runner and a batch per step: each row owns the blocks of its positions."""
    from sasr.models.qwen3_asr.model import Qwen3ASR
    from sasr.models.qwen3_asr.runner import PagedRunner

    if quantize != "none":
        raise ValueError("Qwen3-ASR has no quantised path")
    loaded = load_qwen(device)
    max_len = QWEN_POSITION + num_steps + 1
    blocks_per_row = -(-max_len // QWEN_BLOCK_SIZE)
    runner = PagedRunner(Qwen3ASR(loaded.model), loaded.vocab, max_num_seqs=max(16, num_rows),
                         num_blocks=blocks_per_row * num_rows, block_size=QWEN_BLOCK_SIZE, max_len=max_len)
    text = loaded.vocab.encode(" The birch canoe slid on the smooth planks.")
    tables = [list(range(row * blocks_per_row, (row + 1) * blocks_per_row)) for row in range(num_rows)]
    batches = []
    for step in range(num_steps):
        position = QWEN_POSITION + step
        sampled = [text[i % len(text)] for i in range(step + 8)]
        batches.append(decode_batch([(row, position, sampled, tables[row]) for row in range(num_rows)], []))
    return runner, batches


CASES = {"whisper": ("whisper-tiny.en", whisper_case), "qwen": ("qwen3-asr-tiny", qwen_case)}


def op_share(runner, batches: list[Batch]) -> tuple[float, float]:
    """Share of a step's wall time spent inside top-level torch operators, and operator calls per
    step, from one profile over these steps. The profiler slows every call, in and out of the
    operators alike, so the share (not its times) is carried over to the unprofiled steps."""
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        for batch in batches:
            runner.step(batch)
        wall_s = time.perf_counter() - started
    top = [e for e in prof.events() if e.cpu_parent is None and e.name.startswith("aten::")]
    ops_s = sum(e.cpu_time_total for e in top) / 1e6
    return min(ops_s / wall_s, 1.0), len(top) / len(batches)


@contextlib.contextmanager
def quiet_stderr():
    """The profiler's C++ side logs each start and stop to stderr: keep the summary lines readable."""
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def measure(model: str, num_rows: int, quantize: str, num_steps: int, num_rounds: int, device: str,
            mixed: bool = False) -> dict:
    """Median over rounds of: the median step time, and the operators' share of a profiled round."""
    name, build = CASES[model]
    runner, batches = build(num_rows, quantize, num_steps, device, mixed)
    for batch in batches:  # warm up: allocator, kernels, lazy inits
        runner.step(batch)
    step_times, shares, calls = [], [], 0.0
    for _ in range(num_rounds):
        walls = []
        for batch in batches:
            started = time.perf_counter()
            runner.step(batch)
            walls.append(time.perf_counter() - started)
        step_times.append(statistics.median(walls))
        share, calls = op_share(runner, batches)
        shares.append(share)
    step_s, share = statistics.median(step_times), statistics.median(shares)
    return {
        "model": name, "device": device, "quantize": quantize, "rows": num_rows, "mixed": mixed,
        "threads": torch.get_num_threads(),
        "step_ms": round(step_s * 1e3, 3), "ops_ms": round(step_s * share * 1e3, 3),
        "python_ms": round(step_s * (1 - share) * 1e3, 3), "calls": round(calls),
        "tokens_per_s": round(num_rows / step_s, 1),
    }


def line(r: dict) -> str:
    share = r["python_ms"] / r["step_ms"]
    return (f"{r['model']:<16} quantize={r['quantize']:<4} rows={r['rows']:<3} step={r['step_ms']:7.2f}ms "
            f"ops={r['ops_ms']:7.2f}ms python={r['python_ms']:6.2f}ms ({share:4.0%}) calls={r['calls']:<4} "
            f"tokens/s={r['tokens_per_s']:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="whisper,qwen")
    parser.add_argument("--rows", default="1,8,16")
    parser.add_argument("--quantize", default=None,
                        help="Whisper weight modes to compare (default: none,int8 on cpu; none on cuda)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=30, help="steps per round (each a position further on)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case (medians are reported)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--mixed", action="store_true",
                        help="Whisper rows over a live mix of windows: one in four 30 s, the rest 10 s")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    quantize = args.quantize or ("none" if args.device == "cuda" else "none,int8")
    results = []
    for model in args.models.split(","):
        modes = quantize.split(",") if model == "whisper" else ["none"]
        for mode in modes:
            for num_rows in (int(x) for x in args.rows.split(",")):
                r = measure(model, num_rows, mode, args.steps, args.rounds, args.device, args.mixed)
                results.append(r)
                print(line(r), flush=True)
    if args.json:
        where = f"{torch.cuda.get_device_name()} (CUDA)" if args.device == "cuda" else machine()
        Path(args.json).write_text(json.dumps({"machine": where, "results": results}, indent=2))


if __name__ == "__main__":
    main()
