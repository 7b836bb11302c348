"""Independent float64 references for the modular-norm tests.

Nothing here calls dualtype: each norm, dual norm and duality map is written out from the
table of docs/design.md §3 with an explicit SVD, and the combinators are evaluated by the *binary*
rules of §3 (folded left), not by the flattened coefficients the library uses.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dualtype.modules import Atom, Bond, Composition, Concatenation, Module, Sum

F64 = torch.float64


# --------------------------------------------------------------------------- atom norms
def _polar(g: Tensor) -> Tensor:
    U, S, Vh = torch.linalg.svd(g, full_matrices=False)
    keep = (S > S.amax(dim=-1, keepdim=True) * 1e-12).to(g.dtype)
    return (U * keep.unsqueeze(-2)) @ Vh


def _slices(w: Tensor) -> Tensor:
    o, i, kh, kw = w.shape
    return w.permute(2, 3, 0, 1).reshape(kh * kw, o, i)


def ref_value(name: str, w: Tensor) -> Tensor:
    w = w.to(F64)
    if name == "rms->rms":
        out, inp = w.shape[-2:]
        return (math.sqrt(inp / out) * torch.linalg.svdvals(w)[..., 0]).max()
    if name == "l1->rms":
        return (w.norm(dim=-1) / math.sqrt(w.shape[-1])).max()
    if name == "rms->linf":
        return (w.norm(dim=-1) * math.sqrt(w.shape[-1])).max()
    if name == "conv2d":
        k2 = w.shape[-1] * w.shape[-2]
        return k2 * max(ref_value("rms->rms", s) for s in _slices(w))
    if name == "rms":
        return w.norm() / math.sqrt(w.numel())
    if name == "linf":
        return w.abs().max()
    raise ValueError(name)


def ref_dual(name: str, g: Tensor) -> Tensor:
    g = g.to(F64)
    if name == "rms->rms":
        out, inp = g.shape[-2:]
        return (math.sqrt(out / inp) * torch.linalg.svdvals(g).sum(dim=-1)).sum()
    if name == "l1->rms":
        return g.norm(dim=-1).sum() * math.sqrt(g.shape[-1])
    if name == "rms->linf":
        return g.norm(dim=-1).sum() / math.sqrt(g.shape[-1])
    if name == "conv2d":
        k2 = g.shape[-1] * g.shape[-2]
        return sum(ref_dual("rms->rms", s) for s in _slices(g)) / k2
    if name == "rms":
        return g.norm() * math.sqrt(g.numel())
    if name == "linf":
        return g.abs().sum()
    raise ValueError(name)


def _safe_rows(g: Tensor) -> Tensor:
    n = g.norm(dim=-1, keepdim=True)
    return torch.where(n > 0, g / torch.where(n > 0, n, torch.ones_like(n)), torch.zeros_like(g))


def ref_dualize_norm(name: str, g: Tensor) -> Tensor:
    g = g.to(F64)
    if name == "rms->rms":
        out, inp = g.shape[-2:]
        return math.sqrt(out / inp) * _polar(g)
    if name == "l1->rms":
        return math.sqrt(g.shape[-1]) * _safe_rows(g)
    if name == "rms->linf":
        return _safe_rows(g) / math.sqrt(g.shape[-1])
    if name == "conv2d":
        o, i, kh, kw = g.shape
        d = ref_dualize_norm("rms->rms", _slices(g)) / (kh * kw)
        return d.reshape(kh, kw, o, i).permute(2, 3, 0, 1)
    if name == "rms":
        n = g.norm()
        return g * math.sqrt(g.numel()) / n if n > 0 else torch.zeros_like(g)
    if name == "linf":
        return torch.sign(g)
    raise ValueError(name)


# ------------------------------------------------------------------ binary recursion
def _split(module: Module, ts: list[Tensor]) -> list[list[Tensor]]:
    out, i = [], 0
    for p in module.parts:
        n = len(list(p.parameters()))
        out.append(ts[i : i + n])
        i += n
    assert i == len(ts)
    return out


def _parts(module: Module):
    """(parts, kind) with Scale seen as the composition Mul(α) ∘ M."""
    if isinstance(module, Composition):
        return list(module.parts), "compose"
    if isinstance(module, (Concatenation, Sum)):
        return list(module.parts), "concat"
    raise TypeError(type(module))


def ref_norm(module: Module, ws: list[Tensor]) -> Tensor:
    """‖w‖ by the binary rules: compose max(s2·(m/m1)‖w1‖, (m/m2)‖w2‖), concat max (m/m_i)‖w_i‖."""
    zero = torch.zeros((), dtype=F64)
    if isinstance(module, Bond):
        return zero
    if isinstance(module, Atom):  # a zero-mass atom on its own is frozen: norm 0
        return ref_value(module.norm_name, ws[0]) if module.mass > 0 else zero
    parts, kind = _parts(module)
    chunks = _split(module, ws)
    if kind == "concat":
        m = sum(p.mass for p in parts)
        vals = [(m / p.mass) * ref_norm(p, c) for p, c in zip(parts, chunks) if p.mass > 0]
        return torch.stack(vals).max() if vals else zero
    m1, s1, n1 = parts[0].mass, parts[0].sensitivity, ref_norm(parts[0], chunks[0])
    for p, c in zip(parts[1:], chunks[1:]):
        m2, s2 = p.mass, p.sensitivity
        m = m1 + m2
        vals = []
        if m1 > 0:
            vals.append(s2 * (m / m1) * n1)
        if m2 > 0:
            vals.append((m / m2) * ref_norm(p, c))
        n1 = torch.stack(vals).max() if vals else zero
        m1, s1 = m, s1 * s2
    return n1


def ref_dual_norm(module: Module, gs: list[Tensor]) -> Tensor:
    """‖g‖†: compose ‖g1‖†·m1/(s2·m) + ‖g2‖†·m2/m, concat Σ (m_i/m)‖g_i‖†."""
    zero = torch.zeros((), dtype=F64)
    if isinstance(module, Bond):
        return zero
    if isinstance(module, Atom):
        return ref_dual(module.norm_name, gs[0]) if module.mass > 0 else zero
    parts, kind = _parts(module)
    chunks = _split(module, gs)
    if kind == "concat":
        m = sum(p.mass for p in parts)
        return sum(((p.mass / m) * ref_dual_norm(p, c) for p, c in zip(parts, chunks) if p.mass > 0), zero)
    m1, d1 = parts[0].mass, ref_dual_norm(parts[0], chunks[0])
    for p, c in zip(parts[1:], chunks[1:]):
        m2, s2 = p.mass, p.sensitivity
        m = m1 + m2
        d = zero
        if m1 > 0:
            d = d + d1 * m1 / (s2 * m)
        if m2 > 0:
            d = d + ref_dual_norm(p, c) * m2 / m
        m1, d1 = m, d
    return d1


def ref_dualize(module: Module, gs: list[Tensor]) -> list[Tensor]:
    """Unit-target duality map: compose ((1/s2)(m1/m)d1, (m2/m)d2), concat ((m_i/m)d_i)."""
    if isinstance(module, Bond):
        return []
    if isinstance(module, Atom):
        return [ref_dualize_atom(module, gs[0])]
    parts, kind = _parts(module)
    chunks = _split(module, gs)
    if kind == "concat":
        m = sum(p.mass for p in parts)
        out = []
        for p, c in zip(parts, chunks):
            ds = ref_dualize(p, c)
            out += [d * (p.mass / m) if p.mass > 0 else torch.zeros_like(d) for d in ds]
        return out
    m1, acc = parts[0].mass, ref_dualize(parts[0], chunks[0])
    for p, c in zip(parts[1:], chunks[1:]):
        m2, s2 = p.mass, p.sensitivity
        m = m1 + m2
        acc = [d * ((1 / s2) * (m1 / m)) if m1 > 0 else torch.zeros_like(d) for d in acc]
        acc += [d * (m2 / m) if m2 > 0 else torch.zeros_like(d) for d in ref_dualize(p, c)]
        m1 = m
    return acc


def ref_dualize_atom(atom: Atom, g: Tensor) -> Tensor:
    d = ref_dualize_norm(atom.norm_name, g)
    return d if atom.mass > 0 else torch.zeros_like(d)


# ------------------------------------------------------------------ activation norms
def feat_norm(x: Tensor) -> Tensor:
    """RMS over the last dim, max over the rest (features, per-head tensors)."""
    return x.to(F64).pow(2).mean(dim=-1).sqrt().max()


def img_norm(x: Tensor) -> Tensor:
    """Channel RMS at each pixel of ``[B, C, H, W]``, max over pixels."""
    return x.to(F64).pow(2).mean(dim=1).sqrt().max()


def linf(x: Tensor) -> Tensor:
    x = x.to(F64)
    return x[torch.isfinite(x)].abs().max()


def row_l1(a: Tensor) -> Tensor:
    """Max row ℓ1 norm (the ∞→∞ operator norm of an attention matrix)."""
    return a.to(F64).abs().sum(dim=-1).max()


def inner(gs: list[Tensor], ds: list[Tensor]) -> Tensor:
    return sum(((g.to(F64) * d.as_subclass(torch.Tensor).to(F64)).sum() for g, d in zip(gs, ds)), torch.zeros((), dtype=F64))


def plain(ts):
    return [t.as_subclass(torch.Tensor) for t in ts]
