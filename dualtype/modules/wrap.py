"""``modular(model)``: the modular norm of any ``torch.nn.Module``.

For a :class:`dualtype.modules.Module` the records come from its exact module tree. For any
other model (``nn.Sequential``, a hand-written GPT, a CNN) the graph is unknown, so each
parameter tensor is an *atom* of one composite with total mass M = Σ m_p:

    target_p = target · (m_p / M) / S_p

where m_p is the parameter's mass (default 1; override by glob pattern) and S_p its
sensitivity factor (the product of the sensitivities downstream of it; default 1, the value
for well-normed atoms and 1-Lipschitz nonlinearities; override by pattern). This is the
composition/concatenation rule of DESIGN §3 with every sensitivity 1.

Norms by role (override by pattern with ``norms=``):

===========  =====================================================  ==============
role         which parameters                                       norm
===========  =====================================================  ==============
embedding    ``nn.Embedding.weight``; ≥2-D raw parameters named     ``l1->rms``
             like ``*emb*``, ``wte``, ``wpe``, ``*pos*``
hidden       ``nn.Linear.weight`` (and other 2-D parameters)        ``rms->rms``
head         the output head: the last ``nn.Linear`` registered,    ``rms->linf``
             or the ones matching ``head=`` (``head=False``: none)  (``head_norm=``)
conv         ``nn.Conv2d.weight``                                   ``conv2d``
bias         every ``bias``                                         ``rms``
gain         weights of LayerNorm/RMSNorm/BatchNorm/GroupNorm, and  ``linf``
             other 1-D parameters
other        anything else (Conv1d/3d kernels, …)                   ``l2``
===========  =====================================================  ==============

Gains use ℓ∞, the exact RMS→RMS operator norm of diag(g) (see
:class:`dualtype.modules.atoms.Gain`); biases use RMS, the norm of their effect on the
output. A tied weight (parameter shared by two modules) is listed once, under its first name.

**Contract with the optimizer.** The modular duality map of the model is, per parameter,
``targets[name] · norms[name].dualize(g)``; so an optimizer stepping
``p -= lr · targets[name] · dualtype.dualize(g, norms[name])`` takes the step
``lr · dualize(g)`` of modular norm ``lr·target``. :meth:`ModularNorm.dualize` does exactly
that computation.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from dualtype import norms as _norms
from dualtype.errors import ConfigError, ShapeError
from dualtype.modules.atoms import Bias, Conv2D, Embed, Gain, Head
from dualtype.modules.base import Module, _check_mass, _check_sensitivity, flat_dual_norm, flat_dualize, flat_norm
from dualtype.norms import Norm

__all__ = ["modular", "ModularNorm", "ParamRecord", "DEFAULT_NORMS", "DEFAULT_MASSES"]

#: role → norm name used when no ``norms=`` pattern matches.
DEFAULT_NORMS: dict[str, str] = {
    "embedding": "l1->rms",
    "hidden": "rms->rms",
    "head": "rms->linf",
    "conv": "conv2d",
    "bias": "rms",
    "gain": "linf",
    "other": "l2",
}
#: role → default mass (every parameter tensor an atom of mass 1).
DEFAULT_MASSES: dict[str, float] = {role: 1.0 for role in DEFAULT_NORMS}

_NORM_LAYERS = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._NormBase,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


@dataclass(frozen=True)
class ParamRecord:
    """One row of the modular norm: ``target`` is the norm the parameter's update has when
    the whole model is dualized (``target = target_total · mass/M / sensitivity``)."""

    name: str
    shape: tuple[int, ...]
    role: str
    norm: Norm
    mass: float
    sensitivity: float
    target: float


def _match(name: str, patterns: Mapping[str, object], used: set[str]):
    if name in patterns:
        used.add(name)
        return patterns[name]
    for pat, value in patterns.items():
        if fnmatch.fnmatchcase(name, pat):
            used.add(pat)
            return value
    return None


def _raw_role(pname: str, param: Tensor) -> str:
    low = pname.lower()
    if "bias" in low:
        return "bias"
    if param.ndim == 1:
        return "gain"
    if param.ndim >= 2 and any(k in low for k in ("emb", "wte", "wpe", "pos")):
        return "embedding"
    if param.ndim == 2:
        return "hidden"
    return "other"


def _role(module: nn.Module, pname: str, param: Tensor) -> str:
    if pname == "bias":
        return "bias"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag, Embed)) and pname == "weight":
        return "embedding"
    if isinstance(module, Head):
        return "head"
    if isinstance(module, (nn.Conv2d, Conv2D)) and pname == "weight":
        return "conv"
    if isinstance(module, Bias):
        return "bias"
    if isinstance(module, Gain) or (isinstance(module, _NORM_LAYERS) and pname == "weight"):
        return "gain"
    if isinstance(module, nn.Linear) and pname == "weight":
        return "hidden"
    if isinstance(module, Module):
        return "hidden"
    return _raw_role(pname, param)


def _named_params(model: nn.Module) -> list[tuple[str, nn.Module, str, nn.Parameter]]:
    """(full name, owning module, local name, parameter), first occurrence of each tensor."""
    seen: set[int] = set()
    out = []
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            out.append((f"{mname}.{pname}" if mname else pname, module, pname, p))
    return out


class ModularNorm:
    """The modular norm of a model: per-parameter records, norms and targets.

    Weights/grads are given as ``None`` (the model's own weights / ``.grad``), a dict
    name → tensor, or a list in :attr:`records` order. :meth:`dualize` returns a dict
    name → ``PrimalTensor``.
    """

    def __init__(self, model: nn.Module, build: Callable[[], list[ParamRecord]], target: float) -> None:
        self.model = model
        self._build = build
        self.target = target
        self._params = {name: p for name, _, _, p in _named_params(model)}

    @property
    def records(self) -> list[ParamRecord]:
        """One :class:`ParamRecord` per parameter (recomputed: masses re-weighted on a
        dualtype module are reflected)."""
        return self._build()

    @property
    def norms(self) -> dict[str, Norm]:
        """Parameter name → norm; pass to ``dualtype.typed(model, norms=...)``."""
        return {r.name: r.norm for r in self.records}

    @property
    def targets(self) -> dict[str, float]:
        """Parameter name → target norm of its update in ``dualize`` (0: frozen)."""
        return {r.name: r.target for r in self.records}

    @property
    def masses(self) -> dict[str, float]:
        return {r.name: r.mass for r in self.records}

    @property
    def total_mass(self) -> float:
        return sum(r.mass for r in self.records)

    def __getitem__(self, name: str) -> ParamRecord:
        for r in self.records:
            if r.name == name:
                return r
        raise KeyError(name)

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def _gather(self, tensors, records: list[ParamRecord], what: str) -> list[Tensor]:
        if tensors is None:
            if what == "weights":
                return [self._params[r.name].detach() for r in records]
            out = []
            for r in records:
                p = self._params[r.name]
                out.append(p.grad if p.grad is not None else torch.zeros_like(p))
            return out
        if isinstance(tensors, Mapping):
            missing = [r.name for r in records if r.name not in tensors]
            extra = set(tensors) - {r.name for r in records}
            if missing or extra:
                raise ShapeError(f"{what} dict: missing {missing}, unknown {sorted(extra)}")
            out = [tensors[r.name] for r in records]
        else:
            out = list(tensors)
            if len(out) != len(records):
                raise ShapeError(f"the model has {len(records)} parameters, got {len(out)} {what}")
        for r, t in zip(records, out):
            if tuple(t.shape) != r.shape:
                raise ShapeError(f"{what} for '{r.name}': shape {tuple(t.shape)} ≠ parameter {r.shape}")
        return out

    def _coefs(self, records: list[ParamRecord]) -> list[float]:
        # targets include the total target (> 0); the norm itself is taken at target 1
        return [r.target / self.target for r in records]

    def norm(self, weights=None) -> Tensor:
        """max_p ‖w_p‖_p / c_p (c_p = target_p at total target 1; zero-mass terms dropped)."""
        rec = self.records
        return flat_norm([r.norm for r in rec], self._coefs(rec), self._gather(weights, rec, "weights"))

    def dual_norm(self, grads=None) -> Tensor:
        """Σ_p c_p·‖g_p‖†_p."""
        rec = self.records
        return flat_dual_norm([r.norm for r in rec], self._coefs(rec), self._gather(grads, rec, "grads"))

    def dualize(self, grads=None, method: str | None = None) -> dict[str, Tensor]:
        """name → ``targets[name] · norms[name].dualize(g)`` (a ``PrimalTensor``): modular
        norm ``target``, pairing ⟨g, ·⟩ = target·‖g‖†."""
        rec = self.records
        out = flat_dualize([r.norm for r in rec], [r.target for r in rec], self._gather(grads, rec, "grads"), method)
        return {r.name: d for r, d in zip(rec, out)}

    def table(self) -> str:
        """A model-summary style table of the records."""
        rec = self.records
        head = ("name", "shape", "role", "norm", "mass", "sensitivity", "target")
        rows = [
            (r.name, "×".join(map(str, r.shape)) or "scalar", r.role, str(r.norm),
             f"{r.mass:.4g}", f"{r.sensitivity:.4g}", f"{r.target:.4g}")
            for r in rec
        ]
        widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
        numeric = {4, 5, 6}

        def fmt(row):
            return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

        rule = "-" * len(fmt(head))
        title = (
            f"Modular norm of {type(self.model).__name__}: {len(rec)} parameter tensors, "
            f"{sum(p.numel() for p in self._params.values()):,} weights, total mass "
            f"{self.total_mass:.4g}, target {self.target:.4g}"
        )
        return "\n".join([title, rule, fmt(head), rule, *map(fmt, rows), rule])

    __str__ = table

    def __repr__(self) -> str:
        return f"<ModularNorm of {type(self.model).__name__}: {len(self)} parameters, total mass {self.total_mass:g}>"


def _head_names(model: nn.Module, params, head) -> set[str]:
    """Full names of the parameters that are the output head's weights."""
    if head is False:
        return set()
    if head is None or head is True:
        last = None
        for mname, module in model.named_modules():
            if isinstance(module, nn.Linear):
                last = mname
        if last is None:
            return set()
        name = f"{last}.weight" if last else "weight"
        return {name} if any(n == name for n, *_ in params) else set()
    patterns = [head] if isinstance(head, str) else list(head)
    names = set()
    for pat in patterns:
        hit = {
            n for n, m, pn, p in params
            if pn == "weight" and p.ndim >= 2
            and (fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n.rsplit(".", 1)[0] if "." in n else "", pat))
        }
        if not hit:
            raise ConfigError(f"head pattern {pat!r} matches no weight; weights are: "
                              + ", ".join(n for n, *_ in params))
        names |= hit
    return names


def modular(
    model: nn.Module,
    masses: Mapping[str, float] | None = None,
    norms: Mapping[str, "str | Norm"] | None = None,
    sensitivities: Mapping[str, float] | None = None,
    head: "str | Sequence[str] | bool | None" = None,
    head_norm: "str | Norm" = "rms->linf",
    target: float = 1.0,
) -> ModularNorm:
    """The modular norm of ``model`` as a :class:`ModularNorm`.

    ``masses``, ``norms`` and ``sensitivities`` map a parameter name or ``fnmatch`` glob
    (``"*.bias"``, ``"blocks.*.attn.*"``) to a value; the first matching pattern in dict
    order wins, exact names first; a pattern matching nothing is an error. ``head`` names
    the output head (parameter or module name or glob; ``False``: no head; default: the last
    ``nn.Linear`` registered). ``target`` is the modular norm of the full update.

    For a :class:`dualtype.modules.Module` the structure (masses, sensitivities, norms) is
    the module's own; overrides are refused (set masses on the sub-modules instead).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"modular() takes an nn.Module, got {type(model).__name__}")
    target = _check_mass(target, "target")
    if target == 0:
        raise ConfigError("modular(..., target=0) would freeze every parameter; the target must be > 0")

    if isinstance(model, Module):
        if masses or norms or sensitivities or head is not None:
            raise ConfigError(
                f"{type(model).__name__} is a dualtype module: its masses, sensitivities and "
                "norms come from its parts. Re-weight a part with `part.mass = m`."
            )
        names = {id(p): n for n, _, _, p in _named_params(model)}
        owners = {id(p): m for _, m, _, p in _named_params(model)}

        def build_module() -> list[ParamRecord]:
            return [
                ParamRecord(names[id(t.param)], tuple(t.param.shape), _role(owners[id(t.param)], "weight", t.param),
                            t.norm, t.atom.mass, t.sensitivity, t.coefficient * target)
                for t in model.terms()
            ]

        build_module()  # validate now
        return ModularNorm(model, build_module, target)

    masses, norms, sensitivities = dict(masses or {}), dict(norms or {}), dict(sensitivities or {})
    params = _named_params(model)
    if not params:
        raise ConfigError(f"{type(model).__name__} has no parameters")
    heads = _head_names(model, params, head)
    hnorm = _norms.get(head_norm)
    used: set[str] = set()
    rows = []
    for name, module, pname, p in params:
        if p.ndim == 0:
            raise ConfigError(f"parameter '{name}' is 0-D; no norm of dualtype takes scalars")
        role = "head" if name in heads else _role(module, pname, p)
        spec = _match(name, norms, used)
        norm = _norms.get(spec) if spec is not None else (hnorm if role == "head" else _norms.get(DEFAULT_NORMS[role]))
        norm.check(p, f"parameter '{name}'")
        m = _match(name, masses, used)
        m = DEFAULT_MASSES[role] if m is None else _check_mass(m, f"mass of '{name}'")
        s = _match(name, sensitivities, used)
        s = 1.0 if s is None else _check_sensitivity(s)
        rows.append((name, tuple(p.shape), role, norm, m, s))
    unused = (set(masses) | set(norms) | set(sensitivities)) - used
    if unused:
        raise ConfigError(
            f"patterns {sorted(unused)} match no parameter of {type(model).__name__}; "
            f"parameters are: {', '.join(r[0] for r in rows)}"
        )
    total = sum(r[4] for r in rows)
    records = [
        ParamRecord(n, shape, role, norm, m, s, target * (m / total) / s if m > 0 else 0.0)
        for n, shape, role, norm, m, s in rows
    ]
    return ModularNorm(model, lambda: list(records), target)
