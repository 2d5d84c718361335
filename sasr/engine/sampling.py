"""Sampling for every model: logit filters, then greedy or seeded sampling, for a whole batch."""

from __future__ import annotations

import torch

from sasr.engine.batch import SamplingParams

GRAPH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bucket_for(num_seqs: int, buckets: tuple[int, ...]) -> int:
    return next(b for b in buckets if b >= num_seqs)


def sample(logits: torch.Tensor, filters: list, histories: list[list[int]], params: list[SamplingParams]):
    """Apply the logit filters row by row, then pick each row's token (greedy or sampled).

    Returns the tokens and their log-probabilities under the filtered distribution.
    """
    for row, sampled in enumerate(histories):
        for f in filters:
            f.apply(logits[row], sampled)
    logprobs = torch.log_softmax(logits, -1)
    tokens = logits.argmax(-1).tolist()
    for row, p in enumerate(params):
        if p.temperature > 0:
            # seeded by (seed, position): the same draw whether the row runs alone or batched
            generator = torch.Generator().manual_seed(p.seed * 1_000_003 + len(histories[row]))
            probs = torch.softmax(logits[row].float().cpu() / p.temperature, -1)
            tokens[row] = int(torch.multinomial(probs, 1, generator=generator))
    chosen = logprobs[torch.arange(len(tokens), device=logits.device), torch.tensor(tokens, device=logits.device)]
    return tokens, chosen.tolist()
