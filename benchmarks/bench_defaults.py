"""Do ModularSGD's defaults carry over to models we did not tune them on?

For each model, in one run: ``ModularSGD(model)`` at its default lr and at {¼, ½, 2, 4}× it,
tuned AdamW (an lr grid) and the tuned ``torch.optim.Muon`` + AdamW hybrid (Muon on the
hidden matrices, AdamW on the rest; a grid over Muon's lr and momentum). Same seed, data and schedule
(linear warm-up over 5% of the steps, then cosine to 0) for every run.

    python benchmarks/bench_defaults.py                  # all models (record in benchmarks/defaults.md)
    python benchmarks/bench_defaults.py --models mlp,cnn --quick

Models (``benchmarks/_models.py`` and ``examples/_data.py``):

- ``gpt``: the project's GPT (RMSNorm, no biases, untied head), char-level on the stdlib;
- ``nanogpt``: nanoGPT's layout: LayerNorm with bias, fused q/k/v with biases, tied head;
- ``usual``: untied embeddings, LayerNorm with bias, separate q/k/v ``nn.Linear`` with biases;
- ``mlp``, ``cnn``: scikit-learn's digits, an MLP and a Conv→BatchNorm→ReLU CNN (test error
  in %, mean of three seeds).

The GPTs report validation loss (nats/char), the mean of two seeds (``--gpt-seeds``: one
seed's spread is as large as the gaps measured, and a best-of-grid on one seed flatters the
peers with the larger grids). Targets (issue "one lr that works untuned"): the best multiplier
is 1× or adjacent; the default is within 0.01 (GPT loss) or 0.3 points (digits error) of the
grid's best; on the GPTs the default beats the tuned hybrid.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import math
import multiprocessing as mp
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))
sys.path.insert(0, HERE)

import dualtype  # noqa: E402
from dualtype import ModularSGD  # noqa: E402

DEFAULT_LR = inspect.signature(ModularSGD).parameters["lr"].default
MULTIPLIERS = (0.25, 0.5, 1.0, 2.0, 4.0)
GPTS = ("gpt", "nanogpt", "usual")
ADAMW = {"gpt": (1.5e-3, 3e-3, 6e-3), "digits": (1e-3, 3e-3, 1e-2)}
MUON = (0.02, 0.04, 0.08)
MUON_MOMENTUM = (0.9, 0.95)  # torch's default 0.95, and 0.9 (better for every GPT here)
AUX_ADAMW_LR = 3e-3  # the AdamW half of the hybrid


def build(model: str, vocab: int, args: argparse.Namespace, seed: int):
    torch.manual_seed(seed)
    from _models import NanoStyleGPT, UsualGPT, digits_cnn, digits_mlp

    if model == "gpt":
        from _data import GPT, GPTConfig

        return GPT(GPTConfig(vocab, ctx=args.ctx, d_model=args.d_model, n_layers=args.layers, n_heads=4))
    if model == "nanogpt":
        return NanoStyleGPT(vocab, args.ctx, args.d_model, args.layers, 4)
    if model == "usual":
        return UsualGPT(vocab, args.ctx, args.d_model, args.layers, 4)
    return digits_mlp() if model == "mlp" else digits_cnn()


def hidden_matrices(model: str, net: torch.nn.Module) -> list[torch.nn.Parameter]:
    """What Muon takes in the usual hybrid: 2-D weights that are neither the input nor the
    output layer."""
    if model in GPTS:
        return net.hidden_matrices()
    linears = [m.weight for m in net.modules() if isinstance(m, torch.nn.Linear)]
    return linears[1:-1]


def optimizer(kind: str, lr: float, model: str, net: torch.nn.Module, momentum: float = 0.95) -> list[torch.optim.Optimizer]:
    if kind == "dualtype":
        return [ModularSGD(net) if lr == DEFAULT_LR else ModularSGD(net, lr=lr)]
    if kind == "adamw":
        return [torch.optim.AdamW(net.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)]
    hidden = hidden_matrices(model, net)
    ids = {id(p) for p in hidden}
    rest = [p for p in net.parameters() if id(p) not in ids]
    return [torch.optim.Muon(hidden, lr=lr, momentum=momentum, nesterov=True),  # torch's weight_decay 0.1
            torch.optim.AdamW(rest, lr=AUX_ADAMW_LR, betas=(0.9, 0.95), weight_decay=0.0)]


def schedule(opts, steps: int):
    warm = max(1, steps // 20)

    def factor(s: int) -> float:  # linear warm-up, then cosine to 0
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm)))

    return [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in opts]


def step_all(opts, scheds, loss: torch.Tensor) -> None:
    for o in opts:
        o.zero_grad(set_to_none=True)
    loss.backward()
    for o in opts:
        o.step()
    for s in scheds:
        s.step()


def run_gpt(model: str, kind: str, lr: float, momentum: float, args: argparse.Namespace) -> float:
    """Validation loss, mean over ``args.gpt_seeds`` seeds (init and batch order)."""
    from _data import eval_batches, get_batch, stdlib_corpus

    corpus = stdlib_corpus(args.train_chars, args.train_chars // 10)
    losses = []
    for seed in range(args.gpt_seeds):
        net = build(model, corpus.vocab_size, args, seed=seed)
        opts = optimizer(kind, lr, model, net, momentum)
        scheds = schedule(opts, args.steps)
        gen = torch.Generator().manual_seed(1 + seed)
        for _ in range(args.steps):
            x, y = get_batch(corpus.train, args.batch, args.ctx, gen)
            loss = net.loss(x, y)
            if not math.isfinite(loss.item()):
                return float("nan")
            step_all(opts, scheds, loss)
        with torch.no_grad():
            val = eval_batches(corpus.val, 8, args.batch, args.ctx)
            losses.append(sum(net.loss(x, y).item() for x, y in val) / len(val))
    return sum(losses) / len(losses)


def run_digits(model: str, kind: str, lr: float, momentum: float, args: argparse.Namespace) -> float:
    from _data import digits

    errors = []
    for seed in range(args.seeds):
        x_tr, y_tr, x_te, y_te = digits(seed=seed)
        net = build(model, 0, args, seed)
        opts = optimizer(kind, lr, model, net, momentum)
        per_epoch = math.ceil(len(y_tr) / 64)
        scheds = schedule(opts, args.epochs * per_epoch)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(args.epochs):
            perm = torch.randperm(len(y_tr), generator=gen)
            for i in range(0, len(y_tr), 64):
                idx = perm[i:i + 64]
                step_all(opts, scheds, F.cross_entropy(net(x_tr[idx]), y_tr[idx]))
        net.eval()
        with torch.no_grad():
            errors.append(100 * (net(x_te).argmax(-1) != y_te).float().mean().item())
    return sum(errors) / len(errors)


def job(spec: tuple[str, str, float, float, argparse.Namespace]) -> tuple[str, str, tuple, float, float]:
    model, kind, lr, momentum, args = spec
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    with torch.random.fork_rng():
        metric = (run_gpt if model in GPTS else run_digits)(model, kind, lr, momentum, args)
    return model, kind, (lr, momentum) if kind == "hybrid" else lr, metric, time.perf_counter() - t0


def jobs(models: list[str], args: argparse.Namespace) -> list[tuple]:
    out = []
    for model in models:
        out += [(model, "dualtype", DEFAULT_LR * m, 0.0, args) for m in MULTIPLIERS]
        out += [(model, "adamw", lr, 0.0, args) for lr in ADAMW["gpt" if model in GPTS else "digits"]]
        if model != "cnn":  # torch.optim.Muon takes 2-D parameters only
            out += [(model, "hybrid", lr, m, args) for lr in MUON for m in MUON_MOMENTUM]
    return out


def _lr(lr) -> str:
    return f"{lr[0]:g} m {lr[1]:g}" if isinstance(lr, tuple) else f"{lr:g}"


def best(rows, model: str, kind: str):
    got = [(m, lr) for mo, k, lr, m, _ in rows if mo == model and k == kind and math.isfinite(m)]
    return min(got) if got else (float("nan"), float("nan"))


def report(rows: list[tuple], models: list[str]) -> None:
    print("\n| model | metric | default lr | grid best (multiplier) | AdamW (best lr) | Muon+AdamW hybrid (best lr, momentum) |")
    print("|---|---|---|---|---|---|")
    for model in models:
        unit = "val loss" if model in GPTS else "test error %"
        at = {lr: m for mo, k, lr, m, _ in rows if mo == model and k == "dualtype"}
        d = at[DEFAULT_LR]
        b, blr = best(rows, model, "dualtype")
        a, alr = best(rows, model, "adamw")
        h, hlr = best(rows, model, "hybrid")
        hybrid = f"{h:.4g} (lr {hlr[0]:g}, momentum {hlr[1]:g})" if math.isfinite(h) else "n/a (2-D only)"
        print(f"| {model} | {unit} | {d:.4g} | {b:.4g} ({blr / DEFAULT_LR:g}×) | {a:.4g} ({alr:g}) | {hybrid} |")
    print("\nall runs:")
    for model in models:
        for kind in ("dualtype", "adamw", "hybrid"):
            got = [(lr, m, t) for mo, k, lr, m, t in rows if mo == model and k == kind]
            if got:
                print(f"  {model:<8} {kind:<9} " + "  ".join(f"lr {_lr(lr)}: {m:.4f}" for lr, m, _ in got))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="gpt,nanogpt,usual,mlp,cnn")
    p.add_argument("--steps", type=int, default=500, help="GPT training steps")
    p.add_argument("--epochs", type=int, default=20, help="digits training epochs")
    p.add_argument("--seeds", type=int, default=3, help="digits seeds averaged")
    p.add_argument("--gpt-seeds", type=int, default=2,
                   help="GPT seeds averaged (one seed's noise is as large as the gaps measured)")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--ctx", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train-chars", type=int, default=2_000_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a smoke run: 40 GPT steps, 2 epochs, 1 seed")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.epochs, args.seeds, args.gpt_seeds, args.train_chars = 40, 2, 1, 1, 200_000
    models = args.models.split(",")
    cmd = "python benchmarks/bench_defaults.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"# {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC · {platform.machine()} · "
          f"{args.workers} workers × 1 thread · torch {torch.__version__} · dualtype {dualtype.__version__} · {cmd}")
    print(f"# ModularSGD default lr {DEFAULT_LR:g}; GPT d={args.d_model} layers={args.layers} steps={args.steps}; "
          f"× {args.gpt_seeds} seeds; digits {args.epochs} epochs × {args.seeds} seeds")
    rows = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for row in pool.imap_unordered(job, jobs(models, args)):
            rows.append(row)
            print(f"  {row[0]:<8} {row[1]:<9} lr {_lr(row[2]):<14} {row[3]:.4f}  ({row[4]:.0f} s)", flush=True)
    report(rows, models)


if __name__ == "__main__":
    main()
