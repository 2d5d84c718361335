"""Prefix KV reuse for Qwen3-ASR: per-chunk cost against session length, with reuse on and off.

    python -m bench.prefix [--model qwen3-asr-0.6b] [--sessions 1] [--json out.json]

One live session (or several at once) streams a minute of speech through the Qwen3-ASR streaming
policy in-process, 2 s per decode, as fast as the engine goes; the same audio runs with the prefix
cache on and off. Random ("dummy") weights write a fixed number of tokens per decode, so both runs
do the same work apart from what the cache saves. Per session length (10, 30, 60 s) it reports the
decode latency and the prompt tokens computed, prints the speed-up at 30 s and 60 s, and exits
non-zero if the two runs' outputs differ. Default model: the 0.6B shapes on CUDA, the tiny test
config on a CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from bench.http_load import machine
from tests.support.live import replay_session
from tests.support.speech import HARVARD, concat, read16k, speak

LENGTHS_S = (10, 30, 60)
SESSION_S = 60


def speech_minute(directory: Path) -> np.ndarray:
    directory.mkdir(parents=True, exist_ok=True)
    parts = []
    for i, text in enumerate(HARVARD[:24]):
        path = directory / f"h{i}.wav"
        if not path.exists():
            speak(text, path)
        parts.append(read16k(path))
    return concat(parts)[: SESSION_S * 16000]


async def run(loaded, audio: np.ndarray, reuse: bool, num_sessions: int, repeats: int) -> list[list[dict]]:
    """Each session's records, latencies the median over `repeats` runs (a fresh engine each)."""
    from sasr.models.qwen3_asr.engine import Qwen3Engine

    runs = []
    for _ in range(repeats):
        engine = Qwen3Engine(loaded, max_num_seqs=max(8, num_sessions), enable_prefix_caching=reuse)
        try:
            # warm-up (allocator, kernels) on other audio, so the measured session starts with a cold cache
            await replay_session(engine, np.ascontiguousarray(audio[::-1][: 4 * 16000]))
            runs.append(await asyncio.gather(*(replay_session(engine, audio) for _ in range(num_sessions))))
        finally:
            engine.close()
    sessions = runs[0]
    for s, session in enumerate(sessions):
        for i, record in enumerate(session):
            record["latency_s"] = statistics.median(run[s][i]["latency_s"] for run in runs)
    return sessions


def at_length(sessions: list[list[dict]], length_s: float, key: str) -> float:
    """Mean of key over every session's decodes of the 4 s before length_s of session."""
    values = [r[key] for session in sessions for r in session if length_s - 4 < r["at_s"] <= length_s]
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a Qwen3-ASR config dir or shipped name (default: by device)")
    parser.add_argument("--sessions", type=int, default=1, help="sessions streaming at once")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from sasr.models.qwen3_asr.load import load_qwen3_asr
    from tests.support.qwen_tiny import write_tiny_checkpoint

    cuda = torch.cuda.is_available()
    work = Path(tempfile.mkdtemp(prefix="sasr-bench-prefix-"))
    model = args.model or ("qwen3-asr-0.6b" if cuda else str(write_tiny_checkpoint(work / "tiny-qwen3-asr")))
    loaded = load_qwen3_asr(model, "cuda" if cuda else "cpu", torch.bfloat16 if cuda else torch.float32, "dummy")
    where = f"{torch.cuda.get_device_name()} (CUDA)" if cuda else machine()
    audio = speech_minute(Path(tempfile.gettempdir()) / "sasr-bench-speech")

    on = asyncio.run(run(loaded, audio, True, args.sessions, args.repeats))
    off = asyncio.run(run(loaded, audio, False, args.sessions, args.repeats))
    same = [[r["tokens"] for r in s] for s in on] == [[r["tokens"] for r in s] for s in off]

    rows = []
    print(f"{'session':>8} {'reuse on ms':>12} {'reuse off ms':>13} {'computed on':>12} {'computed off':>13} "
          f"{'prompt':>7}")
    for length in LENGTHS_S:
        row = {"session_s": length}
        for name, sessions in (("on", on), ("off", off)):
            row[f"latency_{name}_ms"] = round(1000 * at_length(sessions, length, "latency_s"), 1)
            row[f"computed_{name}"] = round(at_length(sessions, length, "computed"))
        row["prompt"] = round(at_length(on, length, "prompt"))
        row["speedup"] = round(row["latency_off_ms"] / row["latency_on_ms"], 2)
        rows.append(row)
        print(f"{length:>7}s {row['latency_on_ms']:>12} {row['latency_off_ms']:>13} {row['computed_on']:>12} "
              f"{row['computed_off']:>13} {row['prompt']:>7}")
    by_length = {r["session_s"]: r for r in rows}
    summary = (f"prefix reuse: {Path(model).name}, {args.sessions} session(s): speed-up per chunk "
               f"{by_length[30]['speedup']}x at 30 s, {by_length[60]['speedup']}x at 60 s; "
               f"tokens computed per chunk {by_length[10]['computed_on']}/{by_length[30]['computed_on']}/"
               f"{by_length[60]['computed_on']} (on) vs {by_length[10]['computed_off']}/"
               f"{by_length[30]['computed_off']}/{by_length[60]['computed_off']} (off) at 10/30/60 s; "
               f"outputs {'equal' if same else 'DIFFER'}; {where}")
    print(summary)
    if args.json:
        per_chunk = lambda sessions: [[{k: r[k] for k in ("at_s", "latency_s", "computed")} for r in s]  # noqa: E731
                                      for s in sessions]
        Path(args.json).write_text(json.dumps({"model": Path(model).name, "sessions": args.sessions, "rows": rows,
                                               "equal": same, "machine": where, "per_chunk_on": per_chunk(on),
                                               "per_chunk_off": per_chunk(off)}, indent=1))
    if not same:
        sys.exit("reuse on and off gave different outputs")


if __name__ == "__main__":
    main()
