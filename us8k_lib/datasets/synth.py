"""How the mini dataset's sounds are made: one synthesizer per class, a background, a mix.

Each class has its own synthesizer with a recognisable signature (a siren's pitch sweep, a
jackhammer's rapid hits, an idling engine's low pulsing, ...), varied per recording and per slice
in pitch, timing and loudness, over a background noise bed; salience 2 rows have the foreground
quieter than the background. Slices of one recording share a sound source and a background, as in
the real data. Every random number comes from a stream keyed by (seed, stream, ...), so the same
seed gives the same samples. :mod:`us8k_lib.datasets.mini` picks the rows and formats and writes the files.

Used by notebook 2 (:func:`synthesize`, to hear each class) and :mod:`us8k_lib.datasets.mini`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import cache, cached_property

import numpy as np
import pandas as pd

from us8k_lib.errors import US8KError
from us8k_lib.metadata import CLASSES

# Independent random streams: each is keyed by (seed, stream, ...), so e.g. the format of a
# recording never depends on its class, and a row's audio does not depend on the dataset size.
_STREAM_SELECT, _STREAM_FORMAT, _STREAM_FORCE, _STREAM_SOURCE, _STREAM_PLACE, _STREAM_SLICE = range(1, 7)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise US8KError(f"mini dataset seed must be a whole number >= 0, got {seed!r}")
    return int(seed)


def _frames(seconds: float, samplerate: int) -> int:
    return max(1, int(round(seconds * samplerate)))


# --------------------------------------------------------------------------------------------
# Signal building blocks (numpy only). Synthesis runs in float64 at SYNTH_RATE; the long arrays at
# the file's rate (FFTs, background, mixing) are float32, which halves the time.


@dataclass(frozen=True)
class _Clip:
    n: int  # frames
    sr: int  # sample rate
    t0: float  # start of the slice in its recording (s): slow modulations follow recording time

    @property
    def dur(self) -> float:
        return self.n / self.sr

    @cached_property
    def t(self) -> np.ndarray:
        return np.arange(self.n) / self.sr


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _unit(x: np.ndarray) -> np.ndarray:
    r = _rms(x)
    return x / r if r > 0 else x


def _active_level(x: np.ndarray, sr: int) -> float:
    """RMS over the 20 ms frames within 20 dB of the loudest: the level of a sound while it sounds."""
    hop = max(1, int(0.02 * sr))
    m = max(1, x.size // hop)
    e = np.square(x[: m * hop]).reshape(m, -1).mean(axis=1) if x.size >= hop else np.square(x).mean(keepdims=True)
    active = e[e >= 0.01 * e.max()] if e.max() > 0 else e
    return float(np.sqrt(active.mean())) if active.size else 0.0


def _phase(freq: np.ndarray | float, clip: _Clip, phi: float = 0.0) -> np.ndarray:
    f = np.broadcast_to(np.asarray(freq, dtype=np.float64), (clip.n,))
    return phi + 2 * np.pi * np.cumsum(f) / clip.sr


def _harmonics(phase: np.ndarray, freq: np.ndarray | float, amps: Sequence[float], sr: int) -> np.ndarray:
    """Sum of ``amps[k-1] * sin(k * phase)``, fading out harmonics that approach Nyquist.

    Uses the Chebyshev recurrence sin((k+1)p) = 2 cos(p) sin(kp) - sin((k-1)p), a multiply-add per
    harmonic instead of a sine, in float32 (its error stays ~1e-5 for the few dozen harmonics used).
    """
    limit, fade = 0.45 * sr, 0.05 * sr
    fmax = float(np.max(freq))
    p = np.mod(phase, 2 * np.pi).astype(np.float32)
    s, c2 = np.sin(p), 2 * np.cos(p)
    s_prev, out, tmp = np.zeros_like(s), np.zeros_like(s), np.empty_like(s)
    for k, a in enumerate(amps, start=1):
        if k * fmax >= limit:
            taper = np.clip((limit - k * np.asarray(freq)) / fade, 0.0, 1.0).astype(np.float32)
            if not np.any(taper):
                break
            out += np.float32(a) * taper * s
        else:
            np.multiply(s, np.float32(a), out=tmp)
            out += tmp
        np.multiply(c2, s, out=tmp)
        tmp -= s_prev
        s_prev, s, tmp = s, tmp, s_prev
    return out.astype(np.float64)


@cache
def _smooth_at_least(m: int) -> int:
    """Smallest 7-smooth number >= m: FFT lengths numpy transforms fast (a large prime is ~10x slower)."""
    m = max(1, int(m))
    best = 1 << (m - 1).bit_length()
    p7 = 1
    while p7 < best:
        p5 = p7
        while p5 < best:
            p3 = p5
            while p3 < best:
                p = p3
                while p < m:
                    p *= 2
                best = min(best, p)
                p3 *= 3
            p5 *= 5
        p7 *= 7
    return best


def _random_spectrum(rng: np.random.Generator, length: int, sr: int,
                     gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """rfft bins of noise of ``length`` samples shaped by ``gain(freqs)``.

    Uniform real and imaginary parts are used because drawing them is several times cheaper than
    Gaussian ones; the time signal, a sum over many bins, is Gaussian all the same.
    """
    m = length // 2 + 1
    spec = (rng.random(2 * m, dtype=np.float32) - np.float32(0.5)).view(np.complex64)
    # The gain is constant over 1/24-octave bands: exp/log on every bin would cost more than the FFT.
    edges = np.geomspace(10.0, sr / 2, 265)
    counts = np.diff(np.searchsorted(np.arange(m) * (sr / length), edges), prepend=0, append=m)
    centers = np.concatenate([[5.0], np.sqrt(edges[:-1] * edges[1:]), [sr / 2]])
    spec *= np.repeat(gain(centers).astype(np.float32), counts)
    spec[0] = 0.0
    return spec


def _spectral_noise(rng: np.random.Generator, n: int, sr: int, gain: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Noise of ``n`` samples shaped in the frequency domain by ``gain(freqs)``, scaled to unit RMS."""
    if n < 2:
        return np.zeros(n)
    length = _smooth_at_least(n)
    return _unit(np.fft.irfft(_random_spectrum(rng, length, sr, gain), length)[:n].astype(np.float64))


def _band(fc: float, octaves: float) -> Callable[[np.ndarray], np.ndarray]:
    """Gain of a smooth band-pass: Gaussian in log-frequency, ``octaves`` standard deviation."""
    return lambda f: np.exp(-0.5 * (np.log2(np.maximum(f, 1.0) / fc) / octaves) ** 2)


def _lowpass(fc: float, order: float = 2.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))


def _convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear convolution truncated to ``len(x)`` (FFT based)."""
    m = _smooth_at_least(x.size + kernel.size - 1)
    spec = np.fft.rfft(x.astype(np.float32), m) * np.fft.rfft(kernel.astype(np.float32), m)
    return np.fft.irfft(spec, m)[: x.size].astype(np.float64)


def _segments_env(clip: _Clip, spans: Sequence[tuple[float, float]], attack: float, release: float) -> np.ndarray:
    """Envelope that is 1 inside each (start, end) span, with linear attack and release ramps."""
    env = np.zeros(clip.n)
    t = clip.t
    for a, b in spans:
        i0, i1 = max(0, int(a * clip.sr)), min(clip.n, int(np.ceil((b + release) * clip.sr)))
        if i1 <= i0:
            continue
        tt = t[i0:i1]
        seg = np.minimum(np.clip((tt - a) / attack, 0, 1), np.clip((b + release - tt) / release, 0, 1))
        env[i0:i1] = np.maximum(env[i0:i1], seg)
    return env


def _on_off_spans(rng: np.random.Generator, dur: float, on: tuple[float, float],
                  off: tuple[float, float]) -> list[tuple[float, float]]:
    """Alternating on/off spans covering the clip, starting at a random point of the pattern."""
    spans, t = [], -rng.uniform(0, on[1])
    while t < dur:
        length = rng.uniform(*on)
        spans.append((max(0.0, t), min(dur, t + length)))
        t += length + rng.uniform(*off)
    spans = [(a, b) for a, b in spans if b - a > 0.02]
    return spans or [(0.0, dur)]


def _event_starts(rng: np.random.Generator, dur: float, count: int, length: float,
                  gap: tuple[float, float]) -> list[float]:
    """Start times of ``count`` events of about ``length`` s with random gaps; the first always sounds."""
    if dur <= length * 1.5:
        return [rng.uniform(0, 0.1 * dur)]
    t = rng.uniform(0, max(0.0, dur - length) * 0.6)
    starts = []
    while len(starts) < count and t < dur - 0.02:
        starts.append(t)
        t += length + rng.uniform(*gap)
    return starts


# --------------------------------------------------------------------------------------------
# The ten class synthesizers: f(src, rng, clip) -> mono signal.
# ``src`` is the sound source of a recording (shared by its slices), ``rng`` this slice.


def _air_conditioner(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # Steady: compressor hum with low harmonics, fan blade tone and broadband airflow, slowly drifting.
    f0, tilt = src.uniform(45, 130), src.uniform(0.7, 1.6)
    amps = src.uniform(0.3, 1.0, 10) * np.arange(1, 11) ** -tilt
    hum_w, blade_w = src.uniform(0.5, 0.85), src.uniform(0.2, 0.5)
    air_fc, air_bw = src.uniform(250, 1400), src.uniform(1.0, 2.0)
    blade_f = src.uniform(150, 700)
    wob_rate, wob_phase = src.uniform(0.05, 0.3), src.uniform(0, 2 * np.pi)
    t_abs = clip.t0 + clip.t
    f = f0 * (1 + 0.004 * np.sin(2 * np.pi * wob_rate * t_abs + wob_phase))
    hum = _unit(_harmonics(_phase(f, clip, rng.uniform(0, 6.3)), f, amps, clip.sr))
    air = _spectral_noise(rng, clip.n, clip.sr, _band(air_fc, air_bw))
    blade_wobble = blade_f * (1 + 0.002 * np.sin(2 * np.pi * 0.2 * t_abs))
    blade = np.sqrt(2) * np.sin(_phase(blade_wobble, clip, rng.uniform(0, 6.3)))
    env = 1 + src.uniform(0.02, 0.12) * np.sin(2 * np.pi * src.uniform(0.1, 0.5) * t_abs + wob_phase)
    return env * (hum_w * hum + (1 - hum_w) * air + blade_w * blade)


def _car_horn(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # One or two brassy tones (often a third apart) in bursts with fast attack and release.
    f1 = src.uniform(340, 520)
    ratio = float(src.choice([1.0, 1.19, 1.26, 1.33], p=[0.1, 0.3, 0.35, 0.25]))
    amps = src.uniform(0.5, 1.0, 14) * np.arange(1, 15) ** -src.uniform(0.6, 1.1)
    dur = clip.dur
    if dur < 1.2:
        spans = [(rng.uniform(0, 0.03 * dur), dur * rng.uniform(0.85, 1.0))]
    else:
        spans = []
        for s in _event_starts(rng, dur, int(rng.integers(1, 4)), 0.6, (0.1, 0.8)):
            spans.append((s, min(dur, s + rng.uniform(0.15, 1.6))))
    env = _segments_env(clip, spans, rng.uniform(0.008, 0.025), rng.uniform(0.02, 0.06))
    jitter = (1 + 0.003 * np.sin(2 * np.pi * rng.uniform(3, 7) * clip.t)
              + rng.uniform(-0.01, 0.01) * clip.t / max(dur, 1e-3))
    f_a = f1 * jitter
    x = _harmonics(_phase(f_a, clip, rng.uniform(0, 6.3)), f_a, amps, clip.sr)
    if ratio != 1.0:
        f_b = f1 * ratio * jitter
        x += 0.8 * _harmonics(_phase(f_b, clip, rng.uniform(0, 6.3)), f_b, amps, clip.sr)
    return env * x


def _children_playing(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # A babble of children's voices: pitched syllables with vibrato, glides, vowel formants, shrieks.
    n_voices = int(src.integers(3, 7))
    bases = src.uniform(230, 430, n_voices)
    out = np.zeros(clip.n)
    t = clip.t
    for v in range(n_voices):
        f1, f2 = src.uniform(450, 1000), src.uniform(1100, 2800)
        k = np.arange(1, 13) * bases[v]
        amps = np.exp(-0.5 * ((k - f1) / 300) ** 2) + 0.7 * np.exp(-0.5 * ((k - f2) / 500) ** 2) + 0.05
        semis = np.zeros(clip.n)
        env = np.zeros(clip.n)
        pos = rng.uniform(-0.2, 0.6)
        while pos < clip.dur:
            shriek = rng.uniform() < 0.08
            length = rng.uniform(0.4, 0.9) if shriek else rng.uniform(0.08, 0.35)
            i0, i1 = max(0, int(pos * clip.sr)), min(clip.n, int((pos + length) * clip.sr))
            if i1 > i0:
                u = (t[i0:i1] - pos) / length
                start_st = rng.uniform(-3, 7) + (8 if shriek else 0)
                semis[i0:i1] = start_st + rng.uniform(-4, 4) * u
                env[i0:i1] = np.clip(u / 0.15, 0, 1) * np.clip((1 - u) / 0.25, 0, 1) * rng.uniform(0.4, 1.0)
            pos += length + rng.uniform(0.03, 0.5)
        f = bases[v] * 2 ** (semis / 12) * (1 + rng.uniform(0.01, 0.03) * np.sin(2 * np.pi * rng.uniform(5, 8) * t))
        out += env * _harmonics(_phase(f, clip, rng.uniform(0, 6.3)), f, amps, clip.sr)
    return out


def _dog_bark(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # Short harmonic barks with a sharp attack and a falling pitch, plus a rough noisy part.
    f0, formant, rough = src.uniform(250, 800), src.uniform(700, 2000), src.uniform(0.3, 0.6)
    bark_len, interval = src.uniform(0.08, 0.22), src.uniform(0.2, 0.5)
    k = np.arange(1, 13)
    out = np.zeros(clip.n)
    starts = _event_starts(rng, clip.dur, int(rng.integers(3, 9)), bark_len, (interval * 0.4, interval * 1.6))
    for s in starts:
        length = bark_len * rng.uniform(0.8, 1.25)
        i0 = int(s * clip.sr)
        m = min(clip.n - i0, int(length * 1.6 * clip.sr))
        if m < 8:
            continue
        seg = _Clip(m, clip.sr, 0.0)
        tau = seg.t
        f_start = f0 * rng.uniform(0.85, 1.15)
        f = f_start * (0.65 + 0.45 * np.exp(-tau / (0.35 * length)))
        amps = np.exp(-0.5 * ((k * f_start - formant) / 500) ** 2) + 0.15 / k
        voiced = _unit(_harmonics(_phase(f, seg, rng.uniform(0, 6.3)), f, amps, clip.sr))
        noise = _spectral_noise(rng, m, clip.sr, _band(formant, 1.0))
        env = (1 - np.exp(-tau / 0.004)) * np.exp(-tau / (0.3 * length))
        onset = 1.5 * np.exp(-tau / 0.008)  # the harsh broadband start of a bark
        out[i0:i0 + m] += rng.uniform(0.6, 1.0) * env * ((1 - rough) * voiced + (rough + onset) * noise)
    return out


def _drilling(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # High motor whine (0.7-2.5 kHz) with a buzzy low drive, grinding noise and rpm wobble.
    whine, buzz = src.uniform(700, 2500), src.uniform(60, 220)
    w_whine, w_buzz, w_grind = src.uniform(0.4, 0.8), src.uniform(0.2, 0.5), src.uniform(0.2, 0.5)
    grind_fc = src.uniform(1500, 3500)
    wob_depth, wob_rate = src.uniform(0.005, 0.02), src.uniform(2, 7)
    t = clip.t
    if clip.dur > 1.5 and rng.uniform() < 0.35:
        spans = _on_off_spans(rng, clip.dur, (0.5, 2.5), (0.15, 0.6))
        speed = _segments_env(clip, spans, 0.15, 0.2)
    else:
        speed = np.ones(clip.n)
    wobble = (1 + wob_depth * np.sin(2 * np.pi * wob_rate * t + rng.uniform(0, 6.3))) * (0.45 + 0.55 * speed)
    f_w, f_b = whine * wobble, buzz * wobble
    x = w_whine * _unit(_harmonics(_phase(f_w, clip), f_w, [1.0, 0.45, 0.2], clip.sr))
    x += w_buzz * _unit(_harmonics(_phase(f_b, clip), f_b, 1.0 / np.arange(1, 16), clip.sr))
    grind = _spectral_noise(rng, clip.n, clip.sr, _band(grind_fc, 0.7))
    x += w_grind * grind * (1 + 0.5 * np.sin(_phase(f_b, clip)))
    return speed ** 2 * x


def _engine_idling(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # Low pulsing: a resonant thump and an exhaust puff per firing (18-50 Hz), uneven cylinders, rumble.
    fire, res, decay = src.uniform(18, 50), src.uniform(60, 220), src.uniform(0.008, 0.03)
    cylinders = src.uniform(0.6, 1.0, int(src.choice([4, 6, 8])))
    jitter, w_hum = src.uniform(0.01, 0.04), src.uniform(0.1, 0.4)
    rpm_phase = src.uniform(0, 6.3)
    chug_fc, chug_w = src.uniform(250, 1000), src.uniform(0.3, 0.8)
    sr = clip.sr
    kl = max(8, int(5 * decay * sr))
    tau = np.arange(kl) / sr
    kernel = np.exp(-tau / decay) * (np.sin(2 * np.pi * res * tau) + 0.3 * np.sin(2 * np.pi * 2.3 * res * tau))
    kernel += 0.3 * _spectral_noise(rng, kl, sr, _lowpass(800)) * np.exp(-tau / (0.5 * decay))
    impulses = np.zeros(clip.n)
    pos, i = -rng.uniform(0, 1 / fire), int(rng.integers(len(cylinders)))
    while pos < clip.dur:
        if pos >= 0:
            strength = cylinders[i % len(cylinders)] * (1 + 0.15 * rng.standard_normal())
            impulses[min(clip.n - 1, int(pos * sr))] += strength
        rate = fire * (1 + 0.03 * np.sin(2 * np.pi * 0.2 * (clip.t0 + pos) + rpm_phase))
        pos += (1 + jitter * rng.standard_normal()) / rate
        i += 1
    x = _unit(_convolve(impulses, kernel))
    f = fire * (1 + 0.03 * np.sin(2 * np.pi * 0.2 * (clip.t0 + clip.t) + rpm_phase))
    ph = _phase(f, clip)
    x += w_hum * _unit(_harmonics(ph, f, [0.5, 1.0, 0.6, 0.4, 0.3, 0.2], sr))
    x += 0.3 * _spectral_noise(rng, clip.n, sr, _lowpass(600, 3)) * (1 + 0.6 * np.sin(ph))
    # Exhaust chug: mid-frequency noise puffs at the firing rate (the "putt-putt" one hears).
    puffs = ((1 + np.sin(ph + rpm_phase)) / 2) ** 4
    x += chug_w * _spectral_noise(rng, clip.n, sr, _band(chug_fc, 0.8)) * puffs / (_rms(puffs) or 1.0)
    return x


def _gun_shot(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # 1-3 shots: a sharp broadband crack and low boom, an early echo and an exponential reverb tail.
    tail_tau, boom_f = src.uniform(0.06, 0.4), src.uniform(50, 140)
    crack_fc, tail_fc = src.uniform(1000, 3500), src.uniform(400, 1500)
    echo_delay, echo_gain = src.uniform(0.02, 0.12), src.uniform(0.15, 0.45)
    sr = clip.sr
    count = int(rng.choice([1, 1, 1, 2, 2, 3]))
    starts = _event_starts(rng, clip.dur, count, 0.15, (0.05, 0.6))
    out = np.zeros(clip.n)
    for s in starts:
        i0 = int(s * sr)
        m = min(clip.n - i0, int((6 * tail_tau + echo_delay + 0.05) * sr))
        if m < 8:
            continue
        tau = np.arange(m) / sr
        crack = _spectral_noise(rng, m, sr, _band(crack_fc, 1.5)) * np.exp(-tau / 0.002)
        boom = np.sin(2 * np.pi * boom_f * tau * (1 + 0.5 * np.exp(-tau / 0.01))) * np.exp(-tau / 0.03)
        shot = crack + 0.6 * boom
        d = int(echo_delay * sr)
        if d < m:
            shot[d:] += echo_gain * shot[: m - d]
        tail = 0.2 * _spectral_noise(rng, m, sr, _lowpass(tail_fc, 1.5))
        shot += tail * np.exp(-tau / tail_tau) * (1 - np.exp(-tau / 0.004))
        out[i0:i0 + m] += rng.uniform(0.6, 1.0) * shot
    return out


def _jackhammer(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # Rapid impulsive hits (10-25 per second): metallic ring, click and thud; bursts with pauses.
    rate, jitter = src.uniform(12, 25), src.uniform(0.01, 0.04)
    modes, decays = src.uniform(700, 3200, 3), src.uniform(0.004, 0.015, 3)
    thud_f, w_exhaust = src.uniform(70, 160), src.uniform(0.05, 0.3)
    sr = clip.sr
    kl = int(0.06 * sr)
    tau = np.arange(kl) / sr
    kernel = sum(src.uniform(0.4, 1.0) * np.sin(2 * np.pi * f * tau) * np.exp(-tau / d) for f, d in zip(modes, decays))
    kernel = kernel + 0.6 * np.sin(2 * np.pi * thud_f * tau) * np.exp(-tau / 0.012)
    kernel += 0.9 * _spectral_noise(rng, kl, sr, _band(src.uniform(1500, 3000), 1.5)) * np.exp(-tau / 0.004)
    if clip.dur > 1.5 and rng.uniform() < 0.3:
        spans = _on_off_spans(rng, clip.dur, (0.8, 3.0), (0.15, 0.6))
    else:
        spans = [(0.0, clip.dur)]
    impulses = np.zeros(clip.n)
    for a, b in spans:
        pos = a + rng.uniform(0, 1 / rate)
        while pos < b:
            impulses[min(clip.n - 1, int(pos * sr))] += rng.uniform(0.7, 1.0)
            pos += (1 + jitter * rng.standard_normal()) / rate
    x = _unit(_convolve(impulses, kernel))
    exhaust = _spectral_noise(rng, clip.n, sr, _band(1200, 1.5))
    return x + w_exhaust * exhaust * _segments_env(clip, spans, 0.05, 0.1)


def _siren(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # Slow wail, fast yelp or two-tone hi-lo between ~550 and 1700 Hz, square-ish timbre, Doppler drift.
    kind = str(src.choice(["wail", "yelp", "hilo"], p=[0.55, 0.35, 0.1]))
    lo = src.uniform(550, 800)
    hi = min(1700.0, lo * src.uniform(1.5, 2.1))
    phi = src.uniform(0, 1)
    t_abs = clip.t0 + clip.t
    if kind == "wail":
        rate = src.uniform(0.15, 0.5)
        f = lo + (hi - lo) * (0.5 - 0.5 * np.cos(2 * np.pi * (rate * t_abs + phi)))
    elif kind == "yelp":
        rate = src.uniform(2.5, 4.5)
        f = lo + (hi - lo) * np.mod(rate * t_abs + phi, 1.0) ** 0.7
    else:
        period = src.uniform(0.8, 1.6)
        f = np.where(np.mod(t_abs / period + phi, 1.0) < 0.5, lo * 1.15, lo * 1.15 * 1.35)
    f = f * (1 + src.uniform(-0.04, 0.04) * (clip.t / max(clip.dur, 1e-3) - 0.5))
    amps = [1.0, 0.1, 0.33, 0.05, 0.2, 0.03, 0.14, 0.02, 0.11]  # odd harmonics: a square-ish horn
    env = 1 + 0.3 * np.sin(2 * np.pi * t_abs / src.uniform(6, 20) + rng.uniform(0, 6.3))
    return env * _harmonics(_phase(f, clip, rng.uniform(0, 6.3)), f, amps, clip.sr)


def _street_music(src: np.random.Generator, rng: np.random.Generator, clip: _Clip) -> np.ndarray:
    # Buskers: a pentatonic melody (plucked or reed-like) over chords, a bass line and a drum beat.
    root, beat = src.uniform(130, 300), 60.0 / src.uniform(85, 150)
    scale = [0, 2, 4, 7, 9] if src.uniform() < 0.6 else [0, 3, 5, 7, 10]
    pluck = src.uniform() < 0.5
    timbre = np.arange(1, 11) ** -(1.5 if pluck else 1.0) * src.uniform(0.5, 1.0, 10)
    has_chords, has_drums = src.uniform() < 0.8, src.uniform() < 0.9
    sr, dur = clip.sr, clip.dur
    out = np.zeros(clip.n)

    def note(start: float, length: float, freq: float, amps: Sequence[float], decay: float | None, gain: float) -> None:
        i0, i1 = max(0, int(start * sr)), min(clip.n, int((start + length) * sr))
        if i1 - i0 < 4:
            return
        seg = _Clip(i1 - i0, sr, 0.0)
        tau = seg.t + max(0.0, -start)
        if decay is None:
            env = np.clip(tau / 0.03, 0, 1) * np.clip((length - tau) / 0.06, 0, 1)
            f = freq * (1 + 0.005 * np.sin(2 * np.pi * 5 * tau))
        else:
            env = (1 - np.exp(-tau / 0.003)) * np.exp(-tau / decay) * np.clip((length - tau) / 0.02, 0, 1)
            f = np.full(seg.n, freq)
        out[i0:i1] += gain * env * _harmonics(_phase(f, seg, rng.uniform(0, 6.3)), f, amps, sr)

    def pitch(degree: int, octave: int) -> float:
        return root * 2 ** ((12 * (degree // 5 + octave) + scale[degree % 5]) / 12)

    pos, degree = -rng.uniform(0, beat), int(rng.integers(0, 5))
    while pos < dur:  # melody: a note every half beat to two beats, moving by small steps
        length = beat * float(rng.choice([0.5, 0.5, 1.0, 1.0, 2.0]))
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, 9))
        note(pos, length, pitch(degree, 1), timbre, 0.25 * length + 0.05 if pluck else None, rng.uniform(0.6, 1.0))
        pos += length
    beat0 = -rng.uniform(0, 4 * beat)
    for bar in range(int((dur - beat0) / (4 * beat)) + 1):
        tb = beat0 + 4 * bar * beat
        chord = int(rng.choice([0, 3, 4, 2]))  # the chord's root degree for this bar
        if has_chords:
            for d in (chord, chord + 2, chord + 4):
                note(tb, 4 * beat, pitch(d, 0), [1.0, 0.4, 0.2, 0.1], None, 0.25)
        for i in range(4):  # bass: root and fifth on the beats
            note(tb + i * beat, beat * 0.9, pitch(chord + (0 if i % 2 == 0 else 3), -1), [1.0, 0.5, 0.25], 0.25, 0.6)
            t_beat = tb + i * beat
            if not has_drums or not 0 <= t_beat < dur:
                continue
            i0 = int(t_beat * sr)
            m = min(clip.n - i0, int(0.25 * sr))
            tau = np.arange(m) / sr
            if i % 2 == 0:  # kick: a sine dropping from ~120 to ~50 Hz
                kick = 1.2 * np.sin(2 * np.pi * (50 * tau + 70 * 0.03 * (1 - np.exp(-tau / 0.03))))
                out[i0:i0 + m] += kick * np.exp(-tau / 0.08)
            else:  # snare: noise burst with a body tone
                snare = _spectral_noise(rng, m, sr, _band(2000, 1.2)) + np.sin(2 * np.pi * 190 * tau)
                out[i0:i0 + m] += 0.6 * snare * np.exp(-tau / 0.05)
    return out


#: classID -> synthesizer ``f(source_rng, slice_rng, clip) -> mono float64 signal``.
SYNTHESIZERS: tuple[Callable[[np.random.Generator, np.random.Generator, _Clip], np.ndarray], ...] = (
    _air_conditioner, _car_horn, _children_playing, _dog_bark, _drilling,
    _engine_idling, _gun_shot, _jackhammer, _siren, _street_music,
)


#: Foreground sounds are synthesized at this rate (or the file's, if lower) and then resampled
#: exactly (FFT) to the file's rate: it keeps them below ~7 kHz, the model listens below 4 kHz,
#: and synthesis at 96 kHz would cost 6x as much. The background is made at the file's rate.
SYNTH_RATE = 16000
_GUARD = 256  # silent samples after the foreground, so the FFT resampling does not wrap around


def _background_spectrum(place: np.random.Generator, rng: np.random.Generator, length: int,
                         sr: int) -> np.ndarray:
    """rfft bins of the place's noise bed (same distribution for every class): colored noise + rumble."""
    alpha, hi, rumble = place.uniform(0.3, 1.2), place.uniform(2500, 12000), place.uniform(0.0, 0.4)

    def gain(f: np.ndarray) -> np.ndarray:
        return (np.maximum(f, 30.0) / 1000.0) ** (-alpha / 2) * _lowpass(hi)(f) + rumble * 3 * _lowpass(150, 3)(f)

    return _random_spectrum(rng, length, sr, gain)


def _render(row: pd.Series | dict, samplerate: int, channels: int, seed: int, frames: int | None = None,
            parts: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray, float]:
    """Return one row's clip, (frames, channels) float32; with ``parts`` its (foreground, background, gain).

    The clip is ``gain * (foreground + background)``. The background has unit RMS per channel;
    the foreground's active level (RMS while it sounds) is ``10**(snr/20)``, snr 10..24 dB for
    salience 1 and -3..-0.5 dB for salience 2. ``gain`` scales the clip's peak to -16..-2 dBFS.
    """
    fsid, class_id = int(row["fsID"]), int(row["classID"])
    occurrence, slice_id = (int(v) for v in str(row["slice_file_name"])[:-4].split("-")[2:4])
    start = float(row["start"])
    n = frames if frames is not None else _frames(float(row["end"]) - start, samplerate)
    src = _rng(seed, _STREAM_SOURCE, fsid, class_id)
    place = _rng(seed, _STREAM_PLACE, fsid)
    rng = _rng(seed, _STREAM_SLICE, fsid, class_id, occurrence, slice_id)

    # Foreground at the synthesis rate, normalised to its active level and the row's SNR.
    sr_i = min(samplerate, SYNTH_RATE)
    ratio = Fraction(samplerate, sr_i)
    n_i = max(1, int(round(n / ratio)))
    fg = SYNTHESIZERS[class_id](src, rng, _Clip(n_i, sr_i, start))
    level = _active_level(fg, sr_i)
    snr_db = rng.uniform(10, 24) if int(row["salience"]) == 1 else rng.uniform(-3, -0.5)
    fg = fg * (10 ** (snr_db / 20) / level if level > 0 else 1.0)
    # Lengths with length / length_i == samplerate / sr_i exactly, so FFT resampling is exact.
    k = _smooth_at_least(-(-(n_i + (_GUARD if ratio != 1 else 0)) // ratio.denominator))
    length_i, length = ratio.denominator * k, ratio.numerator * k
    # (float32 FFTs: numpy's float64 ones are up to 20x slower at these 7-smooth lengths.)
    if ratio != 1:
        spec = np.fft.rfft(fg.astype(np.float32), length_i)
        full = np.zeros(length // 2 + 1, dtype=np.complex64)
        full[: spec.size] = spec * np.float32(ratio)
        fg = np.fft.irfft(full, length)[:n]
    else:
        fg = fg[:n].astype(np.float32)

    # The place's background, stationary noise with a slow swell (computed on a coarse grid: it is slow).
    bg = np.fft.irfft(_background_spectrum(place, rng, length, samplerate), length)[:n]
    bg /= np.float32(_rms(bg) or 1.0)
    swell_rate, swell_depth, swell_phase = place.uniform(0.05, 0.4), place.uniform(0.0, 0.4), place.uniform(0, 6.3)
    step = 256  # the swell is slow: steps of 256 samples (< 11 ms) are inaudible
    coarse = start + np.arange(0, n, step) / samplerate
    swell = 1 + swell_depth * np.sin(2 * np.pi * swell_rate * coarse + swell_phase)
    bg *= np.repeat(swell.astype(np.float32), step)[:n]

    if channels == 1:
        fg2, bg2 = fg[:, None], bg[:, None]
    else:
        # A source somewhere in the stereo field (level and time difference); the second channel's
        # background is partly decorrelated by mixing in a far-shifted copy of the stationary noise.
        pan, corr = src.uniform(-0.6, 0.6), place.uniform(0.3, 0.9)
        delay = min(n, int(src.uniform(0, 0.0006) * samplerate))
        shift = int(rng.integers(n // 4, 3 * n // 4 + 1)) if n >= 4 else 0
        fg2, bg2 = np.empty((n, 2), np.float32), np.empty((n, 2), np.float32)
        fg2[:, 0] = fg
        fg2[:, 0] *= np.float32(np.sqrt(1 - pan))
        fg2[:delay, 1] = 0.0
        fg2[delay:, 1] = fg[: n - delay]
        fg2[:, 1] *= np.float32(np.sqrt(1 + pan))
        bg2[:, 0] = bg
        bg2[: n - shift, 1] = bg[shift:]
        bg2[n - shift:, 1] = bg[: shift]
        bg2[:, 1] *= np.float32(np.sqrt(1 - corr**2))
        bg2[:, 1] += np.float32(corr) * bg
    target_db = rng.uniform(-16, -2)
    if parts:
        return fg2, bg2, 10 ** (target_db / 20) / (float(np.max(np.abs(fg2 + bg2))) or 1.0)
    mix = fg2 + bg2
    peak = max(float(mix.max()), -float(mix.min())) or 1.0
    mix *= np.float32(10 ** (target_db / 20) / peak)
    return mix


def synthesize(class_name: str, seconds: float = 4.0, *, samplerate: int = 22050, channels: int = 1,
               salience: int = 1, seed: int = 0, recording: int = 0) -> np.ndarray:
    """Synthesize one clip of a class the way the mini dataset does.

    Args:
        class_name: one of :data:`us8k_lib.metadata.CLASSES`.
        seconds: duration.
        samplerate: Hz.
        channels: 1 or 2.
        salience: 1 (foreground louder than the background) or 2 (quieter).
        seed: random seed.
        recording: a recording number; clips of the same recording share source and background.

    Returns:
        float32 array (frames, channels) in [-1, 1]. Used by :func:`us8k_lib.datasets.mini.make_mini`.
    """
    if class_name not in CLASSES:
        raise US8KError(f"unknown class {class_name!r}: choose one of {', '.join(CLASSES)}")
    if salience not in (1, 2) or channels not in (1, 2) or not seconds > 0 or samplerate < 1000:
        raise US8KError(f"cannot synthesize {seconds!r} s at {samplerate!r} Hz, {channels!r} channel(s), "
                        f"salience {salience!r}: need seconds > 0, samplerate >= 1000, channels and salience 1 or 2")
    class_id = CLASSES.index(class_name)
    row = {"slice_file_name": f"{recording}-{class_id}-0-0.wav", "fsID": recording, "classID": class_id,
           "start": 0.0, "end": float(seconds), "salience": salience}
    return _render(row, samplerate, channels, _check_seed(seed))
