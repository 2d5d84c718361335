"""The one contract between the scheduler and the model runner: a Batch in, a StepOutput out.

Plain data, no torch, so the scheduler can be tested with hand-built outputs.

Slots: the runner's KV arena has one slot per sequence it can hold. Running sequences always occupy
slots 0..num_decode-1 (the scheduler compacts them with `moves` when one finishes), so the decode
step works on a prefix of the arena and never gathers; new sequences take the next slots.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SamplingParams:
    temperature: float = 0.0  # 0: greedy
    seed: int = 0  # with temperature > 0: the same seed samples the same tokens, batched or alone


@dataclass
class NewSequence:
    """A window to encode and prefill; its first token is sampled in the same step."""

    slot: int  # arena slot it takes
    audio: np.ndarray  # [num_samples <= 30 s] 16 kHz float32; the runner pads it and computes log-mel
    num_frames: int  # mel frames to encode (even, <= 3000): 3000 is a full 30 s window
    prefix: list[int]  # tokens to prefill: [<|startofprev|> prompt...] <|startoftranscript|> ... [forced]
    sot_index: int  # index of <|startoftranscript|> in prefix: the no-speech probability is read there
    sampled: list[int]  # the forced tokens at the end of prefix (often none): the logit filters read it
    sampling: SamplingParams


@dataclass
class DecodeRow:
    """A running sequence's next step."""

    token: int  # the last sampled token, fed back in
    position: int  # its position in the sequence
    sampled: list[int]  # tokens sampled so far, the last one included (read by the logit filters)
    sampling: SamplingParams


@dataclass
class Batch:
    """What the runner does in one step, in this order: moves, decode, then new sequences."""

    moves: list[tuple[int, int]] = field(default_factory=list)  # (src_slot, dst_slot) KV copies
    decode: list[DecodeRow] = field(default_factory=list)  # row i is the sequence in slot i
    new: list[NewSequence] = field(default_factory=list)  # slots len(decode), len(decode) + 1, ...

    @property
    def num_seqs(self) -> int:
        return len(self.decode) + len(self.new)


@dataclass
class StepOutput:
    """What the runner returns: one entry per sequence of the batch, in slot order."""

    tokens: list[int]  # sampled token of each sequence (decode rows first, then new sequences)
    logprobs: list[float]  # log-probability of each sampled token under the filtered distribution
    no_speech_probs: list[float]  # one per new sequence: probability of <|nospeech|> at the start
