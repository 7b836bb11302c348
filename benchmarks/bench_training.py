"""Train examples/train_gpt.py's GPT with AdamW, the Muon hybrid and dualtype, same seeds and
data, each over a small lr grid; print final validation loss (best lr), steps to reach AdamW's
final loss, and median time per step (measured interleaved, so machine load hits all alike).

    python benchmarks/bench_training.py            # full grid (record in benchmarks/training.md)
    python benchmarks/bench_training.py --quick    # a smoke run: short, one lr each

Muon hybrid = torch.optim.Muon on the 2-D weights inside the blocks + AdamW on embeddings,
head and gains. On CPU torch's Muon runs Newton-Schulz in bf16, which is slow on this kind
of CPU; the hybrid is trained with the same iteration in fp32 (``--muon-ns``), and the
timing table also lists torch's bf16 path as is.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import train_gpt as T  # noqa: E402
from _data import eval_batches, get_batch, stdlib_corpus  # noqa: E402

GRIDS = {
    "adamw": [7.5e-4, 1.5e-3, 3e-3],
    "muon": [0.005, 0.01, 0.02],
    "dualtype": [0.13, 0.26, 0.52],  # ModularSGD's lr is in the modular norm (default 0.26)
    "hybrid": [0.05, 0.1, 0.2],  # ModularSGD on the hidden matrices + its AdamW group on the rest
}
QUICK = {"adamw": [1.5e-3], "muon": [0.01], "dualtype": [0.1], "hybrid": [0.1]}


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--timing-steps", type=int, default=30)
    p.add_argument("--grid", action="append", default=[], metavar="NAME=LR,LR",
                   help="override a grid, e.g. --grid dualtype=0.02,0.03")
    p.add_argument("--plot", default="runs/bench_val_loss.png")
    ours, rest = p.parse_known_args(argv)
    defaults = ["--quiet", "--eval-every", "20"]
    if ours.quick:
        defaults += ["--steps", "100", "--eval-every", "25", "--eval-batches", "4"]
    targs = T.parse_args(defaults + rest)
    return ours, targs


def time_interleaved(configs: list[tuple[str, str, float]], args: argparse.Namespace, corpus,
                     steps: int) -> dict[str, float]:
    """Median seconds per training step of each (label, optimizer, lr), stepping the models in
    turn so that load on a shared machine hits every optimizer alike."""
    import torch.optim._muon as muon

    fp32_ns = muon._zeropower_via_newtonschulz
    device = torch.device(args.device)
    runs = []
    for label, name, lr in configs:
        model = T.build_model(args, corpus.vocab_size, device)
        runs.append((label, model, T.build_optimizer(name, model, args, lr)))
    gen = torch.Generator().manual_seed(args.seed + 1)
    times: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    for _ in range(steps + 2):
        x, y = get_batch(corpus.train, args.batch, args.ctx, gen)
        for label, model, opt in runs:
            muon._zeropower_via_newtonschulz = T._TORCH_NS if label.endswith("bf16 NS)") else fp32_ns
            t0 = time.perf_counter()
            with T.autocast(device, args.amp):
                loss = model.loss(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times[label].append(time.perf_counter() - t0)
    muon._zeropower_via_newtonschulz = fp32_ns
    return {label: statistics.median(ts[2:]) for label, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    ours, args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.muon_ns == "fp32" or (args.muon_ns == "auto" and args.device == "cpu"):
        T.use_fp32_muon_newton_schulz()
    grids = dict(QUICK if ours.quick else GRIDS)
    for spec in ours.grid:
        name, _, lrs = spec.partition("=")
        grids[name] = [float(v) for v in lrs.split(",")]
    corpus = stdlib_corpus(args.train_chars, args.train_chars // 10)
    cmd = "python benchmarks/bench_training.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC · {platform.processor() or platform.machine()} · "
          f"{torch.get_num_threads()} threads · torch {torch.__version__} · {cmd}")
    print(f"# GPT d={args.d_model} layers={args.layers} heads={args.heads} ctx={args.ctx} "
          f"batch={args.batch} steps={args.steps} cooldown={args.cooldown} seed={args.seed}; "
          f"data {corpus.train.numel():,}/{corpus.val.numel():,} chars")
    results: dict[str, list[T.History]] = {}
    for name in T.OPTIMIZERS:
        for lr in grids[name]:
            t0 = time.time()
            h = T.train_one(name, args, corpus, lr, progress=False)
            results.setdefault(name, []).append(h)
            print(f"  {name:<9} lr {lr:<7g} final val {h.final:.4f}  ({time.time() - t0:.0f} s)",
                  flush=True)
    best = {name: min(hs, key=lambda h: h.final) for name, hs in results.items()}
    target = best["adamw"].final
    adamw_steps = best["adamw"].steps_to(target)
    timing = time_interleaved(
        [(T.LABELS[n], n, best[n].lr) for n in T.OPTIMIZERS]
        + [(T.LABELS["muon"] + " (torch bf16 NS)", "muon", best["muon"].lr)],
        args, corpus, ours.timing_steps)
    muon_time = timing[T.LABELS["muon"]]
    print()
    print("| optimizer | lr grid | best lr | final val loss | steps to AdamW's final | × AdamW steps | ms/step | × Muon hybrid time |")
    print("|---|---|---|---|---|---|---|---|")
    for name in T.OPTIMIZERS:
        h = best[name]
        s = h.steps_to(target)
        ratio = f"{s / adamw_steps:.2f}" if s is not None and adamw_steps else "—"
        ms = timing[T.LABELS[name]]
        print(f"| {T.LABELS[name]} | {', '.join(f'{v:g}' for v in grids[name])} | {h.lr:g} | "
              f"{h.final:.4f} | {s if s is not None else 'never'} | {ratio} | {1000 * ms:.0f} | "
              f"{ms / muon_time:.2f} |")
    bf16 = timing[T.LABELS["muon"] + " (torch bf16 NS)"]
    print(f"| {T.LABELS['muon']}, torch's bf16 Newton-Schulz (timing only) | | {best['muon'].lr:g} | | | | "
          f"{1000 * bf16:.0f} | {bf16 / muon_time:.2f} |")
    print()
    print("all runs (final validation loss):")
    for name, hs in results.items():
        print(f"  {name:<9} " + "  ".join(f"lr {h.lr:g}: {h.final:.4f}" for h in hs))
    T.plot(list(best.values()), ours.plot, title="best lr of each optimizer")
    print(f"plot: {ours.plot}")


if __name__ == "__main__":
    main()
