"""The wire: typed tensors in, plain flat buffers through the collectives, typed tensors out.

Collectives run on plain tensors only; the Dual/Primal tags never travel. This module is the
one place where values cross that boundary, in both directions:

- :func:`pack` copies typed tensors into slices of a *plain* flat buffer. A copy into a slice
  tags the slice view (the docs/design.md §4 rule for plain buffers) and leaves the buffer itself
  plain, so nothing is untagged by hand.
- :func:`as_dual` re-tags received gradient pieces with ``dualtype.dual`` (the ordinary
  constructor for a gradient assembled by hand).
- :func:`as_primal` re-tags received *updates*. They were produced by ``dualtype.dualize`` on
  the rank that owns them and carried here as bytes; the escape hatch ``assume_primal`` with
  the reason below is the only honest way to restore their role, and this function is the
  only caller of it in the distributed package. It is safe because every value it re-tags
  left ``dualize`` on its owner rank, with the same norm, and was copied bit for bit.

:class:`CommStats` counts the payload each rank sends to *other* ranks (the self-part of an
all-to-all and padding-free accounting excluded, padding included: it is sent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from dualtype.errors import ShapeError
from dualtype.norms import Norm
from dualtype.tensor import PrimalTensor, assume_primal, dual

__all__ = ["CommStats", "pack", "as_dual", "as_primal", "RECEIVED_REASON"]

RECEIVED_REASON = (
    "dualtype.distributed: already dualized by dualtype.dualize on its owner rank and "
    "received bit for bit through a collective (collectives carry plain bytes)"
)


@dataclass
class CommStats:
    """Bytes this rank sent to other ranks, by collective kind, since the last reset."""

    bytes_sent: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, nbytes: int) -> None:
        self.bytes_sent[kind] = self.bytes_sent.get(kind, 0) + int(nbytes)
        self.calls[kind] = self.calls.get(kind, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.bytes_sent.values())

    def reset(self) -> None:
        self.bytes_sent.clear()
        self.calls.clear()


def pack(tensors: Sequence[Tensor], length: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """A plain 1-D buffer of ``length`` entries holding the flattened ``tensors`` back to back,
    zero padded at the end. Typed inputs are fine: only the slice views get tagged."""
    buf = torch.empty(length, dtype=dtype, device=device)
    offset = 0
    for t in tensors:
        n = t.numel()
        if n:
            buf[offset : offset + n].copy_(t.reshape(-1))
        offset += n
    if offset > length:
        raise ShapeError(f"pack: {offset} entries do not fit a buffer of {length}")
    if offset < length:
        buf[offset:].zero_()
    return buf


def as_dual(t: Tensor, norm: Norm, name: str | None = None) -> Tensor:
    """Re-tag a gradient assembled from received pieces as ``Dual[norm]``."""
    return dual(t, norm, name)


def as_primal(t: Tensor, norm: Norm) -> PrimalTensor:
    """Re-tag an update received from its owner rank as ``Primal[norm]`` (see module doc)."""
    return assume_primal(t, norm, reason=RECEIVED_REASON)
