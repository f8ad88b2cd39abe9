"""Every model of the project, by name: the raw-waveform CNNs of Dai et al. (2017) -- M3, M5, M11,
M18 and M34-res, built from one table -- and, through the same :func:`build_model`, the log-mel
CNN of :mod:`us8k_lib.logmel` (``"logmel"``, notebook 8).

W. Dai, C. Dai, S. Qu, J. Li and S. Das, *Very Deep Convolutional Neural Networks for Raw
Waveforms*, ICASSP 2017 (arXiv:1610.00087), Table 1. Every raw-waveform model starts the same way: an
80-sample, stride-4 convolution (10 ms filters at 8 kHz) and a max-pool of 4, which take 32 000
samples down to 1 995 time steps. Then come stages of 3-tap convolutions, each stage twice as wide
as the one before, with a max-pool of 4 between stages. Every convolution is followed by
BatchNorm and ReLU. A mean over time and one Linear layer give one logit per class. M34-res builds
its stages from residual blocks of two convolutions instead of plain convolutions.

:data:`SPECS` is the paper's table, one line per model; :class:`RawWaveformCNN` builds any line
of it, and :func:`build_model` is the one way to get a model by name. Choices the paper leaves
open, made here:

- **Padding of the 3-tap convolutions.** M5 keeps the original PyTorch tutorial's unpadded
  convolutions, so it is that network exactly: 559,114 parameters, the same outputs for the same
  weights (tested), 30 time steps left from 32 000 samples. The other models pad one sample on
  each side ("same" padding), so only the pools shorten the signal: a residual block adds its
  input to its output, which needs both the same length, and M18's sixteen 3-tap convolutions
  would otherwise each cut two steps more.
- **Channel changes in M34-res.** The first block of a stage that doubles the channels adds its
  input through a 1x1 convolution and BatchNorm (a projection shortcut, as in He et al. 2016's
  ResNets); every other block adds its input unchanged. That costs 98,784 parameters: 4.08 M in
  all against the paper's 4 M (a parameter-free zero-padded shortcut would give 3.98 M).
- **Biases.** Every convolution keeps its bias, as the tutorial's M5 does. A bias before
  BatchNorm does nothing, but it is part of M5's 559,114 parameters.

Differences from the tutorial's M5, on purpose: ``forward`` returns logits
(``nn.CrossEntropyLoss`` applies log-softmax itself), and the tutorial's ``AvgPool1d(30)`` became
a mean over time, so any input at least one receptive field long works.

Used by notebook 4 (architecture), notebook 5 (training) and every training run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from us8k_lib.model_input import prepare_input

# ---------------------------------------------------------------------------------------------
# The family: Table 1 of Dai et al. (2017), one line per model


@dataclass(frozen=True)
class Spec:
    """One model of the family, as a table of stages.

    Attributes:
        title: the paper's name for the model.
        width: channels of the first convolution and of the first stage (the paper's value).
        stages: 3-tap convolutions per stage (for M34-res: residual blocks of two); stage ``i``
            has ``width * 2**i`` channels. A max-pool of 4 follows the first convolution and
            sits between stages.
        pool_last: also pool after the last stage (M3 and M5 do; the deeper models go straight
            to the mean over time).
        padding: samples of padding on each side of the 3-tap convolutions: 1 keeps the length,
            0 is the tutorial's M5.
        residual: stages of residual blocks instead of plain convolutions.
    """

    title: str
    width: int
    stages: tuple[int, ...]
    pool_last: bool = False
    padding: int = 1
    residual: bool = False


SPECS: dict[str, Spec] = {
    "m3": Spec("M3", width=256, stages=(1,), pool_last=True),
    "m5": Spec("M5", width=128, stages=(1, 1, 1), pool_last=True, padding=0),
    "m11": Spec("M11", width=64, stages=(2, 2, 3, 2)),
    "m18": Spec("M18", width=64, stages=(4, 4, 4, 4)),
    "m34res": Spec("M34-res", width=48, stages=(3, 4, 6, 3), residual=True),
}
#: The raw-waveform models of Dai et al. (2017).
RAW_WAVEFORM_MODELS = tuple(SPECS)
#: Every model ``build_model`` knows: the raw-waveform family and the log-mel CNN
#: (:mod:`us8k_lib.logmel`, notebook 8).
MODEL_NAMES = (*RAW_WAVEFORM_MODELS, "logmel")

#: Parameter counts (10 classes) of Table 1 of Dai et al. (2017), rounded as the paper prints
#: them (notebook 4 compares them with the exact counts). M5 is not listed:
#: its reference is the original tutorial's network, 559,114 parameters exactly. Used by notebook 4.
PAPER_PARAMETERS: dict[str, float] = {"m3": 0.2e6, "m11": 1.8e6, "m18": 3.7e6, "m34res": 4.0e6}

FIRST_KERNEL = 80  # samples: 10 ms at 8 kHz
FIRST_STRIDE = 4
POOL = 4
KERNEL = 3  # every later convolution


def parse_model_name(name: str) -> str:
    """Return the canonical name (``"m34res"``) for ``name`` (``"M34-res"``, ``"m18"``, ...).

    Case, ``-`` and ``_`` do not matter. Raises ValueError listing the valid names otherwise.
    Used by :class:`ModelConfig` and the ``--model`` option.
    """
    key = str(name).strip().lower().replace("-", "").replace("_", "")
    if key == "logmelcnn":
        key = "logmel"
    if key not in MODEL_NAMES:
        valid = ", ".join(f"{n} ({display_name(n)})" for n in MODEL_NAMES)
        raise ValueError(f"unknown model {name!r}: choose one of {valid}")
    return key


def display_name(model: str) -> str:
    """Return the paper's spelling of a model name (``"m34res"`` -> ``"M34-res"``).

    Used by notebooks 4, 6 and 8 and every command's log.
    """
    key = parse_model_name(model)
    return "LogMel-CNN" if key == "logmel" else SPECS[key].title


@dataclass
class ModelConfig:
    """Which network to build, and how wide.

    Attributes:
        name: one of :data:`MODEL_NAMES` (any case; ``"M34-res"`` works too); stored canonical.
        n_classes: number of output logits (UrbanSound8K has 10 classes).
        width: channels of the first stage; None is the paper's (M3 256, M5 128, M11 and M18
            64, M34-res 48; the log-mel CNN's first block: 32). Later stages scale with it, so a small width gives a small model of
            the same shape (for quick tests).
        normalize: scale each clip to unit RMS before the first convolution. Off in the paper;
            the training recipe turns it on, because a clip's loudness (recording gain,
            distance) says nothing about its class but otherwise changes every activation.
    """

    name: str = "m5"
    n_classes: int = 10
    width: int | None = None
    normalize: bool = False

    def __post_init__(self) -> None:
        self.name = parse_model_name(self.name)
        if self.n_classes < 1:
            raise ValueError(f"n_classes must be >= 1, got {self.n_classes}")
        if self.width is not None and self.width < 1:
            raise ValueError(f"width must be >= 1 (or None for the paper's), got {self.width}")


# ---------------------------------------------------------------------------------------------
# Building blocks


class ConvBlock(nn.Module):
    """Conv1d -> BatchNorm1d -> ReLU, with an optional MaxPool1d: one plain layer of the family.

    With a pool, ``forward`` pools before the ReLU: max and ReLU commute (both keep order), so
    the output and the gradients are the same, but the ReLU then touches 4x less data, which makes
    training on a CPU noticeably faster (the first block's output is 128 x 7981 per clip in M5).
    The modules are registered in the order they run, so the layer table lists them that way.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 pool: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=padding)
        self.bn = nn.BatchNorm1d(c_out)
        self.pool = nn.MaxPool1d(pool) if pool else None
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        if self.pool is not None:
            x = self.pool(x)
        return self.relu(x)


class ResidualBlock(nn.Module):
    """Two padded 3-tap convolutions whose output is added to the block's input (He et al. 2016).

    conv1 -> bn1 -> relu1 -> conv2 -> bn2, plus the shortcut, then relu2. The shortcut is the
    input itself, or a 1x1 convolution and BatchNorm where the block changes the channel count.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, KERNEL, padding=KERNEL // 2)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv1d(c_out, c_out, KERNEL, padding=KERNEL // 2)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = (nn.Identity() if c_in == c_out
                         else nn.Sequential(nn.Conv1d(c_in, c_out, 1), nn.BatchNorm1d(c_out)))
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(h)) + self.shortcut(x))


# ---------------------------------------------------------------------------------------------
# The network


class RawWaveformCNN(nn.Module):
    """Any model of the family: ``[batch, 1, samples]`` float audio -> ``[batch, n_classes]`` logits.

    Build it with :func:`build_model`.

    Attributes:
        config: the :class:`ModelConfig` it was built from.
        title: the paper's name, e.g. ``"M34-res"``.
        blocks: every layer before the mean over time, in order.
        fc: the classifier.
        receptive_field: input samples that one time step of the last layer sees (1772 for M5,
            221.5 ms at 8 kHz); also the shortest input the model accepts.
        hop: input samples between two neighbouring time steps of the last layer (1024 for M5).

    Used by notebooks 4 and 5.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        spec = SPECS[config.name]
        self.title = spec.title
        width = config.width or spec.width
        layers: list[nn.Module] = [ConvBlock(1, width, FIRST_KERNEL, stride=FIRST_STRIDE, pool=POOL)]
        c_in = width
        for i, n in enumerate(spec.stages):
            c_out = width * 2**i
            pool = POOL if i < len(spec.stages) - 1 or spec.pool_last else 0
            for j in range(n):
                if spec.residual:
                    layers.append(ResidualBlock(c_in, c_out))
                else:  # the stage's pool goes into its last convolution (pooled before the ReLU)
                    layers.append(ConvBlock(c_in, c_out, KERNEL, padding=spec.padding,
                                            pool=pool if j == n - 1 else 0))
                c_in = c_out
            if spec.residual and pool:
                layers.append(nn.MaxPool1d(pool))
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, config.n_classes)
        _, end = _layer_geometry(self.blocks, None)
        self.receptive_field, self.hop = end.field, end.hop

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last layer's output, ``[batch, channels, time]`` (before the mean over time)."""
        x = prepare_input(x, title=self.title, receptive_field=self.receptive_field,
                          normalize=self.config.normalize)
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits ``[batch, n_classes]`` (apply softmax for probabilities)."""
        # A mean over time replaces the tutorial's AvgPool1d(30): identical on 32 000-sample
        # input to M5 (30 steps), and it keeps working for other lengths and models.
        return self.fc(self.features(x).mean(dim=-1))


def build_model(config: ModelConfig | str = "m5", **overrides: object) -> nn.Module:
    """Return a freshly initialised model: the one way to build one.

    ``config`` is a :class:`ModelConfig` or a model name (:data:`MODEL_NAMES`: a raw-waveform
    :class:`RawWaveformCNN` of Dai et al., or ``"logmel"``, the
    :class:`us8k_lib.logmel.LogMelCNN`); ``overrides`` replace its fields, e.g.
    ``build_model("m18", width=8)``. Every model maps ``[batch, 1, samples]`` to
    ``[batch, n_classes]`` logits and has ``title``, ``features``, ``fc``, ``receptive_field``
    and ``hop``. Raises ValueError for an unknown name (listing the valid ones). Used by
    notebooks 4, 5 and 8 and every training run.
    """
    if isinstance(config, str):
        config = ModelConfig(name=config, **overrides)  # type: ignore[arg-type]
    elif overrides:
        config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
    if config.name == "logmel":
        from us8k_lib.logmel import LogMelCNN  # late: it needs torchaudio

        return LogMelCNN(config)
    return RawWaveformCNN(config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameters of ``model`` (559,114 for M5 with 10 classes).

    BatchNorm running statistics are buffers, not parameters, so they are not counted.
    Used by notebook 4.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------
# Shapes and receptive fields, layer by layer


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
    return _At(channels, steps, at.field + d * (k - 1) * at.hop, at.hop * s)


def _as_int(v: int | tuple[int, ...]) -> int:
    return int(v[0]) if isinstance(v, tuple) else int(v)


def _leaves(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    return [(name, m) for name, m in module.named_modules(prefix=prefix) if not list(m.children())]


def _layer_geometry(blocks: nn.Sequential, length: int | None
                    ) -> tuple[list[tuple[str, nn.Module | None, _At]], _At]:
    """Follow an input of ``length`` samples through ``blocks``, one row per layer.

    Returns ``(rows, end)``: rows of (name, module or None for a residual sum, geometry after
    it), and the geometry of the output. A residual block's shortcut starts from the block's
    input; the sum sees as far as its wider branch, the convolutions.
    """
    rows: list[tuple[str, nn.Module | None, _At]] = []
    at = _At(1, length, 1, 1)
    for index, block in blocks.named_children():
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
    if not isinstance(model, RawWaveformCNN):  # the log-mel CNN reads its shapes off a forward pass
        return model.layer_table(length=length, sr=sr)
    layers, end = _layer_geometry(model.blocks, length)
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


def _check_against_forward(model: RawWaveformCNN, layers: list[tuple[str, nn.Module | None, _At]],
                           length: int) -> None:
    """Run the model once and compare every layer's real output shape with the table's."""
    seen: dict[int, list[tuple[int, ...]]] = {}
    def record(module: nn.Module, args: object, out: torch.Tensor) -> None:
        seen.setdefault(id(module), []).append(tuple(out.shape[1:]))

    hooks = [m.register_forward_hook(record) for _, m, _ in layers if m is not None]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model.features(torch.zeros(1, 1, length, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    for name, m, at in layers:
        if m is None:
            continue
        shapes = seen.get(id(m), [])
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
        last_block = table[table["layer"].str.startswith("blocks.")].iloc[-1]  # what the mean over time reads
        rows.append({
            "model": model.title, "name": name, "parameters": count_parameters(model),
            "receptive_field": model.receptive_field,
            "receptive_field_ms": 1000 * model.receptive_field / sr, "hop": model.hop,
            "output_steps": last_block["output_shape"][-1],
        })
    return pd.DataFrame(rows)
