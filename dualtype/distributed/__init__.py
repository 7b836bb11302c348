"""dualtype under ``torch.distributed``: the dualize work split across ranks (DDP) or done on
FSDP2 shards, and checkpoints with ``torch.distributed.checkpoint``.

Usage (``torchrun``; gloo on CPU, nccl on GPU, same code)::

    model = DDP(model)                    # or: fully_shard(block) ...; fully_shard(model)
    opt = DistributedModularSGD(model, lr=0.02)            # ModularSGD's arguments
    ...
    dualtype.distributed.checkpoint.save("ckpt", model, opt, extra={"step": step})
    step = dualtype.distributed.checkpoint.load("ckpt", model, opt)["step"]

What each rank does (:mod:`~dualtype.distributed.exchange`):

- **DDP**: matrices that need an orthogonalization (``rms->rms``, ``conv2d``) are split
  across ranks by cost (:mod:`~dualtype.distributed.plan`), whole; one padded ``all_gather``
  shares the results, so every rank applies bit-identical updates. Row maps, vectors and
  sign run on every rank (cheaper than sending them).
- **FSDP2** (DTensor parameters on a 1-D mesh, ``Shard(dim)`` or ``Replicate``): the
  optimizer works on local shards; momentum stays sharded; row maps and sign are local when
  rows are whole (``Shard(0)``, FSDP2's default), ``rms``/``l2`` need one scalar
  ``all_reduce``, whole-matrix maps are assembled on an owner rank (``all_to_all``) and sent
  back. Uneven and empty shards work. No DTensor op runs in the step.

Limits: 2-D meshes (HSDP) are refused; with plain parameters every rank of the group must
hold the same gradients (as DDP guarantees); under FSDP2 do not call ``dualtype.typed`` on
the sharded model: the optimizer tags the local gradients itself. A failure in one rank's
share (a NaN gradient) raises on every rank after the same collective.
"""

from dualtype.distributed import checkpoint
from dualtype.distributed.exchange import ShardLayout, default_dualize, dualize_replicated, dualize_sharded
from dualtype.distributed.optim import DistributedModularSGD, is_sharded
from dualtype.distributed.wire import CommStats

__all__ = [
    "DistributedModularSGD",
    "checkpoint",
    "is_sharded",
    "ShardLayout",
    "default_dualize",
    "dualize_replicated",
    "dualize_sharded",
    "CommStats",
]
