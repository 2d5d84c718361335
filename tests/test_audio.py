"""Audio decoding: any libsndfile format, rate and channel count in; 16 kHz mono float32 out."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from sasr.audio.features import log_mel
from sasr.audio.io import AudioError, AudioTooLongError, decode_audio


def encode(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(freq: float, rate: int, seconds: float = 1.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def dominant_hz(audio: np.ndarray, rate: int = 16000) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[spectrum.argmax()])


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", None), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III")])
def test_formats_decode_to_16k_mono(fmt, subtype):
    audio = decode_audio(encode(tone(440, 44100, channels=2), 44100, fmt, subtype))
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) < 2000  # lossy codecs pad a little
    assert abs(dominant_hz(audio[2000:14000]) - 440) < 5


def test_resampling_is_band_limited():
    """A 12 kHz tone is above the 8 kHz Nyquist of 16 kHz audio: it must vanish, not alias to 4 kHz."""
    audio = decode_audio(encode(tone(12000, 48000), 48000, "WAV", "FLOAT"))
    assert np.sqrt(np.mean(audio[1000:-1000] ** 2)) < 1e-3  # linear interpolation leaves about 0.3


def test_channels_are_mixed_down():
    left_only = np.zeros((8000, 2), np.float32)
    left_only[:, 0] = 0.5
    audio = decode_audio(encode(left_only, 16000, "WAV", "FLOAT"))
    assert np.allclose(audio, 0.25)


def test_bad_audio_is_refused():
    with pytest.raises(AudioError, match="empty"):
        decode_audio(b"")
    with pytest.raises(AudioError, match="could not decode"):
        decode_audio(b"this is not audio at all" * 100)
    with pytest.raises(AudioTooLongError, match="at most 1 s"):
        decode_audio(encode(tone(440, 16000, seconds=2), 16000, "WAV"), max_seconds=1)


def test_log_mel_matches_transformers_feature_extractor():
    from transformers import WhisperFeatureExtractor

    audio = (np.random.default_rng(0).standard_normal(16000 * 7) * 0.1).astype(np.float32)
    reference = WhisperFeatureExtractor(feature_size=80)(audio, sampling_rate=16000, return_tensors="np")
    padded = np.zeros(16000 * 30, np.float32)
    padded[: len(audio)] = audio
    mine = log_mel(torch.from_numpy(padded)).numpy()
    np.testing.assert_allclose(mine, reference.input_features[0], atol=1e-4)


@pytest.mark.parametrize("fmt", ["pcm16_8k_mono", "pcm16_16k_mono", "pcm16_48k_mono", "f32_24k_mono"])
def test_live_frames_of_any_size_decode_to_16k(fmt):
    """Live frames: split anywhere (mid-sample too), resampled across frames without clicks."""
    from sasr.audio.stream import FrameDecoder

    encoding, rate = fmt.split("_")[:2]
    rate = int(rate[:-1]) * 1000
    signal = tone(1000, rate, seconds=2.0)
    data = (signal * 32767).astype("<i2").tobytes() if encoding == "pcm16" else signal.astype("<f4").tobytes()
    decoder = FrameDecoder(fmt)
    rng = np.random.default_rng(1)
    cuts = np.sort(rng.choice(len(data), 40, replace=False))
    pieces = [decoder.decode(data[a:b]) for a, b in zip([0, *cuts], [*cuts, len(data)])]
    audio = np.concatenate([*pieces, decoder.flush()])
    assert abs(len(audio) - 32000) <= 2
    assert abs(dominant_hz(audio[1000:-1000]) - 1000) < 5
    expected = tone(1000, 16000, seconds=2.0)
    assert np.abs(audio[2000:-2000]).max() == pytest.approx(0.5, abs=0.01)
    assert np.sqrt(np.mean((audio[2000:30000] - expected[2000:30000]) ** 2)) < 0.02  # no clicks, in phase


def test_unknown_live_format_is_refused():
    from sasr.audio.stream import FrameDecoder

    with pytest.raises(ValueError, match="audio_format"):
        FrameDecoder("pcm24_16k_mono")


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_decodes_as_the_standard_library_does(law):
    """Every G.711 byte decodes to the value audioop (CPython's C implementation of ITU-T G.711) gives;
    a telephone frame comes out at 16 kHz."""
    import warnings

    from sasr.audio.stream import FrameDecoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    every_byte = bytes(range(256))
    expected = np.frombuffer(getattr(audioop, f"{law}2lin")(every_byte, 2), "<i2").astype(np.float32) / 32768
    decoder = FrameDecoder(f"{law}_8k_mono")
    decoder.resampler = None  # compare the 8 kHz samples themselves
    assert np.array_equal(decoder.decode(every_byte), expected)
    assert len(FrameDecoder(f"{law}_8k_mono").decode(bytes(8000), last=True)) == 16000
