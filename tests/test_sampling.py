"""Batched sampling and logit filters against plain per-row references (the code they replaced)."""

from __future__ import annotations

import random

import torch

from sasr.engine.batch import SamplingParams
from sasr.engine.sampling import sample
from sasr.models.whisper.filters import History, default_filters
from sasr.models.whisper.vocab import TIMESTAMP_S

NEG_INF = float("-inf")


def reference_filter(vocab, logits: torch.Tensor, sampled: list[int]) -> None:
    """Whisper's suppression and timestamp rules for one row, token by token (the per-row original)."""
    begin, eot = vocab.timestamp_begin, vocab.eot
    if not sampled:
        logits[list(vocab.suppress_begin_ids) or [eot]] = NEG_INF
    specials = [vocab.sot, vocab.sot_prev, vocab.transcribe, vocab.translate, vocab.no_speech]
    logits[sorted(set(vocab.suppress_ids) | set(specials))] = NEG_INF
    logits[vocab.no_timestamps] = NEG_INF
    if not sampled:
        logits[:begin] = NEG_INF
        logits[begin + round(1.0 / TIMESTAMP_S) + 1 :] = NEG_INF
        return
    last_ts = sampled[-1] >= begin
    penultimate_ts = len(sampled) < 2 or sampled[-2] >= begin
    if last_ts:
        if penultimate_ts:
            logits[begin:] = NEG_INF
        else:
            logits[:eot] = NEG_INF
    timestamps = [t for t in sampled if t >= begin]
    if timestamps:
        floor = timestamps[-1] if last_ts and not penultimate_ts else timestamps[-1] + 1
        logits[begin:floor] = NEG_INF
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    if torch.logsumexp(logprobs[begin:], dim=-1) > logprobs[:begin].max():
        logits[:begin] = NEG_INF


def histories(vocab, num_rows: int, seed: int) -> list[list[int]]:
    """Rows in every state the grammar distinguishes: empty, after text, after one or two timestamps."""
    rng = random.Random(seed)
    begin = vocab.timestamp_begin
    rows = []
    for i in range(num_rows):
        row, t = [], begin + rng.randrange(0, 20)
        for _ in range(i % 7):
            if rng.random() < 0.4:
                row.append(t)
                t += rng.randrange(0, 30)
            else:
                row.append(rng.randrange(0, 50000))
        rows.append(row)
    return rows


def test_batched_filters_equal_per_row_reference(loaded):
    vocab = loaded.vocab
    torch.manual_seed(0)
    rows = histories(vocab, 24, seed=1)
    logits = torch.randn(len(rows), 51864) * 4
    logits[::3, vocab.timestamp_begin :] += 6  # some rows where timestamps win
    expected = logits.clone()
    for i, row in enumerate(rows):
        reference_filter(vocab, expected[i], row)
    for f in default_filters(vocab):
        f.apply(logits, History.of(rows, vocab.timestamp_begin, logits.device))
    assert torch.equal(torch.isinf(logits), torch.isinf(expected))
    torch.testing.assert_close(logits[~torch.isinf(logits)], expected[~torch.isinf(expected)])


def test_sampling_is_seeded_per_row_and_greedy_is_argmax():
    torch.manual_seed(0)
    logits = torch.randn(6, 100)
    params = [SamplingParams(), SamplingParams(0.8, seed=3), SamplingParams(), SamplingParams(0.8, seed=4),
              SamplingParams(1.0, seed=3), SamplingParams()]
    positions = [5, 7, 2, 7, 7, 1]
    tokens, logprobs = sample(logits.clone(), [], None, params, positions)
    assert [tokens[i] for i in (0, 2, 5)] == logits[[0, 2, 5]].argmax(-1).tolist()
    expected = torch.log_softmax(logits, -1)[torch.arange(6), torch.tensor(tokens)]
    torch.testing.assert_close(torch.tensor(logprobs), expected.double(), check_dtype=False)
    # a sampled row draws the same token alone as in a batch
    for row in (1, 3, 4):
        alone, _ = sample(logits[row : row + 1].clone(), [], None, [params[row]], [positions[row]])
        assert alone == [tokens[row]]
    # and the draws follow the distribution: at temperature 1, frequencies match the softmax
    probs = torch.softmax(torch.tensor([2.0, 1.0, 0.0]), -1)
    draws = [sample(torch.tensor([[2.0, 1.0, 0.0]]), [], None, [SamplingParams(1.0, seed=s)], [0])[0][0]
             for s in range(3000)]
    freq = torch.bincount(torch.tensor(draws), minlength=3) / len(draws)
    torch.testing.assert_close(freq, probs, atol=0.03, rtol=0)
