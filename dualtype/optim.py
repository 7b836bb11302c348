"""``ModularSGD``: steepest descent under the modular norm, with momentum (docs/design.md §1-§3).

For every parameter ``p`` of norm ``N_p`` and target ``t_p`` the step is

    buf_p ← β·buf_p + (1−β)·g_p                      (Dual[N_p]: the momentum stays dual)
    u_p   = (1−β)·g_p + β·buf_p  if nesterov else buf_p
    p     ← (1 − lr·wd)·p − lr·t_p·dualize_{N_p}(u_p)  (decoupled weight decay; Primal[N_p])

where the decay applies to the hidden and conv matrices only (``Norm.decays``: their size is
set by the steps, ‖p‖ ≤ t_p/wd, docs/design.md §1 "Weight decay"),

so ``lr`` is the size of the step in the modular norm: each parameter moves by exactly
``lr·t_p`` in its own norm ``N_p``, and with the targets of :func:`dualtype.modules.modular`
the whole update has modular norm ``lr`` (docs/design.md §3, "dualize(g, t)_p = t·c_p·dualize_p").

The gradient enters as ``Dual[N]`` (tagged by :func:`dualtype.typed`), the momentum buffer is
built from it and stays ``Dual[N]``, and :func:`dualtype.dualize` is the only door to the
``Primal[N]`` update that is written into the weight through the checked update path. The
optimizer itself uses no escape hatch.
"""

from __future__ import annotations

import fnmatch
import math
import warnings
from collections import defaultdict
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import torch
import torch.optim.adam as torch_adam
from torch import Tensor, nn
from torch._C import DisableTorchFunctionSubclass

from dualtype import norms as _norms
from dualtype.errors import ConfigError, NonFiniteError, NormMismatchError, ShapeError
from dualtype.typed_model import typed, typed_handle
from dualtype.kernels import METHODS
from dualtype.norms import Norm
from dualtype.roles import ModelTypes, check_patterns, format_table, match, norm_by_shape, owner_of, types_of
from dualtype.tensor import DualTensor, PrimalTensor, assume_primal, dual, dualize, norm_of, weight_info

__all__ = ["ModularSGD", "DualizeItem"]


class DualizeItem(NamedTuple):
    """One parameter's entry in :meth:`ModularSGD._dualize`.

    ``update`` is ``Dual[norm]`` (the momentum or Nesterov combination, shape of ``param``);
    ``scale`` is the size of the step in ``norm``: ``lr·target`` of the parameter's group.
    """

    param: Tensor
    update: DualTensor
    norm: Norm
    scale: float


class _CompiledNorm(Norm):
    """The same norm (equal by name, so tags and weight checks are unchanged) whose duality map
    on *plain* tensors runs under ``torch.compile``. :func:`dualtype.dualize` strips the tag
    before calling ``Norm.dualize`` and tags the result after, so no typed tensor enters the
    compiled graph (docs/design.md §4)."""

    def __init__(self, base: Norm, options: Mapping[str, Any]) -> None:
        self.base = base
        self.name = base.name
        self.min_ndim, self.spaces = base.min_ndim, base.spaces
        self.batchable, self.locality = base.batchable, base.locality
        self.cost, self.shard_factor, self.decays = base.cost, base.shard_factor, base.decays
        self._compiled = torch.compile(base.dualize, **options)

    def check(self, t: Tensor, what: str = "tensor") -> None:
        self.base.check(t, what)

    def value(self, w: Tensor) -> Tensor:
        return self.base.value(w)

    def dual_value(self, g: Tensor) -> Tensor:
        return self.base.dual_value(g)

    def dualize(self, g: Tensor, method: str | None = None) -> Tensor:
        return self._compiled(g, method)

    def __repr__(self) -> str:
        return f"compiled({self.base!r})"


def _check_number(value: Any, what: str, hint: str, *, upper: float | None = None) -> float:
    if isinstance(value, Tensor):
        raise ConfigError(f"{what} must be a Python float, got a tensor; {hint}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number, got {value!r}; {hint}") from None
    if not math.isfinite(v) or v < 0 or (upper is not None and v >= upper):
        bound = f"in [0, {upper:g})" if upper is not None else "finite and ≥ 0"
        raise ConfigError(f"{what} must be {bound}, got {value!r}; {hint}")
    return v


_ADAM_REASON = "AdamW group: m/sqrt(v) is an elementwise preconditioner, not a duality map"


def _check_adam(group: Mapping[str, Any], where: str) -> None:
    betas = group["betas"]
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ConfigError(f"{where}: betas must be a pair (β1, β2), e.g. (0.9, 0.95), got {betas!r}")
    for i, b in enumerate(betas):
        _check_number(b, f"{where}: betas[{i}]", "Adam's betas are in [0, 1), e.g. (0.9, 0.95)", upper=1.0)
    if _check_number(group["eps"], f"{where}: eps", "eps is Adam's denominator floor, e.g. 1e-8") == 0:
        raise ConfigError(f"{where}: eps must be > 0, e.g. 1e-8")


def _momentum(grads: list[DualTensor], bufs: list[DualTensor] | None, beta: float,
              nesterov: bool) -> tuple[list[DualTensor], list[DualTensor | None]]:
    """(updates, new buffers) of the EMA momentum, out of place (nothing is committed here):
    ``buf ← β·buf + (1−β)·g``; the update is ``(1−β)·g + β·buf`` with Nesterov, else ``buf``.
    Without momentum (``bufs`` None) the updates are the gradients."""
    if bufs is None:
        return grads, [None] * len(grads)
    new_bufs = torch._foreach_lerp(bufs, grads, 1.0 - beta)
    return (torch._foreach_lerp(grads, new_bufs, beta) if nesterov else new_bufs), new_bufs


class ModularSGD(torch.optim.Optimizer):
    """SGD with momentum in the modular norm: ``p ← (1−lr·wd)·p − lr·target·dualize_N(m)``.

    (Named for what it is: steepest descent under the modular norm with heavy-ball or Nesterov
    momentum; with the ``rms->rms`` norm on hidden matrices it is Muon, but the same rule
    dualizes embeddings, heads, convolutions and gains through their own norms.)

    Args:
        params: an ``nn.Module`` (preferred: it is typed with :func:`dualtype.typed` here,
            names, norms and targets come from its table, :mod:`dualtype.roles`), an iterable
            of parameters, of ``(name, parameter)`` pairs, or of param-group dicts. A group
            dict may hold ``"params"`` plus any hyper-parameter below and
            ``"norms"``/``"targets"`` (a single value for the whole group, or a mapping as
            below). Parameters of a typed model keep their names, norms and targets in groups.
            A group with ``"algorithm": "adamw"`` (and its own ``"lr"``; ``"betas"``,
            ``"eps"``, ``"weight_decay"`` (default 0), ``"foreach"`` as in ``torch.optim.AdamW``) is
            stepped by torch's AdamW, bit-identically: the usual Muon + AdamW hybrid in one
            optimizer with one ``state_dict``. Its gradients leave the algebra visibly, through
            :func:`~dualtype.assume_primal` (m/√v is not a duality map).
        lr: the size of the whole update in the modular norm (≥ 0). Each parameter moves
            ``lr·target`` in its own norm; with the targets read from the model's graph one
            default fits models of any width and depth (0.26: benchmarks/defaults.md).
            Schedulers from ``torch.optim.lr_scheduler`` change it per group.
        momentum: β in [0, 1); the buffer is an EMA of the gradients (Muon's convention; the
            duality maps are scale-free, so EMA and sum give the same direction). Default 0.9
            (Muon's 0.95 trained every model of benchmarks/defaults.md worse).
        nesterov: use ``(1−β)·g + β·buf`` instead of ``buf``.
        weight_decay: decoupled: ``p ← (1 − lr·wd)·p`` before the update (≥ 0), on the
            weights whose norm ``decays`` (``rms->rms`` and the conv norms: hidden matrices
            and convolutions), which it keeps within ``target/wd`` in their norm.
            Embeddings, heads, gains and biases are not decayed: their scale is their
            initialization's. Default 0.05 (benchmarks/defaults.md; the usual hybrid's
            ``torch.optim.Muon`` decays its matrices by default too).
        norms: parameter name / fnmatch glob / the tensor itself → norm (name or
            :class:`~dualtype.norms.Norm`); declared on the model's table, so ``typed()``
            tags gradients with them. Without it: the model's table (declared by
            ``typed(model, norms=...)``, else read from the graph of the first forward, else
            by layer type); for bare tensors their ``typed()`` tag, else by rank.
        targets: name / glob / tensor → target t ≥ 0 (the step of that parameter is
            ``lr·t`` in its norm; 0 freezes it). Default: the model's table, else 1.
        modular: ``None``/``True``: targets from the model's table (the modular norm of its
            graph); ``False``: every target 1, so each parameter steps ``lr`` in its own norm
            (the modular norm of a flat max-composition; lr then wants Muon's scale, ~0.02);
            a ready ``ModularNorm`` (``dualtype.modular(model, ...)``): its norms and targets.
        example: an input (a tensor, or a tuple of positional inputs) to record the model's
            graph now instead of on its first forward.
        no_decay: names, globs or roles (e.g. ``"hidden"``) exempted from weight decay
            besides the parameters whose norm does not decay; they go to a second param
            group. Roles are the table's at construction: pass ``example=`` so they come
            from the graph.
        method: orthogonalization kernel for the matrix norms (``None``: the kernels'
            default; see :func:`dualtype.kernels.orthogonalize`).
        batched: dualize same-(shape, dtype, device, norm) parameters in one stacked call.
        compile: run each norm's duality map (normalization, the orthogonalization kernel,
            the √(out/in) scaling; plain tensors in and out) under ``torch.compile``; True or
            a dict of ``torch.compile`` options (default ``{"dynamic": False}``). The tags stay
            outside the compiled region: :func:`dualtype.dualize` strips the tag before the
            compiled map and tags its result after, and the momentum, the weight decay and
            the checked update run eagerly on typed tensors. One graph per bucket shape.

    Guarantees: the momentum buffers are ``Dual[N]``; the only Dual→Primal step is
    :func:`dualtype.dualize`; all updates are computed before any weight or buffer changes,
    so a NaN/Inf gradient raises :class:`~dualtype.errors.NonFiniteError` naming the
    parameter and leaves weights and momentum untouched. ``state_dict()`` holds the buffers
    and each group's names, norms and targets; loading it resumes bit-identically.

    **Distributed seam.** All dualization happens in one overridable method,
    :meth:`_dualize` (``list[DualizeItem] -> list[PrimalTensor]``, same order). It is pure:
    no optimizer state is read or written there, and its results are applied by
    :meth:`step` afterwards. ``dualtype.distributed`` can split the work across ranks by
    overriding only that method (e.g. each rank dualizes a shard of the items, then the
    results are all-gathered) — the momentum, the weight decay and the checked update stay
    here. :meth:`_dualize_batch` is the per-bucket primitive it may reuse.
    """

    def __init__(
        self,
        params: "nn.Module | Iterable[Tensor] | Iterable[tuple[str, Tensor]] | Iterable[dict]",
        lr: float = 0.26,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.05,
        *,
        norms: Mapping[Any, "str | Norm"] | None = None,
        targets: Mapping[Any, float] | None = None,
        modular: Any = None,
        method: str | None = None,
        batched: bool = True,
        compile: "bool | Mapping[str, Any]" = False,
        example: Any = None,
        no_decay: "Iterable[str]" = (),
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=bool(nesterov),
                        weight_decay=weight_decay, method=method)
        self._check_hyper(defaults, "ModularSGD")
        self._user_norms = norms
        self._user_targets = targets
        self.batched = bool(batched)
        if compile and not isinstance(compile, (bool, Mapping)):
            raise ConfigError(f"compile must be a bool or a dict of torch.compile options, got {compile!r}")
        self._compile_options = ({"dynamic": False, **compile} if isinstance(compile, Mapping)
                                 else {"dynamic": False} if compile else None)
        self._compiled_norms: dict[str, Norm] = {}
        self._names: dict[int, str] = {}
        self._types: ModelTypes | None = None  # the model's table, when given a model
        self._flat = modular is False  # no structure: every target 1
        self._fixed: set[tuple[str, str]] = set()  # (name, "norm"/"target") set by the user
        self._seen_version: tuple = ()
        self._warned = False

        if isinstance(params, nn.Module):
            named = self._adopt_model(params, norms, targets, modular, example)
            groups = self._decay_groups(named, no_decay)
        else:
            if modular not in (None, False) or example is not None:
                raise ConfigError(
                    "modular= and example= need the model: pass the nn.Module itself, "
                    "e.g. ModularSGD(model, lr=...)"
                )
            if no_decay:
                raise ConfigError("no_decay= needs the model (roles come from its table): "
                                  "ModularSGD(model, weight_decay=..., no_decay=['gain', 'bias'])")
            if isinstance(params, Tensor):
                raise ConfigError(
                    "params must be a model or an iterable of tensors, got a single tensor; "
                    "wrap it in a list: ModularSGD([p], ...)"
                )
            groups = list(params)
            if not groups:
                raise ConfigError("ModularSGD got an empty parameter list")
            if not isinstance(groups[0], dict):
                groups = [{"params": groups}]
        super().__init__(groups, defaults)
        self._seen_version = tuple(t.version for t in self._tables())

    # --- construction ---------------------------------------------------------------------

    def _adopt_model(self, model: nn.Module, norms: Any, targets: Any, modular: Any, example: Any) -> list:
        """Type the model (keeping what the user typed) and read its table."""
        sparse = [n for n, m in model.named_modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.sparse]
        if sparse:
            raise ConfigError(f"{', '.join(sparse)}: sparse embedding gradients are not supported by "
                              "ModularSGD (its momentum is dense); build the embedding with sparse=False, "
                              "or train it with torch.optim.SparseAdam after typed(model, exclude=[...])")
        types = types_of(model)
        if modular not in (None, True, False):  # a ready ModularNorm: its norms and targets
            norms = {**dict(modular.norms), **dict(norms or {})}
            self._user_targets = targets = {**dict(modular.targets), **dict(targets or {})}
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        declared: dict[str, Any] = {}
        for n, p in named:
            spec = match(n, norms, p)
            if spec is not None:
                declared[n] = spec
        if norms:
            check_patterns([n for n, _ in named], {k: v for k, v in norms.items() if isinstance(k, str)},
                           "norms", type(model).__name__)
        if typed_handle(model) is None:
            typed(model, norms={**types.norms, **declared}, strict=types.strict)
        elif declared:
            types.declare(norms=declared)
        if example is not None:
            types.observe(*(example if isinstance(example, tuple) else (example,)))
        self._types = types
        excluded = {r.name for r in types.table if r.excluded}  # another optimizer's
        return [(n, p) for n, p in named if n not in excluded]

    def _decay_groups(self, named: list, no_decay: "Iterable[str]") -> list[dict]:
        """One group, or two when ``no_decay`` (names, globs or roles) exempts some
        parameters from weight decay, as users do for gains, biases and embeddings."""
        patterns = [no_decay] if isinstance(no_decay, str) else list(no_decay)
        if not patterns:
            return [{"params": named}]
        table = self._types.table
        exempt = [(n, p) for n, p in named
                  if any(x == table[n].role or fnmatch.fnmatchcase(n, x) for x in patterns)]
        if not exempt:
            raise ConfigError(f"no_decay={patterns} matches no trainable parameter name or role; roles are "
                              f"{sorted({r.role for r in table})}")
        rest = [(n, p) for n, p in named if all(p is not q for _, q in exempt)]
        return [g for g in ({"params": rest}, {"params": exempt, "weight_decay": 0.0}) if g["params"]]

    @staticmethod
    def _check_hyper(group: Mapping[str, Any], where: str) -> None:
        if "lr" in group:
            _check_number(group["lr"], f"{where}: lr", "lr is the size of the step in the modular "
                          "norm, e.g. lr=0.02")
        if "momentum" in group:
            _check_number(group["momentum"], f"{where}: momentum", "momentum is β of the EMA "
                          "buffer, e.g. 0.9 or 0.95 (0 disables it)", upper=1.0)
        if "weight_decay" in group:
            _check_number(group["weight_decay"], f"{where}: weight_decay", "weight decay is "
                          "decoupled (p ← (1 − lr·wd)·p), e.g. 0.0 or 0.01")
        method = group.get("method")
        if method is not None and method not in METHODS:
            raise ConfigError(f"{where}: unknown orthogonalization method {method!r}; "
                              f"choose from {', '.join(METHODS)} or None (the default)")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = dict(param_group)
        raw = group.get("params")
        if isinstance(raw, Tensor):
            raw = [raw]
        elif isinstance(raw, nn.Module):
            raise ConfigError("a param group's 'params' must be tensors; pass the model itself "
                              "as the first argument instead: ModularSGD(model, ...)")
        raw = list(raw) if raw is not None else []
        where = f"param group {len(self.param_groups)}"
        algorithm = group.setdefault("algorithm", "modular")
        if algorithm not in ("modular", "adamw"):
            raise ConfigError(f"{where}: algorithm must be 'modular' or 'adamw', got {algorithm!r}")
        if algorithm == "adamw":
            if "lr" not in group:
                raise ConfigError(f"{where}: an AdamW group needs its own lr (AdamW's scale, e.g. 3e-3), "
                                  "not the modular-norm lr of the other groups")
            group.setdefault("betas", (0.9, 0.999))
            group.setdefault("eps", 1e-8)
            group.setdefault("weight_decay", 0.0)  # its own, not the matrices' default: see weight_decay
            group.setdefault("foreach", None)
            _check_adam(group, where)
        self._check_hyper(group, where)
        group_norms, group_targets = group.pop("norms", None), group.pop("targets", None)
        params, names, norm_names, target_values = [], [], [], []
        for item in raw:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                name, p = item
            else:
                p = item
                owner = owner_of(p) if isinstance(p, Tensor) else None
                name = self._names.get(id(p)) or (owner[1] if owner else None)
                if name is None:
                    name = f"group{len(self.param_groups)}.param{len(params)}"
            if not isinstance(p, Tensor):
                raise ConfigError(f"{where}: expected tensors, got {type(p).__name__}")
            self._names[id(p)] = name
            norm = self._resolve_norm(name, p, group_norms, where)
            target = self._resolve_target(name, p, group_targets, where)
            params.append(p)
            names.append(name)
            norm_names.append(norm.name)
            target_values.append(target)
        group["params"] = params
        # Kept in the group so state_dict() records them and load_state_dict() restores them.
        group["names"], group["norms"], group["targets"] = names, norm_names, target_values
        super().add_param_group(group)

    def _row(self, name: str, p: Tensor):
        """The parameter's row in its model's table (None: not from a typed model)."""
        if self._types is not None and name in self._types.table:
            return self._types.table[name]
        found = owner_of(p)
        if found is not None and found[1] in found[0].table:
            return found[0].table[found[1]]
        return None

    def _resolve_norm(self, name: str, p: Tensor, group_norms: Any, where: str) -> Norm:
        spec = match(name, group_norms, p)
        if spec is None:
            spec = match(name, self._user_norms, p)
        if spec is not None:
            self._fixed.add((name, "norm"))
            norm = _norms.get(spec)
        else:
            row = self._row(name, p)
            norm = row.norm if row is not None else norm_by_shape(p)
        if norm is None:
            raise ConfigError(
                f"{where}: cannot infer a norm for parameter '{name}' of shape "
                f"{tuple(p.shape)}; pass one, e.g. norms={{'{name}': 'l2'}} "
                f"(known: {', '.join(_norms.names())})"
            )
        norm.check(p, f"parameter '{name}'")
        info = weight_info(p)
        if info is not None and info[1] is not None and info[1] != norm:
            raise ConfigError(
                f"{where}: parameter '{name}' was typed with norm '{info[1]}' but the optimizer "
                f"was given '{norm}'; pass the model itself (ModularSGD(model, norms=...)) or "
                f"re-type it: dualtype.typed(model, norms={{'{name}': '{norm}'}})"
            )
        return norm

    def _resolve_target(self, name: str, p: Tensor, group_targets: Any, where: str) -> float:
        spec = match(name, group_targets, p)
        if spec is None:
            spec = match(name, self._user_targets, p)
        if spec is not None:
            self._fixed.add((name, "target"))
        else:
            row = None if self._flat else self._row(name, p)
            spec = row.target if row is not None else 1.0
        return _check_number(spec, f"{where}: target of '{name}'",
                             "a target is the size of the parameter's step per unit lr, e.g. 1.0")

    def _tables(self) -> list[ModelTypes]:
        """The tables this optimizer's parameters come from (the model's, or their owners')."""
        if self._types is not None:
            return [self._types]
        found = (owner_of(p) for g in self.param_groups for p in g["params"])
        return list({id(o[0]): o[0] for o in found if o is not None}.values())

    def _sync(self) -> None:
        """Re-read norms and targets the model's table changed (its first forward was
        recorded, norms were declared); what the user set stays."""
        tables = self._tables()
        for t in tables if not self._warned else ():
            if t.graph is None and not getattr(t.model, "exact_structure", False):
                self._warned = True
                warnings.warn(
                    f"ModularSGD: no forward of {type(t.model).__name__} was recorded (it is recorded "
                    "through model(...), not under torch.compile), so step sizes come from layer types "
                    "alone; pass an example input: ModularSGD(model, example=x)", stacklevel=3)
        version = tuple(t.version for t in tables)
        if version == self._seen_version:
            return
        self._seen_version = version
        for group in self.param_groups:
            for i, (p, name) in enumerate(zip(group["params"], group["names"])):
                row = self._row(name, p)
                if row is None:
                    continue
                if (name, "norm") not in self._fixed:
                    group["norms"][i] = row.norm.name
                if (name, "target") not in self._fixed and not self._flat:
                    group["targets"][i] = row.target

    # --- the step -------------------------------------------------------------------------

    def _dual_grad(self, p: Tensor, name: str, norm: Norm) -> DualTensor:
        g = p.grad
        if g.layout != torch.strided:
            raise ConfigError(f"the gradient of '{name}' is sparse ({g.layout}); ModularSGD's momentum is "
                              "dense: use sparse=False for the layer, or another optimizer for it")
        if isinstance(g, DualTensor):
            tag = norm_of(g)
            if tag is not None and tag != norm:
                raise NormMismatchError(
                    f"the gradient of '{name}' is Dual[{tag}] but the optimizer has norm "
                    f"'{norm}' for it; type the model and the optimizer with the same norms"
                )
            return g if tag is not None else dual(g, norm, name)
        if isinstance(g, PrimalTensor):
            raise ConfigError(f"the .grad of '{name}' is a primal tensor; gradients are dual")
        return dual(g, norm, name)  # an untyped gradient: declare it Dual[norm] (no copy)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter that has a gradient. Returns ``closure()``'s loss.

        Three phases: read the groups (gradients as ``Dual[N]``, momentum buffers), compute
        every update without writing anything (:func:`_momentum`, then :meth:`_dualize`),
        then write the buffers and the weights (:meth:`_apply`, torch's AdamW for its groups).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync()
        for i, group in enumerate(self.param_groups):  # settings changed after construction
            self._check_hyper(group, f"param group {i}")
        adam = [(g, *self._adamw_grads(g)) for g in self.param_groups if g["algorithm"] == "adamw"]
        items: list[DualizeItem] = []
        commits: list[tuple[Tensor, Tensor | None, dict, bool]] = []
        for group in self.param_groups:
            if group["algorithm"] == "adamw":
                continue
            params, norms, targets, grads, bufs = self._init_group(group)
            if not params:
                continue
            updates, new_bufs = _momentum(grads, bufs, group["momentum"], group["nesterov"])
            items += [DualizeItem(p, u, n, group["lr"] * t) for p, u, n, t in zip(params, updates, norms, targets)]
            commits += [(p, nb, group, n.decays) for p, nb, n in zip(params, new_bufs, norms)]
        primals = self._dualize(items)
        if len(primals) != len(items):
            raise RuntimeError(f"_dualize returned {len(primals)} updates for {len(items)} items")
        self._apply(commits, primals)
        for group, params, grads in adam:
            if params:
                self._adamw_step(group, params, grads)
        return loss

    def _init_group(self, group: dict) -> tuple[list, list, list, list, list | None]:
        """(params, norms, targets, Dual grads, momentum buffers or None) of the parameters
        of ``group`` that have a gradient; new buffers are zero and ``Dual[norm]``. Writes
        nothing."""
        params, names, norms, targets, grads = [], [], [], [], []
        for p, name, norm_name, target in zip(group["params"], group["names"], group["norms"], group["targets"]):
            if p.grad is None:
                continue
            norm = _norms.get(norm_name)
            params.append(p)
            names.append(name)
            norms.append(norm)
            targets.append(target)
            grads.append(self._dual_grad(p, name, norm))
        if group["momentum"] == 0:
            return params, norms, targets, grads, None
        bufs = []
        for p, name, norm, g in zip(params, names, norms, grads):
            buf = self.state[p].get("momentum_buffer")
            if buf is None:
                buf = torch.zeros_like(g)  # Dual[norm]
            elif not isinstance(buf, DualTensor):
                buf = dual(buf, norm, name)  # e.g. a state_dict loaded without tags
            bufs.append(buf)
        return params, norms, targets, grads, bufs

    def _apply(self, commits: list[tuple[Tensor, Tensor | None, dict, bool]], primals: list[PrimalTensor]) -> None:
        """Write the new momentum buffers, then each group's decay (on the weights whose norm
        decays) and update into its weights."""
        by_group: dict[int, tuple[list, list, list, dict]] = {}
        for (p, new_buf, group, decays), d in zip(commits, primals):
            state = self.state[p]  # every stepped parameter has a state entry, buffer or not
            if new_buf is not None:
                state["momentum_buffer"] = new_buf
            ps, ds, decayed, _ = by_group.setdefault(id(group), ([], [], [], group))
            ps.append(p)
            ds.append(d)
            if decays:
                decayed.append(p)
        for ps, ds, decayed, group in by_group.values():
            decay = group["lr"] * group["weight_decay"]
            if decay != 0 and decayed:
                torch._foreach_mul_(decayed, 1.0 - decay)
            torch._foreach_sub_(ps, ds)  # Primal[N] into a weight of norm N: checked

    def _adamw_step(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        """torch's functional AdamW on one group (bit-identical to ``torch.optim.AdamW``)."""
        torch_adam.adam(params, grads, *self._adamw_state(params), foreach=group["foreach"],
                        has_complex=any(p.is_complex() for p in params), decoupled_weight_decay=True,
                        amsgrad=False, beta1=group["betas"][0], beta2=group["betas"][1], lr=group["lr"],
                        weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)

    def _adamw_grads(self, group: dict) -> tuple[list[Tensor], list[Tensor]]:
        """(params, plain grads) of an AdamW group; a non-finite gradient raises before any write.

        Adam's m/√v is an elementwise preconditioner, not the duality map of a norm: the
        gradients leave the algebra here, through :func:`assume_primal` with that reason.
        """
        params, grads = [], []
        for p, name, norm_name in zip(group["params"], group["names"], group["norms"]):
            if p.grad is None:
                continue
            g = p.grad
            if isinstance(g, (DualTensor, PrimalTensor)):
                g = assume_primal(g, norm_name, reason=_ADAM_REASON)
                with DisableTorchFunctionSubclass():
                    g = g.as_subclass(Tensor)
            if not bool(torch.isfinite(g).all()):
                raise NonFiniteError(f"non-finite gradient (NaN or Inf) in '{name}' (AdamW group); no weight "
                                     "or optimizer state was changed")
            params.append(p)
            grads.append(g)
        return params, grads

    def _adamw_state(self, params: list[Tensor]) -> tuple[list, list, list, list]:
        """exp_avgs, exp_avg_sqs, max_exp_avg_sqs (unused) and steps, created on first use as
        ``torch.optim.AdamW`` lays them out."""
        for p in params:
            state = self.state[p]
            if "step" not in state:
                # torch keeps the step count in float64 only when that is the default dtype
                step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                state["step"] = torch.tensor(0.0, dtype=step_dtype)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        avgs, sqs, steps = ([self.state[p][k] for p in params] for k in ("exp_avg", "exp_avg_sq", "step"))
        return avgs, sqs, [], steps

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()`` of this optimizer, after checking all of it: the groups'
        names, norms, targets and settings, and every buffer's shape and values. Nothing
        is replaced when anything is wrong; the error names what."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
        if not isinstance(groups, list) or not isinstance(state_dict.get("state"), Mapping):
            raise ConfigError("load_state_dict: not an optimizer state_dict (no 'state'/'param_groups')")
        if len(groups) != len(self.param_groups):
            raise ConfigError(f"load_state_dict: {len(groups)} param groups, this optimizer has {len(self.param_groups)}")
        for i, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            where = f"load_state_dict: param group {i}"
            if not all(k in saved for k in ("names", "norms", "targets")):
                raise ConfigError(f"{where} has no names/norms/targets: not a ModularSGD state_dict "
                                  "(a torch.optim one?); start ModularSGD's state fresh instead")
            if list(saved["names"]) != list(mine["names"]):
                raise ConfigError(f"{where}: saved for parameters {saved['names'][:4]}…, this optimizer "
                                  f"has {mine['names'][:4]}…: a different model")
            for name, norm, target in zip(saved["names"], saved["norms"], saved["targets"]):
                _norms.get(norm)  # an unknown norm raises ConfigError naming it
                _check_number(target, f"{where}: target of '{name}'", "a target is ≥ 0")
            self._check_hyper(saved, where)
            if saved.get("algorithm", "modular") == "adamw":
                _check_adam(saved, where)
            ids = saved.get("params", [])
            for pid, p, name in zip(ids, mine["params"], mine["names"]):
                for key, buf in state_dict["state"].get(pid, {}).items():
                    if not isinstance(buf, Tensor) or key == "step":
                        continue
                    if tuple(buf.shape) != tuple(p.shape):
                        raise ShapeError(f"{where}: {key} of '{name}' has shape {tuple(buf.shape)}, "
                                         f"the parameter {tuple(p.shape)}: a different model")
                    if not bool(torch.isfinite(buf).all()):
                        raise NonFiniteError(f"{where}: {key} of '{name}' holds NaN or Inf: the checkpoint "
                                             "is damaged; load an earlier one")
        super().load_state_dict(state_dict)

    # --- the distributed seam ------------------------------------------------------------

    def _dualize(self, items: list[DualizeItem]) -> list[PrimalTensor]:
        """``scale·dualize_N(update)`` for every item, in order; pure (touches no state).

        Buckets items by (shape, dtype, device, norm, method) and dualizes each bucket of a
        batch-aware norm in one stacked call (one orthogonalization kernel launch per shape).
        Override this (and only this) to distribute the work, e.g. give each rank a subset
        of the buckets and all-gather the results.
        """
        out: list[PrimalTensor | None] = [None] * len(items)
        buckets: dict[tuple, list[int]] = defaultdict(list)
        methods = self._methods()
        for i, it in enumerate(items):
            if self.batched and it.norm.batchable:  # leading dims are a batch: one stacked call
                method = methods.get(id(it.param), self.defaults["method"])
                key = (tuple(it.update.shape), it.update.dtype, it.update.device, it.norm, method)
            else:
                key = ("single", i)
            buckets[key].append(i)
        for idx in buckets.values():
            results = self._dualize_batch([items[i] for i in idx])
            for i, r in zip(idx, results):
                out[i] = r
        return out  # type: ignore[return-value]

    def _dualize_batch(self, items: Sequence[DualizeItem]) -> list[PrimalTensor]:
        """Dualize items of one norm, shape and method (one item, or a stackable bucket) in one call."""
        method = self._methods().get(id(items[0].param), self.defaults["method"])
        norm = self._norm_for_kernel(items[0].norm)
        try:
            if len(items) == 1:
                it = items[0]
                return [dualize(it.update, norm, scale=it.scale, method=method)]
            stacked = torch.stack([it.update for it in items])  # Dual[norm], [B, *shape]
            scales = {it.scale for it in items}
            if len(scales) == 1:
                d = dualize(stacked, norm, scale=scales.pop(), method=method)
            else:
                d = dualize(stacked, norm, method=method)
                col = torch.tensor([it.scale for it in items], dtype=d.dtype, device=d.device)
                d = d * col.view(-1, *([1] * (d.ndim - 1)))  # c·Primal[N] stays Primal[N]
            return list(d.unbind(0))
        except NonFiniteError:
            bad = [self._names.get(id(it.param), "?") for it in items
                   if not bool(torch.isfinite(it.update).all())]
            raise NonFiniteError(
                f"non-finite gradient (NaN or Inf) in {', '.join(repr(b) for b in bad) or 'a parameter'}; "
                "no weight or momentum buffer was changed. Check the loss for overflow (lower "
                "the lr, clip gradients, use a loss scaler) and skip this step."
            ) from None

    def _norm_for_kernel(self, norm: Norm) -> Norm:
        if self._compile_options is None:
            return norm
        if norm.name not in self._compiled_norms:
            self._compiled_norms[norm.name] = _CompiledNorm(norm, self._compile_options)
        return self._compiled_norms[norm.name]

    def _methods(self) -> dict[int, str | None]:
        """id(param) → its group's orthogonalization method (read live: groups may change)."""
        return {id(p): g["method"] for g in self.param_groups for p in g["params"]}

    # --- introspection --------------------------------------------------------------------

    def __repr__(self) -> str:
        """A table of every parameter's group, shape, norm, target and step (lr·target)."""
        rows = [(str(gi), n, "×".join(map(str, p.shape)) or "scalar", nm, f"{t:.4g}", f"{group['lr'] * t:.4g}")
                for gi, group in enumerate(self.param_groups)
                for p, n, nm, t in zip(group["params"], group["names"], group["norms"], group["targets"])]
        head = ("group", "name", "shape", "norm", "target", "step (lr·target)")
        title = f"{type(self).__name__}: {len(rows)} parameter tensors in {len(self.param_groups)} group(s)"
        return format_table(head, rows, numeric={4, 5}, title=title)
