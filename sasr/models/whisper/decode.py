"""Transcribe a whole recording window by window, as Whisper's own long-form algorithm does.

Each 30 s window is decoded with timestamps. Where the window's last segment is cut off (the text
does not end on a closing timestamp) the next window starts at the last complete segment's end, so no
word is lost or doubled at the seam.

The policy is a generator: it yields a `WindowJob` for each decode it needs and receives the
`WindowResult`, so the engine can batch the windows of many requests while each request's windows
stay in order. No torch here.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

import numpy as np

from sasr.audio.constants import FRAMES_PER_S, HOP_SAMPLES, SAMPLE_RATE, WINDOW_FRAMES
from sasr.audio.energy import is_silent
from sasr.models.whisper.timing import Word as TimedWord
from sasr.models.whisper.timing import word_timings
from sasr.models.whisper.vocab import TIMESTAMP_S, WhisperVocab
from sasr.protocol import Segment, Word

FRAMES_PER_TOKEN = round(TIMESTAMP_S * FRAMES_PER_S)  # mel frames per timestamp step (2)
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
COMPRESSION_RATIO_MAX = 2.4  # above: a repetition loop
LOGPROB_MIN = -1.0  # average token log-probability below: an unreliable decode
NO_SPEECH_MIN = 0.6  # with a low log-probability: the window holds no speech
NO_SPEECH_SURE = 0.85  # whatever the log-probability (hum decoded as " you" at -0.9 was seen)
MIN_WINDOW_FRAMES = 10  # a tail shorter than 100 ms carries no word
MAX_MEDIAN_WORD_S = 0.7  # word timings: a word at a pause is cut to twice the median word, at most this


@dataclass
class Options:
    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0  # 0: greedy, raised step by step where a decode looks unreliable
    condition_on_previous_text: bool = True
    seed: int = 0
    word_timestamps: bool = False  # time each word from the alignment heads' cross-attention


@dataclass
class WindowJob:
    """One decode the policy needs: a window of audio and the forced tokens before sampling."""

    audio: np.ndarray  # [<= 30 s] 16 kHz float32
    prefix: list[int]
    sot_index: int  # index of <|startoftranscript|> in prefix
    temperature: float
    seed: int
    max_new_tokens: int
    num_frames: int = WINDOW_FRAMES  # mel frames to encode; fewer than 3000 for live windows
    forced: list[int] = field(default_factory=list)  # tokens after the prefix, known in advance
    draft: list[int] = field(default_factory=list)  # tokens likely to follow them (checked, never forced)
    alignment: bool = False  # also return the alignment heads' cross-attention (for word timings)
    # also decode the window one mel hop later (after HOP_SAMPLES of silence) and keep the likelier decode:
    # the encoder's stride-2 convolution reads the other half of the frames then, and on audio the model is
    # unsure of the two readings differ (its times may then be a hop late)
    both_phases: bool = False


@dataclass
class WindowResult:
    tokens: list[int]  # the forced tokens, then the sampled ones, without the end of text
    sum_logprob: float  # over the sampled tokens and the end of text
    no_speech_prob: float
    num_forced: int = 0
    # with job.alignment: [queries, heads, audio frames] alignment-head cross-attention of the queries
    # that predicted forced + sampled tokens + the end (query i predicts (forced + sampled + [eot])[i])
    attention: np.ndarray | None = None
    logprobs: list[float] = field(default_factory=list)  # of each sampled token (tokens[num_forced:]), then the end

    @property
    def avg_logprob(self) -> float:
        return self.sum_logprob / (len(self.tokens) - self.num_forced + 1)


def compression_ratio(text: str) -> float:
    data = text.encode()
    return len(data) / len(zlib.compress(data)) if data else 0.0


def is_no_speech(result: WindowResult) -> bool:
    """The model itself says the window holds no speech, and its words are not convincing."""
    unconvincing = result.avg_logprob < LOGPROB_MIN or result.no_speech_prob > NO_SPEECH_SURE
    return result.no_speech_prob > NO_SPEECH_MIN and unconvincing


def prefix_for(vocab: WhisperVocab, prompt_ids: list[int], language: str | None, max_len: int) -> tuple[list[int], int]:
    """Forced tokens ([<|startofprev|> prompt] <|startoftranscript|> ...) and the index of <|sot|>."""
    keep = max_len // 2 - 1  # as Whisper: at most half the context is prompt
    context = [vocab.sot_prev] + prompt_ids[-keep:] if prompt_ids else []
    return context + vocab.sot_sequence(language), len(context)


def decode_with_fallback(
    vocab: WhisperVocab, audio: np.ndarray, prompt_ids: list[int], options: Options, max_len: int, seed: int
) -> Generator[WindowJob, WindowResult, tuple[WindowResult, float, float]]:
    """Greedy first; where the result looks like a loop or a guess, sample at rising temperatures.

    Returns the accepted result, its temperature and its text's compression ratio.
    """
    prefix, sot_index = prefix_for(vocab, prompt_ids, options.language, max_len)
    max_new = min(max_len // 2, max_len - len(prefix))
    temperatures = FALLBACK_TEMPERATURES if options.temperature == 0 else (options.temperature,)
    for temperature in temperatures:
        result = yield WindowJob(audio, prefix, sot_index, temperature, seed, max_new,
                                 alignment=options.word_timestamps)
        ratio = compression_ratio(vocab.decode(result.tokens))
        if is_no_speech(result) or acceptable(result, ratio):
            break  # (no temperature finds words that are not there)
    # as Whisper does, the hottest is kept when none is acceptable: a window's last timestamp moves the
    # seek, and a cooler decode that stopped early was seen to skip 20 s of speech that way
    return result, temperature, ratio


def loops(ratio: float) -> bool:
    """Whether text that compresses this well (gzip ratio) is a repetition loop."""
    return ratio > COMPRESSION_RATIO_MAX


def acceptable(result: WindowResult, ratio: float) -> bool:
    """Neither a repetition loop nor a guess."""
    return not loops(ratio) and result.avg_logprob >= LOGPROB_MIN


def best_attempt(attempts: list[tuple]) -> tuple:
    """Of several decodes of one window, as (result, ..., compression ratio): the likeliest of those that
    do not loop, else of all (where every temperature of a live final looped, the last, hottest one is
    often the worst; a window decoded at both phases keeps the likelier phase)."""
    return max(attempts, key=lambda a: (not loops(a[-1]), a[0].avg_logprob))


def split_segments(tokens: list[int], begin: int) -> tuple[list[tuple[int, int, list[int]]], int | None]:
    """Split sampled tokens into (start_step, end_step, tokens) segments by their timestamp pairs.

    Returns the segments and, if the window's last segment was left open (cut off by the window's
    end), the timestamp step at which the next window should resume; None if the window ended cleanly.
    An end step of -1 means the segment runs to the window's end.
    """
    is_ts = [t >= begin for t in tokens]
    single_ending = is_ts[-2:] == [False, True]
    cuts = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    if not cuts:
        stamps = [t - begin for t in tokens if t >= begin]
        end = stamps[-1] if stamps and stamps[-1] > 0 else -1
        return [(stamps[0] if stamps else 0, end, tokens)], None
    if single_ending:
        cuts.append(len(tokens))
    segments, last = [], 0
    for cut in cuts:
        piece = tokens[last:cut]
        segments.append((piece[0] - begin, piece[-1] - begin, piece))
        last = cut
    resume = None if single_ending else tokens[last - 1] - begin
    return segments, resume


def kept_words(vocab: WhisperVocab, result: WindowResult, pieces: list[tuple[int, int, list[int]]],
               window_frames: int, language: str | None) -> list[tuple[str, float, float, list[int]]]:
    """(text, start_s, end_s, tokens) of the words of the segments the window keeps (`pieces`, from
    split_segments), seconds from the window's start."""
    if result.attention is None:
        return []
    num_kept = sum(len(tokens) for _, _, tokens in pieces)
    timed = word_timings(vocab, result.tokens, result.attention, window_frames // 2, boundary=num_kept)
    segment_of = [k for k, (_, _, tokens) in enumerate(pieces) for t in tokens if t < vocab.eot]  # [kept text tokens]
    words, position = [], 0  # (index of its segment, word)
    for word in timed:
        if position + len(word.tokens) > len(segment_of):
            break  # the open segment, which the next window decodes again
        if word.text.strip():
            words.append((segment_of[position], word))
        position += len(word.tokens)
    window_end = window_frames // FRAMES_PER_TOKEN
    spans = [(start * TIMESTAMP_S, (end if end >= 0 else window_end) * TIMESTAMP_S) for start, end, _ in pieces]
    return fit_to_segments(words, spans)


def fit_to_segments(words: list[tuple[int, TimedWord]], spans: list[tuple[float, float]]) -> list[tuple[str, float, float, list[int]]]:
    """Word times within their segment's timestamps, a segment's first and last word no longer than twice
    the median word (as Whisper does): the alignment sees no timestamp tokens, so the word before a pause
    runs on through it, and a window's first word starts with the window."""
    durations = [w.end_s - w.start_s for _, w in words if w.end_s > w.start_s]
    max_s = 2 * min(MAX_MEDIAN_WORD_S, float(np.median(durations))) if durations else math.inf
    fitted = []
    for i, (k, word) in enumerate(words):
        low, high = spans[k]
        start_s = min(max(word.start_s, low), high)
        end_s = min(max(word.end_s, start_s), high)
        if i == 0 or words[i - 1][0] != k:  # after a pause
            start_s = max(start_s, end_s - max_s)
        if i + 1 == len(words) or words[i + 1][0] != k:  # before one
            end_s = min(end_s, start_s + max_s)
        fitted.append((word.text.strip(), float(start_s), float(end_s), word.tokens))  # (numpy's from the alignment)
    return fitted


@dataclass
class Recording:
    """Audio that may still be arriving (a live session's file sender): `samples` are the recording's
    from sample `start` on (the caller may drop those before `seek`, which long_form moves on)."""

    samples: np.ndarray
    start: int = 0
    ended: bool = True  # no more audio comes (or: decode what there is now, to its end)
    seek: int = 0  # where the next window starts, in samples

    @property
    def num_samples(self) -> int:
        return self.start + len(self.samples)

    def window(self, begin: int, end: int) -> np.ndarray:
        return self.samples[begin - self.start : end - self.start]

    def silent(self, begin: int, end: int) -> bool:
        return is_silent(self.window(begin, end))


def long_form(
    vocab: WhisperVocab, audio: np.ndarray | Recording, options: Options, max_len: int, segments: list[Segment],
    words: list[Word] | None = None, prompt_ids: list[int] | None = None,
    on_words: Callable[[WindowResult, list[tuple[str, float, float, list[int]]]], None] | None = None,
) -> Generator[WindowJob | None, WindowResult | None, list[Segment]]:
    """Transcribe 16 kHz mono float32 audio of any length into timed segments, window by window.

    Segments are appended to `segments` as each window is done (a caller can stream them); with
    options.word_timestamps, the words of those segments are appended to `words`, timed, and handed
    to `on_words` with the window's result (with their tokens). Given a Recording that has not
    ended, it yields None until a whole window has arrived (or the recording ends): its windows are
    then those of the whole recording's upload. `prompt_ids` (tokens) replaces options.prompt.
    """
    recording = audio if isinstance(audio, Recording) else Recording(audio)
    if prompt_ids is None:
        prompt_ids = vocab.encode(" " + options.prompt.strip()) if options.prompt else []
    last_end_s = 0.0  # of the last word: a window's first word never starts before it
    seek = recording.seek // HOP_SAMPLES
    while True:
        recording.seek = seek * HOP_SAMPLES  # (the caller may drop what is before it)
        num_frames = recording.num_samples // HOP_SAMPLES
        if num_frames - seek < WINDOW_FRAMES and not recording.ended:
            yield None  # wait for the rest of the window
            continue
        if num_frames - seek < MIN_WINDOW_FRAMES:
            break
        # the recording so far: an upload's windows end no later, so its clamps here are the same
        duration_s = recording.num_samples / SAMPLE_RATE
        last_word_s = math.floor(duration_s * 100) / 100  # word times are rounded to 10 ms, never past the end
        window_frames = min(WINDOW_FRAMES, num_frames - seek)
        begin, end = seek * HOP_SAMPLES, (seek + window_frames) * HOP_SAMPLES
        window = recording.window(begin, end)
        if recording.silent(begin, end):
            seek += window_frames
            continue
        seed = options.seed * 1_000_003 + seek
        result, temperature, ratio = yield from decode_with_fallback(vocab, window, prompt_ids, options, max_len, seed)
        if is_no_speech(result) or not result.tokens:
            seek += window_frames
            continue
        offset_s = seek / FRAMES_PER_S
        pieces, resume = split_segments(result.tokens, vocab.timestamp_begin)
        for start, end, tokens in pieces:
            text = vocab.decode(tokens)
            if not text.strip():
                continue
            if end < 0:
                end = window_frames // FRAMES_PER_TOKEN
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
                    temperature=temperature,
                    avg_logprob=result.avg_logprob,
                    compression_ratio=ratio,
                    no_speech_prob=result.no_speech_prob,
                )
            )
        if options.word_timestamps and (words is not None or on_words is not None):
            timed = []
            for text, start, end, tokens in kept_words(vocab, result, pieces, window_frames, options.language):
                # monotonic across windows: a window's first word never starts before the last one ended
                start_s = round(min(max(offset_s + start, last_end_s), last_word_s), 2)
                last_end_s = end_s = round(min(max(offset_s + end, start_s), last_word_s), 2)
                timed.append((text, start_s, end_s, tokens))
            if words is not None:
                words.extend(Word(word=text, start=start_s, end=end_s) for text, start_s, end_s, _ in timed)
            if on_words is not None:
                on_words(result, timed)
        seek += resume * FRAMES_PER_TOKEN if resume else window_frames
        if options.condition_on_previous_text and temperature <= 0.5:
            prompt_ids = prompt_ids + result.tokens
        else:
            prompt_ids = []
    return segments
