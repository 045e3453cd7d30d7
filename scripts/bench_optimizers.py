"""Optimizer step time and state memory on one fixed model, relative to AdamW.

    .venv/bin/python scripts/bench_optimizers.py                      # CPU, every optimizer
    .venv/bin/python scripts/bench_optimizers.py --device cuda --width 1024
    .venv/bin/python scripts/bench_optimizers.py --only adamw,muon,soap

The model is an MLP of `depth` square (width x width) layers with LayerNorm and a 10-way head, so
every role (matrix, scalar, head) is present. Gradients come from one fixed batch; the timed region
is optimizer.step() alone (L-BFGS: step(closure), which includes its forward/backward passes).
State bytes are the tensors in optimizer.state_dict()["state"], as in summary.json.
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
        self.body = nn.Sequential(*[m for _ in range(depth)
                                    for m in (nn.Linear(width, width), nn.LayerNorm(width), nn.GELU())])
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
    return {"name": name, "source": OPTIMIZERS[name].source, "ms": 1e3 * statistics.median(times),
            "state": optimizer_state_bytes(opt), "param_bytes": param_bytes}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated names (default: all)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
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
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, model: {args.depth} x Linear({args.width}) + LayerNorm, head; "
          f"{params / 1e6:.2f}M params; batch {args.batch}; median of {args.steps} steps")
    print(f"| {'optimizer':<10} | {'source':<17} | {'step ms':>9} | {'x AdamW':>7} | {'state MB':>9} | "
          f"{'x AdamW':>7} | {'x params':>8} |")
    print(f"|{'-' * 12}|{'-' * 19}|{'-' * 11}|{'-' * 9}|{'-' * 11}|{'-' * 9}|{'-' * 10}|")
    for name in names:
        r = rows[name]
        if "error" in r:
            print(f"| {name:<10} | {r['source']:<17} | failed: {r['error'][:60]}")
            continue
        print(f"| {name:<10} | {r['source']:<17} | {r['ms']:9.2f} | {r['ms'] / base['ms']:7.2f} | "
              f"{r['state'] / 2**20:9.2f} | {r['state'] / base['state']:7.2f} | {r['state'] / r['param_bytes']:8.2f} |")


if __name__ == "__main__":
    main()
