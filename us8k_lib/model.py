"""M5: the raw-waveform CNN of Dai et al. (2017), as the original PyTorch tutorial built it.

Four blocks of Conv1d -> BatchNorm -> ReLU -> MaxPool(4) turn 4 s of 8 kHz audio (32 000 samples)
into 512 feature channels over 30 time steps; a global average over time and one Linear layer give
one logit per class. With 10 classes it has 559,114 parameters.

Differences from the tutorial, on purpose: ``forward`` returns logits (``nn.CrossEntropyLoss``
applies log-softmax itself), and the tutorial's ``AvgPool1d(30)`` became a mean over time, so any
input at least one receptive field long works, not only exactly 32 000 samples.

Used by notebook 4 (architecture) and notebook 5 (training).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn


@dataclass
class M5Config:
    """Shape of an M5 network; the defaults are the paper's and the tutorial's M5.

    Attributes:
        n_classes: number of output logits (UrbanSound8K has 10 classes).
        n_channels: width of the first block; the blocks are n, n, 2n, 4n channels wide.
        kernel_size: first convolution's kernel, in samples (80 samples = 10 ms at 8 kHz).
        stride: first convolution's stride, in samples.
        pool: max-pooling size and stride after every block.
        kernel_size_deep: kernel of the three deeper convolutions.
        normalize: scale each clip to unit RMS before the first convolution. Off in the paper's
            M5; the training recipe turns it on, because a clip's loudness (recording gain,
            distance) says nothing about its class but otherwise changes every activation.
    """

    n_classes: int = 10
    n_channels: int = 128
    kernel_size: int = 80
    stride: int = 4
    pool: int = 4
    kernel_size_deep: int = 3
    normalize: bool = False


class ConvBlock(nn.Module):
    """Conv1d -> BatchNorm1d -> ReLU -> MaxPool1d, the repeated unit of M5.

    ``forward`` pools before the ReLU: max and ReLU commute (both keep order), so the output
    and the gradients are the same, but the ReLU then touches 4x less data, which makes
    training on a CPU noticeably faster (the first block's output is 128 x 7981 per clip).
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, pool: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel_size, stride=stride)
        self.bn = nn.BatchNorm1d(c_out)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool1d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.pool(self.bn(self.conv(x))))


class M5(nn.Module):
    """M5 raw-waveform classifier: ``[batch, 1, samples]`` float audio -> ``[batch, n_classes]`` logits.

    Attributes:
        config: the :class:`M5Config` it was built from.
        receptive_field: input samples that one time step of the last block sees (1772 for the
            default config, 221.5 ms at 8 kHz); also the shortest input the model accepts.
        hop: input samples between two neighbouring time steps of the last block (1024 by default).

    Used by notebooks 4 and 5.
    """

    def __init__(self, config: M5Config | None = None) -> None:
        super().__init__()
        self.config = config = config or M5Config()
        n, k = config.n_channels, config.kernel_size_deep
        self.blocks = nn.Sequential(
            ConvBlock(1, n, config.kernel_size, config.stride, config.pool),
            ConvBlock(n, n, k, 1, config.pool),
            ConvBlock(n, 2 * n, k, 1, config.pool),
            ConvBlock(2 * n, 4 * n, k, 1, config.pool),
        )
        self.fc = nn.Linear(4 * n, config.n_classes)
        self.receptive_field, self.hop = _receptive_field(self.blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last block's output, ``[batch, 4n, time]`` (before pooling over time)."""
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"M5 expects input of shape [batch, 1, samples], got {list(x.shape)}")
        if x.shape[-1] < self.receptive_field:
            raise ValueError(
                f"input of {x.shape[-1]} samples is shorter than M5's receptive field of "
                f"{self.receptive_field} samples; pad the audio (e.g. audio.pad_or_crop)"
            )
        if self.config.normalize:
            x = x / x.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(_SILENCE_RMS)
        return self.blocks(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits ``[batch, n_classes]`` (apply softmax for probabilities)."""
        # A mean over time replaces the tutorial's AvgPool1d(30): identical on 32 000-sample
        # input (30 steps), and it keeps working for other lengths.
        return self.fc(self.features(x).mean(dim=-1))


#: RMS below which a clip counts as silent and is not amplified (about -80 dBFS).
_SILENCE_RMS = 1e-4


def _receptive_field(layers: nn.Module) -> tuple[int, int]:
    """Return (receptive field, hop) in input samples of the last output step of ``layers``."""
    field, hop = 1, 1
    for m in layers.modules():
        if isinstance(m, (nn.Conv1d, nn.MaxPool1d)):
            k, s, d = _as_int(m.kernel_size), _as_int(m.stride), _as_int(m.dilation)
            field += (d * (k - 1)) * hop
            hop *= s
    return field, hop


def _as_int(v: int | tuple[int, ...]) -> int:
    return int(v[0]) if isinstance(v, tuple) else int(v)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Return the number of parameters of ``model`` (559,114 for the default M5).

    BatchNorm running statistics are buffers, not parameters, so they are not counted.
    Used by notebook 4.
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def compute_layer_table(model: M5, length: int = 32000, sr: int = 8000) -> pd.DataFrame:
    """Return a layer-by-layer table of ``model`` for an input of ``length`` samples at ``sr`` Hz.

    Columns: ``layer`` (module name), ``type``, ``output_shape`` (channels, time steps; batch
    left out), ``receptive_field`` (input samples one output step sees), ``receptive_field_ms``,
    ``hop`` (input samples between output steps), ``params``. The last rows are the mean over
    time and the classifier. Used by notebook 4.
    """
    if length < model.receptive_field:
        raise ValueError(f"length {length} is shorter than the receptive field ({model.receptive_field} samples)")
    rows: list[dict] = []
    field, hop = 1, 1
    shape = (1, length)
    for name, m in model.blocks.named_modules():
        if len(list(m.children())) > 0:
            continue  # containers: their leaves get their own rows
        if isinstance(m, (nn.Conv1d, nn.MaxPool1d)):
            k, s, d = _as_int(m.kernel_size), _as_int(m.stride), _as_int(m.dilation)
            field += d * (k - 1) * hop
            hop *= s
            channels = m.out_channels if isinstance(m, nn.Conv1d) else shape[0]
            pad = _as_int(m.padding)
            steps = (shape[1] + 2 * pad - d * (k - 1) - 1) // s + 1
            shape = (channels, steps)
        rows.append(_layer_row(f"blocks.{name}", m, shape, field, hop, sr))
    rows.append({
        "layer": "mean over time", "type": "mean", "output_shape": (shape[0],),
        "receptive_field": length, "receptive_field_ms": 1000 * length / sr, "hop": None, "params": 0,
    })
    rows.append({
        "layer": "fc", "type": "Linear", "output_shape": (model.fc.out_features,),
        "receptive_field": length, "receptive_field_ms": 1000 * length / sr, "hop": None,
        "params": count_parameters(model.fc),
    })
    table = pd.DataFrame(rows)
    table["hop"] = table["hop"].astype("Int64")  # the last two rows have no hop: keep integers
    # Checks the arithmetic above against the real network, so the table can never drift from it.
    with torch.no_grad():
        was_training = model.training
        model.eval()
        out = model.features(torch.zeros(1, 1, length, device=next(model.parameters()).device))
        model.train(was_training)
    if tuple(out.shape[1:]) != shape:
        raise AssertionError(f"layer table computed {shape}, the model produced {tuple(out.shape[1:])}")
    return table


def _layer_row(name: str, m: nn.Module, shape: tuple[int, int], field: int, hop: int, sr: int) -> dict:
    return {
        "layer": name, "type": type(m).__name__, "output_shape": shape,
        "receptive_field": field, "receptive_field_ms": 1000 * field / sr, "hop": hop,
        "params": count_parameters(m),
    }
