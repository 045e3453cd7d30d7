"""Side-by-side check of experiment=airbench94 / airbench94_muon against the airbench scripts, on a CPU.

    python scripts/fidelity_airbench.py --reference PATH/TO/cifar10-airbench

PATH is a checkout of KellerJordan/cifar10-airbench (snapshot f1c599c): legacy/airbench94.py and
airbench94_muon.py. Nothing of them is copied here: at run time the needed definitions (the net,
its whitening init, LookaheadState, and the lr / lookahead / whitening-bias statements of main())
are parsed out of the files with `ast` and exec'd with stubs (no torchvision, no CUDA; `.half()`
and `.cuda()` are no-ops, so the reference net stays float32 on the CPU).

For each script it prints the max relative error (max |ours - theirs| / max |theirs| per tensor,
the max over tensors) of:
  - the whitening init from the same images (their init vs our init_from_data);
  - logits in train and eval mode and the gradients of the same loss (sum, label smoothing 0.2),
    our net starting from their state_dict via init_from (bound 1e-5);
  - TTA level 2: their infer() against our tta_logits on the same net;
  - the lr of every parameter group at every step, the whitening bias's trained/frozen steps, and
    for airbench94 the Lookahead decay at every step and one Lookahead update on the same weights.
The optimizer steps themselves (Muon, SGD) are compared by scripts/check_reference.py's optimizer part.
Exit status 1 if any bound is exceeded.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import math
import sys
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

BOUND = 1e-5  # logits and gradients, float32
EXACT = 0.0  # lr multipliers and decays: the same float arithmetic


# --------------------------------------------------------------------------- loading the reference
def _source(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _exec_defs(tree: ast.Module, names: set[str], namespace: dict) -> dict:
    """Exec the top-level classes, functions and assignments named in `names` (in file order)."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names:
            # drop decorators (@torch.compile on the Newton-Schulz function): not needed on a CPU
            node.decorator_list = []
            code = compile(ast.Module(body=[node], type_ignores=[]), "<reference>", "exec")
            exec(code, namespace)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in names for t in node.targets):
            exec(compile(ast.Module(body=[node], type_ignores=[]), "<reference>", "exec"), namespace)
    return namespace


def _main_of(tree: ast.Module) -> ast.FunctionDef:
    return next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")


def _statements(fn: ast.FunctionDef, pick) -> list[ast.stmt]:
    """Statements anywhere inside `fn` (nested loops included) for which pick(node) is true."""
    return [n for n in ast.walk(fn) if isinstance(n, ast.stmt) and n is not fn and pick(n)]


def _assigns(fn: ast.FunctionDef, targets: set[str]) -> list[ast.stmt]:
    return [
        n
        for n in fn.body
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id in targets for t in n.targets)
    ]


def _run(stmts: list[ast.stmt], namespace: dict) -> dict:
    exec(compile(ast.Module(body=stmts, type_ignores=[]), "<reference main>", "exec"), namespace)
    return namespace


def _base_namespace() -> dict:
    return {"torch": torch, "nn": nn, "F": F, "ceil": math.ceil, "__name__": "reference"}


@contextlib.contextmanager
def _cpu_float32():
    """The scripts call .half() and .cuda() on their nets: keep float32 on the CPU instead."""
    half, cuda = nn.Module.half, nn.Module.cuda
    nn.Module.half = lambda self: self
    nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        nn.Module.half, nn.Module.cuda = half, cuda


class _Loader:
    """Stands in for CifarLoader where main() only asks its length (drop_last: 50,000 // batch)."""

    def __init__(self, batch_size: int, n: int = 50_000):
        self.n = n // batch_size

    def __len__(self):
        return self.n


# --------------------------------------------------------------------------- ours
def _compose(experiment: str) -> object:
    from optbench.config import compose

    return compose([f"experiment={experiment}", "model.dtype=fp32", "trainer.device=cpu"])


def _our_model(cfg):
    from omegaconf import OmegaConf

    from optbench.models import build_model

    return build_model(OmegaConf.to_container(cfg.model, resolve=True))


def _load_into(model: nn.Module, state_dict: dict) -> str:
    """optbench.models.init_from (contract C5) when present; else the same translation + strict load."""
    import optbench.models as models

    init_from = getattr(models, "init_from", None)
    if init_from is not None:
        init_from(model, state_dict)
        return "optbench.models.init_from"
    model.load_state_dict(model.translate_state_dict(state_dict), strict=True)
    return "translate_state_dict + load_state_dict (init_from not on this branch)"


def _our_optimizer(cfg, model):
    """build_optimizer_from_config on the preset's block; Muon keys this branch's Muon lacks are
    dropped with a note (they do not affect lrs)."""
    from optbench.confdir import as_dict
    from optbench.optim import build_optimizer_from_config
    from optbench.optim.registry import OPTIMIZERS

    block = as_dict(cfg.optimizer)
    note = ""
    spec = OPTIMIZERS[block["name"]]
    missing = [
        k
        for k in ("momentum_form", "ns_norm", "ns_dtype", "scale_rule", "weight_renorm")
        if k in block and k not in spec.accepts
    ]
    if missing:
        note = f" (this branch's Muon lacks {missing}: dropped for the lr comparison)"
        for k in missing:
            block.pop(k)
    return build_optimizer_from_config(block, model), note


def _our_lrs(cfg, optimizer, steps: int) -> list[list[float]]:
    """Every group's lr at every step, set by the Trainer's own set_lr."""
    from optbench.optim.groups import GroupCourse
    from optbench.schedules import build_schedule_from_config
    from optbench.train.loop import Trainer

    for g in optimizer.param_groups:
        g.setdefault("base_lr", g["lr"])
    fake = types.SimpleNamespace(
        schedule=build_schedule_from_config(cfg.scheduler, steps),
        group_course=GroupCourse.of(optimizer, steps),
        optimizer=optimizer,
        momentum_schedule=None,
    )
    out = []
    for t in range(steps):
        Trainer.set_lr(fake, t)
        out.append([g["lr"] for g in optimizer.param_groups])
    return out, fake.group_course


# --------------------------------------------------------------------------- comparisons
def rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.detach().double(), theirs.detach().double()
    scale = theirs.abs().max().item()
    diff = (ours - theirs).abs().max().item()
    return diff / scale if scale > 0 else diff


def _images(n: int, seed: int) -> torch.Tensor:
    """Normalised CIFAR-like images: smooth, channel-correlated (a realistic whitening problem)."""
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.randn(n, 1, 8, 8, generator=g), size=32, mode="bilinear", align_corners=False)
    return torch.cat(
        [
            base,
            0.8 * base + 0.3 * torch.randn(n, 1, 32, 32, generator=g),
            -0.5 * base + 0.5 * torch.randn(n, 1, 32, 32, generator=g),
        ],
        1,
    )


class Report:
    def __init__(self):
        self.failed = False

    def line(self, what: str, value: float, bound: float, note: str = "") -> None:
        ok = value <= bound
        self.failed |= not ok
        print(f"  {what:<58} {value:.3e}  (bound {bound:.0e}) {'ok' if ok else 'FAIL'}{note}")


def _forward_checks(rep: Report, ref_net, ours, ref_forward, names: dict, images: torch.Tensor) -> None:
    """Logits (train, eval) and gradients from identical weights; BN running stats after the train pass."""
    torch.manual_seed(0)
    x = images[:32].contiguous(memory_format=torch.channels_last)  # the scripts' loaders' layout
    y = torch.arange(len(x)) % 10
    errs = {}
    for mode in ("train", "eval"):
        ref_net.train(mode == "train")
        ours.train(mode == "train")
        ref_net.zero_grad(set_to_none=True)
        ours.zero_grad(set_to_none=True)
        theirs_out = ref_forward(x)
        ours_out = ours(x)
        errs[mode] = rel_err(ours_out, theirs_out)
        if mode == "train":
            F.cross_entropy(theirs_out, y, label_smoothing=0.2, reduction="sum").backward()
            F.cross_entropy(ours_out, y, label_smoothing=0.2, reduction="sum").backward()
            ref_params = dict(ref_net.named_parameters())
            grads = [rel_err(p.grad, ref_params[names[n]].grad) for n, p in ours.named_parameters() if p.requires_grad]
            missing = [n for n, p in ours.named_parameters() if p.requires_grad and p.grad is None]
            assert not missing, missing
            ref_buffers = dict(ref_net.named_buffers())
            stats = [rel_err(b, ref_buffers[names[n]]) for n, b in ours.named_buffers() if b.is_floating_point()]
    rep.line("logits, train mode", errs["train"], BOUND)
    rep.line("logits, eval mode (running stats after one train pass)", errs["eval"], BOUND)
    rep.line(f"gradients, loss sum + label smoothing 0.2 ({len(grads)} tensors)", max(grads), BOUND)
    rep.line("BatchNorm running statistics after the train pass", max(stats), BOUND)


def _tta_check(rep: Report, ns: dict, ours: nn.Module, images: torch.Tensor) -> None:
    """Their infer(model, loader, tta_level=2) against our tta_logits on the same net and images."""
    from optbench.tasks.image_classification import tta_logits

    loader = types.SimpleNamespace(
        images=images[:16].contiguous(memory_format=torch.channels_last), normalize=lambda x: x
    )
    theirs = ns["infer"](ours, loader, tta_level=2)
    ours.eval()
    with torch.no_grad():
        mine = tta_logits(ours, loader.images, 2)
    rep.line("TTA level 2 logits (their infer vs our tta_logits)", rel_err(mine, theirs), BOUND)


def _key_map(ours: nn.Module, ref_state: dict) -> dict:
    """our name -> their name (through our translate_state_dict)."""
    translated = ours.translate_state_dict({k: k for k in ref_state})
    return {ours_key: theirs_key for ours_key, theirs_key in translated.items()}


def check_legacy(path: Path, rep: Report) -> None:
    print(f"airbench94 vs {path}")
    tree = _source(path)
    ns = _exec_defs(
        tree,
        {
            "hyp",
            "Flatten",
            "Mul",
            "BatchNorm",
            "Conv",
            "ConvGroup",
            "make_net",
            "get_patches",
            "get_whitening_parameters",
            "init_whitening_conv",
            "LookaheadState",
            "infer",
        },
        _base_namespace(),
    )
    torch.manual_seed(1)
    with _cpu_float32():
        ref_net = ns["make_net"]()  # channels_last, as the script (and our preset's model)
    images = _images(200, seed=2)

    cfg = _compose("airbench94")
    ours = _our_model(cfg)
    ns["init_whitening_conv"](ref_net[0], images)
    ours.init_from_data(images)
    rep.line("whitening init from the same images", rel_err(ours.whiten.weight, ref_net[0].weight), EXACT)

    state = {k: v.clone() for k, v in ref_net.state_dict().items()}
    how = _load_into(ours, state)
    print(f"  (their state_dict loaded with {how})")
    _forward_checks(rep, ref_net, ours, ref_net, _key_map(ours, state), images)
    _tta_check(rep, ns, ours, images)

    # main()'s hyperparameter arithmetic, lr schedule, lookahead schedule and whitening-bias freeze
    main = _main_of(tree)
    ns.update(train_loader=_Loader(ns["hyp"]["opt"]["batch_size"]))
    _run(
        _assigns(
            main, {"batch_size", "epochs", "momentum", "kilostep_scale", "lr", "wd", "lr_biases", "total_train_steps"}
        ),
        ns,
    )
    T = ns["total_train_steps"]
    print(f"  total_train_steps = {T} (preset trainer.max_steps = {cfg.trainer.max_steps})")
    rep.line("steps: |preset - script|", abs(cfg.trainer.max_steps - T), EXACT)
    ns["model"] = ref_net
    _run(_assigns(main, {"norm_biases", "other_params", "param_configs"}), ns)
    _run([n for n in main.body if isinstance(n, ast.FunctionDef) and n.name == "get_lr"], ns)
    _run(_assigns(main, {"alpha_schedule"}), ns)

    ref_names = {id(p): n for n, p in ref_net.named_parameters()}
    names = _key_map(ours, state)
    opt, note = _our_optimizer(cfg, ours)
    ours_lrs, course = _our_lrs(cfg, opt, T)
    # each of our groups vs the script's group holding the same tensors (by name)
    ref_group_of = {}
    for gi, pc in enumerate(ns["param_configs"]):
        for p in pc["params"]:
            ref_group_of[ref_names[id(p)]] = gi
    worst = 0.0
    for t in range(T):
        for gi, g in enumerate(opt.param_groups):
            for n in g["param_names"]:
                theirs = ns["param_configs"][ref_group_of[names[n]]]["lr"] * ns["get_lr"](t)
                worst = max(worst, abs(ours_lrs[t][gi] - theirs) / theirs)
    rep.line(f"lr of every parameter at every step ({T} steps)", worst, EXACT, note)
    decays = [
        abs(g["weight_decay"] - ns["param_configs"][ref_group_of[names[g["param_names"][0]]]]["weight_decay"])
        for g in opt.param_groups
    ]
    rep.line("weight_decay of every group", max(decays), EXACT)
    # whitening bias: the script sets requires_grad = (epoch < whiten_bias_epochs) per epoch
    per_epoch = len(ns["train_loader"])
    theirs_trained = [t // per_epoch < ns["hyp"]["opt"]["whiten_bias_epochs"] for t in range(T)]
    ours_trained = _bias_trained(course, opt, T)
    rep.line(
        "whitening bias trained at step t: mismatching steps",
        sum(a != b for a, b in zip(ours_trained, theirs_trained)),
        EXACT,
    )

    from optbench.train.averaging import build_averager

    look = build_averager(cfg.trainer.averaging, ours, T)
    alpha = ns["alpha_schedule"]
    rep.line("lookahead decay at every step", max(abs(look.decay_at(t) - alpha[t].item()) for t in range(T + 1)), EXACT)
    # one update (and the final decay-1 one) from the same slow and live weights
    _load_into(ours, ref_net.state_dict())  # the same slow weights (BN statistics included) on both sides
    ref_state = ns["LookaheadState"](ref_net)
    look = build_averager(cfg.trainer.averaging, ours, T)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, v in ours.state_dict().items():
            if v.is_floating_point():
                noise = torch.randn(v.shape, generator=g)
                v.add_(noise)
                ref_net.state_dict()[names[n]].add_(noise)
    ref_state.update(ref_net, decay=alpha[5].item())
    look.update(5)
    live = ref_net.state_dict()
    rep.line(
        "Lookahead update at step 5 (weights and BN buffers)",
        max(rel_err(v, live[names[k]]) for k, v in ours.state_dict().items() if v.is_floating_point()),
        EXACT,
    )


def _bias_trained(course, opt, steps: int) -> list[bool]:
    """Whether our loop lets the whitening bias's gradient through at step t (GroupCourse)."""
    index = next(i for i, g in enumerate(opt.param_groups) if "whiten.bias" in g["param_names"])
    after = dict(course.frozen).get(index) if course is not None else None
    return [after is None or t < after for t in range(steps)]


def check_muon(path: Path, rep: Report) -> None:
    print(f"airbench94_muon vs {path}")
    tree = _source(path)
    ns = _exec_defs(tree, {"BatchNorm", "Conv", "ConvGroup", "CifarNet", "infer"}, _base_namespace())
    torch.manual_seed(1)
    with _cpu_float32():
        ref_net = ns["CifarNet"]().to(memory_format=torch.channels_last)  # as the script's __main__
        ref_net.reset()
    images = _images(200, seed=2)

    cfg = _compose("airbench94_muon")
    ours = _our_model(cfg)
    ref_net.init_whiten(images)
    ours.init_from_data(images)
    rep.line("whitening init from the same images", rel_err(ours.whiten.weight, ref_net.whiten.weight), EXACT)

    state = {k: v.clone() for k, v in ref_net.state_dict().items()}
    how = _load_into(ours, state)
    print(f"  (their state_dict loaded with {how})")
    _forward_checks(rep, ref_net, ours, lambda x: ref_net(x, whiten_bias_grad=True), _key_map(ours, state), images)
    _tta_check(rep, ns, ours, images)

    main = _main_of(tree)
    ns.update(model=ref_net)
    _run(_assigns(main, {"batch_size", "bias_lr", "head_lr", "wd"}), ns)
    ns["train_loader"] = _Loader(ns["batch_size"])
    _run(
        _assigns(
            main, {"total_train_steps", "whiten_bias_train_steps", "filter_params", "norm_biases", "param_configs"}
        ),
        ns,
    )
    T, W = ns["total_train_steps"], ns["whiten_bias_train_steps"]
    print(
        f"  total_train_steps = {T}, whiten_bias_train_steps = {W} (preset trainer.max_steps = {cfg.trainer.max_steps})"
    )
    rep.line("steps: |preset - script|", abs(cfg.trainer.max_steps - T), EXACT)
    opt1 = types.SimpleNamespace(param_groups=[dict(pc, initial_lr=pc["lr"]) for pc in ns["param_configs"]])
    opt2 = types.SimpleNamespace(param_groups=[{"params": ns["filter_params"], "lr": 0.24, "initial_lr": 0.24}])
    # the lr statements of the training loop, exec'd as they are at each step
    lr_loops = _statements(main, lambda n: isinstance(n, ast.For) and "optimizer1.param_groups" in ast.unparse(n.iter))
    muon_lr = [n for n in ast.walk(main) if isinstance(n, ast.Call) and ast.unparse(n.func) == "Muon"]
    opt2.param_groups[0]["lr"] = opt2.param_groups[0]["initial_lr"] = ast.literal_eval(
        next(k.value for k in muon_lr[0].keywords if k.arg == "lr")
    )

    ref_names = {id(p): n for n, p in ref_net.named_parameters()}
    ref_group_of = {}
    for gi, g in enumerate(opt1.param_groups + opt2.param_groups):
        for p in g["params"]:
            ref_group_of[ref_names[id(p)]] = gi
    names = _key_map(ours, state)
    opt, note = _our_optimizer(cfg, ours)
    ours_lrs, course = _our_lrs(cfg, opt, T)
    worst = 0.0
    for t in range(T):
        _run(lr_loops, {**ns, "optimizer1": opt1, "optimizer2": opt2, "step": t})
        ref_groups = opt1.param_groups + opt2.param_groups
        for gi, g in enumerate(opt.param_groups):
            for n in g["param_names"]:
                if n == "whiten.bias" and t >= W:
                    continue  # the script's lr goes negative there, unused: the bias has no gradient
                theirs = ref_groups[ref_group_of[names[n]]]["lr"]
                worst = max(
                    worst,
                    abs(ours_lrs[t][gi] - theirs) / max(abs(theirs), 1e-300) if theirs != 0 else abs(ours_lrs[t][gi]),
                )
    rep.line(f"lr of every parameter at every step ({T} steps)", worst, EXACT, note)
    ref_groups = opt1.param_groups + opt2.param_groups
    decays = [
        abs(g["weight_decay"] - ref_groups[ref_group_of[names[g["param_names"][0]]]].get("weight_decay", 0.0))
        for g in opt.param_groups
    ]
    rep.line("weight_decay of every group", max(decays), EXACT)
    theirs_trained = [t < W for t in range(T)]  # forward(whiten_bias_grad=(step < whiten_bias_train_steps))
    rep.line(
        "whitening bias trained at step t: mismatching steps",
        sum(a != b for a, b in zip(_bias_trained(course, opt, T), theirs_trained)),
        EXACT,
    )


def main(reference_path) -> int:
    root = Path(reference_path)
    rep = Report()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    check_legacy(root / "legacy" / "airbench94.py", rep)
    check_muon(root / "airbench94_muon.py", rep)
    print("all within bounds" if not rep.failed else "SOME CHECKS FAILED")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="checkout of KellerJordan/cifar10-airbench")
    sys.exit(main(parser.parse_args().reference))
