"""The Whisper live policy at the pace of speech, in-process and deterministic: per corpus slice, the
streamed text's WER against the upload of the same file, how long committed words wait on the audio
clock, and the model time a session costs.

    python -m bench.live_policy [--slices short,long,voices,real] [--set NAME=VALUE ...] [--quantize MODE]
                                [--shifts S,S,...] [--pace live|file] [--device cpu|cuda]
                                [--commits early|final] [--endpoint-ms MS]
                                [--json out.json]

Each file of the streaming bench's corpus (bench/corpus.py) goes through a live Session 0.1 s at a
time, each frame fully handled before the next (tests/support/live.py, pace "live"), so every
decode point is met: the result depends on the audio and the policy alone, not on the machine's
load, unlike `make bench-stream`'s load pass. Per slice:
    live / upload  corpus WER of the streamed final text and of the upload (files without a reference
                   text: the upload is the reference), as `make bench` scores (numbers as written;
                   `make bench-stream` also reads numbers as words, so its WERs differ a little)
    word p50/p95   audio received when a word was committed, minus its end (the policy's share of
                   word latency; the decode time comes on top)
    model RTF      seconds of decodes per second of audio for one session (this machine)
`--set` changes a constant of sasr.models.whisper.live for the run (a lever to measure), e.g.
`--set GUARD_S=1.0`. `--quantize` picks the weights' CPU mode as `sasr serve --quantize` does (auto:
bf16 on a CPU with AMX, int8 on one with VNNI). `--shifts 0,0.07,0.19` streams (and uploads) each file
once per shift, after that much silence: tiny.en's text on hard audio turns on where its windows
fall (a telephone rendering's first sentence reads "The old bridge" or "It all really" as its window
starts 50 ms earlier or later), so one pass measures a lever's luck as much as the lever.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.corpus import SLICES, build
from bench.http_load import corpus_wer
from sasr.engine import LiveOptions, TranscriptionRequest
from sasr.models.quant import QUANTIZE_MODES
from sasr.models.whisper import live
from sasr.models.whisper.engine import WhisperEngine
from sasr.models.whisper.load import load_whisper
from tests.support.live import replay_stream
from tests.support.speech import read16k


class Recorder:
    """Model time of the session's decodes, and how long each committed word waited (since reset)."""

    def __init__(self, engine: WhisperEngine) -> None:
        self.reset()
        run_window, update = engine.run_window, live.StreamingPolicy.update

        async def timed(job):
            started = time.perf_counter()
            result = await run_window(job)
            self.busy_s += time.perf_counter() - started
            return result

        def recorded(policy, job, result, final=False):
            words = update(policy, job, result, final)
            heard_s = policy.tracker.position / 16000  # the audio received at this decision point
            self.waits.extend(heard_s - w.end_s for w in words if w.end_s is not None)
            return words

        engine.run_window, live.StreamingPolicy.update = timed, recorded

    def reset(self) -> None:
        self.busy_s, self.waits = 0.0, []


async def run(args) -> dict:
    corpus = build(Path(args.corpus_dir), tuple(args.slices.split(",")))
    dtype = torch.float16 if args.device == "cuda" else torch.float32  # as `sasr serve --dtype auto` picks
    engine = WhisperEngine(load_whisper(None, args.device, dtype, quantize=args.quantize), max_num_seqs=8)
    recorder = Recorder(engine)
    results = {}
    for name, items in corpus.items():
        texts = {shift: ([], [], []) for shift in args.shifts}  # references, streamed, uploaded
        waits, busy_s, audio_s, items_out = [], 0.0, 0.0, []
        for shift, item in itertools.product(args.shifts, items):
            audio = np.concatenate([np.zeros(round(shift * 16000), np.float32), read16k(item.path)])
            upload = "".join(s.text for s in (await engine.transcribe(TranscriptionRequest(audio))).segments)
            recorder.reset()
            events = await replay_stream(engine, audio, pace=args.pace, options=LiveOptions(args.commits, args.endpoint_ms))
            for kept, text in zip(texts[shift], (item.text or upload, events[-1].text, upload)):
                kept.append(text)
            items_out.append({"name": item.name, "shift": shift, "live": events[-1].text, "upload": upload})
            waits += recorder.waits if args.pace == "live" else []
            busy_s, audio_s = busy_s + recorder.busy_s, audio_s + len(audio) / 16000
        refs, streamed, uploaded = ([text for kept in texts.values() for text in kept[k]] for k in range(3))
        live_wer, upload_wer = corpus_wer(refs, streamed), corpus_wer(refs, uploaded)
        gaps = [corpus_wer(r, s) - corpus_wer(r, u) for r, s, u in texts.values()]
        results[name] = {
            "files": len(items), "shifts": args.shifts, "audio_s": round(audio_s, 1), "live_wer": round(live_wer, 3),
            "upload_wer": round(upload_wer, 3), "gap": round(live_wer - upload_wer, 3),
            "gap_per_shift": [round(gap, 3) for gap in gaps],
            "word_p50_s": round(float(np.percentile(waits, 50)), 2) if waits else None,
            "word_p95_s": round(float(np.percentile(waits, 95)), 2) if waits else None,
            "model_rtf": round(busy_s / audio_s, 3), "items": items_out,
        }
        print(f"{name:7} live {live_wer:.3f} / upload {upload_wer:.3f} (gap {live_wer - upload_wer:+.3f})  "
              f"word p50/p95 {results[name]['word_p50_s']} / {results[name]['word_p95_s']} s  "
              f"model RTF {results[name]['model_rtf']}"
              + (f"  gap per shift {' '.join(f'{gap:+.3f}' for gap in gaps)}" if len(gaps) > 1 else ""), flush=True)
    engine.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", default=",".join(SLICES))
    parser.add_argument("--corpus-dir", default="bench/.corpus")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a constant of sasr.models.whisper.live, for this run")
    parser.add_argument("--quantize", default="auto", choices=["auto", *QUANTIZE_MODES])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: fp16 with CUDA graphs, as served")
    parser.add_argument("--pace", default="live", choices=["live", "file"],
                        help="file: the client sends faster than speech (finals only; no word waits)")
    parser.add_argument("--shifts", default=[0.0], type=lambda text: [float(x) for x in text.split(",")],
                        help="stream each file once per shift: seconds of silence put before it (its upload too)")
    parser.add_argument("--commits", default="early", choices=["early", "final"], help="as `sasr serve --live-commits`")
    parser.add_argument("--endpoint-ms", type=int, default=None, help="as `sasr serve --endpoint-ms`")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    for setting in args.set:
        name, value = setting.split("=", 1)
        if not hasattr(live, name):
            parser.error(f"sasr.models.whisper.live has no {name}")
        setattr(live, name, type(getattr(live, name))(value))
    results = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": args.set, "commits": args.commits, "endpoint_ms": args.endpoint_ms,
                                               "quantize": args.quantize, "device": args.device,
                                               "pace": args.pace, "slices": results}, indent=1))


if __name__ == "__main__":
    main()
