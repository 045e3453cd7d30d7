"""The Python half of scripts/gpu_check.sh: synthetic data in the real formats, the reference scripts'
patched copies, and the figures read back from each run's own output.

    python scripts/gpu_check_tools.py data --root DIR [--train-tokens N --val-tokens N --vocab V --cifar-train N ...]
    python scripts/gpu_check_tools.py patch-ref-gpt SRC DST --steps N
    python scripts/gpu_check_tools.py patch-ref-cifar SRC DST --epochs N
    python scripts/gpu_check_tools.py ours-gpt RUN_DIR --out JSON [--skip-steps K]
    python scripts/gpu_check_tools.py ref-gpt LOG --out JSON [--skip-steps K --tokens-per-step T]
    python scripts/gpu_check_tools.py ours-cifar RUN_DIR --steps-per-epoch E --out JSON
    python scripts/gpu_check_tools.py ref-cifar LOG --out JSON
    python scripts/gpu_check_tools.py summary OUT_DIR

Throughput is measured the same way on both sides: tokens between a step past the compile/warm-up
(--skip-steps) and the last step, over the train clock between them (validation excluded on both).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

REF_TOKENS_PER_STEP = 8 * 64 * 1024  # train_gpt_simple.py's batch_size: 524,288 tokens per step
VAL_NAME, TRAIN_NAME = "fineweb_val_000000.bin", "fineweb_train_{:06d}.bin"
SHARD_TOKENS = 100_000_000  # a real FineWeb shard's size; more train tokens go to further shards


# ------------------------------------------------------------------------------------------- data


def write_token_shards(root: Path, train_tokens: int, val_tokens: int, vocab: int, seed: int = 0) -> list[Path]:
    """Uniform random tokens in [0, vocab) in the speedrun's shard format (optbench.data.token_shards)."""
    from optbench.data.token_shards import write_shard

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = [write_shard(root / VAL_NAME, rng.integers(0, vocab, size=val_tokens, dtype=np.uint16))]
    left, i = train_tokens, 1
    while left > 0:
        n = min(left, SHARD_TOKENS)
        paths.append(write_shard(root / TRAIN_NAME.format(i), rng.integers(0, vocab, size=n, dtype=np.uint16)))
        left, i = left - n, i + 1
    return paths


def write_cifar(root: Path, n_train: int, n_test: int) -> Path:
    """CIFAR-10 python-batch files (optbench.data.synthetic), the format `task=cifar10` reads."""
    from optbench.data.synthetic import ensure_synthetic_cifar10

    return ensure_synthetic_cifar10(root, n_train=n_train, n_test=n_test)


def reference_cifar_files(cifar_root: Path, dst: Path) -> None:
    """The same images as airbench's own cache: cifar10/{train,test}.pt with NHWC uint8 images (its
    CifarLoader reads these when present, before it would ask torchvision to download)."""
    import torch

    from optbench.data.cifar10 import read_cifar10

    a = read_cifar10(cifar_root)
    dst.mkdir(parents=True, exist_ok=True)
    for split, x, y in (("train", a.train_images, a.train_labels), ("test", a.test_images, a.test_labels)):
        torch.save(
            {"images": x.permute(0, 2, 3, 1).contiguous(), "labels": y, "classes": list(a.label_names)},
            dst / f"{split}.pt",
        )


def reference_gpt_layout(shard_root: Path, workdir: Path) -> None:
    """train_gpt_simple.py globs data/fineweb10B/fineweb_{train,val}_*.bin relative to its cwd."""
    d = workdir / "data" / "fineweb10B"
    d.mkdir(parents=True, exist_ok=True)
    for p in sorted(shard_root.glob("fineweb_*.bin")):
        link = d / p.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(p.resolve())


# ------------------------------------------------------------------------------------------- patches


def patch(src: Path, dst: Path, replacements: list[tuple[str, str]]) -> None:
    """Copy src to dst with each exact line replaced; a line that is not there is an error (the
    reference changed: the check would silently measure something else)."""
    text = src.read_text()
    for old, new in replacements:
        pattern = re.compile(rf"^{re.escape(old)}$", re.M)
        if len(pattern.findall(text)) != 1:
            raise SystemExit(
                f"gpu_check: {src} does not contain the line {old.strip()!r} exactly once; "
                "the reference changed, update scripts/gpu_check_tools.py"
            )
        text = pattern.sub(new.replace("\\", r"\\"), text)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)


def patch_ref_gpt(src: Path, dst: Path, steps: int) -> None:
    patch(src, dst, [("    train_steps = 3250", f"    train_steps = {steps}  # gpu_check: was 3250")])


def patch_ref_cifar(src: Path, dst: Path, epochs: int) -> None:
    patch(
        src,
        dst,
        [
            (
                "    total_train_steps = ceil(8 * len(train_loader))",
                f"    total_train_steps = ceil({epochs} * len(train_loader))  # gpu_check: was 8 epochs",
            ),
            (
                "    accs = torch.tensor([main(run, model) for run in range(200)])",
                "    accs = torch.tensor([main(run, model) for run in range(1)])  # gpu_check: was 200 runs",
            ),
        ],
    )


# ------------------------------------------------------------------------------------------- reading


def read_jsonl(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill at the time limit
    return out


def steady_rate(points: list[tuple[int, float]], skip_steps: int) -> tuple[float, int, float]:
    """(steps per second, steps measured, seconds) between the first point at or past skip_steps and
    the last point. points: (step, train-clock seconds)."""
    pts = sorted(p for p in points if p[0] >= skip_steps)
    if len(pts) < 2 or pts[-1][1] <= pts[0][1]:
        return math.nan, 0, math.nan
    steps, secs = pts[-1][0] - pts[0][0], pts[-1][1] - pts[0][1]
    return steps / secs, steps, secs


def ours_gpt(run_dir: Path, skip_steps: int) -> dict:
    lines = [x for x in read_jsonl(run_dir / "metrics.jsonl") if x.get("type") == "train"]
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    tokens = {x["step"]: x.get("tokens") for x in lines}
    pts = [(x["step"], x["time_s"]) for x in lines]
    rate, steps, secs = steady_rate(pts, skip_steps)
    tps = math.nan
    if steps:
        first = min(s for s, _ in pts if s >= skip_steps)
        last = max(s for s, _ in pts)
        if tokens.get(first) is not None and tokens.get(last) is not None:
            tps = (tokens[last] - tokens[first]) / secs
    # MFU is linear in tokens/s: the loop's own MFU per token rate (task.flops_per_token / peak) carries over
    per = [x["mfu"] / x["tok_per_s"] for x in lines if x.get("mfu") and x.get("tok_per_s")]
    flops_over_peak = per[-1] if per else math.nan
    return {
        "tokens_per_s": tps,
        "steps_measured": steps,
        "seconds_measured": secs,
        "steps_done": max(tokens, default=0),
        "mfu": tps * flops_over_peak if per else math.nan,
        "mfu_per_token_per_s": flops_over_peak,
        "status": summary.get("status"),
        "compile_warmup_s": summary.get("compile_warmup_s"),
        "device": (summary.get("environment") or {}).get("device"),
    }


REF_GPT_LINE = re.compile(r"^step:(\d+)/(\d+)\s+(?:val_loss:\S+\s+)?train_time:([\d.]+)s")


def ref_gpt(log: Path, skip_steps: int, tokens_per_step: int = REF_TOKENS_PER_STEP) -> dict:
    """From the console lines 'step:k/T train_time:Xs ...'; the validation line at T (after a barrier) is
    the exact clock, the train lines are the host's view (no device sync in the reference's step)."""
    pts = {}
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        m = REF_GPT_LINE.match(line.strip())
        if m:
            pts[int(m[1])] = float(m[3])  # a val line at the same step comes after: the synced value wins
    rate, steps, secs = steady_rate(list(pts.items()), skip_steps)
    return {
        "tokens_per_s": rate * tokens_per_step if steps else math.nan,
        "steps_measured": steps,
        "seconds_measured": secs,
        "steps_done": max(pts, default=0),
    }


def ours_cifar(run_dir: Path, steps_per_epoch: int) -> dict:
    lines = [x for x in read_jsonl(run_dir / "metrics.jsonl") if x.get("type") == "train"]
    at = {x["step"]: x["time_s"] for x in lines}
    epochs = []
    e = 1
    while e * steps_per_epoch in at:
        start = at.get((e - 1) * steps_per_epoch, 0.0 if e == 1 else None)
        if start is None:
            break
        epochs.append(at[e * steps_per_epoch] - start)
        e += 1
    return _epochs(epochs)


def _epochs(epochs: list[float]) -> dict:
    # the first epoch carries one-off costs (the reference's also the whitening init): the steady figure
    # is the mean of the later ones when there are any
    steady = epochs[1:] or epochs
    return {"epoch_seconds": epochs, "seconds_per_epoch": float(np.mean(steady)) if steady else math.nan}


def ref_cifar(log: Path) -> dict:
    """airbench's printed table: | run | epoch | train_acc | val_acc | tta_val_acc | time_seconds |, time
    cumulative within a run; the run number is printed on a run's first line only. The last timed run
    counts, never the warm-up run (its times include compiling)."""
    runs: list[tuple[str, list[tuple[str, float]]]] = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.strip().startswith("|") or len(cells) != 6 or cells[0] == "run":
            continue
        run, epoch, time_s = cells[0], cells[1], cells[5]
        try:
            t = float(time_s)
        except ValueError:
            continue
        if run or not runs:
            runs.append((run, []))
        runs[-1][1].append((epoch, t))
    timed = [rows for label, rows in runs if label != "warmup"]  # the warm-up run's times include compiling
    last = [(e, t) for e, t in (timed[-1] if timed else []) if e.isdigit()]
    cum = [t for _, t in last]
    epochs = [b - a for a, b in zip([0.0] + cum[:-1], cum)]
    return {**_epochs(epochs), "runs_seen": len(runs)}


# ------------------------------------------------------------------------------------------- summary


def _fmt(v, fmt) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def _ratio(a, b) -> float:
    ok = all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)) and b > 0
    return a / b if ok else math.nan


def summary(out: Path) -> str:
    def load(name):
        p = out / f"{name}.json"
        return json.loads(p.read_text()) if p.exists() else None

    og, rg, oc, rc = load("ours_gpt"), load("ref_gpt"), load("ours_cifar"), load("ref_cifar")
    meta = load("meta") or {}
    lines = [
        f"# gpu_check: {meta.get('device', '?')}, {meta.get('date', '?')}",
        "",
        f"command: `{meta.get('command', 'scripts/gpu_check.sh')}`",
        "",
        "| measurement | optbench | reference | optbench / reference |",
        "|---|---:|---:|---:|",
    ]
    nan = math.nan
    o_tps, r_tps = (og or {}).get("tokens_per_s", nan), (rg or {}).get("tokens_per_s", nan)
    per = (og or {}).get("mfu_per_token_per_s", nan)
    r_mfu = r_tps * per if isinstance(per, float) and math.isfinite(per) and math.isfinite(r_tps) else nan
    o_mfu = (og or {}).get("mfu", nan)
    o_ep, r_ep = (oc or {}).get("seconds_per_epoch", nan), (rc or {}).get("seconds_per_epoch", nan)
    lines += [
        f"| nanogpt_track3 tokens/s ({meta.get('steps', '?')} steps, steady after step {meta.get('skip', '?')}) | "
        f"{_fmt(o_tps, ',.0f')} | {_fmt(r_tps, ',.0f')} | {_fmt(_ratio(o_tps, r_tps), '.3f')} |",
        f"| nanogpt_track3 MFU | {_fmt(o_mfu, '.3f')} | {_fmt(r_mfu, '.3f')} | {_fmt(_ratio(o_mfu, r_mfu), '.3f')} |",
        f"| airbench94_muon seconds per epoch ({meta.get('epochs', '?')} epochs) | {_fmt(o_ep, '.3f')} | "
        f"{_fmt(r_ep, '.3f')} | {_fmt(_ratio(o_ep, r_ep), '.3f')} |",
        "",
        "tokens/s: tokens over the train clock between the first logged step past the warm-up and the last step "
        "(validation untimed on both sides). Reference MFU uses optbench's FLOPs per token for the same model. "
        "seconds per epoch: the mean of the epochs after the first (the first carries one-off costs).",
    ]
    for name, part in (
        ("optbench nanogpt_track3", og),
        ("reference train_gpt_simple.py", rg),
        ("optbench airbench94_muon", oc),
        ("reference airbench94_muon.py", rc),
    ):
        note = (meta.get("notes") or {}).get(name)
        if part is None or note:
            lines.append(f"- {name}: {note or 'not run'}")
    text = "\n".join(lines) + "\n"
    (out / "gpu_check.md").write_text(text)
    return text


# ------------------------------------------------------------------------------------------- CLI


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("--root", type=Path, required=True)
    d.add_argument("--train-tokens", type=int, required=True)
    d.add_argument("--val-tokens", type=int, required=True)
    d.add_argument("--vocab", type=int, default=50304)
    d.add_argument("--cifar-train", type=int, default=50000)
    d.add_argument("--cifar-test", type=int, default=10000)
    d.add_argument("--ref-gpt-dir", type=Path)
    d.add_argument("--ref-cifar-dir", type=Path)
    for name in ("patch-ref-gpt", "patch-ref-cifar"):
        p = sub.add_parser(name)
        p.add_argument("src", type=Path)
        p.add_argument("dst", type=Path)
        p.add_argument("--steps", type=int, default=100)
        p.add_argument("--epochs", type=int, default=2)
    for name in ("ours-gpt", "ref-gpt", "ours-cifar", "ref-cifar"):
        p = sub.add_parser(name)
        p.add_argument("path", type=Path)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--skip-steps", type=int, default=10)
        p.add_argument("--steps-per-epoch", type=int, default=25)
        p.add_argument("--tokens-per-step", type=int, default=REF_TOKENS_PER_STEP)
    s = sub.add_parser("summary")
    s.add_argument("out", type=Path)
    a = ap.parse_args(argv)

    if a.cmd == "data":
        shards = a.root / "fineweb10B"
        write_token_shards(shards, a.train_tokens, a.val_tokens, a.vocab)
        write_cifar(a.root / "cifar10", a.cifar_train, a.cifar_test)
        if a.ref_gpt_dir:
            reference_gpt_layout(shards, a.ref_gpt_dir)
        if a.ref_cifar_dir:
            reference_cifar_files(a.root / "cifar10", a.ref_cifar_dir / "cifar10")
        print(
            f"gpu_check: data in {a.root} ({a.train_tokens:,} train + {a.val_tokens:,} val tokens, vocab {a.vocab}; "
            f"CIFAR-10 {a.cifar_train:,} + {a.cifar_test:,} images)"
        )
    elif a.cmd == "patch-ref-gpt":
        patch_ref_gpt(a.src, a.dst, a.steps)
    elif a.cmd == "patch-ref-cifar":
        patch_ref_cifar(a.src, a.dst, a.epochs)
    elif a.cmd == "summary":
        print(summary(a.out), end="")
    else:
        fn = {
            "ours-gpt": lambda: ours_gpt(a.path, a.skip_steps),
            "ref-gpt": lambda: ref_gpt(a.path, a.skip_steps, a.tokens_per_step),
            "ours-cifar": lambda: ours_cifar(a.path, a.steps_per_epoch),
            "ref-cifar": lambda: ref_cifar(a.path),
        }[a.cmd]
        result = fn()
        a.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(
            f"gpu_check: {a.cmd}: "
            + ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in result.items()
                if not isinstance(v, list)
            )
        )


if __name__ == "__main__":
    sys.path.insert(0, os.fspath(Path(__file__).resolve().parent.parent))  # the repo's optbench
    main(sys.argv[1:])
