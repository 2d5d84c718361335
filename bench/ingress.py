"""Ray Serve's two ingresses against a direct `sasr serve`, under the same live load.

    python -m bench.ingress [--sessions N] [--seconds S] [--paths direct,ray-proxy,haproxy] [--json PATH]

Ray Serve's default ingress is a Python proxy actor that forwards every WebSocket frame through Ray
calls; with RAY_SERVE_ENABLE_HA_PROXY=1 on every node's `ray start`, Ray 2.60 runs HAProxy instead,
which hands the client's TCP connection to a uvicorn listener inside the replica. Both carry sasr's
HTTP and WebSockets; this measures what each costs, so the better one can be the default.

Every path runs on the same namespaced machines (tests/support/cluster.py: a head, one worker and a
client on one bridge, prefix sasr-b) with the server on the worker:
- direct: `sasr serve` in the worker's namespace, no Ray; the client connects to it;
- ray-proxy / haproxy: a fresh Ray cluster each (head with 0 CPUs, worker with 1), deploy/ray/serve.yaml
  with one replica of 1 CPU; the client connects to the head's ingress, which reaches the replica.
The direct server gets the replica's settings (the config's args) and its thread count (Ray sets a
1-CPU actor's OMP_NUM_THREADS to 1 as it starts: ray._private.utils.set_omp_num_threads_if_unset), so
only the ingress differs.

Per path, after /health answers 200 and one warm-up stream:
- live: N sessions of real speech (bench/corpus.py's `voices` renderings, back to back, S seconds each)
  at the pace of speech, partials on, starts staggered over 1 s by a fixed seed; event latency p50/p95/p99
  over all transcript.partial/delta events (arrival minus when the frame holding their audio_ms was sent);
- throughput: one session sending a 60 s file as fast as the socket takes it: first frame to
  transcript.final, and frames/s sent;
- round trip: a new WebSocket, session.start, time until session.started; 50 in sequence (connection
  setup plus one small message each way through the ingress), each then ended cleanly (untimed);
- upload: 20 sequential `POST /v1/audio/transcriptions` of a short recording (alsa-utils Front_Center).
Overhead = the path's number minus direct's. Errors, unclean closes (code other than 1000) and sessions
without transcript.final are counted per path: a path that drops sessions is not faster.

Latency is wall time on a small shared machine: each phase records the load average; Ray's own
processes (GCS, raylets, controller) share the CPUs in the Ray phases, as they would in production.
`--json` writes every number, the machine, the date and the printed table.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

from bench import corpus as bench_corpus
from bench.http_load import machine
from sasr.client import STREAM_PATH, stream_audio, to_pcm16
from tests.support.cluster import Cluster, can_make_namespaces, serve_config
from tests.support.server import stop_process
from tests.support.speech import ALSA_SOUNDS

PATHS = ("direct", "ray-proxy", "haproxy")
PREFIX = "sasr-b"  # the test suite's clusters use sasr-t
REPLICA_CPUS = 1
PORT = 8000
UPLOAD_WAV = ALSA_SOUNDS / "Front_Center.wav"
HEALTHY_TIMEOUT_S = 300  # a Ray phase: cluster up, deploy, the replica loads its model
LIVE_EVENTS = ("transcript.partial", "transcript.delta")


# --- the load ------------------------------------------------------------------------------------

def live_clips(corpus_dir: Path, sessions: int, seconds: float) -> list[bytes]:
    """One clip per session: the `voices` renderings back to back, each session starting at a different
    one, cut to `seconds` (real speech, different per session, the same for every path)."""
    items = bench_corpus.build(corpus_dir, ("voices",))["voices"]
    audio = [sf.read(item.path, dtype="float32")[0] for item in items]
    clips = []
    for i in range(sessions):
        joined = np.concatenate(audio[i % len(audio):] + audio[: i % len(audio)])
        while len(joined) < seconds * 16000:
            joined = np.concatenate([joined, joined])
        clips.append(to_pcm16(joined[: int(seconds * 16000)]))
    return clips


def long_clip(corpus_dir: Path, seconds: float) -> bytes:
    """The first `seconds` of the corpus's shortest long passage (68 s, pauses between sentences)."""
    items = bench_corpus.build(corpus_dir, ("long",))["long"]
    audio = sf.read(min(items, key=bench_corpus.duration_s).path, dtype="float32")[0]
    return to_pcm16(audio[: int(seconds * 16000)])


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 4) if xs else None


def session_problems(r) -> list[str]:
    """What went wrong in one stream_audio session (empty when it ended as it should)."""
    problems = []
    if r.close_code != 1000:
        problems.append(f"close {r.close_code}")
    if r.final is None:
        problems.append("no transcript.final")
    problems += [f"error {e.get('code')}: {e.get('message')}" for e in r.events if e["type"] == "error"]
    return problems


async def live(url: str, clips: list[bytes]) -> dict:
    rng = random.Random(len(clips))  # the same staggered starts on every path

    async def one(clip: bytes, delay_s: float):
        await asyncio.sleep(delay_s)
        return await stream_audio(url, clip, realtime=True, start={"partials": True}, reconnect=False)

    outcomes = await asyncio.gather(*(one(c, rng.uniform(0, 1.0)) for c in clips), return_exceptions=True)
    results = [r for r in outcomes if not isinstance(r, BaseException)]
    errors = [repr(r) for r in outcomes if isinstance(r, BaseException)]
    errors += [p for r in results for p in session_problems(r)]
    latency = [r.latency_s(i) for r in results for i, e in enumerate(r.events) if e["type"] in LIVE_EVENTS]
    return {"sessions": len(clips), "audio_s": round(len(clips[0]) / 32000, 1), "events": len(latency),
            "p50_s": pct(latency, 50), "p95_s": pct(latency, 95), "p99_s": pct(latency, 99),
            "finals": sum(r.final is not None for r in results), "errors": errors}


async def throughput(url: str, pcm16: bytes) -> dict:
    r = await stream_audio(url, pcm16, realtime=False, reconnect=False)
    final = r.final
    frames_s = r.end_sent_s - r.sent_s[0] if len(r.sent_s) > 1 else float("nan")
    return {"audio_s": round(len(pcm16) / 32000, 1), "frames": len(r.sent_s),
            "frames_per_s": round(len(r.sent_s) / frames_s, 1) if frames_s > 0 else None,
            "to_final_s": round(r.arrival_s[r.events.index(final)] - r.sent_s[0], 3) if final and r.sent_s else None,
            "errors": session_problems(r)}


async def round_trips(url: str, count: int) -> dict:
    """Connection setup and session.start -> session.started, timed; then a clean end, untimed."""
    import websockets

    ws_url = url.replace("http://", "ws://") + STREAM_PATH
    times, errors = [], []
    for _ in range(count):
        try:
            started = time.monotonic()
            async with websockets.connect(ws_url) as ws:
                await ws.send(json.dumps({"type": "session.start"}))
                reply = json.loads(await ws.recv())
                elapsed = time.monotonic() - started
                if reply["type"] != "session.started":
                    errors.append(f"{reply['type']}: {reply.get('message')}")
                    continue
                times.append(elapsed)
                await ws.send(json.dumps({"type": "session.end"}))
                async for _message in ws:  # transcript.final, then the close
                    pass
                if ws.close_code != 1000:
                    errors.append(f"close {ws.close_code}")
        except (OSError, websockets.WebSocketException) as e:
            errors.append(repr(e))
    return {"count": count, "p50_s": pct(times, 50), "p95_s": pct(times, 95), "errors": errors}


async def uploads(url: str, wav: Path, count: int) -> dict:
    import httpx

    times, errors = [], []
    body = wav.read_bytes()
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(count):
            started = time.monotonic()
            try:
                r = await client.post(f"{url}/v1/audio/transcriptions", files={"file": (wav.name, body)})
            except httpx.HTTPError as e:
                errors.append(repr(e))
                continue
            if r.status_code == 200:
                times.append(time.monotonic() - started)
            else:
                errors.append(f"HTTP {r.status_code}: {r.text[:200]}")
    return {"count": count, "audio_s": round(sf.info(wav).duration, 2), "p50_s": pct(times, 50),
            "p95_s": pct(times, 95), "errors": errors}


async def wait_healthy(url: str, timeout_s: float, alive=lambda: True) -> float:
    """Seconds until GET /health answers 200 (a replica takes ~10 s to load its model)."""
    import httpx

    started = time.monotonic()
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() - started < timeout_s:
            if not alive():
                raise RuntimeError("the server exited")
            try:
                if (await client.get(f"{url}/health")).status_code == 200:
                    return round(time.monotonic() - started, 1)
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{url}/health was not 200 within {timeout_s} s")


async def measure(url: str, args, load: dict) -> dict:
    """The four measurements through one path, after a warm-up stream (the first decodes are slower)."""
    await stream_audio(url, load["live"][0][: 5 * 32000], reconnect=False)
    out = {"load_avg_1m": round(os.getloadavg()[0], 2)}
    out["live"] = await live(url, load["live"])
    out["load_avg_1m_after_live"] = round(os.getloadavg()[0], 2)
    out["throughput"] = await throughput(url, load["long"])
    out["round_trip"] = await round_trips(url, args.round_trips)
    out["upload"] = await uploads(url, UPLOAD_WAV, args.uploads)
    return out


# --- the paths -----------------------------------------------------------------------------------

def bench_config(directory: Path) -> tuple[Path, dict]:
    """deploy/ray/serve.yaml with one replica of REPLICA_CPUS (no autoscaling: every path has one
    server); also the application's args, which the direct server gets as flags."""
    path = serve_config(directory / "serve.yaml", cpus=REPLICA_CPUS, num_replicas=1)
    (app,) = yaml.safe_load(path.read_text())["applications"]
    return path, app.get("args") or {}


def run_direct(args, load: dict, sasr_args: dict) -> dict:
    """`sasr serve` in the worker's namespace, with the replica's settings and thread count (OMP_NUM_THREADS,
    which torch's CPU thread pool follows)."""
    cluster = Cluster(workers=1, prefix=PREFIX)
    worker = cluster.workers[0]
    flags = [x for k, v in sasr_args.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    env = {**os.environ, "OMP_NUM_THREADS": str(REPLICA_CPUS)}
    with tempfile.NamedTemporaryFile("w+", prefix="sasr-bench-ingress-", suffix=".log") as log:
        proc = None
        try:
            cluster.create()
            proc = subprocess.Popen(["ip", "netns", "exec", worker.netns, sys.executable, "-m", "sasr", "serve",
                                     "--host", worker.address, "--port", str(PORT), "--log-level", "warning", *flags],
                                    stdout=log, stderr=subprocess.STDOUT, env=env)
            url = f"http://{worker.address}:{PORT}"
            ready_s = cluster.in_client(wait_healthy(url, HEALTHY_TIMEOUT_S, alive=lambda: proc.poll() is None),
                                       timeout=HEALTHY_TIMEOUT_S + 10)
            out = {"ready_s": ready_s}
            out.update(cluster.in_client(measure(url, args, load), timeout=3600))
            return out
        except Exception:
            log.seek(0)
            print(f"direct: server log:\n{log.read()[-3000:]}", flush=True)
            raise
        finally:
            if proc is not None:
                stop_process(proc)
            cluster.close()


def run_ray(path: str, args, load: dict, config: Path) -> dict:
    """A fresh cluster with the ingress chosen at `ray start`, the bench config deployed, measured."""
    cluster = Cluster(workers=1, prefix=PREFIX, env={
        "RAY_SERVE_ENABLE_HA_PROXY": "1" if path == "haproxy" else "0",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",  # a quick teardown
    })
    try:
        cluster.create()
        started = time.monotonic()
        cluster.start_ray(cpus_per_worker=REPLICA_CPUS)
        cluster.serve_run(config)
        cluster.in_client(wait_healthy(cluster.url, HEALTHY_TIMEOUT_S), timeout=HEALTHY_TIMEOUT_S + 10)
        out = {"ready_s": round(time.monotonic() - started, 1), "haproxy_on_head": haproxy_running(cluster)}
        out.update(cluster.in_client(measure(cluster.url, args, load), timeout=3600))
        return out
    except Exception:
        print(f"{path}: Serve logs:\n{cluster.logs(tail=20)[-6000:]}", flush=True)
        raise
    finally:
        cluster.close()


def haproxy_running(cluster: Cluster) -> bool:
    """Whether an haproxy process runs on the head (the check that the flag took effect)."""
    for pid in cluster.head.pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "haproxy":
                return True
        except OSError:
            continue
    return False


# --- the report ----------------------------------------------------------------------------------

ROWS = [  # (label, section, key): rows with an overhead against direct
    ("live event p50", "live", "p50_s"),
    ("live event p95", "live", "p95_s"),
    ("live event p99", "live", "p99_s"),
    ("60 s as fast: to final", "throughput", "to_final_s"),
    ("round trip p50", "round_trip", "p50_s"),
    ("round trip p95", "round_trip", "p95_s"),
    ("upload p50", "upload", "p50_s"),
    ("upload p95", "upload", "p95_s"),
]


def overheads(results: dict) -> dict:
    """Per path: each row's number minus direct's, in seconds."""
    direct = results.get("direct")
    if not direct or "error" in direct:
        return {}
    out = {}
    for path, r in results.items():
        if path == "direct" or "error" in r:
            continue
        out[path] = {f"{section}.{key}": round(r[section][key] - direct[section][key], 4)
                     for _, section, key in ROWS
                     if r[section].get(key) is not None and direct[section].get(key) is not None}
    return out


def table(results: dict, extra: dict) -> list[str]:
    paths = list(results)
    ok = {p: r for p, r in results.items() if "error" not in r}
    direct = ok.get("direct")

    def cell(path: str, section: str, key: str, scale: float = 1000, unit: str = "ms") -> str:
        value = ok[path][section].get(key) if path in ok else None
        if value is None:
            return "n/a"
        text = f"{value * scale:.0f}{unit}"
        base = direct[section].get(key) if direct and path != "direct" else None
        return text + (f" ({(value - base) * scale:+.0f})" if base is not None else "")

    width = 22
    lines = ["metric".ljust(26) + "".join(p.rjust(width) for p in paths)]
    for label, section, key in ROWS:
        lines.append(label.ljust(26) + "".join(cell(p, section, key).rjust(width) for p in paths))
    lines.append("60 s as fast: frames/s".ljust(26)
                 + "".join(cell(p, "throughput", "frames_per_s", 1, "").rjust(width) for p in paths))
    lines.append("live events timed".ljust(26)
                 + "".join(str(ok[p]["live"]["events"] if p in ok else "n/a").rjust(width) for p in paths))
    for label, key in (("haproxy on head", "haproxy_on_head"),
                       ("load avg after live", "load_avg_1m_after_live")):
        lines.append(label.ljust(26) + "".join(str(ok[p].get(key, "-") if p in ok else "n/a").rjust(width) for p in paths))
    lines.append("(ms; in brackets: minus direct)")
    for path, r in results.items():
        if "error" in r:
            lines.append(f"{path}: FAILED: {r['error']}")
            continue
        problems = {s: r[s]["errors"] for s in ("live", "throughput", "round_trip", "upload") if r[s]["errors"]}
        for section, errors in problems.items():
            lines.append(f"{path}: {section}: {len(errors)} problem(s): {'; '.join(sorted(set(errors)))[:300]}")
    lines.append(f"sessions={extra['sessions']} x {extra['seconds']:g}s live, wall {extra['wall_s']}s")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=4, help="live sessions at the pace of speech")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per live session")
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--throughput-seconds", type=float, default=60.0, help="the file sent as fast as it goes")
    parser.add_argument("--round-trips", type=int, default=50)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--corpus-dir", default=os.environ.get("SASR_BENCH_DIR") or "bench/.corpus")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    if unknown := set(paths) - set(PATHS):
        parser.error(f"unknown paths {sorted(unknown)}; paths: {', '.join(PATHS)}")
    if why := can_make_namespaces():
        sys.exit(f"bench.ingress {why}")

    corpus_dir = Path(args.corpus_dir)
    load = {"live": live_clips(corpus_dir, args.sessions, args.seconds),
            "long": long_clip(corpus_dir, args.throughput_seconds)}
    out = {"machine": machine(), "cpu_count": os.cpu_count(),
           "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"), "args": vars(args), "load_avg_at_start": round(os.getloadavg()[0], 2), "results": {}}
    if out["load_avg_at_start"] > 0.5:
        print(f"note: load average {out['load_avg_at_start']} before the run: other processes share the CPU, "
              "latencies will be inflated", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sasr-bench-ingress-") as tmp:
        config, sasr_args = bench_config(Path(tmp))
        out["serve_config"] = yaml.safe_load(config.read_text())
        for path in paths:
            phase = time.monotonic()
            print(f"{path}: starting", flush=True)
            try:
                r = run_direct(args, load, sasr_args) if path == "direct" else run_ray(path, args, load, config)
            except Exception as e:  # noqa: BLE001 - one failed path is reported, the others still measured
                r = {"error": repr(e)[:1000]}
            r["phase_s"] = round(time.monotonic() - phase)
            out["results"][path] = r
            print(f"{path}: done in {r['phase_s']}s" + (f": {r['error']}" if "error" in r else ""), flush=True)
    out["wall_s"] = round(time.monotonic() - started)
    out["overhead_s"] = overheads(out["results"])
    lines = out["table"] = table(out["results"], {"sessions": args.sessions, "seconds": args.seconds,
                                                  "wall_s": out["wall_s"]})
    print("\n" + "\n".join(lines), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
