"""The model runner for Qwen3-ASR: executes a scheduler Batch against the block arena.

It owns what is preallocated: the KV arena (num_blocks blocks of block_size positions, every
layer), the staging buffers of the decode step, and a bounded cache of the encodings of complete
8 s windows (keyed by a digest of their audio). New sequences compute only the prompt tokens after
their cached prefix; the audio embeddings those tokens need come from the encoding cache or from
one batched encoder pass over every window still missing.
"""

from __future__ import annotations

from collections import OrderedDict

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
        # staging for the decode step: filled on the host, copied in one go
        pin = self.device.type == "cuda"
        self.host_tokens = torch.zeros(max_num_seqs, 1, dtype=torch.long, pin_memory=pin)
        self.host_positions = torch.zeros(max_num_seqs, 1, dtype=torch.long, pin_memory=pin)
        self.host_tables = torch.zeros(max_num_seqs, self.max_blocks_per_seq, dtype=torch.long, pin_memory=pin)
        self.tokens = torch.zeros(max_num_seqs, 1, dtype=torch.long, device=self.device)
        self.positions = torch.zeros(max_num_seqs, 1, dtype=torch.long, device=self.device)
        self.tables = torch.zeros(max_num_seqs, self.max_blocks_per_seq, dtype=torch.long, device=self.device)

    def arena_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.arena.k, self.arena.v))

    def _slots(self, table: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Arena rows of positions [B, T] under block tables [B, max_blocks]."""
        blocks = torch.gather(table, 1, positions // self.block_size)
        return blocks * self.block_size + positions % self.block_size

    # -- decode ------------------------------------------------------------------------------------

    def decode(self, rows: list[DecodeRow]) -> torch.Tensor:
        """Logits [len(rows), V] of each running sequence's next token."""
        n = len(rows)
        self.host_tokens[:n, 0] = torch.tensor([r.token for r in rows])
        self.host_positions[:n, 0] = torch.tensor([r.position for r in rows])
        width = max(len(r.block_table) for r in rows)  # columns past a row's table are never read
        self.host_tables[:n, :width] = torch.tensor([r.block_table + [0] * (width - len(r.block_table)) for r in rows])
        self.tokens[:n].copy_(self.host_tokens[:n])
        self.positions[:n].copy_(self.host_positions[:n])
        self.tables[:n].copy_(self.host_tables[:n])
        kv_len = max(r.position for r in rows) + 1
        slots = self._slots(self.tables[:n], self.positions[:n])
        x = self.model.embed(self.tokens[:n])  # [n, 1, D]
        hidden = self.model.decode(self.arena, x, self.positions[:n], slots, self.tables[:n], kv_len)
        return self.model.logits(hidden[:, -1])

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
        """Compute each new sequence's prompt after its cached prefix; logits [N, V] of its last token."""
        audio = self._audio_embeddings(new)
        counts = [len(seq.prefix) - seq.num_cached for seq in new]
        width = max(counts)
        ids = torch.zeros(len(new), width, dtype=torch.long)
        positions = torch.zeros(len(new), width, dtype=torch.long)
        tables = torch.zeros(len(new), self.max_blocks_per_seq, dtype=torch.long)
        for i, seq in enumerate(new):
            ids[i, : counts[i]] = torch.tensor(seq.prefix[seq.num_cached :])
            positions[i, : counts[i]] = torch.arange(seq.num_cached, len(seq.prefix))
            tables[i, : len(seq.block_table)] = torch.tensor(seq.block_table)
        ids, positions, tables = ids.to(self.device), positions.to(self.device), tables.to(self.device)
        x = self.model.embed(ids)  # [N, width, D]
        for i, seq in enumerate(new):
            for w in seq.inputs:
                # the window's placeholders at positions >= num_cached, as rows of x[i]
                skip = max(0, seq.num_cached - w.first_token)
                if skip < w.num_tokens:
                    start = w.first_token + skip - seq.num_cached
                    x[i, start : start + w.num_tokens - skip] = audio[w.key][skip:]
        slots = self._slots(tables, positions)
        pad = torch.arange(width, device=self.device)[None, :] >= torch.tensor(counts, device=self.device)[:, None]
        slots[pad] = -1  # padding tokens write nothing
        kv_len = max(len(seq.prefix) for seq in new)
        hidden = self.model.decode(self.arena, x, positions, slots, tables, kv_len)  # [N, width, D]
        last = torch.tensor(counts, device=self.device) - 1
        return self.model.logits(hidden[torch.arange(len(new), device=self.device), last])

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
