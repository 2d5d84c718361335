"""Qwen3-ASR's tokens: the ChatML prompt around the audio, and the parsing of what the model writes.

The model writes `language <Name><asr_text><text>` (or `language None<asr_text>` for no speech);
when the request names a language, the assistant turn is pre-filled with that header and the model
writes only the text. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from sasr.audio.constants import HOP_SAMPLES, SAMPLE_RATE

LANGUAGE_NAMES = {
    "ar": "Arabic", "yue": "Cantonese", "zh": "Chinese", "cs": "Czech", "da": "Danish", "nl": "Dutch",
    "en": "English", "fil": "Filipino", "fi": "Finnish", "fr": "French", "de": "German", "el": "Greek",
    "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian", "it": "Italian", "ja": "Japanese", "ko": "Korean",
    "mk": "Macedonian", "ms": "Malay", "fa": "Persian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian",
    "ru": "Russian", "es": "Spanish", "sv": "Swedish", "th": "Thai", "tr": "Turkish", "vi": "Vietnamese",
}
LANGUAGE_CODES = {name.lower(): code for code, name in LANGUAGE_NAMES.items()}
CHUNK_FRAMES = 100  # mel frames per conv chunk (n_window * 2)
TOKENS_PER_CHUNK = 13
WINDOW_FRAMES_QWEN = 800  # mel frames per attention window (n_window_infer)
WINDOW_SAMPLES_QWEN = WINDOW_FRAMES_QWEN * HOP_SAMPLES  # 8 s: the encoder's attention window
TOKENS_PER_WINDOW = TOKENS_PER_CHUNK * WINDOW_FRAMES_QWEN // CHUNK_FRAMES  # 104
MIN_SAMPLES = SAMPLE_RATE // 2  # shorter clips are zero-padded, as the original processor does


def conv_out_len(num_frames: int) -> int:
    """Tokens from a chunk of num_frames mel frames (three stride-2 convolutions)."""
    for _ in range(3):
        num_frames = (num_frames - 1) // 2 + 1 if num_frames > 0 else 0
    return num_frames


def num_audio_tokens(num_samples: int) -> int:
    """Audio tokens of one window of num_samples samples."""
    frames = num_samples // HOP_SAMPLES
    return (frames // CHUNK_FRAMES) * TOKENS_PER_CHUNK + conv_out_len(frames % CHUNK_FRAMES)


SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|audio_start|>", "<|audio_end|>",
                  "<|audio_pad|>", "<asr_text>")


@dataclass
class Prompt:
    """A decode's prompt, as token ids with the audio placeholders where the audio goes."""

    ids: list[int]
    audio_at: int  # index of the first audio placeholder
    num_audio: int  # placeholders (audio tokens)


class Qwen3Vocab:
    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer  # a transformers tokenizer (fast)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"the tokenizer lacks Qwen3-ASR's special tokens {missing}")
        self.endoftext, self.im_start, self.im_end = ids["<|endoftext|>"], ids["<|im_start|>"], ids["<|im_end|>"]
        self.audio_start, self.audio_end = ids["<|audio_start|>"], ids["<|audio_end|>"]
        self.audio_pad = ids["<|audio_pad|>"]
        self.asr_text = ids["<asr_text>"]
        self.eos_ids = frozenset({self.endoftext, self.im_end})
        self.num_tokens = len(tokenizer)  # ids at or past this have no token (padding rows of the embedding)
        # never sampled: the prompt's own structure
        self.suppress = [self.im_start, self.audio_start, self.audio_end, self.audio_pad]
        self._newline = self.encode("\n")

    def encode(self, text: str) -> list[int]:
        # special-token text in a client's prompt stays text: it cannot close the system turn
        return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i < self.num_tokens], skip_special_tokens=False)

    def header(self, language: str | None) -> list[int]:
        """The assistant turn's pre-filled `language <Name><asr_text>`, or nothing to detect it."""
        if language is None:
            return []
        return self.encode(f"language {LANGUAGE_NAMES[language]}") + [self.asr_text]

    def prompt(self, num_audio: int, context: str = "", header: list[int] = (), text: list[int] = ()) -> Prompt:
        """system(context) + user(audio) + assistant(header, text): the text continues from there."""
        head = [self.im_start, *self.encode("system\n" + context), self.im_end, *self._newline,
                self.im_start, *self.encode("user\n"), self.audio_start]
        tail = [self.audio_end, self.im_end, *self._newline, self.im_start, *self.encode("assistant\n")]
        return Prompt(head + [self.audio_pad] * num_audio + tail + list(header) + list(text), len(head), num_audio)

    def parse(self, ids: list[int]) -> tuple[str | None, list[int] | None]:
        """Split the model's output into (language code, text tokens); text None: no header yet.

        `language None` (no speech) gives empty text.
        """
        if self.asr_text not in ids:
            return None, None
        cut = ids.index(self.asr_text)
        name = self.decode(ids[:cut]).strip()
        name = name[len("language"):].strip() if name.lower().startswith("language") else name
        if name.lower() in ("", "none"):
            return None, []
        return LANGUAGE_CODES.get(name.lower()), ids[cut + 1 :]

    def text(self, ids: list[int]) -> str:
        """Text tokens to a string, dropping any end-of-turn token."""
        return self.decode([i for i in ids if i not in self.eos_ids])
