"""Classify sound files with a trained model: ``python -m us8k_lib predict RUN PATH...``.

A sound to classify may come in any container libsndfile reads (WAV in every UrbanSound8K variant,
FLAC, OGG/Vorbis/Opus, MP3, AIFF, ...); :func:`load_sound` decodes it and formats it like the
training clips (mono, 8 kHz: ``us8k_lib.audio``). The model hears 4 s at a time, so a longer
recording is cut into 4 s windows every :data:`HOP_SECONDS` s (the last one padded with silence,
as the training clips are), each window is classified, and the class probabilities are averaged
over the windows; a window that is silent for the model is left out of the average, and a file
whose every window is silent is reported as silent. The window scores are kept
(:class:`Prediction`, ``--json``). A file that cannot be used is reported with what is wrong with
it, and the other files are still classified.

Used by notebook 5 (through :mod:`us8k_lib.real_sounds`) and by the ``predict`` command.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import torch

from us8k_lib import audio
from us8k_lib.datasets.validate import SILENCE_PEAK  # a window quieter than a silent clip (-80 dBFS) is not classified
from us8k_lib.errors import AudioError
from us8k_lib.metadata import CLASSES
from us8k_lib.runs.checkpoint import load_checkpoint, load_model
from us8k_lib.runs.results import weights_file

#: File name endings ``predict`` picks up inside folders: the containers libsndfile decodes.
#: A file named explicitly is tried whatever its name.
AUDIO_SUFFIXES: frozenset[str] = frozenset({
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au",
    ".caf", ".w64", ".rf64",
})
#: Shortest sound classified (s). UrbanSound8K's shortest clips are 0.0545 s long (the metadata's
#: end - start), so the model never saw less; 0.05 s is 400 samples at 8 kHz.
MIN_SECONDS = 0.05
#: Seconds between the starts of two windows of a sound longer than the model's input (half a
#: window: every moment of the sound is heard in two windows, once near the middle).
HOP_SECONDS = 2.0

_CHANNELS = {1: "mono", 2: "stereo"}


@dataclass
class Sound:
    """A decoded sound file and what the model gets from it.

    Attributes:
        path: the file.
        samples: float32 ``(frames, channels)``, as decoded (see :func:`us8k_lib.audio.read_wav`).
        sr: its sample rate (Hz).
        description: its format in words, e.g. "PCM 24-bit stereo 96 kHz" or "FLAC 16-bit mono 44.1 kHz".
        resampled: float32 ``(n,)``: the whole sound, mono, at the model's rate.
        windows: float32 ``(n_windows, length)``: the model inputs, windows of ``resampled``
            every :data:`HOP_SECONDS` s, the last one (or a sound shorter than one window)
            padded with zeros at the end, as the training clips are.
        starts: each window's start in samples of ``resampled``.
        silent: per window, True where the model would hear silence (peak below
            :data:`SILENCE_PEAK`): such windows are not classified.
        model_sr: the model's sample rate (Hz).
    """

    path: Path
    samples: np.ndarray
    sr: int
    description: str
    resampled: np.ndarray
    windows: np.ndarray
    starts: np.ndarray
    silent: np.ndarray
    model_sr: int

    @property
    def duration(self) -> float:
        """Length of the decoded sound in seconds."""
        return self.samples.shape[0] / self.sr

    @property
    def model_input(self) -> np.ndarray:
        """The first window the model hears (for a sound of up to 4 s, the whole model input)."""
        heard = np.flatnonzero(~self.silent)
        return self.windows[heard[0] if len(heard) else 0]

    def what_was_classified(self) -> str:
        """Say in words what the model heard, e.g. ``30.0 s, 14 windows of 4 s (hop 2 s), 4 silent left out``."""
        length = self.windows.shape[1] / self.model_sr
        n, quiet = len(self.windows), int(self.silent.sum())
        if n == 1:
            text = f"{self.duration:.1f} s, 1 window" + (f" (padded with silence to {length:g} s)"
                                                        if self.duration < length else f" of {length:g} s")
        else:
            text = f"{self.duration:.1f} s, {n} windows of {length:g} s (hop {HOP_SECONDS:g} s)"
        return text + (f", {quiet} silent left out" if quiet else "")


def cut_windows(x: np.ndarray, length: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(windows [n, length], starts)``: windows of ``x`` every ``hop`` samples, enough to
    cover all of it; the last one (or ``x`` itself, when shorter than one) zero-padded at the end.
    Used by :func:`load_sound`."""
    n = 1 if len(x) <= length else -(-(len(x) - length) // hop) + 1
    starts = np.arange(n, dtype=np.int64) * hop
    windows = np.zeros((n, length), dtype=np.float32)
    for i, start in enumerate(starts):
        piece = x[start : start + length]
        windows[i, : len(piece)] = piece
    return windows, starts


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


#: How the containers libsndfile reads begin (the bytes, and their offset): a file that starts
#: like none of them is refused before libsndfile (whose MP3 decoder would scan random bytes,
#: print its notes and say the file "does not exist").
_MAGIC = ((0, b"fLaC"), (0, b"OggS"), (0, b"FORM"), (0, b".snd"), (0, b"caff"), (0, b"ID3"), (0, b"RIFF"),
          (0, b"RIFX"), (0, b"RF64"), (0, b"riff"), (0, b"wvpk"), (0, b"MThd"))


def _looks_like_sound(head: bytes) -> bool:
    """True when ``head`` (a file's first bytes) starts like a container libsndfile reads, or like an
    MPEG audio frame (an MP3 without an ID3 tag: 11 set sync bits)."""
    if any(head[at:at + len(magic)] == magic for at, magic in _MAGIC):
        return True
    return len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0


def _read_other(path: Path) -> tuple[np.ndarray, int, str]:
    """Decode a non-WAV container with soundfile; return (samples, rate, description)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not _looks_like_sound(head):
        raise AudioError(path, "not a sound file libsndfile can decode: its first bytes are those of no container "
                               "it reads (WAV, FLAC, OGG Vorbis/Opus, MP3, AIFF, AU, CAF)")
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
    """Decode a sound file of any container libsndfile reads and cut it into the model's windows.

    WAV files go through :func:`us8k_lib.audio.read_wav` (every UrbanSound8K variant); the sound is
    then formatted as in training (mono, anti-aliased resampling to ``sr``) and cut into windows
    of ``length`` samples every :data:`HOP_SECONDS` s (:func:`cut_windows`). A sound of up to
    ``length`` samples gives one window, exactly :func:`us8k_lib.audio.format_clip`'s output.

    Returns:
        A :class:`Sound`. Used by :class:`Classifier` (the upload widget of notebook 5) and ``predict``.

    Raises:
        AudioError: naming the file and what is wrong: missing, empty, corrupt, a container or
            codec libsndfile cannot decode, shorter than :data:`MIN_SECONDS`, or silent in every
            window the model would hear.
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
    resampled = np.ascontiguousarray(audio.resample(audio.to_mono(x), orig_sr, sr), dtype=np.float32)
    windows, starts = cut_windows(resampled, length, round(HOP_SECONDS * sr))
    silent = np.abs(windows).max(axis=1) < SILENCE_PEAK
    if silent.all():
        peak = float(np.abs(resampled).max()) if len(resampled) else 0.0
        raise AudioError(path, f"silent: its loudest sample, as the model hears it, is {peak:.2g}, below -80 dBFS; "
                               "nothing to classify")
    return Sound(path=path, samples=x, sr=orig_sr, description=description, resampled=resampled,
                 windows=windows, starts=starts, silent=silent, model_sr=sr)


def top_k(probabilities: np.ndarray, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    """Return the ``k`` most likely ``(class, probability)`` pairs, most likely first (the earlier
    class on a tie). The one ranking every prediction of this module uses."""
    order = np.argsort(-np.asarray(probabilities), kind="stable")[: min(k, len(classes))]
    return [(classes[i], float(probabilities[i])) for i in order]


@dataclass
class Prediction:
    """What a model makes of one sound: class probabilities per window and averaged.

    Attributes:
        classes: the class names.
        probabilities: float64 ``(n_classes,)``: the mean of the windows' probabilities, over
            the windows that are not silent.
        window_probabilities: float64 ``(n_windows, n_classes)``; NaN rows for silent windows.
        starts_s: each window's start, in seconds.
        sound: the :class:`Sound` classified.
    """

    classes: list[str]
    probabilities: np.ndarray
    window_probabilities: np.ndarray
    starts_s: np.ndarray
    sound: Sound

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """Return the ``k`` most likely ``(class, probability)`` pairs of the average, most likely first."""
        return top_k(self.probabilities, self.classes, k)

    def windows_to_dict(self) -> list[dict[str, Any]]:
        """Return each window as ``{"start", "end", "silent", "top": [...], "probabilities": {...}}``
        (seconds; probabilities absent for a silent window), as ``--json`` writes them."""
        length = self.sound.windows.shape[1] / self.sound.model_sr
        rows = []
        for start, p, quiet in zip(self.starts_s, self.window_probabilities, self.sound.silent):
            row: dict[str, Any] = {"start": round(float(start), 3),
                                   "end": round(float(min(start + length, self.sound.duration)), 3),
                                   "silent": bool(quiet)}
            if not quiet:
                row["top"] = [{"class": c, "probability": q} for c, q in top_k(p, self.classes, 3)]
                row["probabilities"] = {c: float(v) for c, v in zip(self.classes, p)}
            rows.append(row)
        return rows


class Classifier:
    """A trained model with what it needs to classify a sound: class names, sample rate and length.

    Build it from a model in memory (e.g. ``train.fit(...).model``) or with
    :meth:`from_checkpoint` from a run folder or any checkpoint written by ``train``.

    Attributes:
        model, classes, sr, length: the network and what it expects.
        source: where the weights came from, in words (e.g. "runs/m5-mini-fold10/best.pt: the
            epoch validation selected"); "a model in memory" otherwise.

    Used by the upload widget (notebook 5) and ``predict``.
    """

    #: Windows classified per forward pass.
    BATCH = 64

    def __init__(self, model: torch.nn.Module, classes: Sequence[str] = CLASSES, *,
                 sr: int = audio.TARGET_SR, length: int = audio.TARGET_LENGTH,
                 source: str = "a model in memory") -> None:
        """Wrap ``model`` (logits over ``classes``, input ``[batch, 1, length]`` at ``sr`` Hz)."""
        self.model = model
        self.classes = list(classes)
        self.sr = int(sr)
        self.length = int(length)
        self.source = source

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path) -> Classifier:
        """Return a classifier for the model in ``checkpoint``: a checkpoint file, or a run folder
        (its ``best.pt`` when it has one, the weights whose numbers the run reported, else its
        ``checkpoint.pt``; see :func:`us8k_lib.runs.results.weights_file`).

        Raises:
            CheckpointError: naming the file, when it is missing, not a checkpoint, or damaged.
        """
        path, why = weights_file(checkpoint)
        ckpt = load_checkpoint(path)
        return cls(load_model(ckpt, path=path), list(ckpt["classes"]), sr=int(ckpt.get("sr", audio.TARGET_SR)),
                   length=int(ckpt.get("length", audio.TARGET_LENGTH)),
                   source=f"{path}: {why}, epoch {ckpt['epoch']}")

    def load(self, path: str | Path) -> Sound:
        """Return :func:`load_sound` of ``path`` at this model's rate and length."""
        return load_sound(path, sr=self.sr, length=self.length)

    @torch.no_grad()
    def _window_probabilities(self, windows: np.ndarray) -> np.ndarray:
        self.model.eval()
        device = next(self.model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))[:, None, :]
        parts = [self.model(chunk.to(device)).float().softmax(dim=1).cpu().double()
                 for chunk in x.split(self.BATCH)]
        return torch.cat(parts).numpy()

    def probabilities(self, model_input: np.ndarray) -> np.ndarray:
        """Return the class probabilities (softmax, float64, one per class) of one model input."""
        return self._window_probabilities(np.asarray(model_input).reshape(1, -1))[0]

    def top(self, model_input: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        """Return the ``k`` most likely ``(class, probability)`` pairs of one model input, most likely first."""
        return top_k(self.probabilities(model_input), self.classes, k)

    def classify(self, sound: Sound) -> Prediction:
        """Classify every window of ``sound`` that is not silent and average their probabilities.

        Returns:
            A :class:`Prediction`. Used by the upload widget (:class:`us8k_lib.real_sounds.SoundUploader`, notebook
            5) and ``predict``.
        """
        per_window = np.full((len(sound.windows), len(self.classes)), np.nan)
        heard = ~sound.silent
        per_window[heard] = self._window_probabilities(sound.windows[heard])
        return Prediction(classes=self.classes, probabilities=per_window[heard].mean(axis=0),
                          window_probabilities=per_window, starts_s=sound.starts / sound.model_sr, sound=sound)


def _as_classifier(model: Classifier | str | Path) -> Classifier:
    return model if isinstance(model, Classifier) else Classifier.from_checkpoint(model)


def _row(file: str, prediction: Prediction, k: int) -> dict[str, Any]:
    row: dict[str, Any] = {"file": file, "classified": prediction.sound.what_was_classified()}
    for rank, (name, p) in enumerate(prediction.top(k), start=1):
        row[f"class_{rank}"] = name
        row[f"probability_{rank}"] = p
    return row


def _columns(k: int) -> list[str]:
    return ["file", "classified"] + [f"{c}_{r}" for r in range(1, k + 1) for c in ("class", "probability")]


def predict_files(checkpoint: Classifier | str | Path, paths: Sequence[str | Path], k: int = 3) -> pd.DataFrame:
    """Classify sound files with a trained model (a run folder, a checkpoint or a
    :class:`Classifier`); stop at a bad file.

    Each file is formatted like the training clips and classified window by window
    (:func:`load_sound`, :meth:`Classifier.classify`).

    Returns:
        One row per file: ``file``, ``classified`` (what the model heard, e.g. "30.0 s, 14
        windows of 4 s (hop 2 s)"), then ``class_1``, ``probability_1`` ... ``class_k``,
        ``probability_k`` (most likely first). Used by ``predict`` and the tests.

    Raises:
        CheckpointError: the checkpoint is not usable; AudioError: a file cannot be used (see
        :func:`predict_paths` to go on past it).
    """
    clf = _as_classifier(checkpoint)
    k = min(k, len(clf.classes))
    rows = [_row(str(p), clf.classify(clf.load(p)), k) for p in paths]
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
        windows: per classified file (by its ``file`` string), its windows' scores
            (:meth:`Prediction.windows_to_dict`).
        source: where the model's weights came from (:attr:`Classifier.source`).
    """

    table: pd.DataFrame
    failed: list[tuple[str, str]] = field(default_factory=list)
    windows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    source: str = ""

    @property
    def ok(self) -> bool:
        """True when every path was classified."""
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data: ``predictions`` (each with ``file``, ``classified``,
        a ``top`` list of ``{"class", "probability"}`` of the average over windows, and
        ``windows``, each window's start, end and scores) and ``failed`` (``{"file", "problem"}``)."""
        predictions = []
        for row in self.table.to_dict(orient="records"):
            ranks = sorted(int(c.split("_")[1]) for c in row if c.startswith("class_"))
            predictions.append({"file": row["file"], "classified": row["classified"], "top": [
                {"class": row[f"class_{r}"], "probability": float(row[f"probability_{r}"])} for r in ranks],
                "windows": self.windows.get(row["file"], [])})
        return {"weights": self.source, "predictions": predictions,
                "failed": [{"file": f, "problem": p} for f, p in self.failed]}


def predict_paths(checkpoint: Classifier | str | Path, paths: Iterable[str | Path], k: int = 3,
                  *, progress: bool = False) -> PredictReport:
    """Classify files and folders (recursively, see :func:`find_sound_files`), going on past bad files.

    Returns:
        A :class:`PredictReport`: the top-``k`` table of every file that could be classified (with
        its window scores), and each file that could not, with its problem. Used by ``predict``.

    Raises:
        CheckpointError: the checkpoint is not usable (nothing can be classified then).
    """
    from tqdm.auto import tqdm

    clf = _as_classifier(checkpoint)
    k = min(k, len(clf.classes))
    files, failed = find_sound_files(paths)
    rows, windows = [], {}
    for path in tqdm(files, desc="predict", unit="file", disable=not progress):
        try:
            prediction = clf.classify(clf.load(path))
        except AudioError as exc:
            failed.append((str(path), exc.problem))
            continue
        rows.append(_row(str(path), prediction, k))
        windows[str(path)] = prediction.windows_to_dict()
    return PredictReport(pd.DataFrame(rows, columns=_columns(k)), failed, windows, clf.source)


