"""Train a small CNN on scikit-learn's bundled 8×8 digits with dualtype's ModularSGD (< 1 min).

    python examples/train_cnn.py [--epochs 20] [--lr 0.1] [--optimizer {dualtype,adamw}]

Conv2d weights ``[out, in, 3, 3]`` take the ``conv2d`` norm: each of the 9 kernel slices is
orthogonalized (all in one batched call) and scaled by (1/9)·√(out/in); the classifier
``rms->rms``, biases ``rms``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_mlp import train  # noqa: E402  (same loop, data and schedule)


def build_model(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.GELU(),
        nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),   # 8x8 -> 4x4
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # -> 2x2
        nn.Flatten(), nn.Linear(8 * width, 10),
    )


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description="CNN on sklearn digits with dualtype")
    p.add_argument("--optimizer", choices=("dualtype", "adamw"), default="dualtype")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--lr", type=float, default=None, help="default: dualtype 0.1, adamw 3e-3")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.lr = args.lr if args.lr is not None else (0.1 if args.optimizer == "dualtype" else 3e-3)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    acc = train(args, build_model(args.width))
    print(f"{args.optimizer}: test accuracy {acc:.4f} ({time.perf_counter() - t0:.1f} s)")
    return acc


if __name__ == "__main__":
    main()
