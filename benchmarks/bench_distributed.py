"""Distributed dualize: the split design against the naive one, bytes and time per step.

    python benchmarks/bench_distributed.py                 # 2 gloo ranks on CPU
    python benchmarks/bench_distributed.py --world 4       # bytes at 4 ranks (times oversubscribed)

One run forks ``--world`` processes (1 thread each) that train the same GPT-shaped stack of
matrices (embedding, per block qkv/proj/fc/fc2 Linear layers with biases, and an output
head) under four optimizers, same data, same initial weights:

- ``ddp naive``:   DDP + ModularSGD; every rank dualizes every parameter (no extra bytes).
- ``ddp split``:   DDP + DistributedModularSGD; each rank a cost-balanced share, one padded
                   all_gather of the results.
- ``fsdp2 naive``: fully_shard + every rank all-gathers every update whole (what
                   ``full_tensor()`` does) and dualizes all of them.
- ``fsdp2 split``: fully_shard + DistributedModularSGD; row maps local, rms via one scalar
                   all_reduce, whole matrices assembled on an owner (all_to_all) and sent back.

Reported per step and per rank: bytes this rank sends for the dualize exchange (the
gradient all-reduce of DDP and FSDP2's own all-gather/reduce-scatter are the same in both
designs and not counted), median optimizer-step time, median whole-step time, and the
largest parameter difference between split and naive after the run (should be ~1e-7).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        x = x + self.proj(torch.tanh(q * k) * v)  # an attention-free stand-in: same matrices
        return x + self.fc2(nn.functional.gelu(self.fc(x)))


class Net(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(layers))
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        for b in self.blocks:
            h = b(h)
        return self.head(h)


NORMS = {"head.weight": "rms->linf"}


def _run(rank: int, world: int, args, tmp: str) -> dict:
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel as DDP

    from dualtype.distributed import DistributedModularSGD
    from dualtype.optim import ModularSGD

    results: dict = {}
    finals: dict = {}
    for name in ("ddp naive", "ddp split", "fsdp2 naive", "fsdp2 split"):
        torch.manual_seed(0)
        model = Net(args.vocab, args.width, args.layers)
        kw = dict(lr=0.02, norms=NORMS, modular=False)
        if name.startswith("ddp"):
            wrapped = DDP(model)
            opt = (ModularSGD(model, **kw) if name.endswith("naive")
                   else DistributedModularSGD(wrapped, **kw))
        else:
            fully_shard(model)
            wrapped = model
            opt = DistributedModularSGD(model, strategy=name.split()[1], **kw)
        comm = getattr(opt, "comm", None)
        t_opt, t_step, sent = [], [], []
        for s in range(args.warmup + args.steps):
            g = torch.Generator().manual_seed(1000 + s * world + rank)
            x = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
            dist.barrier()
            t0 = time.perf_counter()
            loss = nn.functional.cross_entropy(wrapped(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
            loss.backward()
            if comm is not None:
                comm.reset()
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            opt.zero_grad()
            if s >= args.warmup:
                t_opt.append(t2 - t1)
                t_step.append(t2 - t0)
                sent.append(comm.total if comm is not None else 0)
        finals[name] = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
                        for k, v in model.state_dict().items()}
        results[name] = dict(opt_ms=1e3 * statistics.median(t_opt), step_ms=1e3 * statistics.median(t_step),
                             bytes=statistics.median(sent))
        del wrapped, opt
    for kind in ("ddp", "fsdp2"):
        a, b = finals[f"{kind} naive"], finals[f"{kind} split"]
        results[f"{kind} split"]["max_diff"] = max((a[k] - b[k]).abs().max().item() for k in a)
    return results


def _worker(rank: int, world: int, args, tmp: str) -> None:
    code = 0
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", store=dist.FileStore(os.path.join(tmp, "store"), world),
                                rank=rank, world_size=world)
        torch.save(_run(rank, world, args, tmp), os.path.join(tmp, f"r{rank}.pt"))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    os._exit(code)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=512)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=33)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1200.0)
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench_distributed_")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(r, args.world, args, tmp)) for r in range(args.world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(args.timeout)
    if any(p.is_alive() or p.exitcode != 0 for p in procs):
        for p in procs:
            p.kill()
        raise SystemExit("a rank failed or timed out")
    per_rank = [torch.load(os.path.join(tmp, f"r{r}.pt")) for r in range(args.world)]

    n_params = sum(p.numel() for p in Net(args.vocab, args.width, args.layers).parameters())
    print(f"world {args.world} (gloo, CPU, 1 thread/rank), torch {torch.__version__}, "
          f"width {args.width}, layers {args.layers}, vocab {args.vocab}, {n_params / 1e6:.2f}M params, "
          f"batch {args.batch}x{args.seq - 1} per rank, median of {args.steps} steps after {args.warmup}")
    print(f"{'design':<12} {'bytes sent/step/rank':>21} {'opt step ms':>12} {'whole step ms':>14} "
          f"{'max |split-naive|':>18}")
    for name in per_rank[0]:
        b = max(r[name]["bytes"] for r in per_rank)
        opt_ms = max(r[name]["opt_ms"] for r in per_rank)  # the slowest rank sets the pace
        step_ms = max(r[name]["step_ms"] for r in per_rank)
        diff = per_rank[0][name].get("max_diff")
        print(f"{name:<12} {b:>21,.0f} {opt_ms:>12.1f} {step_ms:>14.1f} "
              f"{'' if diff is None else f'{diff:.2e}':>18}")


if __name__ == "__main__":
    main()
