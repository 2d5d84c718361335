"""Continuous batching on the real tiny.en: batching changes when tokens are computed, never which."""

from __future__ import annotations

import asyncio

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
