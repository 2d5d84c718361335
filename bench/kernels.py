"""Kernel benchmarks: each kernel against its plain-torch reference, swept over sizes.

    python -m bench.kernels [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sasr.kernels.logmel import log_mel_batch, log_mel_batch_reference


def timed(fn, *args, repeat: int = 5) -> float:
    fn(*args)  # warm up
    sync = torch.cuda.synchronize if args[0].is_cuda else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(repeat):
        fn(*args)
    sync()
    return (time.perf_counter() - started) / repeat


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None, help="write the results to this file")
    args = parser.parse_args()
    results = []
    for batch in (1, 4, 8, 16, 32):
        audio = (torch.randn(batch, 480000) * 0.1).to(args.device)
        ref = timed(log_mel_batch_reference, audio)
        new = timed(log_mel_batch, audio)
        error = (log_mel_batch(audio) - log_mel_batch_reference(audio)).abs().max().item()
        print(f"log_mel_batch device={args.device} batch={batch:<3} reference={ref * 1e3:7.1f}ms "
              f"kernel={new * 1e3:7.1f}ms speedup={ref / new:4.2f}x max_abs_err={error:.1e}", flush=True)
        results.append({"kernel": "log_mel_batch", "batch": batch, "reference_ms": round(ref * 1e3, 3),
                        "kernel_ms": round(new * 1e3, 3), "speedup": round(ref / new, 2), "max_abs_err": error})
    if args.json:
        where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        Path(args.json).write_text(json.dumps({"device": where, "results": results}, indent=2))


if __name__ == "__main__":
    main()
