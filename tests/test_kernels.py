"""Kernels against their plain-torch references, and CUDA graph replay against the eager step (CPU
here; the CUDA cases run where a GPU is: `pytest -m cuda tests/test_kernels.py`); word timing's
vectorised DTW and median filter against the plain cell-by-cell definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sasr.kernels.logmel import log_mel_batch, log_mel_batch_reference
from sasr.models.whisper.timing import dtw, median_filter

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def windows(batch: int, seed: int = 0) -> torch.Tensor:
    """Audio of different lengths, zero-padded to 30 s, as the runner builds them."""
    rng = np.random.default_rng(seed)
    audio = np.zeros((batch, 480000), np.float32)
    for i in range(batch):
        n = rng.integers(8000, 480000)
        audio[i, :n] = rng.standard_normal(n) * rng.uniform(0.01, 0.5)
    return torch.from_numpy(audio)


def dtw_reference(cost: np.ndarray) -> tuple[list[int], list[int]]:
    """openai/whisper's DTW, cell by cell: ties prefer the diagonal, then from above."""
    num_t, num_f = cost.shape
    total = np.full((num_t + 1, num_f + 1), np.inf)
    total[0, 0] = 0.0
    came = {}
    for i in range(1, num_t + 1):
        for j in range(1, num_f + 1):
            options = [total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]]
            came[i, j] = int(np.argmin(options))
            total[i, j] = cost[i - 1, j - 1] + options[came[i, j]]
    i, j, path = num_t, num_f, []
    while i > 0 and j > 0:
        path.append((i - 1, j - 1))
        i, j = {0: (i - 1, j - 1), 1: (i - 1, j), 2: (i, j - 1)}[came[i, j]]
    return [p[0] for p in reversed(path)], [p[1] for p in reversed(path)]


@pytest.mark.parametrize("shape", [(1, 1), (1, 40), (40, 1), (7, 120), (25, 300)])
def test_dtw_equals_the_cell_by_cell_reference(shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(3):
        cost = -rng.random(shape)  # as word timing's: negated attention
        tokens, frames = dtw(cost)
        assert (tokens.tolist(), frames.tolist()) == dtw_reference(cost)


@pytest.mark.parametrize("width", [1, 3, 7])
def test_median_filter_equals_numpy_median(width):
    x = np.random.default_rng(width).standard_normal((2, 5, 60)).astype(np.float32)
    pad = width // 2
    padded = np.pad(x, [(0, 0), (0, 0), (pad, pad)], mode="reflect")
    expected = np.stack([np.median(padded[..., j : j + width], axis=-1) for j in range(x.shape[-1])], axis=-1)
    assert np.array_equal(median_filter(x, width), expected)


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


# Graph replay against the eager step: (logits atol, logits rtol, alignment weights atol); fp16 is what
# the server runs on CUDA. A graph runs its bucket's shapes (padded batch, longer self and audio spans,
# masked) and the eager step the exact ones, so kernels and summation orders differ: the gap is rounding.
GRAPH_TOLERANCE = {torch.float16: (0.1, 0.01, 0.02), torch.float32: (2e-3, 1e-4, 1e-4)}


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
def test_graph_replay_equals_eager_at_every_bucket(dtype):
    """Every captured decode graph (batch x self positions x audio frames) gives the eager step's logits,
    tokens and alignment weights. Each bucket gets the fewest live rows that select it (the rest of it
    padding rows), one row at its longest self and audio span and the others shorter (masked), over
    random KV (the values do not matter to the comparison)."""
    from sasr.engine.batch import DecodeRow, SamplingParams
    from sasr.engine.sampling import GRAPH_BUCKETS
    from sasr.models.whisper.load import load_whisper
    from sasr.models.whisper.model import WhisperModel
    from sasr.models.whisper.runner import ModelRunner

    loaded = load_whisper(None, "cuda", dtype)
    model, align = WhisperModel(loaded.model), [tuple(h) for h in loaded.model.generation_config.alignment_heads]
    graphed = ModelRunner(model, loaded.vocab, GRAPH_BUCKETS[-1], align_heads=align)
    eager = ModelRunner(model, loaded.vocab, GRAPH_BUCKETS[-1], enforce_eager=True, align_heads=align)
    eager.arena, eager.cross_lens = graphed.arena, graphed.cross_lens  # one KV state, stepped both ways
    for t in (graphed.arena.self_k, graphed.arena.self_v, graphed.arena.cross_k, graphed.arena.cross_v):
        t.normal_()
    atol, rtol, weights_atol = GRAPH_TOLERANCE[dtype]
    shapes = sorted(graphed.graphs)
    sizes, kvs, crosses = (sorted({s[i] for s in shapes}) for i in range(3))
    assert sizes == list(GRAPH_BUCKETS) and len(shapes) == len(sizes) * len(kvs) * len(crosses)
    rng = np.random.default_rng(0)
    rows_compared = rows_clear = 0
    worst = 0.0
    with torch.inference_mode():
        for size, kv, cross in shapes:
            n = max([s for s in sizes if s < size], default=0) + 1
            positions, lens = rng.integers(0, kv, n), rng.integers(1, cross + 1, n)
            positions[0], lens[0] = kv - 1, cross
            graphed.cross_lens[:n] = lens.tolist()
            graphed.arena.cross_len[:n] = torch.from_numpy(lens)
            rows = [DecodeRow(i, int(t), int(p), [int(t)], SamplingParams(), None)
                    for i, (t, p) in enumerate(zip(rng.integers(0, loaded.vocab.eot, n), positions))]
            got, got_weights = (x.clone() for x in graphed.decode(rows, align=True))  # views of the graph's buffers
            want, want_weights = eager.decode(rows, align=True)
            where = f"bucket (batch {size}, kv {kv}, audio {cross}) with {n} live rows"
            say = lambda m, w=where: f"{w}: {m}"
            torch.testing.assert_close(got, want, atol=atol, rtol=rtol, msg=say)
            torch.testing.assert_close(got_weights, want_weights, atol=weights_atol, rtol=0, msg=say)
            # the same token wherever the eager step's best leads its runner-up by more than rounding
            top2 = want.topk(2).values
            clear = top2[:, 0] - top2[:, 1] > 2 * (atol + rtol * top2[:, 0].abs())
            assert torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear]), where
            rows_compared, rows_clear = rows_compared + n, rows_clear + int(clear.sum())
            worst = max(worst, (got - want).abs().max().item())
    print(f"{dtype}: {len(shapes)} graphs, {rows_compared} rows, max |logit diff| {worst:.2e}, "
          f"tokens compared on {rows_clear} rows clear of a tie")
    assert rows_clear > rows_compared / 2, "too few rows clear of a tie to compare tokens"
