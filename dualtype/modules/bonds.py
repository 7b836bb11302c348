"""Bonds: weight-free modules of mass 0. Each states its sensitivity and the norms it is
measured in (see :mod:`dualtype.modules.atoms` for the activation norms); every stated
sensitivity is a worst-case Lipschitz bound, and ``tests/modules`` measures it.

Tuples are measured by the sum of their parts' norms (so a concatenation's sensitivity is
the sum of its parts', docs/design.md §3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from dualtype.checks import is_int
from dualtype.errors import ConfigError, ShapeError
from dualtype.modules.base import Bond, Identity

__all__ = [
    "ReLU",
    "GELU",
    "GELU_LIPSCHITZ",
    "Add",
    "RMSNorm",
    "Flatten",
    "SplitHeads",
    "MergeHeads",
    "QKScores",
    "CausalMask",
    "Softmax",
    "ApplyScores",
    "FunctionalAttention",
]


class ReLU(Bond):
    """y = max(x, 0). Sensitivity **1**: |relu(a) − relu(b)| ≤ |a − b| entrywise, and the
    bound is attained when both inputs are positive. (The 1/√2 sometimes quoted is a
    typical-case value for inputs symmetric about 0, not a bound; the tests measure ratios
    up to 1 on positive inputs.) Well-normed: |relu(x)| ≤ |x|."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


#: max_x GELU'(x) = Φ(√2) + √2·φ(√2), attained at x = √2 (GELU'' = φ·(2 − x²)).
GELU_LIPSCHITZ = 0.5 * (1 + math.erf(1.0)) + math.sqrt(2) * math.exp(-1.0) / math.sqrt(2 * math.pi)


class GELU(Bond):
    """y = GELU(x)/κ with κ = max GELU' ≈ 1.1289, so the map is 1-Lipschitz entrywise:
    sensitivity 1. Well-normed: |GELU(x)| = |x|·Φ(x) ≤ |x|."""

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(x) / GELU_LIPSCHITZ


class Add(Bond):
    """(x_1, …, x_k) → Σ x_i. Sensitivity 1 (triangle inequality, tuple = sum of norms)."""

    def forward(self, xs) -> Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


class RMSNorm(Bond):
    """Weight-free RMS normalization over the last dim: y = x/RMS(x) (ε guards x = 0).

    Well-normed (output RMS = 1). Sensitivity 1 for inputs with RMS ≥ 1 (on or outside the
    unit sphere, where x ↦ x/RMS(x) is the projection onto the unit ball, a contraction).
    Like every normalizer it is not Lipschitz near x = 0: the bound holds on that domain.
    """

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt()
        return x / (rms + self.eps)


class Flatten(Bond):
    """``[B, C, H, W] → [B, C·H·W]``: the RMS of the whole is the quadratic mean of the
    pixels' channel RMS, ≤ their max: sensitivity 1, well-normed."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flatten(start_dim=1)


class SplitHeads(Bond):
    """``[..., T, H·dh] → [..., H, T, dh]``. In the per-head norm a head's RMS can be √H
    times the token's (all energy in one head): sensitivity √H and output bound √H.
    Prefer :class:`~dualtype.modules.atoms.HeadLinear`, which projects per head at cost 1."""

    def __init__(self, heads: int) -> None:
        super().__init__()
        if not is_int(heads) or heads < 1:
            raise ConfigError(f"heads must be an int ≥ 1, got {heads!r}")
        self.heads = heads

    @property
    def sensitivity(self) -> float:
        return math.sqrt(self.heads)

    def forward(self, x: Tensor) -> Tensor:
        *lead, T, d = x.shape
        if d % self.heads:
            raise ShapeError(f"feature dim {d} is not divisible by {self.heads} heads")
        return x.reshape(*lead, T, self.heads, d // self.heads).transpose(-3, -2)


class MergeHeads(Bond):
    """``[..., H, T, dh] → [..., T, H·dh]``. A token's RMS is the quadratic mean of its
    heads' RMS, ≤ their max: sensitivity 1, well-normed."""

    def forward(self, x: Tensor) -> Tensor:
        *lead, H, T, dh = x.shape
        return x.transpose(-3, -2).reshape(*lead, T, H * dh)


class QKScores(Bond):
    """(q, k) ``[..., H, T, dh]`` → scores ``scale·q kᵀ`` ``[..., H, T, T]`` in ℓ∞, with the
    1/d scaling: ``scale = 1/dh`` by default (not 1/√dh).

    |q_i·k_j|/dh ≤ RMS(q_i)·RMS(k_j), so with per-head RMS ≤ 1 the scores lie in [−1, 1]
    (well-normed), and |Δ(q·k)|/dh ≤ ‖Δq‖·‖k'‖ + ‖q‖·‖Δk‖: sensitivity scale·dh (= 1 by
    default) in the sum norm of (q, k), valid on the unit ball.
    """

    def __init__(self, d_head: int, scale: float | None = None) -> None:
        super().__init__()
        self.d_head = d_head
        self.scale = 1.0 / d_head if scale is None else float(scale)
        if not self.scale > 0:
            raise ConfigError(f"score scale must be > 0, got {scale!r}")

    @property
    def sensitivity(self) -> float:
        return self.scale * self.d_head

    def forward(self, qk) -> Tensor:
        q, k = qk
        return self.scale * (q @ k.transpose(-2, -1))


class CausalMask(Bond):
    """Scores ``[..., T, T]``: entries above the diagonal (key after query) become −∞.
    Measured in ℓ∞ over the entries that stay finite: sensitivity 1."""

    def forward(self, scores: Tensor) -> Tensor:
        T = scores.shape[-1]
        future = torch.ones(T, T, dtype=torch.bool, device=scores.device).triu(1)
        return scores.masked_fill(future, float("-inf"))


class Softmax(Bond):
    """Scores → attention ``softmax(scale·z)`` over the last dim, from ℓ∞ to the max row-ℓ1
    norm (the ∞→∞ operator norm of the attention matrix; always 1: well-normed).

    The Jacobian sends Δz to p ⊙ (Δz − ⟨p, Δz⟩), whose ℓ1 norm is the mean absolute
    deviation of Δz under p, ≤ ‖Δz‖∞: sensitivity |scale| (default 1).
    """

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        if not scale > 0:
            raise ConfigError(f"softmax scale must be > 0, got {scale!r}")
        self.scale = float(scale)

    @property
    def sensitivity(self) -> float:
        return self.scale

    def forward(self, z: Tensor) -> Tensor:
        return torch.softmax(self.scale * z, dim=-1)


class ApplyScores(Bond):
    """(A ``[..., H, T, T]``, v ``[..., H, T, dh]``) → A v. With A's rows probability
    vectors (row-ℓ1 ≤ 1), each output is a convex combination of value vectors: per-head
    RMS ≤ max RMS(v) (well-normed), and Δ(Av) = ΔA·v' + A·Δv gives sensitivity 1 in the sum
    norm of (A, v), valid on the unit ball."""

    def forward(self, av) -> Tensor:
        a, v = av
        return a @ v


class FunctionalAttention(Bond):
    """(q, k, v) → ApplyScores(Softmax(CausalMask(QKScores(q, k))), v).

    Sensitivity max(s_qk·s_softmax, 1) in the sum norm of (q, k, v): the scores path moves
    A by ≤ s_qk·s_softmax·(‖Δq‖ + ‖Δk‖), the values path moves the output by ≤ ‖Δv‖.
    """

    def __init__(self, d_head: int, causal: bool = True, score_scale: float | None = None,
                 softmax_scale: float = 1.0) -> None:
        super().__init__()
        self.scores = QKScores(d_head, score_scale)
        self.mask = CausalMask() if causal else Identity()
        self.softmax = Softmax(softmax_scale)
        self.apply_scores = ApplyScores()

    @property
    def sensitivity(self) -> float:
        s_scores = self.scores.sensitivity * self.mask.sensitivity * self.softmax.sensitivity
        return self.apply_scores.sensitivity * max(s_scores, 1.0)

    def forward(self, qkv) -> Tensor:
        q, k, v = qkv
        a = self.softmax(self.mask(self.scores((q, k))))
        return self.apply_scores((a, v))
