"""The GPT model: causality for every option, GPT-2's parameter count, attention against a
hand-written reference, rotary's relative-position property, init, soft-cap, roles, FLOPs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from optbench.errors import ConfigError
from optbench.models.gpt import GPT, Rotary

TINY = dict(vocab_size=97, n_layer=2, n_embd=32, n_head=4, max_seq_len=16)


@pytest.mark.parametrize(
    "positions,norm,mlp,qk_norm,tie",
    [
        # every value of every option appears; the GPT-2 recipe and the modern one among them
        ("learned", "layernorm", "gelu", False, True),
        ("rotary", "rmsnorm", "relu2", True, False),
        ("learned", "rmsnorm", "relu2", True, True),
        ("rotary", "layernorm", "gelu", False, False),
        ("rotary", "rmsnorm", "gelu", True, True),
    ],
)
def test_every_option_is_causal_and_shaped(positions, norm, mlp, qk_norm, tie):
    torch.manual_seed(0)
    # zero_init_proj off, so the blocks actually mix positions at init
    model = GPT(
        **TINY,
        positions=positions,
        norm=norm,
        mlp=mlp,
        qk_norm=qk_norm,
        tie_embeddings=tie,
        zero_init_proj=False,
        logit_softcap=15.0,
    ).eval()
    x = torch.randint(0, 97, (2, 16))
    logits = model(x)
    assert logits.shape == (2, 16, 97)
    changed = x.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 97
    out = model(changed)
    assert torch.allclose(out[:, :9], logits[:, :9], atol=1e-6)  # the past does not see the future
    assert not torch.allclose(out[:, 9:], logits[:, 9:])


def test_gpt2_small_has_the_published_parameter_count():
    # GPT-2 small (Radford et al. 2019): 124,439,808 parameters with vocab 50257, 1024 positions, tied head
    with torch.device("meta"):
        model = GPT(
            vocab_size=50257,
            n_layer=12,
            n_embd=768,
            n_head=12,
            max_seq_len=1024,
            positions="learned",
            norm="layernorm",
            mlp="gelu",
            qk_norm=False,
            tie_embeddings=True,
            bias=True,
        )
    assert sum(p.numel() for p in model.parameters()) == 124_439_808


def test_attention_matches_a_hand_written_causal_softmax():
    torch.manual_seed(1)
    model = GPT(**TINY, positions="learned", qk_norm=False, zero_init_proj=False).eval()
    attn = model.blocks[0].attn
    x = torch.randn(2, 10, 32)
    B, T, H, D = 2, 10, 4, 8
    q, k, v = attn.qkv(x).split(32, dim=-1)
    q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(D)
    scores = scores.masked_fill(torch.triu(torch.ones(T, T, dtype=torch.bool), 1), float("-inf"))
    y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, H * D)
    assert torch.allclose(attn(x), attn.proj(y), atol=1e-5)


def test_rotary_scores_depend_only_on_relative_position():
    rot = Rotary(head_dim=8, max_seq_len=64)
    q, k = torch.randn(8), torch.randn(8)

    def score(m: int, n: int) -> float:
        seq_q = torch.zeros(1, 1, 64, 8)
        seq_k = torch.zeros(1, 1, 64, 8)
        seq_q[0, 0, m], seq_k[0, 0, n] = q, k
        return float(rot(seq_q)[0, 0, m] @ rot(seq_k)[0, 0, n])

    assert score(10, 3) == pytest.approx(score(40, 33), abs=1e-4)
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-3)
    assert score(0, 0) == pytest.approx(float(q @ k), abs=1e-5)  # position 0 is not rotated


def test_zero_init_makes_every_block_the_identity():
    torch.manual_seed(2)
    model = GPT(**TINY, positions="learned", zero_init_proj=True).eval()
    x = torch.randint(0, 97, (2, 16))
    h = model.wte(x) + model.wpe(torch.arange(16))
    assert torch.allclose(model(x), model.lm_head(model.norm_f(h)), atol=1e-6)
    assert all(b.attn.proj.weight.abs().sum() == 0 and b.mlp.proj.weight.abs().sum() == 0 for b in model.blocks)


def test_logit_softcap_is_c_tanh_of_the_raw_logits():
    torch.manual_seed(3)
    capped = GPT(**TINY, zero_init_proj=False, logit_softcap=0.5).eval()
    raw = GPT(**TINY, zero_init_proj=False, logit_softcap=0.0).eval()
    raw.load_state_dict(capped.state_dict())
    x = torch.randint(0, 97, (1, 16))
    assert torch.allclose(capped(x), 0.5 * torch.tanh(raw(x) / 0.5), atol=1e-6)
    assert capped(x).abs().max() < 0.5


def test_tied_head_shares_the_embedding():
    tied, untied = GPT(**TINY, tie_embeddings=True), GPT(**TINY, tie_embeddings=False)
    assert tied.lm_head.weight is tied.wte.weight
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(untied) - n(tied) == 97 * 32


def test_param_roles_and_groups():
    from optbench.optim.groups import build_param_groups

    model = GPT(**TINY, positions="learned", norm="layernorm", bias=False)
    roles = model.param_roles()
    assert set(roles) == {n for n, _ in model.named_parameters()}
    by_role = {r: sorted(n for n, x in roles.items() if x == r) for r in set(roles.values())}
    assert by_role["embedding"] == ["wpe.weight", "wte.weight"]
    assert by_role["head"] == ["lm_head.weight"]
    assert len(by_role["matrix"]) == 4 * TINY["n_layer"]  # qkv, attn proj, fc, mlp proj per block
    assert all(model.get_parameter(n).ndim == 1 for n in by_role["scalar"])
    groups = build_param_groups(model, lr=1e-3, weight_decay=0.1)
    assert {g["role"]: g["weight_decay"] for g in groups}["scalar"] == 0.0


def test_flops_per_token_is_6n_plus_the_attention_term():
    model = GPT(**TINY, positions="learned", tie_embeddings=False)
    L, d, V, T = 2, 32, 97, 16
    # parameters in matmuls, counted from the architecture: per block qkv 3d^2, proj d^2, MLP 8d^2, two
    # RMSNorm gains 2d; final norm d; head V d (embedding lookups are free)
    n = L * (12 * d * d + 2 * d) + d + V * d
    assert model.matmul_params() == n
    assert model.flops_per_token(T) == 6 * n + 12 * L * d * T


def test_bad_options_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="model.positions='alibi' is invalid; valid choices: learned, rotary"):
        GPT(**TINY, positions="alibi")
    with pytest.raises(ConfigError, match="model.mlp='swiglu' is invalid"):
        GPT(**TINY, mlp="swiglu")


def test_bf16_autocast_forward_backward():
    model = GPT(**TINY)
    x = torch.randint(0, 97, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(x).float().flatten(0, 1), x.flatten())
    loss.backward()
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(math.log(97), abs=0.3)
