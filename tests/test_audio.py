"""us8k_lib.audio: decoding every WAV flavour UrbanSound8K contains, formatting for M5, bad input."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from us8k_lib import audio
from us8k_lib.audio import (
    MAX_FLOAT_PEAK,
    TARGET_LENGTH,
    TARGET_SR,
    compute_spectrogram,
    format_clip,
    naive_decimate,
    pad_or_crop,
    read_header,
    read_wav,
    resample,
    to_mono,
    wav_bytes,
)
from us8k_lib.errors import AudioError
from us8k_lib.formats import compute_format_table, format_summary

# ---------------------------------------------------------------------------------------------
# The known signal: every channel has a 440 Hz tone with its own phase plus its own second tone,
# so a downmix that dropped, summed or swapped channels would not match the analytic mean.
# All tones are below 3.4 kHz, where the resampler is flat, so the 8 kHz result is predictable.
# ---------------------------------------------------------------------------------------------
SECOND_TONE = (1000.0, 660.0, 1500.0, 300.0, 2000.0, 880.0, 3000.0, 1250.0)


def known_signal(t: np.ndarray, channels: int) -> np.ndarray:
    """(len(t), channels) float64, peak < 0.5."""
    return np.stack(
        [0.3 * np.sin(2 * np.pi * 440.0 * t + 0.7 * c) + 0.2 * np.sin(2 * np.pi * SECOND_TONE[c] * t)
         for c in range(channels)],
        axis=1,
    )


def write_known(path: Path, sr: int, channels: int, subtype: str, fmt: str = "WAV", seconds: float = 0.5) -> np.ndarray:
    x = known_signal(np.arange(int(round(seconds * sr))) / sr, channels)
    sf.write(path, x, sr, subtype=subtype, format=fmt)
    return x


SUBTYPES = ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "IMA_ADPCM", "MS_ADPCM")
ADPCM = ("IMA_ADPCM", "MS_ADPCM")
NON_ADPCM = tuple(s for s in SUBTYPES if s not in ADPCM)
RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 96000)

# Max |decoded - written| per subtype: one quantisation step (soundfile rounds towards -inf for
# 8-bit) plus float32 rounding of values near 0.5 (2**-25).
LSB = {"PCM_U8": 2.0**-7, "PCM_16": 2.0**-15, "PCM_24": 2.0**-23, "PCM_32": 2.0**-31, "FLOAT": 0.0, "DOUBLE": 0.0}
DECODE_ATOL = {k: v + 2.0**-24 for k, v in LSB.items()}
# After downmix + resampling, compared with the analytic signal sampled at 8 kHz: the filter
# adds ~2e-6 (float32 arithmetic, passband ripple) and can sum quantisation errors to a little
# over one step (measured worst: 1.15 steps for PCM_U8, 1.09 for PCM_16).
FORMAT_ATOL = {k: 1.5 * v + 5e-6 for k, v in LSB.items()}
# 4-bit ADPCM has no fixed error bound (the step size adapts, so the first samples of a block
# lag behind); libsndfile's IMA ADPCM reaches ~25 dB SNR on this signal at 8 kHz, MS ADPCM more.
ADPCM_MIN_SNR_DB = 20.0
# Output samples ignored at each edge of a formatted clip: the resampling filter's half-length
# (lowpass_filter_width zero crossings at ~3.8 kHz) plus a margin; ADPCM needs a block to settle.
EDGE = 64


def matrix_cases() -> list[tuple[str, int, int, str]]:
    """A subset of subtype x channels x rate x header that still covers every value of each."""
    cases = [(st, 2, sr, "WAV") for st in SUBTYPES for sr in RATES]  # every subtype at every rate
    # libsndfile writes IMA/MS ADPCM only for 1 or 2 channels ("Format not recognised" above).
    cases += [(st, ch, sr, "WAV") for st in NON_ADPCM for ch in (1, 6, 8) for sr in (11025, 48000)]
    cases += [(st, 1, sr, "WAV") for st in ADPCM for sr in (11025, 44100)]
    # WAVE_FORMAT_EXTENSIBLE: libsndfile has no ADPCM in WAVEX (not in sf.available_subtypes("WAVEX")).
    cases += [(st, ch, sr, "WAVEX") for st in NON_ADPCM for ch in (1, 2) for sr in (44100, 96000)]
    cases += [("PCM_24", ch, 48000, "WAVEX") for ch in (6, 8)]
    return cases


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    noise = np.mean((test - reference) ** 2)
    return float(10 * np.log10(np.mean(reference**2) / noise)) if noise > 0 else float("inf")


@pytest.mark.parametrize(("subtype", "channels", "sr", "fmt"), matrix_cases(), ids=lambda v: str(v))
def test_format_matrix_decodes_and_formats_the_known_signal(tmp_path, subtype, channels, sr, fmt):
    path = tmp_path / "clip.wav"
    written = write_known(path, sr, channels, subtype, fmt)
    assert sf.info(str(path)).format == fmt  # the header type under test really was written
    n = written.shape[0]

    decoded, decoded_sr = read_wav(path)
    assert decoded_sr == sr
    assert decoded.dtype == np.float32 and decoded.ndim == 2 and decoded.shape[1] == channels
    if subtype in ADPCM:
        # ADPCM encodes whole blocks, so the decoder returns the last block's padding too.
        assert decoded.shape[0] >= n
        assert snr_db(written, decoded[:n]) >= ADPCM_MIN_SNR_DB
    else:
        assert decoded.shape[0] == n
        np.testing.assert_allclose(decoded, written, rtol=0, atol=DECODE_ATOL[subtype])

    formatted = format_clip(path)
    assert formatted.shape == (TARGET_LENGTH,) and formatted.dtype == np.float32
    n8 = -(-n * TARGET_SR // sr)  # frames the written part spans at 8 kHz
    expected = known_signal(np.arange(n8) / TARGET_SR, channels).mean(axis=1)
    core = slice(EDGE, n8 - EDGE)
    if subtype in ADPCM:
        assert snr_db(expected[core], formatted[core]) >= ADPCM_MIN_SNR_DB
    else:
        np.testing.assert_allclose(formatted[core], expected[core], rtol=0, atol=FORMAT_ATOL[subtype])
    # Zero padding starts right after the (resampled) decoded audio.
    end = -(-decoded.shape[0] * TARGET_SR // sr)
    assert np.all(formatted[end:] == 0)
    assert np.abs(formatted[n8 - 200 : n8]).max() > 0.05  # the written signal lasts to its end


# ---------------------------------------------------------------------------------------------
# Clip lengths
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 3, 7])
def test_a_few_samples_become_a_zero_padded_clip(tmp_path, frames):
    path = tmp_path / "tiny.wav"
    x = np.full((frames, 2), 0.25)
    sf.write(path, x, 44100, subtype="PCM_16")
    decoded, sr = read_wav(path)
    assert decoded.shape == (frames, 2) and sr == 44100
    out = format_clip(path)
    assert out.shape == (TARGET_LENGTH,)
    kept = -(-frames * TARGET_SR // 44100)
    assert kept >= 1 and np.all(out[kept:] == 0)
    assert np.any(out[:kept] != 0)


def test_clip_under_one_second_is_padded_with_zeros_at_the_end(tmp_path):
    path = tmp_path / "short.wav"
    sr, seconds = 22050, 0.3
    write_known(path, sr, 1, "PCM_24", seconds=seconds)
    out = format_clip(path)
    n8 = int(seconds * TARGET_SR)
    expected = known_signal(np.arange(n8) / TARGET_SR, 1)[:, 0]
    np.testing.assert_allclose(out[EDGE : n8 - EDGE], expected[EDGE : n8 - EDGE], atol=1e-4)
    assert np.all(out[n8:] == 0)


def test_exactly_four_seconds_is_neither_padded_nor_cropped(tmp_path):
    path = tmp_path / "four.wav"
    write_known(path, 44100, 2, "PCM_16", seconds=4.0)
    out = format_clip(path)
    expected = known_signal(np.arange(TARGET_LENGTH) / TARGET_SR, 2).mean(axis=1)
    # The tail is real audio right up to the last samples (the filter sees zeros past the end,
    # so only the outermost EDGE samples deviate).
    np.testing.assert_allclose(out[EDGE:-EDGE], expected[EDGE:-EDGE], atol=1e-4)
    assert np.abs(out[-EDGE:]).max() > 0.1


def test_longer_clip_keeps_its_first_four_seconds(tmp_path):
    path = tmp_path / "long.wav"
    sr = 48000
    t = np.arange(5 * sr) / sr
    # A level step at 4 s: cropping must keep the quiet first part, never the loud tail.
    x = known_signal(t, 1) * np.where(t < 4.0, 0.5, 1.0)[:, None]
    sf.write(path, x, sr, subtype="FLOAT")
    out = format_clip(path)
    expected = 0.5 * known_signal(np.arange(TARGET_LENGTH) / TARGET_SR, 1)[:, 0]
    np.testing.assert_allclose(out[EDGE:-EDGE], expected[EDGE:-EDGE], atol=1e-4)
    assert out.base is None  # not a view pinning the whole 5 s buffer


def test_format_clip_other_target_rate_and_length(tmp_path):
    path = tmp_path / "c.wav"
    write_known(path, 48000, 1, "PCM_16", seconds=1.0)
    out = format_clip(path, sr=16000, length=8000)
    expected = known_signal(np.arange(8000) / 16000, 1)[:, 0]
    assert out.shape == (8000,)
    np.testing.assert_allclose(out[EDGE:-EDGE], expected[EDGE:-EDGE], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# Aliasing: why x[::5] is wrong
# ---------------------------------------------------------------------------------------------


def tone_amplitude(x: np.ndarray, sr: int, freq: float) -> float:
    """Amplitude of the sine at ``freq`` in ``x`` (Hann-windowed FFT over the middle half)."""
    x = x[len(x) // 4 : 3 * len(x) // 4]
    w = np.hanning(len(x))
    spectrum = np.abs(np.fft.rfft(x * w)) * 2 / w.sum()
    k = int(round(freq * len(x) / sr))
    return float(spectrum[k - 2 : k + 3].max())


# The tutorial's x[::5] gives 8 kHz only from 40 kHz (from 44.1 kHz it gives 8.82 kHz);
# x[::6] is the same mistake at 48 kHz.
@pytest.mark.parametrize(
    ("sr", "factor", "tone"), [(40000, 5, 5000.0), (40000, 5, 6000.0), (44100, 5, 6000.0), (48000, 6, 4500.0)]
)
def test_decimation_aliases_a_high_tone_and_resampling_suppresses_it(sr, factor, tone):
    x = np.sin(2 * np.pi * tone * np.arange(sr) / sr).astype(np.float32)  # 1 s, amplitude 1
    alias_naive = abs(sr / factor - tone)  # where the tone folds to after x[::5]
    naive = naive_decimate(x, factor)
    np.testing.assert_array_equal(naive, x[::factor])
    naive_level = 20 * np.log10(tone_amplitude(naive, sr // factor, alias_naive))
    assert naive_level > -1.0, "x[::5] keeps the tone at nearly full level, as an in-band alias"

    proper = resample(x, sr, TARGET_SR)
    alias = TARGET_SR - tone  # where the tone would fold to at 8 kHz
    proper_level = 20 * np.log10(tone_amplitude(proper, TARGET_SR, alias) + 1e-12)
    assert proper_level < -40.0  # the requirement
    assert proper_level < -90.0  # what the chosen filter (audio.RESAMPLING) measures


@pytest.mark.parametrize(("freq", "max_loss_db"),
                         [(100.0, 0.02), (1000.0, 0.02), (3000.0, 0.02), (3400.0, 0.05), (3500.0, 0.2)])
@pytest.mark.parametrize("sr", [44100, 48000, 11025])
def test_resampling_passband_is_flat(sr, freq, max_loss_db):
    x = np.sin(2 * np.pi * freq * np.arange(sr) / sr).astype(np.float32)
    y = resample(x, sr, TARGET_SR)
    level = 20 * np.log10(tone_amplitude(y, TARGET_SR, freq))
    assert -max_loss_db < level < 0.02


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------


def test_resample_same_rate_returns_input_unchanged():
    x = np.linspace(-1, 1, 100, dtype=np.float32)
    assert resample(x, 8000, 8000) is x


def test_resample_shapes_channels_and_empty():
    sr = 22050
    x = known_signal(np.arange(sr) / sr, 2).astype(np.float32)
    y = resample(x, sr)
    assert y.shape == (TARGET_SR, 2) and y.dtype == np.float32 and y.flags.c_contiguous
    # Each channel is resampled on its own: same as resampling the channels separately.
    np.testing.assert_allclose(y[:, 1], resample(np.ascontiguousarray(x[:, 1]), sr), atol=1e-6)
    assert resample(np.zeros(0, np.float32), 44100).shape == (0,)
    assert resample(np.zeros(3, np.float32), 44100).shape == (1,)


def test_resample_accepts_read_only_and_float64_input():
    x = np.sin(np.arange(4410) / 7.0)
    x.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = resample(x, 44100)
    assert y.dtype == np.float32 and y.shape == (800,)


RATE_PAIRS = [
    (44100, 8000), (48000, 8000), (96000, 8000), (22050, 8000), (11025, 8000), (32000, 8000),
    (16000, 8000), (24000, 8000), (12000, 8000), (88200, 8000), (8000, 16000),
    # Rates with no common factor, the worst case for a polyphase filter: one phase per output
    # sample. 801 -> 800 has the structure of 8001 -> 8000 at a hundredth of the filter bank (whose
    # 8000 phases of 8 069 taps take seconds to build, torchaudio's and ours alike).
    (801, 800),
]


@pytest.mark.parametrize("orig_sr, new_sr", RATE_PAIRS)
@pytest.mark.parametrize("frames", [1, 37, 4410, 17_641])
def test_resampler_matches_torchaudio(orig_sr, new_sr, frames):
    # The phase-expanded kernel must compute torchaudio's resampling exactly (to float rounding),
    # for every rate UrbanSound8K uses, any length, and several channels at once.
    import torch
    import torchaudio

    x = torch.from_numpy(np.random.default_rng(frames).uniform(-1, 1, (3, frames)).astype(np.float32))
    reference = torchaudio.transforms.Resample(orig_sr, new_sr, **audio.RESAMPLING)
    with torch.inference_mode():
        expected, got = reference(x), audio._resampler(orig_sr, new_sr)(x)
        got_1d = audio._resampler(orig_sr, new_sr)(x[1])
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_1d, expected[1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("sr", [44100, 48000])
def test_format_clip_pcm16_fast_path_equals_the_float_path(tmp_path, channels, sr):
    # format_clip reads PCM_16 as int16 and downmixes before converting: the result must be bit
    # for bit what read_wav (float32) -> to_mono -> resample -> pad_or_crop gives.
    rng = np.random.default_rng(channels)
    x = rng.integers(-32768, 32768, (sr * 2, channels)).astype(np.int16)
    x[:50] = [-32768] * channels  # full-scale negative samples too
    path = tmp_path / "clip.wav"
    sf.write(path, x, sr, subtype="PCM_16")
    decoded, rate = read_wav(path)
    assert decoded.dtype == np.float32 and rate == sr
    expected = pad_or_crop(resample(to_mono(decoded), sr, TARGET_SR), TARGET_LENGTH)
    np.testing.assert_array_equal(format_clip(path), expected)


def test_resampler_is_built_once_per_rate_pair():
    assert audio._resampler(44100, 8000) is audio._resampler(44100, 8000)
    assert audio._resampler(44100, 8000) is not audio._resampler(48000, 8000)


@pytest.mark.parametrize("bad", [0, -8000, 8000.5, True])
def test_resample_rejects_bad_rates(bad):
    with pytest.raises(ValueError, match="positive integer"):
        resample(np.zeros(10, np.float32), bad)


def test_to_mono_averages_channels():
    x = np.array([[1.0, 0.0, -0.5], [0.5, 0.5, 0.5]], dtype=np.float32)
    np.testing.assert_allclose(to_mono(x), [1.0 / 6.0, 0.5])
    single = np.arange(4, dtype=np.float32)[:, None]
    mono = to_mono(single)
    assert mono.shape == (4,) and np.shares_memory(mono, single)
    assert to_mono(np.arange(3, dtype=np.float64)).dtype == np.float32
    with pytest.raises(ValueError):
        to_mono(np.zeros((2, 2, 2)))


def test_pad_or_crop():
    x = np.arange(1, 6, dtype=np.float32)
    np.testing.assert_array_equal(pad_or_crop(x, 8), [1, 2, 3, 4, 5, 0, 0, 0])
    np.testing.assert_array_equal(pad_or_crop(x, 3), [1, 2, 3])
    assert pad_or_crop(x, 5).shape == (5,)
    assert pad_or_crop(np.ones((2, 3)), 4).shape == (4, 3)
    with pytest.raises(ValueError):
        pad_or_crop(x, 0)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def _good_wav_bytes() -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(800), 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def make_empty(p: Path) -> Path:
    p.write_bytes(b"")
    return p


def make_truncated_header(p: Path) -> Path:
    p.write_bytes(_good_wav_bytes()[:20])  # cut inside the fmt chunk
    return p


def make_riff_only(p: Path) -> Path:
    p.write_bytes(b"RIFF")
    return p


def make_random_bytes(p: Path) -> Path:
    p.write_bytes(np.random.default_rng(0).bytes(3000))
    return p


def make_text(p: Path) -> Path:
    p.write_text("slice_file_name,fsID\n" * 20)
    return p


def make_riff_not_wave(p: Path) -> Path:
    p.write_bytes(b"RIFF" + (100).to_bytes(4, "little") + b"AVI " + bytes(100))
    return p


def make_flac(p: Path) -> Path:
    sf.write(p, np.zeros(800), 8000, format="FLAC")
    return p


def make_zero_samples(p: Path) -> Path:
    sf.write(p, np.zeros((0, 2)), 44100, subtype="PCM_16")
    return p


def make_truncated_data(p: Path) -> Path:
    p.write_bytes(_good_wav_bytes()[:44 + 600])  # header says 1600 bytes of audio, 600 present
    return p


def _float_with(value: float, subtype: str):
    def make(p: Path) -> Path:
        x = np.zeros((400, 2))
        x[123, 1] = value
        sf.write(p, x, 8000, subtype=subtype)
        return p

    return make


def make_directory(p: Path) -> Path:
    p.mkdir()
    return p


def make_missing(p: Path) -> Path:
    return p


def make_dangling_symlink(p: Path) -> Path:
    p.symlink_to(p.parent / "gone.wav")
    return p


# (maker, expected problem text, read_header detects it too)
BAD_INPUTS = {
    "empty": (make_empty, "empty file (0 bytes)", True),
    "truncated-header": (make_truncated_header, "truncated or invalid WAV header", True),
    "riff-only": (make_riff_only, "truncated or invalid WAV header", True),
    "random-bytes": (make_random_bytes, "not a WAV file", True),
    "text": (make_text, "not a WAV file", True),
    "riff-avi": (make_riff_not_wave, "not a WAV file", True),
    "flac-named-wav": (make_flac, "not a WAV file (it starts with b'fLaC'", True),
    "zero-samples": (make_zero_samples, "no audio samples", False),
    "truncated-data": (make_truncated_data,
                       "truncated data chunk: the header declares 1600 bytes of audio but only 600", True),
    "nan-float": (_float_with(np.nan, "FLOAT"), "contains NaN/Inf samples (1 of 800, first at frame 123)", False),
    "inf-double": (_float_with(np.inf, "DOUBLE"), "contains NaN/Inf samples", False),
    "minus-inf-float": (_float_with(-np.inf, "FLOAT"), "contains NaN/Inf samples", False),
    "huge-float": (_float_with(1e30, "FLOAT"), "float samples reach 1e+30 (600 dB above full scale)", False),
    "huge-double": (_float_with(-5e3, "DOUBLE"), "float samples reach 5e+03", False),
    "directory": (make_directory, "is a directory", True),
    "missing": (make_missing, "does not exist", True),
    "dangling-symlink": (make_dangling_symlink, "is a broken symbolic link", True),
}


def test_a_float_wav_louder_than_full_scale_but_within_the_limit_reads(tmp_path):
    path = _float_with(MAX_FLOAT_PEAK, "FLOAT")(tmp_path / "loud.wav")  # 60 dB over: clipped on playback, kept here
    x, _ = read_wav(path)
    assert float(np.abs(x).max()) == MAX_FLOAT_PEAK


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_raises_audio_error_naming_file_and_problem(tmp_path, case):
    maker, problem, header_detects = BAD_INPUTS[case]
    path = maker(tmp_path / "bad.wav")
    for fn in (read_wav, format_clip) + ((read_header,) if header_detects else ()):
        with pytest.raises(AudioError) as info:
            fn(path)
        message = str(info.value)
        assert message.startswith(str(path)), message
        assert problem in message, message
        assert info.value.path == path


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path):
    path = tmp_path / "locked.wav"
    path.write_bytes(_good_wav_bytes())
    path.chmod(0)
    with pytest.raises(AudioError, match="permission denied"):
        read_wav(path)


def test_float_file_above_full_scale_is_returned_as_stored(tmp_path):
    # Documented choice: float WAVs may legally exceed +-1; read_wav keeps their level.
    path = tmp_path / "hot.wav"
    x = np.full((100, 1), 0.25)
    x[50] = 1.5
    sf.write(path, x, 8000, subtype="FLOAT")
    decoded, _ = read_wav(path)
    assert decoded[50, 0] == pytest.approx(1.5)


# ---------------------------------------------------------------------------------------------
# Headers and the format table (notebook 1)
# ---------------------------------------------------------------------------------------------

HEADER_CASES = [
    # subtype, channels, sr, fmt, bits, is_float, description
    ("PCM_16", 2, 44100, "WAV", 16, False, "PCM 16-bit stereo 44.1 kHz"),
    ("PCM_24", 1, 96000, "WAVEX", 24, False, "WAVE_FORMAT_EXTENSIBLE PCM 24-bit mono 96 kHz"),
    ("PCM_U8", 1, 11025, "WAV", 8, False, "PCM unsigned 8-bit mono 11.025 kHz"),
    ("PCM_32", 6, 48000, "WAV", 32, False, "PCM 32-bit 6-channel 48 kHz"),
    ("FLOAT", 2, 48000, "WAV", 32, True, "IEEE float 32-bit stereo 48 kHz"),
    ("DOUBLE", 1, 8000, "WAV", 64, True, "IEEE float 64-bit mono 8 kHz"),
    ("MS_ADPCM", 1, 44100, "WAV", 4, False, "MS ADPCM 4-bit mono 44.1 kHz"),
    ("IMA_ADPCM", 2, 22050, "WAV", 4, False, "IMA ADPCM 4-bit stereo 22.05 kHz"),
]


@pytest.mark.parametrize(("subtype", "channels", "sr", "fmt", "bits", "is_float", "description"), HEADER_CASES)
def test_read_header(tmp_path, subtype, channels, sr, fmt, bits, is_float, description):
    path = tmp_path / "h.wav"
    write_known(path, sr, channels, subtype, fmt, seconds=0.25)
    h = read_header(path)
    info = sf.info(str(path))
    assert (h["samplerate"], h["channels"], h["frames"]) == (sr, channels, info.frames)
    assert h["duration"] == pytest.approx(info.frames / sr)
    assert (h["format"], h["subtype"], h["bits"], h["is_float"]) == (fmt, subtype, bits, is_float)
    assert h["description"] == description
    assert h["size"] == path.stat().st_size and h["file"] == "h.wav"


def test_compute_format_table_and_summary(tmp_path):
    paths = []
    formats = [("PCM_16", 2, 44100, "WAV")] * 3 + [("PCM_24", 1, 48000, "WAVEX")]
    for i, (subtype, channels, sr, fmt) in enumerate(formats):
        p = tmp_path / f"{i}.wav"
        write_known(p, sr, channels, subtype, fmt, seconds=0.1)
        paths.append(p)
    table = compute_format_table(paths, progress=False)
    assert list(table["file"]) == ["0.wav", "1.wav", "2.wav", "3.wav"]
    assert list(table["samplerate"]) == [44100, 44100, 44100, 48000]
    assert table["bits"].dtype == "Int64" and list(table["bits"]) == [16, 16, 16, 24]
    summary = format_summary(table)
    assert summary.loc["PCM 16-bit stereo 44.1 kHz", "files"] == 3
    assert summary.loc["WAVE_FORMAT_EXTENSIBLE PCM 24-bit mono 48 kHz", "share"] == 25.0

    bad = make_empty(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="empty file"):
        compute_format_table(paths + [bad], progress=False)
    table = compute_format_table(paths + [bad], skip_bad=True, progress=False)
    assert len(table) == 5 and table["problem"][:4].isna().all()
    assert table.loc[4, "problem"] == "empty file (0 bytes)" and pd.isna(table.loc[4, "samplerate"])
    assert format_summary(table)["files"].sum() == 4


# ---------------------------------------------------------------------------------------------
# Listening and looking (notebook 2)
# ---------------------------------------------------------------------------------------------


def test_wav_bytes_round_trip_clipping_and_normalisation():
    sr = 8000
    x = 0.25 * np.sin(2 * np.pi * 440 * np.arange(sr) / sr)
    data = wav_bytes(x, sr)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    y, ysr = sf.read(io.BytesIO(data), dtype="float32")
    assert ysr == sr and sf.info(io.BytesIO(data)).subtype == "PCM_16"
    np.testing.assert_allclose(y, x, atol=1 / 32767)

    loud = wav_bytes(np.array([0.0, 1.5, -3.0, 0.5]), sr)
    pcm, _ = sf.read(io.BytesIO(loud), dtype="int16")
    assert pcm.tolist() == [0, 32767, -32767, 16384]

    normed, _ = sf.read(io.BytesIO(wav_bytes(x, sr, normalize=True)), dtype="int16")
    assert np.abs(normed).max() == 32767

    stereo, _ = sf.read(io.BytesIO(wav_bytes(np.zeros((10, 2)), 16000)))
    assert stereo.shape == (10, 2)
    with pytest.raises(ValueError):
        wav_bytes(np.array([0.0, np.nan]), sr)


def test_spectrogram_reads_minus_six_db_for_a_half_scale_sine():
    sr, n_fft = 8000, 512
    t = np.arange(2 * sr) / sr
    x = 0.5 * np.sin(2 * np.pi * 1000 * t) + 0.05 * np.sin(2 * np.pi * 3000 * t)  # bins 64 and 192
    db, freqs, times = compute_spectrogram(x, sr, n_fft=n_fft)
    assert db.shape == (n_fft // 2 + 1, len(times)) and db.dtype == np.float32
    assert freqs[1] == sr / n_fft and freqs[-1] == sr / 2
    assert times[1] - times[0] == pytest.approx(n_fft / 4 / sr) and len(times) == 2 * sr // (n_fft // 4) + 1
    middle = db[:, len(times) // 2]
    assert freqs[np.argmax(middle)] == 1000
    assert middle[64] == pytest.approx(-6.02, abs=0.05)
    assert middle[192] == pytest.approx(-26.02, abs=0.05)
    assert db.min() >= db.max() - 80.0 - 1e-3  # top_db floor
    short, _, t_short = compute_spectrogram(np.ones(10), sr, n_fft=n_fft, hop_length=4)
    assert short.shape[1] == len(t_short) == 3


# ---------------------------------------------------------------------------------------------
# The real thing: one real clip per format found in UrbanSound8K
# ---------------------------------------------------------------------------------------------


def test_real_clips_decode_and_format(shared_reference):
    clips = sorted((shared_reference / "real-clips").rglob("*.wav"))
    assert len(clips) >= 10
    for path in clips:
        info = sf.info(str(path))
        x, sr = read_wav(path)
        assert (sr, x.shape) == (info.samplerate, (info.frames, info.channels)), path
        assert np.isfinite(x).all() and np.abs(x).max() <= 1.0 and np.abs(x).max() > 0.01, path
        out = format_clip(path)
        assert out.shape == (TARGET_LENGTH,) and out.dtype == np.float32, path
        n8 = -(-info.frames * TARGET_SR // info.samplerate)
        assert np.all(out[n8:] == 0) and np.abs(out[:n8]).max() > 0.005, path
        assert read_header(path)["frames"] == info.frames
    table = compute_format_table(clips, progress=False)
    assert {"WAV", "WAVEX"} <= set(table["format"])
    assert {"PCM_U8", "PCM_16", "PCM_24", "FLOAT", "MS_ADPCM"} <= set(table["subtype"])
