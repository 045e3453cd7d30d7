"""Side-by-side check of experiment=nanogpt_track3 against the reference script, on a CPU.

    python scripts/fidelity_nanogpt.py --reference PATH

PATH is a modded-nanogpt checkout (or its records/track_3_optimization/train_gpt_simple.py). The
reference needs CUDA and torchrun at import, so only the definitions compared here are taken from
its source at run time (parsed with ast; "cuda" devices become "cpu", pinned memory is off,
torch.distributed is a stub giving the rank and world size): nothing of it is copied into optbench.

Prints the max errors of
  (a) same weights (the reference's state_dict through optbench.models.init_from): logits before
      the cap, the summed loss and every gradient, float32, train and eval mode (relative error =
      max |ours - ref| / max |ref| per tensor), plus the same in the bf16 the benchmark runs in;
  (b) the lr multiplier and Muon momentum at every step 0..T-1 against the reference set_hparams;
  (c) every micro-batch of a few hundred steps at world size 1 and 8 against the reference
      generator, on shards written here in the real format, with a shard switch at its edge case;
  (d) the evaluation steps against the reference's validation condition.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REF_FILE = Path("records/track_3_optimization/train_gpt_simple.py")
MODEL_DEFS = ("RMSNorm", "Linear", "Rotary", "CausalSelfAttention", "MLP", "Block", "GPT")
DATA_DEFS = ("_load_data_shard", "distributed_data_generator")


# --------------------------------------------------------------------------- loading the reference
def reference_file(path) -> Path:
    path = Path(path)
    return path if path.is_file() else path / REF_FILE


class _ToCPU(ast.NodeTransformer):
    """ "cuda" -> "cpu" and pin_memory=True -> False: the reference's data path on a CPU."""

    def visit_Constant(self, node):
        if node.value == "cuda":
            return ast.copy_location(ast.Constant("cpu"), node)
        return node

    def visit_keyword(self, node):
        self.generic_visit(node)
        if node.arg == "pin_memory":
            node.value = ast.Constant(False)
        return node


class FakeDist(types.SimpleNamespace):
    """torch.distributed as the reference's data generator uses it."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        super().__init__(get_rank=lambda: rank, get_world_size=lambda: world_size)


def load_reference(path, names, extra: dict | None = None) -> dict:
    """Exec the top-level definitions `names` of the reference file in a fresh namespace."""
    tree = ast.parse(reference_file(path).read_text())
    defs = [n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in names]
    found = {n.name for n in defs}
    if found != set(names):
        raise SystemExit(f"the reference lacks {sorted(set(names) - found)}")
    for node in defs:  # compile decorators (@torch.compile) are not needed for a comparison
        node.decorator_list = []
    module = _ToCPU().visit(ast.Module(body=defs, type_ignores=[]))
    ast.fix_missing_locations(module)
    ns = {
        "torch": torch,
        "nn": torch.nn,
        "F": F,
        "Tensor": torch.Tensor,
        "Path": Path,
        "dist": FakeDist(),
        **(extra or {}),
    }
    exec(compile(module, str(reference_file(path)), "exec"), ns)
    return ns


def _nodes(path):
    return list(ast.walk(ast.parse(reference_file(path).read_text())))


def reference_train_steps(path) -> int:
    for node in _nodes(path):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "train_steps" for t in node.targets
        ):
            return int(ast.literal_eval(node.value))
    raise SystemExit("no train_steps in the reference")


def reference_set_hparams(path, train_steps: int, groups: list[dict]):
    """The reference's set_hparams, writing into `groups` (dicts with initial_lr)."""
    fn = next(n for n in _nodes(path) if isinstance(n, ast.FunctionDef) and n.name == "set_hparams")
    module = ast.fix_missing_locations(ast.Module(body=[fn], type_ignores=[]))
    ns = {"train_steps": train_steps, "optimizers": [types.SimpleNamespace(param_groups=groups)]}
    exec(compile(module, "set_hparams", "exec"), ns)
    return ns["set_hparams"]


def reference_muon_momentum(path) -> float:
    """The reference Muon's default mu (its constructor is called without one)."""
    for node in _nodes(path):
        if isinstance(node, ast.ClassDef) and node.name == "Muon":
            init = next(n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
            names = [a.arg for a in init.args.args][-len(init.args.defaults) :]
            return float(ast.literal_eval(init.args.defaults[names.index("mu")]))
    raise SystemExit("no Muon class in the reference")


def reference_eval_rule(path):
    """step -> bool, from the reference loop's `val_step_freq = ...` and the `if` that uses it."""
    nodes = _nodes(path)
    freq = next(
        n.value
        for n in nodes
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "val_step_freq" for t in n.targets)
    )
    test = next(
        n.test
        for n in nodes
        if isinstance(n, ast.If) and any(isinstance(m, ast.Name) and m.id == "val_step_freq" for m in ast.walk(n.test))
    )
    freq_code = compile(ast.fix_missing_locations(ast.Expression(freq)), "freq", "eval")
    test_code = compile(ast.fix_missing_locations(ast.Expression(test)), "test", "eval")

    def due(step: int, train_steps: int) -> bool:
        env = {"step": step, "train_steps": train_steps}
        env["val_step_freq"] = eval(freq_code, env)
        return bool(eval(test_code, env))

    return due


# --------------------------------------------------------------------------- (a) the model
def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def compare_model(path, n_layer=2, n_embd=256, vocab=1024, seq_len=128, batch=4, seed=0) -> dict:
    from optbench.models import init_from
    from optbench.models.gpt_track3 import Track3GPT

    ns = load_reference(path, MODEL_DEFS)
    torch.manual_seed(seed)
    ref = ns["GPT"](vocab_size=vocab, num_layers=n_layer, model_dim=n_embd)
    with torch.no_grad():  # random everything (zero projections would hide half the network)
        for name, p in ref.named_parameters():
            if name.endswith("gains"):
                p.copy_(1 + 0.1 * torch.randn_like(p.float()))
            else:
                p.copy_(torch.randn_like(p.float()) * (1.0 if "embed" in name else 0.5 / p.size(-1) ** 0.5))
    ours = Track3GPT(vocab_size=vocab, n_layer=n_layer, n_embd=n_embd, max_seq_len=seq_len)
    with tempfile.TemporaryDirectory() as d:  # through a file, as trainer.init_from=PATH does
        torch.save(ref.state_dict(), Path(d) / "ref.pt")
        init_from(ours, Path(d) / "ref.pt")
    x = torch.randint(0, vocab, (batch, seq_len))
    y = torch.randint(0, vocab, (batch, seq_len))
    out = {}
    for precision in ("float32", "bfloat16"):
        if precision == "float32":  # the whole network in fp32 (the token table too)
            ref.float(), ours.float()
        else:  # the benchmark's own: bf16 table, bf16 activations, fp32 weights
            ref.embed.bfloat16(), ours.wte.bfloat16()
        for mode in ("train", "eval"):
            ref.train(mode == "train"), ours.train(mode == "train")
            caught = {}
            h1 = ref.proj.register_forward_hook(lambda m, i, o: caught.__setitem__("ref", o))
            h2 = ours.lm_head.register_forward_hook(lambda m, i, o: caught.__setitem__("ours", o))
            ref.zero_grad(), ours.zero_grad()
            ref_loss = ref(x, y)
            our_loss = F.cross_entropy(ours(x).flatten(0, 1), y.flatten(), reduction="sum")
            ref_loss.backward(), our_loss.backward()
            h1.remove(), h2.remove()
            ref_grads = ours.translate_state_dict({n: p.grad for n, p in ref.named_parameters()})
            grad_err = max(rel(p.grad, ref_grads[n]) for n, p in ours.named_parameters())
            out[(precision, mode)] = {
                "logits": rel(caught["ours"], caught["ref"]),
                "loss": rel(our_loss, ref_loss),
                "grads": grad_err,
            }
    return out


# --------------------------------------------------------------------------- (b) lr and momentum
def preset_config(overrides=()):
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "optbench" / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        return compose(config_name="config", overrides=["experiment=nanogpt_track3", *overrides])


def compare_schedule(path) -> dict:
    from optbench.schedules import build_momentum_schedule, build_schedule_from_config

    cfg = preset_config()
    T = int(cfg.trainer.max_steps)
    ref_T = reference_train_steps(path)
    groups = [{"initial_lr": 1.0, "lr": 1.0}]
    set_hparams = reference_set_hparams(path, ref_T, groups)
    ours = build_schedule_from_config(cfg.scheduler, T)
    momentum = build_momentum_schedule(cfg.optimizer.get("momentum_schedule"))
    ref_mu = reference_muon_momentum(path)
    lr_err = mu_err = 0.0
    for step in range(ref_T):
        set_hparams(step)
        lr_err = max(lr_err, abs(ours(step) - groups[0]["lr"]))
        our_mu = momentum.value(step) if momentum is not None else float(cfg.optimizer.momentum)
        mu_err = max(mu_err, abs(our_mu - ref_mu))
    return {"steps": ref_T, "preset_steps": T, "lr_max_abs": lr_err, "momentum_max_abs": mu_err}


def reference_hyperparameters(path) -> dict:
    """{role: {lr, weight_decay[, betas, eps]}} from the reference's AdamW(...) and Muon(...) calls:
    its AdamW groups are [embedding, output weight, all 1-D] in that order."""
    out = {}
    for node in _nodes(path):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("AdamW", "Muon")):
            continue
        kw = {
            k.arg: ast.literal_eval(k.value)
            for k in node.keywords
            if k.arg in ("lr", "betas", "eps", "weight_decay", "fused")
        }
        if node.func.id == "AdamW" and isinstance(node.args[0], ast.List):
            for role, group in zip(("embedding", "head", "scalar"), node.args[0].elts):
                pairs = (
                    [(k.arg, k.value) for k in group.keywords]
                    if isinstance(group, ast.Call)
                    else [(k.value, v) for k, v in zip(group.keys, group.values)]
                )  # dict(lr=...) or {"lr": ...}
                lr = next(ast.literal_eval(v) for k, v in pairs if k == "lr")
                out[role] = {
                    "lr": float(lr),
                    "weight_decay": kw["weight_decay"],
                    "betas": tuple(kw["betas"]),
                    "eps": kw["eps"],
                    "fused": bool(kw.get("fused", False)),
                }
        elif node.func.id == "Muon" and "lr" in kw:
            out["matrix"] = {"lr": kw["lr"], "weight_decay": kw["weight_decay"]}
    return out


def compare_optimizer_groups(path) -> dict:
    """Our optimizer's groups built from the preset (build_optimizer_from_config) on a small model:
    per role lr, decay (and AdamW betas / eps) against the reference's constructor calls."""
    from optbench.models.gpt_track3 import Track3GPT
    from optbench.optim import build_optimizer_from_config

    cfg = preset_config()
    model = Track3GPT(vocab_size=64, n_layer=1, n_embd=128, max_seq_len=16)
    note = ""
    try:
        opt = build_optimizer_from_config(cfg.optimizer, model)
    except TypeError:  # a Muon without the C2 keys (before helper H2's muon.py is merged): compare the rest
        from omegaconf import OmegaConf

        block = OmegaConf.to_container(cfg.optimizer, resolve=True)
        dropped = [k for k in ("momentum_form", "ns_norm", "ns_dtype", "scale_rule") if block.pop(k, None) is not None]
        opt = build_optimizer_from_config(OmegaConf.create(block), model)
        note = f" (this Muon lacks {', '.join(dropped)}: built without them)"
    ref = reference_hyperparameters(path)
    worst = 0.0
    for g in opt.param_groups:
        r = ref[g["role"]]
        diffs = [abs(g["lr"] - r["lr"]), abs(g["weight_decay"] - r["weight_decay"])]
        if g["role"] == "matrix":
            diffs.append(abs(g["momentum"] - reference_muon_momentum(path)))
        if "betas" in r:
            diffs += [abs(a - b) for a, b in zip(g["betas"], r["betas"])] + [abs(g["eps"] - r["eps"])]
            diffs.append(float(bool(g.get("fused")) != r["fused"]))  # the same AdamW kernel
        worst = max(worst, *diffs)
    return {"roles": sorted({g["role"] for g in opt.param_groups}), "max_abs": worst, "note": note}


# --------------------------------------------------------------------------- (c) the batches
def compare_batches(path, steps: int = 300, seq_len: int = 32, rows: int = 32, mbs: int = 4) -> dict:
    """rows sequences of seq_len per step (the benchmark: 512 x 1024) in micro-batches of mbs rows
    (the benchmark: 64); shard 0 ends exactly where the reference's rule moves on early."""
    from optbench.data.token_loader import TokenLoader, validation_tokens
    from optbench.data.token_shards import write_shard

    window = rows * seq_len
    rng = np.random.default_rng(0)
    lengths = [40 * window + 1, 57 * window + 500, 23 * window + window // 2, 300 * window]
    out = {}
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        for i, n in enumerate(lengths):
            write_shard(root / f"fineweb_train_{i + 1:06d}.bin", rng.integers(0, 50257, n))
        shards = sorted(root.glob("fineweb_train_*.bin"))
        cwd = os.getcwd()
        os.chdir(root)  # the reference globs relative to the working directory
        try:
            for world in (1, 8):
                mismatches = compared = 0
                for rank in range(world):
                    ns = load_reference(path, DATA_DEFS, {"dist": FakeDist(rank, world)})
                    gen = ns["distributed_data_generator"]("fineweb_train_*.bin", window, seq_len)
                    loader = TokenLoader(
                        shards, rows, seq_len, rows // (mbs * world), rank, world, order="modded_nanogpt"
                    )
                    for _ in range(steps):
                        ref_x, ref_y = next(gen)
                        micro = next(loader)
                        ref_micro = [
                            (ref_x[i * mbs : (i + 1) * mbs], ref_y[i * mbs : (i + 1) * mbs])
                            for i in range(len(ref_x) // mbs)
                        ]
                        compared += 1
                        same = len(micro) == len(ref_micro) and all(
                            torch.equal(a.long(), b.long()) and torch.equal(c.long(), e.long())
                            for (a, c), (b, e) in zip(micro, ref_micro)
                        )
                        mismatches += not same
                # the validation set: the reference draws one batch of val_tokens from the val shard
                # (each rank its contiguous share); ours is the first val_tokens + 1 tokens, in rows
                val_tokens = 20 * window
                write_shard(root / "fineweb_val_000000.bin", rng.integers(0, 50257, 3 * val_tokens))
                ref_rows = []
                for rank in range(world):
                    ns = load_reference(path, DATA_DEFS, {"dist": FakeDist(rank, world)})
                    vx, vy = next(ns["distributed_data_generator"]("fineweb_val_*.bin", val_tokens, seq_len))
                    ref_rows.append((vx.long(), vy.long()))
                val = torch.from_numpy(validation_tokens(root / "fineweb_val_000000.bin", val_tokens, seq_len))
                ours_x, ours_y = val[:-1].view(-1, seq_len), val[1:].view(-1, seq_len)
                val_same = torch.equal(torch.cat([r[0] for r in ref_rows]), ours_x) and torch.equal(
                    torch.cat([r[1] for r in ref_rows]), ours_y
                )
                out[world] = {
                    "steps_x_ranks": compared,
                    "mismatched": mismatches,
                    "last_shard": loader.shard,
                    "val_equal": val_same,
                }
        finally:
            os.chdir(cwd)
    return out


# --------------------------------------------------------------------------- (d) evaluation steps
def compare_eval_steps(path) -> dict:
    from optbench.train.cadence import eval_due

    cfg = preset_config()
    t = cfg.trainer
    T = reference_train_steps(path)
    due = reference_eval_rule(path)
    ref_steps = [s for s in range(T + 1) if due(s, T)]
    ours = [
        s
        for s in range(T + 1)
        if eval_due(s, T, t.eval_every, t.eval_every_late, t.eval_late_fraction, t.eval_at_start)
    ]
    return {
        "reference": len(ref_steps),
        "ours": len(ours),
        "equal": ref_steps == ours,
        "first": ours[:3],
        "late": [s for s in ours if s >= 0.9 * T][:3],
        "last": ours[-2:],
    }


def main(reference_path) -> int:
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    ok = True
    print(f"reference: {reference_file(reference_path)}")
    print("(a) same weights -> same outputs (max |ours - ref| / max |ref|), n_layer 2, n_embd 256, vocab 1024, seq 128")
    for (precision, mode), errs in compare_model(reference_path).items():
        bound = 1e-5 if precision == "float32" else None
        line = "  ".join(f"{k} {v:.2e}" for k, v in errs.items())
        verdict = "" if bound is None else ("  ok" if max(errs.values()) <= bound else "  FAIL")
        ok &= verdict != "  FAIL"
        print(f"    {precision:8s} {mode:5s}  {line}{verdict}")
    s = compare_schedule(reference_path)
    good = s["lr_max_abs"] == 0 and s["momentum_max_abs"] == 0 and s["steps"] == s["preset_steps"]
    ok &= good
    print(
        f"(b) steps 0..{s['steps'] - 1} (preset max_steps {s['preset_steps']}): lr multiplier max abs diff "
        f"{s['lr_max_abs']:.3g}, momentum max abs diff {s['momentum_max_abs']:.3g}{'  ok' if good else '  FAIL'}"
    )
    g = compare_optimizer_groups(reference_path)
    ok &= g["max_abs"] == 0
    print(
        f"(b) per-role lr / weight decay / Muon momentum / AdamW betas, eps, fused ({', '.join(g['roles'])}) "
        f"against the reference's constructors: max abs diff {g['max_abs']:.3g}"
        f"{'  ok' if g['max_abs'] == 0 else '  FAIL'}{g['note']}"
    )
    for world, r in compare_batches(reference_path).items():
        good = r["mismatched"] == 0 and r["val_equal"]
        ok &= good
        print(
            f"(c) world size {world}: {r['steps_x_ranks']} (step, rank) batches compared, {r['mismatched']} "
            f"differ; shards switched up to shard {r['last_shard']}; validation tokens identical "
            f"{r['val_equal']}{'  ok' if good else '  FAIL'}"
        )
    e = compare_eval_steps(reference_path)
    ok &= e["equal"]
    print(
        f"(d) evaluation steps: reference {e['reference']}, ours {e['ours']}, identical {e['equal']} "
        f"(first {e['first']}, late {e['late']}, last {e['last']}){'  ok' if e['equal'] else '  FAIL'}"
    )
    print("all within bounds" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="modded-nanogpt checkout or train_gpt_simple.py")
    sys.exit(main(parser.parse_args().reference))
