"""The live policy on the real tiny.en: voice activity, word timings, and streamed text as accurate as
the same audio uploaded, for several kinds of speech, sent at file speed and at the pace of speech."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

from sasr.engine import TranscriptionRequest
from sasr.protocol import TranscriptDelta
from tests.support.live import replay_stream
from tests.support.speech import ALSA_SOUNDS, ALSA_TEXTS, HARVARD, concat, read16k, speak
from tests.support.wer import longest_runs, normalize, wer

# Sentences the engine's other tests do not use, read by other voices than theirs.
EVERYDAY = [
    "Please call Stella and ask her to bring these things with her from the store.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.",
    "The rainbow is a division of white light into many beautiful colors.",
    "People look, but no one ever finds it.",
    "On Monday morning the meeting starts at nine thirty, so please arrive early.",
    "Could you tell me where the nearest library is?",
    "After dinner we walked along the beach and watched the sun go down.",
]
VOICES = [("en-us", 165), ("en+f3", 150), ("en-gb-x-rp", 175), ("en+m3", 140)]
# Streamed final WER may exceed the upload's by at most this, per slice. Measured on these files:
# +0.00 short, +0.04 (file speed) / +0.04-0.05 (pace of speech) long, +0.00 real; the 0.03
# goal is measured by make bench-stream over its larger corpus, and is not met on every slice yet.
GAP_MAX = 0.06


def passage(directory, sentences: list[str], voice: str, speed: int, seed: int) -> np.ndarray:
    """Sentences read one after another with natural pauses (0.2 - 1.5 s, seeded)."""
    rng = random.Random(seed)
    parts = []
    for i, text in enumerate(sentences):
        parts.append(read16k(speak(text, directory / f"{voice}-{speed}-{seed}-{i}.wav", voice=voice, speed=speed)))
        parts.append(np.zeros(int(rng.uniform(0.2, 1.5) * 16000), np.float32))
    return np.concatenate(parts)


def alsa_phrases() -> tuple[np.ndarray, str]:
    """The recorded human phrases alsa-utils ships, with pauses between them."""
    parts = []
    for name in ALSA_TEXTS:
        audio, rate = sf.read(ALSA_SOUNDS / name, dtype="float32")
        parts += [soxr.resample(audio if audio.ndim == 1 else audio.mean(1), rate, 16000).astype(np.float32),
                  np.zeros(12800, np.float32)]
    return np.concatenate(parts), " ".join(ALSA_TEXTS.values())


@pytest.fixture(scope="module")
def slices(tmp_path_factory) -> dict[str, list[tuple[np.ndarray, str]]]:
    d = tmp_path_factory.mktemp("live")
    short = [(passage(d, [text], *VOICES[i % 4], seed=i), text) for i, text in enumerate(EVERYDAY[:6])]
    long = [(passage(d, EVERYDAY + HARVARD[10:18], "en+f3", 150, seed=7), " ".join(EVERYDAY + HARVARD[10:18])),
            (passage(d, HARVARD[18:30], "en-us", 170, seed=8), " ".join(HARVARD[18:30]))]
    return {"short": short, "long": long, "real": [alsa_phrases()]}


async def finals(engine, items, pace: str) -> list[str]:
    outs = await asyncio.gather(*(replay_stream(engine, audio, pace) for audio, _ in items))
    return [events[-1].text for events in outs]


def mean_wer(items, hypotheses) -> float:
    return float(np.mean([wer(text, h) for (_, text), h in zip(items, hypotheses)]))


@pytest.mark.parametrize("pace", ["file", "live"])
async def test_streamed_text_as_accurate_as_upload(engine, slices, pace):
    for name, items in slices.items():
        uploads = await asyncio.gather(*(engine.transcribe(TranscriptionRequest(a)) for a, _ in items))
        upload_wer = mean_wer(items, [u.text for u in uploads])
        streamed = await finals(engine, items, pace)
        assert all(streamed), (name, streamed)
        assert mean_wer(items, streamed) <= upload_wer + GAP_MAX, (name, streamed, [u.text for u in uploads])


async def test_a_file_sender_gets_its_uploads_text_and_word_times(engine, slices):
    """A client sending faster than speech waits for no word: its audio is transcribed window by
    window as its upload is (the same 30 s windows, seeks and prompts, windows the VAD heard no one in
    skipped), so the streamed text and every word's times are the upload's."""
    for audio, _ in slices["long"] + slices["real"]:
        request = TranscriptionRequest(audio, word_timestamps=True)
        upload = await engine.transcribe(request)
        events = await replay_stream(engine, audio, "file")
        deltas = [e for e in events if isinstance(e, TranscriptDelta)]
        assert events[-1].text == " ".join(upload.text.split())
        assert [(d.delta.strip(), d.start_ms, d.end_ms) for d in deltas] == \
            [(w.word, round(w.start * 1000), round(w.end * 1000)) for w in request.words]


async def test_alone_equals_batched(engine, slices):
    items = slices["short"] + slices["real"]
    alone = [(await finals(engine, [item], "live"))[0] for item in items]
    assert await finals(engine, items, "live") == alone


async def test_a_live_decode_writes_no_more_tokens_than_its_audio_can_hold(engine, slices, monkeypatch):
    """A decode that loops stops at MAX_TOKENS_PER_S a second of its window (+10), not at 224 tokens:
    on the bench corpus 4 partials of 199 ran to 224 and wrote a third of all partial tokens."""
    from sasr.models.whisper import live

    decodes = []
    run_window = engine.run_window

    async def recorded(job):
        result = await run_window(job)
        decodes.append((job, len(result.tokens) - len(job.forced)))
        return result

    monkeypatch.setattr(engine, "run_window", recorded)
    await finals(engine, slices["short"][:3] + slices["real"], "live")
    assert {job.kind for job, _ in decodes} >= {live.PARTIAL, live.COMMIT, live.FINAL}
    for job, written in decodes:
        cap = live.MAX_TOKENS_PER_S * len(job.audio) / 16000 + 11
        assert written <= job.max_new_tokens <= cap, (job.kind, written, job.max_new_tokens, len(job.audio))


async def test_with_commits_at_utterance_ends_a_partial_forces_what_two_before_it_wrote_alike(engine, slices, monkeypatch):
    """--live-commits final: nothing is committed while an utterance is spoken, so each partial decoded
    the whole utterance again. A partial now forces what the two partials before it wrote alike, but
    their last words: prefilled, never sampled or checked as a draft (each such token a vocabulary
    projection and the logit filters; voices slice alone, this CPU: partials' model time 49.9 -> 38 s),
    and the finals (which force none of it) the same text."""
    from sasr.engine import LiveOptions
    from sasr.models.whisper import live

    audio, text = slices["long"][0]
    partials = []
    run_window = engine.run_window

    async def recorded(job):
        result = await run_window(job)
        partials.extend([(job, len(result.tokens) - len(job.forced))] if job.kind == live.PARTIAL else [])
        return result

    async def replay():
        partials.clear()
        events = await replay_stream(engine, audio, "live", options=LiveOptions("final", 800))
        return events[-1].text, sum(n for _, n in partials)  # tokens sampled or checked

    monkeypatch.setattr(engine, "run_window", recorded)
    forcing, sampled = await replay()
    assert sum(job.provisional > 0 for job, _ in partials) > len(partials) / 3  # not an utterance's first two
    monkeypatch.setattr(live, "PROVISIONAL_HOLDBACK", 10**6)  # nothing forced, as before
    free, free_sampled = await replay()
    assert sampled < 0.85 * free_sampled, (sampled, free_sampled)  # measured 772 against 1074 (0.2-1.5 s pauses)
    assert wer(free, forcing) <= 0.02  # the same here; a draft can tip a near tie (a prefill rounds otherwise)


async def test_word_timings_are_where_the_words_were_spoken(engine, tmp_path):
    audio = passage(tmp_path, HARVARD[:3], "en-us", 160, seed=3)
    events = await replay_stream(engine, audio, "live")
    words = [e for e in events if isinstance(e, TranscriptDelta)]
    assert len(words) >= 15
    starts = [w.start_ms for w in words]
    assert starts == sorted(starts) and all(w.start_ms <= w.end_ms for w in words)
    assert words[-1].end_ms <= len(audio) / 16 and all(w.end_ms <= w.audio_ms for w in words)
    # each sentence's first word starts within half a second of where the voice starts
    voiced = np.flatnonzero(np.abs(audio) > 0.02) / 16  # ms
    onsets = [voiced[0]] + [b for a, b in zip(voiced, voiced[1:]) if b - a > 150]
    firsts = [w for w in words if w.delta.strip().lower().strip(".,") in ("the", "glue", "it's")]
    assert len(onsets) == 3 and len(firsts) >= 3
    for onset in onsets:
        assert min(abs(w.start_ms - onset) for w in firsts) < 500, (onset, [(w.delta, w.start_ms) for w in firsts])


def feeder(policy):
    """feed(seconds, speech probability): noise with that VAD probability to the policy; the jobs it asks for."""
    rng = np.random.default_rng(0)

    def feed(seconds: float, prob: float) -> list:
        num = round(seconds * 16000 / 512)
        policy.add_audio((0.1 * rng.standard_normal(num * 512)).astype(np.float32), np.full(num, prob))
        jobs = []
        while (job := policy.next_job()) is not None:
            jobs.append(job)
        return jobs

    return feed


def test_a_finals_window_is_made_ahead_while_its_endpoint_is_awaited(engine):
    """Once 0.3 s of silence follows speech (all of it a final hears), the policy makes the final its
    0.5 s endpoint would bring; speech that goes on makes it stale; the endpoint's final is that decode."""
    from sasr.models.whisper import live

    policy = engine.stream_policy("en", 1.0)
    feed = feeder(policy)
    feed(1.5, 0.9)
    feed(0.25, 0.0)
    assert policy.ahead is None  # not yet 0.3 s of silence
    feed(0.1, 0.0)
    ahead = policy.ahead
    assert ahead is not None and ahead.kind == live.FINAL
    assert ahead.end == policy.tracker.last_voiced + round(live.TAIL_S * 16000) - policy.buffer_start
    feed(0.5, 0.9)  # speech went on: a pause inside the utterance
    assert policy.ahead is None
    feed(0.35, 0.0)
    ahead = policy.ahead
    jobs = feed(0.2, 0.0)  # the endpoint: 0.5 s of silence
    assert [job.kind for job in jobs] == [live.FINAL] and jobs[0] is ahead  # the decode the session ran ahead
    assert policy.ahead is None


def test_finals_are_decoded_at_both_phases_where_asked(engine, monkeypatch):
    """FINALS_BOTH_PHASES (a lever, off: README session 22) has a final decoded at both phases of the
    encoder's stride, the likelier kept (tests/test_engine.py); partials and commit decodes at one."""
    from sasr.models.whisper import live

    for lever, phases in ((0, [False, False, False]), (1, [False, False, True])):
        monkeypatch.setattr(live, "FINALS_BOTH_PHASES", lever)
        policy = engine.stream_policy("en", 1.0)
        feed = feeder(policy)
        jobs = feed(2.5, 0.9) + feed(0.6, 0.0)
        assert [job.kind for job in jobs] == [live.PARTIAL, live.COMMIT, live.FINAL]
        assert [job.both_phases for job in jobs] == phases


async def test_every_window_starts_where_an_uploads_could(engine, slices, monkeypatch):
    """Whisper reads a window one mel frame later otherwise (its encoder's stride is two frames): each
    live window starts on the session clock's 20 ms grid, as an upload's windows do from the file's
    start, whatever the VAD frames (32 ms) its utterance starts and ends at."""
    from sasr.models.whisper import live

    jobs = []
    run_window = engine.run_window

    async def recorded(job):
        jobs.append(job)
        return await run_window(job)

    monkeypatch.setattr(engine, "run_window", recorded)
    await finals(engine, slices["short"][:2] + slices["real"], "live")
    assert {job.kind for job in jobs} >= {live.PARTIAL, live.COMMIT, live.FINAL}
    assert any(job.skip for job in jobs)  # partials after an earlier utterance, which hear their own
    assert [(job.seed + job.skip) % live.PHASE_SAMPLES for job in jobs] == [0] * len(jobs)


def test_with_a_longer_endpoint_the_final_is_made_ahead_nearer_it(engine):
    """An 800 ms endpoint: the final is made AHEAD_S (0.3 s) before it, at 0.5 s of silence, not at 0.3 s:
    every pause of 0.3-0.5 s inside an utterance (between sentences, often) ran a whole final for nothing
    (measured: 4 such sessions' events p50 1.04-1.20 -> 0.83-0.84 s, finals sooner too)."""
    from sasr.engine import LiveOptions
    from sasr.models.whisper import live

    policy = engine.stream_policy("en", 1.0, options=LiveOptions("final", 800))
    feed = feeder(policy)
    feed(1.5, 0.9)
    feed(0.45, 0.0)
    assert policy.ahead is None
    feed(0.1, 0.0)
    assert policy.ahead is not None and policy.ahead.kind == live.FINAL
    assert policy.ahead.end == policy.tracker.last_voiced + round(live.TAIL_S * 16000) - policy.buffer_start
    ahead = policy.ahead
    jobs = feed(0.3, 0.0)  # the endpoint: 0.8 s of silence
    assert [job.kind for job in jobs] == [live.FINAL] and jobs[0] is ahead and policy.ahead is None


def test_a_burst_too_short_to_be_an_utterance_leaves_no_decode_point(engine):
    """A click (voiced for less than MIN_SPEECH_S) ends no utterance and brings no final; the speech
    after it gets its first decode a chunk after it starts. The click's decode point used to stay set,
    so the speech's points came one a frame until they caught up (a click 2 s before: two at once)."""
    policy = engine.stream_policy("en", 1.0)
    probs = np.array([0.9] * 2 + [0.0] * 60 + [0.9] * 80)  # 64 ms, 1.9 s of silence, 2.6 s of speech
    policy.add_audio(np.zeros(len(probs) * 512, np.float32), probs)
    points = []
    while (job := policy.next_job()) is not None:
        points.append(policy.tracker.position)
    speech_start = 62 * 512
    assert len(points) == 2 and points[0] >= speech_start + 16000 and points[1] - points[0] > 16000 - 512, points  # (frames)


async def test_a_final_is_decoded_while_its_endpoint_is_awaited(engine, tmp_path, monkeypatch):
    """Live, on speech: finals are decoded while their endpoint is awaited (each decode run ahead is
    the final's, or dropped when speech went on), and the text is the text without running them ahead."""
    from sasr.live.session import Session
    from sasr.models.whisper import live

    said = [read16k(speak(text, tmp_path / f"{i}.wav", voice="en-us", speed=165)) for i, text in enumerate(EVERYDAY[:3])]
    silence = lambda s: np.zeros(round(s * 16000), np.float32)
    audio = np.concatenate([said[0], silence(0.4), said[1], silence(1.0), said[2], silence(1.0)])
    monkeypatch.setattr(live.StreamingPolicy, "_look_ahead", lambda policy, position: None)
    plain = (await replay_stream(engine, audio, "live"))[-1].text  # each final decoded once its endpoint came
    monkeypatch.undo()

    made, dropped, used = [], [], []
    look_ahead, drop_ahead, update = live.StreamingPolicy._look_ahead, Session._drop_ahead, live.StreamingPolicy.update

    def looked(policy, position):
        look_ahead(policy, position)
        if policy.ahead is not None and not any(policy.ahead is job for job in made):
            made.append(policy.ahead)

    def drop(session):
        if session.ahead is not None:
            dropped.append(session.ahead[0])
        drop_ahead(session)

    def updated(policy, job, result, final=False):
        if job.kind == live.FINAL:
            used.append(job)
        return update(policy, job, result, final)

    monkeypatch.setattr(live.StreamingPolicy, "_look_ahead", looked)
    monkeypatch.setattr(Session, "_drop_ahead", drop)
    monkeypatch.setattr(live.StreamingPolicy, "update", updated)
    events = await replay_stream(engine, audio, "live")
    assert events[-1].text == plain
    taken = [job for job in made if any(job is final for final in used)]
    assert len(taken) >= 2  # each utterance's final (a pause under 0.5 s is inside one)
    assert sorted(map(id, made)) == sorted(map(id, taken + dropped))  # every decode run ahead: used or dropped


async def test_silence_and_noise_cost_no_decode_and_give_no_words(engine):
    rng = np.random.default_rng(0)

    def decodes() -> float:
        kinds = ("partial", "commit", "final", "forced", "window")
        return sum(engine.metrics.value("sasr_live_decodes_total", kind=k) for k in kinds)

    before = decodes()
    for audio in (np.zeros(16000 * 120, np.float32), (0.01 * rng.standard_normal(16000 * 30)).astype(np.float32)):
        events = await replay_stream(engine, audio, "file")
        assert events[-1].text == "" and not any(isinstance(e, TranscriptDelta) for e in events)
    assert decodes() == before  # the VAD heard no speech: the model never ran


@pytest.mark.parametrize("pace", ["file", "live"])
async def test_a_five_minute_recording_keeps_every_sentence(engine, tmp_path, pace):
    """Five minutes, sent as fast as the session takes it or at the pace of speech (every decode point
    met: partials, commits, forced cuts of long utterances): every sentence reaches the final text."""
    rounds = [passage(tmp_path, HARVARD, voice, speed, seed=i) for i, (voice, speed) in enumerate(VOICES[:3])]
    audio = np.concatenate(rounds)[: 16000 * 300]
    text = " ".join(HARVARD * 3)
    upload = await engine.transcribe(TranscriptionRequest(audio))
    final = (await replay_stream(engine, audio, pace))[-1].text
    streamed, uploaded = normalize(final), normalize(upload.text)
    assert len(streamed) >= 0.95 * len(uploaded), (len(streamed), len(uploaded))
    assert wer(text, final) <= wer(text, upload.text) + GAP_MAX


def test_a_settled_word_worded_otherwise_holds_back_no_words_after_it():
    """LocalAgreement between two decodes, word by word: a word the two word differently ends the
    agreement, unless it has settled and the two words after it agree (then the later decode's wording
    counts); a word not yet settled, or with fewer agreeing words after it, still ends it."""
    from sasr.live.commit import agreed_prefix

    before = " It all will bring across the river once closed".split()
    after = " It all will bridge across the river was closed".split()
    assert agreed_prefix(before, after) == 3  # nothing settled: plain agreement
    assert agreed_prefix(before, after, settled=5) == 7  # "bridge" settled, "across the" agree; "was" not settled
    assert agreed_prefix(before, after, settled=9) == 7  # "was" settled, but one word after it is not enough
    assert agreed_prefix(before, after[:5], settled=9) == 3
    assert agreed_prefix("a b c d".split(), "a x y d".split(), settled=4) == 1  # two in a row differ
    assert agreed_prefix([" Well,", " There's"], [" well", " there's"]) == 2  # case and punctuation aside


def test_a_final_is_tried_again_where_it_loops_not_where_it_is_unsure(engine):
    """An utterance's final that loops is decoded again, warmer; one whose few words the model was
    unsure of (a low average log-probability, which uploads also retry) commits them at once: such
    retries changed no word on the bench corpus and each cost a 30 s encoding."""
    from sasr.models.whisper.decode import WindowResult
    from sasr.models.whisper.live import FINAL, StreamingPolicy

    def final_of(policy: StreamingPolicy):
        policy.add_audio(np.full(3 * 16000, 0.01, np.float32), np.full(3 * 16000 // 512, 0.9))
        while (job := policy.next_job(final=True)).kind != FINAL:
            pass  # the utterance's partials and commit decodes (not run)
        assert job.fallback == 0
        return job

    vocab = engine.vocab
    unsure = engine.stream_policy(None, 1.0)
    tokens = vocab.encode(" The old bridge across the river.")
    words = unsure.update(final_of(unsure), WindowResult(tokens, sum_logprob=-2.0 * (len(tokens) + 1),
                                                         no_speech_prob=0.01))
    assert [w.text for w in words] == ["The", "old", "bridge", "across", "the", "river."] and unsure.retry is None

    looping = engine.stream_policy(None, 1.0)
    tokens = vocab.encode(" the river" * 30)
    assert looping.update(final_of(looping), WindowResult(tokens, sum_logprob=-0.1, no_speech_prob=0.01)) == []
    assert looping.retry is not None and looping.retry.kind == FINAL and looping.retry.temperature > 0


def test_vad_equals_the_package_model(speech_dir):
    """sasr's plain-torch Silero VAD gives the package's own TorchScript model's probabilities."""
    from sasr.audio.vad import VADStream

    threads = torch.get_num_threads()
    from silero_vad import load_silero_vad  # sets torch's thread count on import

    torch.set_num_threads(threads)
    reference = load_silero_vad()
    audio = np.concatenate([read16k(speech_dir / f"h{i}.wav") for i in range(3)] + [np.zeros(8000, np.float32)])
    expected = [float(reference(torch.from_numpy(audio[i : i + 512]), 16000)) for i in range(0, len(audio) - 511, 512)]
    stream, cuts = VADStream(), [0, 1000, 1001, 7000, 20000, len(audio)]
    got = np.concatenate([stream.speech_probs(audio[a:b]) for a, b in zip(cuts, cuts[1:])])  # any frame size
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert max(expected) > 0.9 and min(expected) < 0.1


@pytest.fixture(scope="module")
def default_engine(cache_dir):
    """The engine as `sasr serve` runs it here (int8 encoder and bf16 projection where the CPU has them)."""
    from sasr.models.whisper.engine import WhisperEngine
    from sasr.models.whisper.load import load_whisper

    eng = WhisperEngine(load_whisper(None), max_num_seqs=8)
    yield eng
    eng.close()


async def test_long_utterances_lose_no_words_where_they_are_cut(default_engine, speech_dir, monkeypatch):
    """A speaker whose pauses (0.4 s) are all shorter than the endpoint (set to 0.8 s here) talks for
    90 s at the pace of speech: each utterance runs past MAX_WINDOW_S and is cut by forced decodes, and
    the last one's final hears 12 s after words committed while it was spoken. Found on this file:
    a cut inside the word after the last one committed dropped that word, a commit decode's closing
    timestamp seconds past its words (over words it skipped) told the final that audio was heard, and
    that final then wrote nothing more (15 words lost). No stretch of more than 3 words may be lost or
    doubled against the upload (the server's default engine: these words were lost with its int8
    encoder; the fp32 one decodes this file otherwise)."""
    from sasr.models.whisper import live

    monkeypatch.setattr(live, "ENDPOINT_S", 0.8)
    audio = concat([read16k(speech_dir / f"h{i}.wav") for i in range(len(HARVARD))], gap_s=0.4)
    upload = (await default_engine.transcribe(TranscriptionRequest(audio))).text
    final = (await replay_stream(default_engine, audio, "live"))[-1].text
    missing, doubled = longest_runs(upload, final)
    assert missing <= 3 and doubled <= 3, (missing, doubled, final)


async def test_a_commit_sent_while_a_clear_waits_is_not_lost(engine, speech_dir):
    """A clear comes while the VAD still looks at the audio it clears, and new audio and a commit come
    before the VAD answers (a quick client on a busy server; the VAD's one thread is held busy here to
    make that order certain): the commit's turn closes with the new audio's words only. The session
    once lost the clear's place, never reached the commit and looped without yielding: the whole
    server hung. A SIGALRM ends the test should the loop spin again."""
    import signal
    import time

    from sasr.live.session import Listener, Session

    class Turns(Listener):
        def __init__(self) -> None:
            self.said, self.closed, self.clears = [], asyncio.Event(), 0

        async def words(self, words, audio_ms) -> None:
            self.said += [w.text for w in words]

        async def turn_closed(self, duration_ms) -> None:
            self.closed.set()

        async def cleared(self) -> None:
            self.clears += 1

    def pcm16(audio) -> bytes:
        return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()

    def spun(*_):
        raise TimeoutError("the session loop never yielded")

    listener = Turns()
    session = Session(engine, listener, "pcm16_16k_mono", language="en")
    held = engine.vad_thread.submit(time.sleep, 1.0)
    previous = signal.signal(signal.SIGALRM, spun)
    signal.alarm(90)
    try:
        session.feed(pcm16(read16k(speech_dir / "h0.wav")))
        await asyncio.sleep(0.2)  # the session has sent that audio to the (busy) VAD
        assert not held.done()
        session.clear()
        session.feed(pcm16(read16k(speech_dir / "h5.wav")))
        session.commit()
        await asyncio.wait_for(listener.closed.wait(), 60)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        session.cancel()
    assert listener.clears == 1
    assert wer(HARVARD[5], " ".join(listener.said)) < 0.5, listener.said  # h5's words, none of h0's
    assert not set(normalize(" ".join(listener.said))) & {"birch", "canoe", "slid", "planks"}, listener.said
