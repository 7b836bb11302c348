"""dualtype in one minute: a raw gradient update is refused; a dualized one trains.

    python examples/quickstart.py

A small MLP learns a fixed random teacher network (regression). The update
``p -= lr * dualize(p.grad)`` is steepest descent under each layer's norm (rms->rms for the
Linear weights, rms for the biases): every step moves each weight by exactly ``lr`` in its norm.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import dualtype


def mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(16, width), nn.GELU(), nn.Linear(width, width), nn.GELU(), nn.Linear(width, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=0.1, help="step size in each layer's norm")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    teacher, model = mlp(32).eval(), mlp(64)
    x_train, x_val = torch.randn(2048, 16), torch.randn(512, 16)
    with torch.no_grad():
        y_train, y_val = teacher(x_train), teacher(x_val)

    print(dualtype.typed(model))  # every .grad becomes Dual[norm of its parameter]

    # 1. The type error of docs/design.md §1: subtracting a gradient from the weights.
    nn.functional.mse_loss(model(x_train[:64]), y_train[:64]).backward()
    print(f"\n{type(model[0].weight.grad).__name__} {dualtype.norm_of(model[0].weight.grad)}: "
          "trying `p -= lr * p.grad` ...")
    try:
        with torch.no_grad():
            for p in model.parameters():
                p -= args.lr * p.grad  # noqa: DTL001 (refused on purpose)
        raise SystemExit("BUG: the raw update was accepted")
    except dualtype.DualityError as e:
        print(f"refused, as it should be:\n  {type(e).__name__}: {e}\n")

    # 2. The same loop with the gradient mapped to the primal space first.
    print("training with `p -= lr * dualize(p.grad)` ...")
    gen = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps + 1):
        idx = torch.randint(0, len(x_train), (128,), generator=gen)
        model.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x_train[idx]), y_train[idx])
        loss.backward()
        lr = args.lr * (1 - step / (args.steps + 1))  # linear decay to zero
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * dualtype.dualize(p.grad)
        if step % 50 == 0:
            with torch.no_grad():
                val = nn.functional.mse_loss(model(x_val), y_val).item()
            print(f"  step {step:4d}  train loss {loss.item():.5f}  val loss {val:.5f}")
    base = nn.functional.mse_loss(torch.zeros_like(y_val) + y_train.mean(), y_val).item()
    print(f"done: val loss {val:.5f} vs {base:.5f} for predicting the mean")


if __name__ == "__main__":
    main()
