"""The model runner for Qwen3-ASR: executes a scheduler Batch against the block arena.

It owns what is preallocated: the KV arena (num_blocks blocks of block_size positions, every
layer, and a scratch row for padding), the staging buffers of each step's integer inputs (decode
rows and new sequences: tokens, positions, arena rows, block tables), and a bounded cache of the
encodings of complete 8 s windows (keyed by a digest of their audio). New sequences compute only the prompt tokens after
their cached prefix; the audio embeddings those tokens need come from the encoding cache or from
one batched encoder pass over every window still missing.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from sasr.engine.batch import AudioWindow, Batch, DecodeRow, NewSequence, StepOutput
from sasr.engine.sampling import sample
from sasr.models.qwen3_asr.model import Qwen3ASR
from sasr.models.qwen3_asr.vocab import Qwen3Vocab

NEG_INF = float("-inf")


class SuppressIds:
    """Ids never sampled: the prompt's structure, ids with no token, and (dummy weights) end of text."""

    def __init__(self, vocab: Qwen3Vocab, vocab_rows: int, device: torch.device, ignore_eos: bool) -> None:
        self.mask = torch.zeros(vocab_rows, device=device)  # [V]: 0 or -inf
        self.mask[vocab.num_tokens:] = NEG_INF
        self.mask[vocab.suppress] = NEG_INF
        if ignore_eos:
            self.mask[sorted(vocab.eos_ids)] = NEG_INF

    def apply(self, logits: torch.Tensor, state: None) -> None:
        logits += self.mask


class Staged:
    """A preallocated integer input: filled on the host through a numpy view, copied to the device in
    one go (on the CPU the host buffer is the input itself, nothing is copied)."""

    def __init__(self, shape: tuple[int, ...], device: torch.device) -> None:
        self.host = torch.zeros(shape, dtype=torch.long, pin_memory=device.type == "cuda")
        self.np = self.host.numpy()
        self.device = self.host if device.type == "cpu" else torch.zeros(shape, dtype=torch.long, device=device)

    def upload(self, *index: slice) -> torch.Tensor:
        """The device view of host[index], copied there."""
        if self.device is not self.host:
            self.device[index].copy_(self.host[index], non_blocking=True)
        return self.device[index]


class PagedRunner:
    def __init__(self, model: Qwen3ASR, vocab: Qwen3Vocab, max_num_seqs: int, num_blocks: int,
                 block_size: int, max_len: int, ignore_eos: bool = False, max_cached_windows: int = 256) -> None:
        self.model, self.vocab = model, vocab
        self.device = model.device
        self.block_size = block_size
        self.max_blocks_per_seq = -(-max_len // block_size)
        self.arena = model.new_arena(num_blocks, block_size)
        self.filters = [SuppressIds(vocab, model.model.lm_head.weight.shape[0], self.device, ignore_eos)]
        self.encodings: OrderedDict[int, torch.Tensor] = OrderedDict()  # window key -> [tokens, D], LRU
        self.max_cached_windows = max_cached_windows
        self.num_windows_encoded = 0  # encoder work, for the metrics
        self.num_window_hits = 0
        # Staging, one set for the decode rows and one for the new sequences (a step fills both before
        # either copy has surely landed): (token, position, arena row) per token, and block tables.
        staged = lambda *shape: Staged(shape, self.device)
        self.decode_ints = staged(3, max_num_seqs, 1)  # [3, S, 1]
        self.decode_tables = staged(max_num_seqs, self.max_blocks_per_seq)
        self.prefill_ints = staged(3, max_num_seqs, max_len)  # [3, S, max_len]
        self.prefill_tables = staged(max_num_seqs, self.max_blocks_per_seq)
        self.prefill_last = staged(max_num_seqs)  # each new sequence's last token, as a row of [S * width]
        # on the CPU a sequence's numbers (so its text) depend on nothing else in its step: decode steps
        # run at least this many rows (model.steady_rows, measured by prepare on the engine's
        # thread), each row attending to its own keys alone; prefills go one at a time (windows encoded
        # together measured the same as alone, fp32)
        self.max_num_seqs = max_num_seqs
        self.pad_rows: int | None = None if self.device.type == "cpu" else 0

    def arena_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.arena.k, self.arena.v))

    def _arena_row(self, table: list[int], position: int) -> int:
        return table[position // self.block_size] * self.block_size + position % self.block_size

    def prepare(self) -> None:
        """Measure steady_rows (CPU) before the first step: the engine calls it on its thread as it starts."""
        if self.pad_rows is None:
            self.pad_rows = self.model.steady_rows(self.max_num_seqs)

    # -- decode ------------------------------------------------------------------------------------

    def decode(self, rows: list[DecodeRow]) -> torch.Tensor:
        """Logits [len(rows), V] of each running sequence's next token."""
        self.prepare()
        n = len(rows)
        m = max(n, self.pad_rows)  # rows past n: padding, writing the scratch row
        ints = self.decode_ints.np
        ints[0, :n, 0] = [r.token for r in rows]
        ints[1, :n, 0] = [r.position for r in rows]
        ints[2, :n, 0] = [self._arena_row(r.block_table, r.position) for r in rows]
        ints[:, n:m, 0] = [[0], [0], [self.arena.scratch_row]]
        kv_len = max(r.position for r in rows) + 1
        num_key_blocks = -(-kv_len // self.block_size)
        for i, r in enumerate(rows):  # columns past a row's table keep older blocks: never attended to
            table = r.block_table[:num_key_blocks]
            self.decode_tables.np[i, : len(table)] = table
        tokens, positions, slots = self.decode_ints.upload(slice(None), slice(0, m)).unbind(0)  # [m, 1] each
        tables = self.decode_tables.upload(slice(0, n), slice(0, num_key_blocks))
        lens = [r.position + 1 for r in rows] if self.device.type == "cpu" else None  # the rest: padding
        hidden = self.model.decode(self.arena, self.model.embed(tokens), positions, slots, tables, kv_len, lens)
        return self.model.logits(hidden[:, -1])[:n]

    # -- new sequences: encode what is missing, prefill what is not cached ---------------------------

    def _audio_embeddings(self, new: list[NewSequence]) -> dict[int, torch.Tensor]:
        """Embeddings of every window whose placeholders some new sequence must compute."""
        needed: dict[int, AudioWindow] = {}
        for seq in new:
            for w in seq.inputs:
                if w.first_token + w.num_tokens > seq.num_cached:  # some of its tokens are computed
                    needed.setdefault(w.key, w)
        found = {}
        for key in needed:
            if key in self.encodings:
                self.encodings.move_to_end(key)
                found[key] = self.encodings[key]
                self.num_window_hits += 1
        missing = [w for key, w in needed.items() if key not in found]
        if missing:
            audio = [torch.from_numpy(w.audio) for w in missing]
            for w, emb in zip(missing, self.model.encode_windows(audio)):
                found[w.key] = emb
                if w.complete:
                    self.encodings[w.key] = emb
            self.num_windows_encoded += len(missing)
            while len(self.encodings) > self.max_cached_windows:
                self.encodings.popitem(last=False)
        return found

    def prefill(self, new: list[NewSequence]) -> torch.Tensor:
        """Compute each new sequence's prompt after its cached prefix; logits [N, V] of its last token
        (on the CPU one sequence at a time: see pad_rows)."""
        audio = self._audio_embeddings(new)
        if self.device.type == "cpu" and len(new) > 1:
            return torch.cat([self._prefill([seq], audio) for seq in new])
        return self._prefill(new, audio)

    def _prefill(self, new: list[NewSequence], audio: dict[int, torch.Tensor]) -> torch.Tensor:
        counts = [len(seq.prefix) - seq.num_cached for seq in new]
        n, width = len(new), max(counts)
        kv_len = max(len(seq.prefix) for seq in new)
        num_key_blocks = -(-kv_len // self.block_size)
        ints, tables = self.prefill_ints.np, self.prefill_tables.np
        for i, seq in enumerate(new):
            count, table = counts[i], np.asarray(seq.block_table)
            positions = np.arange(seq.num_cached, len(seq.prefix))
            ints[0, i, :count] = seq.prefix[seq.num_cached :]
            ints[1, i, :count] = positions
            ints[2, i, :count] = table[positions // self.block_size] * self.block_size + positions % self.block_size
            ints[:, i, count:width] = [[0], [0], [self.arena.scratch_row]]  # padding writes the scratch row
            tables[i, : min(len(table), num_key_blocks)] = table[:num_key_blocks]
            self.prefill_last.np[i] = i * width + count - 1
        ids, positions, slots = self.prefill_ints.upload(slice(None), slice(0, n), slice(0, width)).unbind(0)
        x = self.model.embed(ids)  # [N, width, D]
        for i, seq in enumerate(new):
            for w in seq.inputs:
                # the window's placeholders at positions >= num_cached, as rows of x[i]
                skip = max(0, seq.num_cached - w.first_token)
                if skip < w.num_tokens:
                    start = w.first_token + skip - seq.num_cached
                    x[i, start : start + w.num_tokens - skip] = audio[w.key][skip:]
        block_tables = self.prefill_tables.upload(slice(0, n), slice(0, num_key_blocks))
        hidden = self.model.decode(self.arena, x, positions, slots, block_tables, kv_len)  # [N, width, D]
        last = self.prefill_last.upload(slice(0, n))
        return self.model.logits(hidden.flatten(0, 1).index_select(0, last))

    @torch.inference_mode()
    def step(self, batch: Batch) -> StepOutput:
        # moves are ignored: a sequence's KV lives in its blocks, wherever its slot is
        parts = []
        if batch.decode:
            parts.append(self.decode(batch.decode))
        if batch.new:
            parts.append(self.prefill(batch.new))
        logits = torch.cat(parts) if len(parts) > 1 else parts[0].clone()
        rows = [*batch.decode, *batch.new]
        tokens, logprobs = sample(logits, self.filters, None, [r.sampling for r in rows], [len(r.sampled) for r in rows])
        return StepOutput(tokens=tokens, logprobs=logprobs)
