"""Classify sound files with a trained model: ``python -m us8k_lib predict CHECKPOINT PATH...``.

A sound to classify may come in any container libsndfile reads (WAV in every UrbanSound8K variant,
FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...); :func:`load_sound` decodes it and formats it exactly like
the training clips (mono, 8 kHz, 4 s: ``us8k_lib.audio``). A file that cannot be used is reported
with what is wrong with it, and the other files are still classified.

Used by notebook 5 (through :mod:`us8k_lib.real_sounds`) and by the ``predict`` command.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from us8k_lib import audio
from us8k_lib.checkpoint import load_checkpoint, load_model, write_json
from us8k_lib.errors import AudioError
from us8k_lib.metadata import CLASSES

#: File name endings ``predict`` picks up inside folders: the containers libsndfile decodes.
#: A file named explicitly is tried whatever its name.
AUDIO_SUFFIXES: frozenset[str] = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au",
    ".caf", ".w64", ".rf64",
})
#: Shortest sound classified (s). UrbanSound8K's shortest clips are 0.0545 s long (the metadata's
#: end - start), so the model never saw less; 0.05 s is 400 samples at 8 kHz.
MIN_SECONDS = 0.05
#: A sound whose absolute peak is below this (-80 dBFS) is silent: nothing to classify
#: (the same threshold as ``validate``).
SILENCE_PEAK = 1e-4

_CHANNELS = {1: "mono", 2: "stereo"}


@dataclass
class Sound:
    """A decoded sound file and what the model gets from it.

    Attributes:
        path: the file.
        samples: float32 ``(frames, channels)``, as decoded (see :func:`us8k_lib.audio.read_wav`).
        sr: its sample rate (Hz).
        description: its format in words, e.g. "PCM 24-bit stereo 96 kHz" or "FLAC 16-bit mono 44.1 kHz".
        model_input: float32 ``(length,)``: mono, resampled to the model's rate, padded or cut
            to its length (the first 4 s of a longer sound).
        model_sr: the model's sample rate (Hz).
    """

    path: Path
    samples: np.ndarray
    sr: int
    description: str
    model_input: np.ndarray
    model_sr: int

    @property
    def duration(self) -> float:
        """Length of the decoded sound in seconds."""
        return self.samples.shape[0] / self.sr


def _is_wav(path: Path) -> bool:
    """True for a file that names itself WAV, or whose first bytes are a RIFF/RF64 header.

    Unreadable paths count as WAV too: ``audio.read_wav`` words every file-system problem
    (missing, a directory, a broken link, empty).
    """
    if path.suffix.lower() in (".wav", ".wave"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return True
    return not head or head in (b"RIFF", b"RF64")


def _read_other(path: Path) -> tuple[np.ndarray, int, str]:
    """Decode a non-WAV container with soundfile; return (samples, rate, description)."""
    try:
        with sf.SoundFile(path) as f:
            sr, fmt, subtype, channels = f.samplerate, f.format, f.subtype, f.channels
            x = f.read(dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError) as exc:
        detail = (getattr(exc, "error_string", None) or str(exc)).strip()
        raise AudioError(path, f"not a sound file libsndfile can decode ({detail}); it reads WAV, FLAC, "
                               "OGG (Vorbis, Opus), MP3, AIFF and more") from None
    if x.shape[0] == 0:
        raise AudioError(path, "no audio samples (the header is valid but holds no sound)")
    if not np.isfinite(x).all():
        raise AudioError(path, "contains NaN/Inf samples")
    bits = "".join(ch for ch in subtype if ch.isdigit())
    depth = f" {bits}-bit" if subtype.startswith("PCM") and bits else f" {subtype.replace('_', ' ').lower()}"
    description = f"{fmt}{depth} {_CHANNELS.get(channels, f'{channels}-channel')} {sr / 1000:g} kHz"
    return x, sr, description


def load_sound(path: str | Path, *, sr: int = audio.TARGET_SR, length: int = audio.TARGET_LENGTH) -> Sound:
    """Decode a sound file of any container libsndfile reads and format it for the model.

    WAV files go through :func:`us8k_lib.audio.read_wav` (every UrbanSound8K variant); the model
    input is then computed as in training (:func:`us8k_lib.audio.format_clip`: mono, anti-aliased
    resampling to ``sr``, padded or cut to ``length``).

    Returns:
        A :class:`Sound`. Used by notebook 5 and ``predict``.

    Raises:
        AudioError: naming the file and what is wrong: missing, empty, corrupt, a container or
            codec libsndfile cannot decode, shorter than :data:`MIN_SECONDS`, or silent.
    """
    path = Path(path)
    if _is_wav(path):
        x, orig_sr = audio.read_wav(path)
        description = audio.read_header(path)["description"]
    else:
        x, orig_sr, description = _read_other(path)
    seconds = x.shape[0] / orig_sr
    if seconds < MIN_SECONDS:
        raise AudioError(path, f"too short: {seconds * 1000:.1f} ms of sound; the model needs at least "
                               f"{MIN_SECONDS * 1000:.0f} ms (UrbanSound8K's shortest clips are 54 ms)")
    peak = float(np.abs(x).max())
    if peak < SILENCE_PEAK:
        raise AudioError(path, f"silent: its loudest sample is {peak:.2g}, below -80 dBFS; nothing to classify")
    model_input = audio.pad_or_crop(audio.resample(audio.to_mono(x), orig_sr, sr), length).copy()
    return Sound(path=path, samples=x, sr=orig_sr, description=description, model_input=model_input, model_sr=sr)


class Classifier:
    """A trained model with what it needs to classify a sound: class names, sample rate and length.

    Build it from a model in memory (e.g. ``train.fit(...).model``) or with
    :meth:`from_checkpoint` from any ``checkpoint.pt`` written by ``train``.
    Used by notebook 5 and ``predict``.
    """

    def __init__(self, model: torch.nn.Module, classes: Sequence[str] = CLASSES, *,
                 sr: int = audio.TARGET_SR, length: int = audio.TARGET_LENGTH) -> None:
        """Wrap ``model`` (logits over ``classes``, input ``[batch, 1, length]`` at ``sr`` Hz)."""
        self.model = model
        self.classes = list(classes)
        self.sr = int(sr)
        self.length = int(length)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path) -> Classifier:
        """Return a classifier for the model stored in ``checkpoint``.

        Raises:
            CheckpointError: naming the file, when it is missing, not a checkpoint, or damaged.
        """
        ckpt = load_checkpoint(checkpoint)
        return cls(load_model(ckpt), list(ckpt["classes"]), sr=int(ckpt.get("sr", audio.TARGET_SR)),
                   length=int(ckpt.get("length", audio.TARGET_LENGTH)))

    def load(self, path: str | Path) -> Sound:
        """Return :func:`load_sound` of ``path`` at this model's rate and length."""
        return load_sound(path, sr=self.sr, length=self.length)

    @torch.no_grad()
    def probabilities(self, model_input: np.ndarray) -> np.ndarray:
        """Return the class probabilities (softmax, float64, one per class) of one model input."""
        self.model.eval()
        device = next(self.model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.float32)).view(1, 1, -1).to(device)
        return self.model(x).float().softmax(dim=1)[0].cpu().double().numpy()

    def top(self, model_input: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """Return the ``k`` most likely ``(class, probability)`` pairs, most likely first."""
        p = self.probabilities(model_input)
        order = np.argsort(-p, kind="stable")[: min(k, len(self.classes))]
        return [(self.classes[i], float(p[i])) for i in order]


def _as_classifier(model: Classifier | str | Path) -> Classifier:
    return model if isinstance(model, Classifier) else Classifier.from_checkpoint(model)


def _row(file: str, top: list[tuple[str, float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"file": file}
    for rank, (name, p) in enumerate(top, start=1):
        row[f"class_{rank}"] = name
        row[f"probability_{rank}"] = p
    return row


def _columns(k: int) -> list[str]:
    return ["file"] + [f"{c}_{r}" for r in range(1, k + 1) for c in ("class", "probability")]


def predict_files(checkpoint: Classifier | str | Path, paths: Sequence[str | Path], k: int = 3) -> pd.DataFrame:
    """Classify sound files with a trained checkpoint (or a :class:`Classifier`); stop at a bad file.

    Each file is formatted like the training clips (:func:`load_sound`).

    Returns:
        One row per file: ``file``, then ``class_1``, ``probability_1`` ... ``class_k``,
        ``probability_k`` (most likely first). Used by notebook 5 and ``predict``.

    Raises:
        CheckpointError: the checkpoint is not usable; AudioError: a file cannot be used (see
        :func:`predict_paths` to go on past it).
    """
    clf = _as_classifier(checkpoint)
    k = min(k, len(clf.classes))
    rows = [_row(str(p), clf.top(clf.load(p).model_input, k)) for p in paths]
    return pd.DataFrame(rows, columns=_columns(k))


def find_sound_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Expand files and folders into the sound files to classify.

    A folder is searched recursively for names ending in one of :data:`AUDIO_SUFFIXES` (hidden
    files and folders skipped, sorted by path); a file is kept whatever its name. A file listed
    twice is kept once.

    Returns:
        ``(files, problems)``: problems are ``(path, what is wrong)`` for paths that do not exist
        and folders without a sound file. Used by ``predict``.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            files.append(p)

    for given in map(Path, paths):
        if given.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(given):
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                found += [Path(dirpath) / n for n in filenames
                          if not n.startswith(".") and Path(n).suffix.lower() in AUDIO_SUFFIXES]
            if not found:
                problems.append((str(given), "no sound files in this folder (looked for "
                                             f"{', '.join(sorted(AUDIO_SUFFIXES))})"))
            for p in sorted(found):
                add(p)
        elif given.exists() or given.is_symlink():
            add(given)  # a broken link is reported by load_sound, in words
        else:
            problems.append((str(given), "does not exist"))
    return files, problems


@dataclass
class PredictReport:
    """What :func:`predict_paths` found.

    Attributes:
        table: one row per classified file, columns as :func:`predict_files`.
        failed: ``(file, problem)`` for every path that could not be classified.
    """

    table: pd.DataFrame
    failed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every path was classified."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data: ``predictions`` (the table's rows, each with
        ``file`` and a ``top`` list of ``{"class", "probability"}``) and ``failed``
        (``{"file", "problem"}``)."""
        predictions = []
        for row in self.table.to_dict(orient="records"):
            ranks = sorted(int(c.split("_")[1]) for c in row if c.startswith("class_"))
            predictions.append({"file": row["file"], "top": [
                {"class": row[f"class_{r}"], "probability": float(row[f"probability_{r}"])} for r in ranks]})
        return {"predictions": predictions, "failed": [{"file": f, "problem": p} for f, p in self.failed]}


def predict_paths(checkpoint: Classifier | str | Path, paths: Iterable[str | Path], k: int = 3,
                  *, progress: bool = False) -> PredictReport:
    """Classify files and folders (recursively, see :func:`find_sound_files`), going on past bad files.

    Returns:
        A :class:`PredictReport`: the top-``k`` table of every file that could be classified, and
        each file that could not, with its problem. Used by ``predict``.

    Raises:
        CheckpointError: the checkpoint is not usable (nothing can be classified then).
    """
    from tqdm.auto import tqdm

    clf = _as_classifier(checkpoint)
    k = min(k, len(clf.classes))
    files, failed = find_sound_files(paths)
    rows = []
    for path in tqdm(files, desc="predict", unit="file", disable=not progress):
        try:
            rows.append(_row(str(path), clf.top(clf.load(path).model_input, k)))
        except AudioError as exc:
            failed.append((str(path), exc.problem))
    return PredictReport(pd.DataFrame(rows, columns=_columns(k)), failed)


def predict_command(args: argparse.Namespace) -> int:
    """``python -m us8k_lib predict CHECKPOINT PATH... [--json FILE]``: print each file's top-3 classes.

    Bad files are listed on stderr with their problem; returns 1 if any file failed, else 0.
    """
    report = predict_paths(args.checkpoint, args.paths, k=3)
    for _, row in report.table.iterrows():
        print(row["file"])
        rank = 1
        while f"class_{rank}" in row:
            print(f"  {rank}. {row[f'class_{rank}']:<17} {row[f'probability_{rank}']:.3f}")
            rank += 1
    sys.stdout.flush()
    for file, problem in report.failed:
        print(f"error: {file}: {problem}", file=sys.stderr)
    if args.json:
        path = Path(args.json)
        if path.parent != Path():
            path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"checkpoint": str(args.checkpoint), **report.to_dict()})
    if report.failed:
        total = len(report.table) + len(report.failed)
        print(f"{len(report.failed)} of {total} path(s) could not be classified", file=sys.stderr)
        return 1
    return 0
