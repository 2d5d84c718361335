"""The continuous-batching engine: every request's windows share the model's forward passes.

Requests run their decoding policy (a generator, sasr.decoding.transcribe.long_form) on the event
loop; each window it asks for becomes a scheduler Sequence. One engine thread loops
schedule() -> runner.step() -> postprocess(), so the event loop never waits on the model, and results
travel back to the waiting coroutines with call_soon_threadsafe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator

import torch

from sasr.audio.constants import SAMPLE_RATE
from sasr.decoding.streaming import StreamingPolicy
from sasr.decoding.transcribe import Options, WindowJob, WindowResult, long_form
from sasr.engine import EngineBusy, TranscriptionRequest, TranscriptionResult
from sasr.engine.batch import SamplingParams
from sasr.engine.runner import ModelRunner
from sasr.engine.scheduler import Scheduler, Sequence, Status
from sasr.metrics import Metrics
from sasr.models.loader import LoadedWhisper
from sasr.models.whisper import WhisperModel
from sasr.protocol import Segment

log = logging.getLogger("sasr.engine")
STEP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class EngineCore:
    """The engine thread and its hand-offs, whatever the model: a scheduler, a runner, a loop.

    Subclasses build the scheduler and runner and turn requests into Sequences.
    """

    stream_chunk_s = 1.0  # default seconds of new audio per live decode

    def __init__(self, runner, scheduler: Scheduler, max_queued: int = 64) -> None:
        self.runner, self.scheduler = runner, scheduler
        self.max_queued = max_queued
        self.num_requests = 0  # admitted and not finished (guarded by the event loop: no lock needed)
        self.metrics = Metrics()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # ("add" | "abort", Sequence)
        self.wake = threading.Event()
        self.stopping = False
        self.last_batch_size = 0
        self.thread = threading.Thread(target=self._loop, name="sasr-engine", daemon=True)
        self.thread.start()

    # -- engine thread ---------------------------------------------------------------------------

    def _drain_inbox(self) -> None:
        while True:
            try:
                action, seq = self.inbox.get_nowait()
            except queue.Empty:
                return
            if action == "add":
                try:
                    self.scheduler.add(seq)
                except ValueError as exc:  # it can never fit: fail it, not the engine
                    seq.status, seq.error = Status.ABORTED, exc
                    seq.on_finish(seq)
            else:
                self.scheduler.abort(seq)

    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while not self.stopping:
            self._drain_inbox()
            batch = self.scheduler.schedule()
            if batch is None:
                self.last_batch_size = 0
                self.wake.wait()
                self.wake.clear()
                continue
            started = time.perf_counter()
            try:
                output = self.runner.step(batch)
            except Exception as exc:  # a fault fails this batch's requests, never the engine
                log.exception("engine step failed")
                self._fail(exc)
                continue
            self.scheduler.postprocess(batch, output)
            self._record(batch, time.perf_counter() - started)

    def _fail(self, exc: Exception) -> None:
        for seq in self.scheduler.running:
            if seq.status is Status.RUNNING:
                seq.status = Status.ABORTED
                seq.error = exc
                seq.on_finish(seq)

    def _record(self, batch, seconds: float) -> None:
        self.last_batch_size = batch.num_seqs
        m = self.metrics
        m.observe("sasr_engine_step_seconds", seconds, help="Time of one engine step", buckets=STEP_BUCKETS_S)
        m.inc("sasr_engine_steps_total", help="Engine steps")
        m.inc("sasr_engine_tokens_total", batch.num_seqs,
              help="Tokens sampled, one per sequence a step (/steps: batch size)")
        self._record_model(batch)

    def _record_model(self, batch) -> None:
        """Model-specific counters of a finished step."""

    # -- event loop side -------------------------------------------------------------------------

    def _submit(self, action: str, seq: Sequence) -> None:
        self.inbox.put((action, seq))
        self.wake.set()

    async def run_sequence(self, seq: Sequence) -> Sequence:
        """Run one sequence in whatever batches the scheduler puts it; cancellation frees its place."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        seq.on_finish = lambda s: loop.call_soon_threadsafe(lambda: done.done() or done.set_result(s))
        self._submit("add", seq)
        try:
            await done
        except asyncio.CancelledError:
            self._submit("abort", seq)
            raise
        if seq.error is not None:
            raise RuntimeError("inference failed") from seq.error
        return seq

    def check_capacity(self) -> None:
        """Raise EngineBusy if no further request can be admitted now."""
        if self.num_requests >= self.max_queued:
            raise EngineBusy()

    @contextlib.contextmanager
    def admitted(self):
        """Count a request in the engine while it runs (or refuse it: EngineBusy)."""
        self.check_capacity()
        self.num_requests += 1
        try:
            yield
        finally:
            self.num_requests -= 1

    async def transcribe(self, request: TranscriptionRequest) -> TranscriptionResult:
        segments = [segment async for segment in self.transcribe_segments(request)]
        return TranscriptionResult(
            text="".join(s.text for s in segments).strip(),
            language=request.language or "en",  # engines that detect the language set it on the request
            duration_s=len(request.audio) / SAMPLE_RATE,
            segments=segments,
        )

    def stats(self) -> dict[str, float]:
        return {
            "sasr_requests_in_engine": self.num_requests,
            "sasr_engine_waiting_sequences": self.scheduler.num_waiting,
            "sasr_engine_running_sequences": self.scheduler.num_running,
            "sasr_engine_batch_size": self.last_batch_size,
            "sasr_engine_kv_arena_bytes": self.runner.arena_bytes(),
        }

    def render_metrics(self) -> str:
        return self.metrics.render(self.stats())

    def close(self) -> None:
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=10)


class BatchEngine(EngineCore):
    """Implements sasr.engine.Engine for Whisper over a slot Scheduler and a ModelRunner."""

    def __init__(self, loaded: LoadedWhisper, max_num_seqs: int = 16, max_queued: int = 64,
                 enforce_eager: bool = False) -> None:
        self.vocab = loaded.vocab
        self.served_name = loaded.served_name  # default name clients pass as `model`
        model = WhisperModel(loaded.model)
        self.max_len = model.max_len
        self.languages = frozenset(self.vocab.language_ids) or frozenset({"en"})
        super().__init__(ModelRunner(model, self.vocab, max_num_seqs, enforce_eager=enforce_eager),
                         Scheduler(max_num_seqs, frozenset({self.vocab.eot}), model.max_len), max_queued)

    def _record_model(self, batch) -> None:
        self.metrics.inc("sasr_engine_windows_encoded_total", len(batch.new), help="Audio windows encoded")

    def stream_policy(self, language: str | None, chunk_s: float) -> StreamingPolicy:
        return StreamingPolicy(self.vocab, self.max_len, language, round(chunk_s * SAMPLE_RATE))

    async def run_window(self, job: WindowJob) -> WindowResult:
        """Decode one window in whatever batch the scheduler puts it."""
        seq = Sequence(job.audio, job.prefix, job.sot_index, job.max_new_tokens,
                       SamplingParams(job.temperature, job.seed), num_frames=job.num_frames,
                       sampled=list(job.forced), num_forced=len(job.forced))
        await self.run_sequence(seq)
        return WindowResult(list(seq.sampled), seq.sum_logprob, seq.no_speech_prob, seq.num_forced)

    async def transcribe_segments(self, request: TranscriptionRequest) -> AsyncIterator[Segment]:
        """The request's segments, each as soon as the window holding it is decoded."""
        with self.admitted():
            options = Options(language=request.language, prompt=request.prompt, temperature=request.temperature)
            segments: list[Segment] = []
            policy = long_form(self.vocab, request.audio, options, self.max_len, segments)
            result, sent = None, 0
            while True:
                try:
                    job = policy.send(result)
                except StopIteration:
                    break
                result = await self.run_window(job)
                for segment in segments[sent:]:
                    yield segment
                sent = len(segments)
            for segment in segments[sent:]:
                yield segment

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "sasr_engine_kv_slots_used": self.scheduler.num_running,
                "sasr_engine_kv_slots_total": self.scheduler.max_num_seqs}


def build_engine(model: str | None, device: str = "auto", dtype: str = "auto", max_num_seqs: int = 16,
                 max_queued: int = 64, enforce_eager: bool = False, load_format: str = "auto",
                 enable_prefix_caching: bool = True, num_kv_blocks: int | None = None) -> EngineCore:
    """The engine for --model: Whisper (the bundled tiny.en by default) or Qwen3-ASR."""
    from sasr.models.qwen3_load import is_qwen3_asr

    qwen = is_qwen3_asr(model)  # once: for a hub id it asks the hub for the config
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = ("bfloat16" if qwen else "float16") if device.startswith("cuda") else "float32"
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    if qwen:
        from sasr.engine.qwen3_engine import Qwen3Engine
        from sasr.models.qwen3_load import load_qwen3_asr

        loaded = load_qwen3_asr(model, device, torch_dtype, load_format)
        return Qwen3Engine(loaded, max_num_seqs=max_num_seqs, max_queued=max_queued,
                           enable_prefix_caching=enable_prefix_caching, num_blocks=num_kv_blocks)
    if load_format != "auto":
        raise ValueError("--load-format dummy is for Qwen3-ASR models")
    from sasr.models.loader import load_whisper

    return BatchEngine(load_whisper(model, device, torch_dtype), max_num_seqs=max_num_seqs,
                       max_queued=max_queued, enforce_eager=enforce_eager)
