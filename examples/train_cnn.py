"""Train a small CNN on scikit-learn's bundled 8×8 digits with dualtype's ModularSGD (< 1 min).

    python examples/train_cnn.py [--epochs 20] [--lr 0.26] [--optimizer {dualtype,adamw}]

Conv2d weights ``[out, in, 3, 3]`` take the ``conv2d`` norm: each of the 9 kernel slices is
orthogonalized (all in one batched call) and scaled by (1/9)·√(out/in); the classifier
``rms->rms``, biases ``rms``.
"""

from __future__ import annotations

import os
import sys

from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_mlp import run  # noqa: E402  (same flags, loop, data and schedule)


def build_model(width: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.GELU(),
        nn.Conv2d(width, width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),   # 8x8 -> 4x4
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),  # -> 2x2
        nn.Flatten(), nn.Linear(8 * width, 10),
    )


def main(argv: list[str] | None = None) -> float:
    return run("CNN on sklearn digits with dualtype", build_model, "width", 16, argv)


if __name__ == "__main__":
    main()
