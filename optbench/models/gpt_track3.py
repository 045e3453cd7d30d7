"""The GPT of the Modded-NanoGPT Optimization Benchmark (modded-nanogpt records/track_3_optimization,
train_gpt_simple.py), as its own module: the benchmark fixes the architecture, so this model has
no options that would make it a different benchmark (only its size, for a small CPU version).

    tokens -> embedding (stored in bf16) -> RMSNorm
           -> n_layer x [x + attn(RMSNorm(x)); x + mlp(RMSNorm(x))] -> RMSNorm -> Linear (bias)
           -> .float() -> soft cap 15 x / sqrt(x^2 + 15^2)

- Every Linear has a bias, and casts its fp32 weight and bias to the input's dtype in forward:
  the bf16 embedding makes the whole network run in bf16 without autocast (train with
  trainer.amp=off, as the reference does), over fp32 master weights.
- Attention: separate q, k, v and proj matrices (Muon orthogonalises each one), head_dim 128,
  RMS-norm of q and k per head (no gains), half-truncated rotary (see Rotary), scale 0.12, causal.
- MLP: 4x wide, ReLU^2. RMSNorms carry gains (eps: the dtype's machine epsilon, torch's default).
- Init (`init: baseline`, the benchmark's): every weight whose name says proj (attn.proj, mlp.proj,
  the output projection lm_head) zero; the embedding N(0, 1); other matrices N(0, 0.33 / fan_in);
  biases 0; gains 1. `init: torch_default` is the README's first rows (#1, #2): torch's own
  Linear/Embedding init, then every parameter of a proj module (weights and biases) zeroed.
- `rmsnorm_fp32: true` is the same rows' RMSNorm: normalise in fp32, multiply by the gains in fp32,
  cast back (the baseline normalises in the input's dtype with the gains cast to it).

Parameter names follow optbench's GPT (wte, blocks.i.norm1, attn.q/k/v/proj, mlp.fc/proj, norm_f,
lm_head); `translate_state_dict` maps the reference script's names onto them (init_from).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

from optbench.errors import ConfigError

INITS = ("baseline", "torch_default")
SOFTCAP = 15.0
ATTN_SCALE = 0.12


class RMSNorm(nn.Module):
    def __init__(self, dim: int, fp32: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.fp32 = fp32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fp32:
            return (F.rms_norm(x.float(), (x.size(-1),)) * self.weight).type_as(x)
        return F.rms_norm(x, (x.size(-1),), weight=self.weight.type_as(x))


class CastLinear(nn.Linear):
    """A Linear with bias whose fp32 parameters are cast to the input's dtype in forward."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.type_as(x), self.bias.type_as(x))


class HalfRotary(nn.Module):
    """Rotary embedding on half the channels: the first head_dim/4 of the head_dim/2 frequency
    slots are (1/1024)^linspace(0, 1, head_dim/4) radians per position, the rest 0 (those channel
    pairs are not rotated). Channel i pairs with channel i + head_dim/2 (the two halves of the
    head), not with its neighbour. Computed in fp32, returned in the input's dtype."""

    def __init__(self, head_dim: int, max_seq_len: int):
        super().__init__()
        quarter = head_dim // 4
        freq = (1 / 1024) ** torch.linspace(0, 1, steps=quarter, dtype=torch.float32)
        freq = torch.cat([freq, freq.new_zeros(quarter)])
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), freq)
        # functions of the shape only: not saved in checkpoints
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, H, D)
        T = x.size(1)
        cos, sin = self.cos[None, :T, None, :], self.sin[None, :T, None, :]
        first, second = x.float().chunk(2, dim=-1)
        rotated = torch.cat((first * cos + second * sin, second * cos - first * sin), dim=-1)
        return rotated.type_as(x)


class Attention(nn.Module):
    def __init__(self, n_embd: int, head_dim: int, rotary: HalfRotary):
        super().__init__()
        self.n_head, self.head_dim = n_embd // head_dim, head_dim
        inner = self.n_head * head_dim
        self.q, self.k, self.v = CastLinear(n_embd, inner), CastLinear(n_embd, inner), CastLinear(n_embd, inner)
        self.proj = CastLinear(inner, n_embd)
        self.rotary = rotary  # one module shared by every block (non-persistent tables)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        shape = (B, T, self.n_head, self.head_dim)
        q, k, v = self.q(x).view(shape), self.k(x).view(shape), self.v(x).view(shape)
        q, k = F.rms_norm(q, (self.head_dim,)), F.rms_norm(k, (self.head_dim,))
        q, k = self.rotary(q), self.rotary(k)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=ATTN_SCALE, is_causal=True
        )
        return self.proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    def __init__(self, n_embd: int):
        super().__init__()
        self.fc, self.proj = CastLinear(n_embd, 4 * n_embd), CastLinear(4 * n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.fc(x).relu().square())


class Block(nn.Module):
    def __init__(self, n_embd: int, head_dim: int, rotary: HalfRotary, rmsnorm_fp32: bool):
        super().__init__()
        self.norm1 = RMSNorm(n_embd, rmsnorm_fp32)
        self.attn = Attention(n_embd, head_dim, rotary)
        self.norm2 = RMSNorm(n_embd, rmsnorm_fp32)
        self.mlp = MLP(n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Track3GPT(nn.Module):
    def __init__(
        self,
        vocab_size: int = 50304,
        n_layer: int = 12,
        n_embd: int = 768,
        head_dim: int = 128,
        max_seq_len: int = 1024,
        init: str = "baseline",
        rmsnorm_fp32: bool = False,
        embedding_dtype: str = "bfloat16",
    ):
        super().__init__()
        if init not in INITS:
            raise ConfigError(f"model.init={init!r} is invalid; valid choices: {', '.join(INITS)}")
        if head_dim < 4 or head_dim % 4 or n_embd % head_dim:
            raise ConfigError(
                f"model.head_dim={head_dim} is invalid for model.n_embd={n_embd}: it must be a "
                "multiple of 4 that divides n_embd"
            )
        if embedding_dtype not in ("bfloat16", "float32"):
            raise ConfigError(f"model.embedding_dtype={embedding_dtype!r} is invalid; valid choices: bfloat16, float32")
        self.vocab_size, self.n_layer, self.n_embd = vocab_size, n_layer, n_embd
        self.n_head, self.head_dim, self.max_seq_len = n_embd // head_dim, head_dim, max_seq_len
        # the reference stores the token table in bf16: its lookups then start the bf16 forward
        self.wte = nn.Embedding(vocab_size, n_embd).to(getattr(torch, embedding_dtype))
        self.norm_embed = RMSNorm(n_embd, rmsnorm_fp32)
        self.rotary = HalfRotary(head_dim, max_seq_len)
        self.blocks = nn.ModuleList(Block(n_embd, head_dim, self.rotary, rmsnorm_fp32) for _ in range(n_layer))
        self.norm_f = RMSNorm(n_embd, rmsnorm_fp32)
        self.lm_head = CastLinear(n_embd, vocab_size)
        self._init_weights(init)

    @torch.no_grad()
    def _init_weights(self, init: str) -> None:
        for name, p in self.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            is_proj = ".proj." in f".{name}" or name.startswith("lm_head.")
            if init == "torch_default":  # only the proj modules (both tensors) are re-initialised
                if is_proj:
                    p.zero_()
                continue
            if leaf == "weight" and p.ndim >= 2:
                if is_proj:
                    p.zero_()
                elif name.startswith("wte."):
                    p.normal_()
                else:
                    p.normal_(std=0.33**0.5 / p.size(-1) ** 0.5)
            elif leaf == "bias":
                p.zero_()
            else:  # RMSNorm gains
                p.fill_(1.0)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if T > self.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.max_seq_len}")
        x = self.norm_embed(self.wte(idx))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm_f(x)).float()
        return SOFTCAP * logits * (logits.square() + SOFTCAP**2).rsqrt()

    # ------------------------------------------------------------------ the reference's checkpoints
    @staticmethod
    def translate_state_dict(sd: dict) -> dict:
        """The reference script's state_dict keys -> ours (a state_dict of ours passes unchanged).
        Its rotary table (a saved buffer there) is a function of the shape: dropped."""
        out = {}
        for key, value in sd.items():
            key = key.removeprefix("_orig_mod.").removeprefix("module.")  # compiled / DDP wrappers
            if key.endswith("rotary.angular_freq"):
                continue
            key = {
                "embed.weight": "wte.weight",
                "norm1.gains": "norm_embed.weight",
                "norm2.gains": "norm_f.weight",
                "proj.weight": "lm_head.weight",
                "proj.bias": "lm_head.bias",
            }.get(key, key)
            out[re.sub(r"\.gains$", ".weight", key)] = value
        return out

    # ------------------------------------------------------------------ for the optimizer and MFU
    def param_roles(self) -> dict[str, str]:
        """The reference's split: the token table (embedding) and the output weight (head) go to
        AdamW with their own lrs, every >= 2-D block matrix to Muon, all 1-D tensors (gains, biases,
        the output bias included) to AdamW's third group."""
        roles = {}
        for name, p in self.named_parameters():
            if name.startswith("wte."):
                roles[name] = "embedding"
            elif name == "lm_head.weight":
                roles[name] = "head"
            else:
                roles[name] = "matrix" if p.ndim >= 2 else "scalar"
        return roles

    def matmul_params(self) -> int:
        """All parameters but the embedding lookup table (optbench's GPT convention)."""
        return sum(p.numel() for p in self.parameters()) - self.wte.weight.numel()

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6 per matmul parameter plus attention's QK^T and AV,
        12 * n_layer * (n_head * head_dim) * seq_len (as optbench's GPT)."""
        return 6.0 * self.matmul_params() + 12.0 * self.n_layer * self.n_head * self.head_dim * seq_len
