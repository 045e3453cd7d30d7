"""Optimizer step time and state memory on one fixed model, relative to AdamW.

    .venv/bin/python scripts/bench_optimizers.py                      # CPU, every optimizer
    .venv/bin/python scripts/bench_optimizers.py --device cuda --width 1024
    .venv/bin/python scripts/bench_optimizers.py --only adamw,muon,soap

The model is an MLP of `depth` square (width x width) layers with LayerNorm and a 10-way head, so
every role (matrix, scalar, head) is present. Gradients come from one fixed batch; the timed region
is optimizer.step() alone (L-BFGS: step(closure), which includes its forward/backward passes).
State bytes are the tensors in optimizer.state_dict()["state"], as in summary.json.

Then the step-time ratios against torch's own implementations on the same parameters and the same
gradients (issue 15): our AdamW / torch.optim.AdamW(fused=True) (and / foreach=True), and our Muon
on the model's matrices / torch.optim.Muon(adjust_lr_fn="original") on copies of them. The two
sides alternate step by step (A B B A ...) so drift on a shared machine hits both; each figure is
the median. One thread by default (--threads).

    .venv/bin/python scripts/bench_optimizers.py --ratios-only --rounds 400
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from optbench.optim import OPTIMIZERS, build_optimizer
from optbench.train.memory import optimizer_state_bytes


class Net(nn.Module):
    def __init__(self, width: int, depth: int):
        super().__init__()
        self.body = nn.Sequential(
            *[m for _ in range(depth) for m in (nn.Linear(width, width), nn.LayerNorm(width), nn.GELU())]
        )
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.body(x))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(name: str, args, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = Net(args.width, args.depth).to(device)
    x = torch.randn(args.batch, args.width, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    opt = build_optimizer(name, model)

    def closure():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        return loss

    closure()
    grads = [p.grad.detach().clone() for p in model.parameters()]
    needs_closure = OPTIMIZERS[name].needs_closure
    times = []
    for i in range(args.warmup + args.steps):
        if not needs_closure:
            for p, g in zip(model.parameters(), grads):
                p.grad = g.clone()
        sync(device)
        start = time.perf_counter()
        opt.step(closure) if needs_closure else opt.step()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - start)
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return {
        "name": name,
        "source": OPTIMIZERS[name].source,
        "ms": 1e3 * statistics.median(times),
        "state": optimizer_state_bytes(opt),
        "param_bytes": param_bytes,
    }


def _interleaved(a, b, rounds: int, device: torch.device) -> tuple[float, float]:
    """Median seconds per step of two step functions, alternating A B B A ... after a warmup."""
    times = ([], [])
    for i in range(rounds + 10):
        for k in (0, 1) if i % 2 == 0 else (1, 0):
            sync(device)
            start = time.perf_counter()
            (a, b)[k]()
            sync(device)
            if i >= 10:
                times[k].append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def _twins(args, device):
    """Two identical models with identical fixed gradients."""
    torch.manual_seed(0)
    ours, ref = Net(args.width, args.depth).to(device), Net(args.width, args.depth).to(device)
    ref.load_state_dict(ours.state_dict())
    for p, q in zip(ours.parameters(), ref.parameters()):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    return ours, ref


def ratios(args, device: torch.device) -> list[str]:
    from optbench.optim import optimizer_defaults
    from optbench.optim.muon import Muon

    lines = []
    ours_model, ref_model = _twins(args, device)
    ours = build_optimizer("adamw", ours_model)
    kernel = (
        "fused" if ours.param_groups[0].get("fused") else ("foreach" if ours.param_groups[0].get("foreach") else "loop")
    )
    names = dict(ref_model.named_parameters())
    for flavour in ("fused", "foreach"):  # fresh group dicts: torch writes its settings into them
        groups = [
            {
                **{k: v for k, v in g.items() if k not in ("params", "fused", "foreach")},
                "params": [names[n] for n in g["param_names"]],
            }
            for g in ours.param_groups
        ]
        ref = torch.optim.AdamW(groups, **{flavour: True})
        a, b = _interleaved(ours.step, ref.step, args.rounds, device)
        lines.append(
            f"AdamW: ours ({kernel}) {1e3 * a:8.3f} ms   torch.optim.AdamW({flavour}=True) {1e3 * b:8.3f} ms"
            f"   ratio ours/torch-{flavour} {a / b:.3f}"
        )
    # the method's own noise floor: the same optimizer on both sides
    ctl_a, ctl_b = _twins(args, device)
    a, b = _interleaved(
        torch.optim.AdamW(ctl_a.parameters(), fused=True).step,
        torch.optim.AdamW(ctl_b.parameters(), fused=True).step,
        args.rounds,
        device,
    )
    lines.append(f"AdamW: control, torch fused vs torch fused: ratio {a / b:.3f} (what 'equal' reads as here)")
    ours_model, ref_model = _twins(args, device)
    hp = optimizer_defaults("muon")
    kw = dict(
        lr=hp["lr"],
        momentum=hp["momentum"],
        nesterov=hp["nesterov"],
        weight_decay=hp["weight_decay"],
        ns_steps=hp["ns_steps"],
        ns_coefficients=tuple(hp["ns_coefficients"]),
        eps=hp["eps"],
    )
    # the matrices Muon trains (the body's square weights; the head is a fallback role)
    mats = [(n, p) for n, p in ours_model.named_parameters() if p.ndim == 2 and not n.startswith("head")]
    ours = Muon([{"params": [p for _, p in mats], "role": "matrix"}], **kw)
    ref = torch.optim.Muon([dict(ref_model.named_parameters())[n] for n, _ in mats], adjust_lr_fn="original", **kw)
    a, b = _interleaved(ours.step, ref.step, args.rounds, device)
    shapes = sorted({tuple(p.shape) for _, p in mats})
    lines.append(
        f"Muon:  ours {1e3 * a:8.3f} ms   torch.optim.Muon {1e3 * b:8.3f} ms   ratio ours/torch {a / b:.3f}"
        f"   ({len(mats)} matrices of shape(s) {shapes}, ns_steps {kw['ns_steps']})"
    )
    # a transformer block's matrices: q, k, v, proj share a shape (one batched call), the MLP's two do not
    w = args.width
    block = [(w, w)] * 4 + [(4 * w, w), (w, 4 * w)]
    torch.manual_seed(0)
    mine = [nn.Parameter(torch.randn(s, device=device) * 0.02) for s in block]
    theirs = [nn.Parameter(p.detach().clone()) for p in mine]
    for p, q in zip(mine, theirs):
        p.grad = torch.randn_like(p)
        q.grad = p.grad.clone()
    a, b = _interleaved(
        Muon([{"params": mine, "role": "matrix"}], **kw).step,
        torch.optim.Muon(theirs, adjust_lr_fn="original", **kw).step,
        args.rounds,
        device,
    )
    lines.append(
        f"Muon:  ours {1e3 * a:8.3f} ms   torch.optim.Muon {1e3 * b:8.3f} ms   ratio ours/torch {a / b:.3f}"
        f"   (a transformer block's 6 matrices: 4 x {(w, w)}, {(4 * w, w)}, {(w, 4 * w)})"
    )
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated names (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--rounds", type=int, default=200, help="interleaved steps per side for the ratios")
    parser.add_argument("--ratios-only", action="store_true", help="only the ratios against torch's optimizers")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    header = (
        f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), model: {args.depth} x "
        f"Linear({args.width}) + LayerNorm, head"
    )
    if args.ratios_only:
        print(f"{header}; step time vs torch's own, medians of {args.rounds} interleaved steps")
        print("\n".join(ratios(args, device)))
        return
    # every yaml with a class (custom takes its class on the command line: --only would need a target)
    names = [n for n in args.only.split(",") if n] or sorted(n for n in OPTIMIZERS if OPTIMIZERS[n].target)
    if "adamw" not in names:
        names = ["adamw", *names]
    rows = {}
    for name in names:
        try:
            rows[name] = bench(name, args, device)
        except Exception as e:  # one optimizer failing must not hide the others
            rows[name] = {"name": name, "source": OPTIMIZERS[name].source, "error": f"{type(e).__name__}: {e}"}
    base = rows["adamw"]
    params = base["param_bytes"] / 4
    print(f"{header}; {params / 1e6:.2f}M params; batch {args.batch}; median of {args.steps} steps")
    print(
        f"| {'optimizer':<10} | {'source':<17} | {'step ms':>9} | {'x AdamW':>7} | {'state MB':>9} | "
        f"{'x AdamW':>7} | {'x params':>8} |"
    )
    print(f"|{'-' * 12}|{'-' * 19}|{'-' * 11}|{'-' * 9}|{'-' * 11}|{'-' * 9}|{'-' * 10}|")
    for name in names:
        r = rows[name]
        if "error" in r:
            print(f"| {name:<10} | {r['source']:<17} | failed: {r['error'][:60]}")
            continue
        print(
            f"| {name:<10} | {r['source']:<17} | {r['ms']:9.2f} | {r['ms'] / base['ms']:7.2f} | "
            f"{r['state'] / 2**20:9.2f} | {r['state'] / base['state']:7.2f} | {r['state'] / r['param_bytes']:8.2f} |"
        )
    print(f"\nstep time vs torch's own, medians of {args.rounds} interleaved steps")
    print("\n".join(ratios(args, device)))


if __name__ == "__main__":
    main()
