"""Train an MLP on scikit-learn's bundled 8×8 digits with dualtype's ModularSGD (< 1 min on CPU).

    python examples/train_mlp.py [--epochs 20] [--lr 0.26] [--optimizer {dualtype,adamw}]

Linear weights take the ``rms->rms`` norm (their update is √(out/in)·UVᵀ), biases ``rms``.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _data import digits  # noqa: E402

from dualtype.optim import ModularSGD  # noqa: E402

DEFAULT_LR = inspect.signature(ModularSGD).parameters["lr"].default


def build_model(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.GELU(),
                         nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(-1) == y).float().mean().item()
    model.train()
    return acc


def train(args: argparse.Namespace, model: nn.Module) -> float:
    x_tr, y_tr, x_te, y_te = digits(seed=args.seed)
    if args.optimizer == "dualtype":
        opt = ModularSGD(model, lr=args.lr)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    steps = args.epochs * ((len(y_tr) + args.batch - 1) // args.batch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)  # linear decay to 0
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(y_tr), generator=gen)
        for i in range(0, len(y_tr), args.batch):
            idx = perm[i:i + args.batch]
            loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % max(1, args.epochs // 5) == 0:
            print(f"epoch {epoch + 1:3d}  train loss {loss.item():.4f}  "
                  f"test accuracy {accuracy(model, x_te, y_te):.4f}")
    return accuracy(model, x_te, y_te)


def run(description: str, build: Callable[[int], nn.Module], size_flag: str, size: int,
        argv: list[str] | None = None) -> float:
    """Parse the shared flags (plus ``--<size_flag>``), train ``build(size)``, print accuracy."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--optimizer", choices=("dualtype", "adamw"), default="dualtype")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument(f"--{size_flag}", type=int, default=size, dest="size")
    p.add_argument("--lr", type=float, default=None, help="default: dualtype ModularSGD's own, adamw 3e-3")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.lr = args.lr if args.lr is not None else (DEFAULT_LR if args.optimizer == "dualtype" else 3e-3)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    acc = train(args, build(args.size))
    print(f"{args.optimizer}: test accuracy {acc:.4f} ({time.perf_counter() - t0:.1f} s)")
    return acc


def main(argv: list[str] | None = None) -> float:
    return run("MLP on sklearn digits with dualtype", build_model, "hidden", 128, argv)


if __name__ == "__main__":
    main()
