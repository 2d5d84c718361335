"""The scheduler alone: pure Python, driven with hand-built runner outputs (no torch, no model)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from sasr.engine.batch import StepOutput
from sasr.engine.scheduler import Scheduler, Sequence, Status

EOT = 99
AUDIO = np.zeros(160, np.float32)


def seq(prefix_len: int = 2, max_new: int = 10) -> Sequence:
    return Sequence(prefix=list(range(prefix_len)), max_new_tokens=max_new, inputs=AUDIO)


def output(batch, tokens: list[int]) -> StepOutput:
    assert len(tokens) == batch.num_seqs
    # a model-specific extra for each new sequence, keyed by its id: it must reach that sequence
    return StepOutput(tokens=tokens, logprobs=[-0.5] * len(tokens), extras={n.seq_id: f"first-{n.seq_id}" for n in batch.new})


def test_no_torch_in_scheduler_sessions_or_server():
    code = ("import sys, sasr.engine.scheduler, sasr.engine, sasr.protocol, sasr.live.session, sasr.server.app; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_admits_up_to_slots_then_queues():
    s = Scheduler(max_num_seqs=2, stop_ids=frozenset({EOT}), max_len=50)
    a, b, c = seq(), seq(), seq()
    for x in (a, b, c):
        s.add(x)
    batch = s.schedule()
    assert [n.slot for n in batch.new] == [0, 1] and not batch.decode
    assert c.status is Status.WAITING and s.num_waiting == 1
    s.postprocess(batch, output(batch, [5, 6]))
    assert a.sampled == [5] and b.sampled == [6]
    assert a.extras == [f"first-{a.seq_id}"] and b.extras == [f"first-{b.seq_id}"]
    assert batch.seq_ids == [a.seq_id, b.seq_id]
    batch = s.schedule()
    assert [r.token for r in batch.decode] == [5, 6] and [r.position for r in batch.decode] == [2, 2]
    assert not batch.new  # no free slot for c yet


def test_a_sequence_waits_until_its_inputs_are_ready():
    """A sequence whose inputs the engine is still encoding waits; ready ones behind it go first."""
    s = Scheduler(max_num_seqs=4, stop_ids=frozenset({EOT}), max_len=50)
    a, b = seq(), seq()
    a.ready = False
    s.add(a)
    assert s.schedule() is None and s.has_work()
    s.add(b)
    batch = s.schedule()
    assert [n.seq_id for n in batch.new] == [b.seq_id] and a.status is Status.WAITING
    s.postprocess(batch, output(batch, [5]))
    a.ready = True
    batch = s.schedule()
    assert [n.seq_id for n in batch.new] == [a.seq_id] and [r.seq_id for r in batch.decode] == [b.seq_id]


def test_sequences_leave_and_join_between_steps_with_compaction():
    s = Scheduler(max_num_seqs=3, stop_ids=frozenset({EOT}), max_len=50)
    a, b, c, d = seq(), seq(), seq(), seq()
    for x in (a, b, c, d):
        s.add(x)
    batch = s.schedule()
    s.postprocess(batch, output(batch, [1, 1, 1]))
    batch = s.schedule()
    finished = s.postprocess(batch, output(batch, [EOT, 2, 2]))  # a ends
    assert finished == [a] and a.status is Status.FINISHED and a.sampled == [1]
    batch = s.schedule()
    # c (slot 2) moves into a's slot 0; d joins at slot 2 in the same step as b and c decode
    assert batch.moves == [(2, 0)]
    assert (c.slot, b.slot, d.slot) == (0, 1, 2)
    assert [r.token for r in batch.decode] == [2, 2] and [n.slot for n in batch.new] == [2]
    s.postprocess(batch, output(batch, [3, 4, 7]))
    assert c.sampled == [1, 2, 3] and b.sampled == [1, 2, 4] and d.sampled == [7]


def test_length_caps_finish_a_sequence():
    s = Scheduler(max_num_seqs=2, stop_ids=frozenset({EOT}), max_len=6)
    short, long_prefix = seq(max_new=2), seq(prefix_len=4, max_new=100)
    s.add(short)
    s.add(long_prefix)
    batch = s.schedule()
    assert s.postprocess(batch, output(batch, [1, 1])) == []
    batch = s.schedule()
    # short hits max_new_tokens; long_prefix reaches position 5, the last of max_len 6
    assert s.postprocess(batch, output(batch, [2, 2])) == [short, long_prefix]
    assert s.schedule() is None and not s.has_work()


def test_a_draft_is_kept_as_far_as_the_runner_accepted_it():
    s = Scheduler(max_num_seqs=2, stop_ids=frozenset({EOT}), max_len=50)
    a = Sequence(prefix=[0, 1], max_new_tokens=10, inputs=AUDIO, sampled=[7], num_forced=1, draft=[20, 21, 22])
    s.add(a)
    batch = s.schedule()
    assert batch.new[0].prefix == [0, 1, 7] and batch.new[0].draft == [20, 21, 22]
    # the runner's sampling chose 20 and 21, then 30 where the draft said 22
    s.postprocess(batch, StepOutput(tokens=[30], logprobs=[-0.3], accepted={a.seq_id: [-0.1, -0.2]}))
    assert a.sampled == [7, 20, 21, 30] and a.logprobs == [-0.1, -0.2, -0.3]
    assert abs(a.sum_logprob + 0.6) < 1e-9
    batch = s.schedule()
    assert [(r.token, r.position) for r in batch.decode] == [(30, 5)]  # goes on after the accepted draft


def test_a_running_sequence_picks_its_draft_up_again_where_its_tokens_meet_it():
    s = Scheduler(max_num_seqs=1, stop_ids=frozenset({EOT}), max_len=50)
    a = Sequence(prefix=[0, 1], max_new_tokens=20, inputs=AUDIO, draft=[20, 21, 22, 23, 24, 25, 26])
    s.add(a)
    batches = [s.schedule()]

    def step(token: int, accepted: int = 0) -> list[int] | None:
        """The runner chose the row's first `accepted` draft tokens, then `token`; the next row's draft."""
        s.postprocess(batches[-1], StepOutput(tokens=[token], logprobs=[-0.5], accepted={a.seq_id: [-0.1] * accepted}))
        batches.append(s.schedule())
        return batches[-1].decode[0].draft if batches[-1] else None

    # 20 kept, then 30 where the draft said 21: taken for a substitute, the draft goes on after it
    assert step(30, accepted=1) == [22, 23, 24, 25, 26]
    assert step(9, accepted=1) == [24, 25, 26]  # 22 kept, then 9 where it said 23 (say, a token added)
    assert step(23) == [25, 26]  # (where 24 was expected: 23 taken for its substitute)
    assert step(24) == [25, 26]  # 23 24 met in the draft: it goes on after them
    assert step(EOT, accepted=2) is None and a.sampled == [20, 30, 22, 9, 23, 24, 25, 26]


def test_a_draft_stops_before_a_stop_token_and_within_both_caps():
    s = Scheduler(max_num_seqs=3, stop_ids=frozenset({EOT}), max_len=8)
    stopped = Sequence(prefix=[0, 1], max_new_tokens=10, inputs=AUDIO, draft=[20, EOT, 21])
    few_new = Sequence(prefix=[0, 1], max_new_tokens=3, inputs=AUDIO, draft=[20, 21, 22, 23])
    near_end = Sequence(prefix=[0, 1, 2, 3, 4], max_new_tokens=10, inputs=AUDIO, draft=[20, 21, 22])
    for x in (stopped, few_new, near_end):
        s.add(x)
    batch = s.schedule()
    # room for the token sampled after the draft: 3 new tokens at most, and position 7 the last of 8
    assert [n.draft for n in batch.new] == [[20], [20, 21], [20, 21]]
    accepted = {n.seq_id: [-0.1] * len(n.draft) for n in batch.new}
    finished = s.postprocess(batch, StepOutput(tokens=[EOT, 5, 5], logprobs=[-0.5] * 3, accepted=accepted))
    assert finished == [stopped, few_new, near_end]
    assert stopped.sampled == [20] and few_new.sampled == [20, 21, 5] and near_end.sampled == [20, 21, 5]
    assert near_end.position == 7


def test_abort_frees_the_slot_at_the_next_step():
    s = Scheduler(max_num_seqs=1, stop_ids=frozenset({EOT}), max_len=50)
    a, b = seq(), seq()
    s.add(a)
    s.add(b)
    batch = s.schedule()
    s.abort(a)  # while the step runs
    s.postprocess(batch, output(batch, [4]))
    assert a.sampled == [] and a.status is Status.ABORTED
    batch = s.schedule()
    assert not batch.decode and [n.slot for n in batch.new] == [0] and b.status is Status.RUNNING


def test_abort_waiting_sequence_never_runs():
    s = Scheduler(max_num_seqs=1, stop_ids=frozenset({EOT}), max_len=50)
    a, b = seq(), seq()
    s.add(a)
    s.add(b)
    s.abort(b)
    batch = s.schedule()
    assert batch.num_seqs == 1 and s.num_waiting == 0 and b.status is Status.ABORTED


def test_on_finish_called_once():
    s = Scheduler(max_num_seqs=1, stop_ids=frozenset({EOT}), max_len=50)
    calls = []
    a = seq()
    a.on_finish = calls.append
    s.add(a)
    batch = s.schedule()
    s.postprocess(batch, output(batch, [EOT]))
    assert calls == [a] and s.schedule() is None


# -- KV blocks with prefix reuse (pure Python) ----------------------------------------------------------


def test_blocks_found_by_chained_hash_and_shared():
    from sasr.engine.blocks import BlockManager

    blocks = BlockManager(num_blocks=8, block_size=4)
    first = blocks.allocate(list(range(10)), num_tokens=12)  # 2 full prompt blocks, 3 blocks in all
    assert first.num_cached_tokens == 0 and len(first.block_table) == 3
    blocks.register(first)
    second = blocks.allocate(list(range(9)) + [99, 100], num_tokens=12)  # same first 8 keys
    assert second.num_cached_tokens == 8 and second.block_table[:2] == first.block_table[:2]
    assert blocks.blocks[first.block_table[0]].ref_count == 2
    # a block is named by everything before it too: the same keys after a different start miss
    third = blocks.allocate([7] + list(range(1, 10)), num_tokens=12)
    assert third.num_cached_tokens == 0
    assert blocks.num_hit_tokens == 8 and blocks.num_queried_tokens == 31


def test_last_prompt_token_is_always_computed():
    from sasr.engine.blocks import BlockManager

    blocks = BlockManager(num_blocks=8, block_size=4)
    first = blocks.allocate(list(range(8)), num_tokens=10)
    blocks.register(first)
    again = blocks.allocate(list(range(8)), num_tokens=10)
    assert again.num_cached_tokens == 4  # not 8: the last token's logits start the decode


def test_freed_blocks_stay_cached_until_evicted_least_recent_first():
    from sasr.engine.blocks import BlockManager

    blocks = BlockManager(num_blocks=4, block_size=4)
    a = blocks.allocate(list(range(9)), num_tokens=9)  # 3 blocks, 2 full prompt blocks
    blocks.register(a)
    blocks.free(a)
    assert blocks.num_free_blocks == 4
    b = blocks.allocate(list(range(9)), num_tokens=9)  # found again after its owner finished
    assert b.num_cached_tokens == 8
    blocks.free(b)
    c = blocks.allocate([50 + i for i in range(13)], num_tokens=16)  # needs every block: evicts all
    assert c.num_cached_tokens == 0 and not blocks.cached
    blocks.free(c)
    d = blocks.allocate(list(range(9)), num_tokens=9)
    assert d.num_cached_tokens == 0


def test_prefix_caching_off_never_hits():
    from sasr.engine.blocks import BlockManager

    blocks = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    blocks.register(blocks.allocate(list(range(9)), num_tokens=9))
    assert blocks.allocate(list(range(9)), num_tokens=9).num_cached_tokens == 0


def test_scheduler_reserves_blocks_and_waits_for_them():
    from sasr.engine.blocks import BlockManager

    blocks = BlockManager(num_blocks=4, block_size=4)
    s = Scheduler(max_num_seqs=4, stop_ids=frozenset({EOT}), max_len=50, blocks=blocks)
    a, b = seq(prefix_len=5, max_new=3), seq(prefix_len=5, max_new=3)  # 9 positions: 3 blocks each
    a.hash_keys, b.hash_keys = list(range(5)), list(range(5))
    s.add(a)
    s.add(b)
    batch = s.schedule()
    assert len(batch.new) == 1 and len(batch.new[0].block_table) == 3  # b waits for blocks
    s.postprocess(batch, output(batch, [EOT]))
    batch = s.schedule()  # a's blocks are free again; b finds a's first prompt block
    assert len(batch.new) == 1 and batch.new[0].num_cached == 4
