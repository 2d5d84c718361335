"""Replay audio through a live Qwen3-ASR session's policy in-process, recording each decode's work
(shared by the prefix-reuse tests and `make bench-prefix`)."""

from __future__ import annotations

import time

import numpy as np

from sasr.audio.constants import SAMPLE_RATE


async def measures_steady_rows_unasked(engine, timeout_s: float = 30.0) -> bool:
    """Whether an engine's runner has measured its steady_rows within timeout_s of its start, no request
    sent (then closes the engine)."""
    import asyncio

    try:
        for _ in range(round(timeout_s / 0.05)):
            if engine.runner.pad_rows is not None:
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        engine.close()


async def replay_session(engine, audio: np.ndarray, language: str = "en", chunk_s: float = 2.0) -> list[dict]:
    """Feed the policy chunk_s at a time, as a session would, and decode each chunk at once.

    One record per decode: the session time it hears up to, its latency, its tokens and committed
    words, the prompt tokens computed (not found in the prefix cache) and of those the audio ones.
    """
    policy = engine.stream_policy(language, chunk_s)
    step = round(chunk_s * SAMPLE_RATE)
    records = []
    for start in range(0, len(audio) + 1, step):
        policy.add_audio(audio[start : start + step])
        final = start + step >= len(audio)
        job = policy.next_job(final=final)
        if job is None:
            continue
        at_s = (policy.buffer_start + job.end) / SAMPLE_RATE
        started = time.perf_counter()
        result = await engine.run_window(job)
        latency_s = time.perf_counter() - started
        words = policy.update(job, result, final=final)
        audio_end = job.prompt.audio_at + job.prompt.num_audio
        records.append({
            "at_s": round(at_s, 2), "latency_s": latency_s, "tokens": result.tokens, "words": words,
            "prompt": result.num_prompt_tokens, "computed": result.num_prompt_tokens - result.num_cached_tokens,
            "audio_computed": audio_end - max(job.prompt.audio_at, result.num_cached_tokens),
        })
    return records


async def replay_stream(engine, audio: np.ndarray, pace: str = "file", frame_s: float = 0.1,
                        partials: bool = True, options=None) -> list:
    """Stream audio through a live Session in-process (options: its LiveOptions); return the events it emits.

    pace "file": the client sends faster than speech (finals only); "live": a client at the pace of
    speech on a server that keeps up (each frame is fully handled before the next one is sent).
    """
    import asyncio

    from sasr.live import session as live_session
    from sasr.engine import LiveOptions
    from sasr.protocol import DEFAULT_AUDIO_FORMAT, TranscriptFinal, server_event_decoder
    from sasr.server.ws import StreamListener

    events = []

    class Recorder:  # the socket StreamListener sends to
        async def send_text(self, text: str) -> None:
            events.append(server_event_decoder.decode(text))

    session = live_session.Session(engine, StreamListener(Recorder(), partials), DEFAULT_AUDIO_FORMAT,
                                   options=options or LiveOptions())
    session.live_slack_s = -1.0 if pace == "file" else 1e9  # a file sender at once, or never one
    step = round(frame_s * SAMPLE_RATE)
    for start in range(0, len(audio), step):
        session._take(audio[start : start + step])
        if pace == "live":
            while session.unprocessed_s > 0 or session.incoming:
                session.progress.clear()
                await asyncio.wait_for(session.progress.wait(), 60)
        else:
            await session.wait_for_room()
    await session.finish()
    events.append(TranscriptFinal(text=session.text, audio_ms=session.received_ms))
    return events
