"""Compounds built from atoms and bonds: MLP, Attention and GPT.

All are :class:`~dualtype.modules.base.Composition` s, so their masses, sensitivities and
norms are derived from their parts.
"""

from __future__ import annotations

from dualtype.checks import is_int
from dualtype.errors import ConfigError
from dualtype.modules.atoms import Embed, Head, HeadLinear, Linear, PositionEmbed
from dualtype.modules.base import Composition, Concatenation, Module, Scale, Sum, residual
from dualtype.modules.bonds import GELU, FunctionalAttention, MergeHeads, ReLU, RMSNorm

__all__ = ["MLP", "Attention", "GPT"]


class MLP(Composition):
    """``depth`` Linear layers with ReLU between: d_in → d_hidden → … → d_out.

    ``head=True`` makes the last layer a :class:`Head` (RMS→ℓ∞, logits) instead of a Linear.
    Every atom has mass 1; ReLU has sensitivity 1, so every sensitivity factor is 1 and each
    layer's target is 1/depth.
    """

    def __init__(self, d_in: int, d_hidden: int, d_out: int, depth: int = 3, head: bool = False) -> None:
        if not is_int(depth) or depth < 1:
            raise ConfigError(f"MLP depth must be an int ≥ 1, got {depth!r}")
        dims = [d_in] + [d_hidden] * (depth - 1) + [d_out]
        parts: list[Module] = []
        for i in range(depth):
            last = i == depth - 1
            parts.append(Head(dims[i], dims[i + 1]) if last and head else Linear(dims[i], dims[i + 1]))
            if not last:
                parts.append(ReLU())
        super().__init__(*parts)


class Attention(Composition):
    """Causal multi-head self-attention ``[..., T, d] → [..., T, d]``:
    Linear_out ∘ MergeHeads ∘ FunctionalAttention ∘ (Q, K, V), with Q, K, V per-head
    projections (:class:`HeadLinear`) and 1/d_head score scaling.

    Sensitivity 3 (the concatenation (Q, K, V) sums three sensitivities of 1; everything
    after it has sensitivity 1). Mass: 4 (one per atom) unless re-weighted.
    """

    def __init__(self, d_model: int, heads: int, d_head: int | None = None, causal: bool = True) -> None:
        if d_head is None:
            if d_model % heads:
                raise ConfigError(f"d_model {d_model} is not divisible by {heads} heads; give d_head")
            d_head = d_model // heads
        qkv = Concatenation(
            HeadLinear(d_model, heads, d_head), HeadLinear(d_model, heads, d_head), HeadLinear(d_model, heads, d_head),
            names=("q", "k", "v"),
        )
        super().__init__(
            qkv, FunctionalAttention(d_head, causal=causal), MergeHeads(), Linear(heads * d_head, d_model),
            names=("qkv", "attend", "merge", "out"),
        )


class GPT(Composition):
    """A decoder-only transformer from dualtype modules, token ids ``[B, T]`` → logits
    ``[B, T, vocab]``:

        embed  = ½·(Embed + PositionEmbed)
        layer  = res(MLP ∘ RMSNorm) ∘ res(Attention ∘ RMSNorm),  res(M) = (1−1/2L)·Id + (1/2L)·M
        GPT    = Head ∘ RMSNorm ∘ layer_L ∘ … ∘ layer_1 ∘ embed

    with MLP = Linear(4d→d) ∘ GELU ∘ Linear(d→4d). Well-normed: with every atom's weight of
    norm ≤ 1 every |logit| ≤ 1. Masses: the embedding gets ``embed_mass`` in total, each
    layer ``blocks_mass/layers`` (default: 1 per layer), the head ``head_mass``.
    """

    def __init__(
        self,
        vocab: int,
        d_model: int,
        heads: int,
        layers: int,
        context: int,
        mlp_ratio: int = 4,
        embed_mass: float = 1.0,
        blocks_mass: float | None = None,
        head_mass: float = 1.0,
    ) -> None:
        if not is_int(layers) or layers < 1:
            raise ConfigError(f"layers must be an int ≥ 1, got {layers!r}")
        embed = Scale(Sum(Embed(vocab, d_model), PositionEmbed(context, d_model), names=("token", "position")), 0.5)
        embed.mass = embed_mass
        depth = 2 * layers
        blocks: list[Module] = []
        per_layer = (float(layers) if blocks_mass is None else blocks_mass) / layers
        for _ in range(layers):
            attn = residual(Composition(RMSNorm(), Attention(d_model, heads), names=("rmsnorm", "attn")), depth)
            mlp = residual(
                Composition(
                    RMSNorm(), Linear(d_model, mlp_ratio * d_model), GELU(), Linear(mlp_ratio * d_model, d_model),
                    names=("rmsnorm", "up", "gelu", "down"),
                ),
                depth,
            )
            layer = Composition(attn, mlp, names=("attn", "mlp"))
            layer.mass = per_layer
            blocks.append(layer)
        head = Head(d_model, vocab, mass=head_mass)
        names = ["embed", *(f"layer{i}" for i in range(layers)), "rmsnorm", "head"]
        super().__init__(embed, *blocks, RMSNorm(), head, names=names)
        self.vocab, self.d_model, self.heads, self.layers, self.context = vocab, d_model, heads, layers, context
