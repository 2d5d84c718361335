"""Continuous batching on the real tiny.en: batching changes when tokens are computed, never which."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from sasr.engine import TranscriptionRequest
from tests.support.speech import read16k


def tokens_of(result) -> list[list[int]]:
    return [s.tokens for s in result.segments]


def counter(engine, name: str) -> float:
    return engine.metrics.value(name)


@pytest.fixture(scope="module")
def eight_files(speech_dir, long_speech):
    """Eight different recordings, 2 s to 90 s."""
    from tests.support.speech import concat

    singles = [read16k(speech_dir / f"h{i}.wav") for i in (0, 3, 8, 13, 21)]
    pairs = [concat([read16k(speech_dir / f"h{i}.wav"), read16k(speech_dir / f"h{i + 1}.wav")]) for i in (15, 25)]
    return singles + pairs + [read16k(long_speech[0])]


@pytest.fixture(scope="module")
async def alone(engine, eight_files):
    return [await engine.transcribe(TranscriptionRequest(audio)) for audio in eight_files]


async def steps_of(engine, coro):
    """Result of coro and the engine steps it took."""
    start = counter(engine, "sasr_engine_steps_total")
    result = await coro
    return result, counter(engine, "sasr_engine_steps_total") - start


async def test_batched_equals_alone(engine, eight_files, alone):
    steps_alone = [(await steps_of(engine, engine.transcribe(TranscriptionRequest(a))))[1] for a in eight_files]
    together, steps_together = await steps_of(
        engine, asyncio.gather(*(engine.transcribe(TranscriptionRequest(a)) for a in eight_files)))
    for one, batched in zip(alone, together):
        assert tokens_of(batched) == tokens_of(one)
        assert batched.text == one.text and one.text
    # they really shared steps: all eight took about as many as the longest alone
    assert steps_together <= max(steps_alone) + 0.3 * (sum(steps_alone) - max(steps_alone))


async def test_joining_mid_decode_changes_nothing(engine, eight_files, alone):
    first = asyncio.create_task(engine.transcribe(TranscriptionRequest(eight_files[7])))
    start = counter(engine, "sasr_engine_steps_total")
    while counter(engine, "sasr_engine_steps_total") < start + 15:  # the long file is mid-decode
        await asyncio.sleep(0.01)
    late = await asyncio.gather(*(engine.transcribe(TranscriptionRequest(a)) for a in eight_files[:3]))
    assert [tokens_of(r) for r in late] == [tokens_of(r) for r in alone[:3]]
    assert tokens_of(await first) == tokens_of(alone[7])


async def test_sampling_is_the_same_alone_and_batched(engine, eight_files):
    requests = [TranscriptionRequest(a, temperature=0.7) for a in eight_files[:4]]
    alone = [await engine.transcribe(r) for r in requests]
    together = await asyncio.gather(*(engine.transcribe(r) for r in requests))
    assert [tokens_of(r) for r in together] == [tokens_of(r) for r in alone]


async def test_a_draft_changes_no_token_and_saves_the_steps_it_guessed(engine, eight_files):
    """A draft (a live session's last text of the same audio) is checked in the prefill, and where the
    sampling leaves it, in the step after the tokens pick it up again: the tokens are greedy decoding's
    whatever the draft says, and each one it guessed right is a step saved."""
    import numpy as np

    from sasr.models.whisper.decode import WindowJob, prefix_for

    prefix, sot = prefix_for(engine.vocab, [], None, engine.max_len)
    decode = lambda draft: steps_of(engine, engine.run_window(
        WindowJob(eight_files[5], prefix, sot, 0.0, 0, 200, alignment=True, draft=draft)))
    plain, plain_steps = await decode([])
    tokens = plain.tokens
    assert len(tokens) >= 20 and plain_steps == len(tokens) + 1
    right, right_steps = await decode(tokens)
    assert right.tokens == tokens and right_steps == 1  # the end of text sampled in the prefill step too
    np.testing.assert_allclose(right.logprobs, plain.logprobs, atol=2e-3)
    assert right.attention.shape == plain.attention.shape
    np.testing.assert_allclose(right.attention.astype(np.float32), plain.attention.astype(np.float32), atol=2e-2)
    k = len(tokens) // 2
    cases = [  # (draft, steps): the prefill's, then each step's
        (tokens[:k] + [tokens[k] + 1] + tokens[k + 1 :], 2),  # one token wrong: the next step checks the rest
        ([tokens[1]] + tokens, 3),  # one too many at first: found again after two tokens
        (tokens[:k], 1 + len(tokens) - k),  # short: the rest step by step
        (tokens + tokens[:5], 1),  # too long: the end of text sampled after the tokens
    ]
    kept = lambda: [counter(engine, f"sasr_engine_draft_tokens_{name}_total") for name in ("accepted", "picked_up")]
    for i, (draft, expected) in enumerate(cases):
        before = kept()
        result, steps = await decode(draft)
        assert result.tokens == tokens and steps == expected, (draft, steps)
        if i == 0:  # the prefill keeps the k right ones; the step after it, every one after the wrong one
            assert [b - a for a, b in zip(before, kept())] == [k, len(tokens) - k - 1]
        np.testing.assert_allclose(result.logprobs, plain.logprobs, atol=2e-3)
        np.testing.assert_allclose(result.attention.astype(np.float32), plain.attention.astype(np.float32), atol=2e-2)


async def test_a_window_decoded_at_both_phases_keeps_the_likelier_decode(engine, eight_files):
    """With both_phases a window is decoded as it is and one mel hop later (the encoder's stride-2
    convolution then reads the other half of the frames), in the same steps, and the likelier decode
    is kept: the tokens of whichever of the two, decoded apart, has the higher average log-probability."""
    import dataclasses

    import numpy as np

    from sasr.audio.constants import HOP_SAMPLES
    from sasr.models.whisper.decode import WindowJob, prefix_for

    prefix, sot = prefix_for(engine.vocab, [], None, engine.max_len)
    picked = []
    for audio in eight_files[:7]:
        job = WindowJob(audio[: 30 * 16000], prefix, sot, 0.0, 0, 200, alignment=True)
        (as_is, steps_as_is), (later, steps_later) = [await steps_of(engine, engine.run_window(j)) for j in (
            job, dataclasses.replace(job, audio=np.concatenate([np.zeros(HOP_SAMPLES, np.float32), job.audio])))]
        both, steps = await steps_of(engine, engine.run_window(dataclasses.replace(job, both_phases=True)))
        likelier = max((as_is, later), key=lambda r: r.avg_logprob)
        assert both.tokens == likelier.tokens and both.avg_logprob == pytest.approx(likelier.avg_logprob, abs=1e-3)
        assert steps == max(steps_as_is, steps_later)  # decoded side by side
        picked.append(likelier is later)
    assert any(picked) and not all(picked)  # each phase is the likelier somewhere: the choice is made


async def test_windows_encoded_ahead_decode_as_those_the_prefill_encodes(engine, eight_files, monkeypatch):
    """On the CPU the engine encodes new windows on its encoder thread while steps run; the same
    windows encoded in the prefill step give the same tokens, logprobs and alignment."""
    import numpy as np

    from sasr.models.whisper.decode import WindowJob, prefix_for

    assert engine.runner.encodes_ahead and engine.encoder_thread.is_alive()
    prefix, sot = prefix_for(engine.vocab, [], None, engine.max_len)
    jobs = lambda: [WindowJob(audio, prefix, sot, 0.0, 0, 100, num_frames=frames, alignment=True)
                    for audio, frames in zip(eight_files[:4], (3000, 3000, 1000, 600))]
    ahead = await asyncio.gather(*(engine.run_window(job) for job in jobs()))
    monkeypatch.setattr(engine, "to_encode", None)  # the prefill encodes them
    in_step = await asyncio.gather(*(engine.run_window(job) for job in jobs()))
    for a, b in zip(ahead, in_step):
        assert a.tokens == b.tokens and len(a.tokens) >= 5
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
        np.testing.assert_allclose(a.attention.astype(np.float32), b.attention.astype(np.float32), atol=1e-2)


async def test_cancelled_request_frees_its_slot(engine, eight_files, alone):
    doomed = asyncio.create_task(engine.transcribe(TranscriptionRequest(eight_files[7])))
    other = asyncio.create_task(engine.transcribe(TranscriptionRequest(eight_files[1])))
    while engine.scheduler.num_running < 2:
        await asyncio.sleep(0.005)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert tokens_of(await other) == tokens_of(alone[1])
    for _ in range(200):  # the slot is freed at the next step
        if engine.scheduler.num_running == 0 and engine.num_requests == 0:
            break
        await asyncio.sleep(0.01)
    assert engine.scheduler.num_running == 0 and engine.num_requests == 0


@pytest.fixture
def own_engine(loaded):
    """A fresh engine on the shared weights, for tests that break it (faults are injected by wrapping
    its scheduler's methods: a mock where a real fault cannot be made to order)."""
    from sasr.models.whisper.engine import WhisperEngine

    eng = WhisperEngine(loaded, max_num_seqs=4)
    yield eng
    eng.close()


def break_once(obj, name: str, times: int = 1):
    """Make obj.name raise the next `times` calls, then behave again."""
    real = getattr(obj, name)
    left = [times]

    def broken(*args, **kwargs):
        if left[0] > 0:
            left[0] -= 1
            raise RuntimeError(f"injected fault in {name}")
        return real(*args, **kwargs)
    setattr(obj, name, broken)


@pytest.mark.parametrize("where", ["schedule", "postprocess"])
async def test_a_fault_in_a_step_fails_its_requests_and_the_engine_goes_on(own_engine, eight_files, alone, where):
    break_once(own_engine.scheduler, where)
    with pytest.raises(RuntimeError, match="inference failed"):
        await asyncio.wait_for(own_engine.transcribe(TranscriptionRequest(eight_files[0])), 60)
    result = await asyncio.wait_for(own_engine.transcribe(TranscriptionRequest(eight_files[1])), 60)
    assert tokens_of(result) == tokens_of(alone[1])  # served as if nothing had happened
    assert own_engine.failure is None and counter(own_engine, "sasr_engine_faults_total") == 1


async def test_a_failing_finish_callback_does_not_stop_the_engine(own_engine, eight_files, alone):
    """A finish callback that raises after doing its work (say, its request's loop is closing) is a
    fault of that step: the engine thread lives on and serves the next request."""
    real_add = own_engine.scheduler.add
    poisoned = []

    def add(seq) -> None:
        if not poisoned:
            poisoned.append(seq)
            deliver = seq.on_finish

            def on_finish(s):
                deliver(s)
                raise RuntimeError("callback fault")
            seq.on_finish = on_finish
        real_add(seq)
    own_engine.scheduler.add = add
    with contextlib.suppress(RuntimeError):
        await asyncio.wait_for(own_engine.transcribe(TranscriptionRequest(eight_files[0])), 60)
    result = await asyncio.wait_for(own_engine.transcribe(TranscriptionRequest(eight_files[1])), 60)
    assert tokens_of(result) == tokens_of(alone[1])
    assert own_engine.failure is None and counter(own_engine, "sasr_engine_faults_total") == 1


async def test_an_engine_that_cannot_go_on_fails_every_request_at_once(own_engine, eight_files):
    from sasr.engine.core import MAX_CONSECUTIVE_FAULTS

    break_once(own_engine.scheduler, "schedule", times=10 * MAX_CONSECUTIVE_FAULTS)
    for _ in range(MAX_CONSECUTIVE_FAULTS):
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(own_engine.transcribe(TranscriptionRequest(eight_files[0])), 60)
    assert own_engine.failure is not None
    started = asyncio.get_running_loop().time()
    with pytest.raises(RuntimeError, match="stopped"):
        await own_engine.transcribe(TranscriptionRequest(eight_files[1]))
    assert asyncio.get_running_loop().time() - started < 1
