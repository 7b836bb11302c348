"""dualtype under ``torch.distributed``: the dualize work split across ranks (DDP) or done on
FSDP2 shards, and checkpoints with ``torch.distributed.checkpoint``.

>>> opt = DistributedModularSGD(model, lr=0.02)   # after DDP(...) or fully_shard(...)

See :mod:`dualtype.distributed.exchange` for the communication of each path.
"""

from dualtype.distributed.exchange import (
    ShardLayout,
    classify,
    default_dualize,
    dualize_replicated,
    dualize_sharded,
)
from dualtype.distributed.optim import DistributedModularSGD, is_sharded
from dualtype.distributed.plan import assign, dualize_cost, loads
from dualtype.distributed.wire import CommStats

__all__ = [
    "DistributedModularSGD",
    "is_sharded",
    "ShardLayout",
    "classify",
    "default_dualize",
    "dualize_replicated",
    "dualize_sharded",
    "assign",
    "dualize_cost",
    "loads",
    "CommStats",
]
