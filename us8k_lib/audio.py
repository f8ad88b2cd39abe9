"""Decode UrbanSound8K WAV files and format them for M5: mono, 8 kHz, 4 s (32 000 samples).

UrbanSound8K clips keep the formats of their freesound.org sources: 8-bit to 32-bit integer PCM,
32/64-bit float, 4-bit ADPCM, WAVE_FORMAT_EXTENSIBLE headers, 1 to 8 channels, 8 to 96 kHz,
0.05 to 4 s. :func:`read_wav` decodes any of them with soundfile and :func:`format_clip` turns one
into the fixed-size input M5 expects. :func:`naive_decimate` keeps the original tutorial's
``x[::5]`` to show why it is wrong: without a low-pass filter everything above 4 kHz folds back
into the band (aliasing), and it assumed every file was 44.1 kHz.
"""

from __future__ import annotations

import io
import math
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from us8k_lib._compat import require_torchaudio
from us8k_lib.errors import AudioError

# A torchaudio built for another torch fails here with a message that says how to repair it.
torchaudio = require_torchaudio()

__all__ = [
    "TARGET_SR",
    "TARGET_LENGTH",
    "RESAMPLING",
    "read_wav",
    "to_mono",
    "resample",
    "pad_or_crop",
    "format_clip",
    "naive_decimate",
    "read_header",
    "wav_bytes",
    "compute_spectrogram",
]

#: Sample rate M5 is trained on (Hz).
TARGET_SR = 8000
#: Samples per formatted clip: 4 s at 8 kHz, the longest UrbanSound8K slice.
TARGET_LENGTH = 32000

#: Windowed-sinc low-pass used by :func:`resample` (torchaudio's Kaiser-windowed sinc).
#: Chosen by measuring sine tones resampled from 44.1 and 48 kHz to 8 kHz, against torchaudio's
#: default (Hann, width 6, rolloff 0.99), which loses 1.3 dB at 3.4 kHz and lets a 4.6 kHz tone
#: through at -20 dB (it aliases to 3.4 kHz). These settings: passband flat to 0.01 dB up to
#: 3.4 kHz and -0.11 dB at 3.5 kHz; a tone of 4.3 kHz or more (which would land at or below
#: 3.7 kHz) is attenuated by >= 120 dB, beyond 16-bit's 96 dB range. torchaudio's equivalent of
#: resampy's "kaiser_best" (width 64) is flat 0.2 kHz further up but costs twice as much on
#: 48/96 kHz files, and the cache build resamples every clip.
RESAMPLING: dict[str, Any] = {
    "resampling_method": "sinc_interp_kaiser",
    "lowpass_filter_width": 32,
    "rolloff": 0.945,
    "beta": 12.0,
}

# Containers read_wav accepts: libsndfile names RIFF/WAVE "WAV", or "WAVEX" when the header is
# WAVE_FORMAT_EXTENSIBLE; RF64 is the >4 GB variant of the same format.
_WAV_FORMATS = frozenset({"WAV", "WAVEX", "RF64"})

_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
#: The largest sample a float WAV may hold: 60 dB above full scale. Float files may go past +-1
#: (mastered hot, legitimately), but not by a factor of a thousand.
MAX_FLOAT_PEAK = 1e3

# Bits per stored sample; ADPCM stores 4-bit codes. None for codecs without a fixed depth.
_SUBTYPE_BITS: dict[str, int] = {
    "PCM_S8": 8,
    "PCM_U8": 8,
    "PCM_16": 16,
    "PCM_24": 24,
    "PCM_32": 32,
    "FLOAT": 32,
    "DOUBLE": 64,
    "ULAW": 8,
    "ALAW": 8,
    "IMA_ADPCM": 4,
    "MS_ADPCM": 4,
}

_SUBTYPE_KIND: dict[str, str] = {
    "PCM_S8": "PCM",
    "PCM_U8": "PCM unsigned",
    "PCM_16": "PCM",
    "PCM_24": "PCM",
    "PCM_32": "PCM",
    "FLOAT": "IEEE float",
    "DOUBLE": "IEEE float",
    "ULAW": "u-law",
    "ALAW": "A-law",
    "IMA_ADPCM": "IMA ADPCM",
    "MS_ADPCM": "MS ADPCM",
}

# Sizes in the RIFF header that mean "unknown" (streamed output, or RF64's real size lives in ds64).
_PLACEHOLDER_SIZES = frozenset({0, 0xFFFFFFFF})


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _check_file(path: Path) -> int:
    """Raise AudioError unless ``path`` is a readable, non-empty regular file; return its size."""
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        raise AudioError(path, "does not exist") from None
    except OSError as e:
        raise AudioError(path, f"cannot be accessed ({e.strerror})") from None
    try:
        st = os.stat(path) if stat.S_ISLNK(lst.st_mode) else lst
    except FileNotFoundError:
        raise AudioError(path, f"is a broken symbolic link (its target {os.readlink(path)!r} does not exist)") from None
    except OSError as e:
        raise AudioError(path, f"is a symbolic link that cannot be followed ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise AudioError(path, "is a directory, not a WAV file")
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(path, "is not a regular file")
    if st.st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return st.st_size


def _check_riff(path: Path, size: int) -> None:
    """Raise AudioError if the file is not RIFF/WAVE, or its data chunk is cut short.

    libsndfile silently decodes whatever part of a truncated data chunk is present (it only notes
    "data : 16000 (should be 2000)" in its log), so a download cut short would otherwise look
    like a shorter clip. Walking the chunk list costs a few small reads.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            magic = head[:4]
            if len(head) < 12:
                if len(head) >= 4 and magic not in (b"RIFF", b"RIFX", b"RF64"):
                    raise AudioError(path, f"not a WAV file (it starts with {magic!r}, not b'RIFF')")
                raise AudioError(path, f"truncated or invalid WAV header: the file is only {size} bytes")
            if magic not in (b"RIFF", b"RIFX", b"RF64"):
                raise AudioError(path, f"not a WAV file (it starts with {magic!r}, not b'RIFF')")
            if head[8:12] != b"WAVE":
                raise AudioError(path, f"not a WAV file (a RIFF container of type {head[8:12]!r}, not b'WAVE')")
            if magic == b"RF64":
                return  # sizes live in the ds64 chunk; libsndfile validates those itself
            order = "big" if magic == b"RIFX" else "little"
            pos = 12
            for _ in range(10_000):  # bounded: a corrupt size could otherwise loop on tiny chunks
                if pos + 8 > size:
                    return  # no data chunk: libsndfile reports the header problem
                f.seek(pos)
                chunk = f.read(8)
                declared = int.from_bytes(chunk[4:8], order)
                if chunk[:4] == b"data":
                    available = size - (pos + 8)
                    if declared not in _PLACEHOLDER_SIZES and declared > available:
                        raise AudioError(
                            path,
                            f"truncated data chunk: the header declares {declared} bytes of audio but only "
                            f"{available} are present (file cut short, e.g. by an interrupted download or copy)",
                        )
                    return
                pos += 8 + declared + (declared & 1)  # chunks are padded to an even size
    except PermissionError:
        raise AudioError(path, "cannot be read (permission denied)") from None
    except OSError as e:
        raise AudioError(path, f"cannot be read ({e.strerror})") from None


def _check_wav(path: str | Path) -> Path:
    """Run every check that needs only the file system and the RIFF header; return the Path."""
    path = Path(path)
    _check_riff(path, _check_file(path))
    return path


def _libsndfile_detail(err: Exception) -> str:
    return (getattr(err, "error_string", None) or str(err)).strip()


def _header_problem(err: Exception) -> str:
    detail = _libsndfile_detail(err)
    if "not recognised" in detail:
        # A RIFF/WAVE file libsndfile cannot open is either corrupt or uses a codec it lacks.
        detail += " (corrupt, or an audio codec libsndfile cannot decode)"
    return f"truncated or invalid WAV header: {detail}"


def _check_container(path: Path, fmt: str) -> None:
    if fmt not in _WAV_FORMATS:
        raise AudioError(path, f"not a WAV file (soundfile reads it as {fmt})")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a WAV file of any subtype UrbanSound8K uses.

    Handles PCM_U8/16/24/32, FLOAT, DOUBLE, IMA and MS ADPCM, plain and WAVE_FORMAT_EXTENSIBLE
    headers, any channel count and sample rate.

    Args:
        path: the WAV file.

    Returns:
        ``(samples, sample_rate)``: samples is float32 of shape (frames, channels). Integer and
        ADPCM files are scaled into [-1, 1); float files are returned as stored, so a float file
        mastered above full scale keeps its level (values beyond +-1 are legal there).

    Raises:
        AudioError: naming the file and the problem: does not exist, broken symbolic link, is a
            directory, empty file (0 bytes), not a WAV file, truncated or invalid WAV header,
            truncated data chunk, no audio samples, NaN/Inf samples, or float samples beyond
            :data:`MAX_FLOAT_PEAK`.

    Used by notebook 3.
    """
    return _decode(path, keep_int16=False)


def _decode(path: str | Path, keep_int16: bool) -> tuple[np.ndarray, int]:
    """read_wav, returning PCM_16 files' samples as int16 when ``keep_int16``."""
    path = _check_wav(path)
    try:
        f = sf.SoundFile(path)
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(path, _header_problem(e)) from None
    with f:
        _check_container(path, f.format)
        sr, subtype = f.samplerate, f.subtype
        # Decoding as float32 (libsndfile converts) took 3.7x as long as as int16 for 4 s of
        # 44.1 kHz stereo (benchmark, P2 detail): format_clip converts after downmixing, to the
        # same values.
        dtype = "int16" if keep_int16 and subtype == "PCM_16" else "float32"
        try:
            x = f.read(dtype=dtype, always_2d=True)
        except (sf.SoundFileError, RuntimeError) as e:
            raise AudioError(path, f"cannot decode the audio data: {_libsndfile_detail(e)}") from None
    if x.shape[0] == 0:
        raise AudioError(path, "no audio samples (the header is valid but the data chunk is empty)")
    # Only float subtypes can store NaN/Inf. One float64 sum instead of an isfinite mask: finite
    # float32 values cannot overflow a float64 sum, so it is non-finite exactly when a sample is.
    if subtype in _FLOAT_SUBTYPES and not math.isfinite(float(x.sum(dtype=np.float64))):
        bad = ~np.isfinite(x)
        first = int(np.argmax(bad.any(axis=1)))
        raise AudioError(
            path,
            f"contains NaN/Inf samples ({int(bad.sum())} of {x.size}, first at frame {first}); "
            "a float WAV can store them, but no model can learn from them",
        )
    if subtype in _FLOAT_SUBTYPES and (peak := float(np.abs(x).max())) > MAX_FLOAT_PEAK:
        raise AudioError(path, f"float samples reach {peak:.3g} ({20 * math.log10(peak):.0f} dB above full scale): a "
                               "float WAV is meant to lie within about [-1, 1], and a level this far above it is a "
                               "broken file, not a loud one")
    return x, sr


def to_mono(x: np.ndarray) -> np.ndarray:
    """Downmix to one channel by averaging the channels.

    Args:
        x: (frames,) or (frames, channels), as returned by :func:`read_wav`.

    Returns:
        float32 array of shape (frames,); a view of ``x`` when it already has one channel.

    Used by notebook 3.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.ndim != 2:
        raise ValueError(f"expected (frames,) or (frames, channels), got shape {x.shape}")
    channels = x.shape[1]
    if channels == 1:
        return x[:, 0].astype(np.float32, copy=False)
    # Adding whole columns is ~20x faster than x.mean(axis=1), whose reduction runs over a
    # 2-element inner axis; this is on the cache build's hot path.
    y = x[:, 0].astype(np.float32)  # always a copy: a column of a 2-D array is strided
    for c in range(1, channels):
        y += x[:, c]
    y /= np.float32(channels)
    return y


class _Resampler:
    """torchaudio's windowed-sinc resampling (:data:`RESAMPLING`), computed with more phases at once.

    torchaudio reduces ``orig/new`` by their gcd and runs one strided convolution with one output
    channel per output phase: 80 for 44.1 kHz -> 8 kHz, but a single one for 48 or 96 kHz
    (6:1, 12:1), where PyTorch's CPU convolution runs at a tenth of its speed. Here the kernel is
    repeated, each copy shifted by ``orig`` input samples, until there are at least
    :attr:`PHASES` output channels. Each output is the same sum of the same products, so it
    matches torchaudio's to float rounding (a test checks 12 rate pairs), and it is 8-11x faster
    from 48 and 96 kHz (benchmark, P2 detail; 44.1 kHz already had 80 phases, same speed).
    """

    PHASES = 32

    def __init__(self, orig_sr: int, new_sr: int) -> None:
        reference = torchaudio.transforms.Resample(orig_sr, new_sr, **RESAMPLING)
        gcd = math.gcd(orig_sr, new_sr)
        self.orig, self.new, self.width = orig_sr // gcd, new_sr // gcd, int(reference.width)
        kernel = reference.kernel  # [new, 1, taps]: one filter per output phase
        self.copies = max(1, -(-self.PHASES // self.new))
        if self.copies > 1:
            taps = kernel.shape[-1]
            wide = torch.zeros(self.new * self.copies, 1, taps + (self.copies - 1) * self.orig, dtype=kernel.dtype)
            for q in range(self.copies):
                wide[q * self.new : (q + 1) * self.new, :, q * self.orig : q * self.orig + taps] = kernel
            kernel = wide
        self.kernel = kernel

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Resample ``x [..., frames]`` along its last axis; same shape rules as torchaudio's."""
        lead, length = x.shape[:-1], x.shape[-1]
        x = x.reshape(-1, length)
        # Same zero padding as torchaudio, plus room for the extra copies' later outputs.
        padded = torch.nn.functional.pad(x, (self.width, self.width + self.orig * self.copies))
        y = torch.nn.functional.conv1d(padded[:, None], self.kernel, stride=self.orig * self.copies)
        y = y.transpose(1, 2).reshape(x.shape[0], -1)[:, : math.ceil(self.new * length / self.orig)]
        return y.reshape(*lead, -1)


@lru_cache(maxsize=64)
def _resampler(orig_sr: int, new_sr: int) -> _Resampler:
    # The filter bank is computed once per rate pair: UrbanSound8K has about a dozen sample
    # rates, so this saves recomputing the kernel for each of the 8 732 clips.
    return _Resampler(orig_sr, new_sr)


def _check_rate(name: str, sr: Any) -> int:
    if isinstance(sr, bool) or not isinstance(sr, (int, np.integer)) or sr <= 0:
        raise ValueError(f"{name} must be a positive integer number of Hz, got {sr!r}")
    return int(sr)


def resample(x: np.ndarray, orig_sr: int, new_sr: int = TARGET_SR) -> np.ndarray:
    """Resample with an anti-aliasing windowed-sinc filter (torchaudio, see :data:`RESAMPLING`).

    Args:
        x: (frames,) or (frames, channels).
        orig_sr: sample rate of ``x`` in Hz.
        new_sr: wanted sample rate in Hz.

    Returns:
        float32 array with ``ceil(frames * new_sr / orig_sr)`` frames and the channels of ``x``;
        ``x`` itself (as float32) when the rates are equal.

    Used by notebook 3.
    """
    orig_sr, new_sr = _check_rate("orig_sr", orig_sr), _check_rate("new_sr", new_sr)
    x = np.asarray(x, dtype=np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"expected (frames,) or (frames, channels), got shape {x.shape}")
    if orig_sr == new_sr:
        return x
    if x.shape[0] == 0:
        return np.zeros((0,) + x.shape[1:], dtype=np.float32)
    # torch resamples along the last axis, so channels go first; from_numpy shares the buffer
    # but refuses read-only arrays (e.g. a read-only memmap) without a warning.
    signal = np.ascontiguousarray(x.T if x.ndim == 2 else x)
    if not signal.flags.writeable:
        signal = signal.copy()
    with torch.inference_mode():
        y = _resampler(orig_sr, new_sr)(torch.from_numpy(signal)).numpy()
    return np.ascontiguousarray(y.T) if x.ndim == 2 else y


def pad_or_crop(x: np.ndarray, length: int = TARGET_LENGTH) -> np.ndarray:
    """Zero-pad at the end, or keep the first ``length`` frames.

    Args:
        x: (frames,) or (frames, channels).
        length: wanted number of frames.

    Returns:
        Array of ``length`` frames, same dtype; a view of ``x`` when cropping or already right.

    Used by notebook 3.
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length <= 0:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    x = np.asarray(x)
    if x.ndim == 0:
        raise ValueError("expected an array of samples, got a scalar")
    n = x.shape[0]
    if n >= length:
        return x[:length]
    out = np.zeros((length,) + x.shape[1:], dtype=x.dtype)
    out[:n] = x
    return out


def format_clip(path: str | Path, *, sr: int = TARGET_SR, length: int = TARGET_LENGTH) -> np.ndarray:
    """Decode a clip and make it M5's input: mono, resampled to ``sr``, padded/cropped to ``length``.

    Args:
        path: the WAV file.
        sr: target sample rate in Hz.
        length: target number of samples.

    Returns:
        float32 array of shape (length,).

    Raises:
        AudioError: as :func:`read_wav`.

    Used by notebook 3.
    """
    x, orig_sr = _decode(path, keep_int16=True)
    mono = _pcm16_to_mono(x) if x.dtype == np.int16 else to_mono(x)
    y = pad_or_crop(resample(mono, orig_sr, sr), length)
    # A crop is a view into the longer resampled buffer: copy so the caller holds only `length`.
    return y.copy() if y.base is not None else y


def _pcm16_to_mono(x: np.ndarray) -> np.ndarray:
    """to_mono(x / 32768) for int16 ``(frames, channels)``, bit for bit: the int16 sums are exact
    in float32, and scaling by a power of two before dividing by the channel count is what the
    float path computes."""
    f = x.astype(np.float32)  # one contiguous cast: 2x faster than casting strided columns
    y = f[:, 0] + f[:, 1] if x.shape[1] > 1 else f[:, 0].copy()
    for c in range(2, x.shape[1]):
        y += f[:, c]
    y *= np.float32(1 / 32768)
    if x.shape[1] > 1:
        y /= np.float32(x.shape[1])
    return y


def naive_decimate(x: np.ndarray, factor: int = 5) -> np.ndarray:
    """Keep every ``factor``-th sample, as the original tutorial did (``x[::5]``), with no filter.

    This is wrong on purpose: content above the new Nyquist frequency folds back into the band
    (a 6 kHz tone at 40 kHz becomes a 2 kHz tone at 8 kHz), and 44.1 kHz / 5 is 8 820 Hz, not 8 kHz,
    so the tutorial's clips were also at the wrong rate. Compare with :func:`resample`.

    Args:
        x: (frames,) or (frames, channels).
        factor: keep one sample out of ``factor``.

    Returns:
        A new contiguous array of ``ceil(frames / factor)`` frames.

    Used by notebook 3.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor <= 0:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    return np.ascontiguousarray(np.asarray(x)[::factor])


# --------------------------------------------------------------------------------------------
# Headers: a file's format without its samples
# --------------------------------------------------------------------------------------------


def _describe(fmt: str, subtype: str, bits: int | None, channels: int, samplerate: int) -> str:
    kind = _SUBTYPE_KIND.get(subtype, subtype)
    depth = f" {bits}-bit" if bits else ""
    chans = {1: "mono", 2: "stereo"}.get(channels, f"{channels}-channel")
    prefix = "WAVE_FORMAT_EXTENSIBLE " if fmt == "WAVEX" else ""
    return f"{prefix}{kind}{depth} {chans} {samplerate / 1000:g} kHz"


def read_header(path: str | Path) -> dict[str, Any]:
    """Read a WAV file's format without decoding its samples.

    Args:
        path: the WAV file.

    Returns:
        dict with ``path``, ``file`` (name), ``samplerate``, ``channels``, ``frames``,
        ``duration`` (s), ``format`` ("WAV", or "WAVEX" for WAVE_FORMAT_EXTENSIBLE), ``subtype``
        (soundfile's name, e.g. "PCM_16"), ``bits`` (8/16/24/32/64, 4 for ADPCM, None if the
        codec has no fixed depth), ``is_float``, ``size`` (bytes) and ``description`` (e.g.
        "PCM 16-bit stereo 44.1 kHz").

    Raises:
        AudioError: as :func:`read_wav`, for every problem visible without decoding.

    Used by :func:`us8k_lib.formats.compute_format_table` (notebook 1), notebook 3 and ``validate``.
    """
    path = _check_wav(path)
    try:
        info = sf.info(str(path))
    except (sf.SoundFileError, RuntimeError) as e:
        raise AudioError(path, _header_problem(e)) from None
    _check_container(path, info.format)
    bits = _SUBTYPE_BITS.get(info.subtype)
    return {
        "path": str(path),
        "file": path.name,
        "samplerate": int(info.samplerate),
        "channels": int(info.channels),
        "frames": int(info.frames),
        "duration": float(info.frames / info.samplerate),
        "format": info.format,
        "subtype": info.subtype,
        "bits": bits,
        "is_float": info.subtype in _FLOAT_SUBTYPES,
        "size": path.stat().st_size,
        "description": _describe(info.format, info.subtype, bits, info.channels, info.samplerate),
    }


# --------------------------------------------------------------------------------------------
# Listening and looking
# --------------------------------------------------------------------------------------------


def wav_bytes(x: np.ndarray, sr: int, *, normalize: bool = False) -> bytes:
    """Encode samples as an in-memory 16-bit PCM WAV file, e.g. for ``ipywidgets.Audio(format='wav')``.

    Args:
        x: (frames,) or (frames, channels) samples, nominally in [-1, 1].
        sr: sample rate in Hz.
        normalize: scale so the peak is at full scale. Makes quiet clips audible but hides how
            loud they really are (UrbanSound8K's salience 2, background, clips are quieter).

    Returns:
        The bytes of a WAV file. Samples beyond [-1, 1] are clipped.

    Used by the players of :mod:`us8k_lib.listen` (notebooks 2, 3, 5 and 7).
    """
    sr = _check_rate("sr", sr)
    a = np.asarray(x, dtype=np.float64)
    if a.ndim not in (1, 2) or a.shape[0] == 0:
        raise ValueError(f"expected a non-empty (frames,) or (frames, channels) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("cannot encode NaN/Inf samples")
    if normalize:
        peak = float(np.abs(a).max())
        if peak > 0:
            a = a / peak
    pcm = np.round(np.clip(a, -1.0, 1.0) * 32767.0).astype(np.int16)
    buf = io.BytesIO()
    # int16 input is written verbatim, so the scaling above is the only one applied.
    sf.write(buf, pcm, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def compute_spectrogram(
    x: np.ndarray,
    sr: int,
    *,
    n_fft: int = 512,
    hop_length: int | None = None,
    top_db: float | None = 80.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power spectrogram in dB (Hann window, torchaudio), scaled so a full-scale sine reads 0 dB.

    Args:
        x: mono samples (frames,).
        sr: sample rate in Hz.
        n_fft: FFT size (frequency resolution ``sr / n_fft``).
        hop_length: samples between frames; default ``n_fft // 4``.
        top_db: floor the result this many dB below its maximum (None: floor at -100 dB only).

    Returns:
        ``(db, freqs, times)``: db is float32 of shape (n_fft // 2 + 1, n_frames); freqs in Hz
        per row; times in s per column (frame centres).

    Used by :func:`us8k_lib.plots.plot_spectrogram` (notebooks 2 and 3).
    """
    sr = _check_rate("sr", sr)
    hop = n_fft // 4 if hop_length is None else hop_length
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 1 or a.shape[0] == 0:
        raise ValueError(f"expected non-empty mono samples of shape (frames,), got shape {a.shape}")
    spec = torchaudio.transforms.Spectrogram(
        n_fft=n_fft, hop_length=hop, window_fn=torch.hann_window, power=2.0, center=True, pad_mode="constant"
    )
    with torch.inference_mode():
        power = spec(torch.tensor(a))
        # A sine of amplitude A peaks at (A * sum(window) / 2) ** 2 in the power spectrum.
        power = power / (spec.window.sum() / 2) ** 2
        db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=top_db)(power)
    freqs = np.arange(n_fft // 2 + 1) * (sr / n_fft)
    times = np.arange(db.shape[-1]) * (hop / sr)
    return db.numpy().astype(np.float32, copy=False), freqs, times
