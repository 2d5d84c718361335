"""Qwen3-ASR decoding: prompts over 8 s audio windows (keyed for the prefix cache), what the model
wrote, and uploads piece by piece. No torch here."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from sasr.audio.constants import SAMPLE_RATE
from sasr.audio.energy import quiet_point
from sasr.engine.batch import AudioWindow
from sasr.models.qwen3_asr.vocab import (
    MIN_SAMPLES,
    WINDOW_SAMPLES_QWEN,
    Prompt,
    Qwen3Vocab,
    num_audio_tokens,
)

CUT_SEARCH_S = 3.0  # a piece ends at the quietest 100 ms of its last few seconds
FILE_PIECE_S = 30.0  # uploads are decoded in pieces of at most this much audio
CONTEXT_CHARS = 200  # committed text carried into the next segment's (or piece's) system prompt
AUDIO_KEY_BIT = 1 << 63  # prefix-cache keys of audio placeholders have it; token ids do not


@dataclass
class Qwen3Job:
    """One decode: a prompt over some audio, its forced text, and how much to sample."""

    prompt: Prompt
    windows: list[AudioWindow]
    hash_keys: list[int]  # per prompt token: the token id, or its audio's digest and index
    max_new_tokens: int
    header: bool  # the prompt already holds `language X<asr_text>`
    text_prefix: list[int] = field(default_factory=list)  # forced text tokens at the end of the prompt
    temperature: float = 0.0
    seed: int = 0
    end: int = 0  # samples of the segment it covers
    roll: bool = False  # the last decode of its segment: commit everything


@dataclass
class Qwen3Result:
    tokens: list[int]  # sampled, without the end of text
    num_prompt_tokens: int
    num_cached_tokens: int  # prompt tokens found in the prefix cache


def split_windows(audio: np.ndarray, first_token: int) -> list[AudioWindow]:
    """The audio as 8 s encoder windows, keyed by a digest of their samples."""
    if len(audio) < MIN_SAMPLES:
        audio = np.pad(audio, (0, MIN_SAMPLES - len(audio)))
    windows, token = [], first_token
    for start in range(0, len(audio), WINDOW_SAMPLES_QWEN):
        samples = np.ascontiguousarray(audio[start : start + WINDOW_SAMPLES_QWEN], dtype=np.float32)
        num_tokens = num_audio_tokens(len(samples))
        if num_tokens == 0:
            break
        key = int.from_bytes(hashlib.blake2b(samples.tobytes(), digest_size=8).digest(), "little")
        windows.append(AudioWindow(key, samples, token, num_tokens, len(samples) == WINDOW_SAMPLES_QWEN))
        token += num_tokens
    return windows


def hash_keys(prompt: Prompt, windows: list[AudioWindow]) -> list[int]:
    keys = list(prompt.ids)
    for w in windows:
        for i in range(w.num_tokens):
            keys[w.first_token + i] = AUDIO_KEY_BIT | ((w.key + i) % AUDIO_KEY_BIT)
    return keys


def make_job(vocab: Qwen3Vocab, audio: np.ndarray, language: str | None, context: str = "",
             text_prefix: list[int] = (), max_new_tokens: int | None = None) -> Qwen3Job:
    windows = split_windows(audio, first_token=0)
    header = vocab.header(language)
    prompt = vocab.prompt(sum(w.num_tokens for w in windows), context, header, list(text_prefix) if header else [])
    for w in windows:
        w.first_token += prompt.audio_at  # placed after the system turn
    if max_new_tokens is None:
        max_new_tokens = 16 + round(8 * len(audio) / SAMPLE_RATE)  # ample for speech, bounded for noise
    return Qwen3Job(prompt, windows, hash_keys(prompt, windows), max_new_tokens, bool(header),
                    list(text_prefix) if header else [])


def read_output(vocab: Qwen3Vocab, job: Qwen3Job, tokens: list[int]) -> tuple[str | None, list[int]]:
    """(detected language, the text tokens of the whole hypothesis: forced prefix included)."""
    if job.header:
        return None, job.text_prefix + tokens
    language, text = vocab.parse(tokens)
    return language, (tokens if text is None else text)  # no header at all: all of it is text


def file_pieces(audio: np.ndarray, piece_s: float = FILE_PIECE_S) -> list[tuple[int, int]]:
    """[start, end) sample ranges of at most piece_s, cut at quiet points."""
    piece, search = round(piece_s * SAMPLE_RATE), round(CUT_SEARCH_S * SAMPLE_RATE)
    pieces, start = [], 0
    while start < len(audio):
        end = len(audio) if len(audio) - start <= piece else quiet_point(audio, start + piece - search, start + piece)
        pieces.append((start, end))
        start = end
    return pieces
