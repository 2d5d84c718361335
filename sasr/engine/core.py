"""The engine loop, whatever the model: one thread runs schedule() -> runner.step() -> postprocess().

Requests run their decoding policy on the event loop; each decode it asks for becomes a scheduler
Sequence. The engine thread packs every waiting and running sequence into one batch per step, so
the event loop never waits on the model, and results travel back to the waiting coroutines with
call_soon_threadsafe. Model families subclass EngineCore with their scheduler, runner and policies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from sasr.audio.constants import SAMPLE_RATE
from sasr.audio.vad import VADStream, load_vad
from sasr.engine import EngineBusy, TranscriptionRequest, TranscriptionResult
from sasr.engine.scheduler import Scheduler, Sequence, Status
from sasr.metrics import Metrics

log = logging.getLogger("sasr.engine")
MAX_CONSECUTIVE_FAULTS = 3  # steps failing in a row before the engine gives up
INTRA_OP_THREADS = torch.get_num_threads()  # torch's default: one a core (or OMP_NUM_THREADS)
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
        self.failure: Exception | None = None  # set when the engine cannot continue (see _loop)
        self.faults_to_inject = 0  # test hook (SASR_TEST_FAULTS=1: POST /_test/fault): steps that will fail
        self.last_batch_size = 0
        self.vad = load_vad()  # shared by every live session; each keeps its own state
        self.vad_thread = ThreadPoolExecutor(1, thread_name_prefix="sasr-vad")
        if getattr(runner, "encodes_ahead", False):
            # the engine's steps and the encoder's windows run at once: each gets half the intra-op threads
            # (torch's default is one a core), not both all of them (measured at 8 live sessions on 2 cores:
            # event p50 / p95 0.68-0.72 / 1.56-2.02 s with two threads each, 0.50-0.55 / 1.01-1.08 s with one)
            torch.set_num_threads(max(1, INTRA_OP_THREADS // 2))
        self.thread = threading.Thread(target=self._loop, name="sasr-engine", daemon=True)
        self.thread.start()
        # runners that encode ahead (runner.encode): new sequences' inputs, encoded while steps run
        self.to_encode: queue.SimpleQueue | None = None
        self.encoder_thread: threading.Thread | None = None
        if getattr(runner, "encodes_ahead", False):
            self.to_encode = queue.SimpleQueue()
            self.encoder_thread = threading.Thread(target=self._encode_loop, name="sasr-encoder", daemon=True)
            self.encoder_thread.start()

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
        """Step until stopped. A fault anywhere in a step (schedule, the model, postprocess, a finish
        callback) fails the sequences it may have touched and the engine goes on; after
        MAX_CONSECUTIVE_FAULTS in a row it gives up: `failure` is set and every sequence fails at once."""
        torch.set_grad_enabled(False)
        try:  # the runner's one-time measurements, on this thread, before any request waits for them
            getattr(self.runner, "prepare", lambda: None)()
        except Exception:
            log.exception("the runner's preparation failed (it is tried again at the first step)")
        faults = 0
        while not self.stopping:
            try:
                if self.failure is not None:
                    self._drain_inbox()
                    self._fail_held(self.failure)
                    self.wake.wait()
                    self.wake.clear()
                    continue
                stepped = self._step()
            except Exception as exc:
                faults += 1
                log.exception("engine step failed (%d in a row)", faults)
                self.metrics.inc("sasr_engine_faults_total", help="Engine steps that failed (their sequences with them)")
                if faults >= MAX_CONSECUTIVE_FAULTS:
                    log.error("the engine cannot continue: every request now fails")
                    self.failure = exc
                self._fail_held(exc)
                continue
            if stepped:
                faults = 0
            else:
                self.last_batch_size = 0
                self.wake.wait()
                self.wake.clear()

    def _step(self) -> bool:
        """One step; False if there was nothing to run."""
        self._drain_inbox()
        batch = self.scheduler.schedule()
        if batch is None:
            return False
        if self.faults_to_inject:
            self.faults_to_inject -= 1
            raise RuntimeError("injected fault (test hook)")
        started = time.perf_counter()
        output = self.runner.step(batch)
        self._record(batch, output, time.perf_counter() - started)  # before postprocess tells anyone it is done
        self.scheduler.postprocess(batch, output)
        return True

    def _encode_loop(self) -> None:
        """Encode what new sequences bring, all that is waiting in one call, while the engine thread
        steps; each becomes ready for its prefill. Should encoding fail, the prefill encodes them."""
        torch.set_grad_enabled(False)
        while not self.stopping:
            seqs = [self.to_encode.get()]
            with contextlib.suppress(queue.Empty):
                while True:
                    seqs.append(self.to_encode.get_nowait())
            seqs = [s for s in seqs if s is not None and s.status is Status.WAITING]
            try:
                self.runner.encode([s.inputs for s in seqs])
            except Exception:
                log.exception("encoding ahead failed: the prefill encodes these windows")
            for seq in seqs:
                seq.ready = True
            self.wake.set()

    def _fail_held(self, exc: Exception) -> None:
        """Fail every sequence the scheduler holds: after a fault, its state of any of them may be wrong.
        Their requests get an internal error; those still in the inbox were not touched and go on."""
        held = [s for s in (*self.scheduler.waiting, *self.scheduler.running) if s.status in (Status.WAITING, Status.RUNNING)]
        for seq in held:
            self.scheduler.abort(seq)
            seq.error = exc
            with contextlib.suppress(Exception):  # a callback that fails must not stop the others
                seq.on_finish(seq)

    def _record(self, batch, output, seconds: float) -> None:
        self.last_batch_size = batch.num_seqs
        m = self.metrics
        m.observe("sasr_engine_step_seconds", seconds, help="Time of one engine step", buckets=STEP_BUCKETS_S)
        m.inc("sasr_engine_steps_total", help="Engine steps")
        m.inc("sasr_engine_tokens_total", batch.num_seqs,
              help="Tokens sampled, one per sequence a step (/steps: batch size)")
        m.inc("sasr_engine_draft_tokens_total", sum(len(n.draft) for n in batch.new),
              help="Draft tokens new sequences brought to verify (a live session's last text of its audio)")
        prefill = sum(len(output.accepted.get(n.seq_id, ())) for n in batch.new)
        m.inc("sasr_engine_draft_tokens_accepted_total", prefill,
              help="Draft tokens of new sequences that the model's own sampling chose in their prefill")
        m.inc("sasr_engine_draft_tokens_picked_up_total", sum(map(len, output.accepted.values())) - prefill,
              help="Draft tokens a later step kept, where a sequence's sampling met its draft again")
        self._record_model(batch)

    def _record_model(self, batch) -> None:
        """Model-specific counters of a finished step."""

    # -- event loop side -------------------------------------------------------------------------

    def _submit(self, action: str, seq: Sequence) -> None:
        self.inbox.put((action, seq))
        self.wake.set()

    async def run_sequence(self, seq: Sequence) -> Sequence:
        """Run one sequence in whatever batches the scheduler puts it; cancellation frees its place."""
        if self.failure is not None:
            raise RuntimeError("the engine has stopped after repeated faults") from self.failure
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        seq.on_finish = lambda s: loop.call_soon_threadsafe(lambda: done.done() or done.set_result(s))
        if self.to_encode is not None:
            seq.ready = False
            self.to_encode.put(seq)
        self._submit("add", seq)
        try:
            await done
        except asyncio.CancelledError:
            self._submit("abort", seq)
            raise
        if seq.error is not None:
            raise RuntimeError("inference failed") from seq.error
        return seq

    def new_vad(self) -> VADStream:
        return VADStream(self.vad)

    async def run_vad(self, stream: VADStream, samples: np.ndarray) -> np.ndarray:
        return await asyncio.get_running_loop().run_in_executor(self.vad_thread, stream.speech_probs, samples)

    def reserve(self) -> None:
        """Count one more request in (the server does, before it reads the upload); EngineBusy if full."""
        if self.num_requests >= self.max_queued:
            raise EngineBusy()
        self.num_requests += 1

    def release(self) -> None:
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
        if self.encoder_thread is not None:
            self.to_encode.put(None)
            self.encoder_thread.join(timeout=10)
        self.thread.join(timeout=10)
        self.vad_thread.shutdown(wait=False)
