"""Every optimizer by the name users know: where it comes from and what its state costs.

Order of preference for a source (DESIGN.md): torch.optim, the authors' package (schedulefree),
pytorch-optimizer, our own code (AdamX, Muon). `state` is the optimizer-state memory per
parameter as a multiple of the parameters' own bytes ("2x" for Adam); see the test that measures
it. Each yaml in conf/optimizer/ holds the defaults; this file holds no numbers of its own.
"""
from __future__ import annotations

import torch

from optbench.errors import ConfigError
from optbench.optim.adamx import AdamX
from optbench.optim.muon import Muon
from optbench.optim.registry import OptimizerSpec, constructor_args, hyperparameters, register, resolve_class


def fast_kernels(cls, groups: list[dict], hp: dict) -> dict:
    """torch.optim's fastest implementation of the same update: `fused=True` where torch has a
    fused kernel for the parameters' device and dtype (torch 2.13: AdamW, Adam, SGD, Adagrad on cpu
    and cuda) and every parameter is contiguous, else `foreach=True` (NAdam, RAdam, channels_last nets); torch's own default on CPU is a per-tensor
    loop. A `fused` or `foreach` given in the yaml or by the user wins. Other libraries: nothing."""
    if not (isinstance(cls, type) and cls.__module__.startswith("torch.optim")) or {"fused", "foreach"} & set(hp):
        return {}
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    args = constructor_args(cls)
    params = [p for g in groups for p in g["params"]]
    # fused kernels walk raw memory: torch 2.13's fused SGD on CPU mis-pairs a channels_last weight
    # with a contiguous momentum/grad, so only tensors in the default layout get them
    if "fused" in args and params and all(
            p.is_floating_point() and not p.is_sparse and p.is_contiguous()
            and p.device.type in _get_fused_kernels_supported_devices() for p in params):
        return {"fused": True}
    return {"foreach": True} if "foreach" in args and params else {}


def _entry(name: str, source: str, cls, state: str, description: str, fixed: dict | None = None,
           needs_closure: bool = False, factory=None, extra: dict | None = None) -> None:
    fixed = fixed or {}

    def build(groups, hp):
        klass = resolve_class(cls)
        return klass(groups, **{**hp, **fixed, **fast_kernels(klass, groups, hp)})

    register(OptimizerSpec(name, source, factory or build, state, description, needs_closure,
                           cls=cls, fixed=fixed, extra=extra or {}))


TORCH, SF, PO, OURS = "torch.optim", "schedulefree", "pytorch-optimizer", "optbench"

_entry("sgd", TORCH, torch.optim.SGD, "0x", "stochastic gradient descent, no momentum")
_entry("momentum", TORCH, torch.optim.SGD, "1x", "SGD with heavy-ball momentum (Polyak 1964)")
_entry("nesterov", TORCH, torch.optim.SGD, "1x", "SGD with Nesterov momentum", fixed={"nesterov": True})
_entry("adagrad", TORCH, torch.optim.Adagrad, "1x", "AdaGrad (Duchi et al. 2011)")
_entry("rmsprop", TORCH, torch.optim.RMSprop, "1x", "RMSprop (Tieleman & Hinton 2012)")
_entry("adam", TORCH, torch.optim.Adam, "2x", "Adam (Kingma & Ba 2015)")
_entry("adamw", TORCH, torch.optim.AdamW, "2x", "Adam with decoupled weight decay (Loshchilov & Hutter)")
_entry("amsgrad", TORCH, torch.optim.Adam, "3x", "AMSGrad (Reddi et al. 2018)", fixed={"amsgrad": True})
_entry("adamx", OURS, AdamX, "3x", "AdamX, the AMSGrad fix of Phuong & Phong 2019")
_entry("nadam", TORCH, torch.optim.NAdam, "2x", "Adam with Nesterov momentum (Dozat 2016)")
_entry("adamax", TORCH, torch.optim.Adamax, "2x", "Adam with the infinity norm (Kingma & Ba 2015)")
_entry("radam", TORCH, torch.optim.RAdam, "2x", "Rectified Adam (Liu et al. 2020)")
_entry("adafactor", TORCH, torch.optim.Adafactor, "r+c",
       "factored second moments (Shazeer & Stern 2018): rows + cols per matrix")
_entry("yogi", PO, "pytorch_optimizer:Yogi", "2x", "Yogi (Zaheer et al. 2018)")
_entry("adan", PO, "pytorch_optimizer:Adan", "4x", "Adan, adaptive Nesterov momentum (Xie et al. 2022)")
_entry("ademamix", PO, "pytorch_optimizer:AdEMAMix", "3x", "AdEMAMix, a mix of two EMAs (Pagliardini et al. 2024)")
_entry("lion", PO, "pytorch_optimizer:Lion", "1x", "Lion, evolved sign momentum (Chen et al. 2023)")
_entry("signsgd", PO, "pytorch_optimizer:SignSGD", "0x", "signSGD (Bernstein et al. 2018)", fixed={"momentum": 0.0})
_entry("signum", PO, "pytorch_optimizer:SignSGD", "1x", "Signum, signSGD with momentum (Bernstein et al. 2018)")
_entry("lars", PO, "pytorch_optimizer:LARS", "1x", "LARS, layer-wise trust ratio (You et al. 2017)")
_entry("lamb", PO, "pytorch_optimizer:Lamb", "2x", "LAMB, layer-wise Adam (You et al. 2020)")
_entry("shampoo", PO, "pytorch_optimizer:Shampoo", "L+R",
       "Shampoo (Gupta et al. 2018): a preconditioner + its inverse root per tensor dimension")
_entry("soap", PO, "pytorch_optimizer:SOAP", "2x+Q",
       "SOAP, Adam in Shampoo's eigenbasis (Vyas et al. 2024): 2x + eigenbases per dimension")


def _schedule_free(cls):
    """Schedule-Free optimizers refuse to step until told they are in train mode; the loop then
    switches them to eval mode (the averaged point x) around every evaluation."""
    def build(groups, hp):
        opt = resolve_class(cls)(groups, **hp)
        opt.train()
        return opt
    return build


_entry("sf_adamw", SF, "schedulefree:AdamWScheduleFree", "2x", "Schedule-Free AdamW (Defazio et al. 2024)",
       factory=_schedule_free("schedulefree:AdamWScheduleFree"))
_entry("sf_sgd", SF, "schedulefree:SGDScheduleFree", "1x", "Schedule-Free SGD (Defazio et al. 2024)",
       factory=_schedule_free("schedulefree:SGDScheduleFree"))


def _lbfgs(groups, hp):
    """L-BFGS keeps one flat history, so it takes exactly one parameter group."""
    mults = {g["lr"] for g in groups}  # lr_mult or an absolute lr: one value for all roles
    if len(mults) > 1:
        raise ConfigError(f"optimizer=lbfgs takes one parameter group; optimizer.groups lr_mult (or lr) must "
                          f"give one lr for all roles, got {sorted(mults)}")
    params = [p for g in groups for p in g["params"]]
    return torch.optim.LBFGS([{"params": params, "role": "all", "lr": groups[0]["lr"]}], **hp)


_entry("lbfgs", TORCH, torch.optim.LBFGS, "2hx", "L-BFGS (Liu & Nocedal 1989), h = history_size",
       needs_closure=True, factory=_lbfgs)


def _muon(groups, hp):
    """Muon on `matrix` groups; the fallback optimizer, with its own lr and weight decay scaled
    by the same role policy, on the others."""
    from optbench.optim.groups import group_lr, group_weight_decay
    from optbench.optim.registry import OPTIMIZERS, fallback_config

    hp = dict(hp)
    fb_cfg = fallback_config(hp.pop("fallback", None))
    fb_spec = OPTIMIZERS[fb_cfg["name"]]
    fb_hp = hyperparameters(fb_cfg)
    for g in groups:
        if g["role"] != "matrix":
            g["lr"] = group_lr(g, fb_hp["lr"])
            g["weight_decay"] = group_weight_decay(g, fb_hp.get("weight_decay", 0.0))
    fb_hp = {k: v for k, v in fb_hp.items() if k not in ("lr", "weight_decay")}
    return Muon(groups, **hp, fallback=lambda gs: fb_spec.factory(gs, fb_hp))


def _muon_roles(model, cfg: dict) -> dict:
    """`first_conv: fallback` (default): the first trainable 4-D parameter in model order, the
    input conv, leaves Muon for the fallback with the `embedding` role's rule: it is the input
    layer, like an embedding (Muon's authors: every conv filter except the first). `muon`: every
    trainable filter on Muon (airbench94_muon, whose first conv, the whitening layer, is frozen)."""
    from optbench.optim.groups import param_roles

    roles = param_roles(model)
    if cfg.get("first_conv", "fallback") == "fallback":
        first = next((n for n, p in model.named_parameters() if p.requires_grad and p.ndim == 4), None)
        if first is not None and roles.get(first) == "matrix":
            roles[first] = "embedding"
    return roles


_entry("muon", OURS, Muon, "1x+fb",
       "Muon (Jordan et al. 2024): Newton-Schulz orthogonalised momentum on matrices; "
       "1x for matrices, the fallback's state for the rest", factory=_muon, extra={"roles": _muon_roles})
