"""Models written the way people write them in plain torch, for benchmarks/bench_defaults.py.

Neither was written for dualtype: they follow the common GPT-2 recipes (LayerNorm with bias,
biases on every Linear, GELU MLP ×4, N(0, 0.02) init), so the optimizer's defaults are judged
on code like the user's own.

- :class:`UsualGPT`: untied token and position ``nn.Embedding``, separate q/k/v ``nn.Linear``
  layers with biases, pre-LayerNorm blocks, an untied linear head.
- :class:`NanoStyleGPT`: nanoGPT's layout: one fused ``c_attn`` projection split into q/k/v,
  ``transformer.{wte,wpe,h,ln_f}`` module names, a head tied to the token embedding, scaled
  init of the residual projections, ``forward(idx, targets)`` returning ``(logits, loss)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _Attention(nn.Module):
    def __init__(self, d: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.heads, self.fused = heads, fused
        if fused:
            self.c_attn = nn.Linear(d, 3 * d)
        else:
            self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        if self.fused:
            q, k, v = self.c_attn(x).split(D, dim=2)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)
        q, k, v = (t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, D))


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = _Attention(d, heads, fused)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class UsualGPT(nn.Module):
    def __init__(self, vocab: int, ctx: int = 64, d: int = 128, layers: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(_Block(d, heads, fused=False) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, idx: Tensor) -> Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.tok(idx) + self.pos(pos)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        logits = self(idx)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))

    def hidden_matrices(self) -> list[nn.Parameter]:
        return [p for p in self.blocks.parameters() if p.ndim == 2]


class NanoStyleGPT(nn.Module):
    def __init__(self, vocab: int, ctx: int = 64, d: int = 128, layers: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab, d), wpe=nn.Embedding(ctx, d), drop=nn.Dropout(0.0),
            h=nn.ModuleList(_Block(d, heads, fused=True) for _ in range(layers)),
            ln_f=nn.LayerNorm(d),
        ))
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: Tensor, targets: Tensor | None = None):
        pos = torch.arange(0, idx.shape[1], dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        return self(idx, targets)[1]

    def hidden_matrices(self) -> list[nn.Parameter]:
        return [p for p in self.transformer.h.parameters() if p.ndim == 2]


def digits_cnn(width: int = 16) -> nn.Module:
    """Conv → BatchNorm → ReLU twice, pooling, a linear classifier (the usual small CNN)."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * 16, 10),
    )


def digits_mlp(hidden: int = 128) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))
