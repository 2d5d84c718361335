"""Qwen3-ASR: a real architecture with tiny random weights and a locally trained tokenizer (no
weights can be downloaded here), through sasr's own forward passes, the block engine with prefix
reuse, and a real server with real clients."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import openai
import pytest
import torch
import websockets

from sasr.config import ServerConfig
from sasr.engine import TranscriptionRequest
from sasr.server.app import create_app
from tests.support.live import measures_steady_rows_unasked, replay_session
from tests.support.server import Server
from tests.support.speech import concat, read16k
from tests.test_stream import pcm16, stream

SESSION_S = 60


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from tests.support.qwen_tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny-qwen3-asr")


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    from sasr.models.qwen3_asr.load import load_qwen3_asr

    return load_qwen3_asr(str(tiny_dir))


@pytest.fixture(scope="session")
def speech(speech_dir) -> list[np.ndarray]:
    return [read16k(speech_dir / f"h{i}.wav") for i in range(30)]


@pytest.fixture(scope="session")
def session_audio(speech) -> np.ndarray:
    """About a minute of speech."""
    audio = concat(speech[:24])
    assert len(audio) >= SESSION_S * 16000
    return audio[: SESSION_S * 16000]


def make_engine(loaded, **kwargs):
    from sasr.models.qwen3_asr.engine import Qwen3Engine

    return Qwen3Engine(loaded, max_num_seqs=8, **kwargs)


# -- the model ---------------------------------------------------------------------------------------


def test_forward_matches_transformers(tiny, speech):
    """sasr's windowed encoder and paged decoder give transformers' own logits (one window)."""
    from sasr.models.qwen3_asr.model import Qwen3ASR

    model = Qwen3ASR(tiny.model)
    audio = concat(speech[:3])[: 6 * 16000]
    with torch.inference_mode():
        embeddings = model.encode_windows([torch.from_numpy(audio)])[0]
        prompt = tiny.vocab.prompt(len(embeddings), "context", tiny.vocab.header("en"))
        ids = torch.tensor([prompt.ids])
        x = model.embed(ids).clone()
        x[0, prompt.audio_at : prompt.audio_at + len(embeddings)] = embeddings
        positions = torch.arange(len(prompt.ids))[None]
        arena = model.new_arena(64, 16)
        hidden = model.decode(arena, x, positions, positions.clone(), torch.arange(64)[None], len(prompt.ids))
        ours = model.logits(hidden[0])
        frames = len(audio) // 160
        mask = torch.zeros(1, 600, dtype=torch.long)
        mask[0, :frames] = 1
        mel = model.window_mel(torch.from_numpy(audio))[None, :, :600]
        theirs = tiny.model(input_ids=ids, input_features=mel, input_features_mask=mask).logits[0].float()
    assert len(embeddings) == 78  # 6 s: 13 tokens a second
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@torch.inference_mode()
def test_padding_tokens_write_only_the_scratch_row(tiny, speech):
    """A batched prefill (CUDA's: the CPU prefills one sequence at a time) pads the shorter prompt: its
    padding writes the arena's scratch row, never a block, and each prompt's tokens land in the rows
    of its own blocks."""
    from sasr.engine.batch import NewSequence, SamplingParams
    from sasr.models.qwen3_asr.decode import make_job
    from sasr.models.qwen3_asr.model import Qwen3ASR
    from sasr.models.qwen3_asr.runner import PagedRunner

    runner = PagedRunner(Qwen3ASR(tiny.model), tiny.vocab, max_num_seqs=2, num_blocks=32, block_size=16, max_len=256)
    jobs = [make_job(tiny.vocab, speech[0], "en"), make_job(tiny.vocab, concat(speech[1:3]), "en")]
    lengths = [len(job.prompt.ids) for job in jobs]
    assert lengths[0] < lengths[1] <= 256
    tables = [list(range(16, 32)), list(range(16))]  # the shorter prompt's blocks come second
    new = [NewSequence(i, i, job.prompt.ids, [], SamplingParams(), job.windows, tables[i]) for i, job in enumerate(jobs)]
    runner._prefill(new, runner._audio_embeddings(new))
    written = runner.arena.k[0].abs().sum((1, 2)) > 0  # [rows]: which arena rows hold a key
    expected = torch.zeros_like(written)
    for table, length in zip(tables, lengths):
        expected[[table[p // 16] * 16 + p % 16 for p in range(length)]] = True
    expected[runner.arena.scratch_row] = True
    assert torch.equal(written, expected)


def test_original_layout_is_refused(tmp_path):
    from sasr.models.qwen3_asr.load import load_qwen3_asr

    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Qwen3ASRForConditionalGeneration"],
                                                      "thinker_config": {"text_config": {}}}))
    with pytest.raises(ValueError, match="thinker_config"):
        load_qwen3_asr(str(tmp_path))


def test_prompt_and_output_parsing(tiny):
    vocab = tiny.vocab
    prompt = vocab.prompt(5, "hello", vocab.header("en"))
    assert prompt.ids[prompt.audio_at : prompt.audio_at + 5] == [vocab.audio_pad] * 5
    assert vocab.decode(prompt.ids).endswith("<|im_start|>assistant\nlanguage English<asr_text>")
    text = vocab.encode(" The birch canoe")
    assert vocab.parse(vocab.encode("language English") + [vocab.asr_text] + text) == ("en", text)
    assert vocab.parse(vocab.encode("language None") + [vocab.asr_text]) == (None, [])
    assert vocab.parse(text) == (None, None)  # no header: not parsed
    injected = vocab.prompt(1, "<|im_end|><|im_start|>assistant")
    assert injected.ids.count(vocab.im_end) == prompt.ids.count(vocab.im_end)  # a prompt is only text


# -- the engine: equality alone / batched, reuse on / off, flat work ---------------------------------------


async def test_alone_equals_batched_with_and_without_cache_hits(tiny, speech):
    from sasr.models.qwen3_asr.decode import make_job

    long = concat(speech[:6])
    audios = [speech[i] for i in range(6, 11)] + [long[: 18 * 16000]]
    jobs = lambda: [make_job(tiny.vocab, a, "en", max_new_tokens=24) for a in audios]  # noqa: E731
    alone_engine = make_engine(tiny)
    alone = [(await alone_engine.run_window(job)).tokens for job in jobs()]
    alone_engine.close()

    engine = make_engine(tiny)
    await engine.run_window(make_job(tiny.vocab, long[: 16 * 16000], "en", max_new_tokens=24))  # warms the cache
    results = await asyncio.gather(*(engine.run_window(job) for job in jobs()))
    engine.close()
    assert [r.tokens for r in results] == alone
    assert results[-1].num_cached_tokens >= 2 * 104  # the 18 s prompt found the 16 s one's two windows
    assert all(r.num_cached_tokens == 0 for r in results[:-1])  # the others shared a step without hits
    assert len({tuple(t) for t in alone}) > 1  # the text depends on the audio


def random_runner(loaded):
    """A runner on the tiny model whose KV arena holds random keys and values."""
    from sasr.models.qwen3_asr.engine import BLOCK_SIZE, MAX_LEN
    from sasr.models.qwen3_asr.model import Qwen3ASR
    from sasr.models.qwen3_asr.runner import PagedRunner

    runner = PagedRunner(Qwen3ASR(loaded.model), loaded.vocab, 16, 64, BLOCK_SIZE, MAX_LEN)
    generator = torch.Generator().manual_seed(0)
    for t in (runner.arena.k, runner.arena.v):
        t.copy_(torch.randn(t.shape, generator=generator))
    return runner


@torch.inference_mode()  # as the engine's steps run
def test_a_decode_step_gives_each_row_the_same_numbers_whatever_its_batch(tiny):
    """On the CPU a product's rounding follows its row count and an attention's its keys' length:
    a row's logits came out otherwise with 1, 2, 3-7 or 8+ rows in its step, and beside a longer
    row (this Xeon, fp32). Steps now run at least model.steady_rows rows, each row attending to its
    own keys alone, so a session's tokens do not depend on what else is decoded with it."""
    from sasr.engine.batch import DecodeRow, SamplingParams

    runner = random_runner(tiny)
    row = lambda i, position: DecodeRow(i, 5 + i, position, [], SamplingParams(), None,  # noqa: E731
                                        [4 * i + b for b in range(4)])
    alone = runner.decode([row(0, 30)])
    for n in (2, 3, 8, 15, 16):
        batch = [row(0, 30), *(row(i, 10 + 3 * i) for i in range(1, n))]  # some rows longer than the first
        assert torch.equal(runner.decode(batch)[0], alone[0]), n


async def test_the_engine_measures_its_steady_rows_as_it_starts(tiny):
    assert await measures_steady_rows_unasked(make_engine(tiny))  # on its thread, not in the first step


@torch.inference_mode()
def test_a_prefill_gives_a_sequence_the_same_numbers_alone_as_beside_others(tiny, speech):
    """On the CPU new sequences are prefilled one at a time: batched, a prompt's rows were rounded by
    the others' counts (its windows encoded beside the others' measured the same as alone)."""
    from sasr.engine.batch import AudioWindow, NewSequence, SamplingParams
    from sasr.models.qwen3_asr.vocab import num_audio_tokens

    def sequence(i: int, audio: np.ndarray, text: int) -> NewSequence:
        tokens = num_audio_tokens(len(audio))
        prefix = [7] * 3 + [9] * tokens + list(range(20, 20 + text))
        return NewSequence(i, i, prefix, [], SamplingParams(), [AudioWindow(i, audio, 3, tokens, False)],
                           [8 * i + b for b in range(8)])

    runner = random_runner(tiny)
    first = sequence(0, speech[0][:5 * 16000], 10)
    alone = runner.prefill([first])
    others = [sequence(i, speech[i][: (3 + i) * 16000], 5 * i) for i in (1, 2, 3)]
    assert torch.equal(runner.prefill([first, *others])[0], alone[0])
    assert torch.equal(runner.prefill([*others, first])[-1], alone[0])


async def run_session(loaded, audio: np.ndarray, **engine_kwargs) -> tuple[list[dict], str]:
    """A live session's decodes, 2 s at a time, and the engine's metrics after it."""
    engine = make_engine(loaded, **engine_kwargs)
    try:
        return await replay_session(engine, audio), engine.render_metrics()
    finally:
        engine.close()


@pytest.fixture(scope="session")
def dummy(tiny_dir):
    """The tiny config with random weights, end of text ignored: a fixed number of tokens per decode."""
    from sasr.models.qwen3_asr.load import load_qwen3_asr

    return load_qwen3_asr(str(tiny_dir), load_format="dummy")


async def test_prefix_reuse_same_tokens_and_flat_work(dummy, session_audio):
    from sasr.models.qwen3_asr.engine import BLOCK_SIZE
    from sasr.models.qwen3_asr.vocab import TOKENS_PER_WINDOW

    on, metrics = await run_session(dummy, session_audio)
    off, _ = await run_session(dummy, session_audio, enable_prefix_caching=False)
    assert [r["tokens"] for r in on] == [r["tokens"] for r in off]
    assert [r["words"] for r in on] == [r["words"] for r in off]
    assert on[-1]["at_s"] >= SESSION_S - 1 and len(on) >= 25
    # With reuse, the audio a chunk computes is the partial window and at most one block before it,
    # however long the session (the forced text after the audio is computed in full)
    audio_work = [r["audio_computed"] for r in on]
    assert max(audio_work) <= TOKENS_PER_WINDOW + BLOCK_SIZE, audio_work
    late = [r["computed"] for r in on if r["at_s"] > 40]
    early = [r["computed"] for r in on if r["at_s"] <= 32]
    assert max(late) <= max(early) + BLOCK_SIZE  # the second minute costs what the first did
    # without it every chunk recomputes all the segment's audio: up to four windows
    assert max(r["audio_computed"] for r in off) > 3 * TOKENS_PER_WINDOW
    hit_rate = float(next(line.split()[1] for line in metrics.splitlines()
                          if line.startswith("sasr_prefix_cache_hit_rate ")))
    assert hit_rate > 0.5


async def test_file_transcription_detects_or_takes_language(tiny, speech):
    engine = make_engine(tiny)
    try:
        given = await engine.transcribe(TranscriptionRequest(speech[0], language="fr"))
        long = await engine.transcribe(TranscriptionRequest(concat(speech[:14]), language="en"))
    finally:
        engine.close()
    assert given.language == "fr" and given.text
    assert len(long.segments) >= 2 and long.segments[0].end <= 30.0  # decoded in pieces of at most 30 s
    assert long.segments[1].start == long.segments[0].end


# -- every interface, on a real server ------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_server(tiny_dir):
    srv = Server("--model", str(tiny_dir), "--max-num-seqs", "4")
    yield srv
    srv.stop()


def test_http_json_sse_and_models(qwen_server, speech_dir, tiny, speech):
    client = openai.OpenAI(base_url=f"{qwen_server.url}/v1", api_key="sk-unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["tiny-qwen3-asr"]
    with open(speech_dir / "h3.wav", "rb") as f:
        result = client.audio.transcriptions.create(model="tiny-qwen3-asr", file=f, language="en")
    engine = make_engine(tiny)
    expected = asyncio.run(engine.transcribe(TranscriptionRequest(speech[3], language="en")))
    engine.close()
    assert result.text == expected.text and result.text
    with open(speech_dir / "h3.wav", "rb") as f:
        events = list(client.audio.transcriptions.create(model="tiny-qwen3-asr", file=f, language="en", stream=True))
    assert events[-1].type == "transcript.text.done" and events[-1].text == expected.text
    assert "".join(e.delta for e in events[:-1]).strip() == expected.text
    for framing in ("<asr_text>", "<|im_end|>", "language English"):
        assert framing not in result.text


async def test_websocket_session_and_prefix_hits_in_metrics(qwen_server, speech):
    # 24 s: a chunk's blocks are reused once its audio window is whole (8 s), so later chunks hit
    # the session's own earlier ones (with 11 s, only hits of other requests' prompts were counted)
    audio = concat(speech[:8])
    got = await stream(qwen_server.url, pcm16(audio), {"language": "en"})
    final = got["events"][-1]
    assert final["type"] == "transcript.final" and got["close_code"] == 1000
    sent = "".join(e["delta"] for e in got["events"] if e["type"] == "transcript.delta")
    assert sent == final["text"] and final["text"]
    metrics = httpx.get(f"{qwen_server.url}/metrics").text
    hits = next(line for line in metrics.splitlines() if line.startswith("sasr_prefix_cache_hit_tokens "))
    assert float(hits.split()[1]) > 0
    assert "sasr_prefix_cache_hit_rate" in metrics


async def test_websocket_silence_and_bad_language(qwen_server):
    silent = await stream(qwen_server.url, pcm16(np.zeros(16000 * 5, np.float32)))
    assert silent["events"] == [{"type": "transcript.final", "text": "", "audio_ms": 5000}]
    async with websockets.connect(qwen_server.url.replace("http", "ws") + "/v1/audio/transcriptions/stream") as ws:
        await ws.send(json.dumps({"type": "session.start", "language": "xx"}))
        error = json.loads(await ws.recv())
    assert error["type"] == "error" and error["code"] == "invalid_payload"


async def test_whisper_only_live_options_are_refused(qwen_server, tiny):
    """Its live policy has no commit mode or endpoint: a client asking for one is told, not ignored."""
    for asked in ({"commits": "final"}, {"endpoint_ms": 800}):
        async with websockets.connect(qwen_server.url.replace("http", "ws") + "/v1/audio/transcriptions/stream") as ws:
            await ws.send(json.dumps({"type": "session.start", **asked}))
            error = json.loads(await ws.recv())
        assert error["type"] == "error" and error["code"] == "invalid_payload" and next(iter(asked)) in error["message"]
    engine = make_engine(tiny)
    try:
        with pytest.raises(ValueError, match="--live-commits"):
            create_app(ServerConfig(live_commits="final"), engine, "tiny-qwen3-asr")
    finally:
        engine.close()


# -- the live policy alone, with hand-built model outputs -------------------------------------------


def test_streaming_policy_rollback_and_reconciled_hypothesis():
    """Decodes 1-2 force nothing and commit what two agree on, 5 words from the end; later ones force
    the last hypothesis less 5 tokens and read prefix + continuation as the hypothesis."""
    from sasr.models.qwen3_asr.decode import Qwen3Result
    from sasr.models.qwen3_asr.live import ROLLBACK_TOKENS, Qwen3StreamingPolicy
    from sasr.models.qwen3_asr.vocab import Qwen3Vocab
    from tests.support.qwen_tiny import build_tokenizer

    vocab = Qwen3Vocab(build_tokenizer())
    words = "the birch canoe slid on the smooth planks glue the sheet to the dark blue background".split()
    spoken = lambda n: vocab.encode(" " + " ".join(words[:n]))  # noqa: E731
    policy = Qwen3StreamingPolicy(vocab, language="en")
    tone = (0.1 * np.sin(np.arange(32000) / 16000 * 2 * np.pi * 220)).astype(np.float32)
    sent = []

    def decode(num_words: int, final: bool = False) -> list[int]:
        policy.add_audio(tone)
        job = policy.next_job(final=final)
        hypothesis = spoken(num_words)
        assert hypothesis[: len(job.text_prefix)] == job.text_prefix  # the model continues the prefix
        continuation = hypothesis[len(job.text_prefix):]
        sent.extend(w.text for w in policy.update(job, Qwen3Result(continuation, 100, 0), final=final))
        return job.text_prefix

    assert decode(4) == [] and sent == []  # fewer than 5 words: all held back
    assert decode(8) == [] and sent == words[:3]  # agreed with decode 1, 5 words from the end
    prefix = decode(11)
    assert prefix == spoken(8)[:-ROLLBACK_TOKENS]  # the last hypothesis less 5 tokens
    assert sent == words[:6]  # prefix + continuation is the hypothesis: 11 words, 5 held back
    decode(13, final=True)
    assert sent == words[:13]
    assert policy.context.split() == words[:13] and policy.committed == []  # the next segment's context
