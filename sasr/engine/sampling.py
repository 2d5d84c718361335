"""Sampling for every model: logit filters, then greedy or seeded sampling, for a whole batch at once.

One host transfer per step: the chosen tokens and their log-probabilities come back together.
Sampled rows use the Gumbel-max trick with noise drawn from a generator seeded by (seed, position),
so a row samples the same token whether it runs alone or batched, and no row needs its own sync.
"""

from __future__ import annotations

import torch

from sasr.engine.batch import SamplingParams

GRAPH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def bucket_for(num_seqs: int, buckets: tuple[int, ...]) -> int:
    return next(b for b in buckets if b >= num_seqs)


def gumbel_noise(seed: int, position: int, vocab_size: int) -> torch.Tensor:
    """[V] Gumbel(0, 1) noise from a generator seeded by the row's seed and position."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + position)
    uniform = torch.rand(vocab_size, generator=generator).clamp_(1e-10, 1.0 - 1e-7)
    return -torch.log(-torch.log(uniform))


def sample(logits: torch.Tensor, filters: list, filter_state, params: list[SamplingParams],
           positions: list[int]) -> tuple[list[int], list[float]]:
    """Filter logits [B, V] in place, then pick each row's token: greedy, or sampled at its temperature.

    `filter_state` is whatever the model's filters read (e.g. a summary of each row's history);
    `positions` seed the sampled rows. Returns the tokens and their log-probabilities under the
    filtered distribution.
    """
    for f in filters:
        f.apply(logits, filter_state)
    logprobs = torch.log_softmax(logits.float(), -1)  # [B, V]
    hot = [row for row, p in enumerate(params) if p.temperature > 0]
    if hot:
        # argmax(logits / T + Gumbel noise) is a draw from softmax(logits / T)
        noise = torch.stack([gumbel_noise(params[r].seed, positions[r], logits.shape[1]) for r in hot])
        temperatures = torch.tensor([params[r].temperature for r in hot])[:, None]
        scores = logprobs.clone()
        scores[hot] = logprobs[hot] / temperatures.to(logits.device) + noise.to(logits.device)
        tokens = scores.argmax(-1)
    else:
        tokens = logprobs.argmax(-1)
    chosen = logprobs.gather(1, tokens[:, None])[:, 0]
    both = torch.stack([tokens.double(), chosen.double()]).cpu()  # the step's one device-to-host copy
    return [int(t) for t in both[0].tolist()], both[1].tolist()
