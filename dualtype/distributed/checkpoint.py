"""Checkpoints of a model and its :class:`DistributedModularSGD` with
``torch.distributed.checkpoint`` (DCP), keyed by parameter name so they reshard.

Layout of the state dict handed to DCP::

    {"model":  model.state_dict(),                  # FSDP2: DTensors; DDP: plain tensors
     "optim":  {"state": {name: {"momentum_buffer": tensor}},   # FSDP2: DTensor Shard(0)
                "param_groups": [{"lr": ..., "momentum": ..., ..., "names": [...]}]},
     "meta":   {"stateful": [names with optimizer state], "world_size": n},
     "extra":  {"pickle": bytes}}                    # a picklable dict (step, scheduler)

Under FSDP2 the momentum buffers are the local shards of the optimizer; they are wrapped as
DTensors with the parameter's mesh and placement, so DCP stores each shard once and can load
them into another world size. Under DDP everything is replicated and DCP writes it once.
Supported: same world size; FSDP2 ↔ FSDP2 on another world size (DTensor resharding);
DDP ↔ FSDP2 and DDP on another world size (replicated tensors load into shards and back).
Dual/Primal tags are not stored: buffers are saved as plain tensors and the optimizer
re-tags them ``Dual[norm]`` on its next step (it does so for any untagged buffer).
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dualtype.distributed.optim import DistributedModularSGD, is_sharded_tensor, unwrap
from dualtype.errors import ConfigError
from dualtype.tensor import plain

__all__ = ["get_state_dict", "set_state_dict", "save", "load"]

_MOMENTUM = "momentum_buffer"  # ModularSGD's per-parameter state key


def _params(optimizer: DistributedModularSGD):
    """(name, optimizer's parameter, DTensor parameter or None, group) for every parameter."""
    views = {id(v): p for p, v in optimizer.shard_views().values()}
    for group in optimizer.param_groups:
        for p, name in zip(group["params"], group["names"]):
            yield name, p, views.get(id(p)), group


def _global(local: Tensor, dparam: Any) -> Tensor:
    """Wrap a local shard with the DTensor parameter's mesh/placement (no copy)."""
    if dparam is None or not is_sharded_tensor(dparam) or local.ndim == 0:
        return local
    from torch.distributed.tensor import DTensor

    shape = tuple(dparam.shape)
    stride = tuple(math.prod(shape[i + 1:]) for i in range(len(shape)))
    return DTensor.from_local(local, dparam.device_mesh, dparam.placements, run_check=False,
                              shape=torch.Size(shape), stride=stride)


def get_state_dict(model: nn.Module, optimizer: DistributedModularSGD, extra: dict | None = None,
                   *, templates_for: set[str] | None = None) -> dict:
    """The DCP state dict (see the module doc). ``templates_for``: names whose momentum
    buffer should exist even if the optimizer has not stepped yet (zeros, to load into)."""
    state: dict[str, dict] = {}
    for name, p, dparam, group in _params(optimizer):
        st = dict(optimizer.state.get(p, {}))
        if templates_for is not None and name in templates_for and _MOMENTUM not in st:
            st[_MOMENTUM] = torch.zeros_like(plain(p))
        if st:
            state[name] = {k: _global(plain(v), dparam) if isinstance(v, Tensor) else v
                           for k, v in st.items()}
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    return {
        "model": unwrap(model).state_dict(),
        "optim": {"state": state, "param_groups": groups},
        "meta": {"stateful": sorted(state), "world_size": dist.get_world_size() if dist.is_initialized() else 1},
        "extra": {"pickle": pickle.dumps(dict(extra or {}))},  # one blob: DCP flattens dicts
    }


def set_state_dict(model: nn.Module, optimizer: DistributedModularSGD, sd: dict) -> None:
    """Apply a state dict from :func:`get_state_dict` (after ``dcp.load`` filled it)."""
    unwrap(model).load_state_dict(sd["model"])
    saved = sd["optim"]
    by_name = {name: p for name, p, _, _ in _params(optimizer)}
    for name, st in saved["state"].items():
        p = by_name[name]
        optimizer.state[p] = {k: (v.to_local() if is_sharded_tensor(v) else v).clone()
                              if isinstance(v, Tensor) else v for k, v in st.items()}
    if len(saved["param_groups"]) != len(optimizer.param_groups):
        raise ConfigError(f"checkpoint has {len(saved['param_groups'])} param groups, the "
                         f"optimizer {len(optimizer.param_groups)}")
    for group, g in zip(optimizer.param_groups, saved["param_groups"]):
        if list(g.get("names", group["names"])) != list(group["names"]):
            raise ConfigError("checkpoint parameter names differ from the optimizer's")
        for k, v in g.items():
            if k not in ("names", "norms", "targets"):
                group[k] = v


def save(path: str, model: nn.Module, optimizer: DistributedModularSGD, extra: dict | None = None,
         process_group: Any = None) -> None:
    """Save model and optimizer with ``torch.distributed.checkpoint`` into directory ``path``
    (collective: every rank calls it)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(get_state_dict(model, optimizer, extra), checkpoint_id=path, process_group=process_group)


def load(path: str, model: nn.Module, optimizer: DistributedModularSGD, process_group: Any = None) -> dict:
    """Load what :func:`save` wrote into ``model`` and ``optimizer`` (any supported world
    size, see the module doc); returns the ``extra`` dict. Collective."""
    import torch.distributed.checkpoint as dcp

    meta = {"meta": {"stateful": [], "world_size": 0}}
    dcp.load(meta, checkpoint_id=path, process_group=process_group)
    sd = get_state_dict(model, optimizer, templates_for=set(meta["meta"]["stateful"]))
    sd["optim"]["state"] = {k: v for k, v in sd["optim"]["state"].items()
                            if k in set(meta["meta"]["stateful"])}
    dcp.load(sd, checkpoint_id=path, process_group=process_group)
    set_state_dict(model, optimizer, sd)
    return pickle.loads(sd["extra"]["pickle"])  # written by save() on this job's ranks
