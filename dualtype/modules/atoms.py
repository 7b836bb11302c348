"""Atoms: modules with one weight tensor, its norm, a mass (default 1) and sensitivity 1.

Activation norms used throughout (the "input"/"output" norms of well-normedness):
a feature tensor ``[..., d]`` is measured by the RMS over the last dim, max over the rest;
a head-split tensor ``[..., H, T, dh]`` per head (RMS over ``dh``, max over the rest);
images ``[B, C, H, W]`` by the RMS over channels at each pixel, max over pixels;
logits by ℓ∞; token ids as one-hot vectors (ℓ1 norm 1).

Every atom initializes its weight at norm 1 (orthogonal for matrices), is well-normed
(output norm ≤ ‖w‖·input norm) and has sensitivity 1 at ‖w‖ ≤ 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dualtype.checks import is_int
from dualtype.errors import ConfigError, ShapeError
from dualtype.modules.base import Atom

__all__ = ["Linear", "HeadLinear", "Embed", "PositionEmbed", "Conv2D", "Head", "Bias", "Gain"]


def _dim(x: int, what: str) -> int:
    if not is_int(x) or x < 1:
        raise ConfigError(f"{what} must be an int ≥ 1, got {x!r}")
    return x


def _orthogonal_(w: Tensor, scale: float) -> None:
    """Each trailing ``[out, in]`` matrix of ``w`` := scale · (semi-)orthogonal."""
    with torch.no_grad():
        flat = w.view(-1, *w.shape[-2:])
        for m in flat:
            nn.init.orthogonal_(m)
        w.mul_(scale)


class Linear(Atom):
    """y = W x with W ``[d_out, d_in]`` under RMS→RMS: ‖W‖ = √(d_in/d_out)·σ_max(W).

    RMS(Wx) ≤ ‖W‖·RMS(x): well-normed, sensitivity 1. Init: √(d_out/d_in)·orthogonal (norm 1).
    """

    norm_name = "rms->rms"

    def __init__(self, d_in: int, d_out: int, mass: float = 1.0) -> None:
        super().__init__(mass)
        self.d_in, self.d_out = _dim(d_in, "d_in"), _dim(d_out, "d_out")
        self.weight = nn.Parameter(torch.empty(d_out, d_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _orthogonal_(self.weight, math.sqrt(self.d_out / self.d_in))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"{self.d_in}→{self.d_out}, {self.norm_name}, " + super().extra_repr()


class HeadLinear(Atom):
    """Per-head projection ``[..., T, d_in] → [..., H, T, d_head]``, W ``[H, d_head, d_in]``.

    Norm: RMS→RMS of each head's ``[d_head, d_in]`` matrix, the atom's value the max over
    heads (dual value: the sum; dualize: each head's own map), i.e. ``rms->rms`` batched
    over the leading head dim. Each head's output RMS ≤ ‖W‖·RMS(x): well-normed into the
    per-head norm, sensitivity 1. (A plain Linear followed by SplitHeads costs a √H.)
    """

    norm_name = "rms->rms"

    def __init__(self, d_in: int, heads: int, d_head: int, mass: float = 1.0) -> None:
        super().__init__(mass)
        self.d_in, self.heads, self.d_head = _dim(d_in, "d_in"), _dim(heads, "heads"), _dim(d_head, "d_head")
        self.weight = nn.Parameter(torch.empty(heads, d_head, d_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _orthogonal_(self.weight, math.sqrt(self.d_head / self.d_in))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("...td,hod->...hto", x, self.weight)

    def extra_repr(self) -> str:
        return f"{self.d_in}→{self.heads}×{self.d_head}, rms->rms per head, " + super().extra_repr()


def _unit_rows_(w: Tensor, row_norm: float) -> None:
    with torch.no_grad():
        nn.init.normal_(w)
        w.mul_(row_norm / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(1e-30))


class Embed(Atom):
    """Token ids ``[...]`` → vectors ``[..., d]`` from W ``[vocab, d]`` under ℓ1→RMS:
    ‖W‖ = max_i RMS(w_i). A one-hot input picks a row: well-normed, sensitivity 1.
    Init: random rows of RMS 1."""

    norm_name = "l1->rms"

    def __init__(self, vocab: int, d: int, mass: float = 1.0) -> None:
        super().__init__(mass)
        self.vocab, self.d = _dim(vocab, "vocab"), _dim(d, "d")
        self.weight = nn.Parameter(torch.empty(vocab, d))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _unit_rows_(self.weight, math.sqrt(self.d))

    def forward(self, tokens: Tensor) -> Tensor:
        return F.embedding(tokens, self.weight)

    def extra_repr(self) -> str:
        return f"{self.vocab}×{self.d}, {self.norm_name}, " + super().extra_repr()


class PositionEmbed(Embed):
    """Learned positions: token ids ``[..., T]`` → W[:T] ``[..., T, d]`` (ℓ1→RMS, rows are
    positions). Its output does not depend on the input's values; sensitivity 1 is a valid
    (loose) bound and keeps s > 0."""

    def forward(self, tokens: Tensor) -> Tensor:
        T = tokens.shape[-1]
        if T > self.vocab:
            raise ShapeError(f"sequence length {T} exceeds the {self.vocab} learned positions")
        return self.weight[:T].expand(*tokens.shape, self.d)


class Conv2D(Atom):
    """2-D convolution, W ``[c_out, c_in, k, k]`` under the Conv2D norm
    ‖W‖ = k²·max_ij ‖W[:, :, i, j]‖_RMS→RMS. Each output pixel is a sum of k² RMS→RMS maps
    of input pixels, so its channel RMS ≤ ‖W‖·(max pixel RMS): well-normed, sensitivity 1
    (zero padding only lowers the sum). Init: each slice √(c_out/c_in)/k²·orthogonal."""

    norm_name = "conv2d"

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1, padding: "int | str" = "same",
        mass: float = 1.0,
    ) -> None:
        super().__init__(mass)
        self.c_in, self.c_out, self.k = _dim(c_in, "c_in"), _dim(c_out, "c_out"), _dim(kernel_size, "kernel_size")
        self.stride, self.padding = stride, padding
        if padding == "same" and stride != 1:
            self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.empty(c_out, c_in, kernel_size, kernel_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            slices = torch.empty(self.k, self.k, self.c_out, self.c_in, dtype=self.weight.dtype)
            _orthogonal_(slices, math.sqrt(self.c_out / self.c_in) / self.k**2)
            self.weight.copy_(slices.permute(2, 3, 0, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        return f"{self.c_in}→{self.c_out}, k={self.k}, {self.norm_name}, " + super().extra_repr()


class Head(Atom):
    """Output head: logits = W x with W ``[classes, d_in]`` under RMS→ℓ∞:
    ‖W‖ = max_i √d_in·‖w_i‖₂, so every |logit| ≤ ‖W‖·RMS(x) (Cauchy–Schwarz): well-normed
    into ℓ∞, sensitivity 1. Dualize normalizes each class row separately, so a rare class's
    row moves as far as a frequent one's. Init: random rows of norm 1."""

    norm_name = "rms->linf"

    def __init__(self, d_in: int, classes: int, mass: float = 1.0) -> None:
        super().__init__(mass)
        self.d_in, self.classes = _dim(d_in, "d_in"), _dim(classes, "classes")
        self.weight = nn.Parameter(torch.empty(classes, d_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _unit_rows_(self.weight, 1 / math.sqrt(self.d_in))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight)

    def extra_repr(self) -> str:
        return f"{self.d_in}→{self.classes}, {self.norm_name}, " + super().extra_repr()


class Bias(Atom):
    """y = x + b, b ``[d]`` under the RMS norm.

    Why RMS: the output moves by exactly Δb, and activations are measured in RMS, so
    RMS(Δy) = ‖Δb‖_RMS — the norm that makes the update's effect equal its size.
    Sensitivity 1 (∂y/∂x = I). Output bound ‖x‖ + ‖b‖ ≤ 2: like a sum, it is well-normed
    only inside a convex combination; the MLP and GPT compounds use no biases. Init: zero.
    """

    norm_name = "rms"

    def __init__(self, d: int, mass: float = 1.0) -> None:
        super().__init__(mass)
        self.d = _dim(d, "d")
        self.weight = nn.Parameter(torch.zeros(d))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.weight

    def extra_repr(self) -> str:
        return f"{self.d}, {self.norm_name}, " + super().extra_repr()


class Gain(Atom):
    """y = g ⊙ x, g ``[d]`` under the ℓ∞ norm (max |g_i|).

    Why ℓ∞: it is the exact RMS→RMS operator norm of diag(g), so RMS(g ⊙ x) ≤ ‖g‖_∞·RMS(x)
    (well-normed, sensitivity 1); the RMS norm of g would not bound the output (x may sit on
    one coordinate). Its duality map is sign(G): gains take sign-descent steps. Init: ones.
    """

    norm_name = "linf"

    def __init__(self, d: int, mass: float = 1.0) -> None:
        super().__init__(mass)
        self.d = _dim(d, "d")
        self.weight = nn.Parameter(torch.ones(d))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weight

    def extra_repr(self) -> str:
        return f"{self.d}, {self.norm_name}, " + super().extra_repr()
