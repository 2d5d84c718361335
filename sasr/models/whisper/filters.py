"""Logit filters: small strategies applied to one sequence's next-token logits, in place.

Each sees the logits [V] and the tokens sampled so far (after the forced prefix).
"""

from __future__ import annotations

import torch

from sasr.models.whisper.vocab import TIMESTAMP_S, WhisperVocab

NEG_INF = float("-inf")


class SuppressTokens:
    """Tokens the model must never produce (specials, and the checkpoint's suppress list)."""

    def __init__(self, vocab: WhisperVocab) -> None:
        specials = [vocab.sot, vocab.sot_prev, vocab.transcribe, vocab.translate, vocab.no_speech]
        self.ids = torch.tensor(sorted(set(vocab.suppress_ids) | set(specials)))

    def apply(self, logits: torch.Tensor, sampled: list[int]) -> None:
        logits[self.ids.to(logits.device)] = NEG_INF


class SuppressBlank:
    """At the first position, no blank and no end of text: a window decoded to nothing says so otherwise."""

    def __init__(self, vocab: WhisperVocab) -> None:
        self.ids = list(vocab.suppress_begin_ids) or [vocab.eot]

    def apply(self, logits: torch.Tensor, sampled: list[int]) -> None:
        if not sampled:
            logits[self.ids] = NEG_INF


class TimestampRules:
    """Whisper's timestamp grammar: text comes between pairs of non-decreasing timestamps.

    - the first token is a timestamp no later than max_initial_s;
    - a lone timestamp is followed by text or a closing timestamp, a pair by text or the end;
    - timestamps never go back in time;
    - where all timestamps together are likelier than any single text token, a timestamp is forced.
    """

    def __init__(self, vocab: WhisperVocab, max_initial_s: float = 1.0) -> None:
        self.vocab = vocab
        self.max_initial = vocab.timestamp_begin + round(max_initial_s / TIMESTAMP_S)

    def apply(self, logits: torch.Tensor, sampled: list[int]) -> None:
        begin, eot = self.vocab.timestamp_begin, self.vocab.eot
        logits[self.vocab.no_timestamps] = NEG_INF
        if not sampled:
            logits[:begin] = NEG_INF
            logits[self.max_initial + 1 :] = NEG_INF
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
            # a closing timestamp may repeat the opening one (an empty segment); otherwise move on
            floor = timestamps[-1] if last_ts and not penultimate_ts else timestamps[-1] + 1
            logits[begin:floor] = NEG_INF
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        if torch.logsumexp(logprobs[begin:], dim=-1) > logprobs[:begin].max():
            logits[:begin] = NEG_INF


def default_filters(vocab: WhisperVocab) -> list:
    return [SuppressBlank(vocab), SuppressTokens(vocab), TimestampRules(vocab)]
