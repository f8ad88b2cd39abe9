"""The models: M5 written out as a PyTorch module, its deeper siblings of Dai et al. (2017) built from
one table, and :func:`build_model`, the one way to get any model by name.

W. Dai, C. Dai, S. Qu, J. Li and S. Das, *Very Deep Convolutional Neural Networks for Raw
Waveforms*, ICASSP 2017 (arXiv:1610.00087), Table 1. Every raw-waveform model starts the same way:
an 80-sample, stride-4 convolution (10 ms filters at 8 kHz) and a max-pool of 4, which take 32 000
samples down to 1 995 time steps. Then come stages of 3-tap convolutions, each stage twice as wide
as the one before, with a max-pool of 4 between stages. Every convolution is followed by
BatchNorm and ReLU. A mean over time and one Linear layer give one logit per class.

:class:`M5` is the network of notebook 4, written layer by layer as the original PyTorch tutorial
wrote it: 559,114 parameters, the same outputs for the same weights (tested). The deeper
models come from :data:`SPECS`, one line per model of the paper's table, built by
:class:`RawWaveformCNN`; its ``"m5"`` line builds the same network as :class:`M5` (a test keeps
the two equal, layer for layer and output for output). Choices the paper leaves open, made here:

- **Padding of the 3-tap convolutions.** M5 keeps the tutorial's unpadded convolutions (30 time
  steps are left from 32 000 samples). The other models pad one sample on each side ("same"
  padding), so only the pools shorten the signal: a residual block adds its input to its output,
  which needs both the same length, and M18's sixteen 3-tap convolutions would otherwise each cut
  two steps more.
- **Channel changes in M34-res.** The first block of a stage that doubles the channels adds its
  input through a 1x1 convolution and BatchNorm (a projection shortcut, as in He et al. 2016's
  ResNets); every other block adds its input unchanged. That costs 98,784 parameters: 4.08 M in
  all against the paper's 4 M (a parameter-free zero-padded shortcut would give 3.98 M).
- **Biases.** Every convolution keeps its bias, as the tutorial's M5 does. A bias before
  BatchNorm does nothing, but it is part of M5's 559,114 parameters.

Differences from the tutorial's M5, on purpose: ``forward`` returns logits
(``nn.CrossEntropyLoss`` applies log-softmax itself), and the tutorial's ``AvgPool1d(30)`` became
a mean over time, so any input at least one receptive field long works.

The layer-by-layer tables of notebook 4 are :mod:`us8k_lib.layers`'. Used by notebook 4 and every
training run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from us8k_lib.model_input import conv_geometry, prepare_input

# ---------------------------------------------------------------------------------------------
# Which model, how wide


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

    Used by notebook 8, :mod:`us8k_lib.crossval` and every command's log.
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
            64, M34-res 48; the log-mel CNN's first block: 32). Later stages scale with it, so a
            small width gives a small model of the same shape (for quick tests).
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
# M5, written out


class M5(nn.Module):
    """M5, the 5-layer raw-waveform CNN of Dai et al. (2017): ``[batch, 1, samples]`` audio at 8 kHz in,
    ``[batch, n_classes]`` class scores (logits) out.

    Four stages, each a convolution, BatchNorm, a max-pool of 4 and a ReLU, then the mean over
    time and one linear layer. Build it with ``build_model("m5")`` (or ``M5()``); ``width``
    (``ModelConfig.width``) scales every stage, for a smaller model of the same shape.

    ``receptive_field`` (1 772 samples, 0.22 s at 8 kHz) and ``hop`` (1 024) are read off the
    layers, so a variant with other layers (a subclass that replaces ``conv1``, say) has its own.

    Used by notebooks 4, 5 and 8 and every training run of M5.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig("m5")
        self.title = "M5"
        c = config.width or 128  # channels of the first two stages: the paper's 128
        # Stage 1: 128 filters of 80 samples (10 ms at 8 kHz), moved 4 samples at a time.
        self.conv1 = nn.Conv1d(1, c, kernel_size=80, stride=4)
        self.bn1 = nn.BatchNorm1d(c)
        self.pool1 = nn.MaxPool1d(4)
        # Stages 2-4: filters of 3 time steps, over 128, 256 and 512 channels.
        self.conv2 = nn.Conv1d(c, c, kernel_size=3)
        self.bn2 = nn.BatchNorm1d(c)
        self.pool2 = nn.MaxPool1d(4)
        self.conv3 = nn.Conv1d(c, 2 * c, kernel_size=3)
        self.bn3 = nn.BatchNorm1d(2 * c)
        self.pool3 = nn.MaxPool1d(4)
        self.conv4 = nn.Conv1d(2 * c, 4 * c, kernel_size=3)
        self.bn4 = nn.BatchNorm1d(4 * c)
        self.pool4 = nn.MaxPool1d(4)
        # The classifier: 512 features -> one score per class.
        self.fc = nn.Linear(4 * c, config.n_classes)

    @property
    def receptive_field(self) -> int:
        """Input samples one time step of the last stage sees (also the shortest input M5 takes)."""
        return conv_geometry(self.children())[0]

    @property
    def hop(self) -> int:
        """Input samples between two neighbouring time steps of the last stage."""
        return conv_geometry(self.children())[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits ``[batch, n_classes]`` (apply softmax for probabilities)."""
        x = prepare_input(x, title=self.title, receptive_field=self.receptive_field,
                          normalize=self.config.normalize)  # [B, 1, 32000]; each clip at unit RMS
        # Pooling before the ReLU gives the same numbers (both keep the order of values) with a
        # quarter of the ReLU's work.
        x = F.relu(self.pool1(self.bn1(self.conv1(x))))  # [B, 128, 1995]
        x = F.relu(self.pool2(self.bn2(self.conv2(x))))  # [B, 128, 498]
        x = F.relu(self.pool3(self.bn3(self.conv3(x))))  # [B, 256, 124]
        x = F.relu(self.pool4(self.bn4(self.conv4(x))))  # [B, 512, 30]
        x = x.mean(dim=-1)  # [B, 512]: each channel averaged over the clip
        return self.fc(x)  # [B, 10]


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

    Built by :func:`build_model` for M3, M11, M18 and M34-res (notebooks 4 and 6).
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
        self.receptive_field, self.hop = conv_geometry(self.blocks.modules())

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


# ---------------------------------------------------------------------------------------------
# Building one


def build_model(config: ModelConfig | str = "m5", **overrides: object) -> nn.Module:
    """Return a freshly initialised model: the one way to build one.

    ``config`` is a :class:`ModelConfig` or a model name (:data:`MODEL_NAMES`: :class:`M5`, another
    raw-waveform model of Dai et al. (:class:`RawWaveformCNN`), or ``"logmel"``, the
    :class:`us8k_lib.logmel.LogMelCNN`); ``overrides`` replace its fields, e.g.
    ``build_model("m18", width=8)``. Every model maps ``[batch, 1, samples]`` to
    ``[batch, n_classes]`` logits and has ``config``, ``title``, ``fc``, ``receptive_field`` and ``hop``. Raises
    ValueError for an unknown name (listing the valid ones). Used by
    notebooks 4, 5 and 8 and every training run.
    """
    if isinstance(config, str):
        config = ModelConfig(name=config, **overrides)  # type: ignore[arg-type]
    elif overrides:
        config = dataclasses.replace(config, **overrides)  # type: ignore[arg-type]
    if config.name == "logmel":
        from us8k_lib.logmel import LogMelCNN  # late: it needs torchaudio

        return LogMelCNN(config)
    return M5(config) if config.name == "m5" else RawWaveformCNN(config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameters of ``model`` (559,114 for M5 with 10 classes).

    BatchNorm running statistics are buffers, not parameters, so they are not counted.
    Used by notebook 4.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def upgrade_state_dict(name: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``state`` (a model's weights, as saved) in the names this code's model ``name`` uses.

    M5 was once built from the family's table, so checkpoints written then name its layers
    ``blocks.0.conv``, ``blocks.0.bn`` ... (one block per stage); :class:`M5` calls the same
    layers ``conv1``, ``bn1`` .... Other names, and other models, pass through unchanged. Used by
    :func:`us8k_lib.runs.checkpoint.load_checkpoint`.
    """
    if name != "m5":
        return dict(state)
    renamed = {}
    for key, value in state.items():
        parts = key.split(".")
        old = len(parts) == 4 and parts[0] == "blocks" and parts[2] in ("conv", "bn")
        renamed[f"{parts[2]}{int(parts[1]) + 1}.{parts[3]}" if old else key] = value
    return renamed
