"""download: against a real HTTP server on 127.0.0.1 serving a tarball made from the tiny mini dataset."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from archive_server import (
    EVIL_KINDS,
    EVIL_REASONS,
    ArchiveServer,
    Behaviour,
    dataset_tarball,
    evil_tarball,
    md5,
    small_dataset,
    snapshot,
)

from us8k_lib.cli.parser import main
from us8k_lib.datasets.download import ARCHIVE_NAME, download_dataset
from us8k_lib.datasets.validate import validate_dataset
from us8k_lib.errors import DownloadError, UnsafeArchiveError


@pytest.fixture(scope="module")
def small_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 12 clips of the tiny dataset: the same code paths as 110 clips, faster."""
    return small_dataset(tiny_root, tmp_path_factory.mktemp("small") / "UrbanSound8K", 12)


@pytest.fixture(scope="module")
def tarball(small_root: Path) -> tuple[bytes, str]:
    """(bytes, md5) of a .tar.gz of the small dataset with UrbanSound8K/ on top, as on Zenodo."""
    data = dataset_tarball(small_root)
    return data, md5(data)


def assert_extracted(target: Path, served: Path) -> None:
    """The extracted folder is the served dataset, byte for byte, and validates clean."""
    assert target.name == "UrbanSound8K"
    assert snapshot(target) == snapshot(served)
    assert validate_dataset(target, progress=False).ok


def test_fresh_download_verifies_extracts_and_cleans_up(tmp_path, tarball, small_root) -> None:
    data, digest = tarball
    root = tmp_path / "data"
    with ArchiveServer(data) as server:
        target = download_dataset(root, server.url, digest, progress=False)
    assert target == root / "UrbanSound8K"
    assert_extracted(target, small_root)
    # No partial file, no archive (deleted after extraction), no temporary extraction folder.
    assert sorted(p.name for p in root.iterdir()) == ["UrbanSound8K"]
    assert [(r.range, r.status) for r in server.requests] == [(None, 200)]


def test_keep_archive_keeps_the_verified_archive(tmp_path, tarball, small_root) -> None:
    data, digest = tarball
    with ArchiveServer(data) as server:
        target = download_dataset(tmp_path, server.url, digest, progress=False, keep_archive=True)
    assert_extracted(target, small_root)
    assert (tmp_path / ARCHIVE_NAME).read_bytes() == data


def test_dropped_connection_is_resumed_with_a_range_request(tmp_path, tarball, small_root) -> None:
    data, digest = tarball
    cut = len(data) // 3
    with ArchiveServer(data, Behaviour(drop_after=cut, drops=1)) as server:
        target = download_dataset(tmp_path, server.url, digest, progress=False)
    assert [(r.range, r.status, r.sent) for r in server.requests] == [
        (None, 200, cut),
        (f"bytes={cut}-", 206, len(data) - cut),
    ]
    assert_extracted(target, small_root)


def test_stalled_connection_times_out_and_is_resumed(tmp_path, tarball, small_root) -> None:
    data, digest = tarball
    cut = len(data) // 4
    with ArchiveServer(data, Behaviour(drop_after=cut, drops=1, stall=True)) as server:
        target = download_dataset(tmp_path, server.url, digest, progress=False, timeout=0.5)
    first, second = server.requests
    assert (first.range, first.sent) == (None, cut)
    # It resumed from what it had received when the read timed out (normally all `cut` bytes).
    resumed_at = int(second.range.removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= cut and second.sent == len(data) - resumed_at
    assert_extracted(target, small_root)


def test_interrupted_run_keeps_the_part_and_the_next_run_resumes(tmp_path, tarball, small_root) -> None:
    data, digest = tarball
    cut = len(data) // 5
    with ArchiveServer(data, Behaviour(drop_after=cut, drops=100)) as server:
        with pytest.raises(DownloadError, match="run the command again to resume") as err:
            download_dataset(tmp_path, server.url, digest, progress=False, retries=1)
    assert str(err.value).startswith(server.url)
    part = tmp_path / (ARCHIVE_NAME + ".part")
    # Two attempts (one retry), each cut after `cut` bytes; the second resumed where the first stopped.
    assert [r.range for r in server.requests] == [None, f"bytes={cut}-"]
    assert part.read_bytes() == data[: 2 * cut]
    assert not (tmp_path / "UrbanSound8K").exists()

    with ArchiveServer(data) as server:
        target = download_dataset(tmp_path, server.url, digest, progress=False)
    assert [(r.range, r.status) for r in server.requests] == [(f"bytes={2 * cut}-", 206)]
    assert_extracted(target, small_root)
    assert not part.exists()


def test_server_ignoring_range_restarts_from_zero(tmp_path, tarball, small_root) -> None:
    data, digest = tarball
    # A stale partial file whose bytes are wrong: appending the full body to it would corrupt it.
    (tmp_path / (ARCHIVE_NAME + ".part")).write_bytes(b"\0" * 1000)
    with ArchiveServer(data, Behaviour(ignore_range=True)) as server:
        target = download_dataset(tmp_path, server.url, digest, progress=False)
    assert [(r.range, r.status) for r in server.requests] == [("bytes=1000-", 200)]
    assert_extracted(target, small_root)


def test_complete_part_file_is_not_downloaded_again(tmp_path, tarball, small_root) -> None:
    data, digest = tarball
    (tmp_path / (ARCHIVE_NAME + ".part")).write_bytes(data)
    with ArchiveServer(data) as server:
        target = download_dataset(tmp_path, server.url, digest, progress=False)
    # The server answers 416 (nothing after the last byte) and sends no body.
    assert [(r.range, r.status, r.sent) for r in server.requests] == [(f"bytes={len(data)}-", 416, 0)]
    assert_extracted(target, small_root)


def test_wrong_bytes_fail_the_md5_and_are_removed(tmp_path, tarball) -> None:
    data, digest = tarball
    root = tmp_path / "data"
    root.mkdir()
    (root / "my-notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with ArchiveServer(data, Behaviour(corrupt=True)) as server:
        with pytest.raises(DownloadError) as err:
            download_dataset(root, server.url, digest, progress=False)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    message = str(err.value)
    assert message.startswith(str(root / (ARCHIVE_NAME + ".part")))
    assert f"expected {digest}, got {md5(bytes(bad))}" in message
    assert "removed" in message
    assert snapshot(tmp_path) == before  # nothing extracted, nothing left behind


def test_an_archive_copied_by_hand_is_used_without_downloading(tmp_path, tarball, small_root) -> None:
    data, digest = tarball
    (tmp_path / ARCHIVE_NAME).write_bytes(data)
    with ArchiveServer(data) as server:
        target = download_dataset(tmp_path, server.url, digest, progress=False)
    assert server.requests == []
    assert_extracted(target, small_root)


def test_an_archive_copied_by_hand_with_the_wrong_md5_is_left_alone(tmp_path, tarball) -> None:
    data, digest = tarball
    (tmp_path / ARCHIVE_NAME).write_bytes(data[:-1])
    before = snapshot(tmp_path)
    with pytest.raises(DownloadError, match=f"md5 mismatch: expected {digest}, got {md5(data[:-1])}"):
        download_dataset(tmp_path, "http://127.0.0.1:9/unused", digest, progress=False)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("kind", EVIL_KINDS)
def test_unsafe_archive_is_refused_and_nothing_is_written(tmp_path, kind) -> None:
    root, outside = tmp_path / "data", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_text("precious")
    (root / "my-notes.txt").write_text("mine")
    data, member = evil_tarball(kind, outside)
    before = snapshot(tmp_path)
    with ArchiveServer(data) as server:
        with pytest.raises(UnsafeArchiveError) as err:
            download_dataset(root, server.url, md5(data), progress=False)
    message = str(err.value)
    assert message.startswith(str(root / ARCHIVE_NAME))
    assert f"refusing to extract member {member!r}: {EVIL_REASONS[kind]}" in message
    # Not a byte outside (nor inside): no evil.txt, no UrbanSound8K/, no temp folder, no archive.
    assert snapshot(tmp_path) == before


def test_corrupt_archive_with_matching_md5_is_reported_and_removed(tmp_path, tarball) -> None:
    data, _ = tarball
    broken = data[: len(data) // 2]  # a gzip stream cut in half
    with ArchiveServer(broken) as server:
        with pytest.raises(DownloadError, match="corrupt or unreadable archive"):
            download_dataset(tmp_path, server.url, md5(broken), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_random_bytes_served_as_the_archive_are_one_line_and_removed(tmp_path, capsys) -> None:
    junk = bytes(range(256)) * 64  # no archive format's opening
    with ArchiveServer(junk) as server:
        assert main(["download", "--root", str(tmp_path), "--url", server.url, "--md5", md5(junk)]) == 1
    messages = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]
    assert len(messages) == 1, messages
    assert "corrupt or unreadable archive: not a tar archive, gzip-, bzip2- or xz-compressed or plain" in messages[0]
    assert list(tmp_path.iterdir()) == []


def test_existing_dataset_is_a_no_op(tmp_path, tarball, small_root, capsys) -> None:
    data, digest = tarball
    shutil.copytree(small_root, tmp_path / "UrbanSound8K")
    before = snapshot(tmp_path)
    with ArchiveServer(data) as server:
        # Given the parent, or the dataset folder itself.
        assert download_dataset(tmp_path, server.url, digest, progress=False) == tmp_path / "UrbanSound8K"
        inside = tmp_path / "UrbanSound8K"
        assert download_dataset(inside, server.url, digest, progress=False) == inside
    assert server.requests == []
    assert "already there" in capsys.readouterr().out
    assert snapshot(tmp_path) == before


def test_incomplete_dataset_folder_is_never_overwritten(tmp_path, tarball, small_root) -> None:
    data, digest = tarball
    shutil.copytree(small_root, tmp_path / "UrbanSound8K")
    shutil.rmtree(tmp_path / "UrbanSound8K" / "audio" / "fold4")
    before = snapshot(tmp_path)
    with ArchiveServer(data) as server:
        with pytest.raises(DownloadError, match="exists but is not a complete UrbanSound8K.*audio/fold4"):
            download_dataset(tmp_path, server.url, digest, progress=False)
    assert server.requests == []
    assert snapshot(tmp_path) == before


def test_http_error_names_the_url(tmp_path, tarball) -> None:
    data, digest = tarball
    with ArchiveServer(data) as server:
        url = server.url + ".missing"
        with pytest.raises(DownloadError, match=f"^{url}: HTTP error 404"):
            download_dataset(tmp_path, url, digest, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_download_takes_url_and_md5_from_the_environment(tmp_path, tarball, small_root, monkeypatch,
                                                             capsys) -> None:
    data, digest = tarball
    with ArchiveServer(data) as server:
        monkeypatch.setenv("US8K_URL", server.url)
        monkeypatch.setenv("US8K_MD5", digest.upper())
        assert main(["download", "--root", str(tmp_path)]) == 0
    assert len(server.requests) == 1
    assert "validate --root" in capsys.readouterr().out
    assert_extracted(tmp_path / "UrbanSound8K", small_root)


def test_cli_download_rejects_a_malformed_md5(tmp_path, capsys, monkeypatch) -> None:
    # As a flag: a usage error (exit 2) before anything runs.
    with pytest.raises(SystemExit) as exit_:
        main(["download", "--root", str(tmp_path), "--url", "http://127.0.0.1:9/x", "--md5", "abc"])
    assert exit_.value.code == 2
    assert "argument --md5: expected an md5 checksum (32 hex digits), got 'abc'" in capsys.readouterr().err
    # From the environment: one error line naming the value (exit 1).
    monkeypatch.setenv("US8K_MD5", "abc")
    assert main(["download", "--root", str(tmp_path), "--url", "http://127.0.0.1:9/x"]) == 1
    assert "not an md5 checksum" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (bound, then released): connecting is refused."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_says_nothing_was_downloaded_and_writes_nothing(tmp_path, tarball, capsys) -> None:
    _, digest = tarball
    root = tmp_path / "data"
    url = f"http://127.0.0.1:{_closed_port()}/UrbanSound8K.tar.gz"
    assert main(["download", "--root", str(root), "--url", url, "--md5", digest]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {url}: download failed (cannot connect") and err.count("\n") == 1
    assert "nothing was downloaded" in err
    assert ".part" not in err and "bytes kept" not in err  # there is no partial file to speak of
    assert not root.exists()


def _small_disk(monkeypatch, free: int) -> None:
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 10**12 - free, free))


def test_a_full_disk_is_refused_before_the_first_byte(tmp_path, tarball, monkeypatch) -> None:
    from us8k_lib.errors import DiskSpaceError

    data, digest = tarball
    _small_disk(monkeypatch, free=len(data))  # room for the archive, not for it and its contents
    root = tmp_path / "data"
    with ArchiveServer(data) as server, pytest.raises(DiskSpaceError) as err:
        download_dataset(root, server.url, digest, progress=False)
    message = str(err.value)
    assert message.startswith(f"{root}: not enough free disk space: needs ")
    assert "the rest of the archive" in message and "the extracted dataset" in message
    assert f"{len(data) / 1e6:.1f} MB free" in message
    assert not (root / (ARCHIVE_NAME + ".part")).exists()  # not a byte written
    assert len(server.requests) == 1  # one request, answered with the size: then stopped


def test_the_official_archive_needs_room_for_the_clips_and_the_cache(tmp_path, monkeypatch) -> None:
    from us8k_lib.datasets import download

    needs = dict(download._space_needs(tmp_path, download.DEFAULT_MD5, 6_000_000_000, 6_000_000_000))
    assert needs["the rest of the archive"] == 6_000_000_000
    assert needs["the extracted dataset"] == download.official_extracted_bytes()
    assert 7.0e9 < download.official_extracted_bytes() < 7.2e9  # 8 732 clips, from the shipped checksums
    assert needs["the formatted cache the first training run writes"] == 8732 * 32000 * 4
    # the cache goes to the data folder: when that is on another disk, it is not counted here
    monkeypatch.setattr(download, "_same_disk", lambda a, b: False)
    assert "the formatted cache the first training run writes" not in dict(
        download._space_needs(tmp_path, download.DEFAULT_MD5, 6_000_000_000, 0))


def test_no_room_to_extract_keeps_the_verified_archive(tmp_path, tarball, monkeypatch) -> None:
    from us8k_lib.errors import DiskSpaceError

    data, digest = tarball
    (tmp_path / ARCHIVE_NAME).write_bytes(data)  # already downloaded (or copied there by hand)
    _small_disk(monkeypatch, free=1000)
    with pytest.raises(DiskSpaceError, match="the extracted dataset"):
        download_dataset(tmp_path, "http://127.0.0.1:9/never-asked", digest, progress=False)
    assert (tmp_path / ARCHIVE_NAME).read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == [ARCHIVE_NAME]

