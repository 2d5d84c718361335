"""Offline HTTP throughput: concurrent uploads against a real sasr server, and faster-whisper as the peer.

    python -m bench.http_load [--levels 1,4,8,16] [--quantize none,int8] [--json out.json] [--no-peer]

For each concurrency level it sends the corpus (8 speech files of about 20 s, espeak-ng voices,
known text) through `POST /v1/audio/transcriptions` with that many requests in flight, and prints
one line: throughput (audio seconds per wall second), request latency p50/p95, WER, peak server
memory, and audio seconds per CPU second the server used (steadier than wall time where other
work shares the machine). In the same run faster-whisper transcribes the same files on the same tiny.en weights (int8,
as its CPU users run it) in two modes: sequential beam search (beam 5, its default) and its
`BatchedInferencePipeline` (greedy, batch 8: its fastest, the mode for throughput). Each sasr line
carries its throughput ratio to the faster of the two.

Then the engine alone (in this process, no HTTP) at concurrency 8 for each Whisper weight mode in
--quantize, so each lever is measured with its WER on the same corpus in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
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


def cpu_s(pid: int | None = None) -> float:
    """CPU seconds a process has used, all its threads (this process: pid None). On a machine others
    share, audio seconds per CPU second compares engines where wall time is noise."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def efficiency(audio_s: float, cpu_used_s: float) -> dict:
    return {"cpu_s": round(cpu_used_s, 1), "audio_per_cpu_s": round(audio_s / cpu_used_s, 1)}


def run_level(server: Server, files, concurrency: int, num_requests: int) -> dict:
    jobs = [files[i % len(files)] for i in range(num_requests)]
    payloads = [(path.read_bytes(), text, sf.info(path).duration) for path, text in jobs]

    def one(payload):
        data = payload[0]
        started = time.perf_counter()
        r = httpx.post(f"{server.url}/v1/audio/transcriptions", files={"file": ("a.wav", data)}, timeout=600)
        r.raise_for_status()
        return time.perf_counter() - started, r.json()["text"]

    started, cpu_started = time.perf_counter(), cpu_s(server.proc.pid)
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, payloads))
    wall = time.perf_counter() - started
    cpu_used = cpu_s(server.proc.pid) - cpu_started
    audio_s = sum(p[2] for p in payloads)
    latencies = [r[0] for r in results]
    return {
        "engine": "sasr", "concurrency": concurrency, "requests": num_requests, "audio_s": round(audio_s, 1),
        "wall_s": round(wall, 2), "throughput": round(audio_s / wall, 1),
        "p50_s": round(float(np.percentile(latencies, 50)), 2), "p95_s": round(float(np.percentile(latencies, 95)), 2),
        "wer": round(corpus_wer([p[1] for p in payloads], [r[1] for r in results]), 3),
        "peak_rss_mb": round(server.peak_rss_mb()), **efficiency(audio_s, cpu_used),
    }


# faster-whisper's modes: (compute type, beam size, batch size; None: sequential `WhisperModel.transcribe`)
PEERS = {
    "faster-whisper int8 beam5": ("int8", 5, None),
    "faster-whisper batched int8 greedy b8": ("int8", 1, 8),
}


def run_peer(files, name: str) -> dict:
    """faster-whisper over the corpus, one file after another (batched mode: each file's chunks batched)."""
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from sasr.models.whisper.load import bundled_model_dir

    compute_type, beam_size, batch_size = PEERS[name]
    model = WhisperModel(str(bundled_model_dir()), device="cpu", compute_type=compute_type, cpu_threads=os.cpu_count())
    if batch_size is None:
        transcribe = functools.partial(model.transcribe, beam_size=beam_size, language="en")
    else:
        pipeline = BatchedInferencePipeline(model)
        transcribe = functools.partial(pipeline.transcribe, beam_size=beam_size, language="en", batch_size=batch_size)
    list(transcribe(str(files[0][0]))[0])  # warm up
    hyps, started, cpu_started = [], time.perf_counter(), cpu_s()
    for path, _ in files:
        segments, _ = transcribe(str(path))
        hyps.append("".join(s.text for s in segments))
    wall, cpu_used = time.perf_counter() - started, cpu_s() - cpu_started
    audio_s = sum(sf.info(p).duration for p, _ in files)
    return {
        "engine": name, "concurrency": 1, "requests": len(files),
        "audio_s": round(audio_s, 1), "wall_s": round(wall, 2), "throughput": round(audio_s / wall, 1),
        "wer": round(corpus_wer([t for _, t in files], hyps), 3), **efficiency(audio_s, cpu_used),
    }


def run_engine(files, quantize: str, concurrency: int, num_requests: int) -> dict:
    """The Whisper engine in this process (no HTTP) with the given weight mode, at one concurrency."""
    import asyncio

    from sasr.audio.io import decode_audio
    from sasr.engine import TranscriptionRequest
    from sasr.models.whisper.engine import WhisperEngine
    from sasr.models.whisper.load import load_whisper

    jobs = [files[i % len(files)] for i in range(num_requests)]
    audio = {path: decode_audio(path.read_bytes()) for path, _ in files}

    async def run(engine, paths) -> list[str]:
        slots = asyncio.Semaphore(concurrency)

        async def one(path):
            async with slots:
                return (await engine.transcribe(TranscriptionRequest(audio[path]))).text

        return await asyncio.gather(*(one(p) for p in paths))

    engine = WhisperEngine(load_whisper(None, quantize=quantize), max_num_seqs=16)
    try:
        asyncio.run(run(engine, [p for p, _ in files[:2]]))  # warm up
        started, cpu_started = time.perf_counter(), cpu_s()
        hyps = asyncio.run(run(engine, [p for p, _ in jobs]))
        wall, cpu_used = time.perf_counter() - started, cpu_s() - cpu_started
    finally:
        engine.close()
    audio_s = sum(len(audio[p]) for p, _ in jobs) / 16000
    return {
        "engine": f"sasr engine quantize={quantize}", "concurrency": concurrency, "requests": num_requests,
        "audio_s": round(audio_s, 1), "wall_s": round(wall, 2), "throughput": round(audio_s / wall, 1),
        "wer": round(corpus_wer([t for _, t in jobs], hyps), 3), **efficiency(audio_s, cpu_used),
    }


def line(r: dict, peer: dict | None = None) -> str:
    text = (f"{r['engine']:<38} c={r['concurrency']:<3} audio={r['audio_s']:>6.1f}s wall={r['wall_s']:>6.2f}s "
            f"throughput={r['throughput']:>5.1f} audio-s/s wer={r['wer']:.3f} per-cpu-s={r['audio_per_cpu_s']:>5.1f}")
    if "p50_s" in r:
        text += f" p50={r['p50_s']:.2f}s p95={r['p95_s']:.2f}s peak_rss={r['peak_rss_mb']}MB"
    if peer:
        text += f" | {r['throughput'] / peer['throughput']:.2f}x {peer['engine']}"
    return text


def medians(results: list[dict]) -> list[dict]:
    """Per (engine, concurrency), the run of median throughput (an odd number of rounds: a real run)."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["engine"], r["concurrency"]), []).append(r)
    return [sorted(g, key=lambda r: r["throughput"])[len(g) // 2] for g in groups.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,4,8,16")
    parser.add_argument("--json", default=None, help="write all results to this file")
    parser.add_argument("--no-peer", action="store_true", help="skip faster-whisper")
    parser.add_argument("--server-args", default="", help="extra `sasr serve` arguments")
    parser.add_argument("--quantize", default="none,int8",
                        help="Whisper weight modes for the in-process engine runs (empty: none)")
    parser.add_argument("--engine-concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat everything, interleaved, and summarise each line by its median run "
                             "(for a machine others share)")
    args = parser.parse_args()
    workdir = Path(os.environ.get("SASR_BENCH_DIR") or tempfile.mkdtemp(prefix="sasr-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    files = corpus(workdir)
    results = []

    def report(r: dict) -> None:
        results.append(r)
        print(line(r, peer), flush=True)

    server = Server(*args.server_args.split())
    try:
        run_level(server, files[:2], 2, 2)  # warm up
        for _ in range(args.rounds):
            peer = None
            if not args.no_peer:
                for name in PEERS:
                    report(run_peer(files, name))
                peer = max(results[-len(PEERS):], key=lambda r: r["throughput"])  # the faster mode is the bar
            for level in (int(x) for x in args.levels.split(",")):
                report(run_level(server, files, level, max(len(files), 2 * level)))
            for quantize in filter(None, args.quantize.split(",")):
                level = args.engine_concurrency
                report(run_engine(files, quantize, level, max(len(files), 2 * level)))
    finally:
        server.stop()
    summary = medians(results)
    if args.rounds > 1:
        print(f"-- median of {args.rounds} rounds")
        peers = [r for r in summary if r["engine"] in PEERS]
        peer = max(peers, key=lambda r: r["throughput"]) if peers else None
        for r in summary:
            print(line(r, peer if r not in peers else None), flush=True)
    if args.json:
        data = {"machine": machine(), "rounds": args.rounds, "results": summary, "runs": results}
        Path(args.json).write_text(json.dumps(data, indent=2))


def machine() -> str:
    import platform

    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "?")
    return f"{platform.machine()} {model}, {os.cpu_count()} cores"


if __name__ == "__main__":
    main()
