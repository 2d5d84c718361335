"""A live transcription session: audio frames in, committed words out, while the speaker talks.

The session owns its incoming audio, its voice-activity state and an inference loop; the model's live
policy (engine.stream_policy) owns the decode window and decides what to decode and what a decode
commits. Each new piece of audio goes through the VAD (off the event loop), then the policy is asked
for its next decode, which the engine batches with every other session's and request's. No torch here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import numpy as np

from sasr.audio.constants import SAMPLE_RATE
from sasr.audio.stream import FrameDecoder
from sasr.protocol import (
    ServerEvent,
    SessionStart,
    TranscriptDelta,
    TranscriptFinal,
    TranscriptPartial,
)

LIVE_SLACK_S = 1.0  # a client this far ahead of the wall clock sends faster than speech
PROGRESS_S = 0.5  # with partials, silence is acknowledged (an event) at least this often
MAX_FINAL_DECODES = 64  # a session's last audio never takes more decodes than this


class BufferOverflow(Exception):
    """More audio is buffered than --max-buffer-seconds allows."""


def ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


class Session:
    def __init__(
        self, engine, start: SessionStart, emit: Callable[[ServerEvent], Awaitable[None]],
        chunk_s: float | None = None, max_buffer_s: float = 60.0,
    ) -> None:
        self.id = f"sess_{uuid.uuid4().hex[:16]}"
        self.engine, self.emit = engine, emit
        chunk_s = chunk_s or engine.stream_chunk_s  # the model's own default unless configured
        self.chunk_s, self.max_buffer_s = chunk_s, max_buffer_s
        self.partials = start.partials
        self.frames = FrameDecoder(start.audio_format)
        self.policy = engine.stream_policy(start.language, chunk_s)  # the model's live policy
        self.vad = engine.new_vad()
        self.incoming: list[np.ndarray] = []  # audio received, not yet through the VAD
        self.num_incoming = 0  # samples in it
        self.num_received = 0  # samples received in all
        self.text = ""  # the concatenation of every delta sent
        self.last_event_ms = 0  # audio_ms of the last event sent
        self.audio_arrived = asyncio.Event()
        self.progress = asyncio.Event()  # set after each pass: room for more audio
        self.ending = False
        self.started = time.monotonic()
        self.from_file = False  # the client has sent audio faster than speech: backpressure, finals only
        self.task = asyncio.create_task(self._run())

    @property
    def received_ms(self) -> int:
        return ms(self.num_received)

    @property
    def unprocessed_s(self) -> float:
        return self.num_incoming / SAMPLE_RATE + self.policy.unprocessed_s

    def feed(self, data: bytes) -> None:
        self._take(self.frames.decode(data))

    def _take(self, audio: np.ndarray) -> None:
        if self.policy.buffered_s + (self.num_incoming + len(audio)) / SAMPLE_RATE > self.max_buffer_s:
            raise BufferOverflow(
                f"more than {self.max_buffer_s:g} s of audio would be buffered; send at most real time"
            )
        self.incoming.append(audio)
        self.num_incoming += len(audio)
        self.num_received += len(audio)
        # A microphone cannot get ahead of the clock; once a client has, it is streaming a file.
        if self.num_received / SAMPLE_RATE > time.monotonic() - self.started + LIVE_SLACK_S:
            self.from_file = True
        self.audio_arrived.set()

    async def wait_for_room(self) -> None:
        """Hold the reader of a client that sends faster than speech while two chunks wait to be looked
        at: it feels TCP backpressure. A live client cannot slow down; it is caught up instead."""
        while self.from_file and self.unprocessed_s >= 2 * self.chunk_s and not self.task.done():
            self.progress.clear()
            await self.progress.wait()

    async def finish(self) -> TranscriptFinal:
        """No more audio: decode what is left, commit everything, and return the final event."""
        self._take(self.frames.flush())
        self.ending = True
        self.audio_arrived.set()
        await self.task
        return TranscriptFinal(text=self.text, audio_ms=self.received_ms)

    def cancel(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        final_decodes = 0
        while True:
            if self.incoming:
                samples = np.concatenate(self.incoming)
                self.incoming, self.num_incoming = [], 0
                self.policy.add_audio(samples, await self.engine.run_vad(self.vad, samples))
            self.policy.files = self.from_file
            last = self.ending and not self.incoming
            behind = not self.from_file and self.unprocessed_s >= 2 * self.chunk_s
            job = self.policy.next_job(final=last, catch_up=behind)
            if job is not None and (not last or final_decodes < MAX_FINAL_DECODES):
                final_decodes += last
                await self._decode(job, last)
            else:
                await self._acknowledge()
                if last:
                    return
                self.progress.set()
                if not self.incoming and not self.ending:
                    self.audio_arrived.clear()
                    await self.audio_arrived.wait()
            self.progress.set()

    async def _decode(self, job, final: bool) -> None:
        """Run one decode the policy asked for and send what it commits."""
        audio_ms = ms(self.policy.buffer_start + job.end)  # the session audio the decode hears
        self.engine.metrics.inc("sasr_live_decodes_total", help="Decodes run for live sessions, by kind",
                                kind=getattr(job, "kind", "chunk"))
        result = await self.engine.run_window(job)
        for word in self.policy.update(job, result, final=final):
            delta = word.text if not self.text else " " + word.text
            self.text += delta
            timed = word.start_s is not None
            await self.emit(TranscriptDelta(delta=delta, audio_ms=audio_ms,
                                            start_ms=round(word.start_s * 1000) if timed else None,
                                            end_ms=round(word.end_s * 1000) if timed else None))
        if self.partials and not final:
            await self.emit(TranscriptPartial(text=self.policy.partial, audio_ms=audio_ms))
        self.last_event_ms = max(self.last_event_ms, audio_ms)

    async def _acknowledge(self) -> None:
        """With partials, say how far the audio has been handled when no decode did (silence)."""
        heard_ms = ms(self.policy.heard_samples)
        if self.partials and heard_ms - self.last_event_ms >= PROGRESS_S * 1000:
            self.last_event_ms = heard_ms
            await self.emit(TranscriptPartial(text=self.policy.partial, audio_ms=heard_ms))
