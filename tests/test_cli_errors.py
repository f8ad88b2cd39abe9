"""Bad invocations of every command: one clear line, the right exit status, nothing written.

A value a flag cannot take is a usage error: argparse's usage and one ``error: argument --FLAG:``
line, exit 2, before any work. Every other expected failure (a missing file, a dataset without
the fold asked for, a missing checkpoint) is one ``error: ...`` line and exit 1. Nothing here
trains: a usage error stops at parsing, and the other failures stop before the first epoch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from us8k_lib.cli.parser import main

# Each case: (argv, exit status, words the error line must contain). In argv, FILE is an existing
# file, DIR an existing empty folder, MISSING a path that does not exist, OUT a folder that must
# not appear; all are inside the test's own temporary folder.
USAGE = 2
FAILURE = 1
TRAINING_FLAGS = [  # train and crossval share these
    (["--epochs", "0"], "--epochs", "integer from 1 to 100000"),
    (["--epochs", "1.5"], "--epochs", "integer from 1 to 100000"),
    (["--batch-size", "0"], "--batch-size", "integer from 1 to 65536"),
    (["--batch-size", "99999999999999999999999"], "--batch-size", "integer from 1 to 65536"),
    (["--lr", "-1"], "--lr", "number > 0 and <= 10"),
    (["--lr", "0"], "--lr", "number > 0"),
    (["--lr", "nan"], "--lr", "number > 0"),
    (["--lr", "1e39"], "--lr", "number > 0 and <= 10"),
    (["--lr", "1e300"], "--lr", "number > 0 and <= 10"),
    (["--weight-decay", "-1"], "--weight-decay", "number >= 0"),
    (["--weight-decay", "1e300"], "--weight-decay", "number >= 0 and <= 10"),
    (["--width", "0"], "--width", "integer from 1 to 4096"),
    (["--workers", "-1"], "--workers", "integer from 0 to 256"),
    (["--seed", "-1"], "--seed", "integer from 0 to 4294967295"),
    (["--seed", "x"], "--seed", "integer from 0 to 4294967295"),
    (["--seed", "4294967296"], "--seed", "integer from 0 to 4294967295"),
    (["--seed", "18446744073709551616"], "--seed", "integer from 0 to 4294967295"),
    (["--model", "nope"], "--model", "choose one of m3"),
    (["--device", "nope"], "--device", "'auto' or a torch device"),
    (["--preset", "huge"], "--preset", "invalid choice"),
    (["--optimizer", "sgd"], "--optimizer", "invalid choice"),
    (["--scheduler", "linear"], "--scheduler", "invalid choice"),
    (["--data", "disk"], "--data", "invalid choice"),
    (["--augment", "heavy"], "--augment", "invalid choice"),
    (["--aug-shift", "5"], "--aug-shift", "<= 4"),
    (["--aug-speed", "0.6"], "--aug-speed", "<= 0.5"),
    (["--aug-speed", "0.005"], "--aug-speed", "at least 0.01"),
    (["--aug-mask", "3"], "--aug-mask", "<= 2"),
    (["--aug-noise", "2"], "--aug-noise", "<= 1"),
    (["--aug-mixup", "-1"], "--aug-mixup", ">= 0"),
    (["--out", "FILE"], "--out", "is a file, not a folder"),
    (["--out", "FILE/run"], "--out", "which is a file"),
    (["--root"], "--root", "expected one argument"),
]
CASES = [
    *[(["train", *argv], USAGE, [flag, says]) for argv, flag, says in TRAINING_FLAGS],
    *[(["crossval", *argv], USAGE, [flag, says]) for argv, flag, says in TRAINING_FLAGS],
    (["train", "--model", "m5,logmel"], USAGE, ["--model", "unknown model 'm5,logmel'"]),
    (["train", "--test-fold", "11"], USAGE, ["--test-fold", "integer from 1 to 10"]),
    (["train", "--test-fold", "0"], USAGE, ["--test-fold", "integer from 1 to 10"]),
    (["train", "--val-fold", "11"], USAGE, ["--val-fold", "integer from 1 to 10"]),
    (["train", "--val-fold", "10", "--test-fold", "10"], USAGE, ["--val-fold", "also the test fold"]),
    (["train", "--val-fold", "10"], USAGE, ["--val-fold", "also the test fold"]),  # the default test fold is 10
    (["train", "--resume", "--overwrite"], USAGE, ["--resume and --overwrite exclude each other"]),
    (["train", "--resume-from", "x"], USAGE, ["unrecognized arguments: --resume-from x"]),
    (["crossval", "--folds", "0"], USAGE, ["--folds", "numbered 1-10", "'0'"]),
    (["crossval", "--folds", "1-99"], USAGE, ["--folds", "numbered 1-10", "'1-99'"]),
    (["crossval", "--folds", "3-1"], USAGE, ["--folds", "like 1-3 or 1,4,7"]),
    (["crossval", "--folds", "a"], USAGE, ["--folds", "like 1-3 or 1,4,7"]),
    (["crossval", "--model", "m5,nope"], USAGE, ["--model", "unknown model 'nope'"]),
    (["crossval", "--model", "m5,M5"], USAGE, ["--model", "listed twice"]),
    (["crossval", "--jobs", "0"], USAGE, ["--jobs", "integer >= 1"]),
    (["predict", "MISSING", "FILE", "--json", "DIR"], USAGE, ["--json", "is a folder"]),
    (["predict", "MISSING", "FILE", "--json", "FILE/x.json"], USAGE, ["--json", "which is a file"]),
    (["predict", "MISSING"], USAGE, ["required: PATH"]),
    (["predict"], USAGE, ["required: RUN, PATH"]),
    (["validate", "--json", "DIR"], USAGE, ["--json", "is a folder"]),
    (["download", "--url", "notaurl"], USAGE, ["--url", "http://", "'notaurl'"]),
    (["download", "--url", "http://"], USAGE, ["--url", "http://"]),
    (["download", "--md5", "abc"], USAGE, ["--md5", "32 hex digits"]),
    (["download", "--root", "FILE"], USAGE, ["--root", "is a file"]),
    (["make-mini", "--size", "huge"], USAGE, ["--size", "tiny, mini, medium", "'huge'"]),
    (["make-mini", "--seed", "-1"], USAGE, ["--seed", "integer >= 0"]),
    (["make-mini", "--root", "FILE"], USAGE, ["--root", "is a file"]),
    (["make-mini", "--forse"], USAGE, ["unrecognized arguments: --forse"]),
    ([], USAGE, ["required: COMMAND"]),
    (["fly"], USAGE, ["invalid choice: 'fly'"]),
    # Expected failures that are not about one flag's value: exit 1, one line naming the path.
    (["train", "--root", "MISSING", "--out", "OUT"], FAILURE, ["MISSING", "does not exist"]),
    (["train", "--root", "DIR", "--out", "OUT"], FAILURE, ["DIR", "no metadata/UrbanSound8K.csv"]),
    (["train", "--root", "sample", "--resume", "--out", "DIR"], FAILURE, ["DIR/checkpoint.pt", "no such checkpoint"]),
    (["train", "--root", "sample", "--test-fold", "2", "--out", "OUT"], FAILURE, ["sample", "no test clips in fold 2"]),
    (["train", "--root", "sample", "--val-fold", "4", "--out", "OUT"], FAILURE,
     ["sample", "no validation clips in fold 4"]),
    (["crossval", "--root", "MISSING", "--out", "OUT"], FAILURE, ["MISSING", "does not exist"]),
    (["crossval", "--root", "sample", "--folds", "2,4", "--out", "OUT"], FAILURE,
     ["no clips in fold(s) [2, 4]", "folds [1, 3, 5, 7, 9]"]),
    (["crossval", "--root", "TWO_FOLDS", "--out", "OUT"], FAILURE, ["at least 3 folds", "the dataset has [1, 3]"]),
    (["download", "--root", "TWO_FOLDS", "--url", "http://127.0.0.1:9/x.tar.gz"], FAILURE,
     ["TWO_FOLDS/UrbanSound8K", "not a complete UrbanSound8K", "move it away or delete it"]),
    (["make-mini", "--root", "TWO_FOLDS", "--size", "tiny"], FAILURE,
     ["TWO_FOLDS/UrbanSound8K", "not a generated mini dataset"]),
    (["validate", "--root", "MISSING", "--json", "OUT/report.json"], FAILURE, ["MISSING", "does not exist"]),
    (["predict", "MISSING", "FILE"], FAILURE, ["MISSING", "no such checkpoint"]),
    (["predict", "DIR", "FILE", "--json", "OUT/p.json"], FAILURE, ["DIR", "without best.pt or checkpoint.pt"]),
    (["predict", "FILE", "FILE"], FAILURE, ["FILE", "not a checkpoint"]),
]


def _place(argv: list[str], tmp: Path) -> list[str]:
    names = {"FILE": tmp / "notes.txt", "DIR": tmp / "empty", "MISSING": tmp / "missing", "OUT": tmp / "out",
             "TWO_FOLDS": tmp / "two-folds"}
    out = []
    for arg in argv:
        head, sep, rest = arg.partition("/")
        out.append(str(names[head]) + sep + rest if head in names else arg)
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(folder.rglob("*"))}


def _two_fold_dataset(target: Path) -> None:
    """An UrbanSound8K folder holding the bundled sample's metadata cut to folds 1 and 3 (too few
    to cross-validate) and no clips (no command gets as far as them)."""
    import csv

    from us8k_lib.paths import METADATA_RELPATH, sample_root

    with open(sample_root() / METADATA_RELPATH, newline="") as f:
        rows = list(csv.DictReader(f))
    (target / METADATA_RELPATH).parent.mkdir(parents=True)
    with open(target / METADATA_RELPATH, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["fold"] in ("1", "3"))


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder as the working directory and the data folder (so a default that would
    write, such as runs/ or the mini dataset, would write here and be seen)."""
    (tmp_path / "notes.txt").write_text("not a checkpoint, a dataset or a folder")
    (tmp_path / "empty").mkdir()
    _two_fold_dataset(tmp_path / "two-folds" / "UrbanSound8K")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("US8K_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("US8K_ROOT", raising=False)
    monkeypatch.delenv("US8K_URL", raising=False)
    monkeypatch.delenv("US8K_MD5", raising=False)
    return tmp_path


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's way out: usage errors exit 2
        return int(exc.code or 0)


@pytest.mark.parametrize("argv, status, says", CASES, ids=[" ".join(c[0]) or "(none)" for c in CASES])
def test_a_bad_invocation_is_one_clear_line_and_writes_nothing(argv: list[str], status: int, says: list[str],
                                                               workspace: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    before = _files(workspace)
    assert _run(_place(argv, workspace)) == status
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    line = errors[0]
    for word in _place(says, workspace):
        assert word in line, (word, line)
    if status == USAGE:
        assert err.startswith("usage: python -m us8k_lib") and out == ""
    else:
        assert line.startswith("error: ")
    assert _files(workspace) == before


def test_the_exit_status_holds_end_to_end(tmp_path: Path) -> None:
    """Through a real ``python -m us8k_lib``: usage errors exit 2, other failures 1, no traceback."""
    import us8k_lib

    checkout = str(Path(us8k_lib.__file__).resolve().parents[1])  # the package under test, from any folder
    env = {**os.environ, "US8K_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": checkout}
    env.pop("US8K_ROOT", None)
    for argv, status, word in ((["crossval", "--folds", "0"], 2, "--folds"),
                               (["validate", "--root", str(tmp_path / "missing")], 1, "missing")):
        done = subprocess.run([sys.executable, "-m", "us8k_lib", *argv], capture_output=True, text=True,
                              timeout=120, cwd=tmp_path, env=env)
        assert done.returncode == status, done.stderr
        assert "Traceback" not in done.stderr and word in done.stderr.splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_file_that_cannot_be_written_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An OSError about a named file (permissions, a full disk) is the user's to fix: one line, exit 1;
    one without a file name is a bug and keeps its traceback."""
    import us8k_lib.cli.parser as cli

    def refuse(args: object) -> int:
        raise PermissionError(13, "Permission denied", str(tmp_path / "report.json"))

    monkeypatch.setitem(cli.COMMANDS, "validate", "data:refuse")
    monkeypatch.setattr("us8k_lib.cli.data.refuse", refuse, raising=False)
    assert cli.main(["validate"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {tmp_path / 'report.json'}: Permission denied\n"

    def bug(args: object) -> int:
        raise OSError("no file involved")

    monkeypatch.setattr("us8k_lib.cli.data.refuse", bug)
    with pytest.raises(OSError, match="no file involved"):
        cli.main(["validate"])


def test_a_folder_or_file_flag_with_a_tilde_is_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--out=~/x`` reaches the program unexpanded (no shell expands ~ after =): it is checked and
    used as the home folder's x, not as ./~/x."""
    from us8k_lib.cli.parser import build_parser

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert build_parser().parse_args(["train", "--out=~/runs/x"]).out == str(tmp_path / "runs" / "x")
    assert build_parser().parse_args(["validate", "--json=~/report.json"]).json == str(tmp_path / "report.json")
    assert build_parser().parse_args(["train", "--out", "runs/x"]).out == "runs/x"
