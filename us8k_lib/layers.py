"""Layer by layer: every layer's output shape, receptive field and parameters, for any model; and the
family's table of sizes.

A row says what one layer outputs for an input of a given length: its shape (channels, time
steps), how many input samples one of its output steps depends on (its receptive field) and how
far apart two of its steps are (its hop). The arithmetic is checked against a real forward pass,
row by row, so a table cannot drift from its network. Used by notebook 4.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from torch import nn

from us8k_lib.model import M5, MODEL_NAMES, RawWaveformCNN, ResidualBlock, build_model, count_parameters
from us8k_lib.model_input import layer_geometry, trace_output_shapes


@dataclass(frozen=True)
class _At:
    """Where the signal is after a layer: channels, time steps (None: length unknown), receptive
    field and hop in input samples."""

    channels: int
    steps: int | None
    field: int
    hop: int


def _after(m: nn.Module, at: _At) -> _At:
    """Return the geometry after layer ``m`` (only convolutions and pools change it)."""
    if not isinstance(m, (nn.Conv1d, nn.MaxPool1d)):
        return at
    k, s, d, p = (_as_int(v) for v in (m.kernel_size, m.stride, m.dilation, m.padding))
    steps = None if at.steps is None else (at.steps + 2 * p - d * (k - 1) - 1) // s + 1
    channels = m.out_channels if isinstance(m, nn.Conv1d) else at.channels
    return _At(channels, steps, *layer_geometry(m, at.field, at.hop))


def _as_int(v: int | tuple[int, ...]) -> int:
    return int(v[0]) if isinstance(v, tuple) else int(v)


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in module.named_modules(prefix=prefix) if not list(m.children())]


def _layer_geometry(model: nn.Module, length: int | None
                    ) -> tuple[list[tuple[str, nn.Module | None, _At]], _At]:
    """Follow an input of ``length`` samples through ``model``'s layers before the mean over time,
    one row per layer (M5's named layers in order; a family model's ``blocks``).

    Returns ``(rows, end)``: rows of (name, module or None for a residual sum, geometry after
    it), and the geometry of the output. A residual block's shortcut starts from the block's
    input; the sum sees as far as its wider branch, the convolutions.
    """
    rows: list[tuple[str, nn.Module | None, _At]] = []
    at = _At(1, length, 1, 1)
    if isinstance(model, M5):
        for name, m in model.named_children():
            if name != "fc":
                at = _after(m, at)
                rows.append((name, m, at))
        return rows, at
    for index, block in model.blocks.named_children():
        prefix = f"blocks.{index}"
        if isinstance(block, ResidualBlock):
            start = at
            for name in ("conv1", "bn1", "relu1", "conv2", "bn2"):
                at = _after(getattr(block, name), at)
                rows.append((f"{prefix}.{name}", getattr(block, name), at))
            short = start
            for name, m in _leaves(block.shortcut, f"{prefix}.shortcut"):
                short = _after(m, short)
                rows.append((name, m, short))
            at = _At(at.channels, at.steps, max(at.field, short.field), at.hop)
            rows.append((f"{prefix} sum", None, at))
            rows.append((f"{prefix}.relu2", block.relu2, at))
        else:
            for name, m in _leaves(block, prefix):
                at = _after(m, at)
                rows.append((name, m, at))
    return rows, at


def compute_layer_table(model: nn.Module, length: int = 32000, sr: int = 8000) -> pd.DataFrame:
    """Return a layer-by-layer table of ``model`` (any of the family) for ``length`` samples at ``sr`` Hz.

    Columns: ``layer`` (module name; ``blocks.N sum`` is a residual block's addition), ``type``,
    ``output_shape`` (channels, time steps; batch left out), ``receptive_field`` (input samples
    one output step sees), ``receptive_field_ms``, ``hop`` (input samples between output steps),
    ``params``. The last rows are the mean over time and the classifier. Every row's shape is
    checked against a real forward pass, so the table cannot drift from the network.
    Used by notebook 4.
    """
    if length < model.receptive_field:
        raise ValueError(f"length {length} is shorter than the receptive field ({model.receptive_field} samples)")
    if not isinstance(model, (M5, RawWaveformCNN)):  # the log-mel CNN reads its shapes off a forward pass
        return model.layer_table(length=length, sr=sr)
    layers, end = _layer_geometry(model, length)
    rows = [{
        "layer": name, "type": type(m).__name__ if m is not None else "add",
        "output_shape": (at.channels, at.steps), "receptive_field": at.field,
        "receptive_field_ms": 1000 * at.field / sr, "hop": at.hop,
        "params": count_parameters(m) if m is not None else 0,
    } for name, m, at in layers]
    for name, kind, shape, params in (("mean over time", "mean", (end.channels,), 0),
                                      ("fc", "Linear", (model.fc.out_features,), count_parameters(model.fc))):
        rows.append({"layer": name, "type": kind, "output_shape": shape, "receptive_field": length,
                     "receptive_field_ms": 1000 * length / sr, "hop": None, "params": params})
    table = pd.DataFrame(rows)
    table["hop"] = table["hop"].astype("Int64")  # the last two rows have no hop: keep integers
    _check_against_forward(model, layers, length)
    return table


def _check_against_forward(model: nn.Module, layers: list[tuple[str, nn.Module | None, _At]],
                           length: int) -> None:
    """Run the model once and compare every layer's real output shape with the table's."""
    seen = trace_output_shapes(model, length)
    for name, m, at in layers:
        if m is None:
            continue
        shapes = seen.get(name, [])
        if shapes != [(at.channels, at.steps)]:
            raise AssertionError(f"layer table row {name}: computed {(at.channels, at.steps)}, "
                                 f"the model produced {shapes}")


def family_table(length: int = 32000, sr: int = 8000, n_classes: int = 10) -> pd.DataFrame:
    """Return one row per model of the family: size, receptive field and output length.

    Columns: ``model`` (the paper's name), ``name`` (for ``--model``), ``parameters``,
    ``receptive_field`` (samples), ``receptive_field_ms``, ``hop`` (samples), ``output_steps``
    (time steps before the mean, for ``length`` samples), each computed from a freshly built
    network (and its layer table, so checked against a forward pass). Used by notebook 4.
    """
    rows = []
    for name in MODEL_NAMES:
        model = build_model(name, n_classes=n_classes)
        table = compute_layer_table(model, length=length, sr=sr)
        last_block = table.iloc[-3]  # what the mean over time reads (the mean and fc come last)
        rows.append({
            "model": model.title, "name": name, "parameters": count_parameters(model),
            "receptive_field": model.receptive_field,
            "receptive_field_ms": 1000 * model.receptive_field / sr, "hop": model.hop,
            "output_steps": last_block["output_shape"][-1],
        })
    return pd.DataFrame(rows)
