"""``modular(model)``: the modular norm of any ``torch.nn.Module``.

The rows (role, norm, mass, target per parameter) come from the model's table
(:mod:`dualtype.roles`): for a :class:`dualtype.modules.Module` its exact module tree; for any
other model the dataflow of a recorded forward (pass ``example=``, or run the model once
first), else its layer types. ``print(modular(model))`` shows each parameter's row and how
its role was decided (``graph``, ``declared``, ``module`` or ``fallback``).

**Contract with the optimizer.** The modular duality map of the model is, per parameter,
``targets[name] · norms[name].dualize(g)``; so an optimizer stepping
``p -= lr · targets[name] · dualtype.dualize(g, norms[name])`` takes the step
``lr · dualize(g)`` of modular norm ``lr·target``. :meth:`ModularNorm.dualize` does exactly
that computation.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace
from typing import Any, Mapping, Sequence

from torch import Tensor, nn

from dualtype.errors import ConfigError
from dualtype.modules.base import (
    Module,
    check_mass,
    check_sensitivity,
    flat_dual_norm,
    flat_dualize,
    flat_norm,
    match_tensors,
    own_grads,
    own_weights,
)
from dualtype.norms import Norm
from dualtype.roles import check_patterns, format_table, infer, match, types_of

__all__ = ["modular", "ModularNorm", "ParamRecord"]


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
    source: str = "module"


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

    def __init__(self, model: nn.Module, records: list[ParamRecord], target: float) -> None:
        self.model = model
        self._records = records
        self.target = target
        self._params = {name: p for name, _, _, p in _named_params(model)}

    @property
    def records(self) -> list[ParamRecord]:
        """One :class:`ParamRecord` per parameter. For a :class:`dualtype.modules.Module`
        mass and target are re-read from its terms, so parts re-weighted since show at once."""
        if isinstance(self.model, Module):
            return [replace(rec, target=self.target * t.coefficient, mass=t.atom.mass)
                    for rec, t in zip(self._records, self.model.terms())]
        return list(self._records)

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

    def _weights(self, weights, records: list[ParamRecord]) -> list[Tensor]:
        params = [(r.name, self._params[r.name]) for r in records]
        return own_weights(params) if weights is None else match_tensors(weights, params, "weights", "the model")

    def _grads(self, grads, records: list[ParamRecord]) -> list[Tensor]:
        params = [(r.name, self._params[r.name]) for r in records]
        return own_grads(params) if grads is None else match_tensors(grads, params, "grads", "the model")

    def _coefs(self, records: list[ParamRecord]) -> list[float]:
        # targets include the total target (> 0); the norm itself is taken at target 1
        return [r.target / self.target for r in records]

    def norm(self, weights=None) -> Tensor:
        """max_p ‖w_p‖_p / c_p (c_p = target_p at total target 1; zero-mass terms dropped)."""
        rec = self.records
        return flat_norm([r.norm for r in rec], self._coefs(rec), self._weights(weights, rec))

    def dual_norm(self, grads=None) -> Tensor:
        """Σ_p c_p·‖g_p‖†_p."""
        rec = self.records
        return flat_dual_norm([r.norm for r in rec], self._coefs(rec), self._grads(grads, rec))

    def dualize(self, grads=None, method: str | None = None) -> dict[str, Tensor]:
        """name → ``targets[name] · norms[name].dualize(g)`` (a ``PrimalTensor``): modular
        norm ``target``, pairing ⟨g, ·⟩ = target·‖g‖†."""
        rec = self.records
        out = flat_dualize([r.norm for r in rec], [r.target for r in rec], self._grads(grads, rec), method)
        return {r.name: d for r, d in zip(rec, out)}

    def table(self) -> str:
        """A model-summary style table of the records (``from``: how the role was decided)."""
        rec = self.records
        head = ("name", "shape", "role", "norm", "mass", "sensitivity", "target", "from")
        rows = [(r.name, "×".join(map(str, r.shape)) or "scalar", r.role, str(r.norm),
                 f"{r.mass:.4g}", f"{r.sensitivity:.4g}", f"{r.target:.4g}", r.source) for r in rec]
        title = (
            f"Modular norm of {type(self.model).__name__}: {len(rec)} parameter tensors, "
            f"{sum(p.numel() for p in self._params.values()):,} weights, total mass "
            f"{self.total_mass:.4g}, target {self.target:.4g}"
        )
        return format_table(head, rows, numeric={4, 5, 6}, title=title)

    __str__ = table

    def __repr__(self) -> str:
        return f"<ModularNorm of {type(self.model).__name__}: {len(self)} parameters, total mass {self.total_mass:g}>"


def modular(
    model: nn.Module,
    masses: Mapping[str, float] | None = None,
    norms: Mapping[str, "str | Norm"] | None = None,
    sensitivities: Mapping[str, float] | None = None,
    head: "str | Sequence[str] | bool | None" = None,
    target: float = 1.0,
    example: Any = None,
) -> ModularNorm:
    """The modular norm of ``model`` as a :class:`ModularNorm`.

    ``masses``, ``norms`` and ``sensitivities`` map a parameter name or ``fnmatch`` glob
    (``"*.bias"``, ``"blocks.*.attn.*"``) to a value; the first matching pattern in dict
    order wins, exact names first; a pattern matching nothing is an error. They add to what
    was declared on the model (``typed(model, norms=...)``) without changing it. ``head``
    declares the output head (parameter or module name or glob); ``False`` types the
    graph's head as a hidden layer. ``example`` (a tensor or a tuple of inputs) records the
    model's graph now. ``target`` is the modular norm of the full update; a sensitivity
    ``s`` divides the parameter's target (a factor after it amplifies its effect by s).

    For a :class:`dualtype.modules.Module` the structure is the module's own; overrides are
    refused (set masses on the sub-modules instead).
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"modular() takes an nn.Module, got {type(model).__name__}")
    target = check_mass(target, "target")
    if target == 0:
        raise ConfigError("modular(..., target=0) would freeze every parameter; the target must be > 0")
    if isinstance(model, Module) and (masses or norms or sensitivities or head is not None):
        raise ConfigError(
            f"{type(model).__name__} is a dualtype module: its masses, sensitivities and "
            "norms come from its parts. Re-weight a part with `part.mass = m`."
        )
    types = types_of(model)
    if example is not None:
        types.observe(*(example if isinstance(example, tuple) else (example,)))
    names = [n for n, _ in model.named_parameters()]
    if not names:
        raise ConfigError(f"{type(model).__name__} has no parameters")
    for what, pats in (("masses", masses), ("norms", norms), ("sensitivities", sensitivities)):
        check_patterns(names, pats, what, type(model).__name__)
    table = _table(model, types, names, masses, norms, head)
    sens = {r.name: check_sensitivity(s) for r in table
            if (s := match(r.name, sensitivities)) is not None}
    records = [ParamRecord(r.name, r.shape, r.role, r.norm, r.mass, r.sensitivity * sens.get(r.name, 1.0),
                           target * r.target / sens.get(r.name, 1.0), r.source) for r in table]
    return ModularNorm(model, records, target)


def _table(model: nn.Module, types, names: list[str], masses, norms, head) -> list:
    """The model's table with ``modular()``'s declarations added to the model's own."""
    roles = dict(types.roles)
    if head not in (None, False, True):
        roles.update(_head_patterns(model, names, head))
    declared = {"norms": {**types.norms, **dict(norms or {})}, "masses": {**types.masses, **dict(masses or {})}}
    table = infer(model, types.graph, roles=roles, strict=types.strict, warn=False, **declared)
    if head is False:  # the graph's head becomes a hidden layer: infer again with that role declared
        roles.update({r.name: "hidden" for r in table if r.role == "head"})
        table = infer(model, types.graph, roles=roles, strict=types.strict, warn=False, **declared)
    return table


def _head_patterns(model: nn.Module, names: list[str], head) -> dict[str, str]:
    """``head=`` as declared roles: a parameter or module name or glob per pattern."""
    patterns = [head] if isinstance(head, str) else list(head)
    out = {}
    for pat in patterns:
        hit = [n for n in names if n.endswith("weight") and (
            fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n.rpartition(".")[0], pat))]
        if not hit:
            raise ConfigError(f"head pattern {pat!r} matches no weight; weights are: " + ", ".join(names))
        out.update({n: "head" for n in hit})
    return out
