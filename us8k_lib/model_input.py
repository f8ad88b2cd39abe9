"""What every model does to its input first: check its shape and length, then scale each clip to unit RMS;
and how much input one output step of a stack of convolutions and pools sees (the shortest input).

Shared by the raw-waveform CNNs (:mod:`us8k_lib.model`) and the log-mel CNN (:mod:`us8k_lib.logmel`),
so both refuse the same inputs with the same words and hear the same loudness-free clip.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

#: RMS below which a clip counts as silent and is not amplified (about -80 dBFS): scaling digital
#: silence or a faint hiss up to unit RMS would only amplify noise.
SILENCE_RMS = 1e-4


def prepare_input(x: torch.Tensor, *, title: str, receptive_field: int, normalize: bool) -> torch.Tensor:
    """Return ``x`` (``[batch, 1, samples]``), each clip scaled to unit RMS when ``normalize``.

    Raises:
        ValueError: naming the model (``title``), if ``x`` is not ``[batch, 1, samples]`` or is
            shorter than the model's ``receptive_field``.

    Used by every model's ``forward`` (through them, by notebooks 4, 5 and 8).
    """
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"{title} expects input of shape [batch, 1, samples], got {list(x.shape)}")
    if x.shape[-1] < receptive_field:
        raise ValueError(f"input of {x.shape[-1]} samples is shorter than {title}'s receptive field of "
                         f"{receptive_field} samples; pad the audio (e.g. audio.pad_or_crop)")
    if normalize:
        x = x / x.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(SILENCE_RMS)
    return x


def _first(v: int | tuple[int, ...]) -> int:
    return int(v[0]) if isinstance(v, tuple) else int(v)


def layer_geometry(layer: nn.Module, field: int, hop: int) -> tuple[int, int]:
    """Return ``(receptive field, hop)`` in input samples after ``layer``, given those before it.

    A 1-D convolution or max-pool of kernel ``k``, stride ``s`` and dilation ``d`` widens what one
    output step sees by ``d * (k - 1)`` steps of the layer before (``hop`` samples each) and
    multiplies the hop by ``s``; any other layer changes neither.
    """
    if not isinstance(layer, (nn.Conv1d, nn.MaxPool1d)):
        return field, hop
    k, s, d = (_first(v) for v in (layer.kernel_size, layer.stride, layer.dilation))
    return field + d * (k - 1) * hop, hop * s


def conv_geometry(layers: Iterable[nn.Module]) -> tuple[int, int]:
    """Return ``(receptive field, hop)`` in input samples of ``layers`` applied in the order given:
    how many input samples one output step sees, and how far apart two output steps are.
    Used by the raw-waveform models (notebook 4's receptive fields)."""
    field, hop = 1, 1
    for layer in layers:
        field, hop = layer_geometry(layer, field, hop)
    return field, hop


def trace_output_shapes(model: nn.Module, length: int) -> dict[str, list[tuple[int, ...]]]:
    """Run ``model`` once on a batch of one silent clip of ``length`` samples (evaluation mode, no
    gradients) and return the output shape of every leaf layer, batch left out, by layer name: one
    shape per call. The model's mode is restored. What the layer tables are checked against
    (:func:`us8k_lib.layers.compute_layer_table`, notebook 4)."""
    shapes: dict[str, list[tuple[int, ...]]] = {}

    def recorder(name: str) -> Any:
        def record(module: nn.Module, args: object, out: torch.Tensor) -> None:
            shapes.setdefault(name, []).append(tuple(out.shape[1:]))
        return record

    hooks = [m.register_forward_hook(recorder(name)) for name, m in model.named_modules()
             if name and not list(m.children())]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 1, length, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes
