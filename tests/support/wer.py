"""Word error rate against reference texts, after the light normalisation ASR evaluations use."""

from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9']+")


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation."""
    return [w.strip("'") for w in _WORD.findall(text.lower()) if w.strip("'")]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, start=1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def wer(reference: str, hypothesis: str) -> float:
    """Word-level edits (substitutions, insertions, deletions) per reference word."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    if not ref:
        return float(bool(hyp))
    return edit_distance(ref, hyp) / len(ref)


def longest_runs(reference: str, hypothesis: str) -> tuple[int, int]:
    """The longest run of reference words missing from the hypothesis, and of extra words in it, in a
    minimum-edit alignment: a lost sentence, or a stretch of audio transcribed twice, is a long run,
    where a recogniser's ordinary errors are short ones."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    cost = [[i + j if not i or not j else 0 for j in range(len(hyp) + 1)] for i in range(len(ref) + 1)]
    for i in range(1, len(ref) + 1):
        for j in range(1, len(hyp) + 1):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1, cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]))
    longest, run = [0, 0], [0, 0]  # deletions, insertions
    i, j = len(ref), len(hyp)
    while i or j:
        if i and j and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            i, j, step = i - 1, j - 1, None
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            i, step = i - 1, 0
        else:
            j, step = j - 1, 1
        for kind in (0, 1):
            run[kind] = run[kind] + 1 if step == kind else 0
            longest[kind] = max(longest[kind], run[kind])
    return longest[0], longest[1]
