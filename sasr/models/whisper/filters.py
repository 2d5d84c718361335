"""Logit filters: small strategies applied to a whole batch's next-token logits [B, V], in place.

Each reads what it needs of every row's history from one `History` (a few integers per row, sent to
the device once per step), so a step has no per-row Python on the device and no device-to-host sync.
The plain per-row versions these replace are kept in tests (tests/test_sampling.py) as the reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sasr.models.whisper.vocab import TIMESTAMP_S, WhisperVocab

NEG_INF = float("-inf")


@dataclass
class History:
    """What the filters need of each row's sampled tokens (forced ones included), as [B] device tensors."""

    num_sampled: torch.Tensor  # tokens sampled so far
    last: torch.Tensor  # the last one (-1 if none)
    penultimate: torch.Tensor  # the one before it (-1 if none)
    last_timestamp: torch.Tensor  # the latest timestamp token among them (-1 if none)

    @classmethod
    def of(cls, histories: list[list[int]], timestamp_begin: int, device: torch.device) -> History:
        rows = []
        for h in histories:
            last_ts = next((t for t in reversed(h) if t >= timestamp_begin), -1)
            rows.append((len(h), h[-1] if h else -1, h[-2] if len(h) > 1 else -1, last_ts))
        table = torch.tensor(rows, dtype=torch.long).to(device, non_blocking=True)  # [B, 4]: one copy
        return cls(*table.unbind(1))


class SuppressTokens:
    """Tokens the model must never produce (specials, and the checkpoint's suppress list)."""

    def __init__(self, vocab: WhisperVocab) -> None:
        specials = [vocab.sot, vocab.sot_prev, vocab.transcribe, vocab.translate, vocab.no_speech]
        self.ids = sorted(set(vocab.suppress_ids) | set(specials))

    def apply(self, logits: torch.Tensor, history: History) -> None:
        logits[:, self.ids] = NEG_INF


class SuppressBlank:
    """At the first position, no blank and no end of text: a window decoded to nothing says so otherwise."""

    def __init__(self, vocab: WhisperVocab) -> None:
        self.ids = list(vocab.suppress_begin_ids) or [vocab.eot]

    def apply(self, logits: torch.Tensor, history: History) -> None:
        first = (history.num_sampled == 0)[:, None]  # [B, 1]
        logits[:, self.ids] = logits[:, self.ids].masked_fill(first, NEG_INF)


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

    def apply(self, logits: torch.Tensor, history: History) -> None:
        # each rule touches the columns it is about (text, or the 1501 timestamps), never all 51864
        begin, eot = self.vocab.timestamp_begin, self.vocab.eot
        first = (history.num_sampled == 0)[:, None]  # [B, 1] each
        last_ts = (history.last >= begin)[:, None] & ~first
        penultimate_ts = ((history.num_sampled < 2) | (history.penultimate >= begin))[:, None]
        logits[:, self.vocab.no_timestamps] = NEG_INF
        head, stamps = logits[:, :begin], logits[:, begin:]  # text and specials; timestamps
        head.masked_fill_(first, NEG_INF)
        logits[:, :eot].masked_fill_(last_ts & ~penultimate_ts, NEG_INF)
        col = torch.arange(begin, logits.shape[1], device=logits.device)[None, :]  # [1, timestamps]
        # a closing timestamp may repeat the opening one (an empty segment); otherwise move on
        floor = torch.where(last_ts & ~penultimate_ts, history.last_timestamp[:, None], history.last_timestamp[:, None] + 1)
        stamps.masked_fill_((first & (col > self.max_initial)) | (last_ts & penultimate_ts)
                            | (~first & (history.last_timestamp[:, None] >= 0) & (col < floor)), NEG_INF)
        # timestamps' total probability against the likeliest text token's (softmax's normaliser cancels)
        timestamp_mass = torch.logsumexp(stamps.float(), dim=-1)  # [B]
        best_text = head.float().max(dim=-1).values
        head.masked_fill_((timestamp_mass > best_text)[:, None], NEG_INF)


def default_filters(vocab: WhisperVocab) -> list:
    return [SuppressBlank(vocab), SuppressTokens(vocab), TimestampRules(vocab)]
