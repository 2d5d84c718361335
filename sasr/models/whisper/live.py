"""Whisper's live policy: utterances cut by voice activity, cheap partials while one is spoken, and
an accurate final decode with full context when it ends.

The decode window is the current utterance (from a little before its onset) after up to HISTORY_S of
earlier utterances (as many as fit in MAX_WINDOW_S with it), whose committed text is forced, with
the last LIVE_PROMPT_TOKENS of older text as the prompt: nothing is trimmed mid-speech, and the model
hears its context as an upload's 30 s windows would. While an utterance is spoken there is a decode point every chunk: a
partial (its window alone, padded by PAD_S: cheap, only shown) and, every COMMIT_EVERY points, a
commit decode (the whole window, padded as much) that commits the words the decode before agreed on,
that end GUARD_S before the audio it heard (Whisper's last words are its least reliable) and that
the model was sure of, or that have settled (SETTLE_S more audio after them); a settled word the two
decodes word differently counts as agreed where the words after it agree (the later decode's wording
is committed). When ENDPOINT_S of silence ends the utterance, a final decode (encoded as 30 s, as
Whisper was trained) commits the rest, with Whisper's temperature fallback where it loops (the
likeliest attempt kept, never nothing; a commit decode that looks like a loop or a guess commits
nothing, untried again); a final that stops CONTINUE_S before its window ends goes on from its last
word, as an upload seeks on. Commit decodes commit words, never their closing timestamp (a guess at
where their text ends, at times seconds past it). Each decode writes at most MAX_TOKENS_PER_S tokens
a second of its window (a loop stops there). A client streaming a file (faster than speech) waits
for no word: its audio is transcribed as its upload is, window by window (decode.long_form over the
audio as it arrives, each 30 s window once it has all arrived, windows the VAD heard no one in
skipped), so it gets the upload's words and times. An utterance longer than MAX_WINDOW_S is cut
where the model's last segment in its second half ended (or after its last committed word), never
dropped. Silence costs no decode. Word timings come from the decoder's cross-attention (timing.py).
Each decode brings the tokens the session's last decode wrote after the committed ones as a draft:
the engine checks it in the prefill and keeps what its own sampling would have written, so the text
is the same (but where two tokens are all but tied: a prefill's products round otherwise than a
step's) and every token guessed right is a decode step saved. A partial's words are shown, never
timed: it asks for no alignment (no cross-attention weights, no DTW). With commits at utterance ends only
(`early_commits` False) a partial forces what the two partials before it wrote alike, but their last
PROVISIONAL_HOLDBACK words (shown, never committed: finals force none of it). Once TAIL_S of silence follows
the speech (all of it a final hears), and AHEAD_S before the endpoint, the final it would bring is made
`ahead` and the session has it decoded while the rest of the endpoint is awaited (the same decode, so
the same words, only sooner); speech that goes on, or words committed meanwhile, make it stale.

Decision points are met in audio order, frame by frame, so what a session commits depends on its
audio alone (and on whether it streams a file), not on how busy the server is; a live session the
server has fallen behind may `catch_up`, skipping partials and commit decodes (never finals): its
words are then committed by the utterance's final, which may word them otherwise. No torch here.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from sasr.audio.constants import FRAMES_PER_S, HOP_SAMPLES, SAMPLE_RATE, WINDOW_FRAMES
from sasr.live.commit import (
    SPEECH_ON,
    VAD_FRAME_SAMPLES,
    LiveBuffer,
    SpeechTracker,
    TimedWord,
    agreed_prefix,
    word_key,
)
from sasr.models.whisper.decode import (
    FALLBACK_TEMPERATURES,
    LOGPROB_MIN,
    NO_SPEECH_MIN,
    Options,
    Recording,
    WindowJob,
    WindowResult,
    acceptable,
    best_attempt,
    compression_ratio,
    long_form,
    loops,
    prefix_for,
)
from sasr.models.whisper.timing import Word, split_word_tokens, word_timings
from sasr.models.whisper.vocab import TIMESTAMP_S, WhisperVocab

ENDPOINT_S = 0.5  # silence that ends an utterance
LEAD_S = 0.3  # audio kept before an utterance's onset
PHASE_SAMPLES = 2 * HOP_SAMPLES  # the encoder's stride (its first conv reads mel frames two by two): every window
# starts on this grid of the session's clock, as an upload's windows do from the file's start (they seek by 20 ms
# timestamps), so a live decode reads the audio at the upload's phase (tiny.en's text on hard audio turns on it:
# README, session 22) and its mel frames are the upload's. Measured (int8, 3 shifted passes): the default's gaps
# to uploads (short, long, voices, real) +0.004/+0.011/+0.065/+0.044 -> +0.013/+0.015/+0.044/+0.038, live text the
# upload's word for word in 77 of 102 short passes (72) and 67 of 78 real (63); against reference texts a wash
# (short and long 0.009 and 0.007 worse, voices 0.020 better): what it buys is live text that reads as the upload
TAIL_S = 0.3  # silence after an utterance that its final decode hears
AHEAD_S = 0.3  # its final is made ahead (`_look_ahead`) this long before the endpoint, once TAIL_S has come:
# with an 800 ms endpoint each pause of 0.3-0.5 s inside an utterance ran a whole final for nothing (4 final-mode
# voices sessions, interleaved: event p50 / p95 1.04-1.20 / 2.67-2.74 -> 0.83-0.84 / 2.27-2.38 s, end -> final
# p95 2.15-2.21 -> 1.77-1.88 s); the default 500 ms endpoint is unchanged (TAIL_S comes later)
GUARD_S = 0.6  # a commit decode commits only words ending this far before the audio it heard,
MIN_WORD_PROB = 0.7  # whose every token was at least this likely, and that the decode before agreed on;
SETTLE_S = 1.5  # a word less likely than that is committed too once SETTLE_S of audio followed it
# (both decodes agreed with that much more to hear): else one unsure word held every later one until the
# utterance ended (measured, make bench-live-policy: committed-word p95 wait 15.4 -> 5.0 s on real
# recordings, 6.2 -> 4.9 s on the voices slice; each slice's gap to uploads moved 0.012 at most).
# MIN_WORD_PROB 0.7 (was 0.5): gaps +0.018/+0.007/+0.052/+0.020 -> +0.018/-0.005/+0.048/+0.017 (short,
# long, voices, real), waits within 0.1 s; 0.85 measured the same gaps. A settled word worded otherwise
# by the decode before, the two words after it agreed (commit.agreed_prefix), no longer holds the rest:
# word p95 3.24 -> 3.14 s (long), 4.93 -> 4.56 s (voices), 5.00 -> 4.36 s (real), gaps the same but real's
# (+0.017 -> +0.020)
COMMIT_EVERY = 2  # of an utterance's decode points (one a chunk), every second is a commit decode
CONTINUE_S = 1.5  # a final whose last word ends this long before its window does goes on from that word
MAX_WINDOW_S = 20.0  # a longer utterance is cut at the model's last segment end (_cut_long)
HISTORY_S = 10.0  # earlier utterances kept in the window, at most, the oldest making room for the current one
# as it grows (acoustic context: none measured worse; 20 s lowered the voices slice's gap to uploads +0.059 ->
# +0.043 in each of three shifted passes, but 8 live sessions' event p95 rose 1.32-1.41 -> 1.59-1.92 s)
HISTORY_GAP_S = 2.0  # a pause this long drops them
PAD_S = 5.0  # silence appended to a partial's or a commit decode's window before encoding (cheap: a
# commit decode's last words are never committed, and measured on the bench corpus its 30 s encoding
# bought no accuracy for 20% more compute)
FINAL_PAD_S = 30.0  # finals commit everything: encoded as 30 s, as Whisper was trained (short pads hallucinated)
PROVISIONAL_HOLDBACK = 3  # with commits at utterance ends only, a partial forces what the two partials before
# it wrote alike but their last this many words (shown, never committed): else every partial decoded the
# whole utterance again token by token wherever its draft broke, with 20 s utterances most of the model time
MAX_TOKENS_PER_S = 10  # a decode may write at most this many tokens a second of its window, plus 10: the
# bench corpus's fastest decodes wrote 8 a second (timestamps included); a loop ran on to the 224-token
# cap, a partial taking a slot for 224 steps (4 partials of 199 wrote a third of all partial tokens)
LIVE_PROMPT_TOKENS = 64  # committed tokens before a live decode's window passed as its prompt: each decode
# prefills them again, and 223 (as uploads; a file sender's windows keep that) measured the same text on the
# short, voices and real slices and within the passes' spread on long (+0.002 -> +0.005) for 5-10% more model time
FINALS_BOTH_PHASES = 0  # 1: finals (and long utterances' cuts) decoded at both phases of the encoder's stride, the
# likelier kept (decode.WindowJob.both_phases): an utterance alone draws its phase anew, and tiny.en's text on hard
# audio turns on it. Measured (int8, 3 shifted passes): commits at utterance ends, gaps to uploads (short, long,
# voices, real) +0.002/+0.016/+0.010/+0.033 -> -0.008/-0.014/+0.001/+0.029, but 4 sessions' end -> final p95
# 2.5 -> 5.0 s and the test clip of tests/test_stream.py worse (WER 0.500 -> 0.533, the default's 0.467); the
# default: voices/real +0.065/+0.044 -> +0.049/+0.037, 4 sessions' event p95 1.0 -> 2.7 s. Off (README, session 22)
PARTIAL, COMMIT, FINAL, FORCED, WINDOW = "partial", "commit", "final", "forced", "window"


@dataclass
class LiveJob(WindowJob):
    kind: str = PARTIAL  # partial: show the tail; commit: also commit what is stable; final: commit all; forced: cut a long one
    skip: int = 0  # buffer samples before its window (a partial leaves the earlier utterances out)
    end: int = 0  # samples of the buffer it hears
    fallback: int = 0  # index into FALLBACK_TEMPERATURES
    provisional: int = 0  # of its forced tokens, the last are the partial before's settled ones (not committed)


def same_decode(a: LiveJob, b: LiveJob) -> bool:
    """Whether two jobs decode to the same tokens (a draft changes none)."""
    key = lambda job: (job.seed, job.end, job.kind, job.temperature, job.prefix, job.forced)
    return key(a) == key(b)


def words_of(vocab: WhisperVocab, result: WindowResult, num_audio_samples: int) -> list[Word]:
    """The decode's words, forced ones first (a word never spans the two), with times in seconds
    from the window's start."""
    frames = num_audio_samples // (2 * HOP_SAMPLES)
    if result.attention is not None:
        return word_timings(vocab, result.tokens, result.attention, frames, boundary=result.num_forced)
    groups = split_word_tokens(vocab, result.tokens, boundary=result.num_forced)
    step = num_audio_samples / SAMPLE_RATE / max(1, len(groups))  # no alignment heads: spread them evenly
    return [Word(vocab.decode(g), round(i * step, 2), round((i + 1) * step, 2), g) for i, g in enumerate(groups)]


def token_cut(vocab: WhisperVocab, tokens: list[int], num_words: int) -> int:
    """Number of leading tokens that spell the first num_words words (and any timestamps after them)."""
    if num_words == 0:
        return 0
    seen = 0
    for i, token in enumerate(tokens):
        if token < vocab.eot and (seen == 0 or vocab.decode([token]).startswith(" ")):
            if seen == num_words:
                return i
            seen += 1
    return len(tokens)


@dataclass
class VoicedRecording(Recording):
    """A file sender's audio since `origin` (a session sample): a window holds no speech where the
    VAD heard none in it (`voiced`: one flag per 32 ms frame of the session)."""

    origin: int = 0
    voiced: bytearray = field(default_factory=bytearray)

    def silent(self, begin: int, end: int) -> bool:
        first, last = (self.origin + begin) // VAD_FRAME_SAMPLES, -(-(self.origin + end) // VAD_FRAME_SAMPLES)
        return not any(self.voiced[first:last]) or super().silent(begin, end)


@dataclass
class StreamingPolicy(LiveBuffer):
    vocab: WhisperVocab
    max_len: int
    language: str | None = None
    chunk_samples: int = SAMPLE_RATE  # partial decodes every chunk of an utterance
    files: bool = False  # the client streams a file: its windows are its upload's
    # commit decodes commit settled words before their utterance ends; False: only an utterance's final
    # (or a forced cut) commits, partials show the rest (closer to the upload, words later: README)
    early_commits: bool = True
    buffer: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # audio since buffer_start
    buffer_start: int = 0  # samples of the session before the buffer
    processed: int = 0  # samples of the buffer covered by the last decode
    speech_probs: deque = field(default_factory=deque)  # of frames received, not yet consumed
    context: list[int] = field(default_factory=list)  # committed tokens before the buffer, timestamps included
    committed: list[int] = field(default_factory=list)  # committed tokens of the buffer, timestamps included
    num_committed_words: int = 0  # words those tokens spell
    # earlier utterances still in the buffer, for context: (end sample in the buffer, committed tokens
    # and words up to there)
    history: list[tuple[int, int, int]] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)  # the last partial's uncommitted words
    partial: str = ""  # the not-yet-stable tail after the committed words
    guess: list[int] = field(default_factory=list)  # the last decode's tokens after the committed ones
    # (buffer times): the next decode's draft, checked by the engine in one pass instead of a step a token
    provisional: int = 0  # leading tokens of the guess the next partial forces (commits at utterance ends only)
    retry: LiveJob | None = None  # a final decode to run again at the next temperature
    attempts: list = field(default_factory=list)  # (result, temperature, compression ratio) of its tries so far
    last_sent: TimedWord | None = None  # the last word committed
    tracker: SpeechTracker = field(default_factory=lambda: SpeechTracker(ENDPOINT_S))
    next_partial: int = 0  # session sample of the next decode point (while in speech)
    num_points: int = 0  # decode points of the current utterance since its last commit decode
    # a file sender's audio is transcribed as its upload would be: long_form's windows over `recording`
    recording: VoicedRecording | None = None
    upload: object | None = None  # the long_form generator
    upload_next: LiveJob | None = None  # the window it asked for after the last one
    upload_words: list[TimedWord] = field(default_factory=list)  # what the last window kept
    # the final that comes if the silence after the last voiced frame lasts until ENDPOINT_S: made once
    # TAIL_S of it (all the final hears) has come, so it is decoded while the endpoint is awaited
    ahead: LiveJob | None = None

    @property
    def heard_samples(self) -> int:
        """Audio accounted for: decoded, or (between utterances) known to hold no speech."""
        if self.recording is not None:  # a file sender's: up to its next window
            return self.recording.origin + self.recording.seek
        if self.tracker.in_speech or self._utterance_tokens:
            return self.buffer_start + self.processed
        return self.tracker.position

    @property
    def _utterance_tokens(self) -> int:
        """Committed tokens of the utterance being spoken (after the history's)."""
        return len(self.committed) - (self.history[-1][1] if self.history else 0)

    @property
    def unprocessed_s(self) -> float:
        """Audio whose voice activity the policy has not looked at yet."""
        return len(self.speech_probs) * VAD_FRAME_SAMPLES / SAMPLE_RATE

    # -- what to decode next ---------------------------------------------------------------------------

    def next_job(self, final: bool = False, catch_up: bool = False) -> LiveJob | None:
        """The next decode, met in audio order; None when the audio so far needs none."""
        if self.retry is not None:
            job, self.retry = self.retry, None
            return job
        if self.files:
            return self._file_job(final)
        while self.speech_probs:
            ended = self.tracker.step(self.speech_probs.popleft())
            position = self.tracker.position
            if ended is not None:
                return self._final(ended[1])
            self._look_ahead(position)
            if not self.tracker.in_speech:
                self._trim_silence(position)
            elif position >= self.next_partial > 0:
                self.next_partial += self.chunk_samples
                self.num_points += 1
                behind = catch_up and len(self.speech_probs) * VAD_FRAME_SAMPLES >= self.chunk_samples
                window = MAX_WINDOW_S * SAMPLE_RATE
                while self.history and position - self.buffer_start >= window:
                    self._drop_history(1)  # the earlier utterances make room for the one being spoken
                too_long = position - self.buffer_start >= window
                if too_long:
                    return self._decode_to(position, FORCED)
                if not self.files and not behind:  # behind: the next point's audio is here, decode that
                    kind = COMMIT if self.early_commits and self.num_points >= COMMIT_EVERY else PARTIAL
                    self.num_points = 0 if kind == COMMIT else self.num_points
                    return self._decode_to(position, kind)
            elif self.tracker.in_speech and self.next_partial == 0:  # the utterance's first frame
                self.next_partial, self.num_points = self.tracker.start + self.chunk_samples, 0
        if final and self.tracker.in_speech:
            ended = self.tracker.close()
            if ended is not None:
                return self._final(ended[1])
        if final and self._utterance_tokens:
            return self._final(self.received_samples)
        return None

    def _file_job(self, final: bool) -> LiveJob | None:
        """A file sender's next window: its upload's, once the whole window has arrived (or the
        stream ends); windows the VAD heard no speech in are skipped."""
        if self.recording is None:
            self._start_upload()
        self.recording.voiced.extend(p >= SPEECH_ON for p in self.speech_probs)
        self.speech_probs.clear()
        self._sync_recording()
        self.recording.ended = final
        if self.upload is None:  # the last one ended (a turn closed): the audio after it starts afresh
            self.recording.seek = self.recording.start
            self.upload = long_form(self.vocab, self.recording, Options(self.language, word_timestamps=True),
                                    self.max_len, [], prompt_ids=list(self.context),
                                    on_words=self._upload_words)
        job, self.upload_next = self.upload_next, None
        return job or self._upload_send(None)

    def _sync_recording(self) -> None:
        """Point the recording at the buffer (it grows with audio and is cut as windows are done)."""
        self.recording.samples, self.recording.start = self.buffer, self.buffer_start - self.recording.origin

    def _start_upload(self) -> None:
        """The client turned out to send a file: what live decodes committed becomes the prompt, and
        the audio after the last word they committed is transcribed as an upload would be."""
        end = round(self.last_sent.end_s * SAMPLE_RATE) - self.buffer_start if self.last_sent else 0
        self._close_window(min(max(0, end), len(self.buffer)))
        self.previous, self.partial, self.next_partial, self.ahead = [], "", 0, None
        self.recording = VoicedRecording(self.buffer, origin=self.buffer_start)
        self.recording.voiced.extend(b"\x01" * self.tracker.num_frames)  # frames the tracker took: decoded anyway

    def _upload_send(self, result: WindowResult | None) -> LiveJob | None:
        """Give long_form the last window's result (or nothing, if it waits for audio); its next window."""
        try:
            job = self.upload.send(result)
        except StopIteration:
            job, self.upload = None, None
        # the audio before the next window (or all that was looked at) is done with
        self._cut(min(self.recording.origin + self.recording.seek - self.buffer_start, len(self.buffer)))
        self._sync_recording()
        return None if job is None else LiveJob(**vars(job), kind=WINDOW, end=len(job.audio))

    def _upload_words(self, result: WindowResult, timed: list[tuple[str, float, float, list[int]]]) -> None:
        offset_s = self.recording.origin / SAMPLE_RATE
        words = [Word(text, start_s, end_s, tokens) for text, start_s, end_s, tokens in timed]
        pairs = self._token_logprobs(0, result, words)
        self.upload_words += [TimedWord(w.text, offset_s + w.start_s, offset_s + w.end_s, p) for w, p in zip(words, pairs)]
        self.context += [token for word in words for token in word.tokens]

    def _final(self, speech_end: int) -> LiveJob | None:
        self.next_partial = 0
        end = min(self.received_samples, speech_end + round(TAIL_S * SAMPLE_RATE))
        job, ahead, self.ahead = self._decode_to(end, FINAL), self.ahead, None
        return ahead if job is not None and ahead is not None and same_decode(ahead, job) else job  # ahead: run already

    def _look_ahead(self, position: int) -> None:
        """Once TAIL_S of silence follows the last voiced frame, and AHEAD_S before the endpoint, make the
        final the endpoint would bring (`ahead`, for the session to have run); a voiced frame after it,
        or words committed since, make it stale."""
        tail = round(TAIL_S * SAMPLE_RATE)
        wait = max(tail, self.tracker.endpoint_samples - round(AHEAD_S * SAMPLE_RATE))
        if not self.tracker.in_speech or self.files or position - self.tracker.last_voiced < wait:
            self.ahead = None  # none due, or stale: the session drops its decode
            return
        job = self._job(self.tracker.last_voiced + tail, FINAL)
        if self.ahead is None or job is None or not same_decode(self.ahead, job):
            self.ahead = job

    def _trim_silence(self, position: int) -> None:
        """Between utterances: keep only LEAD_S of the silence, for the next onset. A burst too short to be
        an utterance (the tracker dropped it, no final) leaves nothing either: no decode point, no guess."""
        self.next_partial, self.guess, self.provisional, self.previous, self.partial = 0, [], 0, [], ""
        cut = self._on_grid(position - round(LEAD_S * SAMPLE_RATE) - self.buffer_start)
        if self.history and position - self.buffer_start - self.history[-1][0] >= HISTORY_GAP_S * SAMPLE_RATE:
            self._keep_history(0)  # a long pause: the earlier utterances are no context for the next
        if cut > 0 and not self.committed:
            self._cut(min(cut, len(self.buffer)))

    def _decode_to(self, end: int, kind: str) -> LiveJob | None:
        """The decode at a decision point, which covers the audio up to session sample `end`."""
        self.processed = max(self.processed, end - self.buffer_start)
        return self._job(end, kind)

    def _job(self, end: int, kind: str, fallback: int = 0) -> LiveJob | None:
        """A decode of the buffer up to session sample `end`, the committed tokens forced.

        A partial hears the current utterance alone, the earlier ones' text in its prompt; the others
        hear the whole buffer. Partials and commit decodes are padded by PAD_S, the rest to 30 s.
        """
        end -= self.buffer_start
        skip, num_prompt = (self.history[-1][0], self.history[-1][1]) if kind == PARTIAL and self.history else (0, 0)
        window = self.buffer[skip:end]
        if len(window) < VAD_FRAME_SAMPLES:
            return None
        prompt = (self.context + self.committed[:num_prompt])[-LIVE_PROMPT_TOKENS:]
        prefix, sot_index = prefix_for(self.vocab, prompt, self.language, self.max_len)
        guess = self._rebased(self.guess, skip)
        provisional = guess[: self.provisional] if kind == PARTIAL else []
        forced = self._rebased(self.committed[num_prompt:], skip) + provisional
        pad_s = PAD_S if kind in (PARTIAL, COMMIT) else FINAL_PAD_S
        frames = math.ceil((len(window) // HOP_SAMPLES + pad_s * FRAMES_PER_S) / FRAMES_PER_S) * FRAMES_PER_S
        room = self.max_len - len(prefix) - len(forced) - 1
        cap = math.ceil(MAX_TOKENS_PER_S * len(window) / SAMPLE_RATE) + 10
        last = self.vocab.timestamp_begin + round(len(window) / SAMPLE_RATE / TIMESTAMP_S)
        draft = list(itertools.takewhile(lambda t: t <= last, guess[len(provisional) :]))
        begin = self.vocab.timestamp_begin
        if draft and forced and draft[0] >= begin and forced[-1] >= begin:
            # after a closing timestamp (an earlier utterance's final) Whisper opens the next segment
            # where the last one closed, not where the guess (a partial, which did not hear it) put it
            draft[0] = forced[-1]
        return LiveJob(
            audio=window, prefix=prefix, sot_index=sot_index, temperature=FALLBACK_TEMPERATURES[fallback],
            seed=self.buffer_start, max_new_tokens=max(1, min(self.max_len // 2, room, cap)),
            num_frames=min(frames, WINDOW_FRAMES), forced=forced, draft=draft, alignment=kind != PARTIAL,
            both_phases=bool(FINALS_BOTH_PHASES) and kind in (FINAL, FORCED),
            kind=kind, end=end, fallback=fallback, skip=skip, provisional=len(provisional),
        )

    def _on_grid(self, n: int) -> int:
        """The last buffer sample at or before n (0 at least) that is on the session clock's stride grid."""
        return max(0, n - (self.buffer_start + n) % PHASE_SAMPLES)

    def _rebased(self, tokens: list[int], start: int) -> list[int]:
        """Tokens with their timestamps moved back by `start` samples (for a window starting there)."""
        begin = self.vocab.timestamp_begin
        shift = round(start / (SAMPLE_RATE * TIMESTAMP_S))
        return [max(begin, t - shift) if t >= begin else t for t in tokens] if shift else list(tokens)

    # -- what a decode commits -------------------------------------------------------------------------

    def update(self, job: LiveJob, result: WindowResult, final: bool = False) -> list[TimedWord]:
        """Digest a decode of `job`; return the words it commits, in order, timed on the session clock."""
        if job.kind == WINDOW:  # a file sender's: long_form digests it as an upload's
            self.upload_words = []
            self.upload_next = self._upload_send(result)
            return [w for w in self.upload_words if w.text]
        # the VAD heard speech: only Whisper's own rule (likely no speech and unconvincing words) drops it
        no_speech = result.no_speech_prob > NO_SPEECH_MIN and result.avg_logprob < LOGPROB_MIN
        ratio = compression_ratio(self.vocab.decode(result.tokens))
        unreliable = not acceptable(result, ratio)  # a loop or a guess
        if job.kind in (FINAL, FORCED) and loops(ratio) and not no_speech:
            # a final that loops is tried again, warmer, and if every temperature loops the likeliest
            # is kept (never nothing: the VAD heard speech). Uploads also retry a guess (a low average
            # log-probability); a live final's sampled words are often few, after the forced ones, and
            # such retries (5 chains of 5 on each of three bench slices, each a 30 s encoding) never
            # changed a word: greedy was the likeliest. A commit decode that looks like a loop or a
            # guess commits nothing and is not retried: its retries (11% of the voices slice's model
            # time) were measured to change no committed word on any bench slice
            self.attempts.append((result, job.temperature, ratio))
            if job.fallback + 1 < len(FALLBACK_TEMPERATURES):
                self.retry = self._job(self.buffer_start + job.end, job.kind, job.fallback + 1)
                return []
            result = best_attempt(self.attempts)[0]
        self.attempts = []
        words = [] if no_speech else words_of(self.vocab, result, len(job.audio))
        if job.kind == PARTIAL:  # shown, never committed
            utterance_words = self.num_committed_words - (self.history[-1][2] if self.history else 0)
            self.previous = [w.text for w in words[utterance_words:]]
            self.partial = " ".join(w.strip() for w in self.previous)
            guess = self._rebased(result.tokens[len(job.forced) - job.provisional :], -job.skip)
            self.provisional = 0 if self.early_commits else self._settled(self.guess, guess)
            self.guess = guess
            return []
        fresh = words[self.num_committed_words :]
        logprobs = self._token_logprobs(len(job.forced), result, fresh)
        if job.kind == COMMIT:
            horizon = len(job.audio) / SAMPLE_RATE - GUARD_S
            settled = len(job.audio) / SAMPLE_RATE - SETTLE_S
            num_settled = sum(w.end_s <= settled for w in fresh)
            stable = agreed_prefix(self.previous, [w.text for w in fresh], num_settled) if not unreliable else 0
            floor = math.log(MIN_WORD_PROB)  # and whose every token the model was sure of, or that has settled
            sure = next((i for i, pairs in enumerate(logprobs)
                         if min((lp for _, lp in pairs), default=0.0) < floor and fresh[i].end_s > settled), len(fresh))
            stable = min(stable, sure)
            while stable and fresh[stable - 1].end_s > horizon:
                stable -= 1
            commit = fresh[:stable]
            self.previous = [w.text for w in fresh[stable:]]
        elif job.kind == FORCED:
            horizon = len(job.audio) / SAMPLE_RATE - GUARD_S
            commit = list(itertools.takewhile(lambda w: w.end_s <= horizon, fresh)) or fresh
            self.previous = []
        else:
            commit, self.previous = fresh, []
        new_tokens = result.tokens[len(job.forced) :]
        cut = token_cut(self.vocab, new_tokens, len(commit))
        while job.kind != FINAL and cut and new_tokens[cut - 1] >= self.vocab.timestamp_begin:
            cut -= 1  # a timestamp after the words committed is the decode's guess at where they end, at
            # times seconds past it, over words it skipped: forced, it would tell later decodes that they were heard
        self.committed = list(job.forced) + new_tokens[:cut]
        self.guess, self.provisional = (new_tokens[cut:] if job.kind == COMMIT else []), 0
        self.num_committed_words += len(commit)
        self.partial = " ".join(w.strip() for w in self.previous)
        offset_s = self.buffer_start / SAMPLE_RATE
        timed = [TimedWord(w.text.strip(), float(offset_s + w.start_s), float(offset_s + w.end_s), pairs)
                 for w, pairs in zip(commit, logprobs)]  # commit is a prefix of fresh
        timed = self._without_echo(timed)
        if job.kind == FINAL and words and 0 < words[-1].end_s < len(job.audio) / SAMPLE_RATE - CONTINUE_S:
            # the final stopped well before the utterance's end (Whisper ends a window early at times,
            # or writes nothing after the words it was forced to): go on from its last word, as an
            # upload seeks on from its last timestamp
            end = self.buffer_start + job.end
            self._close_window(round(words[-1].end_s * SAMPLE_RATE))
            self.retry = self._job(end, FINAL)
        elif job.kind == FINAL:
            self.history.append((self._on_grid(job.end), len(self.committed), self.num_committed_words))
            self._keep_history(HISTORY_S)
        elif job.kind == FORCED:
            self._cut_long(job, commit[-1].end_s if commit else len(job.audio) / SAMPLE_RATE)
        return [w for w in timed if w.text]

    def _settled(self, before: list[int], tokens: list[int]) -> int:
        """Leading tokens of a partial's (buffer times) that the partial before wrote too, less their last
        PROVISIONAL_HOLDBACK words and any timestamp after them (its guess at where they end)."""
        same = next((i for i, (a, b) in enumerate(zip(before, tokens)) if a != b), min(len(before), len(tokens)))
        whole = same == len(tokens) or tokens[same] >= self.vocab.eot or self.vocab.decode(tokens[same : same + 1]).startswith(" ")
        num_words = len(split_word_tokens(self.vocab, tokens[:same])) - (not whole)  # a word cut short is none
        keep = token_cut(self.vocab, tokens, max(0, num_words - PROVISIONAL_HOLDBACK))
        while keep and tokens[keep - 1] >= self.vocab.timestamp_begin:
            keep -= 1
        return keep

    def _cut_long(self, job: LiveJob, last_end_s: float) -> None:
        """Start a long utterance's window afresh: where the model's last segment in its second half
        ended (the committed words after it stay forced in the new window), as an upload seeks on from
        its last timestamp; else right after the last word committed (never halfway into the next word:
        a window that begins inside a word drops it)."""
        begin, tokens = self.vocab.timestamp_begin, self.committed
        ends = [i for i in range(len(tokens) - 1) if tokens[i] >= begin and tokens[i + 1] >= begin
                and (tokens[i] - begin) * TIMESTAMP_S >= MAX_WINDOW_S / 2]
        self.history = []
        if not ends:
            self._close_window(min(job.end, round(last_end_s * SAMPLE_RATE)))
            return
        i = ends[-1]
        num_words = len(split_word_tokens(self.vocab, tokens[: i + 1], boundary=min(i + 1, len(job.forced))))
        self._forget((round((tokens[i] - begin) * TIMESTAMP_S * SAMPLE_RATE), i + 1, num_words))
        self.next_partial = self.buffer_start + self.chunk_samples

    def _without_echo(self, words: list[TimedWord]) -> list[TimedWord]:
        """Drop a leading word that repeats the last one sent over the same stretch of audio: a decode
        forced up to a word sometimes writes it again (a word said twice is heard at two times)."""
        while words and self.last_sent is not None and word_key(words[0].text) == word_key(self.last_sent.text) \
                and words[0].start_s < self.last_sent.end_s:
            words = words[1:]
        if words:
            self.last_sent = words[-1]
        return words

    def _token_logprobs(self, num_forced: int, result: WindowResult, fresh: list[Word]) -> list[list[tuple[str, float]]]:
        """Each fresh word's tokens with their log probabilities (found in order after the forced ones)."""
        logprob = dict(zip(range(num_forced, len(result.tokens)), result.logprobs))
        position = num_forced
        per_word = []
        for word in fresh:
            pairs = []
            for token in word.tokens:
                while position < len(result.tokens) and result.tokens[position] != token:
                    position += 1
                pairs.append((self.vocab.decode([token]), logprob.get(position, 0.0)))
                position += 1
            per_word.append(pairs)
        return per_word

    def _keep_history(self, keep_s: float) -> None:
        """Keep the latest whole utterances that fit in keep_s seconds; the rest become the prompt."""
        end = self.history[-1][0] if self.history else 0
        drop = 0
        while drop < len(self.history) and end - (self.history[drop - 1][0] if drop else 0) > keep_s * SAMPLE_RATE:
            drop += 1
        self._drop_history(drop)

    def _drop_history(self, drop: int) -> None:
        """Forget the first `drop` earlier utterances (their text joins the prompt)."""
        if drop:
            self._forget(self.history[drop - 1])
            base = self.history[drop - 1]
            self.history = [(e - base[0], t - base[1], w - base[2]) for e, t, w in self.history[drop:]]

    def _forget(self, upto: tuple[int, int, int]) -> None:
        """Move the buffer's start to the end of an earlier utterance: its tokens join the prompt, and the
        timestamps of the tokens kept are moved back by as much."""
        end, num_tokens, num_words = upto
        self.context += self.committed[:num_tokens]
        self.committed = self._rebased(self.committed[num_tokens:], end)
        self.guess = self._rebased(self.guess, end)
        self.num_committed_words -= num_words
        self._cut(end)

    def _close_window(self, end: int) -> None:
        """Everything committed up to buffer sample `end` becomes the prompt; the buffer starts there."""
        self.context += self.committed
        self.committed, self.num_committed_words, self.history, self.guess = [], 0, [], []
        self.provisional = 0
        self._cut(self._on_grid(end))
        if self.tracker.in_speech:  # a forced cut inside an utterance: partials go on from here
            self.next_partial = self.buffer_start + self.chunk_samples
