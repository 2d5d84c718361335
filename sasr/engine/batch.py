"""The one contract between the scheduler and the model runner: a Batch in, a StepOutput out.

Plain data, no torch, so the scheduler can be tested with hand-built outputs.

Slots (Whisper): the runner's KV arena has one slot per sequence it can hold. Running sequences always occupy
slots 0..num_decode-1 (the scheduler compacts them with `moves` when one finishes), so the decode
step works on a prefix of the arena and never gathers; new sequences take the next slots.
Blocks (decoder-only models such as Qwen3-ASR): each sequence's KV lives in the blocks of its block
table, which the scheduler's BlockManager hands out, shared between prompts that start alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """A window to encode and prefill; its first token is sampled in the same step."""

    slot: int  # arena slot it takes
    audio: np.ndarray  # [num_samples <= 30 s] 16 kHz float32; the runner pads it and computes log-mel
    num_frames: int  # mel frames to encode (even, <= 3000): 3000 is a full 30 s window
    prefix: list[int]  # tokens to prefill: [<|startofprev|> prompt...] <|startoftranscript|> ... [forced]
    sot_index: int  # index of <|startoftranscript|> in prefix: the no-speech probability is read there
    sampled: list[int]  # the forced tokens at the end of prefix (often none): the logit filters read it
    sampling: SamplingParams
    # decoder-only models (block KV): the blocks holding its positions, the leading prompt tokens
    # whose KV is already there (prefix cache hits, not recomputed), and its audio windows
    block_table: list[int] = field(default_factory=list)
    num_cached: int = 0
    audio_windows: list[AudioWindow] = field(default_factory=list)


@dataclass
class DecodeRow:
    """A running sequence's next step."""

    token: int  # the last sampled token, fed back in
    position: int  # its position in the sequence
    sampled: list[int]  # tokens sampled so far, the last one included (read by the logit filters)
    sampling: SamplingParams
    block_table: list[int] = field(default_factory=list)  # decoder-only models: its blocks


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
