"""Norms on weight space and their duality maps (docs/design.md §3).

Every norm ``N`` offers three functions of one tensor (torch layout: a weight is ``[out, in]``):

- ``N.value(w)``       the norm ‖w‖,
- ``N.dual_value(g)``  the dual norm ‖g‖† = max over ‖t‖ ≤ 1 of ⟨g, t⟩,
- ``N.dualize(g)``     the maximiser: ‖dualize(g)‖ = 1 and ⟨g, dualize(g)⟩ = ‖g‖†
                       (zero maps to zero; NaN/Inf raise :class:`NonFiniteError`).

``value`` and ``dual_value`` return 0-dim tensors in float32 (float64 for float64 input) on
the input's device, so they never force a host sync. ``dualize`` returns the input's dtype.

Input that is not a dense real matrix:

- *effectively zero*: a slice the map normalizes (the whole tensor for l2/rms, each matrix
  for rms->rms/conv2d, each row for the row maps) whose entries are all below the smallest
  normal number of the accumulation dtype (float32's 1.2e-38, float64's 2.2e-308) maps to
  zero; anything larger is normalized exactly (scale invariance). ``linf`` is sign(g) for
  every finite input. No map returns NaN for finite input (a property test checks
  denormals up to 1e38 in every float dtype).
- complex: the pairing is ⟨g, t⟩ = Re Σ conj(g)·t (under it torch's complex gradient is the
  steepest-ascent direction); the maps are G/‖G‖_F, √n·g/‖g‖₂, sgn(G) = G/|G|, the row maps,
  and √(out/in)·U Vᴴ (by SVD).
- sparse COO with one sparse dim (``nn.Embedding(sparse=True)``): ``dualize`` works on the
  stored rows and returns a sparse tensor on the same rows (exact: untouched rows are zero
  and map to zero); other sparse layouts raise :class:`ShapeError`. ``value`` and
  ``dual_value`` densify.
- empty tensors: ``dualize`` returns zeros of the same shape, the norms are 0; meta tensors
  propagate shapes; NaN/Inf where an SVD must run raise :class:`NonFiniteError`.

Matrix norms (``rms->rms``, ``l1->rms``, ``rms->linf``, ``conv2d``) read the trailing
dimensions as the matrix (or kernel) and any leading dimensions as a batch: ``value`` and
``dual_value`` then return one number per batch entry.

**Capabilities.** A norm says what the optimizers and ``dualtype.distributed`` may do with its
map, so adding a norm means writing one subclass of :class:`Norm` with a ``name`` (it is
registered for :func:`get` by that name):

- ``batchable``: leading dimensions are a batch, so same-shape updates may be stacked and
  dualized in one call;
- ``locality``: what one entry of ``dualize(g)`` depends on: ``"elementwise"`` (that entry
  of g), ``"rows"`` (its row, the last dimension), ``"vector"`` (all of g read as one vector,
  the map being c(numel)·g/‖g‖₂; :meth:`Norm.shard_factor` gives c's ratio) or ``"matrix"``
  (the whole tensor, or each whole matrix of a batch: the default);
- ``cost(shape)``: the flops of one duality map up to a constant (numel by default);
- ``decays``: weight decay applies (the hidden and conv maps). Decoupled decay λ with steps
  of size lr·t bounds such a weight by t/λ in its norm (docs/design.md §1 "Weight decay");
  embeddings, heads, gains and biases keep the scale of their initialization instead.

Names accepted by :func:`get` (case and spaces ignored, ``→`` or ``_to_`` may replace ``->``):

========================  ==========================  ============================
canonical name            aliases                     used for
========================  ==========================  ============================
``l2``                    euclidean, frobenius, fro   generic
``linf``                  sign, max                   generic, sign descent
``rms``                   bias, gain, vector          biases, gains (1-D)
``rms->rms``              linear, spectral, hidden    Linear, hidden matrices
``l1->rms``               embedding, embed            nn.Embedding ``[vocab, d]``
``rms->linf``             head, output                output head ``[classes, d]``
``conv1d``                                            nn.Conv1d ``[out, in, k]``
``conv2d``                conv                        nn.Conv2d ``[out, in, kh, kw]``
``conv3d``                                            nn.Conv3d ``[out, in, kd, kh, kw]``
``rms->rms.t``                                        hidden weights stored ``[in, out]``
``l1->rms.t``                                         a Linear on one-hot ``[d, vocab]``
``rms->linf.t``                                       a head stored ``[d, classes]``
========================  ==========================  ============================

**Transposed storage.** ``<name>.t`` is the same operator norm for a weight stored the other
way round: read as ``x @ W`` (``[in, out]``, e.g. transformers' ``Conv1D``), or an
``nn.Linear(vocab, d)`` fed one-hot ids (``[d, vocab]``, where the table's rows are its
columns). Every formula reads Wᵀ, so the step is the transpose of the map of Gᵀ.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from dualtype.errors import ConfigError, NonFiniteError, ShapeError
from dualtype.kernels import accumulation_dtype, orthogonalize
from dualtype.kernels.svd import scaled_for_svd

__all__ = [
    "Norm",
    "LOCALITIES",
    "Euclidean",
    "LInf",
    "RMS",
    "RMSToRMS",
    "L1ToRMS",
    "RMSToLInf",
    "ConvNorm",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "Transposed",
    "get",
    "names",
]


def _acc(t: Tensor) -> Tensor:
    """Plain tensor in the accumulation dtype: float64 and complex128 stay, complex computes
    in complex64, the rest in float32. A typed (Dual/Primal) input is viewed as a plain
    tensor: norms are numbers."""
    if type(t) is not Tensor:
        t = t.as_subclass(Tensor)
    return t.to(accumulation_dtype(t.dtype))


def _tiny(x: Tensor) -> float:
    """Smallest normal number of ``x``'s (real) accumulation dtype: below it a gradient is
    *effectively zero* (its entries have lost precision to gradual underflow)."""
    return torch.finfo(x.real.dtype if x.is_complex() else x.dtype).tiny


def _require_finite(reduction: Tensor, norm: "Norm") -> None:
    # One host sync on a value computed anyway: Inf/NaN anywhere in g makes it non-finite.
    # A meta tensor has no values to check (shapes only propagate).
    if reduction.device.type != "meta" and not bool(torch.isfinite(reduction).all()):
        raise NonFiniteError(
            f"cannot dualize under {norm}: the gradient contains NaN or Inf. "
            "Check the loss for overflow (lower the lr, use gradient clipping or a loss "
            "scaler) before calling dualize."
        )


def _div(x: Tensor, d: Tensor) -> Tensor:
    """x / d for a real divisor ``d``; complex ``x`` is divided part by part (torch's complex
    division gave NaN for a denormal complex x over a denormal divisor)."""
    if x.is_complex():
        return torch.complex(x.real / d, x.imag / d)
    return x / d


def _safe_div(x: Tensor, d: Tensor) -> Tensor:
    """x / d with d == 0 giving 0 (zero in, zero out; never NaN)."""
    return _div(x, torch.where(d == 0, torch.ones_like(d), d))


def _absmax(x: Tensor, dim: int | None) -> Tensor:
    return x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)


def _l2(x: Tensor, dim: int | None = None) -> Tensor:
    """``vector_norm(x, dim=dim)`` without under/overflow of the squares: ``x`` is divided by
    max|x| first (as LAPACK's nrm2 does), so a nonzero tensor of tiny entries (fp32 below
    ~1e-19) has a nonzero norm and large finite entries a finite one. NaN and Inf propagate."""
    if x.numel() == 0:
        return torch.linalg.vector_norm(x, dim=dim)
    big = _absmax(x, dim)
    n = torch.linalg.vector_norm(_safe_div(x, big), dim=dim, keepdim=True) * big
    n = torch.where(torch.isinf(big), big, n)  # an Inf entry: Inf, not Inf/Inf = NaN
    return n.reshape(()) if dim is None else n.squeeze(dim)


def _prescale(x: Tensor, norm: "Norm", dim: int | None = None) -> Tensor:
    """``x / max|x|`` (over all entries, or along ``dim``); NaN/Inf raise
    :class:`NonFiniteError`. The duality maps are scale invariant, so this only moves the
    entries into [-1, 1], where the norms that follow can neither underflow to 0 (a tiny
    gradient would come back unnormalized) nor overflow (a large finite one would raise
    NonFiniteError). A slice whose max|x| is below the smallest normal number (:func:`_tiny`)
    is effectively zero and becomes exactly zero: zero in, zero out, never NaN."""
    if x.numel() == 0:
        return x
    big = _absmax(x, dim)
    _require_finite(big, norm)
    live = big >= _tiny(x)
    return torch.where(live, _div(x, torch.where(live, big, torch.ones_like(big))), torch.zeros_like(x))


def _singular_values(w: Tensor) -> Tensor:
    """σ(W) over the last two dims, in the accumulation dtype; computed on an exactly
    rescaled copy (see :func:`dualtype.kernels.svd.scaled_for_svd`: LAPACK's complex SVD
    returned NaN for finite input with tiny parts)."""
    Y, scale = scaled_for_svd(_acc(w))
    return torch.linalg.svdvals(Y) * scale.squeeze(-1)


ELEMENTWISE, ROWS, VECTOR, MATRIX = "elementwise", "rows", "vector", "matrix"
LOCALITIES = (ELEMENTWISE, ROWS, VECTOR, MATRIX)

_ALIASES: dict[str, str] = {
    "euclidean": "l2", "frobenius": "l2", "fro": "l2",
    "sign": "linf", "max": "linf", "inf": "linf",
    "bias": "rms", "gain": "rms", "vector": "rms",
    "linear": "rms->rms", "spectral": "rms->rms", "hidden": "rms->rms",
    "embedding": "l1->rms", "embed": "l1->rms",
    "head": "rms->linf", "output": "rms->linf",
    "conv": "conv2d",
}
# name -> Norm subclass; every subclass that defines a name registers itself (Norm.__init_subclass__)
_CANONICAL: dict[str, type["Norm"]] = {}


def _key(spec: str) -> str:
    """A norm name as :func:`get` compares it: case and spaces ignored, ``→``/``_to_`` → ``->``."""
    key = "".join(spec.lower().split()).replace("→", "->").replace("_to_", "->")
    return key.replace("ℓ", "l").replace("∞", "inf")


class Norm:
    """A norm on one weight tensor together with its dual norm and duality map.

    A subclass that sets ``name`` is registered for :func:`get`; it states its capabilities
    (``batchable``, ``locality``, ``cost``: see the module doc) beside its formulas."""

    name: str = ""
    min_ndim: int = 0  # l2, linf and rms take any shape, scalars included
    #: (input space, output space) of an operator norm: the activation types a weight of
    #: this norm maps between (docs/design.md §3); None for vector norms.
    spaces: "tuple[str, str] | None" = None
    #: leading dims are a batch: stacked same-shape updates may be dualized in one call
    batchable: bool = False
    #: what one entry of dualize(g) depends on: one of LOCALITIES (see the module doc)
    locality: str = MATRIX
    #: weight decay applies to weights of this norm (the hidden and conv maps; module doc)
    decays: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.locality not in LOCALITIES:
            raise ConfigError(f"{cls.__qualname__}.locality must be one of {LOCALITIES}, got {cls.locality!r}")
        name = cls.__dict__.get("name")
        if not name:
            return
        if _key(name) != name or name in _ALIASES:
            raise ConfigError(f"{cls.__qualname__}: a norm name is lower case without spaces and not "
                              f"an alias of another norm, got {name!r}")
        known = _CANONICAL.get(name)
        if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ConfigError(f"{cls.__qualname__}: the norm name {name!r} is taken by {known.__qualname__}")
        _CANONICAL[name] = cls

    def cost(self, shape: tuple[int, ...]) -> int:
        """Flops of one duality map of a tensor of ``shape``, up to a constant shared by all
        norms (the distributed planner balances ranks with it): numel unless overridden."""
        return math.prod(shape)

    def shard_factor(self, numel: int, local_numel: int) -> float:
        """For ``locality == "vector"`` maps g ↦ c(n)·g/‖g‖₂: c(numel)/c(local_numel), which
        turns the map of a shard into the shard of the whole tensor's map (with the ratio of
        the norms). 1 when c does not depend on the size."""
        return 1.0

    def check(self, t: Tensor, what: str = "tensor") -> None:
        """Raise :class:`ShapeError` if ``t`` cannot carry this norm (:class:`ConfigError` if it is
        not a tensor at all)."""
        if not isinstance(t, Tensor):
            raise ConfigError(f"{self} needs a torch.Tensor, got {type(t).__name__}: "
                              "convert it with torch.as_tensor(...)")
        if t.ndim < self.min_ndim:
            raise ShapeError(
                f"{self} needs a {self.min_ndim}-D {what} or more ({self.layout()}), "
                f"got shape {tuple(t.shape)}. Choose a norm that fits the parameter, "
                f"e.g. 'rms' for 1-D biases and gains."
            )
        if not (t.is_floating_point() or t.is_complex()):
            raise ShapeError(f"{self} needs a floating-point {what}, got {t.dtype}")

    def layout(self) -> str:
        """The shape this norm reads, for messages: ``"[..., out, in]"`` for a Linear's weight."""
        return "any shape"

    def value(self, w: Tensor) -> Tensor:
        """‖w‖: one number per batch entry (float32, or float64 for 64-bit input)."""
        self.check(w)
        return self._number(w, self._value)

    def dual_value(self, g: Tensor) -> Tensor:
        """‖g‖† = max over ‖t‖ ≤ 1 of ⟨g, t⟩ (complex: ⟨g, t⟩ = Re Σ conj(g)·t)."""
        self.check(g, "gradient")
        return self._number(g, self._dual_value)

    def dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        """The duality map; ``method`` selects the orthogonalization kernel (matrix norms).

        Empty input gives an empty output; a row-sparse COO gradient (``nn.Embedding(
        sparse=True)``) gives a sparse output on the same rows (see :meth:`_dualize_rows`)."""
        self.check(g, "gradient")
        if g.layout != torch.strided:
            return self._dualize_sparse(g, method)
        if g.numel() == 0:
            return torch.zeros_like(g)
        return self._dualize(g, method)

    def _number(self, t: Tensor, f) -> Tensor:
        """``f(t)`` with the shared cases: sparse input is densified (exact), empty input has
        norm 0, and an SVD that fails on NaN/Inf raises :class:`NonFiniteError`."""
        if t.layout != torch.strided:
            t = t.to_dense()
        if t.numel() == 0:
            real = accumulation_dtype(t.dtype).to_real()
            return torch.zeros(t.shape[: t.ndim - self.min_ndim], dtype=real, device=t.device)
        try:
            return f(t)
        except torch.linalg.LinAlgError:
            if not bool(torch.isfinite(t).all()):
                raise NonFiniteError(
                    f"{self} norm of a tensor that holds NaN or Inf (the SVD cannot run)"
                ) from None
            raise

    def _dualize_sparse(self, g: Tensor, method: str | None) -> Tensor:
        """Duality map of a sparse COO gradient, computed on its stored rows only.

        Untouched rows are zero, so they contribute nothing to the norm and map to zero: the
        map of the compact matrix of touched rows is exact (for ``rms->rms``: the zero rows
        of G are zero rows of U, hence of UVᵀ)."""
        elementwise = self.min_ndim == 0
        if g.layout != torch.sparse_coo or not (elementwise or g.sparse_dim() == 1):
            raise ShapeError(
                f"{self} cannot dualize a sparse {g.layout} gradient with sparse_dim "
                f"{g.sparse_dim() if g.layout == torch.sparse_coo else '?'}: the sparse path "
                "needs a row-sparse COO tensor (sparse_dim 1, as nn.Embedding(sparse=True) "
                "makes). Convert it with g.to_dense() first."
            )
        g = g.coalesce()  # sums repeated rows: the gradient of a row is the sum
        values = g._values()
        out = self._dualize_rows(values, tuple(g.shape), method) if values.numel() else values.clone()
        return torch.sparse_coo_tensor(g._indices(), out, g.shape, is_coalesced=True)

    def _dualize_rows(self, values: Tensor, shape: tuple[int, ...], method: str | None) -> Tensor:
        """The map on the stored ``values`` of a sparse gradient of shape ``shape``; the
        default is right for maps that need no global size (l2, linf, the row maps)."""
        return self._dualize(values, method)

    def _value(self, w: Tensor) -> Tensor:
        raise NotImplementedError

    def _dual_value(self, g: Tensor) -> Tensor:
        raise NotImplementedError

    def _dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Norm) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("dualtype.Norm", self.name))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __str__(self) -> str:
        return self.name

    def __reduce__(self):
        return (get, (self.name,))


class Euclidean(Norm):
    """ℓ2 (Frobenius) over all entries: ‖W‖_F, dual ‖G‖_F, dualize G/‖G‖_F."""

    name = "l2"
    locality = VECTOR

    def _value(self, w: Tensor) -> Tensor:
        return _l2(_acc(w))

    def _dual_value(self, g: Tensor) -> Tensor:
        return self._value(g)

    def _dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        x = _prescale(_acc(g), self)
        return _safe_div(x, torch.linalg.vector_norm(x)).to(g.dtype)


class LInf(Norm):
    """ℓ∞ over all entries: max|W_ij|, dual Σ|G_ij|, dualize sign(G) (exact for every finite
    input, denormals included: sign needs no normalization)."""

    name = "linf"
    locality = ELEMENTWISE

    def _value(self, w: Tensor) -> Tensor:
        return _acc(w).abs().amax() if w.numel() else _acc(w).new_zeros(())

    def _dual_value(self, g: Tensor) -> Tensor:
        return _acc(g).abs().sum()

    def _dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        _require_finite(g, self)  # not a sum: that overflows for large finite entries
        if not g.is_complex():
            return torch.sign(g)
        # complex sign G/|G| entrywise (0 stays 0), in real arithmetic on (re, im) pairs:
        # torch.sgn overflows |z| near the dtype's max and gave -inf+nanj for denormal z.
        # u = z/max(|re|, |im|) has parts in [-1, 1], so u/|u| neither over- nor underflows.
        pairs = torch.view_as_real(g)
        big = pairs.abs().amax(dim=-1, keepdim=True)
        u = pairs / torch.where(big > 0, big, torch.ones_like(big))
        n = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        return torch.view_as_complex((u / torch.where(n > 0, n, torch.ones_like(n))).contiguous())


class RMS(Norm):
    """RMS over all n entries (biases, gains): ‖v‖₂/√n, dual √n‖g‖₂, dualize √n·g/‖g‖₂."""

    name = "rms"
    locality = VECTOR

    def shard_factor(self, numel: int, local_numel: int) -> float:
        return math.sqrt(numel / local_numel)  # c(n) = √n

    def _value(self, w: Tensor) -> Tensor:
        return _l2(_acc(w)) / math.sqrt(max(w.numel(), 1))

    def _dual_value(self, g: Tensor) -> Tensor:
        return _l2(_acc(g)) * math.sqrt(g.numel())

    def _dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        x = _prescale(_acc(g), self)
        return (_safe_div(x, torch.linalg.vector_norm(x)) * math.sqrt(g.numel())).to(g.dtype)

    def _dualize_rows(self, values: Tensor, shape: tuple[int, ...], method: str | None) -> Tensor:
        # √n·g/‖g‖₂ with n the full size, not the number of stored entries
        return Euclidean()._dualize(values) * math.sqrt(math.prod(shape))


class _MatrixNorm(Norm):
    min_ndim = 2
    batchable = True

    def layout(self) -> str:
        return "[..., out, in]"

    def out_in(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(out, in): the output and input dimensions of a weight of ``shape`` in this layout."""
        return shape[-2], shape[-1]


class RMSToRMS(_MatrixNorm):
    """RMS→RMS operator norm of W ``[..., out, in]`` (Linear, hidden matrices).

    ‖W‖ = √(in/out)·σ_max(W);  ‖G‖† = √(out/in)·‖G‖_*;  dualize(G) = √(out/in)·U Vᵀ.
    """

    name = "rms->rms"
    spaces = ("rms", "rms")
    decays = True

    def cost(self, shape: tuple[int, ...]) -> int:
        *_, m, n = shape
        return math.prod(shape) * min(m, n)  # B·m·n·min(m, n): Newton–Schulz on each matrix

    def _value(self, w: Tensor) -> Tensor:
        out, inp = w.shape[-2:]
        return math.sqrt(inp / out) * _singular_values(w).amax(dim=-1)

    def _dual_value(self, g: Tensor) -> Tensor:
        out, inp = g.shape[-2:]
        return math.sqrt(out / inp) * _singular_values(g).sum(dim=-1)

    def _dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        return self._polar(g, method, self)

    def _dualize_rows(self, values: Tensor, shape: tuple[int, ...], method: str | None) -> Tensor:
        if len(shape) > 2:  # stored values are whole matrices of a batch
            return self._polar(values, method, self)
        # touched rows [nnz, in] of G [out, in]: UVᵀ of the compact matrix; _polar scaled it
        # by √(nnz/in), G's map needs √(out/in)
        return self._polar(values, method, self) * math.sqrt(shape[0] / values.shape[0])

    @staticmethod
    def _polar(g: Tensor, method: str | None, norm: Norm) -> Tensor:
        """√(out/in)·UVᵀ of each matrix; NaN/Inf raise NonFiniteError naming ``norm``."""
        _require_finite(g, norm)  # not a norm of g: that overflows for large finite entries
        out, inp = g.shape[-2:]
        polar = orthogonalize(g) if method is None else orthogonalize(g, method=method)
        return polar * math.sqrt(out / inp)


class L1ToRMS(_MatrixNorm):
    """ℓ1→RMS operator norm of an embedding table W ``[..., vocab, d]`` (rows are vectors).

    ‖W‖ = max_i ‖w_i‖₂/√d;  ‖G‖† = Σ_i √d·‖g_i‖₂;  dualize: row g_i → √d·g_i/‖g_i‖₂.
    """

    name = "l1->rms"
    spaces = ("l1", "rms")
    locality = ROWS

    def layout(self) -> str:
        return "[..., vocab, d]"

    def out_in(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return shape[-1], shape[-2]  # a lookup table's rows are its inputs

    def _value(self, w: Tensor) -> Tensor:
        rows = _l2(_acc(w), dim=-1)
        return rows.amax(dim=-1) / math.sqrt(w.shape[-1])

    def _dual_value(self, g: Tensor) -> Tensor:
        return _l2(_acc(g), dim=-1).sum(dim=-1) * math.sqrt(g.shape[-1])

    def _dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        x = _prescale(_acc(g), self, dim=-1)
        rows = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return (_safe_div(x, rows) * math.sqrt(g.shape[-1])).to(g.dtype)


class RMSToLInf(_MatrixNorm):
    """RMS→ℓ∞ operator norm of an output head W ``[..., classes, in]``.

    ‖W‖ = max_i √in·‖w_i‖₂;  ‖G‖† = Σ_i ‖g_i‖₂/√in;  dualize: row g_i → g_i/(√in·‖g_i‖₂).
    """

    name = "rms->linf"
    spaces = ("rms", "linf")
    locality = ROWS

    def _value(self, w: Tensor) -> Tensor:
        rows = _l2(_acc(w), dim=-1)
        return rows.amax(dim=-1) * math.sqrt(w.shape[-1])

    def _dual_value(self, g: Tensor) -> Tensor:
        return _l2(_acc(g), dim=-1).sum(dim=-1) / math.sqrt(g.shape[-1])

    def _dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        x = _prescale(_acc(g), self, dim=-1)
        rows = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        return (_safe_div(x, rows) / math.sqrt(g.shape[-1])).to(g.dtype)


class Transposed(_MatrixNorm):
    """Base for ``<name>.t``: the operator norm of the subclass's second base, for W stored
    transposed (module doc). ‖W‖ = ‖Wᵀ‖;  ‖G‖† = ‖Gᵀ‖†;  dualize(G) = dualize(Gᵀ)ᵀ.

    A row map read on columns needs the whole matrix, hence locality ``matrix``."""

    locality = MATRIX

    def _base(self) -> Norm:
        return type(self).__bases__[1]()

    stored = "[..., in, out]"  # the layout it reads, for messages

    def layout(self) -> str:
        return self.stored

    def out_in(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return self._base().out_in((*shape[:-2], shape[-1], shape[-2]))

    def cost(self, shape: tuple[int, ...]) -> int:
        return self._base().cost((*shape[:-2], shape[-1], shape[-2]))

    def _value(self, w: Tensor) -> Tensor:
        return self._base()._value(w.mT)

    def _dual_value(self, g: Tensor) -> Tensor:
        return self._base()._dual_value(g.mT)

    def _dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        return self._base()._dualize(g.mT, method).mT

    def _dualize_rows(self, values: Tensor, shape: tuple[int, ...], method: str | None) -> Tensor:
        if len(shape) > 2:  # stored values are whole matrices of a batch
            return self._dualize(values, method)
        raise ShapeError(f"{self} cannot dualize a row-sparse gradient: its rows are the matrix's "
                         "columns. Convert it with g.to_dense() first.")


class RMSToRMST(Transposed, RMSToRMS):
    """``rms->rms`` of W stored ``[..., in, out]``."""

    name = "rms->rms.t"


class L1ToRMST(Transposed, L1ToRMS):
    """``l1->rms`` of W stored ``[..., d, vocab]`` (an ``nn.Linear(vocab, d)`` on one-hot ids)."""

    name = "l1->rms.t"
    stored = "[..., d, vocab]"


class RMSToLInfT(Transposed, RMSToLInf):
    """``rms->linf`` of W stored ``[..., in, classes]``."""

    name = "rms->linf.t"


class ConvNorm(Norm):
    """Conv norm of W ``[..., out, in, *kernel]`` over ``spatial`` kernel dimensions, with
    K = the number of kernel positions (taps).

    ‖W‖ = K·max_j ‖W_j‖_RMS→RMS;  ‖G‖† = Σ_j (1/K)·‖G_j‖†_RMS→RMS;
    dualize: each tap's slice G_j → (1/K)·√(out/in)·U_j V_jᵀ, all K slices in one batched call.
    """

    spatial = 2
    min_ndim = 4
    batchable = True
    decays = True

    def cost(self, shape: tuple[int, ...]) -> int:
        o, i = shape[-2 - self.spatial:-self.spatial]
        return math.prod(shape) * min(o, i)  # (B·K)·o·i·min(o, i): one polar factor per tap

    def layout(self) -> str:
        return ("[..., out, in, k]", "[..., out, in, kh, kw]", "[..., out, in, kd, kh, kw]")[self.spatial - 1]

    def slices(self, t: Tensor) -> Tensor:
        """``[..., out, in, *kernel]`` → ``[..., K, out, in]``."""
        k = self.spatial
        moved = t.movedim(tuple(range(-k, 0)), tuple(range(-k - 2, -2)))
        return moved.reshape(*t.shape[:-k - 2], -1, *t.shape[-k - 2:-k])

    def taps(self, t: Tensor) -> int:
        """K, the number of kernel positions of ``t``."""
        return math.prod(t.shape[-self.spatial:])

    def _value(self, w: Tensor) -> Tensor:
        return self.taps(w) * RMSToRMS()._value(self.slices(w)).amax(dim=-1)

    def _dual_value(self, g: Tensor) -> Tensor:
        return RMSToRMS()._dual_value(self.slices(g)).sum(dim=-1) / self.taps(g)

    def _dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        k = self.spatial
        slices = RMSToRMS._polar(self.slices(g), method, self) / self.taps(g)
        back = slices.reshape(*g.shape[:-k - 2], *g.shape[-k:], *g.shape[-k - 2:-k])
        return back.movedim(tuple(range(-k - 2, -2)), tuple(range(-k, 0)))

    def _dualize_rows(self, values: Tensor, shape: tuple[int, ...], method: str | None) -> Tensor:
        if len(shape) > 2 + self.spatial:  # stored values are whole kernels of a batch
            return self._dualize(values, method)
        raise ShapeError(
            f"{self.name} cannot dualize a sparse gradient that is sparse over output channels; "
            "convert it with g.to_dense() first"
        )


class Conv1D(ConvNorm):
    """The conv norm of nn.Conv1d, W ``[..., out, in, k]`` (see :class:`ConvNorm`)."""

    name = "conv1d"
    spatial = 1
    min_ndim = 3


class Conv2D(ConvNorm):
    """The conv norm of nn.Conv2d, W ``[..., out, in, kh, kw]``, K = kh·kw (see :class:`ConvNorm`)."""

    name = "conv2d"
    spatial = 2
    min_ndim = 4


class Conv3D(ConvNorm):
    """The conv norm of nn.Conv3d, W ``[..., out, in, kd, kh, kw]`` (see :class:`ConvNorm`)."""

    name = "conv3d"
    spatial = 3
    min_ndim = 5


def names() -> list[str]:
    """The canonical norm names :func:`get` understands (the built-in norms and every
    :class:`Norm` subclass defined since)."""
    return sorted(_CANONICAL)


def get(spec: "str | Norm") -> Norm:
    """Parse a norm from its name (see the module table) or pass a :class:`Norm` through.

    >>> get("RMS → RMS")
    RMSToRMS()
    """
    if isinstance(spec, Norm):
        return spec
    if not isinstance(spec, str):
        raise ConfigError(f"a norm is given by name or Norm object, got {type(spec).__name__}")
    key = _key(spec)
    key = _ALIASES.get(key, key)
    if key not in _CANONICAL:
        raise ConfigError(
            f"unknown norm {spec!r}; known norms: {', '.join(names())} "
            f"(aliases: {', '.join(sorted(_ALIASES))})"
        )
    return _CANONICAL[key]()
