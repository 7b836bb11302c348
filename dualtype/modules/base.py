"""The modular norm's algebra (docs/design.md §3): Module, Atom, Bond, the combinators and the
two bonds they are built from (Identity, Mul).

Every :class:`Module` is a ``torch.nn.Module`` with a ``mass`` m ≥ 0 and a ``sensitivity``
s > 0, both *derived on access* from its children (never cached), so re-weighting a
sub-module after composing is reflected at once.

**Weights and grads of a compound** are the list of its parameters' tensors in
``self.parameters()`` order (the order the sub-modules were composed in, the first-running
module first). Every method that takes ``weights``/``grads`` also accepts ``None`` (the
module's own weights / ``.grad``, a missing grad counting as zero) or a dict keyed by
``named_parameters()`` names.

**The recursion, flattened.** Unrolling the composition and concatenation rules gives, for
each parameter p (owned by one atom), a coefficient

    c_p = Π over the enclosing combinators of (m_child/m_parent) / S_after,

where S_after is the product of the sensitivities of the modules that run *after* p's
branch inside each composition (zero-mass terms get c_p = 0: they are dropped). Then

    ‖w‖  = max_p ‖w_p‖_p / c_p          (terms with c_p = 0 dropped)
    ‖g‖† = Σ_p c_p·‖g_p‖†_p
    dualize(g, t)_p = t·c_p·dualize_p(g_p)

(zero-mass parameters are frozen: outside the space the norm measures, their gradient
ignored by the dual norm, their update zero), which is exactly the binary rules of docs/design.md §3
applied recursively (composition is
associative under them; ``tests/modules`` checks the flat form against the binary recursion
written out). ``c_p`` is the per-parameter *target*: the optimizer's update
``lr·targets[p]·norm_p.dualize(g_p)`` is ``lr·dualize(g)`` of the whole module.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence, Union

import torch
from torch import Tensor, nn

from dualtype import norms as _norms
from dualtype import tensor as _tensor
from dualtype.checks import is_int, is_real
from dualtype.errors import ConfigError, ShapeError
from dualtype.kernels import accumulation_dtype
from dualtype.norms import Norm
from dualtype.tensor import plain

__all__ = [
    "Module",
    "Atom",
    "Bond",
    "Composition",
    "Concatenation",
    "Sum",
    "Scale",
    "Term",
    "Identity",
    "Mul",
    "compose",
    "concat",
    "repeat",
    "residual",
]

Tensors = Union[Sequence[Tensor], Mapping[str, Tensor], None]


def check_mass(mass: float, what: str = "mass") -> float:
    """``mass`` as a float; :class:`ConfigError` unless it is a finite number ≥ 0."""
    if not is_real(mass):
        raise ConfigError(f"{what} must be a number ≥ 0, got {mass!r}")
    mass = float(mass)
    if not math.isfinite(mass) or mass < 0:
        raise ConfigError(f"{what} must be a finite number ≥ 0, got {mass!r}")
    return mass


def check_sensitivity(s: float) -> float:
    """``s`` as a float; :class:`ConfigError` unless it is a finite number > 0."""
    if not is_real(s):
        raise ConfigError(f"sensitivity must be a number > 0, got {s!r}")
    s = float(s)
    if not math.isfinite(s) or s <= 0:
        raise ConfigError(f"sensitivity must be a finite number > 0, got {s!r}")
    return s


@dataclass(frozen=True)
class Term:
    """One parameter in the flattened modular norm.

    ``coefficient`` is c_p (the target of this parameter when the whole module is dualized
    to target 1), ``sensitivity`` is S_after (the product of sensitivities downstream of p
    inside the module, the "sensitivity factor").
    """

    atom: "Atom"
    param: nn.Parameter
    norm: Norm
    coefficient: float
    sensitivity: float


# ---------------------------------------------------------------------------------------
# Flat evaluation shared by Module and ModularNorm.


def atom_value(norm: Norm, w: Tensor) -> Tensor:
    """‖w‖ under ``norm``; a batched weight (e.g. per-head ``[H, out, in]``) takes the max."""
    v = norm.value(w)
    return v.amax() if v.ndim else v


def atom_dual_value(norm: Norm, g: Tensor) -> Tensor:
    """‖g‖† under ``norm``; a batched gradient takes the sum (dual of the max)."""
    v = norm.dual_value(g)
    return v.sum() if v.ndim else v


def _door(g: Tensor, norm: Norm, scale: float, method: str | None = None) -> Tensor:
    """``scale·dualize_norm(g)`` through the one Dual→Primal door (``dualtype.tensor``):
    a plain or ``Dual[norm]`` gradient in, a ``Primal[norm]`` out (a ``Dual`` of another
    norm raises :class:`~dualtype.errors.NormMismatchError`)."""
    return _tensor.dualize(g, norm, scale=float(scale), method=method)


def _reduce(vals: list[Tensor], tensors: Sequence[Tensor], reduce: Callable[[Tensor], Tensor]) -> Tensor:
    """``reduce`` of the per-term numbers; 0 (in the tensors' real accumulation dtype) when
    every term is dropped."""
    if not vals:
        dt = accumulation_dtype(tensors[0].dtype).to_real() if tensors else torch.float32
        return torch.zeros((), dtype=dt)
    return reduce(torch.stack([v.to(vals[0].dtype) for v in vals]))


def flat_norm(norms: Sequence[Norm], coefs: Sequence[float], weights: Sequence[Tensor]) -> Tensor:
    """max_p ‖w_p‖/c_p over c_p > 0 (0 if every term is dropped)."""
    vals = [atom_value(n, plain(w).detach()) / c for n, c, w in zip(norms, coefs, weights) if c > 0]
    return _reduce(vals, weights, torch.amax)


def flat_dual_norm(norms: Sequence[Norm], coefs: Sequence[float], grads: Sequence[Tensor]) -> Tensor:
    """Σ_p c_p·‖g_p‖† over c_p > 0."""
    vals = [atom_dual_value(n, plain(g).detach()) * c for n, c, g in zip(norms, coefs, grads) if c > 0]
    return _reduce(vals, grads, torch.sum)


def own_weights(params: Sequence[tuple[str, Tensor]]) -> list[Tensor]:
    """The parameters' own values (detached), for ``weights=None``."""
    return [p.detach() for _, p in params]


def own_grads(params: Sequence[tuple[str, Tensor]]) -> list[Tensor]:
    """The parameters' own ``.grad`` (zeros where there is none), for ``grads=None``."""
    return [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in params]


def match_tensors(tensors: Sequence[Tensor] | Mapping[str, Tensor], params: Sequence[tuple[str, Tensor]],
                  what: str, owner: str) -> list[Tensor]:
    """``tensors`` given for ``params`` ((name, parameter) pairs) as a list in their order or a
    dict by name, in that order; :class:`ShapeError` names a missing, unknown or misshapen one."""
    if isinstance(tensors, Mapping):
        missing = [n for n, _ in params if n not in tensors]
        extra = set(tensors) - {n for n, _ in params}
        if missing or extra:
            raise ShapeError(f"{what} dict: missing {missing}, unknown {sorted(extra)}")
        out = [tensors[n] for n, _ in params]
    else:
        out = list(tensors)
        if len(out) != len(params):
            raise ShapeError(f"{owner} has {len(params)} parameters, got {len(out)} {what}")
    for (n, p), t in zip(params, out):
        if tuple(t.shape) != tuple(p.shape):
            raise ShapeError(f"{what} for '{n}': shape {tuple(t.shape)} ≠ parameter {tuple(p.shape)}")
    return out


def flat_dualize(
    norms: Sequence[Norm], coefs: Sequence[float], grads: Sequence[Tensor], method: str | None = None
) -> list[Tensor]:
    """[c_p·dualize_p(g_p)]: each through the Dual→Primal door, zero for dropped terms."""
    return [_door(g, n, c, method) for n, c, g in zip(norms, coefs, grads)]


# ---------------------------------------------------------------------------------------


class Module(nn.Module):
    """A module of the modular norm: a ``torch.nn.Module`` with mass and sensitivity.

    Subclasses define ``mass`` and ``sensitivity`` (derived for compounds) and
    ``_terms()``; the norm, dual norm and duality map follow from them.

    Operators: ``M2 @ M1`` composes (M1 runs first), ``M1 + M2`` sums outputs,
    ``α * M`` scales the output, ``M ** L`` repeats M L times (fresh copies).
    """

    #: Read by :mod:`dualtype.roles`: the module tree, not a recorded graph, is the structure.
    exact_structure = True

    # -- structure ------------------------------------------------------------------
    @property
    def mass(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def sensitivity(self) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _terms(self) -> list[Term]:  # pragma: no cover - abstract
        raise NotImplementedError

    def terms(self) -> list[Term]:
        """The flattened modular norm: one :class:`Term` per parameter, ``parameters()`` order."""
        terms = self._terms()
        params = list(self.parameters())
        if len(terms) != len(params) or any(t.param is not p for t, p in zip(terms, params)):
            raise ConfigError(
                f"{type(self).__name__}: every parameter must belong to exactly one atom "
                "(weight sharing and parameters outside atoms are not part of the modular "
                "norm); use dualtype.modules.modular(model) for arbitrary torch models."
            )
        return terms

    def coefficients(self, target: float = 1.0) -> list[float]:
        """Per-parameter targets c_p·target (``parameters()`` order)."""
        return [t.coefficient * target for t in self.terms()]

    # -- weights and grads ----------------------------------------------------------
    def _weights(self, weights: Tensors) -> list[Tensor]:
        params = list(self.named_parameters())
        return own_weights(params) if weights is None else match_tensors(weights, params, "weights", type(self).__name__)

    def _grads(self, grads: Tensors) -> list[Tensor]:
        params = list(self.named_parameters())
        return own_grads(params) if grads is None else match_tensors(grads, params, "grads", type(self).__name__)

    # -- the modular norm -----------------------------------------------------------
    def norm(self, weights: Tensors = None) -> Tensor:
        """The modular norm ‖w‖ (0-dim tensor)."""
        terms = self.terms()
        return flat_norm([t.norm for t in terms], [t.coefficient for t in terms], self._weights(weights))

    def dual_norm(self, grads: Tensors = None) -> Tensor:
        """The dual modular norm ‖g‖† = max over ‖d‖ ≤ 1 of ⟨g, d⟩ (0-dim tensor)."""
        terms = self.terms()
        return flat_dual_norm([t.norm for t in terms], [t.coefficient for t in terms], self._grads(grads))

    def dualize(self, grads: Tensors = None, target: float = 1.0, method: str | None = None) -> list[Tensor]:
        """The modular duality map: a list of ``PrimalTensor`` (``parameters()`` order) of
        modular norm ``target`` with ⟨g, dualize(g)⟩ = target·‖g‖†. A zero-mass module, or a
        zero gradient, gives zeros."""
        target = check_mass(target, "target")
        terms = self.terms()
        coefs = [t.coefficient * target for t in terms]
        return flat_dualize([t.norm for t in terms], coefs, self._grads(grads), method)

    # -- operators ------------------------------------------------------------------
    def __matmul__(self, other: "Module") -> "Composition":
        if not isinstance(other, Module):
            return NotImplemented
        return compose(other, self)

    def __add__(self, other: "Module") -> "Sum":
        if not isinstance(other, Module):
            return NotImplemented
        return Sum(self, other)

    def __mul__(self, alpha: float) -> "Scale":
        if isinstance(alpha, Module) or not isinstance(alpha, (int, float)):
            return NotImplemented
        return Scale(self, alpha)

    __rmul__ = __mul__

    def __pow__(self, depth: int) -> "Composition":
        return repeat(self, depth)

    # -- display --------------------------------------------------------------------
    def extra_repr(self) -> str:
        return f"mass={self.mass:g}, sensitivity={self.sensitivity:g}"


class Atom(Module):
    """A module with exactly one weight tensor ``self.weight`` and a norm on it.

    Subclasses set ``norm_name`` and implement ``forward`` and ``reset_parameters``.
    Atoms are well-normed with sensitivity 1 unless they say otherwise.
    """

    norm_name: str = ""

    def __init__(self, mass: float = 1.0, sensitivity: float = 1.0) -> None:
        super().__init__()
        self._mass = check_mass(mass)
        self._sensitivity = check_sensitivity(sensitivity)

    @property
    def weight_norm(self) -> Norm:
        """The norm on this atom's weight (a :class:`dualtype.norms.Norm`)."""
        return _norms.get(self.norm_name)

    @property
    def mass(self) -> float:
        return self._mass

    @mass.setter
    def mass(self, value: float) -> None:
        self._mass = check_mass(value)

    @property
    def sensitivity(self) -> float:
        return self._sensitivity

    def _terms(self) -> list[Term]:
        c = 1.0 if self._mass > 0 else 0.0  # a zero-mass atom is frozen: dropped
        return [Term(self, self.weight, self.weight_norm, c, 1.0)]

    def reset_parameters(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def project_(self, radius: float = 1.0) -> None:
        """Rescale the weight in place to norm ``radius`` (useful for tests and init)."""
        with torch.no_grad():
            v = atom_value(self.weight_norm, self.weight)
            if v > 0:
                self.weight.mul_(radius / v)


class Bond(Module):
    """A weight-free module: mass 0 and a fixed sensitivity (see each bond's docstring)."""

    _bond_sensitivity: float = 1.0

    @property
    def mass(self) -> float:
        return 0.0

    @mass.setter
    def mass(self, value: float) -> None:
        if check_mass(value) != 0.0:
            raise ConfigError(f"{type(self).__name__} is a bond: its mass is 0")

    @property
    def sensitivity(self) -> float:
        return self._bond_sensitivity

    def _terms(self) -> list[Term]:
        return []


class Identity(Bond):
    """y = x. Sensitivity 1."""

    def forward(self, x):
        return x


class Mul(Bond):
    """y = α·x: sensitivity |α|. α = 0 is rejected (it would make dualize divide by 0)."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        if not is_real(alpha) or not math.isfinite(alpha):
            raise ConfigError(f"scale α must be a finite number, got {alpha!r}")
        if alpha == 0:
            raise ConfigError(
                "scaling a module by α = 0 would make its weights irrelevant and dualize divide "
                "by zero; give the module mass 0 to freeze it instead"
            )
        self.alpha = float(alpha)

    @property
    def sensitivity(self) -> float:
        return abs(self.alpha)

    def forward(self, x):
        return self.alpha * x

    def extra_repr(self) -> str:
        return f"α={self.alpha:g}"


class _Compound(Module):
    """A module built from children (``self.parts``, an ``nn.ModuleList``)."""

    def __init__(self, *parts: Module, names: Sequence[str] | None = None) -> None:
        super().__init__()
        if not parts:
            raise ConfigError(f"{type(self).__name__} needs at least one module")
        names = [str(i) for i in range(len(parts))] if names is None else list(names)
        if len(names) != len(parts) or len(set(names)) != len(names):
            raise ConfigError(f"{type(self).__name__}: need {len(parts)} distinct names, got {names}")
        for name, p in zip(names, parts):
            if not isinstance(p, Module):
                raise ConfigError(
                    f"{type(self).__name__} takes dualtype.modules.Module parts, got "
                    f"{type(p).__name__} (wrap torch models with dualtype.modules.modular)"
                )
            self.add_module(name, p)
        self._n_parts = len(parts)

    @property
    def parts(self) -> tuple[Module, ...]:
        """The children in running (composition) or listing (concatenation) order."""
        return tuple(self._modules.values())[: self._n_parts]

    @property
    def mass(self) -> float:
        return sum(p.mass for p in self.parts)

    @mass.setter
    def mass(self, value: float) -> None:
        """Re-weight: scale every atom below so the total mass becomes ``value``."""
        value = check_mass(value)
        current = self.mass
        if current == 0:
            if value == 0:
                return
            raise ConfigError(f"cannot re-weight {type(self).__name__} of mass 0 to {value}")
        factor = value / current
        for m in self.modules():
            if isinstance(m, Atom):
                m.mass = m.mass * factor


class Composition(_Compound):
    """M_n ∘ … ∘ M_1 (``parts[0]`` runs first).

    m = Σ m_i, s = Π s_i; with S_i = Π_{j>i} s_j (sensitivity after part i):
    ‖w‖ = max_i (m/m_i)·S_i·‖w_i‖, dualize_i = (m_i/m)/S_i·d_i, ‖g‖† = Σ_i m_i/(m·S_i)·‖g_i‖†.
    For n = 2 these are docs/design.md §3's rules; they are associative, so nesting is free.
    """

    @property
    def sensitivity(self) -> float:
        return math.prod(p.sensitivity for p in self.parts)

    def forward(self, x):
        for p in self.parts:
            x = p(x)
        return x

    def _terms(self) -> list[Term]:
        m = self.mass
        out: list[Term] = []
        after = [1.0] * len(self.parts)
        for i in range(len(self.parts) - 2, -1, -1):
            after[i] = after[i + 1] * self.parts[i + 1].sensitivity
        for p, s_after in zip(self.parts, after):
            mi = p.mass
            ratio = (mi / m) / s_after if mi > 0 else 0.0
            for t in p._terms():
                out.append(Term(t.atom, t.param, t.norm, t.coefficient * ratio, t.sensitivity * s_after))
        return out


class Concatenation(_Compound):
    """(M_1, …, M_k) on the same input, tuple output.

    m = Σ m_i, s = Σ s_i (a tuple is measured by the *sum* of its parts' norms, so the
    sensitivities add and the Add bond has sensitivity 1);
    ‖w‖ = max_i (m/m_i)·‖w_i‖, dualize_i = (m_i/m)·d_i, ‖g‖† = Σ_i (m_i/m)·‖g_i‖†.
    """

    @property
    def sensitivity(self) -> float:
        return sum(p.sensitivity for p in self.parts)

    def forward(self, x):
        return tuple(p(x) for p in self.parts)

    def _terms(self) -> list[Term]:
        m = self.mass
        out: list[Term] = []
        for p in self.parts:
            ratio = p.mass / m if p.mass > 0 else 0.0
            for t in p._terms():
                out.append(Term(t.atom, t.param, t.norm, t.coefficient * ratio, t.sensitivity))
        return out


class Sum(Concatenation):
    """M_1 + … + M_k = Add ∘ (M_1, …, M_k): the norm rules of concatenation, s = Σ s_i.

    Output norm ≤ Σ of the parts' bounds: scale it (a convex combination) to stay well-normed.
    """

    def forward(self, x):
        out = None
        for p in self.parts:
            y = p(x)
            out = y if out is None else out + y
        return out


class Scale(Composition):
    """α·M = Mul(α) ∘ M: m unchanged, s·|α|, ‖w‖·|α|, dualize/|α| (α = 0 is an error)."""

    def __init__(self, module: Module, alpha: float) -> None:
        super().__init__(module, Mul(alpha), names=("inner", "mul"))

    @property
    def alpha(self) -> float:
        return self.parts[1].alpha


def compose(*parts: Module, names: Sequence[str] | None = None) -> Composition:
    """Composition of ``parts`` in running order (``compose(M1, M2)`` = M2 ∘ M1).

    Plain compositions are flattened into one chain (the rules are associative).
    """
    if names is not None:
        return Composition(*parts, names=names)
    flat: list[Module] = []
    for p in parts:
        if type(p) is Composition:
            flat.extend(p.parts)
        else:
            flat.append(p)
    return Composition(*flat)


def concat(*parts: Module) -> Concatenation:
    """(M_1, …, M_k): same input, tuple output."""
    return Concatenation(*parts)


def _fresh_copy(module: Module) -> Module:
    new = copy.deepcopy(module)
    for m in new.modules():
        if isinstance(m, Atom):
            m.reset_parameters()
    return new


def repeat(module: Module, depth: int) -> Composition:
    """M^L: L copies of ``module`` composed (the first is ``module`` itself, the rest are
    deep copies with freshly initialized weights)."""
    if not is_int(depth) or depth < 1:
        raise ConfigError(f"repeat depth must be an int ≥ 1, got {depth!r}")
    return compose(module, *(_fresh_copy(module) for _ in range(depth - 1)))


def residual(block: Module, depth: float) -> Sum:
    """(1 − 1/L)·Identity + (1/L)·block: mass of ``block``, s = (1 − 1/L) + s_block/L."""
    if not is_real(depth) or not depth > 1:
        raise ConfigError(f"residual depth L must be > 1, got {depth!r}")
    return Sum(Scale(Identity(), 1 - 1 / depth), Scale(block, 1 / depth), names=("skip", "branch"))
