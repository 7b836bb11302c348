"""Train the small stdlib GPT of ``train_gpt.py`` with DDP or FSDP2 under ``torchrun``.

    torchrun --standalone --nproc-per-node=2 examples/train_gpt_distributed.py --distributed ddp
    torchrun --standalone --nproc-per-node=2 examples/train_gpt_distributed.py --distributed fsdp2
    # checkpoints (torch.distributed.checkpoint; resumable on another world size):
    torchrun ... --distributed fsdp2 --steps 200 --save runs/ckpt
    torchrun --standalone --nproc-per-node=1 examples/train_gpt_distributed.py \\
        --distributed fsdp2 --steps 300 --resume runs/ckpt

One code path for CPU and GPU: gloo on CPU, nccl when CUDA is available (one device per
rank, ``LOCAL_RANK``). The optimizer is ``dualtype.distributed.DistributedModularSGD`` with
the same norms and targets as ``train_gpt.py``'s ModularSGD: under DDP each rank dualizes a
cost-balanced share of the matrices and one all_gather shares them; under FSDP2 every block
is ``fully_shard``-ed, the momentum stays sharded, row maps run on local shards and whole
matrices are orthogonalized on owner ranks. The global batch is ``--batch`` (split over the
ranks), so the run follows the single-process one. Every other option is ``train_gpt.py``'s.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import train_gpt  # noqa: E402
from _data import eval_batches, get_batch, stdlib_corpus  # noqa: E402

from dualtype.distributed import DistributedModularSGD  # noqa: E402
from dualtype.distributed import checkpoint as dcheck  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Every other option is train_gpt.py's "
                                       "(python examples/train_gpt.py -h).")
    p.add_argument("--distributed", choices=("ddp", "fsdp2"), default="ddp")
    p.add_argument("--save", default=None, help="directory: save a DCP checkpoint at the end")
    p.add_argument("--resume", default=None, help="directory: resume from a DCP checkpoint")
    p.add_argument("--strategy", choices=("split", "naive"), default="split",
                   help="fsdp2 only: naive = every rank dualizes every matrix (baseline)")
    ours, rest = p.parse_known_args(argv)
    return ours, train_gpt.parse_args(rest)


def setup() -> tuple[int, int, torch.device]:
    if "RANK" not in os.environ:  # plain `python train_gpt_distributed.py`: a group of one
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
    cuda = torch.cuda.is_available()
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def wrap(model: torch.nn.Module, how: str, device: torch.device) -> torch.nn.Module:
    if how == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


def main(argv: list[str] | None = None) -> float:
    ours, args = parse_args(argv)
    rank, world, device = setup()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be divisible by the world size {world}")
    corpus = stdlib_corpus(args.train_chars, args.train_chars // 10)
    model = train_gpt.build_model(args, corpus.vocab_size, device)
    wrapped = wrap(model, ours.distributed, device)
    opt = DistributedModularSGD(wrapped, lr=args.lr or train_gpt.DEFAULT_LR["dualtype"],
                                strategy=ours.strategy, **{k: v for k, v in (("momentum", args.momentum),
                                ("weight_decay", args.weight_decay)) if v is not None})
    opts = train_gpt.Optimizers([opt], args.steps, args.cooldown)
    gen = torch.Generator().manual_seed(args.seed + 1 + 1000 * rank)  # each rank its own batches
    start = 0
    if ours.resume:
        extra = dcheck.load(ours.resume, wrapped, opt)
        start = extra["step"]
        opts.scheds[0].load_state_dict(extra["scheduler"])
        gen.manual_seed(args.seed + 1 + 1000 * rank + 7919 * start)  # fresh batches after resume
    val = eval_batches(corpus.val, args.eval_batches, args.batch, args.ctx)
    log = rank == 0
    if log:
        print(f"{ours.distributed} on {world} rank(s), {dist.get_backend()}, device {device.type}; "
              f"{sum(p.numel() for p in model.parameters()):,} params; global batch {args.batch}; "
              f"steps {start}..{args.steps}")
    bar = None
    if log and not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.steps, initial=start, desc=ours.distributed, dynamic_ncols=True)
    val_loss, times = float("nan"), []
    for step in range(start + 1, args.steps + 1):
        x, y = get_batch(corpus.train, args.batch // world, args.ctx, gen)
        x, y = x.to(device), y.to(device)
        t0 = time.perf_counter()
        with train_gpt.autocast(device, args.amp):
            loss = model.loss(x, y) if ours.distributed == "fsdp2" else _ddp_loss(wrapped, x, y)
        opts.zero_grad()
        loss.backward()
        opts.step()
        times.append(time.perf_counter() - t0)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"loss is {loss_value} at step {step}; lower the lr")
        if step % args.eval_every == 0 or step == args.steps:
            val_loss = train_gpt.evaluate(model, val, device, args.amp)  # every rank (FSDP2)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.3f}", val=f"{val_loss:.3f}")
    if bar is not None:
        bar.close()
    if ours.save:
        dcheck.save(ours.save, wrapped, opt, extra={"step": args.steps,
                                                    "scheduler": opts.scheds[0].state_dict()})
    if log:
        ms = 1000 * sorted(times)[len(times) // 2] if times else float("nan")
        print(f"final val loss {val_loss:.4f} ({ms:.0f} ms/step median; dualize exchange "
              f"{opt.comm.total / max(1, len(times)) / 1e6:.2f} MB/step sent by rank 0)"
              + (f"; checkpoint: {ours.save}" if ours.save else ""))
    del opts, opt, wrapped  # the DDP wrapper goes before the process group
    dist.destroy_process_group()
    return val_loss


def _ddp_loss(ddp: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """GPT.loss through the DDP wrapper's forward, so the gradient all-reduce hooks fire."""
    logits = ddp(x)
    return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))


if __name__ == "__main__":
    main()
