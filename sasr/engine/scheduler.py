"""Continuous batching, in pure Python: which sequences run in the next step, and what came of it.

Every step the scheduler compacts the running set (finished and aborted sequences leave), admits
waiting sequences into free slots, and describes the step as a `Batch`: decode rows for the running
sequences, new sequences to encode and prefill. `postprocess` feeds the runner's `StepOutput` back.
Sequences join and leave between any two steps.
"""

from __future__ import annotations

import enum
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sasr.engine.batch import (
    Batch,
    DecodeRow,
    NewSequence,
    SamplingParams,
    StepOutput,
)
from sasr.engine.blocks import Allocation, BlockManager

# where a running sequence's sampled tokens pick its draft up again (Scheduler._resynced): their last two are
# looked for from RESYNC_BACK tokens before where the draft was expected to go on to RESYNC_AHEAD after;
# a step verifies at most DRAFT_STEP_TOKENS of it. Measured on the live replays of the voices slice (each
# decode's draft and tokens): a final's token steps fell 309 -> 112 (finals after a whole utterance's
# partials, which the final words otherwise at its second or third token), partials' 1317 -> 1180
RESYNC_BACK, RESYNC_AHEAD, DRAFT_STEP_TOKENS = 3, 32, 32


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


_ids = itertools.count()


@dataclass(eq=False)
class Sequence:
    """One decode: a forced prefix, then tokens sampled until end of text or the length cap."""

    prefix: list[int]
    max_new_tokens: int
    inputs: Any = None  # model-specific, passed to the runner untouched (see batch.NewSequence)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    on_finish: Callable[[Sequence], None] | None = None  # called by postprocess, on the engine thread
    seq_id: int = field(default_factory=lambda: next(_ids))
    sampled: list[int] = field(default_factory=list)  # starts with any forced tokens (num_forced of them)
    num_forced: int = 0  # tokens after the prefix known in advance (a live session's committed text)
    draft: list[int] = field(default_factory=list)  # tokens guessed to follow them: verified in the prefill step,
    # and where the sampled tokens leave it, in later steps from where they pick it up again (_resynced)
    draft_at: int = 0  # index in the draft of the token expected next
    offered_at: int = 0  # where the draft its last step was offered began (schedule's _resynced)
    sum_logprob: float = 0.0
    logprobs: list[float] = field(default_factory=list)  # of each sampled token (the end of text too)
    extras: list[Any] = field(default_factory=list)  # the runner's model-specific outputs, step by step
    slot: int = -1
    status: Status = Status.WAITING
    ready: bool = True  # its inputs are prepared (False while the engine's encoder thread works on them)
    error: BaseException | None = None  # set when a runner fault aborted it
    # decoder-only models: prefix-cache keys of the prompt (token ids; audio digests for audio
    # placeholders), and once admitted its blocks
    hash_keys: list[int] = field(default_factory=list)
    allocation: Allocation | None = None
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache (not computed)

    @property
    def position(self) -> int:
        """Position of the last sampled token."""
        return len(self.prefix) + len(self.sampled) - 1


class Scheduler:
    def __init__(self, max_num_seqs: int, stop_ids: frozenset[int], max_len: int,
                 max_new_per_step: int | None = None, blocks: BlockManager | None = None) -> None:
        self.max_num_seqs = max_num_seqs  # sequences at once (Whisper: arena slots)
        self.max_new_per_step = max_new_per_step or max_num_seqs  # encodes per step (they stall decoding)
        self.stop_ids = stop_ids  # tokens that end a sequence (empty: only the length cap does)
        self.blocks = blocks  # decoder-only models: the KV block manager; None: one slot per sequence
        self.max_len = max_len  # positions per sequence
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # running[i].slot == i after each schedule()
        self.by_id: dict[int, Sequence] = {}  # every sequence added and not yet done with

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    def has_work(self) -> bool:
        return bool(self.waiting) or any(s.status is Status.RUNNING for s in self.running)

    def add(self, seq: Sequence) -> None:
        if len(seq.prefix) + len(seq.sampled) >= self.max_len:
            raise ValueError(f"{len(seq.prefix) + len(seq.sampled)} known tokens do not fit {self.max_len} positions")
        if self.blocks is not None and self.blocks.blocks_needed(self._num_positions(seq)) > len(self.blocks.blocks):
            raise ValueError(f"{self._num_positions(seq)} positions do not fit the KV arena")
        seq.status = Status.WAITING
        self.waiting.append(seq)
        self.by_id[seq.seq_id] = seq

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence; a running one frees its slot at the next schedule()."""
        if seq.status is Status.WAITING:
            self.waiting.remove(seq)
            self.by_id.pop(seq.seq_id, None)
        if seq.status in (Status.WAITING, Status.RUNNING):
            seq.status = Status.ABORTED

    def _num_positions(self, seq: Sequence) -> int:
        """Positions a sequence may fill: its known tokens and all it may sample."""
        return min(self.max_len, len(seq.prefix) + len(seq.sampled) + seq.max_new_tokens + 1)

    def _compact(self) -> list[tuple[int, int]]:
        """Drop sequences that are done; move the highest live slots into the holes they leave."""
        live = [s for s in self.running if s.status is Status.RUNNING]
        for seq in self.running:
            if seq.status is not Status.RUNNING:
                self.by_id.pop(seq.seq_id, None)
        if self.blocks is not None:
            for seq in self.running:
                if seq.status is not Status.RUNNING and seq.allocation is not None:
                    self.blocks.free(seq.allocation)
                    seq.allocation = None
        kept = {s.slot for s in live}
        holes = [i for i in range(len(live)) if i not in kept]
        movers = sorted((s for s in live if s.slot >= len(live)), key=lambda s: s.slot)
        moves = []
        for hole, seq in zip(holes, movers):
            moves.append((seq.slot, hole))
            seq.slot = hole
        self.running = sorted(live, key=lambda s: s.slot)
        return moves

    def schedule(self) -> Batch | None:
        """The next step's batch, or None when nothing is waiting or running."""
        moves = self._compact()
        batch = Batch(moves=moves)
        batch.decode = [DecodeRow(s.seq_id, s.sampled[-1], s.position, s.sampled, s.sampling, s.inputs, self._table(s),
                                  self._offered(s)) for s in self.running]
        ready = [s for s in self.waiting if s.ready]
        for seq in ready[: min(self.max_num_seqs - len(self.running), self.max_new_per_step)]:
            if self.blocks is not None:
                # blocks for every position it may fill are reserved now, so it never waits mid-decode
                if not self.blocks.can_allocate(self._num_positions(seq)):
                    break
                seq.allocation = self.blocks.allocate(seq.hash_keys, self._num_positions(seq))
                seq.num_cached_tokens = seq.allocation.num_cached_tokens
            self.waiting.remove(seq)
            seq.slot, seq.status = len(self.running), Status.RUNNING
            self.running.append(seq)
            batch.new.append(NewSequence(seq.seq_id, seq.slot, seq.prefix + seq.sampled, seq.sampled, seq.sampling,
                                         seq.inputs, self._table(seq), seq.num_cached_tokens, self._capped(seq, seq.draft)))
        return batch if batch.num_seqs else None

    def _capped(self, seq: Sequence, draft: list[int]) -> list[int]:
        """The draft tokens a step may verify: before any stop token, and leaving room for the token
        sampled after them within both caps."""
        room = min(seq.max_new_tokens - (len(seq.sampled) - seq.num_forced) - 1, self.max_len - seq.position - 2)
        draft = list(itertools.takewhile(lambda t: t not in self.stop_ids, draft))
        return draft[: max(0, room)]

    def _offered(self, seq: Sequence) -> list[int]:
        """The draft tokens a running sequence's step may verify."""
        seq.offered_at = at = self._resynced(seq)
        return self._capped(seq, seq.draft[at : at + DRAFT_STEP_TOKENS])

    @staticmethod
    def _resynced(seq: Sequence) -> int:
        """Where a running sequence's draft goes on: the index of the draft token its next step may take.
        Its sampling left the draft where it chose another token than the draft's; the draft goes on where
        its last two tokens stand in it (a word written otherwise, added or left out puts them a little
        before or after where the draft was expected to go on), else where it was expected to (the token
        sampled in its place taken for a substitute). A draft token is only ever kept where the sampling
        chose it: a wrong guess changes no token, and costs nothing where its first token is not chosen."""
        key, at = seq.sampled[-2:], seq.draft_at
        return next((j for j in range(max(2, at - RESYNC_BACK), min(len(seq.draft), at + RESYNC_AHEAD) + 1)
                     if seq.draft[j - 2 : j] == key), at)

    @staticmethod
    def _table(seq: Sequence) -> list[int]:
        return seq.allocation.block_table if seq.allocation is not None else []

    def postprocess(self, batch: Batch, output: StepOutput) -> list[Sequence]:
        """Record each row's sampled token; return the sequences that finished (their on_finish called)."""
        finished = []
        new_ids = {s.seq_id for s in batch.new}
        drafts = {r.seq_id: r.draft for r in batch.decode} | {s.seq_id: s.draft for s in batch.new}
        for row, seq_id in enumerate(batch.seq_ids):
            seq = self.by_id.get(seq_id)
            if seq is None:
                continue  # aborted while waiting for this step, and forgotten
            if seq_id in new_ids and self.blocks is not None and seq.allocation is not None:
                self.blocks.register(seq.allocation)  # its prompt's KV is written now
            if seq.status is not Status.RUNNING:
                continue  # aborted while the step ran
            if seq_id in output.extras:
                seq.extras.append(output.extras[seq_id])
            accepted = output.accepted.get(seq_id, [])  # verified draft tokens, before this step's token
            # where the row's draft began (as schedule offered it), past those and the token sampled after
            # them (it stands for the next draft token)
            seq.draft_at = (0 if seq_id in new_ids else seq.offered_at) + len(accepted) + 1
            seq.sampled += drafts[seq_id][: len(accepted)]
            seq.sum_logprob += sum(accepted)
            seq.logprobs += accepted
            token = output.tokens[row]
            seq.sum_logprob += output.logprobs[row]
            seq.logprobs.append(output.logprobs[row])
            if token in self.stop_ids:
                seq.status = Status.FINISHED
            else:
                seq.sampled.append(token)
                if len(seq.sampled) - seq.num_forced >= seq.max_new_tokens or seq.position + 1 >= self.max_len:
                    seq.status = Status.FINISHED
            if seq.status is Status.FINISHED:
                finished.append(seq)
                if seq.on_finish is not None:
                    seq.on_finish(seq)
        return finished
