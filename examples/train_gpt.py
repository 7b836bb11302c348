"""Train a small GPT character-level on the Python standard library's own source files.

    python examples/train_gpt.py                 # dualtype's ModularSGD, ~1.5-3 min on 2 cores
    python examples/train_gpt.py --compare       # + AdamW and the Muon+AdamW hybrid, plot (~5-8 min)
    python examples/train_gpt.py --diagnostics   # + every layer in its own norm: runs/gpt_layer_norms.png

The data is every machine's stdlib (``.py`` files, held-out validation split by file; see
``examples/_data.py``). The three optimizers see the same seed, initial weights, batches and
lr schedule (constant, then a linear cool-down over the last ``--cooldown`` fraction).

The training loop is split into functions (``build_model``, ``build_optimizer``,
``train_one``, ``evaluate``) so that ``--distributed`` (DDP/FSDP2, added by the distributed
work) can wrap the model and the optimizer without rewriting it.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _data import GPT, Corpus, GPTConfig, eval_batches, get_batch, stdlib_corpus  # noqa: E402

import dualtype  # noqa: E402
from dualtype.optim import ModularSGD  # noqa: E402

OPTIMIZERS = ("dualtype", "adamw", "muon", "hybrid")
LABELS = {"dualtype": "dualtype ModularSGD", "adamw": "AdamW",
          "muon": "Muon (2-D hidden) + AdamW (rest)",
          "hybrid": "ModularSGD (2-D hidden) + its AdamW group (rest)"}
# Default learning rates: dualtype's is ModularSGD's own default (no tuning for this model, see
# benchmarks/defaults.md); the peers' were chosen with benchmarks/bench_training.py.
DEFAULT_LR = {"dualtype": inspect.signature(ModularSGD).parameters["lr"].default, "adamw": 7.5e-4, "muon": 0.02,
              "hybrid": inspect.signature(ModularSGD).parameters["lr"].default}
MUON_ADAMW_LR = 3e-3  # lr of the AdamW half of the hybrid (embeddings, head, gains)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="dualtype")
    p.add_argument("--compare", action="store_true",
                   help="train all three optimizers and write the validation-loss plot")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--ctx", type=int, default=64, help="context length (characters)")
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=None,
                   help="lr of the chosen optimizer (default per optimizer: %s)" % DEFAULT_LR)
    p.add_argument("--momentum", type=float, default=None,
                   help="momentum of dualtype and Muon (default: each optimizer's own, 0.9 and 0.95)")
    p.add_argument("--muon-ns", choices=("auto", "bf16", "fp32"), default="auto",
                   help="Newton-Schulz dtype of torch.optim.Muon (auto: fp32 on CPU, where torch's "
                        "bf16 path is ~10x slower; bf16 elsewhere)")
    p.add_argument("--weight-decay", type=float, default=None,
                   help="decoupled weight decay (default: each optimizer's own: dualtype 0.05 on hidden "
                        "matrices, torch.optim.Muon 0.1, AdamW 0)")
    p.add_argument("--cooldown", type=float, default=0.4,
                   help="fraction of steps of linear lr decay to 0 at the end")
    p.add_argument("--warmup", type=int, default=0, help="steps of linear lr warm-up (all optimizers)")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--eval-batches", type=int, default=8)
    p.add_argument("--train-chars", type=int, default=2_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=("auto", "bf16", "off"), default="auto",
                   help="bf16 autocast: auto = on for CUDA devices that support bf16, off on CPU "
                        "(CPU bf16 is slower than fp32 on most CPUs without AMX)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--plot", default="runs/gpt_val_loss.png")
    p.add_argument("--distributed", action="store_true",
                   help="DDP/FSDP2 live in examples/train_gpt_distributed.py (prints the torchrun command)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--diagnostics", action="store_true",
                   help="dualtype.Monitor on the dualtype/hybrid run (~50 measurements): writes "
                        "runs/gpt_stats.jsonl (+ .csv) and runs/gpt_layer_norms.png")
    return p.parse_args(argv)


# --- pieces -----------------------------------------------------------------------------------


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    use = amp == "bf16" or (amp == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())
    return torch.autocast(device.type, dtype=torch.bfloat16) if use else contextlib.nullcontext()


def build_model(args: argparse.Namespace, vocab_size: int, device: torch.device) -> GPT:
    torch.manual_seed(args.seed)  # same initial weights for every optimizer
    cfg = GPTConfig(vocab_size, ctx=args.ctx, d_model=args.d_model, n_layers=args.layers,
                    n_heads=args.heads)
    return GPT(cfg).to(device)


class Optimizers:
    """One or more optimizers stepped together (the Muon hybrid is Muon + AdamW), each with
    the same lr schedule."""

    def __init__(self, opts: list[torch.optim.Optimizer], steps: int, cooldown: float,
                 warmup: int = 0) -> None:
        self.opts = opts
        start = int(steps * (1 - cooldown))

        def factor(step: int) -> float:  # linear warm-up, constant, linear cool-down to 0
            if step < warmup:
                return (step + 1) / warmup
            return 1.0 if step < start else max(0.0, (steps - step) / max(1, steps - start))

        self.scheds = [torch.optim.lr_scheduler.LambdaLR(o, factor) for o in opts]

    def zero_grad(self) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=True)

    def step(self) -> None:
        for o in self.opts:
            o.step()
        for s in self.scheds:
            s.step()


def build_optimizer(name: str, model: GPT, args: argparse.Namespace, lr: float | None = None) -> Optimizers:
    lr = DEFAULT_LR[name] if lr is None else lr
    wd = 0.0 if args.weight_decay is None else args.weight_decay  # AdamW
    own = {k: v for k, v in (("momentum", args.momentum), ("weight_decay", args.weight_decay)) if v is not None}
    if name == "dualtype":
        opts = [dualtype_optimizer(model, args, lr)]
    elif name == "adamw":
        opts = [torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=wd)]
    elif name == "muon":
        hidden = model.hidden_matrices()
        ids = {id(p) for p in hidden}
        rest = [p for p in model.parameters() if id(p) not in ids]
        opts = [torch.optim.Muon(hidden, lr=lr, nesterov=True, **own),
                torch.optim.AdamW(rest, lr=MUON_ADAMW_LR, betas=(0.9, 0.95), weight_decay=wd)]
    elif name == "hybrid":  # the same split in one dualtype optimizer: its AdamW group is torch's AdamW
        dualtype.typed(model)
        hidden = model.hidden_matrices()
        ids = {id(p) for p in hidden}
        rest = [p for p in model.parameters() if id(p) not in ids]
        opts = [ModularSGD([{"params": hidden},
                            {"params": rest, "algorithm": "adamw", "lr": MUON_ADAMW_LR, "betas": (0.9, 0.95)}],
                           lr=lr, **own)]
    else:
        raise ValueError(f"unknown optimizer {name!r}; choose from {OPTIMIZERS}")
    return Optimizers(opts, args.steps, args.cooldown, args.warmup)


def dualtype_optimizer(model: GPT, args: argparse.Namespace, lr: float) -> ModularSGD:
    """ModularSGD on the model as it is: roles, norms and step sizes are read from the graph of
    its first forward (embeddings l1->rms, hidden rms->rms, the head rms->linf, gains rms)."""
    return ModularSGD(model, lr=lr, **{k: v for k, v in (("momentum", args.momentum),
                                                          ("weight_decay", args.weight_decay)) if v is not None})


_TORCH_NS = None  # torch's own (bf16) Newton-Schulz, kept for timing comparisons


def use_fp32_muon_newton_schulz() -> None:
    """torch.optim.Muon runs Newton-Schulz in bf16, ~10x slower than fp32 for these small
    matrices on CPU. Swap in the same iteration (same coefficients, steps, eps) in fp32 so
    the hybrid is not slowed by the CPU's bf16 path; call only on CPU."""
    import torch.optim._muon as muon

    global _TORCH_NS
    if _TORCH_NS is None:
        _TORCH_NS = muon._zeropower_via_newtonschulz

    def ns_fp32(grad, ns_coefficients, ns_steps, eps):
        a, b, c = ns_coefficients
        x = grad.float()
        if grad.size(0) > grad.size(1):
            x = x.T
        x = x / x.norm().clamp(min=eps)
        for _ in range(ns_steps):
            gram = x @ x.T
            x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        return x.T if grad.size(0) > grad.size(1) else x

    muon._zeropower_via_newtonschulz = ns_fp32


@torch.no_grad()
def evaluate(model: GPT, batches: list, device: torch.device, amp: str) -> float:
    model.eval()
    with autocast(device, amp):
        losses = [model.loss(x.to(device), y.to(device)).item() for x, y in batches]
    model.train()
    return sum(losses) / len(losses)


@dataclass
class History:
    name: str
    lr: float
    steps: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    step_time: list[float] = field(default_factory=list)  # seconds per training step

    @property
    def final(self) -> float:
        return self.val_loss[-1]

    def steps_to(self, target: float) -> int | None:
        """First evaluated step whose validation loss is ≤ target (None: never)."""
        return next((s for s, v in zip(self.steps, self.val_loss) if v <= target), None)

    @property
    def median_step_time(self) -> float:
        return statistics.median(self.step_time[1:] or self.step_time)


def train_one(name: str, args: argparse.Namespace, corpus: Corpus, lr: float | None = None,
              progress: bool = True) -> History:
    """Train one optimizer from the shared seed; returns its validation-loss history."""
    device = torch.device(args.device)
    model = build_model(args, corpus.vocab_size, device)
    opt = build_optimizer(name, model, args, lr)
    hist = History(name, DEFAULT_LR[name] if lr is None else lr)
    val = eval_batches(corpus.val, args.eval_batches, args.batch, args.ctx)
    gen = torch.Generator().manual_seed(args.seed + 1)  # same batches for every optimizer
    bar = None
    if progress and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, desc=f"{name:>8}", dynamic_ncols=True)
    monitor = None
    if args.diagnostics and name in ("dualtype", "hybrid"):
        monitor = dualtype.Monitor(opt.opts[0], every=max(1, args.steps // 50), path="runs/gpt_stats.jsonl",
                                   activations=True)
    hist.steps.append(0)
    hist.val_loss.append(evaluate(model, val, device, args.amp))
    for step in range(1, args.steps + 1):
        x, y = get_batch(corpus.train, args.batch, args.ctx, gen)
        x, y = x.to(device), y.to(device)
        t0 = time.perf_counter()
        with autocast(device, args.amp):
            loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            monitor.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        hist.step_time.append(time.perf_counter() - t0)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"{name}: loss is {loss_value} at step {step}; lower the lr")
        hist.train_loss.append(loss_value)
        if step % args.eval_every == 0 or step == args.steps:
            hist.steps.append(step)
            hist.val_loss.append(evaluate(model, val, device, args.amp))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{hist.val_loss[-1]:.3f}")
    if bar is not None:
        bar.close()
    if monitor is not None:
        monitor.close()
        dualtype.monitor.plot(monitor, "runs/gpt_layer_norms.png", title=f"{LABELS[name]}: each layer in its own norm")
        print("diagnostics: runs/gpt_stats.jsonl, runs/gpt_layer_norms.png")
    return hist


def plot(histories: list[History], path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for h in histories:
        ax.plot(h.steps, h.val_loss, label=f"{LABELS[h.name]} (lr {h.lr:g}): {h.final:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title(title or "char-level GPT on the Python stdlib sources")
    lo = min(min(h.val_loss) for h in histories)
    ax.set_ylim(lo - 0.1, min(4.0, max(h.val_loss[1] for h in histories if len(h.val_loss) > 1) + 0.2))
    ax.grid(alpha=0.3)
    ax.legend()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[History]:
    args = parse_args(argv)
    if args.distributed:
        raise SystemExit("for DDP/FSDP2 run: torchrun --standalone --nproc-per-node=2 "
                         "examples/train_gpt_distributed.py --distributed {ddp,fsdp2} "
                         "[train_gpt options]")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.muon_ns == "fp32" or (args.muon_ns == "auto" and args.device == "cpu"):
        use_fp32_muon_newton_schulz()
    corpus = stdlib_corpus(args.train_chars, args.train_chars // 10)
    print(f"data: {corpus.train.numel():,} train / {corpus.val.numel():,} val characters from "
          f"{corpus.files[0]} + {corpus.files[1]} stdlib files; vocab {corpus.vocab_size}; "
          f"device {args.device}, amp {args.amp}")
    names = list(OPTIMIZERS) if args.compare else [args.optimizer]
    histories = []
    for name in names:
        lr = args.lr if (args.lr is not None and (not args.compare or name == args.optimizer)) else None
        h = train_one(name, args, corpus, lr)
        histories.append(h)
        print(f"{LABELS[name]:<34} lr {h.lr:<7g} final val loss {h.final:.4f}  "
              f"({1000 * h.median_step_time:.0f} ms/step)")
    if args.compare:
        base = next(h for h in histories if h.name == "adamw")
        for h in histories:
            s = h.steps_to(base.final)
            print(f"  {h.name:<9} reaches AdamW's final loss {base.final:.3f} at step "
                  f"{s if s is not None else 'never'}")
        plot(histories, args.plot)
        print(f"plot: {args.plot}")
    return histories


if __name__ == "__main__":
    main()
