"""Live streaming, accuracy and load: the streamed text against the same file uploaded, and N real-time sessions.

    python -m bench.stream_load [--slices short,long,voices,real] [--levels 1,2,4,8,12,16]
                                [--skip-accuracy] [--skip-load] [--peer whisperlive] [--json out.json]
                                [--server-args "..."]

The corpus (bench/corpus.py) comes in slices of different kinds of audio: short utterances, long
passages with pauses, one paragraph in many voices and channels, and real recordings.

Accuracy pass, per slice: every file is streamed over the WebSocket as fast as the server takes it
(two files at a time) and uploaded once (`POST /v1/audio/transcriptions`). One line per slice: the
streamed final text's WER, the one-shot WER, the gap, and whether the gap is within 0.03. The
reference is the file's text; a recording without one is scored against the one-shot transcript
(so its one-shot WER is 0 and the gap is the streamed text's distance from it). Also: the WER of the
committed words alone (the deltas) and the streamed text against the one-shot text.

Load pass, on a fresh server: N concurrent sessions at the pace of speech (starts staggered over
1 s), each replaying a file of 12-40 s with a reference (from the chosen slices), with partials on.
One line per level:
- event latency p50/p95/p99: each event's arrival minus when the frame holding its `audio_ms` was sent;
- word p95: each committed word's delta arrival minus when the audio at its `end_ms` was sent (where
  deltas carry `end_ms`);
- first word (first delta after the first frame), end->final (session.end to transcript.final),
  real-time factor (final's arrival / audio length), WER, peak server memory (VmHWM);
- fairness: the worst session's p95 event latency over the median session's.
A last line gives the most sessions held at event p95 < 1 s and word p95 < 2.5 s.

`--realtime` also runs sasr over OpenAI's Realtime API (`/v1/realtime` with the `openai` SDK, GA,
server_vad at OpenAI's defaults, 24 kHz PCM16 appends of 100 ms, a commit after the last) through both
passes, as engine `sasr-realtime`: its text is the items' completed transcripts joined, its events
with an audio position are timed as above (an item's completion at its speech_stopped), and its deltas
carry no word times, so it has no word latency (the capacity line counts event p95 alone for it).

`--peer whisperlive` runs WhisperLive 0.10.0 (bench/whisperlive_peer.py) through both passes on the
same files and weights, at real-time pace (it cannot take audio faster), one-shot through its own
REST upload; its lines follow sasr's. Its events are its segment messages that cover audio beyond
earlier ones (up to the latest segment end; its repeats of the same segments are not timed), its
committed words those of completed segments, timed by the segment's end (a lower bound for the
words before it); a session still changing its text 60 s after its last frame is cut off, counted
as unfinished, with 60 s as its end->final. Without a transcript, its one-shot WER is against sasr's
one-shot text.

Latency is wall time on this machine: other processes using the CPU inflate it, so each level
records the load average, and a run that starts on a busy machine says so. `--json` writes every
number: `corpus` (files, durations, references), `accuracy` {engine: {slice: ...}}, `accuracy_items`
{engine: [per file reference, one-shot, streamed and committed text]}, `load` {engine: [per level]},
`held`, `summary` (the printed lines), and `results` (sasr's load levels, the previous file's key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from bench import corpus as bench_corpus
from bench.corpus import Item, words
from bench.http_load import machine
from bench.whisperlive_peer import MAX_WAIT_S
from sasr.client import StreamResult, stream_audio, to_pcm16
from tests.support.server import Server
from tests.support.wer import edit_distance

EVENT_P95_TARGET_S = 1.0
WORD_P95_TARGET_S = 2.5
GAP_TARGET = 0.03
LOAD_FILE_S = (12.0, 40.0)  # load sessions replay files of this length


@dataclass
class Run:
    """One streamed file, engine-neutral; times in seconds after its first frame was sent."""
    name: str
    audio_s: float
    text: str  # final transcript
    committed: str  # the words committed while streaming (sasr: deltas; WhisperLive: completed segments)
    event_latency_s: list[float] = field(default_factory=list)
    word_latency_s: list[float] = field(default_factory=list)  # per committed word, where its end time is known
    first_word_s: float = float("nan")
    first_text_s: float = float("nan")
    end_to_final_s: float = float("nan")
    total_s: float = float("nan")  # first frame to final
    finished: bool = True  # the final text came (sasr: transcript.final; WhisperLive: it went quiet)


def sent_at(sent_s: list[float], frame_ms: list[int], ms: float) -> float:
    """When the frame holding audio position `ms` was sent."""
    return sent_s[min(int(np.searchsorted(frame_ms, ms)), len(frame_ms) - 1)]


def sasr_run(name: str, audio_s: float, r: StreamResult) -> Run:
    final = r.final or {}
    run = Run(name, audio_s, final.get("text", ""), "".join(e["delta"] for e in r.events if e["type"] == "transcript.delta"))
    for i, (t, e) in enumerate(zip(r.arrival_s, r.events)):
        if e["type"] == "transcript.delta":
            if np.isnan(run.first_word_s):
                run.first_word_s = t
            if e.get("end_ms") is not None:
                run.word_latency_s += [t - sent_at(r.sent_s, r.frame_ms, e["end_ms"])] * max(1, len(e["delta"].split()))
        has_text = bool((e.get("delta") or e.get("text") or "").strip())
        if e["type"] in ("transcript.delta", "transcript.partial") and has_text and np.isnan(run.first_text_s):
            run.first_text_s = t
        if e["type"] != "transcript.final" and "audio_ms" in e:
            run.event_latency_s.append(r.latency_s(i))
    run.finished = final is not None
    if final:
        run.total_s = r.arrival_s[r.events.index(final)]
        run.end_to_final_s = run.total_s - r.end_sent_s
    return run


def peer_run(name: str, audio_s: float, p) -> Run:
    run = Run(name, audio_s, p.text, " ".join(text.strip() for _, _, text in p.committed), first_text_s=p.first_text_s,
              finished=p.finished)
    run.event_latency_s = [t - sent_at(p.sent_s, p.frame_ms, ms) for t, ms in p.events]
    for t, end_ms, text in p.committed:
        run.word_latency_s += [t - sent_at(p.sent_s, p.frame_ms, end_ms)] * max(1, len(text.split()))
    run.first_word_s = p.committed[0][0] if p.committed else float("nan")
    # an unfinished session was still changing its text when cut off: its final time is at least then
    run.total_s = max(p.final_s, p.end_sent_s) if p.finished else p.end_sent_s + MAX_WAIT_S
    run.end_to_final_s = run.total_s - p.end_sent_s
    return run


# --- engines -------------------------------------------------------------------------------------

class Sasr:
    name = "sasr"

    def __init__(self, server_args: str) -> None:
        self.server = Server(*server_args.split())

    async def stream(self, item: Item, realtime: bool) -> Run:
        audio = read(item)
        r = await stream_audio(self.server.url, to_pcm16(audio), realtime=realtime, start={"partials": True},
                               reconnect=False)  # a failure is measured, not papered over
        return sasr_run(item.name, len(audio) / 16000, r)

    async def upload(self, item: Item) -> str:
        import httpx

        async with httpx.AsyncClient(timeout=600) as client:
            r = await client.post(f"{self.server.url}/v1/audio/transcriptions",
                                  files={"file": (item.path.name, item.path.read_bytes())})
        r.raise_for_status()
        return r.json()["text"]

    def peak_rss_mb(self) -> float:
        return self.server.peak_rss_mb()

    def stop(self) -> None:
        self.server.stop()


class SasrRealtime(Sasr):
    """The same server over OpenAI's Realtime API (the `openai` SDK, GA, server_vad at its defaults)."""

    name = "sasr-realtime"

    async def stream(self, item: Item, realtime: bool) -> Run:
        audio = read(item)
        return realtime_run(item.name, len(audio) / 16000, await stream_realtime(self.server.url, audio, realtime))


@dataclass
class RealtimeResult:
    events: list[dict] = field(default_factory=list)
    arrival_s: list[float] = field(default_factory=list)  # per event, seconds after the first append
    sent_s: list[float] = field(default_factory=list)  # per append, when it was sent
    frame_ms: list[int] = field(default_factory=list)  # per append, session audio sent up to its end
    end_sent_s: float = 0.0  # when the closing commit was sent


async def stream_realtime(url: str, audio: np.ndarray, realtime: bool) -> RealtimeResult:
    """Send 24 kHz PCM16 in 100 ms appends, then commit what is left; return the events until every item
    has completed (the closing commit makes an item of its own, or is refused as empty)."""
    import base64

    import openai
    import soxr

    out = RealtimeResult()
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-unused", max_retries=0)
    pcm = to_pcm16(soxr.resample(audio, 16000, 24000))
    async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
        await conn.recv()  # session.created
        t0 = time.monotonic()

        async def read() -> None:
            closing_item = None
            while True:
                event = (await conn.recv()).model_dump(exclude_unset=True)
                out.events.append(event)
                out.arrival_s.append(time.monotonic() - t0)
                kind = event["type"]
                if out.end_sent_s and kind == "input_audio_buffer.committed":
                    stopped = {e.get("item_id") for e in out.events if e["type"] == "input_audio_buffer.speech_stopped"}
                    closing_item = closing_item or (event["item_id"] if event["item_id"] not in stopped else None)
                refused = kind == "error" and event["error"]["code"] == "input_audio_buffer_commit_empty"
                done = closing_item or refused
                committed = sum(e["type"] == "input_audio_buffer.committed" for e in out.events)
                completed = sum(e["type"].endswith("transcription.completed") for e in out.events)
                if done and committed == completed:
                    return

        reader = asyncio.create_task(read())
        step = 4800  # 100 ms at 24 kHz, 2 bytes a sample
        for i in range(0, len(pcm), step):
            if realtime:
                await asyncio.sleep(max(0.0, t0 + i / 48000 - time.monotonic()))
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm[i : i + step]).decode())
            out.sent_s.append(time.monotonic() - t0)
            out.frame_ms.append(min(i + step, len(pcm)) // 48)
        out.end_sent_s = time.monotonic() - t0
        await conn.input_audio_buffer.commit()
        await asyncio.wait_for(reader, MAX_WAIT_S * 10)
    return out


def realtime_run(name: str, audio_s: float, r: RealtimeResult) -> Run:
    """Events with an audio position (speech started/stopped; an item's completion at its speech's end
    or at the end of the audio) are timed as the seed protocol's; deltas carry no word times, so no word
    latency."""
    transcripts = [e["transcript"] for e in r.events if e["type"].endswith("transcription.completed")]
    deltas = [e["delta"] for e in r.events if e["type"].endswith("transcription.delta")]
    run = Run(name, audio_s, " ".join(t for t in transcripts if t), "".join(deltas))
    speech_end = {e["item_id"]: e["audio_end_ms"] for e in r.events if e["type"] == "input_audio_buffer.speech_stopped"}
    for t, e in zip(r.arrival_s, r.events):
        ms = e.get("audio_start_ms", e.get("audio_end_ms"))
        if e["type"].endswith("transcription.completed"):
            ms = speech_end.get(e["item_id"], r.frame_ms[-1])
        if ms is not None:
            run.event_latency_s.append(t - sent_at(r.sent_s, r.frame_ms, ms))
        if e["type"].endswith("transcription.delta") and np.isnan(run.first_word_s):
            run.first_word_s = run.first_text_s = t
    run.total_s = r.arrival_s[-1] if r.arrival_s else float("nan")
    run.end_to_final_s = run.total_s - r.end_sent_s
    return run


class WhisperLive:
    name = "whisperlive"

    def __init__(self, rest: bool, model_per_session: bool) -> None:
        from bench.whisperlive_peer import PeerServer
        from sasr.models.whisper.load import bundled_model_dir

        self.server = PeerServer(Path(bundled_model_dir()).resolve(), rest=rest, model_per_session=model_per_session)

    async def stream(self, item: Item, realtime: bool) -> Run:
        from bench.whisperlive_peer import stream

        audio = read(item)  # always at real time: it keeps at most 45 s of audio and drops the rest
        return peer_run(item.name, len(audio) / 16000, await stream(self.server, audio, realtime=True))

    async def upload(self, item: Item) -> str:
        return await self.server.upload(item.path)

    def peak_rss_mb(self) -> float:
        return self.server.peak_rss_mb()

    def stop(self) -> None:
        self.server.stop()


def start(engine: str, args, rest: bool = False):
    if engine == "sasr":
        return Sasr(args.server_args)
    if engine == "sasr-realtime":
        return SasrRealtime(args.server_args)
    return WhisperLive(rest=rest, model_per_session=not args.peer_single_model)


_AUDIO: dict[Path, np.ndarray] = {}


def read(item: Item) -> np.ndarray:
    if item.path not in _AUDIO:
        _AUDIO[item.path] = sf.read(item.path, dtype="float32")[0]
    return _AUDIO[item.path]


# --- accuracy pass -------------------------------------------------------------------------------

def pooled_wer(refs: list[str], hyps: list[str]) -> float:
    """Edits over all files / reference words over all files (numbers compared as words)."""
    num_words = sum(len(words(r)) for r in refs)
    return sum(edit_distance(words(r), words(h)) for r, h in zip(refs, hyps)) / max(num_words, 1)


async def accuracy(engine, corpus: dict[str, list[Item]], concurrency: int) -> list[dict]:
    """Stream (as fast as it takes it; WhisperLive at real time) and upload every file: per file texts."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: Item) -> dict:
        async with gate:
            try:
                started = time.monotonic()
                run = await engine.stream(item, realtime=False)
                stream_wall_s = time.monotonic() - started
                text = await engine.upload(item)
            except Exception as e:  # noqa: BLE001 - one failed file is reported, the rest still measured
                print(f"accuracy {engine.name}: {item.name} failed: {e!r}", flush=True)
                return {"name": item.name, "error": repr(e)}
        return {"name": item.name, "audio_s": round(run.audio_s, 2), "reference": item.text, "oneshot": text,
                "stream": run.text, "committed": run.committed, "finished": run.finished,
                "stream_wall_s": round(stream_wall_s, 2)}

    items = [item for slice_items in corpus.values() for item in slice_items]
    return await asyncio.gather(*(one(item) for item in items))


def accuracy_summary(results: list[dict], oneshot: dict[str, str]) -> dict:
    """One slice: WERs against the reference (or the sasr one-shot text where there is none)."""
    refs = [r["reference"] if r["reference"] is not None else oneshot[r["name"]] for r in results]
    stream_wer = pooled_wer(refs, [r["stream"] for r in results])
    per_file = [pooled_wer([ref], [r["stream"]]) - pooled_wer([ref], [r["oneshot"]]) for ref, r in zip(refs, results)]
    worst = int(np.argmax(per_file))
    oneshot_wer = pooled_wer(refs, [r["oneshot"] for r in results])
    return {
        "files": len(results), "audio_s": round(sum(r["audio_s"] for r in results), 1),
        "with_reference": sum(r["reference"] is not None for r in results),
        "stream_wer": round(stream_wer, 3), "oneshot_wer": round(oneshot_wer, 3),
        "gap": round(stream_wer - oneshot_wer, 3), "gap_ok": stream_wer - oneshot_wer <= GAP_TARGET,
        "committed_wer": round(pooled_wer(refs, [r["committed"] for r in results]), 3),
        "stream_vs_oneshot_wer": round(pooled_wer([r["oneshot"] for r in results], [r["stream"] for r in results]), 3),
        "files_worse": sum(d > 0 for d in per_file), "files_better": sum(d < 0 for d in per_file),
        "worst_file": results[worst]["name"], "worst_file_gap": round(per_file[worst], 3),
        "stream_rtf": round(sum(r["stream_wall_s"] for r in results) / sum(r["audio_s"] for r in results), 3),
    }


def accuracy_line(engine: str, slice_name: str, s: dict) -> str:
    return (f"accuracy {engine:<11} {slice_name:<6} files={s['files']:<3} audio={s['audio_s']:>5.0f}s "
            f"stream wer={s['stream_wer']:.3f} one-shot wer={s['oneshot_wer']:.3f} gap={s['gap']:+.3f} "
            f"{'ok' if s['gap_ok'] else 'FAIL'} (<= {GAP_TARGET}) committed wer={s['committed_wer']:.3f} "
            f"stream-vs-one-shot={s['stream_vs_oneshot_wer']:.3f} files worse/better={s['files_worse']}/"
            f"{s['files_better']} worst={s['worst_file']} ({s['worst_file_gap']:+.2f}) stream rtf={s['stream_rtf']:.2f}"
            + (f" failed={s['failed']}" if s.get("failed") else "")
            + (f" unfinished={s['unfinished']}" if s.get("unfinished") else ""))


# --- load pass -----------------------------------------------------------------------------------

def load_pool(corpus: dict[str, list[Item]]) -> list[Item]:
    """Files with a reference, 12-40 s long (any length if the slices have none)."""
    with_ref = [i for items in corpus.values() for i in items if i.text is not None]
    pool = [i for i in with_ref if LOAD_FILE_S[0] <= bench_corpus.duration_s(i) <= LOAD_FILE_S[1]]
    return pool or with_ref


async def load_level(engine, pool: list[Item], num_sessions: int) -> dict:
    rng = random.Random(num_sessions)
    jobs = [pool[i % len(pool)] for i in range(num_sessions)]

    async def one(item: Item, delay_s: float) -> Run:
        await asyncio.sleep(delay_s)  # staggered starts, as real users arrive
        return await engine.stream(item, realtime=True)

    outcomes = await asyncio.gather(*(one(item, rng.uniform(0, 1.0)) for item in jobs), return_exceptions=True)
    runs = [(item, r) for item, r in zip(jobs, outcomes) if isinstance(r, Run)]
    errors = [repr(r) for r in outcomes if not isinstance(r, Run)]
    result = {"engine": engine.name, "sessions": num_sessions, "failed": len(errors), "errors": errors[:3],
              "unfinished": sum(not r.finished for _, r in runs), "load_avg_1m": round(os.getloadavg()[0], 2)}
    if runs:
        result.update(load_metrics([r for _, r in runs], [item.text for item, _ in runs]))
    result["peak_rss_mb"] = round(engine.peak_rss_mb())
    return result


def load_metrics(runs: list[Run], refs: list[str]) -> dict:
    def pct(xs, q):
        xs = [x for x in xs if not np.isnan(x)]
        return round(float(np.percentile(xs, q)), 3) if xs else None

    events = [x for r in runs for x in r.event_latency_s]
    word = [x for r in runs for x in r.word_latency_s]
    session_p95 = [float(np.percentile(r.event_latency_s, 95)) for r in runs if r.event_latency_s]
    median_p95 = float(np.median(session_p95)) if session_p95 else float("nan")
    return {
        "events": len(events), "chunk_p50_s": pct(events, 50), "chunk_p95_s": pct(events, 95),
        "chunk_p99_s": pct(events, 99), "words_timed": len(word), "word_p50_s": pct(word, 50),
        "word_p95_s": pct(word, 95), "first_word_p50_s": pct([r.first_word_s for r in runs], 50),
        "first_word_p95_s": pct([r.first_word_s for r in runs], 95),
        "first_text_p50_s": pct([r.first_text_s for r in runs], 50),
        "end_to_final_p50_s": pct([r.end_to_final_s for r in runs], 50),
        "end_to_final_p95_s": pct([r.end_to_final_s for r in runs], 95),
        "rtf_p95": pct([r.total_s / r.audio_s for r in runs], 95),
        "wer": round(pooled_wer(refs, [r.text for r in runs]), 3),
        "fairness": round(max(session_p95) / median_p95, 2) if session_p95 and median_p95 > 0 else None,
        "session_p95_s": [round(x, 3) for x in session_p95],
    }


def held(r: dict) -> bool:
    """Event p95 under 1 s and (where words are timed) word p95 under 2.5 s, every session finished."""
    if r["failed"] or r["unfinished"] or r.get("chunk_p95_s") is None or r["chunk_p95_s"] >= EVENT_P95_TARGET_S:
        return False
    return r["word_p95_s"] is None or r["word_p95_s"] < WORD_P95_TARGET_S


def load_line(r: dict) -> str:
    if r.get("chunk_p95_s") is None:
        return f"load {r['engine']:<11} streams={r['sessions']:<3} all sessions failed: {r['errors'][:1]}"
    f = lambda x, spec=".2f", unit="s": "n/a" if x is None else f"{x:{spec}}{unit}"
    return (f"load {r['engine']:<11} streams={r['sessions']:<3} event p50={f(r['chunk_p50_s'])} "
            f"p95={f(r['chunk_p95_s'])} p99={f(r['chunk_p99_s'])} word p95={f(r['word_p95_s'])} "
            f"first_word={f(r['first_word_p50_s'])} end->final p95={f(r['end_to_final_p95_s'])} "
            f"rtf p95={f(r['rtf_p95'], unit='')} wer={r['wer']:.3f} fairness={f(r['fairness'], unit='')} "
            f"peak_rss={r['peak_rss_mb']}MB" + (f" failed={r['failed']}" if r["failed"] else "")
            + (f" unfinished={r['unfinished']}" if r["unfinished"] else ""))


async def load_sweep(engine, pool: list[Item], levels: list[int]) -> list[dict]:
    await engine.stream(pool[0], realtime=True)  # warm up
    results = []
    for level in levels:
        r = await load_level(engine, pool, level)
        results.append(r)
        print(load_line(r), flush=True)
    return results


# --- the run -------------------------------------------------------------------------------------

async def bench_engine(name: str, args, corpus: dict[str, list[Item]], oneshot: dict[str, str], out: dict) -> None:
    levels = [int(x) for x in args.levels.split(",") if x]
    if not args.skip_accuracy:
        engine = start(name, args, rest=True)
        try:
            items = await accuracy(engine, corpus, args.peer_concurrency if name == "whisperlive" else args.accuracy_concurrency)
        finally:
            engine.stop()
        if name.startswith("sasr"):
            oneshot.update({r["name"]: r["oneshot"] for r in items if "error" not in r})
        out["accuracy_items"][name] = items
        out["accuracy"][name] = {}
        for slice_name, slice_items in corpus.items():
            names = {i.name for i in slice_items}
            mine = [r for r in items if r["name"] in names]
            results = [r for r in mine if "error" not in r and (r["reference"] is not None or r["name"] in oneshot)]
            if results:
                s = out["accuracy"][name][slice_name] = accuracy_summary(results, oneshot)
                s["failed"] = sum("error" in r for r in mine)
                s["unfinished"] = sum(not r["finished"] for r in results)
                print(accuracy_line(name, slice_name, s), flush=True)
    if not args.skip_load:
        engine = start(name, args)
        try:
            out["load"][name] = await load_sweep(engine, load_pool(corpus), levels)
        finally:
            engine.stop()


def summary(out: dict) -> list[str]:
    lines = [accuracy_line(engine, s, r) for s in out["corpus"] for engine, by_slice in out["accuracy"].items()
             for slice_name, r in by_slice.items() if slice_name == s]
    by_level = {}
    for engine_results in out["load"].values():
        for r in engine_results:
            by_level.setdefault(r["sessions"], []).append(load_line(r))
    lines += [line for level in sorted(by_level) for line in by_level[level]]
    if out["load"]:
        most = {e: max([r["sessions"] for r in rs if held(r)], default=0) for e, rs in out["load"].items()}
        out["held"] = most
        lines.append(f"most concurrent real-time sessions at event p95 < {EVENT_P95_TARGET_S:g}s and word p95 < "
                     f"{WORD_P95_TARGET_S:g}s: " + ", ".join(f"{e} {n}" for e, n in most.items()))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--levels", default="1,2,4,8,12,16")
    parser.add_argument("--slices", default=",".join(bench_corpus.SLICES))
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--peer", choices=["whisperlive"], default=None, help="also run this peer through both passes")
    parser.add_argument("--realtime", action="store_true",
                        help="also run sasr over OpenAI's Realtime API (/v1/realtime, server_vad) through both passes")
    parser.add_argument("--peer-single-model", action="store_true",
                        help="WhisperLive: one model shared by all sessions (default: one per session)")
    parser.add_argument("--accuracy-concurrency", type=int, default=2, help="files streamed at once (sasr)")
    parser.add_argument("--peer-concurrency", type=int, default=2, help="files streamed at once (peer, real time)")
    parser.add_argument("--corpus-dir", default=os.environ.get("SASR_BENCH_DIR") or "bench/.corpus")
    parser.add_argument("--json", default=None)
    parser.add_argument("--server-args", default="")
    args = parser.parse_args()

    corpus = bench_corpus.build(Path(args.corpus_dir), tuple(args.slices.split(",")))
    described = bench_corpus.describe(corpus)
    print("corpus: " + ", ".join(f"{s} {d['files']} files {d['audio_s']:.0f}s ({d['with_reference']} with reference)"
                                 for s, d in described.items()), flush=True)
    out = {"machine": machine(), "args": vars(args), "corpus": described, "accuracy": {}, "accuracy_items": {},
           "load": {}}
    oneshot: dict[str, str] = {}
    out["load_avg_at_start"] = busy = round(os.getloadavg()[0], 2)
    if busy > 0.5:
        print(f"note: load average {busy} before the run: other processes share the CPU, latencies will be inflated")
    started = time.monotonic()
    for engine in ["sasr"] + (["sasr-realtime"] if args.realtime else []) + ([args.peer] if args.peer else []):
        asyncio.run(bench_engine(engine, args, corpus, oneshot, out))
    out["wall_s"] = round(time.monotonic() - started)
    lines = out["summary"] = summary(out)
    print("\nsummary\n" + "\n".join(lines), flush=True)
    out["results"] = out["load"].get("sasr", [])  # the previous JSON's key: sasr's load levels
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
