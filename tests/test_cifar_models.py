"""The CIFAR networks: shapes, gradients, the whitening layer's defining property, parameter
counts against the published figure, channels-last equivalence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from optbench.errors import ConfigError
from optbench.models import build_model
from optbench.models.cnn import AirbenchNet, ResNet18


def _forward_backward(model, n=4):
    x = torch.randn(n, 3, 32, 32)
    out = model(x)
    assert out.shape == (n, 10)
    F.cross_entropy(out, torch.arange(n) % 10).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    return out


def test_airbench_forward_backward_and_frozen_layers():
    torch.manual_seed(0)
    model = AirbenchNet(widths=(16, 32, 32))
    _forward_backward(model)
    assert not model.whiten.weight.requires_grad and model.whiten.weight.grad is None
    assert model.whiten.bias.requires_grad
    # BatchNorm scales are frozen at 1, only the biases learn (airbench)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(not m.weight.requires_grad and torch.all(m.weight == 1) for m in norms)
    assert all(m.momentum == pytest.approx(0.4) for m in norms)


def test_airbench_default_widths_via_the_registry():
    model = build_model({"name": "airbench", "widths": [64, 256, 256]})
    _forward_backward(model, n=2)
    # conv weights: whitening 24x3x2x2 (frozen); groups 64x24x3x3 + 64x64x3x3, 256x64 + 256x256,
    # 256x256 x 2; head 10x256 bias-free
    trainable_weights = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1)
    expected = 9 * (64 * 24 + 64 * 64 + 256 * 64 + 256 * 256 + 256 * 256 + 256 * 256) + 10 * 256
    assert trainable_weights == expected


def test_whitening_init_decorrelates_the_patches():
    torch.manual_seed(0)
    # correlated colour channels and smooth images: patches far from white before the layer
    base = F.interpolate(torch.randn(64, 1, 8, 8), size=32, mode="bilinear", align_corners=False)
    images = torch.cat([base, 0.8 * base + 0.2 * torch.randn_like(base), -base], 1) + 0.05 * torch.randn(64, 3, 32, 32)
    model = AirbenchNet(widths=(8, 8, 8))
    model.init_from_data(images)
    w = model.whiten.weight
    assert torch.equal(w[:12], -w[12:])  # each filter and its negation
    z = F.conv2d(images, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = z.T @ z / len(z)
    # eigenvector / sqrt(eigenvalue + eps): identity covariance up to the eps shrinkage per direction
    off_diag = cov - torch.diag(torch.diag(cov))
    assert off_diag.abs().max() < 1e-3
    assert torch.all(torch.diag(cov) <= 1 + 1e-6) and torch.diag(cov).max() > 0.99


def test_init_from_data_is_a_no_op_without_whitening():
    model = AirbenchNet(widths=(8, 8, 8), whiten=False)
    before = model.whiten.weight.clone()
    model.init_from_data(torch.randn(4, 3, 32, 32))
    assert torch.equal(before, model.whiten.weight) and model.whiten.weight.requires_grad


def test_resnet18_has_the_cifar_shape_and_parameter_count():
    model = ResNet18()
    # the CIFAR ResNet-18 with 10 classes has 11,173,962 parameters (e.g. kuangliu/pytorch-cifar)
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    _forward_backward(model, n=2)


def test_channels_last_models_compute_the_same_function():
    for make in (
        lambda cl: AirbenchNet(widths=(8, 16, 16), channels_last=cl),
        lambda cl: ResNet18(widths=(8, 8, 16, 16), channels_last=cl),
    ):
        torch.manual_seed(0)
        a = make(False).eval()
        torch.manual_seed(0)
        b = make(True).eval()
        assert b.head.weight.is_contiguous() and any(
            p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
            for p in b.parameters()
        )
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            assert torch.allclose(a(x), b(x.contiguous(memory_format=torch.channels_last)), atol=1e-5)


def test_model_roles_head_and_frozen_whitening_are_skipped_by_the_optimizer():
    from optbench.optim.groups import build_param_groups

    model = AirbenchNet(widths=(8, 8, 8))
    groups = {g["role"]: g for g in build_param_groups(model, lr=1.0, weight_decay=0.1)}
    names = {r: set(g["param_names"]) for r, g in groups.items()}
    assert names["head"] == {"head.weight"}
    assert "whiten.weight" not in set().union(*names.values())
    assert all(n.endswith("bias") for n in names["scalar"])
    assert all(n.endswith("weight") and "norm" not in n for n in names["matrix"])


# --------------------------------------------------------------------------- the airbench scripts' nets
def _tiny(**kw):
    torch.manual_seed(0)
    return AirbenchNet(widths=(8, 16, 16), **kw)


def test_inverse_width_divides_the_logits_by_the_head_input_width():
    """airbench94_muon: head(x) / x.size(-1); legacy airbench94: x 1/9."""
    a, b = _tiny(output_scale="inverse_width").eval(), _tiny(output_scale=1 / 16).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    with pytest.raises(ConfigError, match=r"model.output_scale='wide' is invalid"):
        _tiny(output_scale="wide")


def test_head_unit_std_and_whitening_bias_init():
    assert _tiny(head_unit_std=True).head.weight.std().item() == pytest.approx(1.0, abs=1e-5)
    assert _tiny().head.weight.std().item() < 0.5  # nn.Linear's default: U(+-1/sqrt(16))
    assert torch.count_nonzero(_tiny(whiten_bias_init="zero").whiten.bias) == 0
    bias = _tiny(whiten_bias_init="default").whiten.bias  # PyTorch's conv bias: U(+-1/sqrt(fan_in = 12))
    assert torch.count_nonzero(bias) == 24 and bias.abs().max() <= 12**-0.5
    with pytest.raises(ConfigError, match=r"model.whiten_bias_init='ones' is invalid; valid choices: zero, default"):
        _tiny(whiten_bias_init="ones")


def test_dirac_init_and_batchnorm_settings():
    model = _tiny()
    conv = model.groups[0].conv1.weight  # 8 x 24 x 3 x 3: c_out < c_in
    identity = torch.zeros_like(conv)
    for d in range(8):
        identity[d, d, 1, 1] = 1
    assert torch.equal(conv, identity)  # every filter is a dirac (first min(out, in))
    conv2 = model.groups[1].conv1.weight  # 16 x 8: the first 8 filters dirac, the rest default init
    assert all(conv2[d, d, 1, 1] == 1 and conv2[d].abs().sum() == 1 for d in range(8))
    assert conv2[8:].abs().sum() > 0
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-12 and m.momentum == pytest.approx(0.4) and m.bias.requires_grad for m in norms)


def test_whitening_order_sorts_the_output_variances():
    """Filter i whitens eigen-direction i: output variance lambda_i / (lambda_i + eps), so the
    descending order (legacy airbench94) gives non-increasing variances, ascending (airbench94_muon)
    non-decreasing, and one is the other flipped."""
    torch.manual_seed(0)
    base = F.interpolate(torch.randn(32, 1, 8, 8), size=32, mode="bilinear", align_corners=False)
    images = torch.cat([base, base + 0.3 * torch.randn_like(base), 0.2 * torch.randn_like(base)], 1)
    variances = {}
    weights = {}
    for order in ("descending", "ascending"):
        model = _tiny(whiten_order=order, whiten_eps=0.05)
        model.init_from_data(images)
        weights[order] = model.whiten.weight[:12]
        z = F.conv2d(images, weights[order]).permute(0, 2, 3, 1).reshape(-1, 12).double()
        variances[order] = (z**2).mean(0)
    assert torch.all(variances["descending"][:-1] >= variances["descending"][1:] - 1e-6)
    assert torch.all(variances["ascending"][:-1] <= variances["ascending"][1:] + 1e-6)
    torch.testing.assert_close(weights["descending"], weights["ascending"].flip(0))


def test_fp16_keeps_batchnorm_in_fp32():
    model = _tiny(dtype="fp16")
    for name, p in model.named_parameters():
        assert p.dtype == (torch.float32 if ".norm" in name else torch.float16), name
    assert _tiny(dtype="auto").head.weight.dtype == torch.float32  # auto resolved by the task; alone: fp32


def _renamed(sd: dict, layout: str) -> dict:
    """Our keys written the way the scripts' modules name them (my transcription of their layouts)."""
    out = {}
    for k, v in sd.items():
        first, _, rest = k.partition(".")
        if layout == "muon":  # CifarNet: whiten, layers = [GELU, ConvGroup x 3, MaxPool], head
            if first == "groups":
                i, _, tail = rest.partition(".")
                k = f"layers.{int(i) + 1}.{tail}"
            k = "_orig_mod." + k  # as saved from a torch.compile'd module
        else:  # legacy nn.Sequential: 0 whiten, 1 GELU, 2-4 groups, 5 pool, 6 flatten, 7 head, 8 Mul
            if first == "groups":
                i, _, tail = rest.partition(".")
                k = f"{int(i) + 2}.{tail}"
            else:
                k = {"whiten": "0", "head": "7"}[first] + "." + rest
        out[k] = v
    return out


@pytest.mark.parametrize("layout", ["muon", "legacy"])
def test_translate_state_dict_maps_the_scripts_keys_onto_ours(layout):
    source = _tiny(whiten_bias_init="default")
    target = _tiny(whiten_bias_init="zero")
    renamed = _renamed(source.state_dict(), layout)
    assert set(renamed).isdisjoint(target.state_dict())
    target.load_state_dict(target.translate_state_dict(renamed), strict=True)
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    # our own keys pass unchanged
    assert target.translate_state_dict(source.state_dict()).keys() == source.state_dict().keys()
