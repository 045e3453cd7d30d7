"""Token shards (format, errors), the loader (rank slices, resume), the hub download (mocked),
the Markov source and the shard-writing half of scripts/prepare_fineweb.py. No network."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from optbench.data import fineweb
from optbench.data.markov import MarkovSource, ensure_markov_shards
from optbench.data.token_loader import TokenLoader, validation_tokens
from optbench.data.token_shards import find_shards, read_shard, write_shard
from optbench.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- format
def test_shard_round_trip_is_the_speedrun_format(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50257, size=1000)
    path = write_shard(tmp_path / "fineweb_train_000001.bin", tokens)
    raw = path.read_bytes()
    # independent decoding of the documented layout: 256 little-endian int32, then uint16
    header = np.frombuffer(raw[:1024], dtype="<i4")
    assert list(header[:3]) == [20240520, 1, 1000] and not header[3:].any()
    assert len(raw) == 1024 + 2 * 1000
    assert np.array_equal(np.frombuffer(raw[1024:], dtype="<u2"), tokens)
    back = read_shard(path)
    assert isinstance(back, np.memmap) and np.array_equal(back, tokens)
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic writer leaves no temporary file


def _corrupt(path: Path, kind: str) -> None:
    raw = bytearray(path.read_bytes())
    if kind == "magic":
        raw[0:4] = np.int32(12345).tobytes()
    elif kind == "version":
        raw[4:8] = np.int32(7).tobytes()
    elif kind == "truncated":
        raw = raw[:-10]
    elif kind == "short":
        raw = raw[:100]
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize(
    "kind,words",
    [
        ("magic", "magic number 12345"),
        ("version", "unknown version 7"),
        ("truncated", "truncated"),
        ("short", "truncated"),
    ],
)
def test_bad_headers_give_one_line_naming_the_file(tmp_path, kind, words):
    path = write_shard(tmp_path / "bad.bin", np.arange(100))
    _corrupt(path, kind)
    with pytest.raises(ConfigError) as e:
        read_shard(path)
    msg = str(e.value)
    assert str(path) in msg and words in msg and "\n" not in msg


def test_empty_directory_names_it(tmp_path):
    with pytest.raises(ConfigError, match=f"no token shards matching 'fineweb_train_.*' in {tmp_path}"):
        find_shards(tmp_path, "fineweb_train_*.bin")


# --------------------------------------------------------------------------- loader
def _position_shards(tmp_path, sizes):
    """Shards whose token at global position i is i (unique values), so batches reveal positions."""
    paths, start = [], 0
    for k, n in enumerate(sizes):
        paths.append(write_shard(tmp_path / f"t_{k:06d}.bin", np.arange(start, start + n)))
        start += n
    return paths


def test_ranks_get_disjoint_slices_that_cover_the_batch(tmp_path):
    shards = _position_shards(tmp_path, [5000])
    B, T, accum = 8, 16, 2
    ranks = [TokenLoader(shards, B, T, accum, rank=r, world_size=2) for r in range(2)]
    single = TokenLoader(shards, B, T, accum * 2, rank=0, world_size=1)
    for step in range(3):
        per_rank = [next(loader) for loader in ranks]
        assert all(len(m) == accum for m in per_rank)  # the loop's accumulation count
        seen = [x for micro in per_rank for x, _ in micro]
        flat = np.concatenate([x.numpy().ravel() for x in seen])
        # disjoint and together exactly the step's window of B * T consecutive tokens
        assert len(np.unique(flat)) == len(flat) == B * T
        assert np.array_equal(np.sort(flat), np.arange(step * B * T, (step + 1) * B * T))
        for micro in per_rank:
            for x, y in micro:
                assert x.shape == (B // (accum * 2), T) and np.array_equal(y.numpy(), x.numpy() + 1)
        # micro-step j, rank r holds slice j * world + r of the window: the same sequences, in the
        # same order, as one process accumulating over world x accum micro-steps
        interleaved = [per_rank[r][j][0] for j in range(accum) for r in range(2)]
        alone = [x for x, _ in next(single)]
        assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(interleaved, alone))


def test_a_step_never_straddles_shards_and_wraps_to_a_new_epoch(tmp_path):
    shards = _position_shards(tmp_path, [300, 200])  # window 128 (+1): 2 steps fit in the first, 1 in the second
    loader = TokenLoader(shards, 8, 16, 1)
    starts = [int(next(loader)[0][0][0, 0]) for _ in range(4)]
    assert starts == [0, 128, 300, 0]
    assert loader.state_dict() == {"epoch": 1, "shard": 0, "offset": 128}


def test_resume_continues_with_the_same_tokens(tmp_path):
    shards = _position_shards(tmp_path, [3000, 3000])
    a = TokenLoader(shards, 8, 16, 2, rank=1, world_size=2)
    for _ in range(25):
        next(a)
    state = a.state_dict()
    expected = [next(a) for _ in range(5)]
    b = TokenLoader(shards, 8, 16, 2, rank=1, world_size=2)
    b.load_state_dict(state)
    got = [next(b) for _ in range(5)]
    for ea, gb in zip(expected, got):
        for (x1, y1), (x2, y2) in zip(ea, gb):
            assert np.array_equal(x1.numpy(), x2.numpy()) and np.array_equal(y1.numpy(), y2.numpy())


def test_loader_rejects_shards_smaller_than_a_batch(tmp_path):
    shards = _position_shards(tmp_path, [100])
    with pytest.raises(ConfigError, match="no train shard holds one batch of 129 tokens"):
        TokenLoader(shards, 8, 16, 1)


def test_validation_set_is_the_first_val_tokens_of_the_shard(tmp_path):
    path = _position_shards(tmp_path, [1000])[0]
    v = validation_tokens(path, 512, 64)
    assert np.array_equal(v, np.arange(513))  # inputs and their shifted targets
    with pytest.raises(ConfigError, match="more than the val shard"):
        validation_tokens(path, 1024, 64)
    with pytest.raises(ConfigError, match="multiple of task.seq_len=64"):
        validation_tokens(path, 500, 64)


# --------------------------------------------------------------------------- hub download (mocked)
class FakeHub:
    """Serves shards from memory with the hub's metadata (size, sha256); counts downloads."""

    def __init__(self, names, store: Path, corrupt=()):
        self.files = {
            n: write_shard(store / n, np.arange(i * 10, i * 10 + 50)).read_bytes() for i, n in enumerate(names)
        }
        self.corrupt, self.downloads = set(corrupt), []

    def info(self, repo, names):
        import hashlib

        return {n: (len(b), hashlib.sha256(b).hexdigest()) for n, b in self.files.items() if n in names}

    def download(self, repo, name, root):
        self.downloads.append((repo, name))
        data = self.files[name]
        if name in self.corrupt:
            data = data[:-2] + b"xx"
        (Path(root) / name).write_bytes(data)
        return Path(root) / name


def test_download_gets_val_and_first_train_shards_checks_and_resumes(tmp_path, monkeypatch):
    names = ["fineweb_val_000000.bin", "fineweb_train_000001.bin", "fineweb_train_000002.bin"]
    hub = FakeHub(names, tmp_path / "hub")
    monkeypatch.setattr(fineweb, "hub_file_info", hub.info)
    monkeypatch.setattr(fineweb, "hub_download", hub.download)
    from optbench.commands.data import main as data_main

    data_main(["fineweb10B", "--shards", "2", "--root", str(tmp_path / "data")])
    assert hub.downloads == [("kjj0/fineweb10B-gpt2", n) for n in names]
    root = tmp_path / "data"
    assert np.array_equal(read_shard(root / names[2]), np.arange(20, 70))
    # a second run finds every file complete (size + sha256) and downloads nothing
    hub.downloads.clear()
    fineweb.download_fineweb(root, shards=2)
    assert hub.downloads == []
    # a file damaged on disk is fetched again
    (root / names[1]).write_bytes(b"partial")
    fineweb.download_fineweb(root, shards=2)
    assert hub.downloads == [("kjj0/fineweb10B-gpt2", names[1])]


def test_download_rejects_a_checksum_mismatch_and_removes_the_file(tmp_path, monkeypatch):
    names = fineweb.shard_names(1, edu=True)
    assert names == ["finewebedu_val_000000.bin", "finewebedu_train_000001.bin"]
    hub = FakeHub(names, tmp_path / "hub", corrupt={names[1]})
    monkeypatch.setattr(fineweb, "hub_file_info", hub.info)
    monkeypatch.setattr(fineweb, "hub_download", hub.download)
    with pytest.raises(ConfigError, match="does not match the hub's size"):
        fineweb.download_fineweb(tmp_path / "data", shards=1, edu=True)
    assert hub.downloads[0][0] == "kjj0/finewebedu10B-gpt2"
    assert not (tmp_path / "data" / names[1]).exists()
    with pytest.raises(ConfigError, match=r"--shards=200 is invalid.*1\.\.103"):
        fineweb.shard_names(200)


# --------------------------------------------------------------------------- Markov source
def test_markov_entropy_rate_matches_an_independent_computation():
    src = MarkovSource.random(vocab_size=16, successors=3, seed=5)
    P = src.transition
    assert np.allclose(P.sum(1), 1) and ((P > 0).sum(1) == 3).all()
    # stationary distribution by power iteration (a different method than the eigenvector)
    pi = np.full(16, 1 / 16)
    for _ in range(5000):
        pi = pi @ P
    H = sum(pi[s] * -sum(p * math.log(p) for p in P[s] if p > 0) for s in range(16))
    assert src.entropy_rate() == pytest.approx(H, abs=1e-9)
    # and the true model's loss on a long sample converges to it
    sample = src.sample(200_000, np.random.default_rng(0))
    assert src.nll(sample) == pytest.approx(H, abs=0.02)


def test_markov_shards_are_generated_once_in_the_real_format(tmp_path):
    kw = dict(vocab_size=8, successors=2, seed=1, train_tokens=5000, val_tokens=1000, shard_tokens=2000)
    out, src = ensure_markov_shards(tmp_path, **kw)
    train = find_shards(out, "markov_train_*.bin")
    assert [len(read_shard(p)) for p in train] == [2000, 2000, 1000]
    stream = np.concatenate([read_shard(out / "markov_val_000000.bin")] + [read_shard(p) for p in train])
    assert np.all(src.transition[stream[:-1], stream[1:]] > 0)  # one unbroken chain
    mtime = train[0].stat().st_mtime_ns
    again, _ = ensure_markov_shards(tmp_path, **kw)
    assert again == out and train[0].stat().st_mtime_ns == mtime
    other, _ = ensure_markov_shards(tmp_path, **{**kw, "seed": 2})
    assert other != out


# --------------------------------------------------------------------------- prepare script
def _load_prepare_script():
    spec = importlib.util.spec_from_file_location("prepare_fineweb", REPO / "scripts" / "prepare_fineweb.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prepare_script_writes_eot_delimited_shards(tmp_path):
    prep = _load_prepare_script()
    # a stub tokenizer (tiktoken's GPT-2 files cannot be downloaded here): one token per byte
    written = prep.tokenize_to_shards(
        ["ab", "cde", "f"], tmp_path, prefix="mine", shard_tokens=4, encode=lambda s: list(s.encode()), eot=50256
    )
    assert [p.name for p in written] == ["mine_val_000000.bin", "mine_train_000001.bin", "mine_train_000002.bin"]
    E = 50256
    assert [list(read_shard(p)) for p in written] == [[E, 97, 98, E], [99, 100, 101, E], [102]]
    capped = prep.tokenize_to_shards(
        ["abcdef"], tmp_path / "cap", shard_tokens=100, max_tokens=3, encode=lambda s: list(s.encode())
    )
    assert list(read_shard(capped[0])) == [E, 97, 98]


def test_hub_metadata_gives_lfs_size_and_sha256(monkeypatch):
    import huggingface_hub
    from huggingface_hub.hf_api import RepoFile

    def fake_paths_info(self, repo, paths, repo_type=None, **kw):
        assert repo == "kjj0/fineweb10B-gpt2" and repo_type == "dataset"
        return [
            RepoFile(path=p, size=134, oid="git-oid", lfs={"size": 200_001_024, "oid": "ab" * 32, "pointerSize": 134})
            for p in paths
        ]

    monkeypatch.setattr(huggingface_hub.HfApi, "get_paths_info", fake_paths_info)
    info = fineweb.hub_file_info("kjj0/fineweb10B-gpt2", ["fineweb_val_000000.bin"])
    # the LFS object's size and sha256, not the pointer file's
    assert info == {"fineweb_val_000000.bin": (200_001_024, "ab" * 32)}
