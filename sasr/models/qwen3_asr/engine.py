"""The engine for Qwen3-ASR: the same thread loop and scheduler as Whisper's, with KV in blocks.

Prompts are built by the decoding policy (sasr.models.qwen3_asr.live); the scheduler's BlockManager finds the
blocks a prompt shares with earlier ones (a live session's previous chunk: the system turn and every
complete 8 s window), and the runner computes only the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import torch

from sasr.audio.constants import HOP_SAMPLES, SAMPLE_RATE
from sasr.audio.energy import is_silent
from sasr.engine import LiveOptions, TranscriptionRequest
from sasr.engine.batch import SamplingParams
from sasr.engine.blocks import BlockManager
from sasr.engine.core import EngineCore
from sasr.engine.scheduler import Scheduler, Sequence
from sasr.models.qwen3_asr.decode import (
    CONTEXT_CHARS,
    Qwen3Job,
    Qwen3Result,
    file_pieces,
    make_job,
    read_output,
)
from sasr.models.qwen3_asr.live import Qwen3StreamingPolicy
from sasr.models.qwen3_asr.load import LoadedQwen3
from sasr.models.qwen3_asr.model import Qwen3ASR
from sasr.models.qwen3_asr.runner import PagedRunner
from sasr.models.qwen3_asr.vocab import LANGUAGE_NAMES
from sasr.protocol import Segment

BLOCK_SIZE = 16
MAX_LEN = 4096  # positions per sequence: a 30 s file piece or a 32 s live segment and its text fit
GPU_MEMORY_FRACTION = 0.5  # of the free CUDA memory after loading, for the KV arena


def default_num_blocks(model: Qwen3ASR, max_num_seqs: int) -> int:
    """Blocks for every sequence at full length, twice over (room for cached prefixes); on CUDA a
    share of the free memory (as nano-vllm sizes its arena)."""
    per_block = 2 * model.num_layers * BLOCK_SIZE * model.num_kv_heads * model.head_dim * model.dtype.itemsize
    if model.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(model.device)
        return max(1, int(free * GPU_MEMORY_FRACTION) // per_block)
    return 2 * max_num_seqs * (1024 // BLOCK_SIZE)


class Qwen3Engine(EngineCore):
    """Implements sasr.engine.Engine for Qwen3-ASR over a block Scheduler and a PagedRunner."""

    stream_chunk_s = 2.0  # as the reference design and the official SDK
    supports_word_timestamps = False  # no alignment heads to time words by (the server answers 400)
    live_options = frozenset()  # its segments are its own: no commit mode or endpoint to choose

    def __init__(self, loaded: LoadedQwen3, max_num_seqs: int = 16, max_queued: int = 64,
                 enable_prefix_caching: bool = True, num_blocks: int | None = None) -> None:
        self.vocab = loaded.vocab
        self.served_name = loaded.served_name  # default name clients pass as `model`
        self.max_len = MAX_LEN
        self.languages = frozenset(LANGUAGE_NAMES)
        self.fixed_output_tokens = loaded.fixed_output_tokens
        model = Qwen3ASR(loaded.model)
        num_blocks = num_blocks or default_num_blocks(model, max_num_seqs)
        self.blocks = BlockManager(num_blocks, BLOCK_SIZE, enable_prefix_caching)
        stop = frozenset() if loaded.ignore_eos else self.vocab.eos_ids
        runner = PagedRunner(model, self.vocab, max_num_seqs, num_blocks, BLOCK_SIZE, MAX_LEN, loaded.ignore_eos)
        super().__init__(runner, Scheduler(max_num_seqs, stop, MAX_LEN, blocks=self.blocks), max_queued)

    def stream_policy(self, language: str | None, chunk_s: float, prompt: str | None = None,
                      options: LiveOptions = LiveOptions()) -> Qwen3StreamingPolicy:
        # takes no LiveOptions (live_options is empty): its segments are its own (live.py)
        policy = Qwen3StreamingPolicy(self.vocab, language, round(chunk_s * SAMPLE_RATE))
        policy.context = (prompt or "")[-CONTEXT_CHARS:]
        return policy

    async def run_window(self, job: Qwen3Job) -> Qwen3Result:
        """Decode one prompt in whatever batches the scheduler puts it."""
        max_new = self.fixed_output_tokens or job.max_new_tokens
        max_new = min(max_new, self.max_len - len(job.prompt.ids) - 1)
        seq = Sequence(job.prompt.ids, max_new, job.windows, SamplingParams(job.temperature, job.seed),
                       hash_keys=job.hash_keys)
        await self.run_sequence(seq)
        return Qwen3Result(list(seq.sampled), len(job.prompt.ids), seq.num_cached_tokens)

    async def transcribe_segments(self, request: TranscriptionRequest) -> AsyncIterator[Segment]:
        """One segment per piece of the upload (at most 30 s, cut at quiet points), as each is decoded."""
        context = (request.prompt or "")[-CONTEXT_CHARS:]
        num_segments = 0
        for start, end in file_pieces(request.audio):
            audio = request.audio[start:end]
            if is_silent(audio):
                continue
            job = make_job(self.vocab, audio, request.language, context)
            job.temperature = request.temperature
            result = await self.run_window(job)
            language, tokens = read_output(self.vocab, job, result.tokens)
            request.language = request.language or language
            text = self.vocab.text(tokens).strip()
            if not text:
                continue
            context = (context + " " + text)[-CONTEXT_CHARS:]
            num_segments += 1
            yield Segment(id=num_segments - 1, seek=start // HOP_SAMPLES, start=round(start / SAMPLE_RATE, 2),
                          end=round(end / SAMPLE_RATE, 2), text=" " + text, tokens=tokens,
                          temperature=job.temperature, avg_logprob=0.0, compression_ratio=0.0, no_speech_prob=0.0)

    def _record_model(self, batch) -> None:
        m = self.metrics
        prompt = sum(len(s.prefix) for s in batch.new)
        cached = sum(s.num_cached for s in batch.new)
        m.inc("sasr_prefill_tokens_total", prompt, help="Prompt tokens of new sequences")
        m.inc("sasr_prefill_computed_tokens_total", prompt - cached,
              help="Prompt tokens computed (not found in the prefix cache)")

    def stats(self) -> dict[str, float]:
        blocks, runner = self.blocks, self.runner
        queried = blocks.num_queried_tokens
        return {
            **super().stats(),
            "sasr_kv_blocks_total": len(blocks.blocks),
            "sasr_kv_blocks_free": blocks.num_free_blocks,
            "sasr_prefix_cache_queried_tokens": queried,
            "sasr_prefix_cache_hit_tokens": blocks.num_hit_tokens,
            "sasr_prefix_cache_hit_rate": blocks.num_hit_tokens / queried if queried else 0.0,
            "sasr_encoder_windows_encoded": runner.num_windows_encoded,
            "sasr_encoder_window_cache_hits": runner.num_window_hits,
        }
