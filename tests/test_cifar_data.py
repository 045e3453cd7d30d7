"""CIFAR-10 files in the real python format: writing, reading (batches and cache), the download
stages (checksum, resume, extraction, cache) and their one-line errors. No network: the
archive is built here from real-format batch files and served from a file:// URL."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from optbench.data import cifar10_download as dl
from optbench.data.cifar10 import (
    BATCH_DIR,
    CACHE_FILE,
    TRAIN_FILES,
    load_cache,
    read_cifar10,
    write_cache,
    write_cifar10,
)
from optbench.errors import ConfigError

N_TRAIN, N_TEST = 50, 20


def _random_dataset(seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (N_TRAIN, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, N_TRAIN),
        rng.integers(0, 256, (N_TEST, 3, 32, 32), dtype=np.uint8),
        rng.integers(0, 10, N_TEST),
    )


@pytest.fixture
def dataset(tmp_path):
    arrays = _random_dataset()
    write_cifar10(tmp_path / "src", *arrays)
    return arrays, tmp_path / "src"


def _make_archive(src_root: Path, path: Path, extra: dict | None = None, skip=()) -> str:
    """A tar.gz laid out like the official one (cifar-10-batches-py/...); returns its MD5."""
    with tarfile.open(path, "w:gz") as tar:
        for f in sorted((src_root / BATCH_DIR).iterdir()):
            if f.name not in skip:
                tar.add(f, arcname=f"{BATCH_DIR}/{f.name}")
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.md5(path.read_bytes()).hexdigest()


def _assert_same(arrays, got):
    train_x, train_y, test_x, test_y = arrays
    assert torch.equal(got.train_images, torch.from_numpy(train_x))
    assert torch.equal(got.train_labels, torch.from_numpy(train_y.astype(np.int64)))
    assert torch.equal(got.test_images, torch.from_numpy(test_x))
    assert torch.equal(got.test_labels, torch.from_numpy(test_y.astype(np.int64)))


# --------------------------------------------------------------------------- format
def test_batch_files_have_the_official_layout(dataset):
    (train_x, train_y, _, _), root = dataset
    with open(root / BATCH_DIR / "data_batch_1", "rb") as f:
        d = pickle.load(f, encoding="bytes")
    assert set(d) == {b"batch_label", b"labels", b"data", b"filenames"}
    n = len(d[b"labels"])
    assert d[b"data"].shape == (n, 3072) and d[b"data"].dtype == np.uint8
    # row layout: 1024 red values (row-major), then 1024 green, then 1024 blue
    img = train_x[0]
    assert np.array_equal(d[b"data"][0, :1024], img[0].ravel())
    assert np.array_equal(d[b"data"][0, 1024:2048], img[1].ravel())
    assert d[b"data"][0, 2048 + 5 * 32 + 7] == img[2, 5, 7]
    assert d[b"labels"] == [int(y) for y in train_y[:n]]
    with open(root / BATCH_DIR / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert meta[b"label_names"][0] == b"airplane" and len(meta[b"label_names"]) == 10


def test_read_back_bit_exactly_from_batches_and_cache(dataset, tmp_path):
    arrays, root = dataset
    got = read_cifar10(root)
    _assert_same(arrays, got)
    assert got.label_names[9] == "truck"
    _assert_same(arrays, read_cifar10(root / BATCH_DIR))  # the batch dir itself works too
    write_cache(got, root / CACHE_FILE)
    _assert_same(arrays, load_cache(root / CACHE_FILE))
    # the cache is preferred: with the batch files gone it is all read_cifar10 needs
    for f in (root / BATCH_DIR).iterdir():
        f.unlink()
    _assert_same(arrays, read_cifar10(root))
    assert not list(root.glob(".*tmp"))


def test_missing_file_wrong_shape_and_bad_cache_are_one_clear_line(dataset, tmp_path):
    _, root = dataset
    (root / BATCH_DIR / "data_batch_3").unlink()
    with pytest.raises(ConfigError, match=r"missing: .*data_batch_3.*optbench data cifar10"):
        read_cifar10(root)
    with open(root / BATCH_DIR / "data_batch_3", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 3000), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(ConfigError, match=r"data_batch_3 has data of shape \(4, 3000\)"):
        read_cifar10(root)
    (root / BATCH_DIR / "data_batch_3").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ConfigError, match="unreadable: .*data_batch_3"):
        read_cifar10(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="no CIFAR-10 files in .*optbench data cifar10 --root"):
        read_cifar10(empty)
    (empty / CACHE_FILE).write_bytes(b"not a torch file")
    with pytest.raises(ConfigError, match="cache unreadable"):
        read_cifar10(empty)
    torch.save(
        {
            "train_images": torch.zeros(2, 32, 32, 3, dtype=torch.uint8),
            "train_labels": torch.zeros(2).long(),
            "test_images": torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
            "test_labels": torch.zeros(1).long(),
            "label_names": [],
        },
        empty / CACHE_FILE,
    )
    with pytest.raises(ConfigError, match=r"train images \(2, 32, 32, 3\)"):
        read_cifar10(empty)


# --------------------------------------------------------------------------- download
def test_download_verifies_extracts_and_caches(dataset, tmp_path):
    arrays, src = dataset
    archive = tmp_path / "cifar.tar.gz"
    md5 = _make_archive(src, archive)
    out = tmp_path / "out"
    dl.download_cifar10(out, url=archive.as_uri(), md5=md5, progress=False)
    assert (out / CACHE_FILE).exists() and (out / dl.ARCHIVE).read_bytes() == archive.read_bytes()
    assert not (out / (dl.ARCHIVE + ".part")).exists()
    assert sorted(p.name for p in out.iterdir()) == sorted([CACHE_FILE, dl.ARCHIVE, BATCH_DIR])
    _assert_same(arrays, load_cache(out / CACHE_FILE))
    _assert_same(arrays, read_cifar10(out))
    # a rerun finds the cache and does not fetch again
    dl.download_cifar10(out, url=(tmp_path / "gone.tar.gz").as_uri(), md5=md5, progress=False)


def test_download_resumes_a_partial_file(dataset, tmp_path, monkeypatch):
    arrays, src = dataset
    archive = tmp_path / "cifar.tar.gz"
    md5 = _make_archive(src, archive)
    data = archive.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    (out / (dl.ARCHIVE + ".part")).write_bytes(data[: len(data) // 3])
    offsets = []
    real_open = dl.open_url
    monkeypatch.setattr(dl, "open_url", lambda url, offset=0: offsets.append(offset) or real_open(url, offset))
    dl.download_cifar10(out, url=archive.as_uri(), md5=md5, progress=False)
    assert offsets == [len(data) // 3]  # continued where the part file ended
    _assert_same(arrays, read_cifar10(out))


def test_interrupted_download_keeps_the_part_file_for_resume(dataset, tmp_path, monkeypatch):
    arrays, src = dataset
    archive = tmp_path / "cifar.tar.gz"
    md5 = _make_archive(src, archive)
    data = archive.read_bytes()
    out = tmp_path / "out"

    def cut_off(url, offset=0):  # the server says N bytes, the connection ends at N/2
        return io.BytesIO(data[offset : len(data) // 2]), offset > 0, len(data)

    monkeypatch.setattr(dl, "open_url", cut_off)
    with pytest.raises(ConfigError, match=r"stopped at \d+ of \d+ bytes; rerun .* to resume"):
        dl.download_cifar10(out, url="https://example.invalid/c.tar.gz", md5=md5, progress=False)
    assert (out / (dl.ARCHIVE + ".part")).stat().st_size == len(data) // 2
    assert not (out / CACHE_FILE).exists() and not (out / BATCH_DIR).exists()
    monkeypatch.undo()
    dl.download_cifar10(out, url=archive.as_uri(), md5=md5, progress=False)
    _assert_same(arrays, read_cifar10(out))


def test_checksum_mismatch_deletes_the_download_and_leaves_nothing(dataset, tmp_path):
    _, src = dataset
    archive = tmp_path / "cifar.tar.gz"
    _make_archive(src, archive)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"checksum mismatch .*expected 0{32}.*rerun"):
        dl.download_cifar10(out, url=archive.as_uri(), md5="0" * 32, progress=False)
    assert list(out.iterdir()) == []


def test_corrupt_archive_with_matching_checksum_is_refused(dataset, tmp_path):
    _, src = dataset
    archive = tmp_path / "cifar.tar.gz"
    _make_archive(src, archive)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:2000])
    md5 = hashlib.md5(truncated.read_bytes()).hexdigest()
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="not a readable tar.gz"):
        dl.download_cifar10(out, url=truncated.as_uri(), md5=md5, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [dl.ARCHIVE]  # no batch dir, no cache


def test_archive_missing_a_batch_or_with_unsafe_paths_is_refused(dataset, tmp_path):
    _, src = dataset
    incomplete = tmp_path / "incomplete.tar.gz"
    md5 = _make_archive(src, incomplete, skip={"data_batch_4"})
    with pytest.raises(ConfigError, match=f"lacks {BATCH_DIR}/data_batch_4"):
        dl.download_cifar10(tmp_path / "a", url=incomplete.as_uri(), md5=md5, progress=False)
    assert not (tmp_path / "a" / BATCH_DIR).exists() and not (tmp_path / "a" / CACHE_FILE).exists()
    evil = tmp_path / "evil.tar.gz"
    md5 = _make_archive(src, evil, extra={"../escaped.txt": b"x"})
    with pytest.raises(ConfigError, match="unsafe entry '../escaped.txt'"):
        dl.download_cifar10(tmp_path / "b", url=evil.as_uri(), md5=md5, progress=False)
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "b" / BATCH_DIR).exists()


def test_data_verb_downloads_and_reports_errors_in_one_line(dataset, tmp_path, monkeypatch, capsys):
    from optbench.cli import main

    arrays, src = dataset
    archive = tmp_path / "cifar.tar.gz"
    monkeypatch.setattr(dl, "CIFAR10_URL", archive.as_uri())
    monkeypatch.setattr(dl, "CIFAR10_MD5", _make_archive(src, archive))
    main(["data", "cifar10", "--root", str(tmp_path / "via_cli")])
    _assert_same(arrays, read_cifar10(tmp_path / "via_cli"))
    monkeypatch.setattr(dl, "CIFAR10_MD5", "f" * 32)
    with pytest.raises(SystemExit) as e:
        main(["data", "cifar10", "--root", str(tmp_path / "bad")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("optbench: error: checksum mismatch")


def test_canonical_source_is_the_official_archive():
    assert dl.CIFAR10_URL == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert dl.CIFAR10_MD5 == "c58f30108f718f92721af3b95e74349a"
    assert TRAIN_FILES == [f"data_batch_{i}" for i in range(1, 6)]
