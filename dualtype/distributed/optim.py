"""``DistributedModularSGD``: :class:`~dualtype.optim.ModularSGD` with the dualize work split
across the ranks of a process group (DDP) or done on FSDP2 shards.

Only the optimizer's seam ``_dualize`` is overridden; momentum, weight decay and the checked
update are the base class's.

**DDP** (plain parameters, every rank holds the same averaged gradient): the items are
dualized by :func:`~dualtype.distributed.exchange.dualize_replicated`: each rank a
cost-balanced share of whole matrices, then one padded ``all_gather`` per dtype, so all
ranks apply bit-identical updates.

**FSDP2** (``fully_shard``: DTensor parameters and gradients on a 1-D mesh): the optimizer
works on *local shards*. For every DTensor parameter it keeps a plain leaf tensor sharing
the local shard's storage (the "shard view"), registered as a weight of the parameter's
norm so the docs/design.md §4 update checks apply to it. Gradients are the local shards of the
DTensor gradients, the momentum buffers have the local shard's shape (the momentum stays
sharded), and :func:`~dualtype.distributed.exchange.dualize_sharded` dualizes: row maps and
sign locally, rms/l2 with one scalar all-reduce, RMS→RMS and Conv2D on owner ranks (two
``all_to_all``). No DTensor op runs inside the step, so Newton–Schulz never goes through
DTensor dispatch.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dualtype import norms as _norms
from dualtype.errors import ConfigError
from dualtype.norms import Norm
from dualtype.optim import DualizeItem, ModularSGD
from dualtype.roles import match, types_of
from dualtype.tensor import PrimalTensor, register_weight, unregister_weight
from dualtype.distributed.exchange import (
    ShardLayout,
    check_consistent,
    dualize_replicated,
    dualize_sharded,
)
from dualtype.distributed.wire import CommStats

__all__ = ["DistributedModularSGD", "is_sharded"]


def is_sharded_tensor(t: object) -> bool:
    """True for a DTensor (False where torch is built without torch.distributed)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover
        return False
    return isinstance(t, DTensor)


def is_sharded(model: nn.Module) -> bool:
    """True if any parameter of ``model`` is a DTensor (``fully_shard`` was applied)."""
    return any(is_sharded_tensor(p) for p in model.parameters())


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (any other model as it is)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def _model_norms(model: nn.Module, norms: Any, targets: Any, modular: Any):
    """name → (norm, target) for every trainable parameter, from the model's table."""
    types = types_of(model)
    types.watch()
    out = {}
    for name, p in model.named_parameters():
        row = types.table[name]
        if not p.requires_grad or row.excluded:
            continue
        spec, t = match(name, norms, p), match(name, targets, p)
        norm = _norms.get(spec) if spec is not None else row.norm
        out[name] = (norm, float(t if t is not None else 1.0 if modular is False else row.target))
    return types, out


class DistributedModularSGD(ModularSGD):
    """ModularSGD under ``torch.distributed``: same update, dualize work split across ranks.

    Args:
        model_or_params: the model (plain, DDP-wrapped, or after ``fully_shard``), or
            parameters / param groups as for :class:`ModularSGD` (DDP only).
        process_group: the group the work is split over. Default: the DDP wrapper's group,
            the FSDP2 mesh's group, or the default group; a single process (no group
            initialized) runs the base optimizer unchanged.
        strategy: ``"split"`` (this design) or ``"naive"`` (FSDP2 only: every rank gathers
            every update whole and dualizes all of them; the benchmark's baseline).
        verify: ``"first"`` (default): on the first step, check that all ranks plan the same
            exchange (one tiny all_gather), so a mismatch raises instead of hanging or
            mixing results; ``True``: every step, and under DDP also that the gradients are
            really replicated (debugging); ``False``: never.
        **kwargs: ``lr``, ``momentum``, ``nesterov``, ``weight_decay``, ``norms``,
            ``targets``, ``modular``, ``method``, ``batched`` as for :class:`ModularSGD`.

    ``comm`` (:class:`CommStats`) counts the bytes this rank sent in the dualize exchange.
    """

    def __init__(
        self,
        model_or_params: "nn.Module | Iterable[Any]",
        *args: Any,
        process_group: Any = None,
        strategy: str = "split",
        verify: "bool | str" = "first",
        **kwargs: Any,
    ) -> None:
        if strategy not in ("split", "naive"):
            raise ConfigError(f"strategy must be 'split' or 'naive', got {strategy!r}")
        if verify not in (True, False, "first"):
            raise ConfigError(f"verify must be True, False or 'first', got {verify!r}")
        self.strategy = strategy
        self.verify = verify
        self._verified = False
        self.comm = CommStats()
        self._layouts: dict[int, ShardLayout] = {}
        self._shards: list[tuple[str, Tensor, Tensor, Norm]] = []  # (name, DTensor, view, norm)
        self._sharded_model: nn.Module | None = None
        src = model_or_params
        if isinstance(src, nn.Module):
            from torch.nn.parallel import DistributedDataParallel

            if isinstance(src, DistributedDataParallel) and process_group is None:
                process_group = src.process_group
            src = unwrap(src)
        if isinstance(src, nn.Module) and is_sharded(src):
            super().__init__(self._adopt_sharded(src, kwargs, process_group), *args, **kwargs)
            types, free_norms, free_targets = self._follow
            self._types = types
            self._fixed = ({(n, "norm") for n, _, _, _ in self._shards if n not in free_norms}
                           | {(n, "target") for n, _, _, _ in self._shards if n not in free_targets})
            self._seen_version = (types.version,)
            process_group = self._group if process_group is None else process_group
        else:
            if not isinstance(src, nn.Module):
                src = list(src)
                flat = [t for g in src for t in (g["params"] if isinstance(g, dict) else [g])]
                if any(is_sharded_tensor(t[1] if isinstance(t, tuple) else t) for t in flat):
                    raise ConfigError(
                        "DTensor parameters (FSDP2) need the model: pass the module after "
                        "fully_shard, DistributedModularSGD(model, ...), so the optimizer can "
                        "name the parameters and work on their local shards")
            super().__init__(src, *args, **kwargs)
        self.process_group = process_group

    # --- FSDP2: shard views ---------------------------------------------------------------

    def _adopt_sharded(self, model: nn.Module, kwargs: dict, group: Any) -> list:
        user_norms, user_targets = kwargs.pop("norms", None), kwargs.pop("targets", None)
        modular = kwargs.pop("modular", None)
        if modular is False:
            kwargs["modular"] = False  # every target 1, also after the table changes
        types, resolved = _model_norms(model, user_norms, user_targets, modular)
        kwargs["norms"] = {n: nt[0] for n, nt in resolved.items()}
        kwargs["targets"] = {n: nt[1] for n, nt in resolved.items()}
        # the table may still change (first forward): what the user did not set follows it
        self._follow = (types, {n for n in resolved if match(n, user_norms) is None},
                        {n for n in resolved if match(n, user_targets) is None})
        self._sharded_model = model
        self._group = None
        named = []
        for name, p in model.named_parameters():
            if name not in resolved:
                continue
            norm = resolved[name][0]
            layout = ShardLayout.of(p)
            if layout is None:  # a plain parameter next to sharded ones: replicated
                layout = ShardLayout.chunked(p.shape, None, dist.get_world_size(group))
                view = p.detach()
            else:
                if self._group is None:
                    self._group = p.device_mesh.get_group()
                view = p.to_local().detach()  # a leaf sharing the local shard's storage
            register_weight(view, name, norm)
            self._layouts[id(view)] = layout
            self._shards.append((name, p, view, norm))
            named.append((name, view))
        return named

    def _sync(self) -> None:
        super()._sync()
        if self._shards and self._types is not None:  # the views are checked weights too
            table = self._types.table
            for k, (name, p, view, norm) in enumerate(self._shards):
                if (name, "norm") not in self._fixed and table[name].norm != norm:
                    register_weight(view, name, table[name].norm)
                    self._shards[k] = (name, p, view, table[name].norm)

    def _sync_shards(self) -> None:
        """Point the shard views at the current local shards and hand them the gradients."""
        for name, p, view, norm in self._shards:
            local = p.to_local() if hasattr(p, "to_local") else p
            if local.data_ptr() != view.data_ptr() or local.shape != view.shape:
                unregister_weight(view)
                view.data = local.detach()
                register_weight(view, name, norm)
            g = p.grad
            view.grad = None if g is None else (g.to_local() if hasattr(g, "to_local") else g)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        if not self._shards:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._sync_shards()
        super().step()
        for _, _, view, _ in self._shards:
            view.grad = None  # the DTensor gradient keeps the memory; drop the alias
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none)
        for _, p, _, _ in self._shards:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def shard_views(self) -> dict[str, tuple[Tensor, Tensor]]:
        """FSDP2: parameter name → (DTensor parameter, the optimizer's local shard view)."""
        return {name: (p, view) for name, p, view, _ in self._shards}

    # --- the seam -------------------------------------------------------------------------

    def _dualize(self, items: list[DualizeItem]) -> list[PrimalTensor]:
        base = super()._dualize
        if not (dist.is_available() and dist.is_initialized()):
            return base(items)
        layouts = [self._layouts[id(it.param)] for it in items] if self._shards else None
        if self.verify is True or (self.verify == "first" and not self._verified):
            check_consistent(items, layouts, self.process_group,
                             values=self.verify is True and not self._shards)
            self._verified = True
        if layouts is None:
            return dualize_replicated(items, base, self.process_group, self.comm)
        return dualize_sharded(items, layouts, base, self.process_group, self.comm, self.strategy)
