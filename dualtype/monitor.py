"""Diagnostics: every layer seen in its own norm while training (docs/design.md §1, §3).

A :class:`Monitor` measures, at a chosen interval, for every parameter ``p`` of a
:class:`~dualtype.optim.ModularSGD` (or ``DistributedModularSGD``) with norm ``N_p`` and
target ``t_p``:

==================  ===========================================================================
``weight``          ‖w_p‖ in N_p. For ``rms->rms`` √(in/out)·σ_max(W) and for the conv norms
                    K·max_ij √(in/out)·σ_max(W_ij), σ_max by a warm-started Lanczos iteration
                    (12 matvec pairs W v, Wᵀu per measurement, :func:`spectral_norm_estimate`;
                    a lower bound, within 1% after warm-up on a drifting weight); the other
                    norms exactly (``Norm.value``).
``update``          ‖Δ_p‖ in N_p, measured from the weight change itself with the decoupled
                    decay taken out (where the norm decays): Δ_p = (1 − lr·wd)·w_before − w_after (= lr·t_p·dualize(u)).
``step_size``       lr·t_p, what ``update`` must be (§1: each parameter moves lr·target).
``update_ratio``    update / step_size; checked, not only reported (``update_tol``).
``grad_dual``       ‖g_p‖† (``Norm.dual_value``: for ``rms->rms`` √(out/in)·‖G‖_* = √(out/in)·Σσ_i).
                    For ``rms->rms`` and conv gradients the singular values come from one
                    spectrum per matrix (:func:`_spectrum`): the float64 SVD for float64
                    input, else √ of the eigenvalues of the smaller Gram matrix formed in
                    float64 (one thread: 0.65–0.75× the time of float32's SVD at 1024×784
                    and 1024×1024, 0.3× on a [4, 256, 1024] stack; ~20× more accurate on
                    the nuclear norm, within r·1e-7·σ_max of the float64 SVD, tested).
``alignment``       ⟨g, dualize(g)⟩ / ‖g‖† with the optimizer's kernel: 1 is the exact duality
                    map (§1); for ``rms->rms`` it is Σσ_i·p(σ_i)/Σσ_i, the kernel's output
                    singular values p(σ_i) weighted by σ_i, so it lies within the kernel's
                    accuracy contract (:func:`dualtype.kernels.orthogonalize`). For float32
                    and float64 gradients and the polynomial kernels (``auto``,
                    ``polar_express``, ``gram``, ``quintic``; ``svd``) it is evaluated that
                    way, p on the same spectrum (:func:`_kernel_map`, which equals the kernel
                    run in float64 to rounding, tested), instead of running the kernel again:
                    it leaves out the kernel's float32 rounding, which moved the alignment by
                    < 2e-5 (< 1e-4 asserted). ``cubic``, bf16/fp16 and complex gradients run
                    the kernel.
``momentum_cos``    cos(m, g) of the momentum buffer before the step and the new gradient
                    (AdamW groups: Adam's first moment).
==================  ===========================================================================

and, with ``activations=True``, the RMS of each parameterized layer's output (the modular norm
assumes well-normed layers, RMS ≈ 1, §3).

**Aggregates.** Per role and for the whole model, in the flattened modular norm of §3 with
c_p = t_p (the table's masses enter through the targets): ‖w‖ = max_p ‖w_p‖/t_p,
‖Δ‖ = max_p ‖Δ_p‖/t_p (= lr when every step is exact), ‖g‖† = Σ_p t_p·‖g_p‖†, alignment
Σ_p t_p·⟨g_p, d_p⟩ / Σ_p t_p·‖g_p‖†, and the cosine of momentum and gradient over all
entries. Parameters with target 0 and AdamW groups are left out of the aggregates.

**Cost.** Nothing runs between measurements: the user calls :meth:`Monitor.step` after each
``opt.step()``, an integer count; only before a due step does it attach one optimizer step
pre-hook and post-hook (and the forward hooks), which it removes after that step. A measured
step costs one symmetric eigenproblem per gradient matrix (an SVD for float64; the
``grad_dual`` and ``alignment`` rows above) and a few Lanczos matvecs per weight and update:
measured 0.42 of a step on an MLP 784-1024-1024-10 and 0.27 on a d=256 GPT, so 0.85% and
0.53% of the steps at ``every=50`` (BENCHMARKS.md, "Cost of the diagnostics").

**Distributed.** Under ``torch.distributed`` (DDP or FSDP2 with ``DistributedModularSGD``) the
per-parameter statistics are split across ranks by cost, sharded tensors are gathered whole
for the measurement, momentum dot products and activation sums come from every rank, and one
``all_reduce`` per measurement gives every rank the same record. Only rank 0 writes.
"""

from __future__ import annotations

import csv
import importlib
import json
import math
import os
import time
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from dualtype import norms as _norms
from dualtype.checks import is_int, is_real
from dualtype.errors import ConfigError, DualityError
from dualtype import kernels as _kernels
from dualtype.kernels.dtypes import accumulation_dtype
from dualtype.kernels.svd import scaled_for_svd
from dualtype.roles import owner_of, types_of
from dualtype.tensor import plain
from dualtype.trace import paused

__all__ = ["Monitor", "plot", "load", "spectral_norm_estimate", "STATS"]

#: per-parameter statistics, in record and CSV order
STATS = ("weight", "update", "step_size", "update_ratio", "grad_dual", "alignment", "momentum_cos")
_ROLE_ORDER = ("embedding", "hidden", "head", "conv", "gain", "bias", "other")
_COLD_STEPS = 20  # Lanczos steps on the first measurement of a matrix (no warm start yet)
_UPDATE_STEPS = 4  # Lanczos steps for an update's norm (see Monitor._norms_of)
# Columns of the per-rank statistics matrix [parameters, 7] that one all_reduce sums.
_W, _U, _GD, _PAIR, _MG, _MM, _GG = range(7)


def _acc(t: Tensor) -> Tensor:
    """``t``, plain and detached, in its accumulation dtype (float64 stays, bf16 → float32)."""
    t = plain(t).detach()
    return t.to(accumulation_dtype(t.dtype))


def _pairing(g: Tensor, d: Tensor, n: int = 1) -> Tensor:
    """⟨g, d⟩ = Re Σ conj(g)·d (§3) in the accumulation dtype, per item of a stack of ``n``."""
    a, b = _acc(g), _acc(d)
    density = (a.conj() * b).real if a.is_complex() else a * b
    return density.reshape(n, -1).sum(dim=1) if n > 1 else density.sum()


def _is_dtensor(t: Any) -> bool:
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False  # no DTensor without a process group (and no import of the package)
    from dualtype.distributed.optim import is_sharded_tensor

    return is_sharded_tensor(t)


def _unit(x: Tensor) -> tuple[Tensor, Tensor]:
    """(x/‖x‖, ‖x‖) over the last dim; a zero vector stays zero."""
    n = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return torch.where(n > 0, x / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(x)), n.squeeze(-1)


def spectral_norm_estimate(w: Tensor, v: Tensor | None, steps: int = 12,
                           generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """σ_max of each matrix of ``w`` ``[..., out, in]`` by a warm-started Lanczos iteration.

    Golub–Kahan–Lanczos bidiagonalization from the unit vector ``v`` ``[..., in]`` (the
    previous call's, or None: a random start from ``generator`` with ``_COLD_STEPS`` steps):
    each step is one matvec pair W v, Wᵀu (the power iteration's cost) and builds
    W V_k = U_k B_k with B_k ``[k, k]`` upper bidiagonal; σ_max(B_k) ≤ σ_max(W) approaches it
    from below much faster than the power iteration's ‖WᵀWv‖/‖Wv‖, which matters because
    orthogonalized updates flatten the spectrum (measured on the example GPT, tests/
    test_monitor.py). Returns (σ ``[...]``, the next warm start ``[..., in]``: B_k's top right
    singular vector mapped back), in float32 (float64 for float64 input) on ``w``'s device.
    A zero matrix gives σ = 0.
    """
    w = _acc(w)
    if v is None or v.shape != w.shape[:-2] + w.shape[-1:] or v.device != w.device:
        v = _unit(torch.randn(w.shape[:-2] + w.shape[-1:], generator=generator, dtype=w.dtype).to(w.device))[0]
        steps = max(steps, _COLD_STEPS)
    start = v

    def mv(a: Tensor, x: Tensor) -> Tensor:
        # a x as the row vector xᵀaᵀ: for a stack of matrices torch's CPU bmm with one column
        # took 15-40x longer than with one row (measured at [4, 256, 1024], one thread)
        return (x.unsqueeze(-2) @ a.mT).squeeze(-2)

    def orth(x: Tensor, basis: list[Tensor]) -> Tensor:
        # full reorthogonalization x − Q Qᵀx, twice ("twice is enough" for classical
        # Gram-Schmidt); a remainder at rounding level is a breakdown (the Krylov space is
        # exhausted) and becomes zero instead of a normalized rounding error
        q = torch.stack(basis, dim=-1)  # [..., n, j]
        size = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        for _ in range(2):
            x = x - mv(q, mv(q.mT, x))
        small = torch.linalg.vector_norm(x, dim=-1, keepdim=True) <= 64 * torch.finfo(x.dtype).eps * size
        return torch.where(small, torch.zeros_like(x), x)

    V, U, alpha, beta = [v], [], [], []
    u, a = _unit(mv(w, v))  # W v₁ = α₁u₁
    for j in range(steps):
        U.append(u)
        alpha.append(a)
        if j == steps - 1:
            break
        v, b = _unit(orth(mv(w.mT, u) - a.unsqueeze(-1) * V[-1], V))  # Wᵀu_j = α_j v_j + β_j v_{j+1}
        V.append(v)
        beta.append(b)
        u, a = _unit(orth(mv(w, v) - b.unsqueeze(-1) * u, U))  # W v_{j+1} = β_j u_j + α_{j+1} u_{j+1}
    k = len(alpha)
    B = w.new_zeros(w.shape[:-2] + (k, k))
    for j in range(k):
        B[..., j, j] = alpha[j]
        if j + 1 < k:
            B[..., j, j + 1] = beta[j]
    _, S, Vh = torch.linalg.svd(B)
    nxt = _unit(sum(Vh[..., 0, j: j + 1] * V[j] for j in range(k)))[0]
    nxt = torch.where((torch.linalg.vector_norm(nxt, dim=-1) > 0).unsqueeze(-1), nxt, start)
    return S[..., 0], nxt


def _spectrum(mats: Tensor) -> Tensor:
    """The singular values σ ``[..., min(m, n)]`` of each matrix of ``mats`` ``[..., m, n]``,
    in float64 (ascending for real input below float64).

    Real input below float64 (float32, bf16, fp16): √λ of the eigenvalues of the smaller Gram
    matrix (G Gᵀ or GᵀG) formed and decomposed in float64, a symmetric eigenproblem of the
    short side instead of an SVD. Squaring costs half the digits of the small singular values:
    σ_i is within ~√(eps₆₄)·σ_max ≈ 1e-8·σ_max, so Σσ_i is within ~r·1e-8·σ_max of
    the exact sum (float32's own SVD: r·1e-7·σ_max); tests/test_monitor.py checks it against
    the float64 SVD, rank-deficient gradients included. Rounding can make a zero eigenvalue
    slightly negative: clamped to 0. float64 and complex input (no wider dtype to square in)
    and devices without float64 keep the SVD (as ``Norm.dual_value``).
    """
    if mats.is_complex() or mats.dtype == torch.float64 or mats.device.type == "mps":
        y, scale = scaled_for_svd(_acc(mats))  # as RMSToRMS's own norms: an exactly rescaled copy
        sigma = torch.linalg.svdvals(y) * scale.squeeze(-1)
        return sigma.to("cpu" if sigma.device.type == "mps" else sigma.device, torch.float64)
    g = plain(mats).detach().to(torch.float64)
    gram = _lower_gram(g if g.shape[-2] <= g.shape[-1] else g.mT)
    # every entry of g enters one diagonal entry Σ_k g_ik² of the Gram matrix (float32's and
    # bf16's largest squares cannot overflow float64): a finite diagonal means a finite g
    finite = torch.isfinite(gram.diagonal(dim1=-2, dim2=-1)).all(dim=-1, keepdim=True)
    if bool(finite.all()):
        return torch.linalg.eigvalsh(gram, UPLO="L").clamp_min(0).sqrt()
    # NaN/Inf in a matrix: its singular values are NaN (no LAPACK call on it), the others exact
    gram = torch.where(finite.unsqueeze(-1), gram, torch.zeros_like(gram))
    return torch.where(finite, torch.linalg.eigvalsh(gram, UPLO="L").clamp_min(0).sqrt(), float("nan"))


def _lower_gram(a: Tensor, panels: int = 4) -> Tensor:
    """The lower triangle of a aᵀ for ``a`` ``[..., r, k]`` (the upper one stays zero), which
    is all ``eigvalsh(UPLO="L")`` reads: row panel i times the rows up to its end, in
    ``panels`` products, about 5/8 of the full product's work (measured 0.6× its time at
    1024×1024 in float64, one thread)."""
    r = a.shape[-2]
    if r < 64:
        return a @ a.mT
    s = a.new_zeros(a.shape[:-2] + (r, r))
    edges = [r * i // panels for i in range(panels + 1)]
    for lo, hi in zip(edges, edges[1:]):
        s[..., lo:hi, :hi] = a[..., lo:hi, :] @ a[..., :hi, :].mT
    return s


def _kernel_map(sigma: Tensor, shape: tuple[int, int], method: str | None, work: torch.dtype) -> Tensor | None:
    """p(σ): the singular values ``orthogonalize(G, method)`` gives G's singular values σ
    ``[..., r]`` (float64, one row per matrix of shape ``shape``, in working dtype ``work``),
    in exact arithmetic; None where the monitor must run the kernel instead.

    Every iterative kernel maps U Σ Vᵀ to U p(Σ) Vᵀ (odd matrix polynomials leave the singular
    vectors alone, :mod:`dualtype.kernels.coefficients`): σ ↦ x = σ/‖G‖_F, for the Polar
    Express schedule (``auto``, ``polar_express``, ``gram``) x ↦ x/s with the kernel's
    tightened bound s = ‖S²‖_F^{1/4} = (Σx⁸)^{1/8}, then its quintics a·x + b·x³ + c·x⁵ in
    turn (the same schedule the kernel reads); ``svd`` (and ``auto`` in float64) keeps
    σ > max(m, n)·eps·σ_max at 1 and drops the rest. tests/test_monitor.py checks that
    ⟨G, orthogonalize(G)⟩ = Σσ·p(σ) in float64 to rounding for every method here. None for
    ``cubic`` (its step count depends on the data), for 16-bit working dtypes (the kernel's
    bf16/fp16 rounding is part of what the alignment shows) and complex input.
    """
    method = _kernels.DEFAULT_METHOD if method is None else method
    if work not in (torch.float32, torch.float64):
        return None
    if method == "svd" or (method == "auto" and work == torch.float64):
        tol = sigma.amax(dim=-1, keepdim=True) * max(shape) * torch.finfo(work).eps
        return (sigma > tol).to(sigma.dtype)
    if method == "quintic":
        schedule, tighten = [_kernels.QUINTIC_MUON] * 5, False
    elif method in ("auto", "polar_express", "gram"):  # float32/float64: one schedule for all three
        k = _kernels  # the kernel's defaults: steps, lower bound, safety of float32/64, cushion
        schedule, tighten = k.polar_express_schedule(k.PE_LOWER, k.PE_STEPS, k.PE_SAFETY_DEFAULT, k.PE_CUSHION), True
    else:
        return None
    frobenius = sigma.pow(2).sum(dim=-1, keepdim=True).sqrt()
    x = sigma / torch.where(frobenius > 0, frobenius, torch.ones_like(frobenius))
    for t, (a, b, c) in enumerate(schedule):
        if t == 0 and tighten:
            bound = x.pow(8).sum(dim=-1, keepdim=True).pow(0.125)
            x = x / torch.where(bound > 0, bound, torch.ones_like(bound))
        x2 = x * x
        x = x * (a + x2 * (b + c * x2))
    return x


def _buckets(items: list[tuple[int, "_Entry", Tensor]]) -> list[tuple[_norms.Norm, Any, list]]:
    """(norm, kernel method, items) per group of same norm, shape, dtype, device and method
    (what the optimizer batches), in a fixed order: every rank forms the same groups."""
    groups: dict[tuple, list] = {}
    for item in items:
        _, e, t = item
        norm = e.norm
        key = ((norm.name, tuple(t.shape), t.dtype, t.device, e.group.get("method"), e.adamw)
               if norm.batchable else ("single", item[0]))
        groups.setdefault(key, []).append(item)
    return [(items[0][1].norm, items[0][1].group.get("method"), items) for items in groups.values()]


def _spectral_duals(norm: _norms.Norm, stack: Tensor, method: str | None, n: int,
                    pairing: bool) -> tuple[Tensor, Tensor | None] | None:
    """(‖g‖† ``[n]``, ⟨g, dualize(g)⟩ ``[n]`` or None) of a bucket of ``rms->rms`` or conv
    gradients from one spectrum per matrix (:func:`_spectrum`): ‖G‖† = √(out/in)·Σσ and
    ⟨G, √(out/in)·U p(Σ) Vᵀ⟩ = √(out/in)·Σσ·p(σ) with the kernel's map p
    (:func:`_kernel_map`), both ÷K over a conv's K taps. The pairing is None where the map
    is not known (the caller runs the kernel); the whole result is None for other norms (and
    subclasses that change the dual norm or the map), for complex, sparse or empty gradients
    (the caller asks the norm)."""
    base = next((b for b in (_norms.RMSToRMS, _norms.ConvNorm) if isinstance(norm, b)), None)
    if (base is None or any(getattr(type(norm), f) is not getattr(base, f) for f in ("_dual_value", "_dualize"))
            or stack.layout != torch.strided or stack.is_complex() or stack.numel() == 0):
        return None
    norm.check(stack, "gradient")  # what Norm.dual_value would raise
    if base is _norms.ConvNorm:  # [..., K, o, i]: ‖G‖† = Σ_j ‖G_j‖†/K (§3)
        mats, taps = norm.slices(stack), norm.taps(stack)
    else:
        mats, taps = stack, 0
    out, inp = mats.shape[-2:]
    sigma = _spectrum(mats)
    per_matrix = math.sqrt(out / inp) * sigma.sum(dim=-1)
    gd = _per_item(per_matrix.sum(dim=-1) / taps if taps else per_matrix, n)
    p = _kernel_map(sigma, (out, inp), method, stack.dtype) if pairing else None
    if p is None:
        return gd, None
    pair = math.sqrt(out / inp) / (taps or 1) * (sigma * p).sum(dim=-1)
    return gd, _per_item(pair, n, reduce="sum")


def _stack(tensors: list[Tensor], norm: _norms.Norm) -> Tensor:
    """One tensor for a bucket: stacked along a new batch dim when the norm is batchable."""
    return torch.stack(tensors) if norm.batchable else tensors[0]


def _per_item(values: Tensor, n: int, reduce: str = "amax") -> Tensor:
    """``[n]`` float64: the largest value per item (a parameter with batch dims of its own
    has one norm per matrix; its norm is their max), or with ``reduce="sum"`` their sum."""
    values = values.detach().cpu().to(torch.float64)  # to the host first: not every device has float64
    if not values.numel():
        return torch.zeros(n, dtype=torch.float64)
    values = values.reshape(n, -1)
    return values.sum(dim=1) if reduce == "sum" else values.amax(dim=1)


class _Entry:
    """One parameter as the optimizer steps it (``param``: the tensor, or FSDP2's local shard
    view; ``source``: the DTensor parameter under FSDP2, else None)."""

    __slots__ = ("name", "param", "source", "group", "index", "role", "owner")

    def __init__(self, name: str, param: Tensor, source: Any, group: dict, index: int, role: str) -> None:
        self.name, self.param, self.source, self.group, self.index, self.role = name, param, source, group, index, role
        self.owner = 0

    @property
    def norm(self) -> _norms.Norm:
        return _norms.get(self.group["norms"][self.index])

    @property
    def target(self) -> float:
        return float(self.group["targets"][self.index])

    @property
    def adamw(self) -> bool:
        return self.group.get("algorithm", "modular") == "adamw"

    @property
    def sharded(self) -> bool:
        return _is_dtensor(self.source) and any(pl.is_shard() for pl in self.source.placements)

    def full(self, local: Tensor) -> Tensor:
        """The whole tensor of which ``local`` is this rank's shard (a collective under FSDP2)."""
        if not _is_dtensor(self.source):
            return local
        from torch.distributed.tensor import DTensor

        return DTensor.from_local(local, self.source.device_mesh, self.source.placements, run_check=False,
                                  shape=self.source.shape, stride=self.source.stride()).full_tensor()

    def grad(self) -> Tensor | None:
        """This rank's gradient (local shard under FSDP2), as the step will read it."""
        g = self.source.grad if _is_dtensor(self.source) else self.param.grad
        return None if g is None else (g.to_local() if _is_dtensor(g) else g)


class Monitor:
    """Per-parameter statistics of a dualtype optimizer every ``every`` steps.

    Usage::

        opt = dualtype.ModularSGD(model)
        mon = dualtype.Monitor(opt, every=50, path="runs/stats.jsonl")
        for x, y in data:
            loss_fn(model(x), y).backward()
            opt.step()
            mon.step()          # after opt.step(), before the next backward; free between measurements
            opt.zero_grad()
        mon.close()
        dualtype.monitor.plot(mon, "runs/layer_norms.png")

    Args:
        optimizer: a :class:`~dualtype.optim.ModularSGD` (its param groups carry each
            parameter's name, norm and target), including ``DistributedModularSGD`` and
            ``"algorithm": "adamw"`` groups.
        every: measure optimizer steps every, 2·every, ... (an integer ≥ 1; steps counted by
            :meth:`step` from 1).
        path: a JSONL file, one record per measurement; a CSV with one row per (step,
            parameter/role/model/layer) is written next to it (same name, ``.csv``). None: keep
            the records in memory only (:attr:`records`).
        model: the model (or its DDP wrapper), for roles and activation hooks; default: the
            model the optimizer's parameters belong to.
        activations: also record the RMS of each parameterized layer's output in the
            forward of a measured step (forward hooks attached for that step only; forwards
            without grad, such as evaluation, are not counted).
        writer: a TensorBoard ``SummaryWriter`` (anything with ``add_scalar(tag, value, step)``),
            or a log directory to create one in (needs the ``tensorboard`` package).
        spectral: ``"lanczos"`` (a warm-started Lanczos iteration for ``rms->rms`` and conv
            weights, :func:`spectral_norm_estimate`) or ``"exact"`` (SVD: ~44× the time at
            1024×1024, BENCHMARKS.md).
        spectral_steps: matvec pairs per measurement (the first of a matrix runs 20). One
            pair per measurement, the plain warm-started power iteration, underestimated
            σ_max by 6–21% on the example GPT every 25 steps: orthogonalized updates keep
            the spectrum flat.
        update_tol: raise :class:`~dualtype.errors.DualityError` when a parameter's measured
            update differs from lr·target by more than this fraction (the default kernel's
            output singular values stay within [0.85, 1.09] by its contract; a larger gap
            means the weight changed outside the optimizer's step). None: report only. Not checked for 16-bit weights, whose
            rounding changes the step.
        process_group: the group to reduce over (default: the optimizer's, else the default
            group when ``torch.distributed`` is initialized with more than one rank).

    Raises:
        ConfigError: ``every`` is not an integer ≥ 1, ``optimizer`` is not a dualtype
            optimizer, ``spectral``/``spectral_steps``/``update_tol`` are invalid, or
            ``activations=True`` with no model to hook.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        every: int = 50,
        path: "str | os.PathLike | None" = None,
        *,
        model: nn.Module | None = None,
        activations: bool = False,
        writer: Any = None,
        spectral: str = "lanczos",
        spectral_steps: int = 12,
        update_tol: float | None = 0.1,
        process_group: Any = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer) or not all(
                {"names", "norms", "targets"} <= g.keys() for g in optimizer.param_groups):
            raise ConfigError(
                f"Monitor needs a dualtype optimizer (ModularSGD or DistributedModularSGD), got "
                f"{type(optimizer).__name__}: its param groups must name each parameter's norm and target; "
                "use dualtype.ModularSGD(model)")
        if not is_int(every) or every < 1:
            raise ConfigError(f"Monitor: every must be an integer ≥ 1 (measure every N optimizer steps), got {every!r}")
        if spectral not in ("lanczos", "exact"):
            raise ConfigError(f"Monitor: spectral must be 'lanczos' or 'exact', got {spectral!r}")
        if not is_int(spectral_steps) or spectral_steps < 1:
            raise ConfigError(f"Monitor: spectral_steps must be an integer ≥ 1, got {spectral_steps!r}")
        if update_tol is not None and not (is_real(update_tol) and update_tol > 0):
            raise ConfigError(f"Monitor: update_tol must be a number > 0 or None, got {update_tol!r}")
        self.optimizer = optimizer
        self.every = every
        self.spectral = spectral
        self.spectral_steps = spectral_steps
        self.update_tol = update_tol
        self.model = self._find_model(model)
        if activations and self.model is None:
            raise ConfigError("Monitor(activations=True) needs the model to hook: Monitor(opt, model=model, ...)")
        self.activations = bool(activations)
        self.records: list[dict] = []
        self.steps = 0  # optimizer steps seen by step()
        self._group = process_group
        self._vectors: dict[tuple, Tensor] = {}  # Lanczos warm starts, by (column, names of a bucket)
        self._generator = torch.Generator().manual_seed(0)  # never the user's RNG stream
        self._handles: list = []
        self._layers: list[tuple[str, str, nn.Module]] = []  # (name, its main parameter, module)
        self._act: dict[str, list] = {}
        self._capture: dict | None = None
        self._stepped = False
        self._path = None if path is None else os.fspath(path)
        self._files: dict[str, Any] = {}
        self._csv = None
        if writer is not None and not hasattr(writer, "add_scalar"):
            if not isinstance(writer, (str, os.PathLike)):
                raise ConfigError(f"Monitor: writer must be a SummaryWriter or a log directory, got {type(writer).__name__}")
            try:
                importlib.import_module("torch.utils.tensorboard")  # optional: only for a log directory
            except ImportError:
                raise ConfigError("Monitor(writer=<log dir>) needs TensorBoard: pip install tensorboard "
                                  "(or pass writer=None and read the JSONL/CSV)") from None
        self._writer = writer  # a log directory becomes a SummaryWriter on rank 0's first write
        self._owns_writer = False
        if self._due(1):
            self._arm()

    # --- the schedule --------------------------------------------------------------------

    def _due(self, step: int) -> bool:
        return step % self.every == 0

    def step(self) -> dict | None:
        """Count one optimizer step; call it after every ``opt.step()``.

        Returns the record of this step if it was measured (also appended to
        :attr:`records` and written), else None. Between measurements this is an integer
        increment: no hook of the monitor is attached.
        """
        self.steps += 1
        record = None
        if self._capture is not None and self._stepped:
            record = self._finish(self.steps)
        self._capture, self._stepped = None, False  # a step that raised is not measured
        if self._due(self.steps + 1):
            self._arm()
        elif self._handles:
            self._disarm()
        return record

    def _arm(self) -> None:
        self._capture, self._stepped = None, False
        if self._handles:
            self._reset_activations()
            return
        opt = self.optimizer
        self._handles = [opt.register_step_pre_hook(self._pre_step), opt.register_step_post_hook(self._post_step)]
        if self.activations:
            if not self._layers:
                self._layers = self._find_layers()
            self._handles += [m.register_forward_hook(self._forward_hook(name)) for name, _, m in self._layers]
            self._reset_activations()

    def _disarm(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._capture = None

    # --- hooks (attached for a measured step only) -----------------------------------------

    def _pre_step(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        """Before the step: the weights, lr and wd as the step sees them, and the momentum's
        dot products with the new gradient (the buffer is overwritten by the step)."""
        # A subclass whose step calls super().step() may fire this twice: the last capture wins.
        entries = self._entries()
        world, rank = self._world()
        # owner's values in _W.._PAIR (NaN: nothing to measure), every rank's sums in _MG.._GG
        stats = torch.zeros(len(entries), 7, dtype=torch.float64)
        stats[[k for k, e in enumerate(entries) if e.owner == rank], :_MG] = float("nan")
        before, present = [], []
        for k, e in enumerate(entries):
            g = e.grad()
            present.append(g is not None)
            before.append(e.param.detach().clone() if g is not None else None)
            buf = opt.state.get(e.param, {}).get("exp_avg" if e.adamw else "momentum_buffer")
            if g is not None and buf is not None and (e.owner == rank or e.sharded):  # a sum over shards
                m, gl = _acc(buf), _acc(g)
                stats[k, _MG] = float(_pairing(m, gl))
                stats[k, _MM] = float(_pairing(m, m))
                stats[k, _GG] = float(_pairing(gl, gl))
        self._capture = {"entries": entries, "stats": stats, "before": before, "present": present,
                         "lr": [(e.group["lr"], e.group.get("weight_decay", 0.0) if e.adamw or e.norm.decays else 0.0)
                                for e in entries]}

    def _post_step(self, opt: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        """After the step returned (its writes are done): the gradient's dual norm and the
        alignment, under the norms the step used (it re-reads the model's table first)."""
        cap = self._capture
        if cap is None or self._stepped:  # nothing captured, or the inner call of a nested step
            return
        self._stepped = True
        _, rank = self._world()
        grads = []
        for k, e in enumerate(cap["entries"]):
            g = e.grad()
            if g is not None and cap["present"][k]:
                full_g = e.full(plain(g))
                if e.owner == rank:
                    grads.append((k, e, full_g))
        stats = cap["stats"]
        for norm, method, items in _buckets(grads):
            ks, stack = [k for k, _, _ in items], _stack([t for _, _, t in items], norm)
            adamw = items[0][1].adamw
            spectral = _spectral_duals(norm, stack, method, len(items), pairing=not adamw)
            if spectral is not None:
                gd, pair = spectral
            else:
                gd = _per_item(norm.dual_value(stack), len(items))
                pair = None
            stats[ks, _GD] = gd
            if not adamw:  # ⟨g, dualize(g)⟩ with the optimizer's kernel (§1)
                if pair is None:
                    pair = _per_item(_pairing(stack, norm.dualize(stack, method), len(items)), len(items))
                stats[ks, _PAIR] = torch.where(gd > 0, pair, float("nan"))

    def _forward_hook(self, name: str):
        acc = self._act

        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if not torch.is_grad_enabled():
                return  # an evaluation forward, not the step's
            out = output
            while isinstance(out, (tuple, list)) and out:
                out = out[0]
            if isinstance(out, Tensor) and out.numel() and (out.is_floating_point() or out.is_complex()):
                with torch.no_grad(), paused():  # the monitor's arithmetic is not the model's graph
                    sums = acc[name]
                    sums[0] = sums[0] + _acc(out).abs().pow(2).sum()
                    sums[1] += out.numel()

        return hook

    def _reset_activations(self) -> None:
        self._act.clear()
        self._act.update({name: [0.0, 0] for name, _, _ in self._layers})

    def _layer_roles(self) -> list[tuple[str, str]]:
        """(layer, role of its main parameter), read now: the table may have changed since the
        hooks were attached (the first forward is recorded then)."""
        roles = self._roles()
        return [(name, roles.get(main, "other")) for name, main, _ in self._layers]

    # --- measuring -----------------------------------------------------------------------

    def _finish(self, step: int) -> dict:
        """After the step: weight and update norms, the reduction, the record, the writes."""
        cap, self._capture, self._stepped = self._capture, None, False
        entries, stats = cap["entries"], cap["stats"]
        world, rank = self._world()
        weights, deltas = [], []
        for k, e in enumerate(entries):
            w = e.full(plain(e.param.detach()))
            if e.owner == rank:
                weights.append((k, e, w))
            if cap["present"][k]:
                lr, wd = cap["lr"][k]
                delta = e.full(plain(cap["before"][k]) * (1.0 - lr * wd) - plain(e.param.detach()))  # §1: Δ without decay
                if e.owner == rank:
                    deltas.append((k, e, delta))
        for column, found in ((_W, weights), (_U, deltas)):
            for norm, _, items in _buckets(found):
                stats[[k for k, _, _ in items], column] = self._norms_of(norm, items, column)
        acts = self._layer_roles() if self.activations else []
        act = torch.tensor([[float(self._act[n][0]), float(self._act[n][1])] for n, _ in acts],
                           dtype=torch.float64).reshape(-1, 2)
        if world > 1:
            import torch.distributed as dist

            device = entries[0].param.device if entries else torch.device("cpu")
            # one sum: the values (other ranks hold 0 where they do not own), the activation
            # sums, and where the owner found nothing to measure (NaN stays NaN)
            both = torch.cat([torch.nan_to_num(stats, nan=0.0).flatten(), act.flatten(),
                              torch.isnan(stats).double().flatten()]).to(device)
            dist.all_reduce(both, group=self._group)
            both = both.cpu()
            n, m = stats.numel(), act.numel()
            stats = torch.where(both[n + m:].view_as(stats) > 0, float("nan"), both[:n].view_as(stats))
            act = both[n: n + m].view_as(act)
        self._reset_activations()
        record = self._record(step, entries, stats, cap, acts, act)
        self.records.append(record)
        if rank == 0:
            self._write(record)
        self._check(record, entries)
        return record

    def _norms_of(self, norm: _norms.Norm, items: list[tuple[int, _Entry, Tensor]], column: int) -> Tensor:
        """‖x‖ of same-shape weights or updates (``column``) ``[B]``: the spectral norms by
        Lanczos (warm-started per bucket and column), the others exactly."""
        stack = _stack([w for _, _, w in items], norm)
        spectral = isinstance(norm, (_norms.RMSToRMS, _norms.ConvNorm)) and not isinstance(norm, _norms.Transposed)
        if self.spectral == "exact" or not spectral or stack.is_complex() or stack.numel() == 0:
            return _per_item(norm.value(stack), len(items))
        if isinstance(norm, _norms.ConvNorm):  # K slices [..., K, o, i]; ‖W‖ = K·max_j ‖W_j‖ (§3)
            mats, scale = norm.slices(stack), norm.taps(stack)
        else:
            mats, scale = stack, 1.0
        out, inp = mats.shape[-2:]
        key = (column, *(e.name for _, e, _ in items))
        # an update is lr·target·√(out/in)·(kernel's polar factor): its spectrum is flat by
        # construction, so 4 steps find its top (a weight's needs the full spectral_steps)
        steps = self.spectral_steps if column == _W else min(self.spectral_steps, _UPDATE_STEPS)
        sigma, self._vectors[key] = spectral_norm_estimate(mats, self._vectors.get(key), steps, self._generator)
        return _per_item(scale * math.sqrt(inp / out) * sigma, len(items))  # √(in/out)·σ_max (§3)

    def _record(self, step: int, entries: list[_Entry], stats: Tensor, cap: dict,
                acts: list[tuple[str, str]], act: Tensor) -> dict:
        def num(x: float) -> float | None:
            return None if math.isnan(x) else x

        params, sums = {}, {}
        for k, e in enumerate(entries):
            s = stats[k].tolist()
            lr = cap["lr"][k][0]
            size = None if e.adamw else lr * e.target
            update, gd, cos = num(s[_U]), num(s[_GD]), math.sqrt(s[_MM] * s[_GG])
            params[e.name] = {
                "role": e.role, "norm": e.norm.name, "target": e.target, "lr": lr,
                "algorithm": e.group.get("algorithm", "modular"),
                "weight": num(s[_W]), "update": update, "step_size": size,
                "update_ratio": update / size if update is not None and size else None,
                "grad_dual": gd,
                "alignment": s[_PAIR] / gd if gd and not math.isnan(s[_PAIR]) else None,
                "momentum_cos": s[_MG] / cos if cap["present"][k] and cos > 0 else None,
            }
            sums[e.name] = (num(s[_PAIR]), s[_MG], s[_MM], s[_GG])
        roles = _ordered({row["role"] for row in params.values()})
        record = {
            "step": step, "time": time.time(), "params": params,
            "roles": {r: _aggregate([(row, sums[n]) for n, row in params.items() if row["role"] == r]) for r in roles},
            "model": _aggregate([(row, sums[n]) for n, row in params.items()]),
        }
        if acts:
            record["activations"] = {n: {"role": role, "rms": math.sqrt(a[0] / a[1]) if a[1] else None}
                                     for (n, role), a in zip(acts, act.tolist())}
        return record

    def _check(self, record: dict, entries: list[_Entry]) -> None:
        """The update of every parameter is lr·target in its norm (§1): assert it."""
        if self.update_tol is None:
            return
        for e in entries:
            row = record["params"][e.name]
            ratio = row["update_ratio"]
            if ratio is None or ratio == 0 or e.param.element_size() < 4:
                continue  # no step (no gradient, zero update), AdamW, or 16-bit rounding
            if abs(ratio - 1) > self.update_tol:
                raise DualityError(
                    f"step {record['step']}: '{e.name}' moved {row['update']:.4g} in {row['norm']}, but its step "
                    f"is lr·target = {row['step_size']:.4g} (ratio {ratio:.3f}, tolerance ±{self.update_tol:g}): "
                    "the weight changed outside the optimizer's update (another optimizer, a manual write, a "
                    "second step between opt.step() and Monitor.step()). Pass update_tol=None to only report it.")

    # --- what is measured ---------------------------------------------------------------

    def _find_model(self, model: nn.Module | None) -> nn.Module | None:
        if model is not None:
            if not isinstance(model, nn.Module):
                raise ConfigError(f"Monitor: model must be an nn.Module, got {type(model).__name__}")
            return getattr(model, "module", model) if type(model).__name__ == "DistributedDataParallel" else model
        for p in self._sources():
            found = owner_of(p)
            if found is not None:
                return found[0].model
        return None

    def _sources(self) -> Iterable[Tensor]:
        views = self._shard_views()
        for g in self.optimizer.param_groups:
            for name, p in zip(g["names"], g["params"]):
                yield views[name][0] if name in views else p

    def _shard_views(self) -> dict[str, tuple[Tensor, Tensor]]:
        views = getattr(self.optimizer, "shard_views", None)
        return views() if callable(views) else {}

    def _roles(self) -> dict[str, str]:
        if self.model is None:
            return {}
        table = types_of(self.model).table
        return {r.name: r.role for r in table}

    def _entries(self) -> list[_Entry]:
        views, roles = self._shard_views(), self._roles()
        entries = []
        for g in self.optimizer.param_groups:
            for i, (name, p) in enumerate(zip(g["names"], g["params"])):
                source = views[name][0] if name in views else None
                role = roles.get(name)
                if role is None:
                    found = owner_of(source if source is not None else p)
                    role = found[0].table[found[1]].role if found is not None else "other"
                entries.append(_Entry(name, p, source, g, i, role))
        world, _ = self._world()
        if world > 1:  # the same plan on every rank: balanced by the cost of a duality map
            from dualtype.distributed.plan import assign, dualize_cost

            owners = assign([dualize_cost(tuple((e.source if e.source is not None else e.param).shape), e.norm)
                             for e in entries], world)
            for e, r in zip(entries, owners):
                e.owner = r
        return entries

    def _world(self) -> tuple[int, int]:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return 1, 0
        if self._group is None:
            self._group = getattr(self.optimizer, "process_group", None)
        return dist.get_world_size(self._group), dist.get_rank(self._group)

    def _find_layers(self) -> list[tuple[str, str, nn.Module]]:
        """(name, main parameter, module) of every module that directly owns an optimized
        parameter (the main parameter, whose role the layer takes, is its weight)."""
        stepped = {name for g in self.optimizer.param_groups for name in g["names"]}
        layers = []
        for mname, module in self.model.named_modules():
            own = [f"{mname}.{pn}" if mname else pn for pn, _ in module.named_parameters(recurse=False)]
            own = [n for n in own if n in stepped]
            if own:
                main = next((n for n in own if n.endswith("weight")), own[0])
                layers.append((mname or "root", main, module))
        return layers

    # --- output ---------------------------------------------------------------------------

    def _write(self, record: dict) -> None:
        if self._path is not None:
            if not self._files:
                os.makedirs(os.path.dirname(os.path.abspath(self._path)), exist_ok=True)
                self._files["jsonl"] = open(self._path, "w", encoding="utf-8")
                self._files["csv"] = open(os.path.splitext(self._path)[0] + ".csv", "w", newline="", encoding="utf-8")
                self._csv = csv.writer(self._files["csv"])
                self._csv.writerow(["step", "scope", "name", "role", "norm", "target", *STATS, "rms"])
            self._files["jsonl"].write(json.dumps(record) + "\n")
            self._files["jsonl"].flush()
            for row in _csv_rows(record):
                self._csv.writerow(row)
            self._files["csv"].flush()
        writer = self._tensorboard()
        if writer is not None:
            for scope, name, row in _scopes(record):
                for stat in (*STATS, "rms"):
                    if row.get(stat) is not None:
                        writer.add_scalar(f"{stat}/{scope}/{name}" if scope != "model" else f"{stat}/model",
                                          row[stat], record["step"])

    def _tensorboard(self) -> Any:
        if self._writer is None or hasattr(self._writer, "add_scalar"):
            return self._writer
        from torch.utils.tensorboard import SummaryWriter  # checked in __init__

        self._writer, self._owns_writer = SummaryWriter(os.fspath(self._writer)), True
        return self._writer

    def close(self) -> None:
        """Remove any hook, close the files (and a SummaryWriter the monitor created)."""
        self._disarm()
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._owns_writer:
            self._writer.close()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def plot(self, path: "str | os.PathLike | None" = None, **kwargs: Any) -> Any:
        """:func:`plot` of this monitor's records."""
        return plot(self.records, path, **kwargs)


def _aggregate(rows: list[tuple[dict, tuple]]) -> dict:
    """The flattened modular norm over ``rows`` (§3, c_p = target): max ‖w‖/t, max ‖Δ‖/t,
    Σ t·‖g‖†, Σ t·⟨g, d⟩ / Σ t·‖g‖†, and cos(m, g) over all their entries. A row is a
    parameter's record and its sums (⟨g, d⟩, ⟨m, g⟩, ‖m‖², ‖g‖²)."""
    rows = [(r, s) for r, s in rows if r["algorithm"] == "modular" and r["target"] > 0]

    def top(key: str) -> float | None:
        vals = [r[key] / r["target"] for r, _ in rows if r[key] is not None]
        return max(vals) if vals else None

    dual = [(r["target"] * r["grad_dual"], r["target"] * s[0]) for r, s in rows if r["grad_dual"] is not None]
    total = sum(d for d, _ in dual)
    mg, mm, gg = (sum(s[i] for _, s in rows) for i in (1, 2, 3))
    return {"count": len(rows), "weight": top("weight"), "update": top("update"),
            "grad_dual": total if dual else None,
            "alignment": sum(p for _, p in dual if p is not None) / total if total > 0 else None,
            "momentum_cos": mg / math.sqrt(mm * gg) if mm > 0 and gg > 0 else None}


def _ordered(keys: Iterable[str]) -> list[str]:
    keys = list(keys)
    return [r for r in _ROLE_ORDER if r in keys] + sorted(k for k in keys if k not in _ROLE_ORDER)


def _scopes(record: dict) -> Iterable[tuple[str, str, dict]]:
    """(scope, name, row) for every row of a record: params, roles, the model, layers."""
    for name, row in record["params"].items():
        yield "param", name, row
    for role, row in record["roles"].items():
        yield "role", role, row
    yield "model", "model", record["model"]
    for name, row in record.get("activations", {}).items():
        yield "activation", name, row


def _csv_rows(record: dict) -> Iterable[list]:
    def cell(x: Any) -> Any:
        return "" if x is None else x

    for scope, name, row in _scopes(record):
        role = name if scope == "role" else row.get("role", "")
        yield [record["step"], scope, name, role, row.get("norm", ""), cell(row.get("target")),
               *(cell(row.get(s)) for s in STATS), cell(row.get("rms"))]


def load(path: "str | os.PathLike") -> list[dict]:
    """The records of a Monitor's JSONL file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


_PANELS = {
    "weight": ("‖w‖ in its norm", None),
    "update_ratio": ("update ‖Δw‖ / (lr·target)", "lr·target"),
    "alignment": ("alignment ⟨g, dualize(g)⟩/‖g‖†", "exact map"),
    "grad_dual": ("‖g‖† (dual norm)", None),
    "momentum_cos": ("cos(momentum, gradient)", None),
    "rms": ("activation RMS", "well-normed"),
}


def plot(source: "Monitor | list[dict] | str | os.PathLike", path: "str | os.PathLike | None" = None, *,
         stats: Iterable[str] = ("weight", "update_ratio", "alignment", "rms"), title: str = "") -> Any:
    """Per-layer curves grouped by role: one row per statistic, one column per role.

    ``source``: a :class:`Monitor`, its records, or its JSONL file. ``stats``: rows among
    ``weight``, ``update_ratio``, ``alignment``, ``grad_dual``, ``momentum_cos`` and ``rms``
    (activations; skipped when not recorded). Reference lines mark 1 where the theory puts
    it. Writes ``path`` (PNG, …) when given; returns the matplotlib Figure. Needs matplotlib
    (``pip install dualtype[plot]``).
    """
    records = (source.records if isinstance(source, Monitor)
               else load(source) if isinstance(source, (str, os.PathLike)) else list(source))
    if not records:
        raise ConfigError("plot: no records (was Monitor.step() called after each opt.step()?)")
    bad = [s for s in stats if s not in _PANELS]
    if bad:
        raise ConfigError(f"plot: unknown statistic(s) {bad}; choose from {', '.join(_PANELS)}")
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("plot needs matplotlib: pip install 'dualtype[plot]'") from None
    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = [s for s in stats if s != "rms" or any("activations" in r for r in records)]
    roles = _ordered({row["role"] for r in records for row in r["params"].values()})
    fig, axes = plt.subplots(len(stats), len(roles), figsize=(3.4 * len(roles), 2.6 * len(stats)),
                             squeeze=False, sharex=True)
    for i, stat in enumerate(stats):
        label, ref = _PANELS[stat]
        for j, role in enumerate(roles):
            ax = axes[i][j]
            series = _series(records, stat, role)
            cmap = plt.get_cmap("viridis")
            for n, (name, (xs, ys)) in enumerate(series.items()):
                ax.plot(xs, ys, lw=1.0, color=cmap(n / max(1, len(series) - 1)), label=name)
            ax.ticklabel_format(axis="y", useOffset=False)
            if ref is not None and series:
                ax.axhline(1.0, color="black", ls="--", lw=0.8, label=ref)
                if stat != "rms":  # a ratio to 1: show at least ±3%, so rounding noise looks flat
                    lo, hi = ax.get_ylim()
                    ax.set_ylim(min(lo, 0.97), max(hi, 1.03))
            if i == 0:
                ax.set_title(f"{role} ({len(series)})")
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
            if i == len(stats) - 1:
                ax.set_xlabel("step")
            if 0 < len(series) <= 4:
                ax.legend(fontsize=6)
            if not series:  # AdamW groups have no lr·target step and no duality map
                ax.text(0.5, 0.5, "not measured", transform=ax.transAxes, ha="center", color="gray")
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
    fig.suptitle(title or "per-layer statistics in each layer's own norm (colour: order in the model)", fontsize=10)
    fig.tight_layout()
    if path is not None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def _series(records: list[dict], stat: str, role: str) -> dict[str, tuple[list, list]]:
    out: dict[str, tuple[list, list]] = {}
    for r in records:
        rows: Mapping[str, dict] = r.get("activations", {}) if stat == "rms" else r["params"]
        for name, row in rows.items():
            if row.get("role") == role and row.get(stat) is not None:
                xs, ys = out.setdefault(name, ([], []))
                xs.append(r["step"])
                ys.append(row[stat])
    return out
