"""The model runner: executes a scheduler Batch on the Whisper model and samples the next tokens.

It owns everything that is preallocated: the KV arena (one slot per sequence the engine can hold),
staging buffers for each step's inputs (pinned on CUDA: tokens, positions, prompts, audio), and on
CUDA one captured decode graph per (batch size, self-attention length, audio length) bucket, so a
replay attends over what the batch holds rather than 448 positions and 30 s of audio every time.

A new sequence's draft (NewSequence.draft) is prefilled with its prefix; the logit filters and the
sampler then run at every draft position as if the tokens before it had been sampled, and the draft is
kept up to the first token they would not have chosen (StepOutput.accepted): the same tokens as
without it, in one step instead of one a token. Where the sampling leaves the draft, the scheduler
offers a decode row the rest of it once its tokens meet it again (DecodeRow.draft); a step that samples
that row's first draft token checks the rest in a pass of the row's own (`_verify`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from sasr.audio.constants import HOP_SAMPLES, WINDOW_SAMPLES
from sasr.engine.batch import Batch, DecodeRow, NewSequence, StepOutput
from sasr.engine.sampling import GRAPH_BUCKETS, bucket_for, sample
from sasr.kernels.logmel import log_mel_batch, log_mel_batch_reference
from sasr.models.whisper.filters import History, default_filters
from sasr.models.whisper.model import WhisperModel
from sasr.models.whisper.vocab import WhisperVocab

log = logging.getLogger("sasr.engine")

KV_BUCKETS = (128, 448)  # self-attention positions a decode graph covers (capped at the model's max)
MIN_PAD_ROWS = 2  # CPU decode steps run over at least this many rows (prepare)
CROSS_BUCKETS = (250, 500, 750, 1500)  # audio frames (5, 10, 15, 30 s) a decode graph attends over


@dataclass
class WhisperInputs:
    """What a Whisper sequence brings besides its tokens (batch.NewSequence.inputs)."""

    audio: np.ndarray  # [num_samples <= 30 s] 16 kHz float32; the runner pads it and computes log-mel
    num_frames: int  # mel frames to encode (even, <= 3000): 3000 is a full 30 s window
    sot_index: int  # index of <|startoftranscript|> in the prefix: P(no speech) is read there
    alignment: bool = False  # return the alignment heads' cross-attention of every query (word timings)
    encoded: tuple[torch.Tensor, torch.Tensor] | None = None  # its cross K/V [L, H, F/2, Dh] if encoded ahead


@dataclass
class WhisperExtras:
    """A Whisper sequence's model-specific output of one step (StepOutput.extras)."""

    no_speech_prob: float | None = None  # its first step: P(<|nospeech|>) at <|startoftranscript|>
    # with alignment: [queries, heads, audio frames] cross-attention of the alignment heads, for the
    # queries that predict the tokens after the start sequence (prefill) or the step's (decode: its one
    # query, then those of the draft tokens it kept, _verify)
    attention: np.ndarray | None = None


class ModelRunner:
    def __init__(self, model: WhisperModel, vocab: WhisperVocab, max_num_seqs: int, enforce_eager: bool = False,
                 align_heads: list[tuple[int, int]] = ()) -> None:
        self.model, self.vocab = model, vocab
        self.max_num_seqs = max_num_seqs
        self.device = model.device
        # On the CPU the engine encodes new windows on a thread of its own (encode) while steps run: a
        # decode step's small products leave a core idle, the encoder's large ones use it. On CUDA the
        # prefill encodes them (one stream: nothing would overlap).
        self.encodes_ahead = self.device.type == "cpu"
        self.filters = default_filters(vocab)
        heads: dict[int, list[int]] = {}
        for layer, head in align_heads:
            heads.setdefault(layer, []).append(head)
        # per layer, as an index on the model's device (a host list would be copied inside a CUDA graph)
        self.align_heads = {layer: torch.tensor(h, device=self.device) for layer, h in heads.items()}
        # The arena: every slot's self-attention K/V for all positions, and its cross-attention K/V.
        self.arena = model.new_cache(max_num_seqs, model.num_audio_frames)
        self.full_cross_len = model.num_audio_frames
        self.cross_lens = [self.full_cross_len] * max_num_seqs  # host copy of arena.cross_len
        # Staging for each step's inputs: filled on the host, copied in one go.
        pin = self.device.type == "cuda"
        host = lambda *shape, dtype=torch.long: torch.zeros(*shape, dtype=dtype, pin_memory=pin)
        self.host_tokens, self.host_positions = host(max_num_seqs, 1), host(max_num_seqs, 1)
        self.host_prompts = host(max_num_seqs, model.max_len)
        self.host_audio = host(max_num_seqs, WINDOW_SAMPLES, dtype=torch.float32)
        # numpy views of the staging buffers: filling them allocates no tensors
        self.np_tokens, self.np_positions = self.host_tokens.numpy(), self.host_positions.numpy()
        self.np_prompts = self.host_prompts.numpy()
        # on the CPU a step's products run over at least this many rows: a row's numbers (so its
        # session's text) then do not depend on how many rows share its step (model.steady_rows, measured
        # by prepare on the engine's thread as it starts, with the intra-op threads steps run with)
        self.pad_rows: int | None = None if self.device.type == "cpu" else 0
        self.tokens = torch.zeros(max_num_seqs, 1, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(max_num_seqs, 1, dtype=torch.long, device=self.device)
        # (batch, kv, cross) bucket -> (graph, logits, alignment weights)
        self.graphs: dict[tuple[int, int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor | None]] = {}
        if self.device.type == "cuda" and not enforce_eager:
            self.capture_graphs()

    def arena_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in vars(self.arena).values())

    def prepare(self) -> None:
        """Measure steady_rows (CPU) before the first step: the engine calls it on its thread as it starts."""
        if self.pad_rows is None:
            # at least MIN_PAD_ROWS: on an AMD EPYC (AVX-512 BF16, no AMX) a one-row bf16 step gave a row
            # other numbers than the same row among two to four (a token's logprob -0.0832 against
            # -0.0851), though the products measured alike at every count, and so did a whole step on
            # random inputs (the cause not found); from two rows on, rows matched
            self.pad_rows = max(MIN_PAD_ROWS, self.model.steady_rows(self.max_num_seqs))
            log.info("decode steps run at least %d rows (a row's numbers then do not depend on its batch)", self.pad_rows)

    # -- decode -------------------------------------------------------------------------------

    def _cross_kv_len(self, slots: range) -> int | None:
        """Audio frames the rows in these slots attend over; None when all have full windows."""
        longest = max(self.cross_lens[s] for s in slots)
        return None if all(self.cross_lens[s] == self.full_cross_len for s in slots) else longest

    def _row_cross_lens(self, slots: range) -> list[int] | None:
        """On a CPU, each row's own audio frames (the model attends row by row); None elsewhere."""
        return [self.cross_lens[s] for s in slots] if self.device.type == "cpu" else None

    def _decode_eager(self, num_rows: int, kv_len: int, cross_kv_len: int | None, align: bool):
        cache = self.arena.rows(0, num_rows)
        self.prepare()
        cpu = self.device.type == "cpu"  # each row attends to its own positions alone (model.decode)
        self_lens = (self.np_positions[:num_rows, 0] + 1).tolist() if cpu else None
        hidden, weights = self.model.decode(cache, self.tokens[:num_rows], self.positions[:num_rows], kv_len,
                                            cross_kv_len, self.align_heads if align else None,
                                            self._row_cross_lens(range(num_rows)), self_lens, self.pad_rows)
        return self.model.logits(hidden[:, -1], self.pad_rows), weights

    def _graph_shapes(self) -> list[tuple[int, int, int]]:
        sizes = sorted({b for b in GRAPH_BUCKETS if b < self.max_num_seqs} | {self.max_num_seqs})
        kvs = sorted({min(k, self.model.max_len) for k in KV_BUCKETS} | {self.model.max_len})
        crosses = sorted({min(c, self.full_cross_len) for c in CROSS_BUCKETS} | {self.full_cross_len})
        return [(b, k, c) for b in sizes for k in kvs for c in crosses]

    @torch.inference_mode()
    def capture_graphs(self) -> None:
        """Capture the decode step for each bucket; a replay computes the alignment weights too (cheap)."""
        pool = None
        align = bool(self.align_heads)
        for shape in sorted(self._graph_shapes(), reverse=True):  # largest first: the others reuse its pool
            size, kv_len, cross_len = shape
            self.arena.cross_len[:size] = cross_len
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm up kernels and allocator outside the capture
                    self._decode_eager(size, kv_len, cross_len, align)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                logits, weights = self._decode_eager(size, kv_len, cross_len, align)
            pool = graph.pool()
            self.graphs[shape] = (graph, logits, weights)
        self.arena.cross_len[:] = self.full_cross_len
        torch.cuda.synchronize()
        log.info("captured %d decode graphs (batch x self positions x audio frames)", len(self.graphs))

    def decode(self, rows: list[DecodeRow], align: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [len(rows), V] for each running sequence's next token (slots 0..len(rows)-1) and,
        if asked, the alignment heads' weights [len(rows), A, 1, audio frames]."""
        num_rows = len(rows)
        self.np_tokens[:num_rows, 0] = [r.token for r in rows]
        self.np_positions[:num_rows, 0] = [r.position for r in rows]
        kv_len = max(r.position for r in rows) + 1
        cross_len = max(self.cross_lens[:num_rows])
        if self.graphs:
            size = bucket_for(num_rows, tuple(sorted({s for s, _, _ in self.graphs})))
            kv = bucket_for(kv_len, tuple(sorted({k for _, k, _ in self.graphs})))
            cross = bucket_for(cross_len, tuple(sorted({c for _, _, c in self.graphs})))
            # padding rows decode token 0 at position 0 in free slots; new sequences overwrite them later
            self.host_tokens[num_rows:size] = 0
            self.host_positions[num_rows:size] = 0
            self.tokens[:size].copy_(self.host_tokens[:size], non_blocking=True)
            self.positions[:size].copy_(self.host_positions[:size], non_blocking=True)
            graph, logits, weights = self.graphs[(size, kv, cross)]
            graph.replay()
            return logits[:num_rows], (weights[:num_rows] if align and weights is not None else None)
        self.tokens[:num_rows].copy_(self.host_tokens[:num_rows])
        self.positions[:num_rows].copy_(self.host_positions[:num_rows])
        return self._decode_eager(num_rows, kv_len, self._cross_kv_len(range(num_rows)), align)

    # -- new sequences: encode and prefill -------------------------------------------------------

    def prefill(self, new: list[NewSequence], first_slot: int, align: bool):
        """Encode the new windows into their slots, prefill their prefixes and drafts. Returns logits
        [sum(len(draft) + 1), V] (per sequence: the queries predicting its first token and each draft
        token's successor), P(no speech) of each and, if asked, each one's alignment weights [A, width, audio frames]."""
        inputs: list[WhisperInputs] = [seq.inputs for seq in new]
        fresh = [i for i, x in enumerate(inputs) if x.encoded is None]
        for group in self._encoder_batches(fresh, lambda i: inputs[i].num_frames):
            cross_k, cross_v = self._cross_kv([inputs[i] for i in group], inputs[group[0]].num_frames, self.host_audio)
            self._store(cross_k, cross_v, [first_slot + i for i in group])
        for i, x in enumerate(inputs):
            if x.encoded is not None:
                self._store(x.encoded[0][:, None], x.encoded[1][:, None], [first_slot + i])
                x.encoded = None
        known = [seq.prefix + seq.draft for seq in new]
        # each sequence's queries: those predicting its first token and each draft token's successor,
        # then its start of transcript (P(no speech))
        queries = [[len(seq.prefix) - 1 + j for j in range(len(seq.draft) + 1)] + [seq.inputs.sot_index] for seq in new]
        heads = self.align_heads if align else None
        if self.device.type == "cpu":
            # each sequence on its own: a matrix product's kernel (so its rounding) turns on how many rows
            # it has, and a sequence's prefill must not depend on what it is batched with
            logits, weights = [], []
            for i, (seq, tokens) in enumerate(zip(new, known)):
                slot = range(first_slot + i, first_slot + i + 1)
                hidden, w = self.model.decode(
                    self.arena.rows(slot.start, slot.stop), torch.tensor([tokens]), torch.arange(len(tokens))[None],
                    len(tokens), self._cross_kv_len(slot), heads if seq.inputs.alignment else None,
                    self._row_cross_lens(slot))
                logits.append(self.model.logits(hidden[0, queries[i]]))
                weights.append(None if w is None else w[0])
        else:
            width = max(map(len, known))
            for i, tokens in enumerate(known):
                self.np_prompts[i, : len(tokens)] = tokens
                self.np_prompts[i, len(tokens) : width] = 0
            tokens = self.host_prompts[: len(new), :width].to(self.device, non_blocking=True)
            positions = torch.arange(width, device=self.device).expand(len(new), width)
            slots = range(first_slot, first_slot + len(new))
            hidden, weights = self.model.decode(self.arena.rows(slots.start, slots.stop), tokens, positions, width,
                                                self._cross_kv_len(slots), heads, self._row_cross_lens(slots))
            index = lambda values: torch.tensor(values, device=self.device)
            rows = [i for i, q in enumerate(queries) for _ in q]
            logits = self.model.logits(hidden[index(rows), index([j for q in queries for j in q])])
            logits = logits.split([len(q) for q in queries])
        no_speech = torch.softmax(torch.stack([l[-1] for l in logits]), -1)[:, self.vocab.no_speech]
        return torch.cat([l[:-1] for l in logits]), no_speech.tolist(), weights

    @torch.inference_mode()
    def encode(self, inputs: list[WhisperInputs]) -> None:
        """Encode windows ahead of their prefill (the engine's encoder thread, while steps run): each
        keeps its cross-attention K/V until the prefill copies them into its slot."""
        for group in self._encoder_batches(inputs, lambda x: x.num_frames):
            staging = torch.empty(len(group), group[0].num_frames * HOP_SAMPLES)  # not the step's: they run at once
            cross_k, cross_v = self._cross_kv(group, group[0].num_frames, staging)
            for i, x in enumerate(group):
                x.encoded = (cross_k[:, i], cross_v[:, i])

    def _encoder_batches(self, items: list, num_frames) -> list[list]:
        """The windows encoded together: those of one size on CUDA; one by one on the CPU, where a
        batch's products may round a window otherwise than alone (oneDNN's bf16 for windows of up to
        7 s: its kernel turns on the rows, windows x frames). A loop is about as fast there: three 30 s
        windows in 347 ms against 366 ms batched, four 6 s ones in 134 against 75 ms (bf16, one thread)."""
        if self.device.type == "cpu":
            return [[x] for x in items]
        sizes = sorted({num_frames(x) for x in items})
        return [[x for x in items if num_frames(x) == n] for n in sizes]

    def _cross_kv(self, inputs: list[WhisperInputs], num_frames: int, staging: torch.Tensor):
        """Cross-attention K/V [L, N, H, F/2, Dh] of windows of the same size (audio staged in `staging`)."""
        num_samples = num_frames * HOP_SAMPLES
        staged = staging[: len(inputs), :num_samples]
        staged.zero_()
        for i, x in enumerate(inputs):
            clip = x.audio[:num_samples]
            staged.numpy()[i, : len(clip)] = clip
        # the batched kernel pays on the GPU; on the CPU the per-window loop is faster (bench/kernels.py)
        front_end = log_mel_batch if self.device.type == "cuda" else log_mel_batch_reference
        mel = front_end(staged.to(self.device, non_blocking=True), self.model.num_mel_bins)  # [N, n_mels, F]
        return self.model.encode(mel)

    def _store(self, cross_k: torch.Tensor, cross_v: torch.Tensor, slots: list[int]) -> None:
        """Put windows' cross-attention K/V [L, N, H, F/2, Dh] into their slots."""
        num_audio = cross_k.shape[3]
        index = torch.tensor(slots, device=self.device)
        self.arena.cross_k[:, index, :, :num_audio] = cross_k
        self.arena.cross_v[:, index, :, :num_audio] = cross_v
        self.arena.cross_len[index] = num_audio
        for slot in slots:
            self.cross_lens[slot] = num_audio

    # -- a step ----------------------------------------------------------------------------------

    def _verify(self, slot: int, r: DecodeRow) -> tuple[list[float], int, float, np.ndarray | None]:
        """A decode row's draft, whose first token its step sampled, fed at the positions after it in one pass
        of its own (as a prefill checks a new sequence's draft) and kept up to the first token its sampling
        did not choose. Returns the kept tokens' log-probabilities after the first, the token sampled after
        them, its log-probability, and (with alignment) the queries' alignment weights [kept, A, F]."""
        draft, rows = r.draft, range(slot, slot + 1)
        tokens = torch.tensor([draft], device=self.device)
        positions = torch.arange(r.position + 1, r.position + 1 + len(draft), device=self.device)[None]
        hidden, weights = self.model.decode(self.arena.rows(slot, slot + 1), tokens, positions, r.position + 1 + len(draft),
                                            self._cross_kv_len(rows), self.align_heads if r.inputs.alignment else None,
                                            self._row_cross_lens(rows))
        histories = [r.sampled + draft[: j + 1] for j in range(len(draft))]  # before the token after draft[j]
        history = History.of(histories, self.vocab.timestamp_begin, self.device)
        sampled, logprobs = sample(self.model.logits(hidden[0]), self.filters, history, [r.sampling] * len(draft),
                                   [len(h) for h in histories])
        n = 0  # draft tokens after the first that its sampling chose
        while n + 1 < len(draft) and sampled[n] == draft[n + 1]:
            n += 1
        attention = None
        if weights is not None:
            attention = weights[0][:, : n + 1, : self.cross_lens[slot]].transpose(0, 1).half().cpu().numpy()
        return logprobs[:n], sampled[n], logprobs[n], attention

    @torch.inference_mode()
    def step(self, batch: Batch) -> StepOutput:
        for src, dst in batch.moves:  # a moved sequence decodes in row dst: its KV fills the positions before its own
            self.arena.copy_row(src, dst, batch.decode[dst].position, self.cross_lens[src])
            self.cross_lens[dst] = self.cross_lens[src]
        parts, extras = [], {}
        aligned = lambda rows: [i for i, r in enumerate(rows) if r.inputs.alignment]
        if batch.decode:  # before prefill: graph padding rows may touch the new sequences' slots
            want = aligned(batch.decode)
            logits, step_weights = self.decode(batch.decode, align=bool(want))
            parts.append(logits)
            for i in want:
                attention = step_weights[i, :, :, : self.cross_lens[i]].transpose(0, 1)  # [1, A, F]
                extras[batch.decode[i].seq_id] = WhisperExtras(attention=attention.half().cpu().numpy())
        no_speech: list[float] = []
        if batch.new:
            logits, no_speech, weights = self.prefill(batch.new, len(batch.decode), align=bool(aligned(batch.new)))
            parts.append(logits)
        # one row per decode row, and per new sequence one for each token it may sample here: its
        # first, and after each draft token (as if the draft before it had been sampled)
        histories = [r.sampled for r in batch.decode] + [s.sampled + s.draft[:j] for s in batch.new
                                                          for j in range(len(s.draft) + 1)]
        params = [r.sampling for r in batch.decode] + [s.sampling for s in batch.new for _ in range(len(s.draft) + 1)]
        logits = torch.cat(parts) if len(parts) > 1 else parts[0].clone()
        history = History.of(histories, self.vocab.timestamp_begin, self.device)
        tokens, logprobs = sample(logits, self.filters, history, params, [len(h) for h in histories])
        out_tokens, out_logprobs = tokens[: len(batch.decode)], logprobs[: len(batch.decode)]
        accepted = {}
        for i, r in enumerate(batch.decode):
            if r.draft and out_tokens[i] == r.draft[0]:  # the draft's first token chosen: check the rest in one pass
                kept, out_tokens[i], logprob, attention = self._verify(i, r)
                accepted[r.seq_id], out_logprobs[i] = [out_logprobs[i], *kept], logprob
                if attention is not None:
                    extras[r.seq_id] = WhisperExtras(attention=np.concatenate([extras[r.seq_id].attention, attention]))
        row = len(batch.decode)
        for i, (seq, p) in enumerate(zip(batch.new, no_speech)):
            n = 0  # draft tokens its own sampling chose: the draft is kept up to the first it did not
            while n < len(seq.draft) and tokens[row + n] == seq.draft[n]:
                n += 1
            out_tokens.append(tokens[row + n])
            out_logprobs.append(logprobs[row + n])
            accepted[seq.seq_id] = logprobs[row : row + n]
            row += len(seq.draft) + 1
            attention = None
            if seq.inputs.alignment:
                # from the query that predicts the first token after the start sequence (the
                # <|sot|> of English-only models; <|transcribe|> of multilingual ones) to the last accepted
                queries = slice(len(seq.prefix) - len(seq.sampled) - 1, len(seq.prefix) + n)
                attention = weights[i][:, queries, : self.cross_lens[len(batch.decode) + i]].transpose(0, 1)
                attention = attention.half().cpu().numpy()  # [queries, A, F]
            extras[seq.seq_id] = WhisperExtras(no_speech_prob=p, attention=attention)
        return StepOutput(tokens=out_tokens, logprobs=out_logprobs, extras=extras, accepted=accepted)
