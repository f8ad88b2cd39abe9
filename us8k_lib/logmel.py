"""A log-mel spectrogram front end and a small 2-D CNN on it: the other answer to "what does the
network see?".

Most of the field does not feed a network raw samples: it computes a log-mel spectrogram (how much
energy each of a few dozen perceptually spaced frequency bands holds, every few milliseconds, in
decibel-like units) and classifies that picture with a 2-D CNN. Salamon & Bello's SB-CNN (IEEE
Signal Processing Letters 24(3), 2017) did so on UrbanSound8K: 73 % over the 10 official folds
without augmentation, 79 % with it. :class:`LogMelCNN` is a model in that spirit, built by the
same :func:`us8k_lib.model.build_model` (``"logmel"``), trained by the same ``fit`` on the same
32 000-sample, 8 kHz clips from the same cache: the spectrogram is computed *inside* the model, on
the training device, so the cache, the loader and the waveform augmentation stay exactly as they
are for M5 (augmentation happens before the front end).

The front end, and why each choice:

- **Window 256 samples (32 ms), FFT 512, hop 128 (16 ms): 251 frames for 4 s.** 32 ms is the usual
  analysis window for environmental sound (long enough to resolve 31 Hz bins after zero-padding
  to 512, short enough for a gun shot's onset); a 16 ms hop gives the CNN time steps fine enough
  to pool four times.
- **64 mel bands from 0 Hz to 4 kHz** (Slaney's mel scale, area-normalised filters). At 8 kHz the
  spectrum stops at 4 kHz: with 128 bands (SB-CNN's) the low bands' peaks would sit one 15.6 Hz
  FFT bin apart, so neighbouring bands would mostly repeat each other; with 64 they sit two to
  three bins apart.
- **log(mel power + 1e-6).** The model scales each clip to unit RMS first (``normalize``), so a
  clip's band energies sit around 1e-3 to 1e2; the offset puts a floor 60 dB under that, so zero
  padding and digital silence map to a finite value instead of minus infinity, and quiet bands
  are still told apart.
- **Per-band normalisation learned from the training set** (a ``BatchNorm1d`` over the 64 bands):
  low bands hold tens of dB more energy than high ones; standardising each band with statistics
  of the training folds (its running mean and variance at test time) puts all bands on one scale
  without normalising each clip by itself, which would erase differences between clips.

The CNN: four blocks of a 3x3 convolution, BatchNorm, ReLU and a 2x2 max-pool, 32-64-128-256
channels, then the mean over frequency and time and one linear layer (about 0.39 M parameters,
fewer than M5's 0.56 M). What changed from SB-CNN, on purpose:

- **Input:** 8 kHz and 4 s (the project's cache) instead of 44.1 kHz and 3 s patches of 128 frames
  with a 1 024-sample hop; the whole clip is one input, so no patch voting at test time.
- **Bands:** 64 instead of 128 (see above).
- **Filters:** 3x3 instead of 5x5, four blocks instead of three, and BatchNorm after each
  convolution (SB-CNN had none): small filters stacked deeper, as in most CNNs since VGG.
- **Head:** a mean over the last feature map and one linear layer instead of SB-CNN's dense layer
  of 64 units with dropout and L2: global average pooling has no parameters to overfit with
  little data, and it works for any clip length.

Used by notebooks 4 and 8 (through ``build_model("logmel")``) and every training run.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch
from torch import nn

from us8k_lib.audio import TARGET_SR, torchaudio
from us8k_lib.model_input import prepare_input, trace_output_shapes

TITLE = "LogMel-CNN"
#: The front end's parameters (see the module docstring for the reasons).
N_FFT = 512
WIN_LENGTH = 256
HOP_LENGTH = 128
N_MELS = 64
LOG_OFFSET = 1e-6
#: Channels of the four blocks are width, 2 width, 4 width, 8 width.
WIDTH = 32
BLOCKS = 4


class LogMelFrontEnd(nn.Module):
    """``[batch, 1, samples]`` audio -> ``[batch, n_mels, frames]`` log-mel energies, normalised per band.

    Used by :class:`LogMelCNN` and notebook 8.
    """

    def __init__(self, sr: int = TARGET_SR, n_mels: int = N_MELS) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sr, n_fft=N_FFT, win_length=WIN_LENGTH, hop_length=HOP_LENGTH, f_min=0.0,
            f_max=sr / 2, n_mels=n_mels, power=2.0, norm="slaney", mel_scale="slaney")
        self.norm = nn.BatchNorm1d(n_mels)

    def log_mel(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``log(mel power + LOG_OFFSET)`` ``[batch, n_mels, frames]``, before the band normalisation."""
        with torch.autocast(x.device.type, enabled=False):  # the FFT and the log want fp32
            return torch.log(self.mel(x.float()[:, 0]) + LOG_OFFSET)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.log_mel(x))


class LogMelBlock(nn.Module):
    """Conv2d 3x3 -> BatchNorm2d -> ReLU -> MaxPool2d 2x2 (pooled before the ReLU, as ConvBlock is)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.bn = nn.BatchNorm2d(c_out)
        self.pool = nn.MaxPool2d(2)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.pool(self.bn(self.conv(x))))


class LogMelCNN(nn.Module):
    """``[batch, 1, samples]`` float audio at 8 kHz -> ``[batch, n_classes]`` logits, through a log-mel
    spectrogram and a small 2-D CNN. Build it with ``build_model("logmel")``.

    Attributes:
        config: the :class:`us8k_lib.model.ModelConfig` it was built from (``width``: channels of
            the first block, default 32).
        title: ``"LogMel-CNN"``.
        frontend: the :class:`LogMelFrontEnd`.
        blocks: the four :class:`LogMelBlock`.
        fc: the classifier.
        receptive_field: input samples one time step of the last block sees (6 016, 0.75 s).
        hop: input samples between two time steps of the last block (2 048).

    Built by ``build_model("logmel")`` (notebooks 4 and 8).
    """

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config, self.title = config, TITLE
        width = config.width or WIDTH
        self.frontend = LogMelFrontEnd()
        channels = [width * 2**i for i in range(BLOCKS)]
        self.blocks = nn.Sequential(*[LogMelBlock(c_in, c_out) for c_in, c_out in zip([1, *channels], channels)])
        self.fc = nn.Linear(channels[-1], config.n_classes)
        frames, hop = 1, 1  # along time, in spectrogram frames
        for _ in range(BLOCKS):
            frames, hop = frames + 2 * hop, hop  # the 3-tap convolution
            frames, hop = frames + hop, 2 * hop  # the pool of 2
        self.receptive_field = WIN_LENGTH + (frames - 1) * HOP_LENGTH
        self.hop = hop * HOP_LENGTH

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Return the last block's output averaged over frequency, ``[batch, channels, time]``."""
        x = prepare_input(x, title=self.title, receptive_field=self.receptive_field,
                          normalize=self.config.normalize)
        return self.blocks(self.frontend(x)[:, None]).mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits ``[batch, n_classes]``."""
        return self.fc(self.features(x).mean(dim=-1))

    def layer_table(self, length: int = 32000, sr: int = TARGET_SR) -> pd.DataFrame:
        """Return the layer-by-layer table (as :func:`us8k_lib.model.compute_layer_table`): shapes
        ``(channels, bands, frames)``, the receptive field and hop along time in input samples,
        parameters. Shapes come from a real forward pass."""
        shapes = trace_output_shapes(self, length)
        rows = []
        frames, hop = 1, 1
        for name, m in self.named_modules():
            if not name or list(m.children()) or name == "fc":
                continue
            if isinstance(m, nn.Conv2d):
                frames += (m.kernel_size[1] - 1) * hop
            elif isinstance(m, nn.MaxPool2d):
                k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[1]
                frames, hop = frames + (k - 1) * hop, hop * k
            shape = shapes[name][0]
            if name.startswith("frontend."):  # a spectrogram is one channel of (bins or bands, frames)
                shape = (1, *shape)
            field = WIN_LENGTH + (frames - 1) * HOP_LENGTH
            rows.append({"layer": name, "type": type(m).__name__, "output_shape": shape,
                         "receptive_field": field, "receptive_field_ms": 1000 * field / sr, "hop": hop * HOP_LENGTH,
                         "params": sum(p.numel() for p in m.parameters())})
        last = rows[-1]["output_shape"]
        rows.append({"layer": "mean over bands and time", "type": "mean", "output_shape": (last[0],),
                     "receptive_field": length, "receptive_field_ms": 1000 * length / sr, "hop": None, "params": 0})
        rows.append({"layer": "fc", "type": "Linear", "output_shape": (self.fc.out_features,),
                     "receptive_field": length, "receptive_field_ms": 1000 * length / sr, "hop": None,
                     "params": sum(p.numel() for p in self.fc.parameters())})
        table = pd.DataFrame(rows)
        table["hop"] = table["hop"].astype("Int64")
        return table

    def mel_filterbank(self) -> torch.Tensor:
        """Return the mel filters as ``[n_mels, n_fft // 2 + 1]`` weights over the FFT bins (notebook 8)."""
        return self.frontend.mel.mel_scale.fb.T.detach().cpu()


# ---------------------------------------------------------------------------------------------
# What each first layer computes (notebook 8)


def compute_filter_responses(model: nn.Module, sr: int = TARGET_SR, n_fft: int = N_FFT
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(frequencies [n_fft // 2 + 1] Hz, gains [filters, n_fft // 2 + 1] in dB)`` of a
    raw-waveform model's first convolution: what each of its learned 80-sample filters lets
    through, each normalised to its own peak, ordered by the frequency of that peak (low first).

    A raw-waveform CNN learns its own filterbank here, where a log-mel model uses a fixed one
    (:meth:`LogMelCNN.mel_filterbank`). Used by notebook 8.
    """
    first = model.conv1 if hasattr(model, "conv1") else model.blocks[0].conv  # M5, or another of the family
    weight = first.weight.detach().float().cpu()[:, 0]  # [filters, taps]
    gains = torch.fft.rfft(weight, n=n_fft).abs()
    db = 20 * torch.log10((gains / gains.amax(dim=1, keepdim=True).clamp_min(1e-12)).clamp_min(1e-6))
    order = torch.argsort(gains.argmax(dim=1), stable=True)
    return torch.fft.rfftfreq(n_fft, 1 / sr), db[order]
