"""Live streaming under load: N concurrent real-time-paced WebSocket sessions against a real server.

    python -m bench.stream_load [--levels 1,2,4,8,12,16] [--json out.json] [--server-args "..."]

Each session replays a speech file (8 files of about 20 s, espeak-ng voices, known text) at the pace
of speech, with partial events on so that every decode produces an event. Per level it prints one
line: per-chunk latency p50/p95/p99 (audio sent -> the event covering it, from audio_ms), first-word
latency, time from session.end to transcript.final, real-time factor, WER, peak server memory. The
sweep reports the most sessions held at p95 per-chunk latency under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import tempfile
from pathlib import Path

import numpy as np

from bench.http_load import corpus_wer, machine
from sasr.client import stream_audio, to_pcm16
from tests.support.server import Server
from tests.support.speech import corpus, read16k

P95_TARGET_S = 1.0


async def run_level(server: Server, files, num_sessions: int) -> dict:
    rng = random.Random(num_sessions)
    jobs = [files[i % len(files)] for i in range(num_sessions)]

    async def one(path, delay_s):
        await asyncio.sleep(delay_s)  # staggered starts, as real users arrive
        return await stream_audio(server.url, to_pcm16(read16k(path)), realtime=True, start={"partials": True})

    results = await asyncio.gather(*(one(path, rng.uniform(0, 1.0)) for path, _ in jobs))
    latencies = [r.latency_s(i) for r in results for i, e in enumerate(r.events) if e["type"] != "transcript.final"]
    first_word = [next((r.arrival_s[i] for i, e in enumerate(r.events) if e["type"] == "transcript.delta"), np.nan)
                  for r in results]
    end_to_final = [r.arrival_s[-1] - r.end_sent_s for r in results]
    audio_s = [len(read16k(path)) / 16000 for path, _ in jobs]
    rtf = [(r.arrival_s[-1]) / a for r, a in zip(results, audio_s)]
    pct = lambda xs, q: round(float(np.nanpercentile(xs, q)), 3)  # noqa: E731
    return {
        "sessions": num_sessions, "events": len(latencies),
        "chunk_p50_s": pct(latencies, 50), "chunk_p95_s": pct(latencies, 95), "chunk_p99_s": pct(latencies, 99),
        "first_word_p50_s": pct(first_word, 50), "end_to_final_p95_s": pct(end_to_final, 95),
        "rtf_p95": pct(rtf, 95), "wer": round(corpus_wer([t for _, t in jobs], [r.final["text"] for r in results]), 3),
        "peak_rss_mb": round(server.peak_rss_mb()),
    }


def line(r: dict) -> str:
    return (f"streams={r['sessions']:<3} chunk latency p50={r['chunk_p50_s']:.2f}s p95={r['chunk_p95_s']:.2f}s "
            f"p99={r['chunk_p99_s']:.2f}s first_word={r['first_word_p50_s']:.2f}s "
            f"end->final p95={r['end_to_final_p95_s']:.2f}s rtf p95={r['rtf_p95']:.2f} wer={r['wer']:.3f} "
            f"peak_rss={r['peak_rss_mb']}MB")


async def sweep(args, files) -> list[dict]:
    server = Server(*args.server_args.split())
    results = []
    try:
        await run_level(server, files[:1], 1)  # warm up
        for level in (int(x) for x in args.levels.split(",")):
            r = await run_level(server, files, level)
            results.append(r)
            print(line(r), flush=True)
    finally:
        server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,2,4,8,12,16")
    parser.add_argument("--json", default=None)
    parser.add_argument("--server-args", default="")
    args = parser.parse_args()
    workdir = Path(os.environ.get("SASR_BENCH_DIR") or tempfile.mkdtemp(prefix="sasr-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(sweep(args, corpus(workdir)))
    held = [r["sessions"] for r in results if r["chunk_p95_s"] < P95_TARGET_S]
    print(f"most concurrent real-time sessions at p95 chunk latency < {P95_TARGET_S:g}s: {max(held) if held else 0}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
