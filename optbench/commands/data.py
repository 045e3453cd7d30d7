"""`optbench data <dataset>`: download and prepare datasets (each dataset's code owns its step)."""

from __future__ import annotations

from optbench.errors import ArgumentParser


def main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="optbench data", description=__doc__)
    sub = parser.add_subparsers(dest="dataset", required=True)

    p = sub.add_parser("cifar10", help="CIFAR-10 python archive -> checksum -> extract -> uint8 cache")
    p.add_argument("--root", default="data/cifar10", help="target directory (default: data/cifar10)")

    p = sub.add_parser("fineweb10B", help="pre-tokenised FineWeb GPT-2 shards from the HF hub")
    p.add_argument("--shards", type=int, default=8, help="train shards of 100M tokens (default 8)")
    p.add_argument("--root", default=None, help="default: data/fineweb10B (data/finewebedu10B with --edu)")
    p.add_argument("--edu", action="store_true", help="the FineWeb-Edu variant")

    args = parser.parse_args(argv)
    if args.dataset == "cifar10":
        from optbench.data.cifar10_download import download_cifar10

        download_cifar10(args.root)
    else:
        from optbench.data.fineweb import download_fineweb

        root = args.root or ("data/finewebedu10B" if args.edu else "data/fineweb10B")
        download_fineweb(root, shards=args.shards, edu=args.edu)
