"""Replay audio through a live Qwen3-ASR session's policy in-process, recording each decode's work
(shared by the prefix-reuse tests and `make bench-prefix`)."""

from __future__ import annotations

import time

import numpy as np

from sasr.audio.constants import SAMPLE_RATE


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
