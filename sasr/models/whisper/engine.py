"""The engine for Whisper: slot KV arena, one-shot long-form decoding and the live policy."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import numpy as np

from sasr.audio.constants import HOP_SAMPLES, SAMPLE_RATE
from sasr.engine import LiveOptions, TranscriptionRequest
from sasr.engine.batch import SamplingParams
from sasr.engine.core import EngineCore
from sasr.engine.scheduler import Scheduler, Sequence
from sasr.live.commit import SpeechTracker
from sasr.models.whisper.decode import Options, WindowJob, WindowResult, best_attempt, compression_ratio, long_form
from sasr.models.whisper import live
from sasr.models.whisper.load import LoadedWhisper
from sasr.models.whisper.model import WhisperModel
from sasr.models.whisper.runner import ModelRunner, WhisperInputs
from sasr.protocol import Segment


class WhisperEngine(EngineCore):
    """Implements sasr.engine.Engine for Whisper over a slot Scheduler and a ModelRunner."""

    live_options = frozenset({"commits", "endpoint_ms"})  # its utterance policy's choices (live.py)

    def __init__(self, loaded: LoadedWhisper, max_num_seqs: int = 16, max_queued: int = 64,
                 enforce_eager: bool = False) -> None:
        self.vocab = loaded.vocab
        self.served_name = loaded.served_name  # default name clients pass as `model`
        model = WhisperModel(loaded.model)
        self.max_len = model.max_len
        self.languages = frozenset(self.vocab.language_ids) or frozenset({"en"})
        # (layer, head) pairs whose cross-attention follows the audio: word timings come from them
        self.align_heads = [tuple(h) for h in getattr(loaded.model.generation_config, "alignment_heads", None) or []]
        runner = ModelRunner(model, self.vocab, max_num_seqs, enforce_eager=enforce_eager, align_heads=self.align_heads)
        super().__init__(runner, Scheduler(max_num_seqs, frozenset({self.vocab.eot}), model.max_len), max_queued)

    @property
    def supports_word_timestamps(self) -> bool:
        """Words are timed by the alignment heads' cross-attention; a checkpoint may name none."""
        return bool(self.align_heads)

    def _record_model(self, batch) -> None:
        self.metrics.inc("sasr_engine_windows_encoded_total", len(batch.new), help="Audio windows encoded")

    def stream_policy(self, language: str | None, chunk_s: float, prompt: str | None = None,
                      options: LiveOptions = LiveOptions()) -> live.StreamingPolicy:
        endpoint_s = options.endpoint_ms / 1000 if options.endpoint_ms else live.ENDPOINT_S  # (read now: benches set it)
        policy = live.StreamingPolicy(self.vocab, self.max_len, language, round(chunk_s * SAMPLE_RATE),
                                      early_commits=options.commits == "early", tracker=SpeechTracker(endpoint_s))
        policy.context = self.vocab.encode(" " + prompt.strip()) if prompt else []
        return policy

    async def run_window(self, job: WindowJob) -> WindowResult:
        """Decode one window in whatever batch the scheduler puts it (with both_phases, twice at once:
        as it is and a hop later, the likelier kept, a loop last, as a fallback's attempts)."""
        if not job.both_phases:
            return await self._decode(job)
        later = dataclasses.replace(job, audio=np.concatenate([np.zeros(HOP_SAMPLES, np.float32), job.audio]))
        results = await asyncio.gather(self._decode(job), self._decode(later))
        return best_attempt([(r, compression_ratio(self.vocab.decode(r.tokens))) for r in results])[0]

    async def _decode(self, job: WindowJob) -> WindowResult:
        alignment = job.alignment and bool(self.align_heads)
        inputs = WhisperInputs(job.audio, job.num_frames, job.sot_index, alignment)
        seq = Sequence(job.prefix, job.max_new_tokens, inputs, SamplingParams(job.temperature, job.seed),
                       sampled=list(job.forced), num_forced=len(job.forced), draft=list(job.draft))
        await self.run_sequence(seq)
        attention = np.concatenate([x.attention for x in seq.extras]) if alignment else None
        return WindowResult(list(seq.sampled), seq.sum_logprob, seq.extras[0].no_speech_prob, seq.num_forced,
                            attention, seq.logprobs)

    async def transcribe_segments(self, request: TranscriptionRequest) -> AsyncIterator[Segment]:
        """The request's segments, each as soon as the window holding it is decoded."""
        options = Options(language=request.language, prompt=request.prompt, temperature=request.temperature,
                          word_timestamps=request.word_timestamps)
        segments: list[Segment] = []
        policy = long_form(self.vocab, request.audio, options, self.max_len, segments, request.words)
        result, sent = None, 0
        while True:
            try:
                job = policy.send(result)  # digests the last window's result: its segments are final
            except StopIteration:
                break
            for segment in segments[sent:]:  # sent before the next window is decoded
                yield segment
            sent = len(segments)
            result = await self.run_window(job)
        for segment in segments[sent:]:
            yield segment

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "sasr_engine_kv_slots_used": self.scheduler.num_running,
                "sasr_engine_kv_slots_total": self.scheduler.max_num_seqs}
