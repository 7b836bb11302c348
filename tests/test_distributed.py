"""dualtype.distributed: the dualize work split across 2 gloo processes on CPU.

Each distributed test forks 2 processes (``torch.set_num_threads(1)``, a FileStore in
``tmp_path``, a join timeout), runs the same training code as a single-process reference
and compares: every rank must hold bit-identical parameters, equal to the single-process
``ModularSGD`` run within 1e-6. The model touches every norm and the awkward shard cases:
an embedding of 11 rows (shards 6/5), a 5-row head (3/2), a Conv2d, and a 1-element gain
(shards 1/0: one rank holds an empty shard).
"""

from __future__ import annotations

import math
import os
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import dualtype
from dualtype.distributed import CommStats, ShardLayout
from dualtype.distributed.exchange import classify
from dualtype.distributed.plan import assign, dualize_cost
from dualtype.distributed.wire import pack, as_primal
from dualtype.norms import Norm
from dualtype.norms import get as norm
from dualtype.optim import ModularSGD
from helpers import plain, snapshot

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

NORMS = {"head.weight": "rms->linf", "lin1.bias": "l2", "conv.bias": "linf"}
LR, STEPS, TOL = 0.05, 4, 1e-6


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8)          # l1->rms, shards 6/5
        self.lin1 = nn.Linear(8, 12)            # rms->rms; bias l2 (rescaled)
        self.lin2 = nn.Linear(12, 12)           # rms->rms; bias rms (rescaled)
        self.conv = nn.Conv2d(3, 2, 2)          # conv2d [2, 3, 2, 2]; bias linf (local)
        self.head = nn.Linear(2, 5, bias=False)  # rms->linf, shards 3/2
        self.gain = nn.Parameter(torch.ones(1))  # rms, shards 1/0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.lin1(self.emb(x)))
        h = nn.functional.gelu(self.lin2(h)).view(-1, 3, 2, 2)
        return self.head(self.conv(h).flatten(1)) * self.gain


def make_net() -> Net:
    torch.manual_seed(0)
    return Net()


def batch(step: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randint(0, 11, (n,), generator=g), torch.randint(0, 5, (n,), generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: range, rank: int = 0, world: int = 1) -> None:
    """Each rank takes its slice of the global batch; DDP/FSDP average the gradients."""
    for s in steps:
        x, y = batch(s)
        x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        opt.zero_grad()


def full_params(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        v = v.full_tensor() if hasattr(v, "full_tensor") else v
        out[k.removeprefix("module.")] = v.detach().clone()
    return out


def reference(steps: int = STEPS, start: int = 0, norms=NORMS) -> dict[str, torch.Tensor]:
    """The single-process run, on one thread like the ranks."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = make_net()
        opt = ModularSGD(model, lr=LR, norms=norms, modular=False)
        train(model, opt, range(start, steps))
        return full_params(model)
    finally:
        torch.set_num_threads(threads)


# --- the 2-process harness ---------------------------------------------------------------


def _worker(fn, rank: int, world: int, tmp: str, args: tuple) -> None:
    code = 0
    try:
        torch.set_num_threads(1)
        store = dist.FileStore(os.path.join(tmp, "store"), world)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
        out = fn(rank, world, tmp, *args)
        torch.save(out, os.path.join(tmp, f"out{rank}.pt"))
    except BaseException:  # report to the parent, never hang it
        Path(tmp, f"err{rank}.txt").write_text(traceback.format_exc())
        code = 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    os._exit(code)  # skip pytest's atexit handlers in the forked child


def launch(fn, tmp_path: Path, *args, world: int = 2, timeout: float = 60.0) -> list:
    """Run ``fn(rank, world, tmp, *args)`` on ``world`` forked gloo processes; return results."""
    tmp = tmp_path / f"run{time.monotonic_ns()}"
    tmp.mkdir()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_worker, args=(fn, r, world, str(tmp), args)) for r in range(world)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + timeout
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join(5)
    errors = "\n".join(f.read_text() for f in sorted(tmp.glob("err*.txt")))
    assert not hung, f"{len(hung)} rank(s) hung past {timeout}s\n{errors}"
    assert all(p.exitcode == 0 for p in procs), f"exit codes {[p.exitcode for p in procs]}\n{errors}"
    return [torch.load(tmp / f"out{r}.pt", weights_only=False) for r in range(world)]


def assert_same(ranks: list[dict], ref: dict, tol: float = TOL) -> None:
    for k in ref:
        for r, got in enumerate(ranks[1:], 1):
            assert torch.equal(got[k], ranks[0][k]), f"{k}: rank {r} differs from rank 0"
        err = (ranks[0][k] - ref[k]).abs().max().item()
        assert err <= tol, f"{k}: {err:.3g} from the single-process run"


def _count_items(counter: list) -> None:
    """Record how many items this rank's base _dualize was asked for (its share of the work)."""
    base = ModularSGD._dualize

    def counting(self, items):
        counter.append(len(items))
        return base(self, items)

    ModularSGD._dualize = counting  # in the forked child only


# --- workers -------------------------------------------------------------------------------


def _ddp(rank, world, tmp):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from dualtype.distributed import DistributedModularSGD

    counts: list[int] = []
    _count_items(counts)
    model = make_net()
    ddp = DDP(model)
    opt = DistributedModularSGD(ddp, lr=LR, norms=NORMS, modular=False)
    train(ddp, opt, range(STEPS), rank, world)
    out = {"params": full_params(model), "comm": dict(opt.comm.bytes_sent), "items": sum(counts)}
    del ddp  # destroy the DDP wrapper before the process group
    return out


def _fsdp(rank, world, tmp, strategy):
    from torch.distributed.fsdp import fully_shard

    from dualtype.distributed import DistributedModularSGD

    model = make_net()
    fully_shard(model.lin2)
    if strategy == "dim1":  # columns sharded: the row maps of emb and head must assemble
        from torch.distributed.tensor import Shard

        fully_shard(model.emb, shard_placement_fn=lambda p: Shard(1))
        fully_shard(model.head, shard_placement_fn=lambda p: Shard(1))
    fully_shard(model)
    opt = DistributedModularSGD(model, lr=LR, norms=NORMS, modular=False,
                                strategy="naive" if strategy == "naive" else "split")
    local_shapes = {n: tuple(v.shape) for n, (_, v) in opt.shard_views().items()}
    train(model, opt, range(STEPS), rank, world)
    return {"params": full_params(model), "comm": dict(opt.comm.bytes_sent), "calls": dict(opt.comm.calls),
            "shapes": local_shapes, "momentum": {n: tuple(opt.state[v]["momentum_buffer"].shape)
                                                 for n, (_, v) in opt.shard_views().items()}}


def _checkpoint(rank, world, tmp, mode, ckpt, phase, save_at, steps):
    from dualtype.distributed import DistributedModularSGD
    from dualtype.distributed import checkpoint as dcheck

    model = make_net()
    if mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model)
        wrapped = model
    else:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model)
    opt = DistributedModularSGD(wrapped, lr=LR, norms=NORMS, modular=False)
    if phase == "save":
        train(wrapped, opt, range(save_at), rank, world)
        dcheck.save(ckpt, wrapped, opt, extra={"step": save_at})
        start = save_at
    else:
        start = dcheck.load(ckpt, wrapped, opt)["step"]
    train(wrapped, opt, range(start, steps), rank, world)
    out = full_params(model)
    del wrapped
    return out


def _nan(rank, world, tmp):
    """A NaN in one rank's share: every rank raises NonFiniteError after the same collective,
    no weight changes, and the next step runs (the collectives stay aligned)."""
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel as DDP

    from dualtype.distributed import DistributedModularSGD

    out = {}
    for mode in ("ddp", "fsdp2"):
        model = make_net()
        wrapped = DDP(model) if mode == "ddp" else model
        if mode == "fsdp2":
            fully_shard(model)
        opt = DistributedModularSGD(wrapped, lr=LR, norms=NORMS, modular=False)
        x, y = batch(0)
        nn.functional.cross_entropy(wrapped(x), y).backward()
        before = full_params(model)
        with torch.no_grad():
            if mode == "ddp":  # replicated: NaN on every rank, only its owner dualizes it
                model.lin2.weight.grad[0, 0] = float("nan")
            elif rank == 1:  # sharded: NaN in rank 1's local shard of a row-map parameter
                model.emb.weight.grad.to_local()[0, 0] = float("nan")
        try:
            opt.step()
            raised = None
        except dualtype.NonFiniteError as e:
            raised = str(e)
        same = all(torch.equal(v, before[k]) for k, v in full_params(model).items())
        opt.zero_grad()
        train(wrapped, opt, range(1, 2), rank, world)
        out[mode] = {"raised": raised, "unchanged": same}
        del wrapped, opt
    return out


CASES = [  # (global shape, norm, shard dim): uneven, empty and column shards at 3 ranks
    ((7, 5), "rms->rms", 0), ((2, 9), "rms->rms", 0), ((1, 4), "rms->rms", 0),
    ((5, 6), "rms->rms", 1), ((4, 3, 2, 2), "conv2d", 0), ((7, 5), "l1->rms", 0),
    ((7, 5), "rms->linf", 1), ((8,), "rms", 0), ((2,), "rms", 0), ((7, 3), "l2", 0),
    ((7, 3), "linf", 1), ((6, 4), "rms->rms", None), ((3, 4), "rms->rms", 0),
    ((7, 5), "rms->linf.t", 0), ((5, 7), "l1->rms.t", 1), ((4, 6), "rms->rms.t", 0),  # whole matrices
]


def _full_case(i: int) -> torch.Tensor:
    shape = CASES[i][0]
    g = torch.Generator().manual_seed(i)
    return torch.randn(shape, generator=g, dtype=torch.float64)


def _sharded_cases(rank, world, tmp):
    from dualtype.distributed import default_dualize, dualize_sharded

    items, layouts = [], []
    for i, (shape, name, dim) in enumerate(CASES):
        lay = ShardLayout.chunked(shape, dim, world)
        full = _full_case(i)
        local = full if dim is None else full.narrow(dim, lay.offset(rank), lay.sizes[rank])
        items.append((None, dualtype.dual(local.contiguous(), name), norm(name), 0.5 + i))
        layouts.append(lay)
    stats = CommStats()
    out = dualize_sharded(items, layouts, default_dualize, None, stats)
    assert all(dualtype.role(o) == "primal" and dualtype.norm_of(o) == it[2] for o, it in zip(out, items))
    return {"out": [o.as_subclass(torch.Tensor).clone() for o in out], "calls": dict(stats.calls)}


def _misuse(rank, world, tmp):
    """Ranks that disagree raise ConfigError together instead of hanging or mixing results."""
    from dualtype.distributed import DistributedModularSGD

    out = {}
    model = make_net()  # no DDP: each rank its own gradients
    opt = DistributedModularSGD(model, lr=LR, norms=NORMS, modular=False, verify=True)
    x, y = batch(rank)
    nn.functional.cross_entropy(model(x), y).backward()
    try:
        opt.step()
    except dualtype.ConfigError as e:
        out["unreplicated"] = str(e)
    model = make_net()
    if rank == 1:
        model.gain.requires_grad_(False)  # rank 1 plans one item fewer
    opt = DistributedModularSGD(model, lr=LR, norms=NORMS, modular=False)  # verify="first"
    nn.functional.cross_entropy(model(x), y).backward()
    try:
        opt.step()
    except dualtype.ConfigError as e:
        out["plan"] = str(e)
    return out


# --- norms dualtype does not ship: defined here, with their capabilities, and nowhere else ------


class RowL2(Norm):
    """max_i ‖w_i‖₂ on ``[..., out, in]``; dual Σ_i ‖g_i‖₂; map: each row g_i → g_i/‖g_i‖₂."""

    name = "test-row-l2"
    min_ndim = 2
    batchable = True
    locality = "rows"

    def _value(self, w):
        return w.double().norm(dim=-1).amax(dim=-1)

    def _dual_value(self, g):
        return g.double().norm(dim=-1).sum(dim=-1)

    def _dualize(self, g, method=None):
        n = g.norm(dim=-1, keepdim=True)
        return g / torch.where(n > 0, n, torch.ones_like(n))


class MatrixFro(Norm):
    """‖W‖_F of each matrix of ``[..., out, in]``, declared whole-matrix (the default locality):
    under DDP its maps are split across ranks, under FSDP2 assembled on an owner."""

    name = "test-matrix-fro"
    min_ndim = 2
    batchable = True

    def cost(self, shape):
        return 2 * math.prod(shape)

    def _value(self, w):
        return w.double().flatten(-2).norm(dim=-1)

    def _dual_value(self, g):
        return self._value(g)

    def _dualize(self, g, method=None):
        n = g.flatten(-2).norm(dim=-1)[..., None, None]
        return g / torch.where(n > 0, n, torch.ones_like(n))


TOY_NORMS = {**NORMS, "lin1.weight": RowL2(), "lin2.weight": MatrixFro()}


def _toy(rank, world, tmp, mode):
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel as DDP

    from dualtype.distributed import DistributedModularSGD

    model = make_net()
    if mode == "fsdp2":
        fully_shard(model.lin2)
        fully_shard(model)
    wrapped = DDP(model) if mode == "ddp" else model
    opt = DistributedModularSGD(wrapped, lr=LR, norms=TOY_NORMS, modular=False)
    train(wrapped, opt, range(STEPS), rank, world)
    out = {"params": full_params(model), "calls": dict(opt.comm.calls)}
    del wrapped
    return out


def test_a_norm_defined_in_a_test_is_registered_with_its_capabilities():
    assert norm("test-row-l2") == RowL2() and norm("Test-Matrix-Fro") == MatrixFro()
    assert dualize_cost((4, 6), MatrixFro()) == 48 and dualize_cost((4, 6), RowL2()) == 24
    rows = ShardLayout.chunked((4, 6), 0, 2)
    assert classify(MatrixFro(), rows) == "assemble" and classify(RowL2(), rows) == "local"
    with pytest.raises(dualtype.ConfigError, match="taken"):
        type("Again", (Norm,), {"name": "test-row-l2"})
    with pytest.raises(dualtype.ConfigError, match="locality"):
        type("Nowhere", (Norm,), {"locality": "diagonal"})


@pytest.mark.parametrize("batched", [True, False])
def test_a_norm_defined_in_a_test_steps_modular_sgd(batched):
    """Two same-shape matrices under each toy norm: batched, they are dualized in one call."""
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    norms = {"0.weight": RowL2(), "1.weight": RowL2(), "2.weight": MatrixFro(), "3.weight": MatrixFro()}
    opt = ModularSGD(model, lr=0.1, momentum=0.0, norms=norms, modular=False, batched=batched)
    calls = []
    base = opt._dualize_batch
    opt._dualize_batch = lambda items: calls.append(len(items)) or base(items)
    model(torch.randn(3, 4)).square().sum().backward()
    before = snapshot(model)
    grads = {n: plain(p.grad) for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        if n in norms:
            want = before[n] - 0.1 * norms[n]._dualize(grads[n])
            torch.testing.assert_close(p.detach(), want, atol=1e-6, rtol=0)
    assert sorted(calls, reverse=True)[:2] == ([2, 2] if batched else [1, 1])


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_a_norm_defined_in_a_test_runs_distributed(tmp_path, mode):
    ranks = launch(_toy, tmp_path, mode)
    assert_same([r["params"] for r in ranks], reference(norms=TOY_NORMS))
    if mode == "fsdp2":  # lin2 (whole-matrix) assembled on its owner; lin1's rows stay local
        assert ranks[0]["calls"]["all_to_all"] == 2 * STEPS


# --- single-process units ------------------------------------------------------------------


def test_assign_balances_and_is_deterministic():
    costs = [dualize_cost(s, norm("rms->rms")) for s in [(64, 64), (64, 64), (8, 64), (8, 8), (64, 256)]]
    owners = assign(costs, 2)
    assert owners == assign(costs, 2)
    ld = [sum(c for c, r in zip(costs, owners) if r == rank) for rank in range(2)]
    assert max(ld) <= 4 / 3 * max(sum(costs) / 2, max(costs))
    assert assign([5.0], 3) == [0] and assign([], 2) == []


def test_cost_model():
    assert dualize_cost((32, 128), norm("rms->rms")) == 32 * 128 * 32
    assert dualize_cost((4, 32, 128), norm("rms->rms")) == 4 * 32 * 128 * 32
    assert dualize_cost((8, 3, 3, 3), norm("conv2d")) == 8 * 3 * 9 * 3
    assert dualize_cost((50, 16), norm("l1->rms")) == 800
    assert dualize_cost((0, 16), norm("rms->rms")) == 0


def test_shard_layout_uneven_and_empty():
    lay = ShardLayout.chunked((11, 8), 0, 2)
    assert lay.sizes == (6, 5) and lay.shard_shape(1) == (5, 8) and lay.offset(1) == 6
    assert ShardLayout.chunked((1,), 0, 2).sizes == (1, 0)
    assert ShardLayout.chunked((5, 2), 0, 4).sizes == (2, 2, 1, 0)
    assert classify(norm("rms->linf"), lay) == "local"
    assert classify(norm("l1->rms"), ShardLayout.chunked((11, 8), 1, 2)) == "assemble"
    assert classify(norm("rms"), ShardLayout.chunked((12,), 0, 2)) == "rescale"
    assert classify(norm("rms->rms"), lay) == "assemble"
    assert classify(norm("rms->rms"), ShardLayout.chunked((11, 8), None, 2)) == "local"


def test_wire_keeps_tags_out_of_the_buffer():
    g = dualtype.dual(torch.randn(3, 4), "rms->rms")
    p = dualtype.dualize(g)
    buf = pack([p, p[:1]], 20, torch.float32, torch.device("cpu"))
    assert dualtype.role(buf) is None and type(buf) is torch.Tensor  # collectives see plain data
    assert torch.equal(buf[:12].view(3, 4), p.as_subclass(torch.Tensor)) and buf[16:].eq(0).all()
    back = as_primal(buf[:12].view(3, 4), norm("rms->rms"))
    assert dualtype.role(back) == "primal" and dualtype.norm_of(back) == norm("rms->rms")
    stats = CommStats()
    stats.add("all_gather", 10)
    stats.add("all_gather", 6)
    assert stats.total == 16 and stats.calls == {"all_gather": 2}


def test_single_process_is_the_base_optimizer():
    from dualtype.distributed import DistributedModularSGD, default_dualize, dualize_replicated

    assert not dist.is_initialized()
    a, b = make_net(), make_net()
    train(a, ModularSGD(a, lr=LR, norms=NORMS, modular=False), range(2))
    train(b, DistributedModularSGD(b, lr=LR, norms=NORMS, modular=False), range(2))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    g = dualtype.dual(torch.randn(2, 6, 4), "rms->rms")
    items = [(None, g[0], norm("rms->rms"), 0.5), (None, g[1], norm("rms->rms"), 2.0)]
    for got, (_, u, n, t) in zip(dualize_replicated(items, default_dualize), items):
        assert dualtype.role(got) == "primal" and dualtype.norm_of(got) == n
        torch.testing.assert_close(got, dualtype.dualize(u, scale=t), atol=1e-6, rtol=0)


# --- 2 processes ---------------------------------------------------------------------------


def test_ddp_matches_single_process_and_splits_the_work(tmp_path):
    ranks = launch(_ddp, tmp_path)
    assert_same([r["params"] for r in ranks], reference())
    # the 3 matrices (lin1, lin2: rms->rms; conv: conv2d) are dualized once, by one rank each;
    # the 6 O(numel) maps (row maps, vectors, sign) on every rank: cheaper than sending them
    n_split, n_cheap = 3, 6
    assert sum(r["items"] for r in ranks) == (n_split + 2 * n_cheap) * STEPS
    assert all(r["items"] > n_cheap * STEPS for r in ranks)  # both ranks orthogonalized
    assert all(r["comm"]["all_gather"] > 0 for r in ranks)


@pytest.mark.parametrize("strategy", ["split", "naive", "dim1"])
def test_fsdp2_matches_single_process(tmp_path, strategy):
    ranks = launch(_fsdp, tmp_path, strategy)
    assert_same([r["params"] for r in ranks], reference())
    if strategy == "dim1":
        assert ranks[0]["shapes"]["emb.weight"] == (11, 4) and ranks[1]["shapes"]["head.weight"] == (5, 1)
        return
    assert ranks[0]["shapes"]["emb.weight"] == (6, 8) and ranks[1]["shapes"]["emb.weight"] == (5, 8)
    assert ranks[1]["shapes"]["gain"] == (0,)
    assert all(r["momentum"] == r["shapes"] for r in ranks)  # momentum stays sharded
    if strategy == "split":
        # two all_to_all (whole matrices) and one scalar all_reduce (rms, l2) per step, no gather
        assert ranks[0]["calls"] == {"all_to_all": 2 * STEPS, "all_reduce": STEPS}
    else:
        assert set(ranks[0]["calls"]) == {"all_gather"}


def test_sharded_maps_equal_the_whole_tensor_maps_at_three_ranks(tmp_path):
    ranks = launch(_sharded_cases, tmp_path, world=3)
    for i, (shape, name, dim) in enumerate(CASES):
        parts = [r["out"][i] for r in ranks]
        got = parts[0] if dim is None else torch.cat(parts, dim=dim)
        want = dualtype.dualize(dualtype.dual(_full_case(i), name), scale=0.5 + i)
        torch.testing.assert_close(got, want.as_subclass(torch.Tensor), atol=1e-9, rtol=1e-9,
                                   msg=f"case {i}: {shape} {name} dim {dim}")
    assert ranks[0]["calls"] == {"all_reduce": 1, "all_to_all": 2}  # one dtype: 3 collectives


def test_nan_in_one_share_raises_on_every_rank(tmp_path):
    for r in launch(_nan, tmp_path):
        for mode in ("ddp", "fsdp2"):
            assert r[mode]["raised"] is not None, f"{mode}: a rank did not raise"
            assert r[mode]["unchanged"], f"{mode}: a weight changed in the failed step"


def test_ranks_that_disagree_raise_together(tmp_path):
    for r in launch(_misuse, tmp_path):
        assert "different gradients" in r.get("unreplicated", "")
        assert "disagree" in r.get("plan", "")


def test_checkpoint_resume_matches_uninterrupted(tmp_path):
    ref = reference(6)
    ck = str(tmp_path / "ckpt")
    saved = launch(_checkpoint, tmp_path, "fsdp2", ck, "save", 3, 6)
    assert_same(saved, ref)
    resumed = launch(_checkpoint, tmp_path, "fsdp2", ck, "load", 3, 6)
    for k in saved[0]:  # same world size: bit-identical continuation
        assert torch.equal(resumed[0][k], saved[0][k]) and torch.equal(resumed[1][k], saved[1][k]), k
    # another world size and another wrapper: FSDP2 on 2 ranks -> 1 rank, -> DDP on 2 ranks
    (one,) = launch(_checkpoint, tmp_path, "fsdp2", ck, "load", 3, 6, world=1)
    assert_same([one], ref)
    ddp = launch(_checkpoint, tmp_path, "ddp", ck, "load", 3, 6)
    assert_same(ddp, ref)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_example_runs_under_torchrun_and_resumes_on_one_rank(tmp_path, mode):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = [str(root / "examples" / "train_gpt_distributed.py"), "--distributed", mode,
              "--eval-every", "3", "--eval-batches", "2", "--train-chars", "100000", "--quiet",
              "--d-model", "32", "--layers", "1", "--batch", "8", "--ctx", "32"]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    ck = str(tmp_path / "ckpt")
    out = subprocess.run([*run, "--nproc-per-node=2", *common, "--steps", "6", "--save", ck],
                         env=env, timeout=300, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "final val loss" in out.stdout
    out = subprocess.run([*run, "--nproc-per-node=1", *common, "--steps", "9", "--resume", ck],
                         env=env, timeout=300, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "steps 6..9" in out.stdout
