"""Overhead of dualtype's runtime types: typed() + a checked update vs the same plain loop.

    python benchmarks/bench_overhead.py [--reps 30] [--threads 2] [--only types|monitor]

Both loops run the same mathematics: forward, backward, then ``p -= lr * N.dualize(g)``
with the same per-parameter norm N. The plain loop calls ``Norm.dualize`` on plain tensors;
the typed loop has ``dualtype.typed(model)`` hooks retag every ``.grad`` as Dual and goes
through ``dualtype.dualize`` and the checked ``-=``. Steps alternate between the two loops so
they share the machine's noise; the table gives medians and the typed/plain ratio. The
forward pass is timed on its own too: parameters stay plain, so it should cost nothing extra.

The monitor rows time ``ModularSGD`` steps with and without a ``dualtype.Monitor`` (issue 15):
``every=1`` measures every step (interleaved medians); ``every=50`` is one measured step's
extra cost spread over 50 steps plus the cost of ``Monitor.step()`` on the 49 others (an
integer count, timed with ``timeit``). Target: ≤ 1% of a step at every=50.
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
from dualtype.typed_model import refuse_foreign_step


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


def monitor_rows(label: str, model: nn.Module, inputs: tuple, loss_fn, reps: int) -> None:
    """Print the Monitor's cost at every=1 and every=50 against ModularSGD's own step."""
    plain, watched = model, copy.deepcopy(model)
    opt_plain = dualtype.ModularSGD(plain, example=inputs)
    opt_watched = dualtype.ModularSGD(watched, example=inputs)
    monitor = dualtype.Monitor(opt_watched, every=1)

    def step(m, opt, mon=None):
        loss_fn(m(*inputs)).backward()
        opt.step()
        if mon is not None:
            mon.step()
        opt.zero_grad(set_to_none=True)

    times: dict[str, list[float]] = {"plain": [], "every=1": []}
    for rep in range(reps + 2):
        order = [("plain", lambda: step(plain, opt_plain)), ("every=1", lambda: step(watched, opt_watched, monitor))]
        for kind, fn in order[:: 1 if rep % 2 else -1]:
            t = timed(fn)
            if rep >= 2:  # warm-up (the first measurement starts the Lanczos vectors cold)
                times[kind].append(t)
    idle = dualtype.Monitor(opt_plain, every=10**9)  # never due: what every other step pays
    between = min(timeit.repeat(idle.step, number=1000, repeat=5)) / 1000
    base = statistics.median(times["plain"])
    measured = statistics.median(times["every=1"]) - base
    for kind, cost in (("every=1", measured), ("every=50", measured / 50 + between * 49 / 50)):
        print(f"{label:<34} {'monitor ' + kind:<16} {base * 1e3:9.2f} {(base + cost) * 1e3:9.2f} "
              f"{(base + cost) / base:7.4f} {100 * cost / base:+8.2f}%")
    print(f"{label:<34} {'(between)':<16} Monitor.step() not due: {between * 1e6:.2f} µs")


def monitor_table(reps: int) -> None:
    print(f"{'workload':<34} {'part':<16} {'step ms':>9} {'+mon ms':>9} {'ratio':>7} {'overhead':>9}")
    for label, (model, inputs, loss_fn) in workloads().items():
        monitor_rows(label, model, inputs, loss_fn, reps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--only", choices=("types", "monitor"), default=None,
                    help="run only the type-overhead rows or only the monitor rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    kernel = dualtype.kernels.orthogonalize.__defaults__
    print(f"torch {torch.__version__}, {args.threads} threads, {args.reps} interleaved reps, kernel defaults {kernel}")
    if args.only == "monitor":
        monitor_table(args.reps)
        return
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
    if args.only is None:
        monitor_table(args.reps)


if __name__ == "__main__":
    main()
