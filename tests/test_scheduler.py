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
    return Sequence(AUDIO, prefix=list(range(prefix_len)), sot_index=0, max_new_tokens=max_new)


def output(batch, tokens: list[int]) -> StepOutput:
    assert len(tokens) == batch.num_seqs
    return StepOutput(tokens=tokens, logprobs=[-0.5] * len(tokens), no_speech_probs=[0.1] * len(batch.new))


def test_no_torch_in_scheduler_sessions_or_server():
    code = ("import sys, sasr.engine.scheduler, sasr.engine, sasr.protocol, sasr.session, sasr.server.app; "
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
    assert a.sampled == [5] and b.sampled == [6] and a.no_speech_prob == 0.1
    batch = s.schedule()
    assert [r.token for r in batch.decode] == [5, 6] and [r.position for r in batch.decode] == [2, 2]
    assert not batch.new  # no free slot for c yet


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
