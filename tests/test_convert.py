"""The bundled CTranslate2 tiny.en, converted to transformers Whisper, is the same model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sasr.audio.constants import WINDOW_SAMPLES
from sasr.audio.features import log_mel
from sasr.models.whisper import ct2
from sasr.models.whisper.decode import WindowJob
from sasr.models.whisper.load import bundled_model_dir


def test_model_bin_layout():
    spec, variables = ct2.read_model_bin(bundled_model_dir() / "model.bin")
    assert spec == "WhisperSpec"
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]  # the alias
    dims = ct2.whisper_dims(variables)
    assert dims == {
        "vocab_size": 51864, "d_model": 384, "num_mel_bins": 80, "encoder_layers": 4, "decoder_layers": 4,
        "encoder_attention_heads": 6, "decoder_attention_heads": 6, "encoder_ffn_dim": 1536,
        "decoder_ffn_dim": 1536, "max_source_positions": 1500, "max_target_positions": 448,
    }


def test_state_dict_loads_strictly(loaded):
    _, variables = ct2.read_model_bin(bundled_model_dir() / "model.bin")
    state = ct2.to_hf_state_dict(variables)
    missing, unexpected = loaded.model.load_state_dict(
        {k: v.float() for k, v in state.items()}, strict=True
    )
    assert not missing and not unexpected
    # the fused self-attention key bias was checked to be zero, then dropped
    assert "model.decoder.layers.0.self_attn.k_proj.bias" not in state


def test_nonzero_key_bias_is_refused():
    _, variables = ct2.read_model_bin(bundled_model_dir() / "model.bin")
    variables = dict(variables)
    bias = variables["encoder/layer_0/self_attention/linear_0/bias"].copy()
    bias[400] = 1.0  # inside the key third
    variables["encoder/layer_0/self_attention/linear_0/bias"] = bias
    with pytest.raises(ValueError, match="key bias"):
        ct2.to_hf_state_dict(variables)


def test_special_tokens_registered(loaded):
    vocab = loaded.vocab
    assert (vocab.eot, vocab.sot, vocab.no_timestamps, vocab.timestamp_begin) == (50256, 50257, 50362, 50363)
    assert not vocab.is_multilingual
    assert vocab.decode(vocab.encode(" Hello world.")) == " Hello world."


@pytest.mark.parametrize("index", [0, 7, 19])
async def test_greedy_tokens_equal_ctranslate2(loaded, engine, speech_dir, index):
    """Same log-mel in, same greedy tokens (with timestamps) out as CTranslate2 on the original file."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from tests.support.speech import read16k

    audio = read16k(speech_dir / f"h{index}.wav")
    padded = np.zeros(WINDOW_SAMPLES, np.float32)
    padded[: len(audio)] = audio
    mel = log_mel(torch.from_numpy(padded))[None]  # [1, 80, 3000]
    reference = ctranslate2.models.Whisper(str(bundled_model_dir()), device="cpu", compute_type="float32")
    out = reference.generate(
        ctranslate2.StorageView.from_array(mel.numpy()), [[loaded.vocab.sot]], beam_size=1,
        max_length=224, return_no_speech_prob=True,
    )[0]
    job = WindowJob(audio, prefix=[loaded.vocab.sot], sot_index=0, temperature=0.0, seed=0, max_new_tokens=224)
    mine = await engine.run_window(job)  # through the scheduler and runner, as a request would go
    assert mine.tokens == out.sequences_ids[0]
    assert mine.no_speech_prob == pytest.approx(out.no_speech_prob, abs=1e-4)


def test_decoder_logits_equal_transformers(loaded, whisper, speech_dir):
    """sasr's decoder step with its own KV cache computes what transformers' forward computes."""
    from tests.support.speech import read16k

    audio = read16k(speech_dir / "h1.wav")
    padded = np.zeros(WINDOW_SAMPLES, np.float32)
    padded[: len(audio)] = audio
    mel = log_mel(torch.from_numpy(padded))[None]
    tokens = torch.tensor([[50257, 50363, 383, 2068, 7586, 21831]])
    with torch.inference_mode():
        reference = loaded.model(input_features=mel, decoder_input_ids=tokens).logits
        cache = whisper.new_cache(1, whisper.num_audio_frames)
        cache.cross_k[:], cache.cross_v[:] = whisper.encode(mel)
        prefill, _ = whisper.decode(cache, tokens[:, :4], torch.arange(4)[None], kv_len=4)
        steps = [whisper.decode(cache, tokens[:, i : i + 1], torch.tensor([[i]]), kv_len=i + 1)[0] for i in (4, 5)]
    mine = whisper.logits(torch.cat([prefill, *steps], dim=1)[0])[None]
    torch.testing.assert_close(mine, reference, atol=1e-3, rtol=1e-4)


def test_cross_attention_row_by_row_equals_the_masked_batch(whisper, speech_dir):
    """A CPU batch attends each row's own audio frames in a call of its own (cross_lens): the same
    hidden states and alignment weights as the one masked call over the longest row's frames."""
    from tests.support.speech import read16k

    audio = read16k(speech_dir / "h1.wav")
    lens = [whisper.num_audio_frames, 400]  # a 30 s window and an 8 s one
    cache = whisper.new_cache(2, whisper.num_audio_frames)
    with torch.inference_mode():
        for row, frames in enumerate(lens):
            padded = np.zeros(frames * 320, np.float32)
            padded[: min(len(audio), len(padded))] = audio[: len(padded)]
            k, v = whisper.encode(log_mel(torch.from_numpy(padded))[None])
            cache.cross_k[:, row, :, :frames], cache.cross_v[:, row, :, :frames] = k[:, 0], v[:, 0]
        cache.cross_len[:] = torch.tensor(lens)
        tokens = torch.tensor([[50257, 50363, 383, 2068], [50257, 50363, 383, 0]])
        heads = {layer: torch.tensor([0, 3]) for layer in range(whisper.num_layers)}
        masked = whisper.decode(cache, tokens, torch.arange(4).expand(2, 4), 4, max(lens), heads)
        row_by_row = whisper.decode(cache, tokens, torch.arange(4).expand(2, 4), 4, max(lens), heads, cross_lens=lens)
    torch.testing.assert_close(row_by_row[0], masked[0], atol=1e-4, rtol=1e-4)  # float rounding
    torch.testing.assert_close(row_by_row[1], masked[1], atol=1e-6, rtol=1e-5)
    assert row_by_row[1][1, :, :, lens[1]:].abs().max() == 0  # nothing past the short row's frames
