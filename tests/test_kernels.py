"""Kernels against their plain-torch references (CPU here; the CUDA cases run where a GPU is)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sasr.kernels.logmel import log_mel_batch, log_mel_batch_reference

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def windows(batch: int, seed: int = 0) -> torch.Tensor:
    """Audio of different lengths, zero-padded to 30 s, as the runner builds them."""
    rng = np.random.default_rng(seed)
    audio = np.zeros((batch, 480000), np.float32)
    for i in range(batch):
        n = rng.integers(8000, 480000)
        audio[i, :n] = rng.standard_normal(n) * rng.uniform(0.01, 0.5)
    return torch.from_numpy(audio)


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_log_mel_batch_equals_reference(batch):
    audio = windows(batch)
    torch.testing.assert_close(log_mel_batch(audio), log_mel_batch_reference(audio), atol=1e-5, rtol=1e-5)


@pytest.mark.cuda
@cuda
def test_log_mel_batch_on_cuda_equals_cpu_reference():
    audio = windows(8)
    got = log_mel_batch(audio.cuda()).cpu()
    torch.testing.assert_close(got, log_mel_batch_reference(audio), atol=2e-4, rtol=1e-4)


@pytest.mark.cuda
@cuda
async def test_cuda_graph_replay_equals_eager(cache_dir, speech_dir):
    """The same requests give the same tokens with graphs and with --enforce-eager."""
    from sasr.engine import TranscriptionRequest
    from sasr.models.whisper.engine import WhisperEngine
    from sasr.models.whisper.load import load_whisper
    from tests.support.speech import read16k

    audios = [read16k(speech_dir / f"h{i}.wav") for i in range(6)]
    results = {}
    for eager in (True, False):
        engine = WhisperEngine(load_whisper(None, "cuda", torch.float32), max_num_seqs=8, enforce_eager=eager)
        assert bool(engine.runner.graphs) is not eager
        outs = [await engine.transcribe(TranscriptionRequest(a)) for a in audios]
        results[eager] = [[s.tokens for s in r.segments] for r in outs]
        engine.close()
    assert results[True] == results[False]
