"""A live transcription session: audio frames in, committed words out, while the speaker talks.

The session owns its audio buffer (inside the streaming policy), its decoding state and an inference
loop that asks the engine for a decode each time a chunk of new audio has arrived; the engine batches
those decodes with every other session's and request's. No torch here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from sasr.audio.constants import SAMPLE_RATE
from sasr.audio.stream import FrameDecoder
from sasr.protocol import (
    ServerEvent,
    SessionStart,
    TranscriptDelta,
    TranscriptFinal,
    TranscriptPartial,
)

MAX_FINAL_WINDOWS = 8  # a final flush decodes the rest of the buffer in at most this many windows
LIVE_SLACK_S = 1.0  # a client this far ahead of the wall clock sends faster than speech


class BufferOverflow(Exception):
    """More audio is buffered than --max-buffer-seconds allows."""


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
        self.policy = engine.stream_policy(start.language, chunk_s)  # the model's streaming policy
        self.text = ""  # the concatenation of every delta sent
        self.audio_arrived = asyncio.Event()
        self.progress = asyncio.Event()  # set after each decode: room for more audio
        self.ending = False
        self.started = time.monotonic()
        self.from_file = False  # the client has sent audio faster than speech: backpressure, not catch-up
        self.task = asyncio.create_task(self._run())

    @property
    def received_ms(self) -> int:
        return self.policy.received_samples * 1000 // SAMPLE_RATE

    def feed(self, data: bytes) -> None:
        audio = self.frames.decode(data)
        if self.policy.buffered_s + len(audio) / SAMPLE_RATE > self.max_buffer_s:
            raise BufferOverflow(
                f"more than {self.max_buffer_s:g} s of audio would be buffered; send at most real time"
            )
        self.policy.add_audio(audio)
        # A microphone cannot get ahead of the clock; once a client has, it is streaming a file.
        if self.policy.received_samples / SAMPLE_RATE > time.monotonic() - self.started + LIVE_SLACK_S:
            self.from_file = True
        self.audio_arrived.set()

    async def wait_for_room(self) -> None:
        """Hold the reader of a client that sends faster than speech while two chunks wait to be decoded:
        it feels TCP backpressure. A live client cannot slow down; it is caught up instead (see _step)."""
        while self.from_file and self.policy.unprocessed_s >= 2 * self.chunk_s and not self.task.done():
            self.progress.clear()
            await self.progress.wait()

    async def finish(self) -> TranscriptFinal:
        """No more audio: decode what is left, commit everything, and return the final event."""
        self.policy.add_audio(self.frames.flush())
        self.ending = True
        self.audio_arrived.set()
        await self.task
        return TranscriptFinal(text=self.text, audio_ms=self.received_ms)

    def cancel(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        while not self.ending:
            if self.policy.unprocessed_s >= self.chunk_s:
                await self._step(final=False)
            else:
                self.audio_arrived.clear()
                if not self.ending:
                    await self.audio_arrived.wait()
        for _ in range(MAX_FINAL_WINDOWS):
            covered = await self._step(final=True)
            if covered is None or covered >= self.policy.received_samples:
                break

    async def _step(self, final: bool) -> int | None:
        """Decode the buffer once and send what it commits; return the session sample it covered up to."""
        behind = self.policy.unprocessed_s >= 2 * self.chunk_s and not self.from_file
        job = self.policy.next_job(final, catch_up=behind)
        self.progress.set()
        if job is None:
            return None
        end = self.policy.buffer_start + self.policy.processed  # the session sample the decode hears up to
        result = await self.engine.run_window(job)
        audio_ms = end * 1000 // SAMPLE_RATE
        for word in self.policy.update(job, result, final=final):
            delta = word if not self.text else " " + word
            self.text += delta
            await self.emit(TranscriptDelta(delta=delta, audio_ms=audio_ms))
        if self.partials and not final:
            await self.emit(TranscriptPartial(text=self.policy.partial, audio_ms=audio_ms))
        self.progress.set()
        return end
