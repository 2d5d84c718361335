"""Whisper's special tokens and text codec, read from a tokenizer.json plus the model's suppress lists."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tokenizers import Tokenizer
from transformers.models.whisper.tokenization_whisper import (
    LANGUAGES,  # code -> English name
)

# One timestamp token per 20 ms (the encoder's frame rate after the stride-2 convolution).
TIMESTAMP_S = 0.02


@dataclass(frozen=True)
class WhisperVocab:
    """Token ids a decoder needs, and the text codec. Ids are looked up by name, never assumed."""

    tokenizer: Tokenizer = field(repr=False)
    eot: int  # <|endoftext|>
    sot: int  # <|startoftranscript|>
    sot_prev: int  # <|startofprev|>: a text prompt follows
    transcribe: int  # <|transcribe|>
    translate: int  # <|translate|>
    no_timestamps: int  # <|notimestamps|>
    no_speech: int  # <|nospeech|> (<|nocaptions|> in English-only models)
    timestamp_begin: int  # <|0.00|>; every id from here up is a timestamp
    language_ids: dict[str, int]  # language code -> token id; empty for English-only models
    suppress_ids: tuple[int, ...]  # never sampled
    suppress_begin_ids: tuple[int, ...]  # not sampled as the first token (blank, end of text)

    @property
    def is_multilingual(self) -> bool:
        return bool(self.language_ids)

    def sot_sequence(self, language: str | None) -> list[int]:
        """The forced start of a transcription: <|sot|> [<|lang|> <|transcribe|>]."""
        if not self.is_multilingual:
            return [self.sot]
        return [self.sot, self.language_ids[language or "en"], self.transcribe]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of the ids, dropping special and timestamp tokens."""
        return self.tokenizer.decode([i for i in ids if i < self.eot])

    @classmethod
    def load(
        cls, tokenizer_file: Path, vocab_size: int, suppress_ids, suppress_begin_ids
    ) -> WhisperVocab:
        tok = Tokenizer.from_file(str(tokenizer_file))

        def tid(*names: str) -> int:
            for name in names:
                if (i := tok.token_to_id(name)) is not None:
                    return i
            raise ValueError(f"{tokenizer_file}: no token {' or '.join(names)}")

        no_timestamps = tid("<|notimestamps|>")
        languages = {code: tok.token_to_id(f"<|{code}|>") for code in LANGUAGES}
        # English-only models carry language tokens too but were never trained on them; their
        # vocabulary is one token smaller (the test transformers itself uses).
        multilingual = vocab_size >= 51865
        return cls(
            tokenizer=tok,
            eot=tid("<|endoftext|>"),
            sot=tid("<|startoftranscript|>"),
            sot_prev=tid("<|startofprev|>"),
            transcribe=tid("<|transcribe|>"),
            translate=tid("<|translate|>"),
            no_timestamps=no_timestamps,
            no_speech=tid("<|nospeech|>", "<|nocaptions|>"),
            timestamp_begin=no_timestamps + 1,
            language_ids={c: i for c, i in languages.items() if i is not None} if multilingual else {},
            suppress_ids=tuple(suppress_ids),
            suppress_begin_ids=tuple(suppress_begin_ids),
        )
