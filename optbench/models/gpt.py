"""A readable GPT (decoder-only transformer) with the options optimizer studies compare across.

    tokens -> embedding (+ learned positions) -> n_layer x [x + attn(norm(x)); x + mlp(norm(x))]
           -> norm -> head -> (optional soft-cap) -> logits

Options: positions learned | rotary; norm layernorm | rmsnorm; mlp gelu | relu2 (ReLU squared);
qk_norm (RMS-normalise queries and keys per head); tie_embeddings; zero_init_proj (output
projections of attention and MLP start at zero, so every block starts as the identity);
logit_softcap (c * tanh(logits / c), 0 = off). Attention is PyTorch's scaled_dot_product_attention
(flash / memory-efficient kernels where available).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from optbench.errors import ConfigError

POSITIONS = ("learned", "rotary")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "relu2")


def _check(name: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(f"model.{name}={value!r} is invalid; valid choices: {', '.join(valid)}")


def make_norm(kind: str, dim: int, bias: bool) -> nn.Module:
    return nn.LayerNorm(dim, bias=bias) if kind == "layernorm" else nn.RMSNorm(dim)


class Rotary(nn.Module):
    """Rotary position embedding (Su et al. 2021): rotates pairs of q/k channels by position-
    dependent angles, so attention scores depend on relative position."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_seq_len, dtype=torch.float32), inv_freq)
        # not saved in checkpoints: a function of the shape only
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, H, T, D)
        T = x.size(-2)
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, head_dim: int, rotary: Rotary | None, qk_norm: bool, bias: bool):
        super().__init__()
        self.n_head, self.head_dim = n_head, head_dim
        self.qkv = nn.Linear(n_embd, 3 * n_head * head_dim, bias=bias)
        self.proj = nn.Linear(n_head * head_dim, n_embd, bias=bias)
        self.rotary, self.qk_norm = rotary, qk_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.qk_norm:
            q, k = F.rms_norm(q, (self.head_dim,)), F.rms_norm(k, (self.head_dim,))
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    def __init__(self, n_embd: int, hidden: int, activation: str, bias: bool):
        super().__init__()
        self.fc = nn.Linear(n_embd, hidden, bias=bias)
        self.proj = nn.Linear(hidden, n_embd, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        h = F.gelu(h) if self.activation == "gelu" else F.relu(h).square()
        return self.proj(h)


class Block(nn.Module):
    def __init__(self, n_embd, n_head, head_dim, rotary, qk_norm, norm, mlp, mlp_ratio, bias):
        super().__init__()
        self.norm1 = make_norm(norm, n_embd, bias)
        self.attn = Attention(n_embd, n_head, head_dim, rotary, qk_norm, bias)
        self.norm2 = make_norm(norm, n_embd, bias)
        self.mlp = MLP(n_embd, int(mlp_ratio * n_embd), mlp, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(
        self,
        vocab_size: int = 50304,
        n_layer: int = 12,
        n_embd: int = 768,
        n_head: int = 12,
        head_dim: int | None = None,
        max_seq_len: int = 1024,
        positions: str = "rotary",
        norm: str = "rmsnorm",
        mlp: str = "relu2",
        mlp_ratio: float = 4.0,
        qk_norm: bool = True,
        tie_embeddings: bool = False,
        zero_init_proj: bool = True,
        logit_softcap: float = 0.0,
        bias: bool = False,
        rope_base: float = 10000.0,
        init_std: float = 0.02,
    ):
        super().__init__()
        _check("positions", positions, POSITIONS)
        _check("norm", norm, NORMS)
        _check("mlp", mlp, MLPS)
        head_dim = head_dim or n_embd // n_head
        if positions == "rotary" and head_dim % 2:
            raise ConfigError(f"model.head_dim={head_dim} is invalid with rotary positions: must be even")
        if logit_softcap < 0:
            raise ConfigError(f"model.logit_softcap={logit_softcap} is invalid: must be >= 0 (0 = off)")
        self.vocab_size, self.n_layer, self.n_embd = vocab_size, n_layer, n_embd
        self.n_head, self.head_dim, self.max_seq_len = n_head, head_dim, max_seq_len
        self.tie_embeddings, self.logit_softcap = tie_embeddings, float(logit_softcap)

        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(max_seq_len, n_embd) if positions == "learned" else None
        rotary = Rotary(head_dim, max_seq_len, rope_base) if positions == "rotary" else None
        # one Rotary module shared by the blocks (its tables depend only on the shape)
        self.rotary = rotary
        self.blocks = nn.ModuleList(
            Block(n_embd, n_head, head_dim, rotary, qk_norm, norm, mlp, mlp_ratio, bias) for _ in range(n_layer)
        )
        self.norm_f = make_norm(norm, n_embd, bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self._init_weights(init_std, zero_init_proj)

    def _init_weights(self, std: float, zero_init_proj: bool) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                if zero_init_proj:
                    nn.init.zeros_(proj.weight)
                else:  # GPT-2: residual projections scaled down by the depth
                    nn.init.normal_(proj.weight, 0.0, std / math.sqrt(2 * self.n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        if T > self.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len {self.max_seq_len}")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.norm_f(x))
        if self.logit_softcap:
            logits = self.logit_softcap * torch.tanh(logits / self.logit_softcap)
        return logits

    # ------------------------------------------------------------------ for the optimizer and MFU
    def param_roles(self) -> dict[str, str]:
        """Embeddings (token, position; the tied head is the token embedding), the untied output
        head, hidden matrices, and the 1-D rest (norm gains, biases)."""
        roles = {}
        for name, p in self.named_parameters():
            if name.startswith(("wte.", "wpe.")):
                roles[name] = "embedding"
            elif name.startswith("lm_head."):
                roles[name] = "head"
            else:
                roles[name] = "matrix" if p.ndim >= 2 else "scalar"
        return roles

    def matmul_params(self) -> int:
        """Parameters that take part in a matrix multiply per token: all but embedding lookups
        (the token table counts when tied, as it is then also the output layer)."""
        n = sum(p.numel() for p in self.parameters())
        if not self.tie_embeddings:
            n -= self.wte.weight.numel()
        if self.wpe is not None:
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, forward + backward: 6 per matmul parameter plus attention's
        QK^T and AV, 12 * n_layer * (n_head * head_dim) * seq_len (the PaLM/nanoGPT convention,
        which counts the full, not the causal half, score matrix)."""
        return 6.0 * self.matmul_params() + 12.0 * self.n_layer * self.n_head * self.head_dim * seq_len
