"""The modular norm of an existing torch model: an ``nn.Sequential`` CNN, unchanged.

    python examples/wrap_torch_model.py [--steps 40] [--lr 0.3]

``dualtype.modules.modular(model, example=x)`` records one forward and reads each parameter's
role from the graph (conv2d for kernels, rms for BatchNorm gains and biases, rms->linf for the
layer that produces the output), a mass by role, and the target its update hits when the
whole model is dualized to modular norm ``lr``: ``target = lr · mass / M`` with M the mass of
the path through the layer (conv → BatchNorm → conv → BatchNorm → head). Any optimizer that steps
``p -= lr · targets[name] · dualize(g, norms[name])`` takes that modular step; the loop
below does so on a toy task (classify which quadrant of a random image is brightest).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import dualtype
from dualtype.modules import modular


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32 * 4, 4),
    )


def batch(gen: torch.Generator, n: int = 64):
    x = torch.randn(n, 3, 8, 8, generator=gen)
    y = torch.randint(4, (n,), generator=gen)
    rows, cols = (y // 2) * 4, (y % 2) * 4
    for i in range(n):  # brighten the labelled quadrant
        x[i, :, rows[i] : rows[i] + 4, cols[i] : cols[i] + 4] += 0.6
    return x, y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    model = cnn()
    gen = torch.Generator().manual_seed(args.seed)
    mn = modular(model, target=args.lr, example=batch(gen, 2)[0])
    print(mn, "\n")

    dualtype.typed(model)  # the same table: the norms modular() printed
    for step in range(args.steps + 1):
        x, y = batch(gen)
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with torch.no_grad():
            for name, p in model.named_parameters():  # the optimizer's contract, spelled out
                p -= mn.targets[name] * dualtype.dualize(p.grad, mn.norms[name])
        if step % 10 == 0:
            acc = (model(x).argmax(-1) == y).float().mean().item()
            print(f"step {step:3d}  loss {loss.item():.4f}  batch accuracy {acc:.2f}")


if __name__ == "__main__":
    main()
