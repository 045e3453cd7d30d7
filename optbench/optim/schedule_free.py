"""Schedule-Free around any base optimizer: schedulefree.ScheduleFreeWrapper, with z kept apart.

The library's wrapper stores its z buffer in the base optimizer's own per-parameter state before
the base's first step; torch.optim's Adam, AdamW, NAdam, ... create their moments only when that
state is empty, so they fail (KeyError 'exp_avg') under the plain wrapper. Here the wrapper's z
lives in a state of its own; the arithmetic is the library's, unchanged (tests compare the two
around a base that tolerates the shared state). state_dict() carries z and the train/eval mode,
so a checkpoint (saved at x, in eval mode) resumes exactly.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from schedulefree import ScheduleFreeWrapper


class ScheduleFreeWrapped(ScheduleFreeWrapper):
    def __init__(self, base: torch.optim.Optimizer, **kwargs):
        super().__init__(base, **kwargs)
        self._z_state: defaultdict = defaultdict(dict)

    @property
    def state(self):
        return self._z_state

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.base.param_groups for p in g["params"]]

    def state_dict(self) -> dict:
        sd = self.base.state_dict()
        sd["schedule_free"] = {
            "train_mode": self.train_mode,
            "z": [self._z_state[p].get("z") if p in self._z_state else None for p in self._params()],
        }
        return sd

    def state_bytes(self) -> int:
        """The base optimizer's state plus z (optbench.train.memory.optimizer_state_bytes)."""
        from optbench.train.memory import optimizer_state_bytes

        z = sum(s["z"].numel() * s["z"].element_size() for s in self._z_state.values() if "z" in s)
        return optimizer_state_bytes(self.base) + z

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        sf = state_dict.pop("schedule_free", None) or {"train_mode": False, "z": []}
        self.base.load_state_dict(state_dict)
        self._z_state = defaultdict(dict)
        for p, z in zip(self._params(), sf["z"]):
            if z is not None:
                self._z_state[p]["z"] = z.to(device=p.device, dtype=p.dtype).clone()
        self.train_mode = bool(sf["train_mode"])
