"""Overhead of dualtype's runtime types: typed() + a checked update vs the same plain loop.

    python benchmarks/bench_overhead.py [--reps 30] [--threads 2]

Both loops run the same mathematics: forward, backward, then ``p -= lr * N.dualize(g)``
with the same per-parameter norm N. The plain loop calls ``Norm.dualize`` on plain tensors;
the typed loop has ``dualtype.typed(model)`` hooks retag every ``.grad`` as Dual and goes
through ``dualtype.dualize`` and the checked ``-=``. Steps alternate between the two loops so
they share the machine's noise; the table gives medians and the typed/plain ratio. The
forward pass is timed on its own too: parameters stay plain, so it should cost nothing extra.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import timeit
import time

import torch
from torch import nn

import dualtype
import dualtype.kernels
from dualtype.guard import refuse_foreign_step


class TinyGPT(nn.Module):
    """A small pre-norm transformer language model (embedding, blocks, head)."""

    def __init__(self, vocab: int = 256, d: int = 256, layers: int = 4, heads: int = 4, ctx: int = 128):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        block = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(ctx), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        h = self.embed(idx) + self.pos(torch.arange(T, device=idx.device))
        return self.head(self.blocks(h, mask=self.mask[:T, :T], is_causal=True))


def workloads() -> dict[str, tuple[nn.Module, tuple, callable]]:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    x, y = torch.randn(256, 784), torch.randint(0, 10, (256,))
    gpt = TinyGPT()
    idx = torch.randint(0, 256, (8, 128))
    ce = nn.functional.cross_entropy
    return {
        "MLP 784-1024-1024-10, batch 256": (mlp, (x,), lambda out: ce(out, y)),
        "GPT d=256 L=4 ctx=128, batch 8": (gpt, (idx,), lambda out: ce(out.flatten(0, 1), idx.flatten())),
    }


def plain_norms(model: nn.Module) -> dict[str, dualtype.norms.Norm]:
    """The norms typed() would give, for the plain loop to use."""
    handle = dualtype.typed(copy.deepcopy(model))
    return handle.norms


def step_plain(model, inputs, loss_fn, norms, lr=1e-3):
    model.zero_grad(set_to_none=True)
    loss_fn(model(*inputs)).backward()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p -= lr * norms[name].dualize(p.grad)


def step_typed(model, inputs, loss_fn, lr=1e-3):
    model.zero_grad(set_to_none=True)
    loss_fn(model(*inputs)).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * dualtype.dualize(p.grad)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kernel = dualtype.kernels.orthogonalize.__defaults__
    print(f"torch {torch.__version__}, {args.threads} threads, {args.reps} interleaved reps, kernel defaults {kernel}")
    header = f"{'workload':<34} {'part':<12} {'plain ms':>9} {'typed ms':>9} {'ratio':>7} {'overhead':>9}"
    print(header)
    print("-" * len(header))
    for label, (model, inputs, loss_fn) in workloads().items():
        plain = model
        typed = copy.deepcopy(model)
        norms = plain_norms(model)
        dualtype.typed(typed)
        times = {k: [] for k in ("fwd plain", "fwd typed", "step plain", "step typed")}
        for rep in range(args.reps + 3):
            order = [("plain", plain), ("typed", typed)][:: 1 if rep % 2 else -1]
            for kind, m in order:
                with torch.no_grad():
                    t_fwd = timed(lambda: m(*inputs))
                if kind == "plain":
                    t_step = timed(lambda: step_plain(m, inputs, loss_fn, norms))
                else:
                    t_step = timed(lambda: step_typed(m, inputs, loss_fn))
                if rep >= 3:  # warm-up
                    times[f"fwd {kind}"].append(t_fwd)
                    times[f"step {kind}"].append(t_step)
        for part in ("fwd", "step"):
            a = statistics.median(times[f"{part} plain"]) * 1e3
            b = statistics.median(times[f"{part} typed"]) * 1e3
            print(f"{label:<34} {part:<12} {a:9.2f} {b:9.2f} {b / a:7.3f} {100 * (b - a) / a:+8.1f}%")
        # the global pre-hook every torch.optim step pays once dualtype is imported: a scan of
        # the optimizer's parameters for Dual gradients (here none: the plain model's)
        sgd = torch.optim.SGD(plain.parameters(), lr=0.0)
        hook = min(timeit.repeat(lambda: refuse_foreign_step(sgd, (), {}), number=200, repeat=5)) / 200 * 1e3
        print(f"{label:<34} {'step hook':<12} {a:9.2f} {a + hook:9.4f} {(a + hook) / a:7.4f} "
              f"{100 * hook / a:+8.3f}%")


if __name__ == "__main__":
    main()
