"""The one contract between the scheduler and the model runner: a Batch in, a StepOutput out.

Plain data, no torch, so the scheduler can be tested with hand-built outputs. Every row names its
sequence (`seq_id`); what only one model family understands travels in `inputs` (built by that
family's engine, passed through by the scheduler untouched) and comes back in `StepOutput.extras`.

Slots (Whisper): the runner's KV arena has one slot per sequence it can hold. Running sequences always occupy
slots 0..num_decode-1 (the scheduler compacts them with `moves` when one finishes), so the decode
step works on a prefix of the arena and never gathers; new sequences take the next slots.
Blocks (decoder-only models such as Qwen3-ASR): each sequence's KV lives in the blocks of its block
table, which the scheduler's BlockManager hands out, shared between prompts that start alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    seed: int = 0  # with temperature > 0: the same seed samples the same tokens, batched or alone


@dataclass
class AudioWindow:
    """Audio a decoder-only prompt's placeholders stand for: one encoder window (at most 8 s)."""

    key: int  # digest of the samples: the same audio has the same key
    audio: np.ndarray  # 16 kHz float32
    first_token: int  # index in the prompt of its first placeholder
    num_tokens: int  # its placeholders
    complete: bool  # a full window: its encoding never changes, so the runner may cache it


@dataclass
class NewSequence:
    """A sequence to prefill (after whatever its model must encode); its first token is sampled in the same step."""

    seq_id: int
    slot: int  # row it takes in this step and after (Whisper: its KV arena slot)
    prefix: list[int]  # tokens to prefill, the forced ones (`sampled`) at the end
    sampled: list[int]  # the forced tokens at the end of prefix (often none): the logit filters read it
    sampling: SamplingParams
    inputs: Any  # model-specific (Whisper: WhisperInputs; Qwen3-ASR: its list[AudioWindow])
    # decoder-only models (block KV): the blocks holding its positions, and the leading prompt tokens
    # whose KV is already there (prefix cache hits, not recomputed)
    block_table: list[int] = field(default_factory=list)
    num_cached: int = 0
    # tokens guessed to follow the prefix (say, the last decode's text of the same audio): a runner may
    # prefill them too and keep the leading ones its own sampling would have chosen (StepOutput.accepted)
    draft: list[int] = field(default_factory=list)


@dataclass
class DecodeRow:
    """A running sequence's next step."""

    seq_id: int
    token: int  # the last sampled token, fed back in
    position: int  # its position in the sequence
    sampled: list[int]  # tokens sampled so far, the last one included (read by the logit filters)
    sampling: SamplingParams
    inputs: Any  # as in NewSequence
    block_table: list[int] = field(default_factory=list)  # decoder-only models: its blocks
    # tokens guessed to follow `token` (its sequence's draft, where its tokens picked it up again): a runner
    # may check them in the step and keep the leading ones its own sampling chose (StepOutput.accepted)
    draft: list[int] = field(default_factory=list)


@dataclass
class Batch:
    """What the runner does in one step, in this order: moves, decode, then new sequences."""

    moves: list[tuple[int, int]] = field(default_factory=list)  # (src_slot, dst_slot) KV copies
    decode: list[DecodeRow] = field(default_factory=list)  # row i is the sequence in slot i
    new: list[NewSequence] = field(default_factory=list)  # slots len(decode), len(decode) + 1, ...

    @property
    def num_seqs(self) -> int:
        return len(self.decode) + len(self.new)

    @property
    def seq_ids(self) -> list[int]:
        """The sequence of each row of the step's outputs: decode rows, then new sequences."""
        return [r.seq_id for r in self.decode] + [s.seq_id for s in self.new]


@dataclass
class StepOutput:
    """What the runner returns for a Batch: one entry per row, rows in `Batch.seq_ids` order."""

    tokens: list[int]  # sampled token of each row
    logprobs: list[float]  # log-probability of each sampled token under the filtered distribution
    extras: dict[int, Any] = field(default_factory=dict)  # seq_id -> model-specific output of this step
    # seq_id -> log-probabilities of the leading draft tokens of a row (new or decode) that its sampling
    # chose (they come before `tokens[row]`); a runner that ignores drafts accepts none
    accepted: dict[int, list[float]] = field(default_factory=dict)
