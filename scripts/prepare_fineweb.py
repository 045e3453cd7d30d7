"""Tokenise a Hugging Face text dataset into GPT-2 token shards (the FineWeb shard format).

    python scripts/prepare_fineweb.py --dataset HuggingFaceFW/fineweb --subset sample-10BT \
        --out data/my_fineweb --prefix fineweb --shard-tokens 100000000 --max-tokens 1000000000

The dataset is streamed (nothing is downloaded whole), documents are tokenised with tiktoken's
GPT-2 encoding in several processes, and each document is preceded by the end-of-text token
(50256), so documents are delimited as in the speedrun's shards. The first shard is the val
shard (<prefix>_val_000000.bin), then <prefix>_train_000001.bin, ... Train on them with
`optbench train task=fineweb10B data.root=<out> data.train_pattern='<prefix>_train_*.bin'
data.val_pattern='<prefix>_val_*.bin'`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from optbench.data.token_shards import write_shard  # noqa: E402
from optbench.errors import ConfigError  # noqa: E402
from optbench.extras import check  # noqa: E402

GPT2_EOT = 50256
_encoder = None


def _gpt2_encode(text: str) -> list[int]:
    """In a worker: tiktoken's GPT-2 BPE, loaded once per process (special tokens not parsed)."""
    global _encoder
    if _encoder is None:
        import tiktoken

        _encoder = tiktoken.get_encoding("gpt2")
    return _encoder.encode_ordinary(text)


class _DocumentTokenizer:
    """Picklable: [EOT] + encode(text) as uint16."""

    def __init__(self, encode: Callable[[str], list[int]], eot: int):
        self.encode, self.eot = encode, eot

    def __call__(self, text: str) -> np.ndarray:
        return np.array([self.eot, *self.encode(text)], dtype=np.uint16)


class ShardWriter:
    """Fills shards of exactly `shard_tokens` tokens (the last may be shorter); first val, then train."""

    def __init__(self, out: Path, prefix: str, shard_tokens: int):
        self.out, self.prefix, self.shard_tokens = Path(out), prefix, shard_tokens
        self.buffer = np.empty(shard_tokens, dtype=np.uint16)
        self.filled, self.index, self.written = 0, 0, []

    def add(self, tokens: np.ndarray) -> None:
        while len(tokens):
            take = min(len(tokens), self.shard_tokens - self.filled)
            self.buffer[self.filled : self.filled + take] = tokens[:take]
            self.filled += take
            tokens = tokens[take:]
            if self.filled == self.shard_tokens:
                self.flush()

    def flush(self) -> None:
        if not self.filled:
            return
        split = "val" if self.index == 0 else "train"
        path = self.out / f"{self.prefix}_{split}_{self.index:06d}.bin"
        write_shard(path, self.buffer[: self.filled])
        self.written.append(path)
        self.index, self.filled = self.index + 1, 0


def tokenize_to_shards(
    texts: Iterable[str],
    out: Path,
    prefix: str = "fineweb",
    shard_tokens: int = 100_000_000,
    max_tokens: int | None = None,
    encode: Callable[[str], list[int]] = _gpt2_encode,
    eot: int = GPT2_EOT,
    workers: int = 1,
) -> list[Path]:
    """Tokenise documents (in order) into shards; returns the shard paths written."""
    writer = ShardWriter(out, prefix, shard_tokens)
    tokenizer = _DocumentTokenizer(encode, eot)
    total = 0

    def consume(docs: Iterator[np.ndarray]) -> None:
        nonlocal total
        for tokens in docs:
            if max_tokens is not None:
                tokens = tokens[: max_tokens - total]
            writer.add(tokens)
            total += len(tokens)
            if max_tokens is not None and total >= max_tokens:
                return

    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            # imap keeps document order, so the shards do not depend on the number of workers
            consume(pool.imap(tokenizer, texts, chunksize=16))
    else:
        consume(map(tokenizer, texts))
    writer.flush()
    return writer.written


def stream_texts(dataset: str, subset: str | None, split: str, field: str) -> Iterator[str]:
    from datasets import load_dataset

    for row in load_dataset(dataset, name=subset, split=split, streaming=True):
        yield row[field]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="HuggingFaceFW/fineweb", help="HF dataset id")
    p.add_argument("--subset", default="sample-10BT", help="dataset config name ('' for none)")
    p.add_argument("--split", default="train")
    p.add_argument("--text-field", default="text")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--prefix", default="fineweb")
    p.add_argument("--shard-tokens", type=int, default=100_000_000)
    p.add_argument("--max-tokens", type=int, default=None, help="stop after this many tokens")
    p.add_argument("--workers", type=int, default=max(1, (mp.cpu_count() or 2) - 1))
    a = p.parse_args(argv)
    try:  # before streaming starts: the tokeniser runs in the workers
        for module in ("datasets", "tiktoken"):
            check(module, "scripts/prepare_fineweb.py")
    except ConfigError as e:
        p.exit(2, f"optbench: error: {e}\n")
    texts = stream_texts(a.dataset, a.subset or None, a.split, a.text_field)
    for path in tokenize_to_shards(texts, a.out, a.prefix, a.shard_tokens, a.max_tokens, workers=a.workers):
        print(path)


if __name__ == "__main__":
    main()
