"""Dualize a list of updates across ranks: replicated (DDP) and sharded (FSDP2) paths.

Both functions take the optimizer's seam items ``(param, update, norm, scale)``
(:class:`dualtype.optim.DualizeItem`; ``scale`` is lr·target) and a ``dualize_fn`` with the
seam's contract: ``dualize_fn(items)[i]`` is ``scale_i · norm_i.dualize(update_i)`` as a
``Primal[norm_i]`` (the optimizer's own batched implementation, applied here to a subset of
the items). They return one ``Primal[norm_i]`` per item, identical on every rank that holds
it.

**Replicated** (:func:`dualize_replicated`, DDP): every rank holds every full update. The
maps that orthogonalize (``rms->rms``, ``conv2d``, and any norm this module does not know)
are split: each rank dualizes a cost-balanced share of whole matrices
(:mod:`~dualtype.distributed.plan`) and one ``all_gather`` per dtype shares the results; gloo
cannot gather unequal sizes, so each rank's results are packed into one flat buffer padded
to the largest rank's size. The O(numel) maps (entrywise, whole-vector, row maps: embedding
and head) run on every rank: recomputing them costs less than sending them.

**Sharded** (:func:`dualize_sharded`, FSDP2): each rank holds a shard of every update
(:class:`ShardLayout`). By norm:

- ``linf`` (entrywise) and, when the shard dimension is not the last one, the row maps
  ``l1->rms`` and ``rms->linf``: dualize the local shard, no communication.
- ``rms`` and ``l2`` (whole-tensor normalisations): dualize the local shard, then rescale by
  the ratio of local to global norm; the global squared norms of all such tensors travel in
  one ``all_reduce`` of a float64 vector.
- ``rms->rms``, ``conv2d`` and anything else: the whole matrix is needed. Its shards go to
  one owner rank (``all_to_all``), the owner dualizes the whole matrices it owns (one
  batched call), and the results go back as shards (a second ``all_to_all``).
- replicated placements: every rank dualizes locally (identical results).

``strategy="naive"`` is the baseline the benchmark compares against: every rank gathers every
update whole (an all-gather, as ``DTensor.full_tensor()`` does) and dualizes all of them.

**Failures.** Every rank plans the same collectives from the same shapes
(:func:`check_consistent` verifies that on the optimizer's first step). A failure in one
rank's share (a NaN gradient) does not skip a collective: it travels as one status entry in
the next message, and every rank raises after that same collective.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from dualtype.errors import ConfigError, NonFiniteError
from dualtype.norms import ELEMENTWISE, MATRIX, ROWS, VECTOR, Norm
from dualtype.tensor import dualize as _door
from dualtype.distributed.plan import assign, dualize_cost
from dualtype.distributed.wire import CommStats, as_dual, as_primal, pack

__all__ = [
    "Item",
    "DualizeFn",
    "ShardLayout",
    "default_dualize",
    "dualize_replicated",
    "dualize_sharded",
    "classify",
    "is_cheap",
    "check_consistent",
]

Item = tuple[Any, Tensor, Norm, float]  # (param, update: Dual[norm], norm, scale)
DualizeFn = Callable[[list[Item]], list[Tensor]]


def default_dualize(items: list[Item]) -> list[Tensor]:
    """``scale · dualize(update)`` per item, same-shape same-norm updates in one batched call
    (the seam's contract; ``ModularSGD._dualize`` is the one the optimizer uses)."""
    out: list[Tensor | None] = [None] * len(items)
    groups: dict[tuple, list[int]] = {}
    for i, (_, u, n, _) in enumerate(items):
        groups.setdefault((n.name, tuple(u.shape), u.dtype, u.device), []).append(i)
    for idx in groups.values():
        n = items[idx[0]][2]
        if len(idx) == 1 or not n.batchable:
            for i in idx:
                _, u, n, t = items[i]
                out[i] = _door(u, n, scale=float(t))
            continue
        batch = _door(torch.stack([items[i][1] for i in idx]), n)  # Primal[n], [B, ...]
        for j, i in enumerate(idx):
            out[i] = batch[j] * float(items[i][3])
    return out  # type: ignore[return-value]


# --- process group helpers -----------------------------------------------------------------


def _rank_world(group) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _by_dtype(indices: Sequence[int], dtypes: Sequence[torch.dtype]) -> list[list[int]]:
    groups: dict[torch.dtype, list[int]] = {}
    for i in indices:
        groups.setdefault(dtypes[i], []).append(i)
    return [groups[d] for d in sorted(groups, key=str)]  # same order on every rank


EVERY = -1  # owner value: computed by every rank


def is_cheap(norm: Norm) -> bool:
    """Maps costing O(numel) (entrywise, whole-vector, row by row): under DDP every rank
    computes them itself, which costs less than sending their results."""
    return norm.locality != MATRIX


def _with_update(item: Item, update: Tensor) -> Item:
    """The same item with another update (keeps the optimizer's item type, e.g. a NamedTuple)."""
    if hasattr(item, "_replace"):
        return item._replace(update=update) if "update" in getattr(item, "_fields", ()) else (
            type(item)(item[0], update, *item[2:]))
    return (item[0], update, *item[2:])  # type: ignore[return-value]


def _cast(t: Tensor, like: Tensor) -> Tensor:
    return t if t.dtype == like.dtype else t.to(like.dtype)


class _Status:
    """A failure in this rank's share (a NaN gradient, say) travels with the data as one
    number per message, so every rank raises after the same collective instead of one rank
    raising while the others wait in a collective it never joins. The optimizer computes
    every update before writing any, so no rank has changed a weight or a buffer."""

    NONFINITE, OTHER = 1.0, 1024.0

    def __init__(self) -> None:
        self.error: Exception | None = None

    def run(self, fn: Callable, *args: Any) -> Any:
        if self.error is not None:
            return None
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - re-raised on this rank by check()/raise_local()
            self.error = e
            return None

    @property
    def code(self) -> float:
        if self.error is None:
            return 0.0
        return self.NONFINITE if isinstance(self.error, NonFiniteError) else self.OTHER

    def check(self, codes: Sequence[float]) -> None:
        """Raise on every rank if any rank's code is non-zero (the local error if we have one)."""
        total = float(sum(codes))
        if total == 0:
            return
        if self.error is not None:
            raise self.error
        if total >= self.OTHER:
            raise RuntimeError("dualtype.distributed: another rank failed while dualizing its "
                               "share of the updates (see that rank's traceback); no weight or "
                               "momentum buffer was changed")
        raise NonFiniteError(
            "non-finite gradient (NaN or Inf) in a parameter dualized by another rank; no "
            "weight or momentum buffer was changed on any rank. Check the loss for overflow "
            "(lower the lr, clip gradients, use a loss scaler) and skip this step."
        )

    def raise_local(self) -> None:
        if self.error is not None:
            raise self.error


def check_consistent(items: list[Item], layouts: Sequence[ShardLayout] | None = None, group=None,
                     values: bool = False, stats: CommStats | None = None) -> None:
    """Raise :class:`ConfigError` on every rank unless all ranks plan the same exchange: the
    same items (global shapes, norms, dtypes, order) and, with ``values`` (replicated items
    only), the same update values (as DDP guarantees). One small all_gather."""
    rank, world = _rank_world(group)
    if world == 1:
        return
    shapes = [tuple(lay.global_shape) for lay in layouts] if layouts is not None else [
        tuple(u.shape) for _, u, _, _ in items]
    sig = zlib.crc32(repr([(s, n.name, str(u.dtype)) for s, (_, u, n, _) in zip(shapes, items)]).encode())
    total = sum(float(torch.sum(u.detach().to(torch.float64))) for _, u, _, _ in items) if values else 0.0
    device = items[0][1].device if items else torch.device("cpu")
    mine = torch.tensor([float(sig), total], dtype=torch.float64, device=device)
    every = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(every, mine, group=group)
    if stats is not None:
        stats.add("all_gather", mine.numel() * mine.element_size() * (world - 1))
    got = [t.tolist() for t in every]
    if any(g[0] != got[0][0] for g in got):
        raise ConfigError(
            "dualtype.distributed: the ranks disagree on the parameters to update (shapes, "
            "norms, dtypes or order differ, or some rank lacks gradients others have). Every "
            "rank must build the same model and optimizer, and step with the same set of "
            "gradients.")
    if values and any(g[1] != got[0][1] for g in got):
        raise ConfigError(
            "dualtype.distributed: the ranks hold different gradients, but plain (unsharded) "
            "parameters are treated as replicated: each rank dualizes a share and the others "
            "take its result. Wrap the model in DistributedDataParallel (or shard it with "
            "fully_shard), or use dualtype.optim.ModularSGD for independent models per rank.")


# --- replicated (DDP) ----------------------------------------------------------------------


def dualize_replicated(
    items: list[Item],
    dualize_fn: DualizeFn = default_dualize,
    group=None,
    stats: CommStats | None = None,
) -> list[Tensor]:
    """Dualize full, replicated updates with the work split across the ranks of ``group``.

    Every rank must pass the same items (same shapes, norms, dtypes and order; values equal
    as DDP guarantees). Returns ``Primal[norm_i]`` per item, bit-identical on all ranks.
    """
    rank, world = _rank_world(group)
    if world == 1 or not items:
        return list(dualize_fn(items)) if items else []
    split = [i for i, (_, _, n, _) in enumerate(items) if not is_cheap(n)]
    owners = [EVERY] * len(items)  # cheap maps: every rank (cheaper to recompute than to send)
    for i, r in zip(split, assign([dualize_cost(items[i][1].shape, items[i][2]) for i in split], world)):
        owners[i] = r
    mine = [i for i, r in enumerate(owners) if r in (rank, EVERY)]
    out: list[Tensor | None] = [None] * len(items)
    status = _Status()
    results = status.run(dualize_fn, [items[i] for i in mine]) if mine else []
    for i, r in zip(mine, results or []):
        out[i] = _cast(r, items[i][1])
    dtypes = [u.dtype for _, u, _, _ in items]
    for idx in _by_dtype(split, dtypes):
        per_rank = [[i for i in idx if owners[i] == r] for r in range(world)]
        sizes = [sum(items[i][1].numel() for i in ids) for ids in per_rank]
        length = max(sizes)
        if length == 0:
            continue
        device = items[idx[0]][1].device
        ok = status.error is None
        # results padded to the largest share, then one status entry
        buf = pack([out[i] for i in per_rank[rank]] if ok else [], length + 1, dtypes[idx[0]], device)
        buf[-1] = status.code
        recv = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(recv, buf, group=group)
        if stats is not None:
            stats.add("all_gather", buf.numel() * buf.element_size() * (world - 1))
        status.check(torch.stack([r[-1] for r in recv]).tolist())
        for r in range(world):
            if r == rank:
                continue
            offset = 0
            for i in per_rank[r]:
                u, n = items[i][1], items[i][2]
                out[i] = as_primal(recv[r][offset : offset + u.numel()].view(u.shape), n)
                offset += u.numel()
    status.raise_local()  # only reachable when no buffer carried the status
    return out  # type: ignore[return-value]


# --- sharded (FSDP2) -----------------------------------------------------------------------


@dataclass(frozen=True)
class ShardLayout:
    """How one tensor is split over the ranks of a 1-D mesh: along ``dim`` in ``torch.chunk``
    pieces of ``sizes[r]`` (uneven and empty shards allowed), or replicated (``dim=None``)."""

    global_shape: tuple[int, ...]
    dim: int | None
    sizes: tuple[int, ...]

    @staticmethod
    def chunked(global_shape: Sequence[int], dim: int | None, world: int) -> "ShardLayout":
        """``torch.chunk`` semantics (DTensor ``Shard(dim)``, FSDP2's default ``dim=0``)."""
        shape = tuple(int(s) for s in global_shape)
        if dim is None:
            return ShardLayout(shape, None, tuple([0] * world))
        dim = dim % len(shape)
        n = shape[dim]
        chunk = -(-n // world) if n else 0
        sizes = tuple(max(0, min(n, (r + 1) * chunk) - r * chunk) for r in range(world))
        return ShardLayout(shape, dim, sizes)

    @staticmethod
    def of(t: Any) -> "ShardLayout | None":
        """The layout of a DTensor on a 1-D mesh (None for a plain tensor)."""
        try:
            from torch.distributed.tensor import DTensor, Replicate, Shard
        except ImportError:  # pragma: no cover - torch without DTensor
            return None
        if not isinstance(t, DTensor):
            return None
        mesh, placements = t.device_mesh, t.placements
        if mesh.ndim != 1 or len(placements) != 1:
            raise ConfigError(
                f"dualtype.distributed supports DTensors on a 1-D mesh (FSDP2's fully_shard "
                f"default); got mesh {mesh} with placements {placements}"
            )
        (pl,) = placements
        world = mesh.size()
        if isinstance(pl, Replicate):
            return ShardLayout.chunked(t.shape, None, world)
        if type(pl) is not Shard:  # _StridedShard, Partial, ...
            raise ConfigError(f"unsupported DTensor placement {pl!r}: use Shard(dim) or Replicate()")
        layout = ShardLayout.chunked(t.shape, pl.dim, world)
        local = tuple(t.to_local().shape)
        if local != layout.shard_shape(mesh.get_local_rank()):
            raise ConfigError(
                f"DTensor local shape {local} is not the torch.chunk shard "
                f"{layout.shard_shape(mesh.get_local_rank())} of {tuple(t.shape)}"
            )
        return layout

    def shard_shape(self, rank: int) -> tuple[int, ...]:
        if self.dim is None:
            return self.global_shape
        s = list(self.global_shape)
        s[self.dim] = self.sizes[rank]
        return tuple(s)

    def shard_numel(self, rank: int) -> int:
        return math.prod(self.shard_shape(rank))

    def offset(self, rank: int) -> int:
        return sum(self.sizes[:rank])


LOCAL, RESCALE, ASSEMBLE = "local", "rescale", "assemble"


def classify(norm: Norm, layout: ShardLayout) -> str:
    """How a sharded update of ``norm`` is dualized: ``local``, ``rescale`` or ``assemble``."""
    if layout.dim is None or norm.locality == ELEMENTWISE:
        return LOCAL
    if norm.locality == ROWS and layout.dim < len(layout.global_shape) - 1:
        return LOCAL  # row maps: each row is whole on one rank
    if norm.locality == VECTOR:
        return RESCALE
    return ASSEMBLE


def _acc_sumsq(u: Tensor) -> Tensor:
    """Σ u² in float64 as a plain 0-d tensor (``sum`` observes a value: the tag drops)."""
    return torch.sum(u.detach().to(torch.float64).square())


def dualize_sharded(
    items: list[Item],
    layouts: Sequence[ShardLayout],
    dualize_fn: DualizeFn = default_dualize,
    group=None,
    stats: CommStats | None = None,
    strategy: str = "split",
) -> list[Tensor]:
    """Dualize sharded updates: ``items[i][1]`` is this rank's shard of a tensor laid out as
    ``layouts[i]``. Returns this rank's shard of ``scale_i · norm_i.dualize(full update_i)``
    as ``Primal[norm_i]`` for every item (see the module doc for the communication).
    Every rank must pass the same items in the same order, each with its own shard."""
    if strategy not in ("split", "naive"):
        raise ConfigError(f"strategy must be 'split' or 'naive', got {strategy!r}")
    rank, world = _rank_world(group)
    out: list[Tensor | None] = [None] * len(items)
    kinds = [classify(n, lay) if world > 1 else LOCAL for (_, _, n, _), lay in zip(items, layouts)]
    if strategy == "naive" and world > 1:
        kinds = [LOCAL if lay.dim is None else "gather" for lay in layouts]

    status = _Status()  # failures travel with the next collective (see _Status)
    local = [i for i, k in enumerate(kinds) if k in (LOCAL, RESCALE) and items[i][1].numel()]
    if local:
        for i, r in zip(local, status.run(dualize_fn, [items[i] for i in local]) or []):
            out[i] = _cast(r, items[i][1])
    for i, k in enumerate(kinds):  # empty shards: the door handles them, no kernel call
        if k in (LOCAL, RESCALE) and items[i][1].numel() == 0:
            _, u, n, t = items[i]
            out[i] = _door(u, n, scale=float(t))

    rescale = [i for i, k in enumerate(kinds) if k == RESCALE]
    if rescale:
        _rescale(items, layouts, out, rescale, status, group, stats)

    gather = [i for i, k in enumerate(kinds) if k == "gather"]
    if gather:  # naive: local items are replicated, so a failure is the same on every rank
        status.raise_local()
        _naive(items, layouts, out, gather, dualize_fn, rank, world, group, stats)

    assemble = [i for i, k in enumerate(kinds) if k == ASSEMBLE]
    if assemble:
        _assemble(items, layouts, out, assemble, dualize_fn, status, rank, world, group, stats)
    status.raise_local()  # all-local plans have no collective to carry a failure
    return out  # type: ignore[return-value]


def _rescale(items, layouts, out, idx, status, group, stats) -> None:
    """Vector maps c(n)·g/‖g‖₂ (rms, l2) over a sharded tensor: local result × (local norm /
    global norm) × c(n)/c(n_local) (``Norm.shard_factor``; √(n/n_local) for rms). One
    all_reduce of the squared norms (float64), with this rank's status as the last entry."""
    device = items[idx[0]][1].device
    local_sq = torch.stack([_acc_sumsq(items[i][1]).to(device) for i in idx])
    msg = torch.cat([local_sq, torch.full((1,), status.code, dtype=local_sq.dtype, device=device)])
    dist.all_reduce(msg, group=group)
    if stats is not None:
        stats.add("all_reduce", msg.numel() * msg.element_size())
    status.check([msg[-1].item()])
    global_sq = msg[:-1]
    ratio = torch.where(global_sq > 0, (local_sq / torch.where(global_sq > 0, global_sq, 1)).sqrt(), 0)
    for j, i in enumerate(idx):
        u, n = items[i][1], items[i][2]
        if u.numel() == 0:
            continue
        c = ratio[j]
        factor = n.shard_factor(math.prod(layouts[i].global_shape), u.numel())
        if factor != 1.0:
            c = c * factor
        out[i] = out[i] * c.to(out[i].dtype)


def _exchange(blocks: list[list[Tensor]], recv_sizes: list[int], status: _Status, dtype, device,
              group, stats) -> tuple[Tensor, list[int]]:
    """all_to_all_single: ``blocks[d]`` go to rank d, each block led by this rank's status.
    Returns the received buffer and where each source's data starts; raises everywhere if
    any rank reported a failure."""
    world = len(blocks)
    send_split = [1 + sum(t.numel() for t in blk) for blk in blocks]
    recv_split = [1 + n for n in recv_sizes]
    flag = torch.full((1,), status.code, dtype=dtype, device=device)
    send = pack([t for blk in blocks for t in (flag, *blk)], sum(send_split), dtype, device)
    recv = torch.empty(sum(recv_split), dtype=dtype, device=device)
    dist.all_to_all_single(recv, send, recv_split, send_split, group=group)
    rank = dist.get_rank(group)
    if stats is not None:
        stats.add("all_to_all", (sum(send_split) - send_split[rank]) * send.element_size())
    heads = [sum(recv_split[:s]) for s in range(world)]
    status.check(recv[heads].tolist())
    return recv, [h + 1 for h in heads]


def _assemble(items, layouts, out, idx, dualize_fn, status, rank, world, group, stats) -> None:
    """Whole-matrix maps: shards → owner (all_to_all), dualize there, shards back (all_to_all)."""
    owners_of = assign([dualize_cost(layouts[i].global_shape, items[i][2]) for i in idx], world)
    owner = dict(zip(idx, owners_of))
    dtypes = {i: items[i][1].dtype for i in idx}
    for ids in _by_dtype(idx, dtypes):
        dtype, device = dtypes[ids[0]], items[ids[0]][1].device
        mine = [i for i in ids if owner[i] == rank]
        # 1. shards to owners: to each rank d, my shards of d's items (item order)
        blocks = [[items[i][1] for i in ids if owner[i] == d] for d in range(world)]
        recv, starts = _exchange(blocks, [sum(layouts[i].shard_numel(s) for i in mine) for s in range(world)],
                                 status, dtype, device, group, stats)
        # 2. the owner reassembles whole matrices and dualizes them in one call
        full: dict[int, Tensor] = {}
        for i in mine:
            lay = layouts[i]
            pieces = []
            for s in range(world):
                n = lay.shard_numel(s)
                pieces.append(recv[starts[s] : starts[s] + n].view(lay.shard_shape(s)))
                starts[s] += n
            u, nrm = items[i][1], items[i][2]
            full[i] = as_dual(torch.cat(pieces, dim=lay.dim), nrm, getattr(u, "param_name", None))
        results = status.run(dualize_fn, [_with_update(items[i], full[i]) for i in mine]) if mine else []
        # 3. shards back: to each rank d, d's shard of each of my results (item order)
        back = [_cast(r, full[i]) for i, r in zip(mine, results or [])]
        blocks2 = [[r.narrow(layouts[i].dim, layouts[i].offset(d), layouts[i].sizes[d])
                    for i, r in zip(mine, back)] if status.error is None else [] for d in range(world)]
        if status.error is not None:  # keep the message sizes the peers expect
            blocks2 = [[torch.zeros(sum(layouts[i].shard_numel(d) for i in mine), dtype=dtype, device=device)]
                       for d in range(world)]
        recv2, starts2 = _exchange(
            blocks2, [sum(layouts[i].shard_numel(rank) for i in ids if owner[i] == s) for s in range(world)],
            status, dtype, device, group, stats)
        for s in range(world):
            offset = starts2[s]
            for i in ids:
                if owner[i] != s:
                    continue
                lay, n = layouts[i], items[i][2]
                k = lay.shard_numel(rank)
                out[i] = as_primal(recv2[offset : offset + k].view(lay.shard_shape(rank)), n)
                offset += k


def _naive(items, layouts, out, idx, dualize_fn, rank, world, group, stats) -> None:
    """Baseline: every rank all-gathers every update whole and dualizes all of them."""
    fulls = []
    for i in idx:
        _, u, n, _ = items[i]
        lay = layouts[i]
        chunk = max(lay.sizes)
        piece_shape = list(lay.global_shape)
        piece_shape[lay.dim] = chunk
        buf = pack([u], math.prod(piece_shape), u.dtype, u.device)  # padded to the largest shard
        recv = [torch.empty_like(buf) for _ in range(world)]
        dist.all_gather(recv, buf, group=group)
        if stats is not None:
            stats.add("all_gather", buf.numel() * buf.element_size() * (world - 1))
        pieces = [recv[s][: lay.shard_numel(s)].view(lay.shard_shape(s)) for s in range(world)]
        fulls.append(as_dual(torch.cat(pieces, dim=lay.dim), n, getattr(u, "param_name", None)))
    results = dualize_fn([_with_update(items[i], f) for i, f in zip(idx, fulls)])
    for i, f, r in zip(idx, fulls, results):
        lay = layouts[i]
        out[i] = _cast(r, f).narrow(lay.dim, lay.offset(rank), lay.sizes[rank])
