"""Render a transcription in each of OpenAI's response formats."""

from __future__ import annotations

import math

import msgspec
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from sasr.engine import TranscriptionResult
from sasr.protocol import ResponseFormat, Transcription, Usage, VerboseTranscription


def _clock(seconds: float, decimal: str) -> str:
    ms = round(seconds * 1000)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def srt(result: TranscriptionResult) -> str:
    blocks = [
        f"{i}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
        for i, s in enumerate(result.segments, start=1)
    ]
    return "\n".join(blocks)


def vtt(result: TranscriptionResult) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in result.segments]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render(result: TranscriptionResult, fmt: ResponseFormat) -> tuple[bytes, str]:
    """(body, media type) of the result in the requested format."""
    usage = Usage(seconds=math.ceil(result.duration_s))
    if fmt is ResponseFormat.JSON:
        return msgspec.json.encode(Transcription(text=result.text, usage=usage)), "application/json"
    if fmt is ResponseFormat.VERBOSE_JSON:
        body = VerboseTranscription(
            task="transcribe",
            language=LANGUAGES.get(result.language, result.language),
            duration=round(result.duration_s, 3),
            text=result.text,
            segments=result.segments,
            usage=usage,
            words=result.words,
        )
        return msgspec.json.encode(body), "application/json"
    if fmt is ResponseFormat.TEXT:
        return (result.text + "\n").encode(), "text/plain; charset=utf-8"
    if fmt is ResponseFormat.SRT:
        return srt(result).encode(), "text/plain; charset=utf-8"
    return vtt(result).encode(), "text/vtt; charset=utf-8"
