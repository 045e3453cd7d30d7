"""Deterministic next-token batches from token shards, split across DDP ranks and micro-steps.

The token stream is the train shards in name order, read front to back (no shuffling, as in
the NanoGPT speedrun): every optimizer sees the same tokens in the same order. One optimizer
step consumes `batch_size * seq_len` consecutive tokens (plus one for the last target). That
window is cut into `grad_accum` micro-steps x `world_size` ranks x `micro_batch` sequences;
rank r's micro-batch j is slice j * world_size + r, so the ranks' slices are disjoint and
together cover the window. A step never straddles two shards: when the rest of a shard is too
short it moves to the next one (and after the last, back to the first: a new epoch).
The position (epoch, shard, offset) is the whole state, so a resumed run sees the same tokens.

`order` says how a step's window is shared out:
- interleaved (default): rank r's micro-batch j is slice j * world_size + r of the window.
- modded_nanogpt: the NanoGPT speedrun's generator (records/track_3_optimization): rank r takes
  the r-th contiguous 1/world_size of the window and cuts it into its grad_accum micro-batches in
  order; a shard is left as soon as offset + window + 1 >= its length (one token earlier than
  interleaved's rule). With the benchmark's 512 x 1024-token steps and 64-row micro-batches, this
  is its batches token for token at any world size (1: 8 micro-steps; 8: one each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from optbench.data.token_shards import read_header, read_shard
from optbench.errors import ConfigError

ORDERS = ("interleaved", "modded_nanogpt")


def _to_device(tokens: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(tokens.astype(np.int64))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class TokenLoader:
    def __init__(
        self,
        shards: list[Path],
        batch_size: int,
        seq_len: int,
        grad_accum: int,
        rank: int = 0,
        world_size: int = 1,
        device: torch.device | str = "cpu",
        order: str = "interleaved",
    ):
        if order not in ORDERS:
            raise ConfigError(f"data.order={order!r} is invalid; valid choices: {', '.join(ORDERS)}")
        if batch_size % (grad_accum * world_size):
            raise ConfigError(
                f"trainer.batch_size={batch_size} is not divisible by grad_accum x world "
                f"size = {grad_accum} x {world_size}"
            )
        self.shards = [Path(p) for p in shards]
        self.batch_size, self.seq_len = batch_size, seq_len
        self.grad_accum, self.rank, self.world_size = grad_accum, rank, world_size
        self.micro_batch = batch_size // (grad_accum * world_size)
        self.order = order
        # the reference moves on when offset + window + 1 >= length, ours when it is > length
        self._slack = 1 if order == "modded_nanogpt" else 0
        self.device = torch.device(device)
        self.window = batch_size * seq_len  # tokens per optimizer step (inputs; targets add one)
        self.lengths = [read_header(p) for p in self.shards]  # validates every header up front
        if max(self.lengths) < self.window + 1 + self._slack:
            raise ConfigError(
                f"no train shard holds one batch of {self.window + 1 + self._slack} tokens (batch_size "
                f"{batch_size} x seq_len {seq_len} + {1 + self._slack}); largest shard: {max(self.lengths)} "
                f"tokens in {self.shards[self.lengths.index(max(self.lengths))]}"
            )
        self.epoch, self.shard, self.offset = 0, 0, 0
        self._tokens: np.ndarray | None = None
        self._tokens_shard = -1

    # ------------------------------------------------------------------ position
    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "shard": self.shard, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.shard, self.offset = int(state["epoch"]), int(state["shard"]), int(state["offset"])

    def _advance_to_fitting_shard(self) -> None:
        while self.offset + self.window + 1 + self._slack > self.lengths[self.shard]:
            self.shard, self.offset = self.shard + 1, 0
            if self.shard == len(self.shards):
                self.epoch, self.shard = self.epoch + 1, 0

    def _shard_tokens(self) -> np.ndarray:
        if self._tokens_shard != self.shard:
            self._tokens, self._tokens_shard = read_shard(self.shards[self.shard]), self.shard
        return self._tokens

    # ------------------------------------------------------------------ batches
    def next_window(self) -> tuple[int, int, np.ndarray]:
        """(shard, offset, tokens) of the next step's window of window + 1 tokens; advances."""
        self._advance_to_fitting_shard()
        start = self.offset
        tokens = self._shard_tokens()[start : start + self.window + 1]
        self.offset += self.window
        return self.shard, start, tokens

    def rank_slices(self) -> list[tuple[int, int]]:
        """[(start, stop)) token ranges, relative to the window, of this rank's micro-batch inputs."""
        per = self.micro_batch * self.seq_len
        if self.order == "modded_nanogpt":
            first = self.rank * self.grad_accum * per  # this rank's contiguous share of the window
            return [(first + j * per, first + (j + 1) * per) for j in range(self.grad_accum)]
        return [
            ((j * self.world_size + self.rank) * per, (j * self.world_size + self.rank + 1) * per)
            for j in range(self.grad_accum)
        ]

    def __iter__(self):
        return self

    def __next__(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's micro-batches for one optimizer step: (inputs, targets), each micro x seq_len."""
        _, _, tokens = self.next_window()
        micro = []
        for start, stop in self.rank_slices():
            chunk = _to_device(np.asarray(tokens[start : stop + 1]), self.device)
            micro.append(
                (chunk[:-1].view(self.micro_batch, self.seq_len), chunk[1:].view(self.micro_batch, self.seq_len))
            )
        return micro


def validation_tokens(path: Path, val_tokens: int, seq_len: int) -> np.ndarray:
    """The fixed evaluation set: the first val_tokens + 1 tokens of the val shard (inputs and the
    shifted targets), the same for every run and optimizer."""
    if val_tokens <= 0 or val_tokens % seq_len:
        raise ConfigError(
            f"task.val_tokens={val_tokens} is invalid: must be a positive multiple of task.seq_len={seq_len}"
        )
    tokens = read_shard(path)
    if len(tokens) < val_tokens + 1:
        raise ConfigError(
            f"task.val_tokens={val_tokens} is more than the val shard {path} holds "
            f"({len(tokens)} tokens; at most {(len(tokens) - 1) // seq_len * seq_len})"
        )
    return np.array(tokens[: val_tokens + 1], dtype=np.int64)


def selection_tokens(path: Path, val_tokens: int, select_tokens: int, seq_len: int) -> np.ndarray:
    """The held-out selection slice: select_tokens + 1 tokens of the val shard starting right after
    the reported evaluation set's val_tokens + 1, so no token scored for the choice is scored in
    the report (what `tune` selects on; the CIFAR tasks' val split plays this part)."""
    if select_tokens <= 0 or select_tokens % seq_len:
        raise ConfigError(
            f"task.select_tokens={select_tokens} is invalid: must be a positive multiple of task.seq_len={seq_len}"
        )
    tokens = read_shard(path)
    start = val_tokens + 1
    if len(tokens) < start + select_tokens + 1:
        room = max(0, (len(tokens) - start - 1) // seq_len * seq_len)
        raise ConfigError(
            f"task.select_tokens={select_tokens} is more than the val shard {path} holds after "
            f"task.val_tokens={val_tokens} ({len(tokens)} tokens; at most {room})"
        )
    return np.array(tokens[start : start + select_tokens + 1], dtype=np.int64)
