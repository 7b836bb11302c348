"""Data and models shared by the examples and benchmarks/bench_training.py.

Everything here comes from the machine itself: the Python standard library's own ``.py``
sources (character-level language modelling) and scikit-learn's bundled 8×8 digits.
No download.
"""

from __future__ import annotations

import math
import os
import sysconfig
import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --- the Python standard library as a character corpus -----------------------------------


@dataclass
class Corpus:
    train: Tensor  # int64 [n_train] token ids
    val: Tensor  # int64 [n_val]
    vocab: list[str]  # id -> character; id 0 is "unknown"
    files: tuple[int, int]  # (train files, val files) read

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)


def _stdlib_files() -> list[str]:
    """Relative paths of the stdlib's .py files (no site-packages), in a fixed pseudo-random
    order (sorted by CRC32 of the path) so a prefix mixes packages."""
    root = sysconfig.get_paths()["stdlib"]
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        for f in filenames:
            if f.endswith(".py"):
                paths.append(os.path.relpath(os.path.join(dirpath, f), root))
    paths.sort(key=lambda p: (zlib.crc32(p.encode()), p))
    return paths


def stdlib_corpus(train_chars: int = 2_000_000, val_chars: int = 200_000) -> Corpus:
    """Character-level corpus of the stdlib sources: a file goes to validation when the
    CRC32 of its path is ≡ 0 mod 10 (a held-out split by file), and files are read in a
    fixed order until each side holds its number of characters. Deterministic for a given
    Python installation. The vocabulary is the printable ASCII characters plus tab and
    newline; every other character maps to id 0 ("unknown")."""
    root = sysconfig.get_paths()["stdlib"]
    chars = ["\x00", "\t", "\n"] + [chr(c) for c in range(32, 127)]
    index = {c: i for i, c in enumerate(chars)}
    parts: dict[str, list[str]] = {"train": [], "val": []}
    size = {"train": 0, "val": 0}
    cap = {"train": train_chars, "val": val_chars}
    nfiles = {"train": 0, "val": 0}
    for rel in _stdlib_files():
        side = "val" if zlib.crc32(rel.encode()) % 10 == 0 else "train"
        if size[side] >= cap[side]:
            if all(size[s] >= cap[s] for s in size):
                break
            continue
        try:
            with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
        except OSError:
            continue
        text = text[: cap[side] - size[side]]
        parts[side].append(text)
        size[side] += len(text)
        nfiles[side] += 1

    def encode(texts: list[str]) -> Tensor:
        data = "".join(texts).encode("ascii", errors="replace").decode("ascii")
        table = bytes(index.get(chr(b), 0) for b in range(256))
        return torch.frombuffer(bytearray(data.encode("latin-1").translate(table)), dtype=torch.uint8).long()

    return Corpus(encode(parts["train"]), encode(parts["val"]), chars, (nfiles["train"], nfiles["val"]))


def get_batch(data: Tensor, batch: int, ctx: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``batch`` random windows of ``ctx`` tokens and their next-token targets."""
    ix = torch.randint(0, data.numel() - ctx - 1, (batch,), generator=gen)
    offsets = torch.arange(ctx + 1)
    windows = data[ix[:, None] + offsets]
    return windows[:, :-1], windows[:, 1:]


def eval_batches(data: Tensor, n: int, batch: int, ctx: int, seed: int = 1234) -> list[tuple[Tensor, Tensor]]:
    """A fixed list of validation batches (the same for every optimizer and step)."""
    gen = torch.Generator().manual_seed(seed)
    return [get_batch(data, batch, ctx, gen) for _ in range(n)]


# --- a small GPT ------------------------------------------------------------------------------


@dataclass
class GPTConfig:
    vocab_size: int
    ctx: int = 64
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a GELU MLP, bias-free.
    q, k, v are separate [d, d] matrices so each is orthogonalized on its own (and all
    same-shape matrices of the model are dualized in one batched call)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.n_heads = cfg.n_heads
        self.norm1 = nn.RMSNorm(d)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.norm2 = nn.RMSNorm(d)
        self.fc = nn.Linear(d, cfg.mlp_ratio * d, bias=False)
        self.proj = nn.Linear(cfg.mlp_ratio * d, d, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, T, D = x.shape
        h = self.norm1(x)
        q, k, v = (lin(h).view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2)
                   for lin in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, D))
        return x + self.proj(F.gelu(self.fc(self.norm2(x))))


class GPT(nn.Module):
    """Token + learned position embeddings, ``n_layers`` blocks, final RMSNorm, linear head."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: Tensor) -> Tensor:
        T = idx.shape[1]
        x = self.tok(idx) + self.pos.weight[:T]
        for b in self.blocks:
            x = b(x)
        return self.head(self.norm(x))

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        logits = self(idx)
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    def hidden_matrices(self) -> list[nn.Parameter]:
        """The 2-D weights inside the blocks (what Muon takes in the usual hybrid)."""
        return [p for p in self.blocks.parameters() if p.ndim == 2]


# --- sklearn digits --------------------------------------------------------------------------


def digits(seed: int = 0, test_fraction: float = 0.25) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """scikit-learn's bundled 8×8 digits (1797 images, no download) as float images
    ``[N, 1, 8, 8]`` scaled to [0, 1] and int64 labels, split train/test by a fixed
    permutation. Returns (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(math.ceil(test_fraction * len(y)))
    test, train = perm[:n_test], perm[n_test:]
    return x[train], y[train], x[test], y[test]
