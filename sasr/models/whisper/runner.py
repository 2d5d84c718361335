"""The model runner: executes a scheduler Batch on the Whisper model and samples the next tokens.

It owns everything that is preallocated: the KV arena (one slot per sequence the engine can hold),
the staging buffers for per-step inputs, and on CUDA one captured graph per decode batch-size bucket.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from sasr.audio.constants import HOP_SAMPLES
from sasr.engine.batch import Batch, DecodeRow, NewSequence, SamplingParams, StepOutput
from sasr.engine.sampling import GRAPH_BUCKETS, bucket_for, sample
from sasr.kernels.logmel import log_mel_batch, log_mel_batch_reference
from sasr.models.whisper.filters import default_filters
from sasr.models.whisper.model import WhisperModel
from sasr.models.whisper.vocab import WhisperVocab

log = logging.getLogger("sasr.engine")

class ModelRunner:
    def __init__(self, model: WhisperModel, vocab: WhisperVocab, max_num_seqs: int, enforce_eager: bool = False) -> None:
        self.model, self.vocab = model, vocab
        self.max_num_seqs = max_num_seqs
        self.device = model.device
        self.filters = default_filters(vocab)
        # The arena: every slot's self-attention K/V for all positions, and its cross-attention K/V.
        self.arena = model.new_cache(max_num_seqs, model.num_audio_frames)
        self.full_cross_len = model.num_audio_frames
        self.cross_lens = [self.full_cross_len] * max_num_seqs  # host copy of arena.cross_len
        # Staging for the decode step's inputs: filled on the host, copied in one go.
        pin = self.device.type == "cuda"
        self.host_tokens = torch.zeros(max_num_seqs, 1, dtype=torch.long, pin_memory=pin)
        self.host_positions = torch.zeros(max_num_seqs, 1, dtype=torch.long, pin_memory=pin)
        self.tokens = torch.zeros(max_num_seqs, 1, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(max_num_seqs, 1, dtype=torch.long, device=self.device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        if self.device.type == "cuda" and not enforce_eager:
            self.capture_graphs()

    def arena_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in vars(self.arena).values())

    # -- decode -------------------------------------------------------------------------------

    def _cross_kv_len(self, slots: range) -> int | None:
        """Audio frames the rows in these slots attend over; None when all have full windows."""
        longest = max(self.cross_lens[s] for s in slots)
        return None if all(self.cross_lens[s] == self.full_cross_len for s in slots) else longest

    def _decode_eager(self, num_rows: int, kv_len: int, cross_kv_len: int | None) -> torch.Tensor:
        cache = self.arena.rows(0, num_rows)
        hidden = self.model.decode(cache, self.tokens[:num_rows], self.positions[:num_rows], kv_len, cross_kv_len)
        return self.model.logits(hidden[:, -1])

    @torch.inference_mode()
    def capture_graphs(self) -> None:
        """Capture the decode step for each batch-size bucket; replays attend over all positions."""
        buckets = [b for b in GRAPH_BUCKETS if b <= self.max_num_seqs]
        if self.max_num_seqs not in buckets:
            buckets.append(self.max_num_seqs)
        pool = None
        for size in reversed(buckets):  # largest first, so smaller graphs reuse its memory pool
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up kernels and allocator outside the capture
                    self._decode_eager(size, self.model.max_len, self.full_cross_len)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits = self._decode_eager(size, self.model.max_len, self.full_cross_len)
            pool = graph.pool()
            self.graphs[size] = (graph, logits)
        torch.cuda.synchronize()
        log.info("captured decode graphs for batch sizes %s", sorted(self.graphs))

    def decode(self, rows: list[DecodeRow]) -> torch.Tensor:
        """Logits [len(rows), V] for each running sequence's next token; slots 0..len(rows)-1."""
        num_rows = len(rows)
        self.host_tokens[:num_rows, 0] = torch.tensor([r.token for r in rows])
        self.host_positions[:num_rows, 0] = torch.tensor([r.position for r in rows])
        if self.graphs:
            size = bucket_for(num_rows, tuple(sorted(self.graphs)))
            # padding rows decode token 0 at position 0 in free slots; new sequences overwrite them later
            self.host_tokens[num_rows:size] = 0
            self.host_positions[num_rows:size] = 0
            self.tokens[:size].copy_(self.host_tokens[:size], non_blocking=True)
            self.positions[:size].copy_(self.host_positions[:size], non_blocking=True)
            graph, logits = self.graphs[size]
            graph.replay()
            return logits[:num_rows]
        self.tokens[:num_rows].copy_(self.host_tokens[:num_rows])
        self.positions[:num_rows].copy_(self.host_positions[:num_rows])
        kv_len = max(r.position for r in rows) + 1
        return self._decode_eager(num_rows, kv_len, self._cross_kv_len(range(num_rows)))

    # -- new sequences: encode and prefill -------------------------------------------------------

    def prefill(self, new: list[NewSequence], first_slot: int) -> tuple[torch.Tensor, list[float]]:
        """Encode the new windows into their slots, prefill their prefixes; logits [N, V] and P(no speech)."""
        for num_frames in sorted({seq.num_frames for seq in new}):  # one encoder pass per window size
            group = [i for i, seq in enumerate(new) if seq.num_frames == num_frames]
            self._encode([new[i] for i in group], [first_slot + i for i in group], num_frames)
        cache = self.arena.rows(first_slot, first_slot + len(new))
        lengths = [len(seq.prefix) for seq in new]
        width = max(lengths)
        tokens = torch.tensor([seq.prefix + [0] * (width - len(seq.prefix)) for seq in new], device=self.device)
        positions = torch.arange(width, device=self.device).expand(len(new), width)
        slots = range(first_slot, first_slot + len(new))
        hidden = self.model.decode(cache, tokens, positions, width, self._cross_kv_len(slots))  # [N, width, D]
        rows = torch.arange(len(new), device=self.device)
        sot = torch.tensor([seq.sot_index for seq in new], device=self.device)
        last = torch.tensor(lengths, device=self.device) - 1
        logits = self.model.logits(torch.cat([hidden[rows, last], hidden[rows, sot]]))  # [2N, V]
        no_speech = torch.softmax(logits[len(new):], -1)[:, self.vocab.no_speech]
        return logits[: len(new)], no_speech.tolist()

    def _encode(self, new: list[NewSequence], slots: list[int], num_frames: int) -> None:
        """Encode windows of the same size into their slots' cross-attention K/V."""
        audio = np.zeros((len(new), num_frames * HOP_SAMPLES), np.float32)
        for i, seq in enumerate(new):
            clip = seq.audio[: audio.shape[1]]
            audio[i, : len(clip)] = clip
        # the batched kernel pays on the GPU; on the CPU the per-window loop is faster (bench/kernels.py)
        front_end = log_mel_batch if self.device.type == "cuda" else log_mel_batch_reference
        mel = front_end(torch.from_numpy(audio).to(self.device), self.model.num_mel_bins)  # [N, n_mels, F]
        cross_k, cross_v = self.model.encode(mel)  # [L, N, H, F/2, Dh]
        num_audio = cross_k.shape[3]
        index = torch.tensor(slots, device=self.device)
        self.arena.cross_k[:, index, :, :num_audio] = cross_k
        self.arena.cross_v[:, index, :, :num_audio] = cross_v
        self.arena.cross_len[index] = num_audio
        for slot in slots:
            self.cross_lens[slot] = num_audio

    # -- sampling --------------------------------------------------------------------------------

    def sample(self, logits: torch.Tensor, histories: list[list[int]], params: list[SamplingParams]):
        return sample(logits, self.filters, histories, params)

    @torch.inference_mode()
    def step(self, batch: Batch) -> StepOutput:
        for src, dst in batch.moves:
            self.arena.copy_row(src, dst)
            self.cross_lens[dst] = self.cross_lens[src]
        parts, no_speech = [], []
        if batch.decode:  # before prefill: graph padding rows may touch the new sequences' slots
            parts.append(self.decode(batch.decode))
        if batch.new:
            logits, no_speech = self.prefill(batch.new, first_slot=len(batch.decode))
            parts.append(logits)
        logits = torch.cat(parts) if len(parts) > 1 else parts[0].clone()
        rows = [*batch.decode, *batch.new]
        tokens, logprobs = self.sample(logits, [r.sampled for r in rows], [r.sampling for r in rows])
        return StepOutput(tokens=tokens, logprobs=logprobs, no_speech_probs=no_speech)
