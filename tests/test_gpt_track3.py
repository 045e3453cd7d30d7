"""The Modded-NanoGPT track-3 GPT (optbench/models/gpt_track3.py) against a forward written here from
the benchmark's formulas in plain tensor ops, plus its init, dtypes, roles, FLOPs, the reference
key names (translate_state_dict) and optbench.models.init_from."""

from __future__ import annotations

import math

import pytest
import torch

from optbench.errors import ConfigError
from optbench.models import build_model, init_from
from optbench.models.gpt_track3 import Track3GPT

SMALL = dict(vocab_size=53, n_layer=2, n_embd=32, head_dim=8, max_seq_len=12)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Every tensor random (the zero projections of the init would hide half the network)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            p.copy_(
                1 + 0.2 * noise
                if name.endswith("norm_embed.weight") or p.ndim == 1 and "norm" in name
                else noise * (0.3 if p.ndim == 1 else 1 / math.sqrt(p.size(-1)))
            )


def _rms(x, gain=None, eps=None):
    eps = torch.finfo(x.dtype).eps if eps is None else eps
    y = x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)
    return y if gain is None else y * gain


def _hand_forward(sd: dict, idx: torch.Tensor, n_layer: int, head_dim: int) -> torch.Tensor:
    """The benchmark's network from its formulas, in float32 (own transcription, not its code)."""

    def lin(x, name):
        return x @ sd[name + ".weight"].T + sd[name + ".bias"]

    B, T = idx.shape
    x = _rms(sd["wte.weight"][idx], sd["norm_embed.weight"])
    d = x.size(-1)
    H = d // head_dim
    # rotary: slot i < head_dim/4 turns by pos * (1/1024)^(i / (head_dim/4 - 1)); the other slots stand still;
    # channel i is paired with channel i + head_dim/2
    q4 = head_dim // 4
    freq = torch.tensor([(1 / 1024) ** (i / (q4 - 1)) for i in range(q4)] + [0.0] * q4)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * freq[None, :]  # T x head_dim/2
    c, s = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]

    def rope(t):  # B, T, H, D
        a, b = t[..., : head_dim // 2], t[..., head_dim // 2 :]
        return torch.cat([a * c + b * s, b * c - a * s], -1)

    mask = torch.ones(T, T).tril().bool()
    for i in range(n_layer):
        p = f"blocks.{i}."
        h = _rms(x, sd[p + "norm1.weight"])
        q, k, v = (lin(h, p + f"attn.{n}").view(B, T, H, head_dim) for n in "qkv")
        q, k = rope(_rms(q)), rope(_rms(k))
        att = torch.einsum("bthd,bshd->bhts", q, k) * 0.12
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = torch.einsum("bhts,bshd->bthd", att, v).reshape(B, T, d)
        x = x + lin(y, p + "attn.proj")
        h = _rms(x, sd[p + "norm2.weight"])
        x = x + lin(torch.clamp(lin(h, p + "mlp.fc"), min=0) ** 2, p + "mlp.proj")
    z = lin(_rms(x, sd["norm_f.weight"]), "lm_head")
    return 15 * z / torch.sqrt(z * z + 225)


@pytest.mark.parametrize("train", [True, False])
def test_forward_matches_the_formulas_in_float32(train):
    torch.manual_seed(0)
    model = Track3GPT(**SMALL, embedding_dtype="float32")
    _randomise(model)
    model.train(train)
    idx = torch.randint(0, 53, (3, 12))
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    ref = _hand_forward(sd, idx, 2, 8)
    ours = model(idx)
    assert ours.dtype == torch.float32
    assert ((ours - ref).abs().max() / ref.abs().max()).item() < 2e-6


def test_the_benchmark_size_has_six_heads_of_128_and_bf16_table():
    with torch.device("meta"):
        model = Track3GPT()
    assert (model.n_head, model.head_dim, model.n_layer, model.n_embd) == (6, 128, 12, 768)
    assert model.wte.weight.dtype == torch.bfloat16 and model.lm_head.weight.dtype == torch.float32
    attn = model.blocks[0].attn
    assert [tuple(getattr(attn, n).weight.shape) for n in "qkv"] == [(768, 768)] * 3  # separate, not fused
    assert all(m.bias is not None for m in model.modules() if isinstance(m, torch.nn.Linear))
    # per block: 4 attention + 2 MLP (x4) matrices with biases, two gains; embedding; two norms; head with bias
    per_block = 4 * (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 2 * 768
    expected = 12 * per_block + 50304 * 768 + 2 * 768 + 768 * 50304 + 50304
    assert sum(p.numel() for p in model.parameters()) == expected


def test_bf16_table_runs_the_network_in_bf16_with_fp32_logits():
    torch.manual_seed(0)
    model = Track3GPT(**SMALL)
    _randomise(model)
    seen = []
    model.blocks[0].mlp.fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = model(torch.randint(0, 53, (2, 12)))
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    assert out.abs().max() < 15  # the soft cap


def test_causal():
    torch.manual_seed(0)
    model = Track3GPT(**SMALL, embedding_dtype="float32")
    _randomise(model)
    x = torch.randint(0, 53, (2, 12))
    y = x.clone()
    y[:, 7] = (y[:, 7] + 1) % 53
    a, b = model(x), model(y)
    assert torch.equal(a[:, :7], b[:, :7]) and not torch.allclose(a[:, 7:], b[:, 7:])


def test_baseline_init():
    torch.manual_seed(0)
    model = Track3GPT(vocab_size=512, n_layer=2, n_embd=256, head_dim=64, max_seq_len=8)
    for name, p in model.named_parameters():
        if name.endswith(".proj.weight") or name == "lm_head.weight" or name.endswith(".bias"):
            assert not p.any(), name
        elif name.endswith("norm_embed.weight") or "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
        elif name == "wte.weight":
            assert abs(p.float().std().item() - 1.0) < 0.02
        else:  # q, k, v, fc: N(0, 0.33 / fan_in)
            assert abs(p.std().item() - math.sqrt(0.33 / p.size(1))) < 0.03 * math.sqrt(0.33 / p.size(1)), name
    # the zero output projection makes the initial logits 0: loss = log(vocab)
    assert torch.equal(model(torch.randint(0, 512, (1, 8))), torch.zeros(1, 8, 512))


def test_torch_default_init_zeroes_whole_proj_modules_only():
    torch.manual_seed(0)
    model = Track3GPT(**SMALL, init="torch_default")
    for name, p in model.named_parameters():
        if ".proj." in name or name.startswith("lm_head."):
            assert not p.any(), name
        elif name.endswith(".bias"):  # torch's uniform(+-1/sqrt(fan_in)) bias init is kept
            assert p.any(), name
    bound = 1 / math.sqrt(32)
    assert model.blocks[0].attn.q.weight.abs().max() <= bound


def test_rmsnorm_fp32_option_normalises_in_fp32():
    torch.manual_seed(0)
    a = Track3GPT(**SMALL, rmsnorm_fp32=True)
    _randomise(a)
    x = torch.randn(2, 3, 32).bfloat16()
    norm = a.norm_f
    expected = (_rms(x.float(), eps=torch.finfo(torch.float32).eps) * norm.weight).bfloat16()
    assert torch.equal(norm(x), expected)


def test_roles_follow_the_reference_split():
    roles = Track3GPT(**SMALL).param_roles()
    assert roles["wte.weight"] == "embedding" and roles["lm_head.weight"] == "head"
    assert roles["lm_head.bias"] == "scalar" and roles["norm_embed.weight"] == "scalar"
    assert roles["blocks.1.attn.v.weight"] == "matrix" and roles["blocks.0.mlp.fc.bias"] == "scalar"
    assert {r for n, r in roles.items() if n.startswith("blocks.") and n.endswith(".weight") and "norm" not in n} == {
        "matrix"
    }


def test_flops_per_token():
    model = Track3GPT(**SMALL)
    n = sum(p.numel() for p in model.parameters()) - 53 * 32
    assert model.flops_per_token(12) == 6 * n + 12 * 2 * 32 * 12


def test_bad_options_are_one_line():
    with pytest.raises(ConfigError, match="model.init='xavier' is invalid; valid choices: baseline, torch_default"):
        Track3GPT(**SMALL, init="xavier")
    with pytest.raises(ConfigError, match="model.head_dim=6 is invalid"):
        Track3GPT(vocab_size=10, n_layer=1, n_embd=36, head_dim=6)


# --------------------------------------------------------------------------- reference names, init_from
def _reference_named(model: Track3GPT) -> dict:
    """Our weights under the reference script's key names, as its model.state_dict() names them."""
    sd = {}
    for k, v in model.state_dict().items():
        k = {
            "wte.weight": "embed.weight",
            "norm_embed.weight": "norm1.gains",
            "norm_f.weight": "norm2.gains",
            "lm_head.weight": "proj.weight",
            "lm_head.bias": "proj.bias",
        }.get(k, k)
        if k.startswith("blocks.") and ".norm" in k:
            k = k.replace(".weight", ".gains")
        sd[k] = v.clone()
    for i in range(model.n_layer):  # the reference saves its rotary table
        sd[f"blocks.{i}.attn.rotary.angular_freq"] = torch.zeros(model.head_dim // 2)
    return sd


def test_init_from_reference_names_through_a_file(tmp_path):
    torch.manual_seed(0)
    src = Track3GPT(**SMALL)
    _randomise(src)
    sd = _reference_named(src)
    assert "blocks.0.norm1.gains" in sd and "embed.weight" in sd
    sd["embed.weight"] = sd["embed.weight"].float()  # another precision: cast to ours
    torch.save(sd, tmp_path / "ref.pt")
    dst = Track3GPT(**SMALL)
    init_from(dst, tmp_path / "ref.pt")
    assert dst.wte.weight.dtype == torch.bfloat16
    for (n, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), n


def test_init_from_mismatch_is_one_config_error(tmp_path):
    model = Track3GPT(**SMALL)
    sd = model.state_dict()
    sd.pop("lm_head.bias")
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ConfigError, match=r"missing keys lm_head.bias; unexpected keys extra.weight"):
        init_from(model, sd)
    with pytest.raises(ConfigError, match="is not a file"):
        init_from(model, tmp_path / "nope.pt")
    bad = Track3GPT(**SMALL).state_dict()
    bad["lm_head.bias"] = torch.zeros(3)
    with pytest.raises(ConfigError, match=r"lm_head.bias has shape \(3,\), the model's is \(53,\)"):
        init_from(model, bad)


def test_built_by_name():
    model = build_model({"name": "gpt_track3", **SMALL})
    assert isinstance(model, Track3GPT)
