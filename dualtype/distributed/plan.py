"""Who dualizes what: a cost model for the duality maps and a balanced assignment to ranks.

Every rank computes the same plan from the same shapes, so no communication is needed to
agree on it. Costs are flop counts up to a constant (docs/design.md §3):

==============================  ===============================  ==========================
norm                            dualize                          cost
==============================  ===============================  ==========================
``rms->rms`` ``[..., m, n]``    orthogonal polar factor (NS)     B·m·n·min(m, n)
``conv2d`` ``[o, i, kh, kw]``   one polar factor per kernel tap  kh·kw·o·i·min(o, i)
anything else                   row or entry maps                numel
==============================  ===============================  ==========================

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
from dualtype.norms import Conv2D, Norm, RMSToRMS

__all__ = ["dualize_cost", "assign", "loads"]


def dualize_cost(shape: Sequence[int], norm: Norm) -> int:
    """Flops (up to a constant) of dualizing one tensor of ``shape`` under ``norm``."""
    shape = tuple(int(s) for s in shape)
    numel = math.prod(shape)
    if numel == 0:
        return 0
    if isinstance(norm, RMSToRMS) and len(shape) >= 2:
        m, n = shape[-2:]
        return numel * min(m, n)  # B·m·n·min(m, n)
    if isinstance(norm, Conv2D) and len(shape) >= 4:
        o, i = shape[-4:-2]
        return numel * min(o, i)  # (B·kh·kw)·o·i·min(o, i)
    return numel


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


def loads(costs: Sequence[float], owners: Sequence[int], world_size: int) -> list[float]:
    """Total cost per rank under an assignment (for reports and tests)."""
    out = [0.0] * world_size
    for c, r in zip(costs, owners):
        out[r] += float(c)
    return out
