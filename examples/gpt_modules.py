"""A GPT built from dualtype modules, its modular norm, and training by modular dualization.

    python examples/gpt_modules.py [--steps 60] [--lr 0.5]

The network is written in the algebra of docs/design.md §3: atoms (Embed, HeadLinear, Linear, Head),
bonds (RMSNorm, attention pieces, GELU) and combinators (composition, sum, scaling, the
residual (1−1/2L)·Id + (1/2L)·block). Its masses and sensitivities are derived; the table
shows for every weight the norm, mass, sensitivity factor and the target its update hits.

Each step: backward → the grads are Dual (dualtype.typed) → ``gpt.dualize(target=lr)``, the
modular duality map, the only door to Primal → ``p -= update``. The update has modular norm
exactly ``lr`` (checked below, with the exact SVD kernel). The toy task: continue a cyclic
token sequence with a random stride.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

import dualtype
from dualtype.modules import GPT, modular


def batch(gen: torch.Generator, vocab: int, n: int, T: int) -> torch.Tensor:
    start = torch.randint(vocab, (n, 1), generator=gen)
    stride = torch.randint(1, 4, (n, 1), generator=gen)
    return (start + stride * torch.arange(T + 1)) % vocab


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=0.5, help="modular norm of every update")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)

    vocab, T = 16, 8
    gpt = GPT(vocab=vocab, d_model=32, heads=4, layers=2, context=T)
    mn = modular(gpt)
    print(gpt.__class__.__name__, f"mass {gpt.mass:g}, sensitivity {gpt.sensitivity:.4f}\n")
    print(mn, "\n")

    dualtype.typed(gpt, norms=mn.norms)  # every .grad becomes Dual[its atom's norm]
    gen = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps + 1):
        seq = batch(gen, vocab, 32, T)
        gpt.zero_grad(set_to_none=True)
        logits = gpt(seq[:, :-1])
        # logits are well-normed (|logit| ≤ 1 at unit weights), so a temperature helps
        loss = F.cross_entropy(8 * logits.flatten(0, 1), seq[:, 1:].flatten())
        loss.backward()
        lr = args.lr * (1 - step / (args.steps + 1))
        update = gpt.dualize(target=lr, method="svd" if step == 0 else None)
        if step == 0:
            print(f"first step: ‖g‖† = {float(gpt.dual_norm()):.4f}, "
                  f"‖update‖ = {float(gpt.norm(update)):.6f} (target {lr})")
        with torch.no_grad():
            for p, u in zip(gpt.parameters(), update):
                p -= u
        if step % 20 == 0:
            print(f"step {step:3d}  loss {loss.item():.4f}")
    print(f"done: loss {loss.item():.4f} (uniform guessing: {torch.log(torch.tensor(float(vocab))):.4f})")


if __name__ == "__main__":
    main()
