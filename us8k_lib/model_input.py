"""What every model does to its input first: check its shape and length, then scale each clip to unit RMS.

Shared by the raw-waveform CNNs (:mod:`us8k_lib.model`) and the log-mel CNN (:mod:`us8k_lib.logmel`),
so both refuse the same inputs with the same words and hear the same loudness-free clip.
"""

from __future__ import annotations

import torch

#: RMS below which a clip counts as silent and is not amplified (about -80 dBFS): scaling digital
#: silence or a faint hiss up to unit RMS would only amplify noise.
SILENCE_RMS = 1e-4


def prepare_input(x: torch.Tensor, *, title: str, receptive_field: int, normalize: bool) -> torch.Tensor:
    """Return ``x`` (``[batch, 1, samples]``), each clip scaled to unit RMS when ``normalize``.

    Raises:
        ValueError: naming the model (``title``), if ``x`` is not ``[batch, 1, samples]`` or is
            shorter than the model's ``receptive_field``.

    Used by the ``features`` of every model (notebooks 4, 5 and 8).
    """
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"{title} expects input of shape [batch, 1, samples], got {list(x.shape)}")
    if x.shape[-1] < receptive_field:
        raise ValueError(f"input of {x.shape[-1]} samples is shorter than {title}'s receptive field of "
                         f"{receptive_field} samples; pad the audio (e.g. audio.pad_or_crop)")
    if normalize:
        x = x / x.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(SILENCE_RMS)
    return x
