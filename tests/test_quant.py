"""Int8 and bf16 Whisper on the CPU: the int8 Linear against its plain-torch reference, a window's
numbers independent of its batch, and each mode's model against fp32 and the reference texts."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from sasr.audio.io import decode_audio
from sasr.engine import TranscriptionRequest
from sasr.models.quant import (
    FC2_ROWS_PER_SCALE,
    Bf16Projection,
    Int8Linear,
    has_vnni,
    int8_linear_reference,
    int8_supported,
)
from tests.support.live import measures_steady_rows_unasked, replay_stream
from tests.support.speech import ALSA_SOUNDS, ALSA_TEXTS, HARVARD, concat, read16k
from tests.support.wer import wer

needs_int8 = pytest.mark.skipif(not int8_supported(), reason="this torch build has no int8 quantized engine")
MODES = [pytest.param("int8", marks=needs_int8), "bf16"]  # bf16 runs on any CPU (fast where it has AMX)

SHORT_WER_MAX = 0.45  # as tests/test_http.py: clips of a few sentences
POOLED_WER_SLACK = 0.02  # a mode may cost at most this much WER over fp32 on the same clips


def samples() -> torch.Tensor:
    """Three samples [3, 250, 64] of very different ranges: one scale for all would squash the quiet one."""
    torch.manual_seed(0)
    return torch.randn(3, 250, 64) * torch.tensor([1.0, 8.0, 0.05])[:, None, None]


# 8-bit inputs need VNNI (without it fbgemm's int16 pair sums may saturate); 7-bit run anywhere
@needs_int8
@pytest.mark.parametrize("reduce_range", [pytest.param(False, marks=pytest.mark.skipif(not has_vnni(), reason="no VNNI")),
                                          True])
@pytest.mark.parametrize("rows_per_scale", [None, 100])
def test_int8_linear_matches_reference(reduce_range, rows_per_scale):
    linear = torch.nn.Linear(64, 96)
    x = samples()
    with torch.inference_mode():
        out = Int8Linear(linear, reduce_range=reduce_range, rows_per_scale=rows_per_scale)(x)
        reference = int8_linear_reference(linear, x, reduce_range, rows_per_scale)
        exact = linear(x)
    levels = 127 if reduce_range else 255
    for i in range(len(x)):  # per sample: its own scales, so its own error budget
        # the engine may round an input sitting on a half step the other way: one step of one input
        step = (x[i].amax() - x[i].amin().clamp(max=0)) / levels
        assert (out[i] - reference[i]).abs().max() <= 1.01 * step * linear.weight.abs().max()
        assert (out[i] - reference[i]).abs().mean() < 1e-3 * step  # and almost everywhere, exactly
        assert (out[i] - exact[i]).abs().max() < 0.05 * exact[i].abs().max()  # int8, yet close to fp32


@needs_int8
def test_a_loud_row_changes_only_its_own_group():
    layer = Int8Linear(torch.nn.Linear(64, 96), rows_per_scale=100)
    x = samples()[0]
    loud = x.clone()
    loud[150] *= 50
    with torch.inference_mode():
        before, after = layer(x), layer(loud)
    assert torch.equal(before[:100], after[:100]) and torch.equal(before[200:], after[200:])
    assert not torch.equal(before[100:150], after[100:150])  # its neighbours share its coarser grid


@needs_int8
def test_a_sample_gets_the_same_output_alone_and_batched():
    linear = torch.nn.Linear(64, 96)
    x = samples()
    layer = Int8Linear(linear)
    with torch.inference_mode():
        batched = layer(x)
        for i in range(len(x)):
            assert torch.equal(layer(x[i : i + 1])[0], batched[i])
            assert torch.equal(layer(x[i]), batched[i])


@pytest.fixture(scope="module", params=MODES)
def quantised(request, cache_dir):
    """tiny.en in one of the CPU modes (int8, bf16)."""
    from sasr.models.whisper.load import load_whisper

    return load_whisper(None, quantize=request.param)


@pytest.fixture(scope="module")
def quantised_engine(quantised):
    from sasr.models.whisper.engine import WhisperEngine

    engine = WhisperEngine(quantised, max_num_seqs=8)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def clips(speech_dir) -> list[tuple[np.ndarray, str]]:
    """Three clips of five Harvard sentences (what the HTTP tests send) and their texts."""
    groups = [range(k, k + 5) for k in (0, 5, 10)]
    return [(concat([read16k(speech_dir / f"h{i}.wav") for i in g]), " ".join(HARVARD[i] for i in g)) for g in groups]


@needs_int8
def test_only_window_layers_are_quantised():
    from sasr.models.whisper.load import load_whisper

    model = load_whisper(None, quantize="int8").model.model
    assert all(isinstance(layer.fc1, Int8Linear) for layer in model.encoder.layers)
    assert all(layer.fc2.rows_per_scale == FC2_ROWS_PER_SCALE for layer in model.encoder.layers)
    for layer in model.decoder.layers:  # cross-attention K/V see only encoder output; the rest runs per token
        assert isinstance(layer.encoder_attn.k_proj, Int8Linear) and isinstance(layer.encoder_attn.v_proj, Int8Linear)
        assert isinstance(layer.fc1, torch.nn.Linear) and isinstance(layer.self_attn.q_proj, torch.nn.Linear)
    assert model.decoder.embed_tokens.weight.dtype == torch.float32  # the logits read it


def test_bf16_runs_the_whole_model_in_bf16(cache_dir):
    """Encoder, decoder and KV arena in bf16; the vocabulary projection gives fp32 logits."""
    from sasr.models.whisper.load import load_whisper
    from sasr.models.whisper.model import WhisperModel

    loaded = load_whisper(None, quantize="bf16")
    model = loaded.model.model
    assert {p.dtype for p in model.encoder.parameters()} == {p.dtype for p in model.decoder.parameters()} == {torch.bfloat16}
    whisper = WhisperModel(loaded.model)
    cache = whisper.new_cache(1, 1500)
    assert whisper.dtype == cache.self_k.dtype == cache.cross_k.dtype == torch.bfloat16
    assert whisper.logits(torch.zeros(1, 384, dtype=torch.bfloat16)).dtype == torch.float32


def test_encoding_and_logits_close_to_fp32(quantised, loaded, clips):
    from sasr.audio.constants import WINDOW_SAMPLES
    from sasr.kernels.logmel import log_mel_batch_reference
    from sasr.models.whisper.model import WhisperModel

    audio = torch.zeros(1, WINDOW_SAMPLES)
    audio[0, : len(clips[0][0])] = torch.from_numpy(clips[0][0])
    mel = log_mel_batch_reference(audio, 80)
    sot = torch.tensor([[quantised.vocab.sot]])
    logits = []
    for loaded_model in (loaded, quantised):
        model = WhisperModel(loaded_model.model)
        cache = model.new_cache(1, model.num_audio_frames)
        with torch.inference_mode():
            cache.cross_k[:], cache.cross_v[:] = model.encode(mel)
            hidden, _ = model.decode(cache, sot, torch.zeros_like(sot), kv_len=1)
            logits.append((cache.cross_k.clone(), model.logits(hidden[0])))
    (k32, l32), (k8, l8) = logits  # fp32, the mode
    assert (k8 - k32).norm() / k32.norm() < 0.1  # every layer's cross-attention keys
    assert l8.argmax() == l32.argmax()
    top = l32[0].topk(5).indices
    torch.testing.assert_close(l8[0, top], l32[0, top], atol=0.5, rtol=0.05)


async def test_engine_transcribes_within_the_wer_bound(quantised_engine, engine, clips):
    results = await asyncio.gather(*(quantised_engine.transcribe(TranscriptionRequest(a)) for a, _ in clips))
    fp32_results = await asyncio.gather(*(engine.transcribe(TranscriptionRequest(a)) for a, _ in clips))
    wers = [wer(text, r.text) for (_, text), r in zip(clips, results)]
    fp32_wers = [wer(text, r.text) for (_, text), r in zip(clips, fp32_results)]
    assert max(wers) <= SHORT_WER_MAX, [r.text for r in results]
    assert sum(wers) / len(clips) <= sum(fp32_wers) / len(clips) + POOLED_WER_SLACK


async def test_mode_and_fp32_agree_on_real_speech(quantised_engine, engine):
    """Recorded human speech (alsa-utils' channel tests): the same words as fp32, nearly exact."""
    audio = concat([decode_audio((ALSA_SOUNDS / name).read_bytes()) for name in ALSA_TEXTS], gap_s=0.8)
    result = await quantised_engine.transcribe(TranscriptionRequest(audio))
    fp32_result = await engine.transcribe(TranscriptionRequest(audio))
    assert result.text == fp32_result.text
    assert wer(" ".join(ALSA_TEXTS.values()), result.text) <= 0.1, result.text


async def test_batched_equals_alone(quantised_engine, clips, speech_dir):
    """A window's encoding does not depend on its batch, so neither do its tokens."""
    audios = [a for a, _ in clips] + [read16k(speech_dir / f"h{i}.wav") for i in (21, 27)]
    alone = [await quantised_engine.transcribe(TranscriptionRequest(a)) for a in audios]
    together = await asyncio.gather(*(quantised_engine.transcribe(TranscriptionRequest(a)) for a in audios))
    assert [[s.tokens for s in r.segments] for r in together] == [[s.tokens for s in r.segments] for r in alone]


async def test_live_text_batched_equals_alone(quantised_engine, clips):
    """Live sessions too: a session's decodes (prefills of different lengths, steps of different batch
    sizes) give it the same words alone as beside others (int8's fp32 decoder differed by a word in 3
    runs of 5 before its steps ran at least steady_rows rows)."""
    audios = [a for a, _ in clips]
    alone = [(await replay_stream(quantised_engine, a, "live"))[-1].text for a in audios]
    together = await asyncio.gather(*(replay_stream(quantised_engine, a, "live") for a in audios))
    assert [events[-1].text for events in together] == alone and all(alone)


@pytest.mark.parametrize("mode", [*MODES, "none"])
def test_a_decode_step_gives_each_row_the_same_numbers_whatever_its_batch(mode):
    """Rows at different positions over encodings of different lengths, stepped alone, in threes and all
    together: the same bits (MKL's fp32 products round a row by the row count unless the step runs at
    least steady_rows rows: 30 of 42 rows differed here without)."""
    from sasr.models.whisper.load import load_whisper
    from sasr.models.whisper.model import WhisperModel

    model = WhisperModel(load_whisper(None, quantize=mode).model)
    rows, frames = 16, [100 + 50 * (b % 4) for b in range(16)]
    pad = model.steady_rows(rows)
    torch.manual_seed(0)
    cache = model.new_cache(rows, model.num_audio_frames)
    lens = [5 + 3 * b for b in range(rows)]
    with torch.inference_mode():
        for b in range(rows):  # each row's own encoding and prefix
            k, v = model.encode(torch.randn(1, 80, 2 * frames[b]))
            cache.cross_k[:, b : b + 1, :, : frames[b]], cache.cross_v[:, b : b + 1, :, : frames[b]] = k, v
            model.decode(cache.rows(b, b + 1), torch.randint(0, 50000, (1, lens[b])), torch.arange(lens[b])[None],
                         lens[b], cross_lens=[frames[b]])
        self_kv = cache.self_k.clone(), cache.self_v.clone()
        tokens, positions = torch.randint(0, 50000, (rows, 1)), torch.tensor(lens)[:, None]

        def step(a: int, b: int) -> torch.Tensor:
            cache.self_k.copy_(self_kv[0]), cache.self_v.copy_(self_kv[1])
            hidden, _ = model.decode(cache.rows(a, b), tokens[a:b], positions[a:b], max(lens[a:b]) + 1,
                                     cross_lens=frames[a:b], self_lens=[n + 1 for n in lens[a:b]], pad_rows=pad)
            return torch.cat([hidden[:, -1], model.logits(hidden[:, -1], pad)], dim=1)

        together = step(0, rows)
        for size in (1, 3):
            for a in range(0, rows - size + 1, size):
                assert torch.equal(step(a, a + size), together[a : a + size]), (mode, pad, a, size)


async def test_the_engine_measures_its_steady_rows_as_it_starts(quantised):
    """steady_rows runs 16-row products over the vocabulary: measured on the engine's thread as it starts,
    not inside the first request's first step."""
    from sasr.models.whisper.engine import WhisperEngine

    assert await measures_steady_rows_unasked(WhisperEngine(quantised, max_num_seqs=8))


@pytest.mark.parametrize("num_frames", [600, 3000])
def test_a_window_encodes_alone_as_beside_others_of_its_size(quantised, num_frames):
    """The engine's encoder (runner.encode, the encoder thread's) gives a window the same cross-attention
    K/V alone as beside windows of its size (bf16 batched rounded 3-7 s windows otherwise)."""
    from sasr.models.whisper.model import WhisperModel
    from sasr.models.whisper.runner import ModelRunner, WhisperInputs

    runner = ModelRunner(WhisperModel(quantised.model), quantised.vocab, max_num_seqs=2)
    rng = np.random.default_rng(0)
    windows = [WhisperInputs(rng.standard_normal(num_frames * 160).astype(np.float32) * 0.1, num_frames, 0, False)
               for _ in range(3)]
    runner.encode(windows)
    together = [w.encoded for w in windows]
    for w, (k, v) in zip(windows, together):
        runner.encode([w])
        assert torch.equal(w.encoded[0], k) and torch.equal(w.encoded[1], v)


def test_bf16_vocabulary_projection_is_near_fp32_and_per_row():
    """The bf16 projection's logits are fp32's within bf16 rounding, the same top token where fp32's
    leads clearly, and a row's logits do not depend on the rows beside it."""
    torch.manual_seed(0)
    weight, hidden = torch.randn(51864, 384) * 0.05, torch.randn(8, 384)
    got, want = Bf16Projection(weight)(hidden), hidden @ weight.T
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert ((got - want).abs().max() / want.abs().max()).item() < 0.02
    top2 = want.topk(2).values
    clear = top2[:, 0] - top2[:, 1] > 0.05 * top2[:, 0].abs()
    assert torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear]) and clear.any()
    alone = torch.cat([Bf16Projection(weight)(row[None]) for row in hidden])
    torch.testing.assert_close(alone, got, atol=1e-4, rtol=1e-4)  # no shared scale (equal on this CPU)
