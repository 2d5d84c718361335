"""A live transcription session: audio frames in, committed words out, while the speaker talks.

The session owns its incoming audio, its voice-activity state and an inference loop; the model's live
policy (engine.stream_policy) owns the decode window and decides what to decode and what a decode
commits. Each new piece of audio goes through the VAD (off the event loop), then the policy is asked
for its next decode, which the engine batches with every other session's and request's. What the session
hears it tells a Listener, which each wire protocol implements. With turn detection on, the session
also cuts its audio into turns (Realtime items): at each turn's end every word of the turn is
committed before the audio after it is looked at. No torch here.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Awaitable

import numpy as np

from sasr.audio.constants import SAMPLE_RATE
from sasr.audio.stream import FrameDecoder
from sasr.engine import LiveOptions
from sasr.live.commit import VAD_FRAME_SAMPLES, TimedWord
from sasr.live.turns import TurnDetection, Turns

# A client ahead of the wall clock by more than LIVE_SLACK_S plus CLOCK_DRIFT of the time since its
# first audio sends faster than speech (a file). A microphone gets ahead only by what it buffered while
# connecting (sent at once, then at the pace of speech) and by a clock that runs fast: with 1 s and no
# drift allowed, a client that sent 1.5 s at once got no word until it stopped (seen with the seed
# protocol), and a clock 0.05% fast would have turned a meeting into a file after half an hour.
LIVE_SLACK_S = 3.0
CLOCK_DRIFT = 0.01
STALL_S = 1.0  # a file sender that then sends nothing for this long has what it sent decoded to its end
PROGRESS_S = 0.5  # with partials, silence is acknowledged (an event) at least this often
MAX_FINAL_DECODES = 64  # a turn's (or the session's) last audio never takes more decodes than this
COMMIT, CLEAR = "commit", "clear"  # the client's marks in its audio


class Listener:
    """What a live session tells its wire protocol, in audio order; each method may send events.
    Times are milliseconds of session audio. The defaults do nothing."""

    async def words(self, words: list[TimedWord], audio_ms: int) -> None:
        """Words committed by a decode that heard audio_ms of the session."""

    async def partial(self, text: str, audio_ms: int) -> None:
        """The not-yet-stable tail after the committed words (replaces the previous one)."""

    async def speech_started(self, start_ms: int) -> None:
        """A turn began (turn detection on)."""

    async def turn_closing(self, end_ms: int, detected: bool) -> None:
        """A turn ends: speech stopped (detected) or the client committed; its last words follow."""

    async def turn_closed(self, duration_ms: int) -> None:
        """Every word of the turn that is closing has been sent."""

    async def cleared(self) -> None:
        """The audio the client cleared is gone (the turns it had committed before were closed first)."""


class BufferOverflow(Exception):
    """More audio is buffered than --max-buffer-seconds allows."""


def ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


class Session:
    def __init__(
        self, engine, listener: Listener, audio_format: str, language: str | None = None,
        prompt: str | None = None, turns: TurnDetection | None = None,
        chunk_s: float | None = None, max_buffer_s: float = 60.0, max_file_s: float = 3600.0,
        options: LiveOptions = LiveOptions(),
    ) -> None:
        self.id = f"sess_{uuid.uuid4().hex[:16]}"
        self.engine, self.listener = engine, listener
        self.chunk_s = chunk_s or engine.stream_chunk_s  # the model's own default unless configured
        self.max_buffer_s, self.max_file_s = max_buffer_s, max_file_s
        self.options = options  # how its words are committed (the engine takes them: server/ws.py)
        self.language, self.prompt, self.turn_detection = language, prompt, turns
        self.audio_format, self.frames = audio_format, FrameDecoder(audio_format)
        self.incoming: list[np.ndarray] = []  # audio received, not yet through the VAD
        self.num_incoming = 0  # samples in it
        self.num_received = 0  # samples received in all
        self.text = ""  # every committed word, space-separated
        self.last_event_ms = 0  # audio_ms of the last event sent
        self.audio_arrived = asyncio.Event()
        self.progress = asyncio.Event()  # set after each pass: room for more audio
        self.ending = False
        # (COMMIT | CLEAR, session sample) marks not yet acted on, in the order the client sent them
        self.marks: deque[tuple[str, int]] = deque()
        self.committed_until = 0  # session audio up to here belongs to closed turns, or to ones closing
        self.generation = 0  # bumped when cleared audio is dropped: work started on it before is void
        self.started: float | None = None  # when the first audio came (the clock a file sender outruns)
        self.from_file = False  # the client has sent audio faster than speech: transcribed as an upload
        self.live_slack_s = LIVE_SLACK_S  # (a test's replay sets its own pace here)
        self.stalled = False  # a file sender has sent nothing for STALL_S: decode what it sent, to its end
        self.ahead = None  # (job, its decode): the policy's next final, decoded ahead (see _decode_ahead)
        self._restart(0)
        self.task = asyncio.create_task(self._run())

    def _restart(self, base: int) -> None:
        """A fresh policy, VAD and turn detector for the audio after session sample `base` (their clock)."""
        self.base = base
        self.policy = self.engine.stream_policy(self.language, self.chunk_s, self.prompt, self.options)  # the model's
        self.vad = self.engine.new_vad()
        self.turns = Turns(self.turn_detection) if self.turn_detection else None
        self.heard: deque[tuple[np.ndarray, np.ndarray]] = deque()  # through the VAD, not given to the policy
        self.num_fed = 0  # samples given to the policy
        self.num_frames = 0  # VAD frames computed
        self.turn_start: int | None = None  # where the open turn began (with its padding)
        self.closing: int | None = None  # where the speech ended of a turn whose last words are being decoded
        self.last_closed = 0  # where the last turn closed
        self._drop_ahead()  # for the policy before

    def _ms(self, samples: int) -> int:
        """Milliseconds of session audio at sample `samples` of the policy's clock."""
        return ms(self.base + samples)

    @property
    def received_ms(self) -> int:
        return ms(self.num_received)

    @property
    def num_heard(self) -> int:
        return sum(len(samples) for samples, _ in self.heard)

    @property
    def unprocessed_s(self) -> float:
        return (self.num_incoming + self.num_heard) / SAMPLE_RATE + self.policy.unprocessed_s

    @property
    def uncommitted_ms(self) -> int:
        """Audio received since the last turn closed (or the last clear)."""
        return ms(self.num_received - self.committed_until)

    def feed(self, data: bytes) -> None:
        self._take(self.frames.decode(data))

    def configure(self, language: str | None, prompt: str | None, turns: TurnDetection | None) -> None:
        """New settings for the audio from now on (a prompt applies from the next clear)."""
        self.language, self.prompt = language, prompt
        self.policy.language = language
        if turns != self.turn_detection:
            self.turn_detection = turns
            self.turns = Turns(turns, first_frame=self.num_frames) if turns else None

    def set_format(self, audio_format: str) -> None:
        """Take what the decoder still holds (its resampler's tail), and decode what follows afresh."""
        self._take(self.frames.flush())
        self.audio_format, self.frames = audio_format, FrameDecoder(audio_format)

    def _take(self, audio: np.ndarray) -> None:
        # A microphone cannot get ahead of the clock; once a client has, it is streaming a file.
        if self.started is None and len(audio):
            self.started = time.monotonic()
        elapsed = time.monotonic() - self.started if self.started is not None else 0.0
        if (self.num_received + len(audio)) / SAMPLE_RATE > elapsed * (1 + CLOCK_DRIFT) + self.live_slack_s:
            self.from_file = True
        buffered = self.policy.buffered_s + (self.num_incoming + self.num_heard + len(audio)) / SAMPLE_RATE
        limit = self.max_file_s if self.from_file else self.max_buffer_s
        if buffered > limit:
            raise BufferOverflow(f"more than {limit:g} s of audio would be waiting to be transcribed"
                                 + ("" if self.from_file else "; send at most real time"))
        self.incoming.append(audio)
        self.stalled = False
        self.num_incoming += len(audio)
        self.num_received += len(audio)
        self.audio_arrived.set()

    async def wait_for_room(self) -> None:
        """Wait while two chunks wait to be looked at (for in-process callers that want to pace a file;
        the sockets do not: they keep reading, so a client's keepalive pings never wait behind audio)."""
        while self.unprocessed_s >= 2 * self.chunk_s and not self.task.done():
            self.progress.clear()
            await self.progress.wait()

    def commit(self) -> None:
        """Close the current turn at the audio received so far (the client's commit)."""
        self.set_format(self.audio_format)
        self.committed_until = self.num_received
        self.marks.append((COMMIT, self.num_received))
        self.audio_arrived.set()

    def clear(self) -> None:
        """Drop the audio received since the last commit (the client's clear). Turns the client (or the
        VAD) committed before are closed first, with their words; the audio after is dropped then, and
        commits sent after the clear close turns of the audio after it."""
        self.committed_until = self.num_received
        if not self.marks and self.closing is None:
            self.generation += 1  # decodes in flight hear only cleared audio
        self.marks.append((CLEAR, self.num_received))
        self.audio_arrived.set()

    async def finish(self) -> None:
        """No more audio: decode what is left and commit everything (session.text is the transcript)."""
        self._take(self.frames.flush())
        self.ending = True
        self.audio_arrived.set()
        await self.task

    def cancel(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        try:
            await self._loop()
        finally:
            self._drop_ahead()

    async def _loop(self) -> None:
        num_final = 0  # decodes of the turn (or the session's end) being closed
        while True:
            await asyncio.sleep(0)  # a pass with nothing to wait for must not starve every other session
            while self.marks and self.marks[0][0] == CLEAR and self.closing is None:
                await self._drop_cleared()
            generation = self.generation
            await self._ingest()
            if generation != self.generation:
                continue  # cleared while the VAD ran or a listener was told of a turn
            last = self.ending and not self.incoming and not self.heard
            final = last or self.closing is not None or self.stalled
            self.policy.files = self.from_file
            behind = not self.from_file and self.unprocessed_s >= self.chunk_s
            job = self.policy.next_job(final=final, catch_up=behind)
            run = job is not None and (not final or num_final < MAX_FINAL_DECODES)
            decoded = self._decode_ahead(job if run else None)  # the decode run ahead, if it is job's
            if run:
                num_final += final
                await self._decode(job, final, generation, decoded)
            elif self.closing is not None:
                start = self.turn_start if self.turn_start is not None else self.last_closed
                await self.listener.turn_closed(ms(max(0, self.closing - start)))
                self.last_closed = self.num_fed
                self.committed_until = max(self.committed_until, self.base + self.num_fed)
                self.closing, self.turn_start, num_final = None, None, 0
            else:
                await self._acknowledge()
                if last:
                    return
                self.progress.set()
                num_final = 0 if self.stalled else num_final
                idle = not (self.incoming or self.heard or self.marks)
                if idle and not self.ending:
                    self.audio_arrived.clear()
                    try:  # a file sender that pauses gets what it sent (a live client's decodes need no nudge)
                        async with asyncio.timeout(STALL_S if self.from_file and not self.stalled else None):
                            await self.audio_arrived.wait()
                    except TimeoutError:
                        self.stalled = True
            self.progress.set()

    def _decode_ahead(self, job) -> asyncio.Future | None:
        """Have the engine run the decode the policy expects next (`policy.ahead`: Whisper's final,
        while the silence that ends an utterance is awaited), or cancel one gone stale. Returns the
        decode of `job` where it is the one run ahead."""
        ahead, taken = getattr(self.policy, "ahead", None), None
        if self.ahead is not None and self.ahead[0] is not ahead:
            if self.ahead[0] is job:
                taken, self.ahead = self.ahead[1], None
            else:
                self._drop_ahead()
        if ahead is not None and self.ahead is None:
            self._count(ahead)
            decode = asyncio.ensure_future(self.engine.run_window(ahead))
            decode.add_done_callback(lambda d: d.cancelled() or d.exception())  # a dropped one's error is nobody's
            self.ahead = (ahead, decode)
        return taken

    def _count(self, job) -> None:
        self.engine.metrics.inc("sasr_live_decodes_total", help="Decodes run for live sessions, by kind",
                                kind=getattr(job, "kind", "chunk"))

    def _drop_ahead(self) -> None:
        if self.ahead is not None:
            self.ahead[1].cancel()  # the engine drops its sequence
            self.ahead = None

    async def _ingest(self) -> None:
        """Run the VAD over new audio and hand it to the policy, up to the end of the next turn (where
        speech stopped, or where the client committed)."""
        if self.incoming:
            samples = self._next_incoming()
            generation = self.generation
            probs = await self.engine.run_vad(self.vad, samples)
            if generation != self.generation:
                return  # cleared meanwhile
            self.heard.append((samples, probs))
        while self.closing is None:
            kind, at = self.marks[0] if self.marks else (None, 0)
            if kind == CLEAR:
                return  # the audio before it is dropped first
            commit_at = at - self.base if kind == COMMIT else None
            if commit_at is not None and self.num_fed >= commit_at:
                self.marks.popleft()
                await self._close_turn(self.num_fed, detected=False)
                return
            if not self.heard:
                return
            samples, probs = self.heard.popleft()
            if commit_at is not None and commit_at < self.num_fed + len(samples):  # the client committed in here
                cut = commit_at - self.num_fed
                used = min(max(0, commit_at // VAD_FRAME_SAMPLES - self.num_frames), len(probs))  # frames before it
                self.heard.appendleft((samples[cut:], probs[used:]))
                samples, probs = samples[:cut], probs[:used]
            generation = self.generation
            end, used = await self._detect_turns(probs)
            if generation != self.generation:
                return
            if end is not None:  # the policy hears the turn's audio alone before it closes
                cut = self.num_frames * VAD_FRAME_SAMPLES - self.num_fed
                self.heard.appendleft((samples[cut:], probs[used:]))
                samples, probs = samples[:cut], probs[:used]
            self.policy.add_audio(samples, probs)
            self.num_fed += len(samples)
            if end is not None:
                await self._close_turn(end, detected=True)

    def _next_incoming(self) -> np.ndarray:
        """The audio to look at next: all of it for a live client; for a file sender a few chunks at a
        time (the rest waits), so its decodes go on while it sends."""
        take = len(self.incoming) if not self.from_file else 1
        while take < len(self.incoming) and sum(len(a) for a in self.incoming[:take]) < 2 * self.chunk_s * SAMPLE_RATE:
            take += 1
        samples = np.concatenate(self.incoming[:take])
        self.incoming = self.incoming[take:]
        self.num_incoming -= len(samples)
        return samples

    async def _detect_turns(self, probs: np.ndarray) -> tuple[int | None, int]:
        """Step the turn detector over the frames, stopping at a turn's end: (that end, frames used)."""
        for used, prob in enumerate(probs.tolist(), start=1):
            self.num_frames += 1
            event = self.turns.step(prob) if self.turns is not None else None
            if event is None:
                continue
            if not event.started:
                return event.sample, used
            self.turn_start = event.sample
            generation = self.generation
            await self.listener.speech_started(self._ms(event.sample))
            if generation != self.generation:
                return None, used  # cleared meanwhile: the rest is dropped with it
        return None, len(probs)

    async def _close_turn(self, end: int, detected: bool) -> None:
        self.closing = end
        await self.listener.turn_closing(self._ms(end), detected)

    async def _drop_cleared(self) -> None:
        """Start afresh at the clear: what was received before it and not committed is gone, what came
        after it is kept for the new policy (nothing after it was ever given to the old one)."""
        _, cleared_at = self.marks.popleft()
        keep = self.num_received - cleared_at
        held = [samples for samples, _ in self.heard] + self.incoming
        rest = np.concatenate(held) if held else np.zeros(0, np.float32)
        tail = rest[max(0, len(rest) - keep):] if keep else rest[:0]
        self._restart(cleared_at)
        self.incoming, self.num_incoming = ([tail] if len(tail) else []), len(tail)
        self.generation += 1
        await self.listener.cleared()

    async def _decode(self, job, final: bool, generation: int, decoded: Awaitable | None = None) -> None:
        """Run one decode the policy asked for (or await it, `decoded`, where it ran ahead) and send what it
        commits."""
        audio_ms = self._ms(self.policy.buffer_start + job.end)  # the session audio the decode hears
        if decoded is None:
            self._count(job)
            decoded = self.engine.run_window(job)
        result = await decoded
        if generation != self.generation:
            return  # cleared meanwhile: the policy it was for is gone
        words = self.policy.update(job, result, final=final)
        if words:
            shift_s = self.base / SAMPLE_RATE
            for word in words:
                if word.start_s is not None:
                    word.start_s, word.end_s = word.start_s + shift_s, word.end_s + shift_s
            self.text = " ".join([self.text, *(w.text for w in words)]).strip()
            await self.listener.words(words, audio_ms)
        if not final:
            await self.listener.partial(self.policy.partial, audio_ms)
        self.last_event_ms = max(self.last_event_ms, audio_ms)

    async def _acknowledge(self) -> None:
        """Say how far the audio has been handled when no decode did (silence), at least every PROGRESS_S."""
        heard_ms = self._ms(self.policy.heard_samples)
        if heard_ms - self.last_event_ms >= PROGRESS_S * 1000:
            self.last_event_ms = heard_ms
            await self.listener.partial(self.policy.partial, heard_ms)
