"""A random sparse first-order Markov source with an exactly known entropy rate.

Every token (state) has a few successors with random (Dirichlet) probabilities. State s always
has s + 1 (mod vocab) among its successors, so the chain is irreducible, and state 0 may follow
itself, so it is aperiodic: the stationary distribution pi is unique. The entropy rate
H = sum_s pi_s * H(P[s, :]) (nats/token) is the lowest expected loss any model can reach on
this stream, so a run's validation loss minus H is its excess loss.

The token stream is written as train/val shards in the real FineWeb format and read by the same
reader and loader as FineWeb. The data seed is fixed, independent of the run seed.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optbench.data.token_shards import write_shard
from optbench.train.rundir import atomic_write_text

FORMAT_VERSION = 1
TRAIN_PATTERN = "markov_train_*.bin"
VAL_PATTERN = "markov_val_*.bin"


@dataclass
class MarkovSource:
    transition: np.ndarray  # (V, V) row-stochastic, sparse rows

    @classmethod
    def random(cls, vocab_size: int, successors: int, seed: int) -> MarkovSource:
        if not 2 <= successors <= vocab_size:
            raise ValueError(f"successors={successors} must be in [2, vocab_size={vocab_size}]")
        rng = np.random.default_rng(seed)
        P = np.zeros((vocab_size, vocab_size))
        for s in range(vocab_size):
            forced = [(s + 1) % vocab_size] + ([0] if s == 0 else [])
            others = rng.permutation([t for t in range(vocab_size) if t not in forced])
            succ = forced + list(others[: successors - len(forced)])
            P[s, succ] = rng.dirichlet(np.ones(successors))
        return cls(P)

    @property
    def vocab_size(self) -> int:
        return len(self.transition)

    def stationary(self) -> np.ndarray:
        """pi with pi P = pi: the eigenvector of P^T for eigenvalue 1, normalised."""
        w, v = np.linalg.eig(self.transition.T)
        pi = np.real(v[:, np.argmin(np.abs(w - 1))])
        return pi / pi.sum()

    def entropy_rate(self) -> float:
        P = self.transition
        with np.errstate(divide="ignore", invalid="ignore"):
            row_entropy = -np.where(P > 0, P * np.log(P), 0.0).sum(1)
        return float(self.stationary() @ row_entropy)

    def nll(self, tokens: np.ndarray) -> float:
        """Mean -log P(next | current) over a token sequence: the true model's loss on it."""
        tokens = np.asarray(tokens, dtype=np.int64)
        return float(-np.log(self.transition[tokens[:-1], tokens[1:]]).mean())

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """One contiguous chain of n tokens, started from the stationary distribution.
        Inverse-CDF sampling; the loop is per token but over plain Python ints (about 1 s per 2M)."""
        # bisect in the cumulative row lands on the first token whose cdf exceeds u; a zero-
        # probability token has the same cdf as its left neighbour and is never chosen
        cdf = np.cumsum(self.transition, axis=1).tolist()
        last = self.vocab_size - 1
        u = rng.random(n).tolist()
        out = np.empty(n, dtype=np.uint16)
        state = int(rng.choice(self.vocab_size, p=self.stationary()))
        for i in range(n):
            out[i] = state
            state = min(bisect.bisect_right(cdf[state], u[i]), last)
        return out


def ensure_markov_shards(
    root,
    vocab_size: int = 64,
    successors: int = 4,
    seed: int = 1234,
    train_tokens: int = 2_000_000,
    val_tokens: int = 131_072,
    shard_tokens: int = 1_000_000,
) -> tuple[Path, MarkovSource]:
    """Generate the shards once into a directory keyed by the parameters; return (dir, source).
    A stamp file written last marks a complete set, so an interrupted generation is redone."""
    params = {
        "vocab_size": vocab_size,
        "successors": successors,
        "seed": seed,
        "train_tokens": train_tokens,
        "val_tokens": val_tokens,
        "shard_tokens": shard_tokens,
        "version": FORMAT_VERSION,
    }
    key = "-".join(f"{k}{v}" for k, v in params.items())
    out = Path(root) / key
    source = MarkovSource.random(vocab_size, successors, seed)
    stamp = out / "markov.json"
    try:  # a damaged stamp: the set is made again (a cache of a fixed-seed generator)
        done = json.loads(stamp.read_text()).get("params") == params
    except (OSError, ValueError, AttributeError):
        done = False
    if done:
        return out, source
    rng = np.random.default_rng(seed + 1)
    # one chain: val first, then train, so no shard boundary breaks the chain's statistics
    stream = source.sample(val_tokens + train_tokens, rng)
    write_shard(out / "markov_val_000000.bin", stream[:val_tokens])
    train = stream[val_tokens:]
    for i, start in enumerate(range(0, len(train), shard_tokens)):
        write_shard(out / f"markov_train_{i + 1:06d}.bin", train[start : start + shard_tokens])
    atomic_write_text(stamp, json.dumps({"params": params, "entropy_rate": source.entropy_rate()}))
    return out, source
