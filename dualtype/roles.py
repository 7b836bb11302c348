"""The one table: parameter → role → norm → mass → target (docs/design.md §3).

``typed()``, ``modular()``, :class:`~dualtype.optim.ModularSGD` and the distributed optimizer
read every parameter's norm and step size from here and from nowhere else.

**Where the table comes from**, per parameter, first match wins:

1. ``declared``: a norm (or role) the user gave by name or glob;
2. ``module``: a :mod:`dualtype.modules` network states its own atoms, masses and
   sensitivities exactly;
3. ``graph``: the dataflow of one recorded forward (:mod:`dualtype.trace`). Norms are the
   types of the activation spaces a weight maps between: token ids are one-hot (ℓ1), hidden
   and normalized features RMS, the model's outputs (logits) ℓ∞. So a lookup table is
   ``l1->rms``, a matrix whose result is the model's output is the head (``rms->linf``),
   other matrices ``rms->rms``, gains and biases ``rms``. A weight used in two places gets a
   norm that fits both uses (or an error naming both) and the least of the uses' targets,
   each converted into that norm;
4. ``fallback``: before a forward was seen (or for a parameter the forward did not use),
   the layer type decides, with one warning naming the parameter.

**Targets** (the size of a parameter's step per unit lr, in its own norm) follow the
composition rule of the modular norm with every bond 1-Lipschitz. On the model's main path
(input → output, through the residual body as one unit) a layer of mass m gets

    target = m / M,   M = the largest total mass of a path through it,

so a chain of k equal layers gives each 1/k (composition), and layers side by side on the
same input (q, k, v; a weight and its bias; token and position tables) each keep their own
share: adding a bias or splitting a layer leaves every other step unchanged. A residual body
``x ← x + f_i(x)`` (i = 1..L; also post-norm, ``x ← LN(x + f_i(x))``) counts as one unit of
mass ``BODY_MASS``; it is damped by depth as in the paper, x ← (1 − 1/L)·x + (1/L)·f_i(x),
so each branch f_i gets the whole body's share back, and a layer inside a branch gets

    target = (BODY_MASS / M_body) · m / M_branch

with ``M_branch`` its largest path mass inside the branch. A hidden matrix that narrows
(out < in) takes √(in/out)× its target (:func:`_narrowing_factor`). None of this depends on L
or on the width: this is what makes one lr transfer across model sizes (measured in
``benchmarks/bench_defaults.py``).
"""

from __future__ import annotations

import fnmatch
import math
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
from torch import Tensor, nn

from dualtype import norms as _norms
from dualtype.checks import is_real
from dualtype.errors import ConfigError, NormMismatchError
from dualtype.norms import Norm
from dualtype.trace import CONV, LOOKUP, MATRIX, NORM, SCALE, SHIFT, Graph, Layer, Recorder, TraceError, finish, paused, record

__all__ = [
    "ROLE_NORMS", "ROLE_MASSES", "BODY_MASS", "ParamInfo", "Table", "infer", "role_from_module",
    "check", "match", "check_patterns", "norm_by_shape", "owner_of", "format_table", "ModelTypes", "types_of",
]

#: role → norm, when nothing is declared.
ROLE_NORMS: dict[str, str] = {
    "embedding": "l1->rms",  # token ids are one-hot: ℓ1 → RMS
    "hidden": "rms->rms",
    "head": "rms->linf",  # logits are read in ℓ∞
    "conv": "conv2d",  # by kernel rank: _CONV_NORMS
    "gain": "rms",
    "bias": "rms",
    "other": "l2",
}
#: role → mass: a layer's share of the step. Chosen by measurement (benchmarks/defaults.md):
#: embeddings, gains and biases move a tenth as far as a hidden layer, the head as far.
#: the conv role's norm by the weight's rank: nn.Conv1d/2d/3d
_CONV_NORMS: dict[int, Norm] = {c.min_ndim: c() for c in (_norms.Conv1D, _norms.Conv2D, _norms.Conv3D)}

#: Masses by role, chosen by measurement (docs/design.md §3 "Masses"; the head's row map moves
#: each weight ~√out times less than rms->rms at equal target, hence its larger share).
ROLE_MASSES: dict[str, float] = {
    "embedding": 0.1, "hidden": 1.0, "head": 2.0, "conv": 1.0, "gain": 0.1, "bias": 0.1, "other": 1.0,
}
#: Mass of a residual body (any depth), in units of one hidden layer.
BODY_MASS = 2.0

_NORM_LAYERS = tuple(c for c in (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase,
                                 getattr(nn, "RMSNorm", None), nn.modules.instancenorm._InstanceNorm)
                     if c is not None)


@dataclass(frozen=True)
class ParamInfo:
    """One parameter's row: how it is typed and how far it steps.

    ``target`` is the size of its update per unit lr in ``norm``; ``source`` says how the
    role was decided (``graph``, ``declared``, ``module`` or ``fallback``); ``uses`` lists
    its roles when it is used in more than one place (tied weights).
    """

    name: str
    shape: tuple[int, ...]
    role: str
    norm: Norm
    mass: float
    target: float
    source: str
    uses: tuple[str, ...] = ()
    sensitivity: float = 1.0
    excluded: bool = False  # left plain for another optimizer: typed(model, exclude=...)


class Table:
    """The rows of a model, by name, in ``named_parameters()`` order."""

    def __init__(self, rows: Iterable[ParamInfo]) -> None:
        self.rows = {r.name: r for r in rows}

    def __getitem__(self, name: str) -> ParamInfo:
        return self.rows[name]

    def __contains__(self, name: object) -> bool:
        return name in self.rows

    def __iter__(self):
        return iter(self.rows.values())

    def __len__(self) -> int:
        return len(self.rows)

    def __str__(self) -> str:
        return self.table()

    @property
    def norms(self) -> dict[str, Norm]:
        return {n: r.norm for n, r in self.rows.items()}

    @property
    def targets(self) -> dict[str, float]:
        return {n: r.target for n, r in self.rows.items()}

    def table(self, title: str = "") -> str:
        """The rows as an aligned text table."""
        head = ("name", "shape", "role", "norm", "mass", "target", "from")
        rows = [(r.name, "×".join(map(str, r.shape)) or "scalar",
                 r.role + (" (" + "+".join(r.uses) + ")" if len(r.uses) > 1 else ""),
                 str(r.norm), f"{r.mass:.3g}", f"{r.target:.4g}", "excluded" if r.excluded else r.source)
                for r in self]
        return format_table(head, rows, numeric={4, 5}, title=title)


def format_table(head: tuple[str, ...], rows: list[tuple[str, ...]], numeric: set[int], title: str = "") -> str:
    """Rows of strings as an aligned text table (``numeric`` columns right-aligned)."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]

    def fmt(row):
        return "  ".join(c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))

    rule = "-" * len(fmt(head))
    return "\n".join(([title] if title else []) + [rule, fmt(head), rule, *map(fmt, rows), rule])


def match(name: str, patterns: Mapping[Any, Any] | None, param: Tensor | None = None) -> Any:
    """The value for ``name`` in ``patterns``: the tensor itself, the exact name, then the
    first matching ``fnmatch`` glob in dict order (None: no match). A value that is not a
    mapping applies to every name."""
    if patterns is None:
        return None
    if not isinstance(patterns, Mapping):
        return patterns
    if param is not None:
        for key, value in patterns.items():
            if key is param:
                return value
    if name in patterns:
        return patterns[name]
    for key, value in patterns.items():
        if isinstance(key, str) and fnmatch.fnmatchcase(name, key):
            return value
    return None


# --- roles ----------------------------------------------------------------------------------

def norm_by_shape(param: Tensor) -> Norm | None:
    """The norm of a bare tensor with no model around it: by its rank (None: unknown)."""
    if param.ndim <= 1:
        return _norms.get("rms")
    if param.ndim == 2:
        return _norms.get("rms->rms")
    if param.ndim == 4:  # a 3-D or 5-D bare tensor could as well be a stack: unknown
        return _norms.get("conv2d")
    return None


def role_from_module(module: nn.Module, pname: str, param: Tensor) -> str:
    """The role a parameter's layer type suggests (the fallback when no forward was seen)."""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and pname == "weight":
        return "embedding"
    if param.ndim <= 1 and (pname == "bias" or pname.startswith("bias_") or pname.endswith("_bias")):
        return "bias"  # nn.Linear's bias; MultiheadAttention's in_proj_bias, LSTM's bias_ih_l0, …
    if isinstance(module, _NORM_LAYERS):
        return "gain"
    if isinstance(module, nn.modules.conv._ConvNd) and pname == "weight":
        return "conv" if not module.transposed and param.ndim in _CONV_NORMS else "other"
    if param.ndim <= 1:
        return "gain"
    if param.ndim == 2:
        return "hidden"
    return "other"


def _use_role(graph: Graph, layer: Layer, slot: str, shape: tuple[int, ...]) -> str:
    """The role of one use of a parameter: what the layer does with it, where it sits."""
    if slot == "bias":
        return "bias"
    if layer.kind == LOOKUP:
        return "embedding"
    if layer.kind == MATRIX and slot == "weight":
        if layer.id in graph.outputs:
            return "head"
        return "embedding" if layer.onehot else "hidden"
    if layer.kind == CONV and slot == "weight":  # a transposed conv's weight is [in, out, ...]
        return "conv" if "transpose" not in layer.op and len(shape) in _CONV_NORMS else "other"
    if layer.kind in (NORM, SCALE) and len(shape) <= 1:
        return "gain"
    if layer.kind == SHIFT:
        return "bias"
    return "other"


_T = {False: "", True: ".t"}  # the suffix of a norm for a weight stored transposed
_WHY = {"embedding": "it is a lookup table: its input is one-hot ids (ℓ1)",
        "head": "its output is the model's logits (ℓ∞)",
        "hidden": "it maps hidden features (RMS) to hidden features (RMS)"}


def _tied_role(name: str, uses: list[str]) -> tuple[str, str | None]:
    """(role, error) of a parameter with several uses: one norm must fit all of them."""
    kinds = set(uses)
    if len(kinds) == 1:
        return uses[0], None
    if kinds == {"embedding", "head"}:
        # l1->rms and rms->linf are both row-wise maps on [vocab, d] and differ by the
        # constant factor d (‖w_i‖₂/√d vs √d·‖w_i‖₂): the embedding norm fits both uses.
        return "embedding", None
    return uses[0], (f"'{name}' is used as {' and as '.join(sorted(kinds))}, and no norm fits "
                     f"both uses; declare one, e.g. norms={{'{name}': '{ROLE_NORMS[uses[0]]}'}}")


def _flipped(pairs: list[tuple[Layer, str]], use_roles: list[str]) -> bool:
    """Whether a weight is stored the other way round from its role's norm (norms.py
    "Transposed storage"): every use a matrix product that reads it so. A lookup table's rows
    are its inputs ([vocab, d]); a hidden or head matrix's rows its outputs ([out, in])."""
    return all(n.kind == MATRIX and slot == "weight" and n.in_out != (role == "embedding")
               for (n, slot), role in zip(pairs, use_roles)) and bool(pairs)


def _contradiction(name: str, declared: Norm, role: str, flipped: bool = False) -> str | None:
    """A message if a declared matrix norm contradicts the spaces or the layout the graph found."""
    if declared.spaces is None or role not in _WHY:
        return None  # only operator norms, whose spaces can contradict the graph
    want = ROLE_NORMS[role] + _T[flipped]
    if declared.name == want or (role == "head" and declared.name == "rms->rms" + _T[flipped]):
        return None  # (a Muon-style head: logits read in RMS, coarser than ℓ∞, the same input space)
    why = _WHY[role]
    if declared.name.removesuffix(".t") == ROLE_NORMS[role]:
        why = f"it is stored {_norms.get(want).layout()}" + (" (read as x @ W)" if flipped and role != "embedding" else "")
    return (f"'{name}' declared {declared.name}, but {why}: use {want} "
            f"(or type it as you declared with strict=False)")


# --- targets from the graph ----------------------------------------------------------------

def _branches(graph: Graph) -> dict[int, set[int]]:
    """Top-level residual node → the nodes of its branch (f in x + f(x))."""
    branch: dict[int, set[int]] = {}
    for r in graph.residuals():
        skip_side = graph.ancestors(r.skip) | set(r.skip)
        branch[r.id] = (graph.ancestors(r.branch) | set(r.branch)) - skip_side
    nested = {i for nodes in branch.values() for i in nodes}
    return {r: nodes for r, nodes in branch.items() if r not in nested}


def _bodies(graph: Graph, top: dict[int, set[int]]) -> dict[int, int]:
    """Top-level residual → its body: chains x ← x + f_i(x) are one body, also through the
    normalization a post-norm block applies to the sum (x ← LN(x + f(x)), torch's
    ``nn.TransformerEncoderLayer``). Such a norm joins the next branch in ``top``."""
    body = {r: r for r in top}
    for r in sorted(top):
        skip, between = graph.nodes[r].skip, set()
        while len(skip) == 1:
            n = next(iter(skip))
            if n in top:
                body[r] = body[n]
                top[r] |= between
                break
            node = graph.nodes[n]
            if not (isinstance(node, Layer) and node.kind == NORM):
                break
            between.add(n)
            skip = node.preds
    return body


def _path_mass(nodes: set, preds: dict, mass: dict) -> dict:
    """For each node: the largest total mass of a source-to-sink path through it."""
    succ: dict = {n: set() for n in nodes}
    for n in nodes:
        for p in preds[n]:
            succ[p].add(n)
    waiting = {n: len(preds[n]) for n in nodes}
    order, ready = [], [n for n in nodes if not preds[n]]
    while ready:  # Kahn's topological order
        n = ready.pop()
        order.append(n)
        for s in succ[n]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
    fwd: dict = {}
    for n in order:
        fwd[n] = mass[n] + max((fwd[p] for p in preds[n]), default=0.0)
    bwd: dict = {}
    for n in reversed(order):
        bwd[n] = mass[n] + max((bwd[s] for s in succ[n]), default=0.0)
    return {n: fwd[n] + bwd[n] - mass[n] for n in order}


def _node_targets(graph: Graph, node_mass: dict[int, float], body_mass: float) -> dict[int, float]:
    """Layer node → the factor c with target = c·(mass of the parameter) (module docstring)."""
    top = _branches(graph)
    body = _bodies(graph, top)
    rep: dict = {n: n for n in range(len(graph.nodes))}  # node → itself, or its body
    for r, nodes in top.items():
        for n in nodes | {r}:
            rep[n] = ("body", body[r])
    preds: dict = {k: set() for k in set(rep.values())}
    for n in range(1, len(graph.nodes)):
        preds[rep[n]].update(rep[p] for p in graph.preds(n) if rep[p] != rep[n])
    mass = {k: body_mass if isinstance(k, tuple) else node_mass.get(k, 0.0) for k in preds}
    through = _path_mass(set(preds), preds, mass)
    out: dict[int, float] = {}
    for n, k in rep.items():
        if k == n and isinstance(graph.nodes[n], Layer) and through.get(n, 0) > 0:
            out[n] = 1.0 / through[n]
    for r, nodes in top.items():
        share = body_mass / through[("body", body[r])]
        inner = {n: {p for p in graph.preds(n) if p in nodes} for n in nodes}
        inner_mass = {n: node_mass.get(n, 0.0) for n in nodes}
        for n, pm in _path_mass(set(nodes), inner, inner_mass).items():
            if isinstance(graph.nodes[n], Layer) and pm > 0:
                out[n] = share / pm
    return out


# --- the table -----------------------------------------------------------------------------

def _owners(model: nn.Module) -> dict[str, tuple[nn.Module, str, nn.Parameter]]:
    out = {}
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            out.setdefault(f"{mname}.{pname}" if mname else pname, (module, pname, p))
    return {n: out[n] for n, _ in model.named_parameters()}


def infer(
    model: nn.Module,
    graph: Graph | None = None,
    *,
    norms: Mapping[Any, "str | Norm"] | None = None,
    roles: Mapping[Any, str] | None = None,
    masses: Mapping[Any, float] | None = None,
    exclude: Iterable[str] = (),
    strict: bool = True,
    warn: bool = True,
) -> Table:
    """The table of ``model`` from its recorded ``graph`` (None: layer types only).

    ``norms``/``roles``/``masses`` map names or globs to declared values; ``exclude`` lists
    names, globs or role names of parameters left plain (``excluded``). A declared matrix
    norm that contradicts the graph raises :class:`NormMismatchError` (``strict=False``:
    a warning), as does a tied weight whose uses no single norm fits.
    """
    if getattr(model, "exact_structure", False):
        return _module_table(model, norms)
    owners = _owners(model)
    problems: list[str] = []
    unused: list[str] = []
    opaque: dict[str, str] = {}  # parameter → the unknown op that used it
    rows: dict[str, dict] = {}
    for name, (module, pname, p) in owners.items():
        role, uses, source, flipped = role_from_module(module, pname, p), (), "fallback", False
        if graph is not None and name in graph.uses:
            pairs = [(graph.nodes[i], slot) for i in graph.uses[name]
                     for slot, pn in graph.nodes[i].params.items() if pn == name]
            use_roles = [_use_role(graph, n, slot, tuple(p.shape)) for n, slot in pairs]
            role, err = _tied_role(name, use_roles)
            flipped = _flipped(pairs, use_roles)
            uses, source = tuple(dict.fromkeys(use_roles)), "graph"
            if err and match(name, norms, p) is None:
                problems.append(err)
            if role == "other" and match(name, norms, p) is None and match(name, roles, p) is None:
                opaque[name] = graph.nodes[graph.uses[name][0]].op
        elif graph is not None and p.requires_grad:
            unused.append(name)
        declared_role = match(name, roles, p)
        if declared_role is not None:
            if declared_role not in ROLE_NORMS:
                raise ConfigError(f"unknown role {declared_role!r} for '{name}'; roles are {', '.join(ROLE_NORMS)}")
            role, source = declared_role, "declared"
        spec = match(name, norms, p)
        if spec is not None:
            norm = _norms.get(spec)
            if source == "graph":
                msg = _contradiction(name, norm, role, flipped) if role != "embedding" or "head" not in uses else None
                if msg:
                    problems.append(msg)
            source = "declared"
        else:
            norm = _CONV_NORMS[p.ndim] if role == "conv" else _norms.get(ROLE_NORMS[role] + _T[flipped and role in _WHY])
        norm.check(p, f"parameter '{name}'")
        m = match(name, masses, p)
        if m is not None and (not is_real(m) or not 0 <= m < float("inf")):
            raise ConfigError(f"mass of '{name}' must be a finite number ≥ 0, got {m!r}")
        rows[name] = dict(name=name, shape=tuple(p.shape), role=role, norm=norm, source=source, uses=uses,
                          mass=ROLE_MASSES[role] if m is None else float(m),
                          excluded=any(x == role or x == name or fnmatch.fnmatchcase(name, x) for x in exclude))
    _report(problems, unused, opaque, strict, warn)
    _assign_targets(rows, graph, masses)
    _narrowing_factor(rows)
    return Table(ParamInfo(**r) for r in rows.values())


_ROLE_OF_NORM = {"l1->rms": "embedding", "rms->linf": "head", "rms->rms": "hidden", "l1->rms.t": "embedding",
                 "rms->linf.t": "head", "rms->rms.t": "hidden", "conv1d": "conv",
                 "conv2d": "conv", "conv3d": "conv", "linf": "gain", "rms": "bias"}


def _module_table(model: nn.Module, norms: Mapping[Any, Any] | None) -> Table:
    """A :mod:`dualtype.modules` network states its structure exactly: its terms are the rows
    (a declared norm still wins, as everywhere)."""
    names = {id(p): n for n, p in model.named_parameters()}
    rows = []
    for t in model.terms():
        name = names[id(t.param)]
        spec = match(name, norms, t.param)
        norm, source = (_norms.get(spec), "declared") if spec is not None else (t.norm, "module")
        rows.append(ParamInfo(name, tuple(t.param.shape), _ROLE_OF_NORM.get(t.norm.name, "other"), norm,
                              t.atom.mass, t.coefficient, source, sensitivity=t.sensitivity))
    return Table(rows)


def _report(problems: list[str], unused: list[str], opaque: dict[str, str], strict: bool, warn: bool) -> None:
    if problems:
        msg = "the declared types contradict the model's graph:\n  " + "\n  ".join(problems)
        if strict:
            raise NormMismatchError(msg)
        warnings.warn(msg, stacklevel=3)
    if unused and warn:
        warnings.warn(f"{len(unused)} parameter(s) were not used in the recorded forward and are typed by "
                      f"layer type: {', '.join(unused[:8])}{' …' if len(unused) > 8 else ''}", stacklevel=3)
    if opaque and warn:
        names = list(opaque)
        warnings.warn(f"{len(names)} parameter(s) are used by ops dualtype has no norm for "
                      f"({', '.join(sorted(set(opaque.values())))}) and fall back to the l2 norm at mass 1: "
                      f"{', '.join(names[:8])}{' …' if len(names) > 8 else ''}; declare their norms, e.g. "
                      f"typed(model, norms={{'{names[0]}': ...}})", stacklevel=3)


def _assign_targets(rows: dict[str, dict], graph: Graph | None, masses: Mapping[Any, float] | None) -> None:
    """Fill each row's target from the graph's path masses (module docstring)."""
    if graph is None or not graph.uses:
        # no structure: every parameter one layer of one chain (composition of all of them)
        total = sum(r["mass"] for r in rows.values() if r["role"] not in ("gain", "bias")) or 1.0
        for r in rows.values():
            r["target"] = r["mass"] / total
        return
    node_mass: dict[int, float] = {}
    use_of: dict[tuple[str, int], tuple[str, float]] = {}  # (name, node) → (role of that use, its mass)
    for name, r in rows.items():
        for i in graph.uses.get(name, ()):
            layer = graph.nodes[i]
            use = _use_role(graph, layer, next(s for s, pn in layer.params.items() if pn == name), r["shape"])
            m = r["mass"] if r["source"] == "declared" or match(name, masses) is not None else ROLE_MASSES[use]
            use_of[name, i] = use, m
            node_mass[i] = max(node_mass.get(i, 0.0), m)
    factor = _node_targets(graph, node_mass, BODY_MASS)
    worst = max(factor.values(), default=1.0)
    for name, r in rows.items():
        ids = [i for i in graph.uses.get(name, ()) if i in factor]
        if len(ids) < 2:
            r["target"] = r["mass"] * (factor[ids[0]] if ids else worst)
            continue
        # a tied weight: its step must fit every use's budget, each in that use's norm
        budgets = []
        for i in ids:
            use, m = use_of[name, i]
            use_norm = _CONV_NORMS[len(r["shape"])] if use == "conv" else _norms.get(ROLE_NORMS[use])
            ratio = 1.0 if use_norm.name == r["norm"].name else _norm_ratio(r["norm"], use_norm, r["shape"])
            budgets.append(m * factor[i] * ratio)
        r["target"] = min(budgets)


def _norm_ratio(norm: Norm, other: Norm, shape: tuple[int, ...]) -> float:
    """N(Δ)/N_other(Δ) for a step Δ = dualize_N(g): converts a budget in ``other`` into ``norm``.

    Exact for norms with the same duality map (l1->rms and rms->linf on ``[vocab, d]``: 1/d);
    otherwise the ratio on a fixed random direction."""
    if other.min_ndim > len(shape):
        return 1.0
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    step = norm.dualize(g)
    return float(norm.value(step) / other.value(step))


def _narrowing_factor(rows: dict[str, dict]) -> None:
    """A hidden matrix that narrows (out < in) takes √(in/out)× its share.

    Its update √(out/in)·U Vᵀ (the RMS→RMS map) has rank ≤ out, so an input of unit RMS in a
    random direction keeps only out/in of its energy in the update's row space and sees a
    change √(out/in)× the norm's worst case. The factor makes the typical input see the full
    step, as for a widening matrix; it is Muon's max(1, out/in)^½ convention on such layers
    (the MLP's down-projection). docs/design.md §3 "Narrowing matrices"."""
    for r in rows.values():
        if r["role"] != "hidden" or not isinstance(r["norm"], _norms.RMSToRMS):
            continue
        out, inp = r["norm"].out_in(r["shape"])
        if 0 < out < inp:
            r["target"] *= math.sqrt(inp / out)


# --- the table of one model, kept current ------------------------------------------------------

_ATTR = "_dualtype_types"
# id(parameter) → (its model's ModelTypes, its name); no reference to the parameter itself,
# so torch.utils.swap_tensors works on typed models. owner_of() checks the id still names it.
_OWNERS: dict[int, tuple[weakref.ref, str]] = {}


def owner_of(param: Tensor) -> "tuple[ModelTypes, str] | None":
    """(table, name) of a parameter of a typed model, else None."""
    entry = _OWNERS.get(id(param))
    types = entry[0]() if entry else None
    if types is None or types._model is None or types._model() is None:
        return None
    try:
        if types._model().get_parameter(entry[1]) is param:
            return types, entry[1]
    except AttributeError:
        pass
    return None


class ModelTypes:
    """The table of one model, what the user declared, and the recorded graph.

    Lives in ``model.__dict__`` (see :func:`types_of`). Until a forward has been recorded the
    table is the ``fallback`` one; the first forward through ``model(...)`` is recorded (a
    ``TorchFunctionMode`` for that one call; hooks are removed after it, so later forwards
    pay nothing), or :meth:`observe` records one on an example input. Every change bumps
    :attr:`version` and calls the listeners (``typed()`` retags, the optimizers re-read).
    """

    def __init__(self) -> None:
        self.norms: dict[Any, Any] = {}
        self.roles: dict[Any, str] = {}
        self.masses: dict[Any, float] = {}
        self.exclude: list[str] = []
        self.strict = True
        self.graph: Graph | None = None
        self.version = 0
        self._table: Table | None = None
        self._model: Any = None
        self._listeners: list = []
        self._hooks: list = []
        self._recorder: Any = None
        self.failure: str | None = None

    # state that survives deepcopy and pickling: the declarations and the graph
    def __getstate__(self) -> dict:
        return {"norms": self.norms, "roles": self.roles, "masses": self.masses, "exclude": self.exclude,
                "strict": self.strict, "graph": self.graph, "failure": self.failure}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.__dict__.update(state)

    @property
    def model(self) -> nn.Module:
        m = self._model() if self._model is not None else None
        if m is None:
            raise ConfigError("the model of this table no longer exists")
        return m

    @property
    def table(self) -> Table:
        if self._table is None:
            model = self.model
            self._table = infer(model, self.graph, norms=self.norms, roles=self.roles, masses=self.masses,
                                exclude=self.exclude, strict=self.strict, warn=self.graph is not None)
            for name, p in model.named_parameters():
                _OWNERS[id(p)] = (weakref.ref(self), name)
        return self._table

    def declare(self, *, norms=None, roles=None, masses=None, exclude=None, strict: bool | None = None,
                replace: bool = False) -> None:
        """Add (or with ``replace``, set) declared norms/roles/masses/exclusions, then refresh."""
        names = [n for n, _ in self.model.named_parameters()]
        if exclude is not None or replace:
            exclude = [exclude] if isinstance(exclude, str) else list(exclude or ())
            bad = [x for x in exclude if x not in ROLE_NORMS and not any(x == n or fnmatch.fnmatchcase(n, x) for n in names)]
            if bad:
                raise ConfigError(f"exclude={bad} matches no parameter name or role of {type(self.model).__name__}; "
                                  f"roles are {', '.join(ROLE_NORMS)}; parameters are: {', '.join(names)}")
            self.exclude = exclude
        for attr, new in (("norms", norms), ("roles", roles), ("masses", masses)):
            check_patterns(names, new, attr, type(self.model).__name__)
            if replace:
                setattr(self, attr, dict(new or {}))
            elif new:
                getattr(self, attr).update(new)
        if strict is not None:
            self.strict = bool(strict)
        self.refresh()

    def refresh(self) -> None:
        with paused():  # may run inside another model's recorded forward
            self._table = None
            self.table  # noqa: B018 - compute now, so errors surface at the call that caused them
            self.version += 1
            for listener in list(self._listeners):
                listener(self._table)

    def adopt(self, name: str, module: nn.Module, pname: str, param: Tensor) -> Norm | None:
        """The norm of a parameter registered after the table was made (assigned,
        ``register_parameter``, ``load_state_dict(assign=True)``, a submodule added later);
        None if it is excluded. A parameter replacing one of the same name keeps that one's
        row (its place in the graph is the same); a new name is typed as declared, else by
        its layer type. Torch stores the parameter only after its registration hooks ran, so
        the table is recomputed on its next read (the version changes now)."""
        row = self._table[name] if self._table is not None and name in self._table else None
        self._table = None
        self.version += 1
        if row is not None:
            return None if row.excluded else row.norm
        role = match(name, self.roles, param) or role_from_module(module, pname, param)
        if any(x in (name, role) or fnmatch.fnmatchcase(name, x) for x in self.exclude):
            return None
        spec = match(name, self.norms, param)
        return _norms.get(spec if spec is not None else ROLE_NORMS[role])

    def listen(self, fn) -> None:
        self._listeners.append(fn)

    def unlisten(self, fn) -> None:
        self._listeners = [f for f in self._listeners if f is not fn]

    # --- recording -------------------------------------------------------------------------

    def observe(self, *example: Any, **kwargs: Any) -> Any:
        """Record the graph from ``model(*example, **kwargs)`` now; returns the output."""
        self._unhook()
        with torch.no_grad():
            self.graph, out = record(self.model, None, *example, **kwargs)
        self.failure = None
        self.refresh()
        return out

    def watch(self) -> None:
        """Record the model's next eager forward (once), if no graph is known yet."""
        if self.graph is not None or self._hooks or self.failure is not None:
            return
        m = self.model
        self._hooks = [m.register_forward_pre_hook(_Start(self), with_kwargs=True),
                       m.register_forward_hook(_Stop(self), with_kwargs=True, always_call=True)]

    def _unhook(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []


def check_patterns(names: list[str], patterns: Mapping[Any, Any] | None, what: str, model: str) -> None:
    """Every string key must name or match a parameter (a typo must not pass silently)."""
    bad = [k for k in (patterns or {}) if isinstance(k, str)
           and not any(k == n or fnmatch.fnmatchcase(n, k) for n in names)]
    if bad:
        raise ConfigError(f"{what} given for {sorted(bad)} match no parameter of {model}; "
                          f"parameters are: {', '.join(names)}")


class _Start:
    """Forward pre-hook: start recording (skipped under torch.compile and when nested)."""

    def __init__(self, types: ModelTypes) -> None:
        self.types = types

    def __call__(self, module, args, kwargs):
        t = self.types
        if t._recorder is not None or torch.compiler.is_compiling():
            return None
        t._model = weakref.ref(module)  # a deep copy's table meets its model here
        rec = Recorder(module)
        rec.mark_input((args, kwargs))
        rec.__enter__()
        t._recorder = rec
        return None


class _Stop:
    """Forward hook: stop recording, keep the graph, retype (errors surface here)."""

    def __init__(self, types: ModelTypes) -> None:
        self.types = types

    def __call__(self, module, args, kwargs, output):
        t = self.types
        rec, t._recorder = t._recorder, None
        if rec is None:
            return None
        rec.__exit__(None, None, None)
        if output is None and rec.error is None:
            return None  # the forward raised: record the next one
        t._unhook()
        try:
            t.graph = finish(rec, output)
        except TraceError as e:
            t.failure = str(e)
            warnings.warn(f"dualtype could not record {type(module).__name__}'s forward ({e}); its "
                          "parameters are typed by layer type. Pass an example input to "
                          "dualtype.check(model, example) to see why.", stacklevel=2)
            return None
        t.refresh()
        return None


def types_of(model: nn.Module) -> ModelTypes:
    """The :class:`ModelTypes` of ``model`` (created on first use)."""
    t = model.__dict__.get(_ATTR)
    if t is None:
        t = ModelTypes()
        object.__setattr__(model, _ATTR, t)
    t._model = weakref.ref(model)
    return t



def check(model: nn.Module, *inputs: Any, example: Any = None, strict: bool = True, show: bool = True,
          **kwargs: Any) -> Table:
    """Type-check an architecture: record ``model(*inputs, **kwargs)``, infer every
    parameter's role and norm from the graph, print the table (``show``) and return it.
    ``example=`` takes the inputs as ``typed()`` and ``ModularSGD`` do (a tensor, or a tuple
    of positional inputs) instead of positionally.

    Raises :class:`NormMismatchError` where a declared norm (``typed(model, norms=...)``)
    contradicts the graph, or a weight is used in two places no norm fits. Usable in a test:
    ``dualtype.check(model, x)``. The model's own table keeps the recorded graph.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"check() takes an nn.Module, got {type(model).__name__}")
    if example is not None:
        if inputs:
            raise ConfigError("check() takes the inputs positionally or as example=, not both")
        inputs = example if isinstance(example, tuple) else (example,)
    types = types_of(model)
    old = types.strict
    types.strict = strict
    try:
        types.observe(*inputs, **kwargs)
        table = types.table
    finally:
        types.strict = old
    if show:
        print(table.table(f"{type(model).__name__}: {len(table)} parameters, roles and norms from its graph"))
    return table
