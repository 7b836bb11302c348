"""Who dualizes what: a cost model for the duality maps and a balanced assignment to ranks.

Every rank computes the same plan from the same shapes, so no communication is needed to
agree on it. Costs are flop counts up to a constant, stated by each norm
(:meth:`dualtype.norms.Norm.cost`): B·m·n·min(m, n) for ``rms->rms`` on ``[..., m, n]``
(Newton–Schulz), kh·kw·o·i·min(o, i) for ``conv2d`` (one polar factor per kernel tap),
numel for the row and entry maps.

The assignment is the longest-processing-time rule: items sorted by cost (largest first,
index breaking ties), each given to the currently least-loaded rank (lowest rank breaking
ties). It is deterministic, whole matrices are never split, and the largest load is within
4/3 of the optimum.
"""

from __future__ import annotations

import heapq
import math
from typing import Sequence

from dualtype.errors import ConfigError
from dualtype.norms import Norm

__all__ = ["dualize_cost", "assign"]


def dualize_cost(shape: Sequence[int], norm: Norm) -> int:
    """Flops (up to a constant) of dualizing one tensor of ``shape`` under ``norm``."""
    shape = tuple(int(s) for s in shape)
    if math.prod(shape) == 0 or len(shape) < norm.min_ndim:
        return math.prod(shape)
    return norm.cost(shape)


def assign(costs: Sequence[float], world_size: int) -> list[int]:
    """Owner rank of each item: longest-processing-time greedy, deterministic.

    >>> assign([8, 1, 4, 4], 2)
    [0, 0, 1, 1]
    """
    if world_size < 1:
        raise ConfigError(f"world_size must be ≥ 1, got {world_size}")
    owners = [0] * len(costs)
    heap = [(0.0, r) for r in range(world_size)]  # (load, rank): min-heap picks least loaded
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, r = heapq.heappop(heap)
        owners[i] = r
        heapq.heappush(heap, (load + float(costs[i]), r))
    return owners

