"""Offline HTTP throughput: concurrent uploads against a real sasr server, and faster-whisper as the peer.

    python -m bench.http_load [--levels 1,4,8,16] [--json out.json] [--no-peer]

For each concurrency level it sends the corpus (8 speech files of about 20 s, espeak-ng voices,
known text) through `POST /v1/audio/transcriptions` with that many requests in flight, and prints
one line: throughput (audio seconds per wall second), request latency p50/p95, WER, peak server
memory. In the same run faster-whisper transcribes the same files on the same tiny.en weights, and
each sasr line carries its throughput ratio to faster-whisper.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf

from tests.support.server import Server
from tests.support.speech import corpus


def corpus_wer(refs: list[str], hyps: list[str]) -> float:
    """Pooled WER: edits over all files / words over all files."""
    from tests.support.wer import edit_distance, normalize

    edits = sum(edit_distance(normalize(r), normalize(h)) for r, h in zip(refs, hyps))
    return edits / sum(len(normalize(r)) for r in refs)


def run_level(server: Server, files, concurrency: int, num_requests: int) -> dict:
    jobs = [files[i % len(files)] for i in range(num_requests)]
    payloads = [(path.read_bytes(), text, sf.info(path).duration) for path, text in jobs]

    def one(payload):
        data, text, _ = payload
        started = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("a.wav", data)}, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - started, r.json()["text"]

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, payloads))
    wall = time.perf_counter() - started
    audio_s = sum(p[2] for p in payloads)
    latencies = [r[0] for r in results]
    return {
        "engine": "sasr", "concurrency": concurrency, "requests": num_requests, "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 2), "throughput": round(audio_s / wall, 1),
        "p50_s": round(float(np.percentile(latencies, 50)), 2), "p95_s": round(float(np.percentile(latencies, 95)), 2),
        "wer": round(corpus_wer([p[1] for p in payloads], [r[1] for r in results]), 3),
        "peak_rss_mb": round(server.peak_rss_mb()),
    }


def run_peer(files, compute_type: str, beam_size: int) -> dict:
    from faster_whisper import WhisperModel

    from sasr.models.whisper.load import bundled_model_dir

    model = WhisperModel(str(bundled_model_dir()), device="cpu", compute_type=compute_type, cpu_threads=os.cpu_count())
    model.transcribe(str(files[0][0]), beam_size=beam_size)  # warm up
    hyps, started = [], time.perf_counter()
    for path, _ in files:
        segments, _ = model.transcribe(str(path), beam_size=beam_size, language="en")
        hyps.append("".join(s.text for s in segments))
    wall = time.perf_counter() - started
    audio_s = sum(sf.info(p).duration for p, _ in files)
    return {
        "engine": f"faster-whisper {compute_type} beam{beam_size}", "concurrency": 1, "requests": len(files),
        "audio_s": round(audio_s, 1), "wall_s": round(wall, 2), "throughput": round(audio_s / wall, 1),
        "wer": round(corpus_wer([t for _, t in files], hyps), 3),
    }


def line(r: dict, peer: dict | None = None) -> str:
    text = (f"{r['engine']:<28} c={r['concurrency']:<3} audio={r['audio_s']:>6.1f}s wall={r['wall_s']:>6.2f}s "
            f"throughput={r['throughput']:>5.1f} audio-s/s wer={r['wer']:.3f}")
    if "p50_s" in r:
        text += f" p50={r['p50_s']:.2f}s p95={r['p95_s']:.2f}s peak_rss={r['peak_rss_mb']}MB"
    if peer:
        text += f" | {r['throughput'] / peer['throughput']:.2f}x {peer['engine']}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--json", default=None, help="write all results to this file")
    parser.add_argument("--no-peer", action="store_true", help="skip faster-whisper")
    parser.add_argument("--server-args", default="", help="extra `sasr serve` arguments")
    args = parser.parse_args()
    workdir = Path(os.environ.get("SASR_BENCH_DIR") or tempfile.mkdtemp(prefix="sasr-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files = corpus(workdir)
    results, peer = [], None
    if not args.no_peer:
        for compute_type, beam in (("int8", 5), ("int8", 1)):
            r = run_peer(files, compute_type, beam)
            results.append(r)
            print(line(r), flush=True)
        peer = results[0]
    server = Server(*args.server_args.split())
    try:
        run_level(server, files[:2], 2, 2)  # warm up
        for level in (int(x) for x in args.levels.split(",")):
            r = run_level(server, files, level, max(len(files), 2 * level))
            results.append(r)
            print(line(r, peer), flush=True)
    finally:
        server.stop()
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "results": results}, indent=2))


def machine() -> str:
    import platform

    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return f"{platform.machine()} {model}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
