"""Does one lr transfer across width and depth? ModularSGD(model) on the project's GPT at
widths 64/128/256 (4 layers) and depths 2/4/8 (width 128), each over the lr grid
{¼, ½, 1, 2, 4}× the default; prints the best multiplier per model and plots loss against
the multiplier (the modular norm's promise: the curves' minima line up).

    python benchmarks/bench_transfer.py                   # record in benchmarks/defaults.md
    python benchmarks/bench_transfer.py --quick

Same data, seed and schedule as benchmarks/bench_defaults.py (warm-up, then cosine).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import multiprocessing as mp
import os
import platform
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_defaults as B  # noqa: E402

WIDTHS, DEPTHS = (64, 128, 256), (2, 4, 8)


def configs() -> list[tuple[int, int]]:
    """(width, depth): the width sweep at depth 4, the depth sweep at width 128."""
    return sorted({(w, 4) for w in WIDTHS} | {(128, d) for d in DEPTHS})


def job(spec):
    width, depth, mult, args = spec
    a = copy.copy(args)
    a.d_model, a.layers, a.gpt_seeds = width, depth, 1  # one seed per point: 75 runs already
    _, _, _, loss, secs = B.job(("gpt", "dualtype", B.DEFAULT_LR * mult, 0.0, a))
    return width, depth, mult, loss, secs


def plot(rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (title, key, fixed) in zip(axes, (("width (4 layers)", 0, (1, 4)), ("depth (width 128)", 1, (0, 128)))):
        for value in (WIDTHS if key == 0 else DEPTHS):
            pts = sorted((m, loss) for w, d, m, loss, _ in rows if (w, d)[key] == value and (w, d)[fixed[0]] == fixed[1])
            ax.plot([m for m, _ in pts], [v for _, v in pts], marker="o", label=f"{'d' if key == 0 else 'L'}={value}")
        ax.set_xscale("log", base=2)
        ax.axvline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"lr / default lr ({B.DEFAULT_LR:g})")
        ax.set_title(f"ModularSGD(model) across {title}")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("validation loss (nats/char)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train-chars", type=int, default=2_000_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--plot", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "transfer.png"))
    p.add_argument("--quick", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.train_chars = 20, 200_000
    cmd = "python benchmarks/bench_transfer.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC · {platform.machine()} · "
          f"{args.workers} workers × 1 thread · torch {torch.__version__} · {cmd}")
    print(f"# default lr {B.DEFAULT_LR:g}, {args.steps} steps, multipliers {B.MULTIPLIERS}")
    specs = [(w, d, m, args) for w, d in configs() for m in B.MULTIPLIERS]
    rows = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for row in pool.imap_unordered(job, specs):
            rows.append(row)
            print(f"  width {row[0]:<4} depth {row[1]:<2} ×{row[2]:<5g} {row[3]:.4f}  ({row[4]:.0f} s)", flush=True)
    print("\n| width | depth | " + " | ".join(f"{m:g}×" for m in B.MULTIPLIERS) + " | best |")
    print("|---|---|" + "---|" * len(B.MULTIPLIERS) + "---|")
    for w, d in configs():
        got = {m: loss for ww, dd, m, loss, _ in rows if (ww, dd) == (w, d)}
        bestm = min(got, key=lambda m: got[m])
        print(f"| {w} | {d} | " + " | ".join(f"{got[m]:.4f}" for m in B.MULTIPLIERS) + f" | {bestm:g}× |")
    plot(rows, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
