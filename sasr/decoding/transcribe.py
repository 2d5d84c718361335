"""Transcribe a whole recording window by window, as Whisper's own long-form algorithm does.

Each 30 s window is decoded with timestamps. Where the window's last segment is cut off (the text
does not end on a closing timestamp) the next window starts at the last complete segment's end, so no
word is lost or doubled at the seam.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from sasr.audio.features import FRAMES_PER_S, HOP_SAMPLES, SAMPLE_RATE, WINDOW_FRAMES, WINDOW_SAMPLES, log_mel
from sasr.decoding.filters import default_filters
from sasr.models.vocab import TIMESTAMP_S, WhisperVocab
from sasr.models.whisper import KVCache, WhisperRunner
from sasr.protocol import Segment

FRAMES_PER_TOKEN = round(TIMESTAMP_S * FRAMES_PER_S)  # mel frames per timestamp step (2)
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_MAX = 2.4  # above: a repetition loop
LOGPROB_MIN = -1.0  # average token log-probability below: an unreliable decode
NO_SPEECH_MIN = 0.6  # with a low log-probability: the window holds no speech
NO_SPEECH_SURE = 0.85  # whatever the log-probability (hum decoded as " you" at -0.9 was seen)
SILENCE_RMS = 1e-3  # about -60 dBFS: a window quieter than this in every 30 ms frame is silent
MIN_WINDOW_FRAMES = 10  # a tail shorter than 100 ms carries no word


@dataclass
class Options:
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0  # 0: greedy, raised step by step where a decode looks unreliable
    condition_on_previous_text: bool = True
    seed: int = 0


@dataclass
class WindowResult:
    tokens: list[int]  # sampled tokens, without the end of text
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float = field(default=0.0)


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_silent(audio: np.ndarray) -> bool:
    """True if no 30 ms frame of the audio rises above SILENCE_RMS."""
    frame = 480
    usable = len(audio) // frame * frame
    if usable == 0:
        return True
    rms = np.sqrt(np.mean(audio[:usable].reshape(-1, frame) ** 2, axis=1))
    return bool(rms.max() < SILENCE_RMS)


def is_no_speech(result: WindowResult) -> bool:
    """The model itself says the window holds no speech, and its words are not convincing."""
    unconvincing = result.avg_logprob < LOGPROB_MIN or result.no_speech_prob > NO_SPEECH_SURE
    return result.no_speech_prob > NO_SPEECH_MIN and unconvincing


class WindowDecoder:
    """Decode one encoded window: forced prefix, then sampled tokens under the logit filters."""

    def __init__(self, runner: WhisperRunner, vocab: WhisperVocab) -> None:
        self.runner, self.vocab = runner, vocab
        self.filters = default_filters(vocab)
        self.max_sample_len = runner.max_len // 2

    def prefix(self, prompt_ids: list[int], language: str | None) -> tuple[list[int], int]:
        """Forced tokens and the index of <|startoftranscript|> in them."""
        context = [self.vocab.sot_prev] + prompt_ids[-(self.max_sample_len - 1) :] if prompt_ids else []
        return context + self.vocab.sot_sequence(language), len(context)

    def decode(
        self, cache: KVCache, prompt_ids: list[int], language: str | None, temperature: float, generator
    ) -> WindowResult:
        prefix, sot_index = self.prefix(prompt_ids, language)
        device = self.runner.device
        logits = self.runner.decode(cache, torch.tensor([prefix], device=device), torch.zeros(1, dtype=torch.long, device=device))
        no_speech_prob = float(torch.softmax(logits[0, sot_index], -1)[self.vocab.no_speech])
        next_logits, sampled, sum_logprob = logits[0, -1], [], 0.0
        limit = min(self.max_sample_len, self.runner.max_len - len(prefix))
        while len(sampled) < limit:
            for f in self.filters:
                f.apply(next_logits, sampled)
            logprobs = torch.log_softmax(next_logits, -1)
            if temperature > 0:
                probs = torch.softmax(next_logits / temperature, -1)
                token = int(torch.multinomial(probs.cpu(), 1, generator=generator))
            else:
                token = int(next_logits.argmax())
            sum_logprob += float(logprobs[token])
            if token == self.vocab.eot:
                break
            sampled.append(token)
            position = torch.tensor([len(prefix) + len(sampled) - 1], device=device)
            next_logits = self.runner.decode(cache, torch.tensor([[token]], device=device), position)[0, -1]
        text = self.vocab.decode(sampled)
        return WindowResult(
            tokens=sampled,
            avg_logprob=sum_logprob / (len(sampled) + 1),
            no_speech_prob=no_speech_prob,
            temperature=temperature,
            compression_ratio=compression_ratio(text),
        )

    def decode_with_fallback(
        self, cache: KVCache, prompt_ids: list[int], options: Options, generator
    ) -> WindowResult:
        """Greedy first; where the result looks like a loop or a guess, sample at rising temperatures."""
        temperatures = FALLBACK_TEMPERATURES if options.temperature == 0 else (options.temperature,)
        result = None
        for temperature in temperatures:
            result = self.decode(cache, prompt_ids, options.language, temperature, generator)
            if is_no_speech(result):
                return result  # no temperature will find words that are not there
            if result.compression_ratio <= COMPRESSION_RATIO_MAX and result.avg_logprob >= LOGPROB_MIN:
                return result
        return result


def split_segments(tokens: list[int], begin: int) -> tuple[list[tuple[int, int, list[int]]], int | None]:
    """Split sampled tokens into (start_step, end_step, tokens) segments by their timestamp pairs.

    Returns the segments and, if the window's last segment was left open (cut off by the window's
    end), the timestamp step at which the next window should resume; None if the window ended cleanly.
    """
    is_ts = [t >= begin for t in tokens]
    single_ending = is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if not cuts:
        stamps = [t - begin for t in tokens if t >= begin]
        end = stamps[-1] if stamps and stamps[-1] > 0 else None
        return [(stamps[0] if stamps else 0, end if end is not None else -1, tokens)], None
    if single_ending:
        cuts.append(len(tokens))
    segments, last = [], 0
    for cut in cuts:
        piece = tokens[last:cut]
        segments.append((piece[0] - begin, piece[-1] - begin, piece))
        last = cut
    resume = None if single_ending else tokens[last - 1] - begin
    return segments, resume


@torch.inference_mode()
def transcribe(runner: WhisperRunner, vocab: WhisperVocab, audio: np.ndarray, options: Options) -> list[Segment]:
    """Transcribe 16 kHz mono float32 audio of any length into timed segments."""
    decoder = WindowDecoder(runner, vocab)
    generator = torch.Generator().manual_seed(options.seed)
    padded = np.concatenate([audio, np.zeros(WINDOW_SAMPLES, np.float32)])
    mel = log_mel(torch.from_numpy(padded).to(runner.device), runner.num_mel_bins)  # [n_mels, frames]
    num_frames = len(audio) // HOP_SAMPLES
    duration_s = len(audio) / SAMPLE_RATE
    prompt_ids = vocab.encode(" " + options.prompt.strip()) if options.prompt else []
    segments: list[Segment] = []
    seek = 0
    while num_frames - seek >= MIN_WINDOW_FRAMES:
        window_frames = min(WINDOW_FRAMES, num_frames - seek)
        offset_s = seek / FRAMES_PER_S
        window_audio = audio[seek * HOP_SAMPLES : (seek + window_frames) * HOP_SAMPLES]
        if is_silent(window_audio):
            seek += window_frames
            continue
        cache = runner.encode(mel[None, :, seek : seek + WINDOW_FRAMES])
        result = decoder.decode_with_fallback(cache, prompt_ids, options, generator)
        if is_no_speech(result) or not result.tokens:
            seek += window_frames
            continue
        pieces, resume = split_segments(result.tokens, vocab.timestamp_begin)
        for start, end, tokens in pieces:
            if end < 0:  # no closing timestamp: the segment runs to the window's end
                end = window_frames // FRAMES_PER_TOKEN
            text = vocab.decode(tokens)
            if not text.strip():
                continue
            start_s = max(offset_s + start * TIMESTAMP_S, segments[-1].end if segments else 0.0)
            end_s = min(max(offset_s + end * TIMESTAMP_S, start_s), duration_s)
            segments.append(
                Segment(
                    id=len(segments),
                    seek=seek,
                    start=round(min(start_s, end_s), 2),
                    end=round(end_s, 2),
                    text=text,
                    tokens=tokens,
                    temperature=result.temperature,
                    avg_logprob=result.avg_logprob,
                    compression_ratio=result.compression_ratio,
                    no_speech_prob=result.no_speech_prob,
                )
            )
        seek += resume * FRAMES_PER_TOKEN if resume else window_frames
        if options.condition_on_previous_text and result.temperature <= 0.5:
            prompt_ids = prompt_ids + result.tokens
        else:
            prompt_ids = []
    return segments
