"""Waveform data augmentation for training batches, on the training device.

UrbanSound8K is small (8 732 clips), and a model trained on it from scratch memorises its training
folds. Augmentation shows the model a slightly different version of each clip every epoch. The
published gains on the official folds are large: time stretch, pitch shift, compression and
background noise took SB-CNN from 73 % to 79 % (Salamon & Bello, IEEE SPL 2017); between-class
mixing and "strong" augmentation together took EnvNet-v2 from 69.1 % to 78.3 % (Tokozume,
Ushiku & Harada, ICLR 2018).

:class:`Augmenter` changes a training batch ``x [batch, 1, samples]`` *after* it has been copied
to the training device, inside the training step, so a GPU does the work and the CPU data path
stays exactly as fast as without augmentation. It draws every random number from its own
``torch.Generator`` on that device (no CPU-GPU synchronisation per batch; only the order of the
speed factors comes from a small CPU generator), and the generators' states go into the
checkpoint, so a resumed run continues exactly. Evaluation never augments.

The five augmentations, each switched on by a ``TrainConfig`` field that is 0 (off) by default
(``python -m us8k_lib train/crossval`` flags in brackets). :meth:`Augmenter.augment` applies them
in the order speed, shift, mask, noise, mixup: the speed change first, so that the shift and the
mask see where a clip's sound is once it has been stretched or squeezed.

``aug_shift`` (``--aug-shift SECONDS``)
    Moves each clip in time by up to this many seconds, either way. A clip that ends in zero
    padding (a short event; the cache pads clips shorter than 4 s at the end) moves *inside* the
    window, only as far as its padding allows, so the event stays whole. A clip that fills the
    window (at most :data:`WRAP_MAX_PADDING_S` of padding, 84 % of UrbanSound8K) is rotated:
    what leaves one end comes back at the other, as if the 4 s were a loop. Either way every
    sample is kept, so the clip's energy is unchanged.
``aug_speed`` (``--aug-speed S``)
    Plays each clip faster or slower by a factor drawn from ``[1 - S, 1 + S]``: duration divided
    by the factor, pitch multiplied by it, then zero-padded or cropped at the end back to the
    window (so a slowed-down clip loses its last part). Done by resampling with torchaudio's
    windowed-sinc resampler (:func:`change_speed`; the filter is :data:`SPEED_RESAMPLING`, a
    Kaiser window, 16 zero crossings, cut-off at 90 % of the lower Nyquist frequency). Speeding up
    low-passes the clip below the new Nyquist frequency first, so almost nothing aliases: measured
    at factor 1.2, the response is flat within 1 dB up to 84 % of the new Nyquist frequency and
    everything above it stays at least 44 dB down. torchaudio's default filter (Hann window, 6 zero
    crossings) leaves content just above the band edge only 8 dB down, and ``F.interpolate``
    (linear) folds everything above ``4 kHz / factor`` back into the band. To keep it
    to a few resampling calls per batch, factors come from a grid of :data:`SPEED_STEPS` evenly
    spaced values rounded to 1/:data:`SPEED_RESOLUTION`; each batch's clips are spread over them
    evenly, in random order (one call per factor, whatever the batch size), so every clip's
    factor is uniform over the grid. Which factors get the odd clips out when the batch size is
    not a multiple of the grid's (or a batch has fewer clips than factors) is drawn by a second,
    CPU generator, since the host must know it to make the calls.
``aug_mask`` (``--aug-mask SECONDS``)
    Zeroes one random stretch of each clip, of random length up to this many seconds but never
    more than half the clip's active (non-padded) part, placed inside that active part (a mask on
    the padding would change nothing).
``aug_noise`` (``--aug-noise P``)
    With probability ``P`` per clip, mixes in another clip of the same batch as background noise
    at a signal-to-noise ratio drawn uniformly from :data:`NOISE_SNR_DB`. The label stays the
    clip's own. Levels are RMS over each clip's active part (:func:`clip_level`), so a short
    event is not drowned just because most of its window is padding.
``aug_mixup`` (``--aug-mixup A``)
    Mixup / between-class mixing: every clip is mixed with another clip of the batch,
    ``r * x + (1 - r) * other``, after scaling ``other`` to ``x``'s level, so the ratio is a
    ratio of loudness and not of how loud each was recorded (as in Tokozume et al.'s
    between-class learning). The ratio is ``r = max(b, 1 - b)`` with ``b ~ Beta(A, A)``: the
    clip keeps at least half, so it stays the main sound of its own slot (and the training
    accuracy, counted against the clip's own label, keeps its meaning); the other clip gets its
    turn as the main sound in its own slot. The target becomes the same mix of the two one-hot
    labels (a row of class probabilities that sums to 1), and the loss is cross-entropy against
    it. A small ``A`` (0.2) mostly mixes a little of the other clip in; ``A = 1`` draws ``r``
    uniformly from [0.5, 1].

Mixing partners are other clips of the same batch (a random derangement: never the clip itself),
after their own shift, speed change and mask. A batch of one clip is not mixed.

Used by notebook 7, ``us8k_lib.train`` and ``us8k_lib.crossval`` (``--augment`` and ``--aug-*``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from us8k_lib import audio
from us8k_lib.audio import torchaudio  # loaded, or explained, by us8k_lib._compat
from us8k_lib.augment_settings import (  # noqa: F401 - the settings, re-exported for notebook 7
    AUGMENT_FIELDS,
    AUGMENT_PRESETS,
    MAX_SPEED,
    NOISE_SNR_DB,
    SPEED_RESOLUTION,
    SPEED_STEPS,
    WINDOW_SECONDS,
    augment_problems,
    validate_augment_fields,
)

#: torchaudio resampling parameters of the speed change (see the module docstring for what they
#: achieve; shorter than the cache's filter, ``audio.RESAMPLING``, which keeps more of the band).
SPEED_RESAMPLING: dict[str, Any] = {"resampling_method": "sinc_interp_kaiser", "lowpass_filter_width": 16,
                                    "rolloff": 0.9, "beta": 8.6}

#: A clip with at most this much zero padding (seconds) counts as filling its window, so a shift
#: rotates it; with more, it is an event that moves inside the window and stays whole.
WRAP_MAX_PADDING_S = 0.01

_HOST_SEED_XOR = 0x5EED_F00D
_BETA_TRIES = 8  # Marsaglia-Tsang candidates per sample; all rejected has probability < 1e-10


# ---------------------------------------------------------------------------------------------
# The operations, deterministic given their parameters (used by the Augmenter, tests, notebook 7)


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() == 2:
        return x
    raise ValueError(f"expected a batch of mono clips [batch, 1, samples] or [batch, samples], got {tuple(x.shape)}")


def active_span(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return each clip's active part: ``(first, length)`` of the stretch from its first to its
    last non-zero sample (int64 ``[batch]``; ``length`` 0 for an all-zero clip).

    The cache zero-pads clips shorter than the window at the end, so ``first + length`` is where a
    short event's padding starts. ``x`` is ``[batch, 1, samples]`` or ``[batch, samples]``.
    Used by :class:`Augmenter` (notebook 7 and every training run that augments).
    """
    x2 = _as_2d(x)
    n = x2.shape[-1]
    nonzero = (x2 != 0).to(torch.uint8)  # argmax takes no bool; it returns the first maximum
    first = nonzero.argmax(dim=1)
    last = n - 1 - nonzero.flip(1).argmax(dim=1)
    found = nonzero.gather(1, first[:, None])[:, 0].bool()
    return first, torch.where(found, last - first + 1, 0)


def clip_level(x: torch.Tensor) -> torch.Tensor:
    """Return each clip's RMS level over its active part (``[batch]``; 0 for a silent clip).

    Padding does not count, so a 0.5 s dog bark padded to 4 s has the level of the bark itself.
    Used by :class:`Augmenter` (notebook 7 and every training run that augments).
    """
    x2 = _as_2d(x)
    _, length = active_span(x2)
    return torch.sqrt(x2.float().square().sum(dim=1) / length.clamp(min=1))


def roll_clips(x: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """Return each clip rotated by ``samples[i]`` (positive: later): what leaves one end of the
    window comes back at the other, so every sample is kept.

    A shift that only moves zero padding across the ends is a plain move inside the window.
    Used by :class:`Augmenter` (notebook 7 and every training run that augments).
    """
    x2 = _as_2d(x)
    n = x2.shape[-1]
    index = (torch.arange(n, device=x2.device)[None, :] - samples.to(x2.device)[:, None]) % n
    return torch.gather(x2, 1, index).view_as(x)


def speed_factors(max_change: float, steps: int = SPEED_STEPS) -> list[float]:
    """Return the speed factors ``aug_speed=max_change`` uses: ``steps`` evenly spaced values over
    ``[1 - max_change, 1 + max_change]``, rounded to 1/SPEED_RESOLUTION, duplicates removed.
    Used by :class:`Augmenter` (notebook 7 and every training run that augments)."""
    if not 0 <= max_change <= MAX_SPEED:
        raise ValueError(f"max_change must be in [0, {MAX_SPEED}], got {max_change}")
    grid = np.linspace(1 - max_change, 1 + max_change, steps)
    return sorted({round(float(f) * SPEED_RESOLUTION) / SPEED_RESOLUTION for f in grid})


@lru_cache(maxsize=256)
def _speed_kernel(orig: int, device: str) -> tuple[torch.Tensor, int, int, int]:
    """torchaudio's filter bank for ``orig -> SPEED_RESOLUTION`` as ``[taps, phases]`` on ``device``,
    with the padding ``width`` and the gcd-reduced rates; computed once per factor and device."""
    reference = torchaudio.transforms.Resample(orig, SPEED_RESOLUTION, **SPEED_RESAMPLING)
    gcd = math.gcd(orig, SPEED_RESOLUTION)
    kernel = reference.kernel[:, 0, :].T.contiguous().to(device)
    return kernel, int(reference.width), orig // gcd, SPEED_RESOLUTION // gcd


def change_speed(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Return ``x`` played ``factor`` times as fast, zero-padded or cropped at the end to its length.

    An event ``L`` samples long becomes ``L / factor`` samples long and every frequency is
    multiplied by ``factor``. This is ``torchaudio.functional.resample(x, factor * 100, 100,
    **SPEED_RESAMPLING)`` (anti-aliased; see the module docstring), with the filter bank computed
    once per factor and applied as one matrix product over strided windows instead of a
    convolution with one output channel per phase, which PyTorch's CPU convolution runs slowly for
    the few phases a factor like 1.1 (11:10) has. The result equals torchaudio's to float
    rounding (a test checks).
    ``factor`` must be a positive multiple of 1/SPEED_RESOLUTION. Used by :class:`Augmenter`
    (notebook 7 and every training run that augments).
    """
    orig = round(factor * SPEED_RESOLUTION)
    if orig <= 0 or abs(orig - factor * SPEED_RESOLUTION) > 1e-6:
        raise ValueError(f"speed factor must be a positive multiple of 1/{SPEED_RESOLUTION}, got {factor}")
    n = x.shape[-1]
    if orig == SPEED_RESOLUTION:
        return x.clone()
    kernel, width, step, phases = _speed_kernel(orig, str(x.device))
    flat = x.reshape(-1, n)
    padded = F.pad(flat, (width, width + step))
    windows = padded.unfold(-1, kernel.shape[0], step)  # [clips, frames, taps], a strided view
    y = (windows @ kernel.to(x.dtype)).reshape(flat.shape[0], -1)[:, : math.ceil(phases * n / step)]
    y = y[:, :n] if y.shape[-1] >= n else F.pad(y, (0, n - y.shape[-1]))
    return y.reshape(x.shape)


def time_mask(x: torch.Tensor, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Return ``x`` with samples ``start[i] .. start[i] + length[i] - 1`` of clip ``i`` set to zero.
    Used by :class:`Augmenter` (notebook 7 and every training run that augments)."""
    x2 = _as_2d(x)
    t = torch.arange(x2.shape[-1], device=x2.device)[None, :]
    start = start.to(x2.device)[:, None]
    masked = (t >= start) & (t < start + length.to(x2.device)[:, None])
    return x2.masked_fill(masked, 0.0).view_as(x)


def mix_at_snr(x: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor, *,
               levels: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Return ``x + g * noise`` with each gain ``g`` chosen so that ``clip_level(x) / clip_level(g *
    noise)`` is ``snr_db`` (dB; ``inf`` adds nothing, and so does a silent ``noise``).
    ``levels``: ``(clip_level(x), clip_level(noise))`` when the caller has them already.
    Used by :class:`Augmenter` (notebook 7 and every training run that augments)."""
    lx, ln = levels if levels is not None else (clip_level(x), clip_level(noise))
    gain = torch.where(ln > 0, lx / ln.clamp(min=torch.finfo(ln.dtype).tiny) * 10.0 ** (-snr_db / 20.0), 0.0)
    return x + gain.to(x.dtype).view(-1, *([1] * (x.dim() - 1))) * noise


def mix_clips(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor, *,
              levels: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each clip with ``other`` in ``ratio`` (mixup), at equal levels.

    ``other`` is first scaled to ``x``'s level (:func:`clip_level`), so the result is
    ``ratio * x + (1 - ratio) * other * level(x) / level(other)``. A silent ``other`` cannot be
    heard in any ratio, so those clips keep ratio 1; a silent ``x`` takes ``other`` as it is.
    ``levels``: ``(clip_level(x), clip_level(other))`` when the caller has them already.

    Returns:
        ``(mixed, ratio)``: the mixed clips and the ratio actually used (for the labels).
        Used by :class:`Augmenter` (notebook 7 and every training run that augments).
    """
    lx, lo = levels if levels is not None else (clip_level(x), clip_level(other))
    tiny = torch.finfo(lo.dtype).tiny
    scale = torch.where(lo > 0, torch.where(lx > 0, lx / lo.clamp(min=tiny), 1.0), 0.0)
    ratio = torch.where(lo > 0, ratio, 1.0)
    shape = (-1, *([1] * (x.dim() - 1)))
    r = ratio.to(x.dtype).view(shape)
    return r * x + (1 - r) * scale.to(x.dtype).view(shape) * other, ratio


def sample_beta(a: float, n: int, *, generator: torch.Generator,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Return ``n`` samples of Beta(a, a) drawn from ``generator`` on its device, without syncing.

    ``torch.distributions.Beta`` cannot take a generator, so this draws two Gamma(a) variates per
    sample with Marsaglia and Tsang's method (vectorised: several candidates at once, the first
    accepted one kept), Gamma(a) as Gamma(a + 1) * U^(1/a), in logs so that small ``a`` cannot
    underflow, and returns G1 / (G1 + G2). Used by :class:`Augmenter` (mixup ratios).
    """
    if not a > 0:
        raise ValueError(f"Beta parameter must be > 0, got {a}")
    device = torch.device(device) if device is not None else generator.device
    m = 2 * n
    d = a + 1.0 - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    tiny = torch.finfo(torch.float32).tiny
    z = torch.randn(_BETA_TRIES, m, generator=generator, device=device)
    u = torch.rand(_BETA_TRIES, m, generator=generator, device=device).clamp(min=tiny)
    v = (1.0 + c * z) ** 3
    accepted = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp(min=tiny)))
    pick = accepted.to(torch.int32).argmax(dim=0, keepdim=True)  # first accepted candidate
    v = torch.where(accepted.any(dim=0), v.gather(0, pick)[0], 1.0)
    u_boost = torch.rand(m, generator=generator, device=device).clamp(min=tiny)
    log_gamma = math.log(d) + torch.log(v) + torch.log(u_boost) / a
    return torch.sigmoid(log_gamma[:n] - log_gamma[n:])


def _derangement(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """A random partner for every index, never the index itself (n >= 2): a random cycle."""
    order = torch.randperm(n, generator=generator, device=device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    return partner


# ---------------------------------------------------------------------------------------------
# The augmenter


def augment_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Return the augmenter's seed for ``(run seed, epoch, DDP rank)``: distinct for every triple,
    so reseeding at each epoch's start makes a resumed run (and every rank) draw exactly what an
    uninterrupted one would. Used by ``us8k_lib.train``."""
    words = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(rank), 0xA06]).generate_state(2)
    return (int(words[0]) << 31) ^ int(words[1])


@dataclass
class AugmentResult:
    """What :meth:`Augmenter.augment` returns.

    Attributes:
        x: the augmented batch, same shape and device as the input.
        target: the labels (int64 ``[batch]``) when no augmentation mixes labels, else class
            probabilities (float ``[batch, n_classes]``, each row summing to 1).
        params: what was drawn, per clip (tensors on the device; only for augmentations that are
            on): ``speed`` (factor), ``shift`` (samples, positive = later), ``wrapped`` (rotated,
            not moved inside the window), ``mask_start``/``mask_length`` (samples),
            ``noise_partner``/``noise_on``/``snr_db``, ``mix_partner``/``mix_ratio``.
    """

    x: torch.Tensor
    target: torch.Tensor
    params: dict[str, torch.Tensor] = field(default_factory=dict)


class Augmenter:
    """Augments training batches on their device (see the module docstring for each augmentation).

    Call it as ``x, target = augmenter(x, y)`` inside the training step, after the batch was
    copied to the device; ``target`` is ``y`` unless mixup is on, then class probabilities for
    ``F.cross_entropy(logits, target)``. Every random number comes from ``self.generator`` (on
    ``device``) and, for the order of the speed factors, ``self.host_generator`` (CPU), so the
    same seed gives the same batches and :meth:`state_dict` is all a checkpoint needs. Never use
    it on evaluation batches.

    Args:
        sr: sample rate of the clips (Hz): turns the seconds below into samples.
        n_classes: number of classes (for mixup's probability targets).
        device: the training device; batches must be on it.
        seed: seeds the generator (reseed per epoch with :meth:`manual_seed` and :func:`augment_seed`).
        aug_shift, aug_speed, aug_mask, aug_noise, aug_mixup: as the ``TrainConfig`` fields of
            the same names; 0 switches one off.

    Used by :func:`demonstrate` (notebook 7) and every training run that augments.
    """

    def __init__(self, *, sr: int, n_classes: int, device: torch.device | str, seed: int,
                 aug_shift: float = 0.0, aug_speed: float = 0.0, aug_mask: float = 0.0,
                 aug_noise: float = 0.0, aug_mixup: float = 0.0) -> None:
        self.settings = {"aug_shift": float(aug_shift), "aug_speed": float(aug_speed), "aug_mask": float(aug_mask),
                         "aug_noise": float(aug_noise), "aug_mixup": float(aug_mixup)}
        problems = augment_problems(self.settings)
        if not isinstance(sr, int) or sr <= 0:
            problems.append(f"sr must be a positive integer, got {sr!r}")
        if not isinstance(n_classes, int) or n_classes < 2:
            problems.append(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if problems:
            raise ValueError("invalid augmentation settings: " + "; ".join(problems))
        self.sr, self.n_classes = sr, n_classes
        self.device = torch.device(device)
        self.generator = torch.Generator(device=self.device)
        self.host_generator = torch.Generator()
        self.manual_seed(seed)
        self.factors = speed_factors(self.settings["aug_speed"]) if self.settings["aug_speed"] else []

    @classmethod
    def from_config(cls, config: Any, *, sr: int, n_classes: int, device: torch.device | str,
                    rank: int = 0) -> Augmenter | None:
        """Return the augmenter ``config``'s ``aug_*`` fields ask for, or None when all are 0.

        Seeded from ``(config.seed, epoch 0, rank)``; a training loop reseeds it at each epoch's
        start, e.g. with ``manual_seed(augment_seed(config.seed, epoch, rank))``. Used by
        ``us8k_lib.train``.
        """
        values = {name: float(getattr(config, name, 0.0) or 0.0) for name in AUGMENT_FIELDS}
        if not any(values.values()):
            return None
        return cls(sr=sr, n_classes=n_classes, device=device, seed=augment_seed(config.seed, 0, rank), **values)

    def manual_seed(self, seed: int) -> None:
        """Reseed the generators (the training loop does at each epoch's start)."""
        self.generator.manual_seed(int(seed))
        # A different seed for the host generator: on a CPU both would otherwise repeat one stream.
        self.host_generator.manual_seed(int(seed) ^ _HOST_SEED_XOR)

    def state_dict(self) -> dict[str, Any]:
        """Return the generators' states and the settings (saved in checkpoints)."""
        return {"generator": self.generator.get_state(), "host_generator": self.host_generator.get_state(),
                "settings": dict(self.settings)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; its settings must match this augmenter's."""
        if dict(state.get("settings", {})) != self.settings:
            raise ValueError(f"augmenter state is for settings {state.get('settings')}, not {self.settings}")
        self.generator.set_state(state["generator"])
        self.host_generator.set_state(state["host_generator"])

    def describe(self) -> str:
        """Return a one-line summary of what is on, e.g. for a training run's first line."""
        s = self.settings
        parts = []
        if s["aug_shift"]:
            parts.append(f"shift up to {s['aug_shift']:g} s")
        if s["aug_speed"]:
            parts.append(f"speed x{self.factors[0]:g}-{self.factors[-1]:g} ({len(self.factors)} factors)")
        if s["aug_mask"]:
            parts.append(f"mask up to {s['aug_mask']:g} s")
        if s["aug_noise"]:
            parts.append(f"noise for {s['aug_noise']:.0%} of clips at {NOISE_SNR_DB[0]:g}-{NOISE_SNR_DB[1]:g} dB SNR")
        if s["aug_mixup"]:
            parts.append(f"mixup Beta({s['aug_mixup']:g}, {s['aug_mixup']:g})")
        return ", ".join(parts) or "none"

    def __repr__(self) -> str:
        return f"Augmenter({self.describe()}; sr={self.sr}, device={self.device})"

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(augmented x, target)``: see :meth:`augment`."""
        result = self.augment(x, y)
        return result.x, result.target

    def augment(self, x: torch.Tensor, y: torch.Tensor) -> AugmentResult:
        """Augment one batch ``x [batch, 1, samples]`` with labels ``y [batch]`` (both on the device).

        The number of random draws depends only on the batch size and the settings, never on
        the audio, so the generator stays in step however the clips look.

        Returns:
            An :class:`AugmentResult`: the new batch (the input is not modified), the target and
            the drawn parameters. Used by notebook 7.
        """
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"expected a batch [batch, 1, samples], got {tuple(x.shape)}")
        if x.device.type != self.device.type or y.device != x.device:
            raise ValueError(f"batch on {x.device}, labels on {y.device}: both must be on the "
                             f"augmenter's device {self.device}")
        s, g, dev = self.settings, self.generator, x.device
        batch = x.shape[0]
        params: dict[str, torch.Tensor] = {}
        out = x
        if s["aug_speed"]:
            out = self._speed(out, params)
        if s["aug_shift"]:
            out = self._shift(out, params)
        if s["aug_mask"]:
            first, length = active_span(out)
            most = torch.clamp(length // 2, max=round(s["aug_mask"] * self.sr))
            u = torch.rand(2, batch, generator=g, device=dev)
            mask_length = torch.minimum((u[0] * (most + 1)).long(), most)
            room = length - mask_length
            start = first + torch.minimum((u[1] * (room + 1)).long(), room)
            out = time_mask(out, start, mask_length)
            params.update(mask_start=start, mask_length=mask_length)
        if s["aug_noise"] and batch > 1:
            partner = _derangement(batch, g, dev)
            u = torch.rand(2, batch, generator=g, device=dev)
            on = u[0] < s["aug_noise"]
            snr = NOISE_SNR_DB[0] + (NOISE_SNR_DB[1] - NOISE_SNR_DB[0]) * u[1]
            level = clip_level(out)
            out = mix_at_snr(out, out[partner], torch.where(on, snr, math.inf), levels=(level, level[partner]))
            params.update(noise_partner=partner, noise_on=on, snr_db=snr)
        target = y
        if s["aug_mixup"]:
            target = F.one_hot(y, self.n_classes).float()
            if batch > 1:
                partner = _derangement(batch, g, dev)
                b = sample_beta(s["aug_mixup"], batch, generator=g, device=dev)
                ratio = torch.maximum(b, 1 - b)  # the clip stays the main sound of its own slot
                level = clip_level(out)
                out, ratio = mix_clips(out, out[partner], ratio, levels=(level, level[partner]))
                target = ratio[:, None] * target + (1 - ratio[:, None]) * target[partner]
                params.update(mix_partner=partner, mix_ratio=ratio)
        return AugmentResult(x=out if out is not x else x.clone(), target=target, params=params)

    def _speed(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        # Clip order[j] takes slot j, and slot j the factor at position j % k of a random order of
        # the k factors. The order of clips is drawn on the device; the order of the factors on
        # the host (k small numbers), so the host knows every group without waiting for the device.
        batch, k = x.shape[0], len(self.factors)
        order = torch.randperm(batch, generator=self.generator, device=x.device)
        positions = torch.randperm(k, generator=self.host_generator).tolist()
        out = torch.empty_like(x)
        factor = torch.empty(batch, device=x.device)
        for p in range(min(k, batch)):
            rows, f = order[p::k], self.factors[positions[p]]
            out[rows] = change_speed(x[rows], f)
            factor[rows] = f
        params["speed"] = factor
        return out

    def _shift(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        n = x.shape[-1]
        most = round(self.settings["aug_shift"] * self.sr)
        first, length = active_span(x)
        wrapped = n - length <= round(WRAP_MAX_PADDING_S * self.sr)
        # An event moves only as far as its padding allows; a full clip rotates by up to `most`.
        lo = torch.where(wrapped, -most, torch.clamp(-first, min=-most))
        hi = torch.where(wrapped, most, torch.clamp(n - first - length, max=most))
        u = torch.rand(x.shape[0], generator=self.generator, device=x.device)
        shift = lo + torch.minimum((u * (hi - lo + 1)).long(), hi - lo)
        params.update(shift=shift, wrapped=wrapped)
        return roll_clips(x, shift)


# ---------------------------------------------------------------------------------------------
# Hear and see it (notebook 7)

#: The settings notebook 7 demonstrates each augmentation with: strong enough to hear.
DEMO_SETTINGS: dict[str, dict[str, float]] = {
    "shift": {"aug_shift": 1.0},
    "speed": {"aug_speed": 0.2},
    "mask": {"aug_mask": 0.5},
    "noise": {"aug_noise": 1.0},
    "mixup": {"aug_mixup": 1.0},
    "all ('strong' preset)": AUGMENT_PRESETS["strong"],
}


@dataclass
class Demo:
    """One augmentation applied to one clip (see :func:`demonstrate`).

    Attributes:
        name: the augmentation, e.g. ``"speed"``.
        settings: the ``aug_*`` values used.
        x: the augmented clip (float32 numpy, the original's length).
        drawn: what was drawn for this clip, in words (rounded).
        target: the training target for the clip, as class name -> probability.
    """

    name: str
    settings: dict[str, float]
    x: np.ndarray
    drawn: str
    target: dict[str, float]


def _drawn(params: Mapping[str, torch.Tensor], i: int, sr: int, names: list[str]) -> str:
    def v(key: str) -> float:
        return float(params[key][i])

    words = []
    if "speed" in params:
        f = v("speed")
        words.append(f"speed x{f:.2f}: {1 / f:.2f} times as long, pitch {12 * math.log2(f):+.1f} semitones")
    if "shift" in params:
        how = "rotated: the clip fills its window" if bool(params["wrapped"][i]) else "inside the window"
        words.append(f"shifted {v('shift') / sr:+.2f} s ({how})")
    if "mask_length" in params:
        words.append(f"zeroed {v('mask_length') / sr:.2f} s from {v('mask_start') / sr:.2f} s")
    if "noise_on" in params:
        other = names[int(params["noise_partner"][i])]
        words.append(f"{other} mixed in as noise at {v('snr_db'):.1f} dB SNR" if bool(params["noise_on"][i])
                     else "no background noise this time")
    if "mix_ratio" in params:
        r, other = v("mix_ratio"), names[int(params["mix_partner"][i])]
        words.append(f"mixed {r:.2f} : {1 - r:.2f} with {other}")
    return "; ".join(words)


def demonstrate(clip: np.ndarray, other: np.ndarray, labels: tuple[int, int], *, sr: int = audio.TARGET_SR,
                seed: int = 0, settings: Mapping[str, Mapping[str, float]] | None = None,
                classes: tuple[str, ...] | list[str] | None = None) -> list[Demo]:
    """Apply each of ``settings`` (default :data:`DEMO_SETTINGS`) to ``clip`` in a batch of two
    with ``other`` (the clip that noise and mixup take in), each with a fresh :class:`Augmenter`
    seeded with ``seed``, exactly as training would.

    Args:
        clip, other: mono clips as the model sees them (``audio.format_clip``), same length.
        labels: the two clips' class IDs.
        sr: their sample rate.
        seed: the augmenters' seed (same seed, same result).
        settings: name -> ``aug_*`` values.
        classes: class names by ID (default UrbanSound8K's).

    Returns:
        One :class:`Demo` per setting, for ``clip``. Used by notebook 7.
    """
    from us8k_lib.metadata import CLASSES

    classes = list(classes or CLASSES)
    x = torch.from_numpy(np.stack([np.asarray(clip, np.float32), np.asarray(other, np.float32)]))[:, None]
    y = torch.tensor(list(labels), dtype=torch.long)
    demos = []
    for name, values in (settings or DEMO_SETTINGS).items():
        aug = Augmenter(sr=sr, n_classes=len(classes), device="cpu", seed=seed, **values)
        result = aug.augment(x, y)
        target = result.target[0] if result.target.dim() == 2 else F.one_hot(result.target[0], len(classes))
        probs = {classes[j]: round(float(p), 3) for j, p in enumerate(target.tolist()) if p > 0}
        demos.append(Demo(name=name, settings=dict(values), x=result.x[0, 0].numpy(),
                          drawn=_drawn(result.params, 0, sr, [classes[int(label)] for label in labels]),
                          target=probs))
    return demos


