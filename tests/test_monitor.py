"""dualtype.Monitor: per-parameter statistics in each parameter's own norm (docs/design.md §1, §3).

References are computed here independently of dualtype.norms, in float64 (SVD spectral and
nuclear norms, row norms), from tensors snapshotted around the optimizer's step.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import dualtype
from dualtype import monitor as monitor_mod
from dualtype.kernels import orthogonalize
from dualtype.monitor import Monitor, spectral_norm_estimate


class Net(nn.Module):
    """Every norm: an embedding (l1->rms), two hidden matrices (rms->rms), a Conv2d (conv2d),
    a head (rms->linf), biases and a gain (rms)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.lin1 = nn.Linear(8, 12)
        self.lin2 = nn.Linear(12, 12)
        self.conv = nn.Conv2d(3, 2, 2)
        self.head = nn.Linear(2, 5, bias=False)
        self.gain = nn.Parameter(torch.ones(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.gelu(self.lin1(self.emb(x)))
        h = nn.functional.gelu(self.lin2(h)).view(-1, 3, 2, 2)
        return self.head(self.conv(h).flatten(1)) * self.gain


def batch(step: int, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randint(0, 11, (n,), generator=g), torch.randint(0, 5, (n,), generator=g)


def make(dtype=torch.float64, **opt_kwargs):
    torch.manual_seed(0)
    model = Net().to(dtype)
    opt = dualtype.ModularSGD(model, example=batch(0)[0], **opt_kwargs)
    return model, opt


def backward(model: nn.Module, step: int) -> None:
    x, y = batch(step)
    nn.functional.cross_entropy(model(x), y).backward()


# --- independent float64 references (docs/design.md §3 table) -----------------------------


def ref_norm(name: str, w: torch.Tensor) -> float:
    w = w.detach().double()
    if name == "rms->rms":
        out, inp = w.shape
        return math.sqrt(inp / out) * torch.linalg.matrix_norm(w, 2).item()
    if name == "conv2d":
        K = w.shape[2] * w.shape[3]
        out, inp = w.shape[:2]
        return K * max(math.sqrt(inp / out) * torch.linalg.matrix_norm(w[:, :, i, j], 2).item()
                       for i in range(w.shape[2]) for j in range(w.shape[3]))
    if name == "l1->rms":
        return w.norm(dim=1).max().item() / math.sqrt(w.shape[1])
    if name == "rms->linf":
        return w.norm(dim=1).max().item() * math.sqrt(w.shape[1])
    if name == "rms":
        return w.norm().item() / math.sqrt(w.numel())
    raise AssertionError(name)


def ref_dual(name: str, g: torch.Tensor) -> float:
    g = g.detach().double()
    if name == "rms->rms":
        out, inp = g.shape
        return math.sqrt(out / inp) * torch.linalg.matrix_norm(g, "nuc").item()
    if name == "conv2d":
        K = g.shape[2] * g.shape[3]
        out, inp = g.shape[:2]
        return sum(math.sqrt(out / inp) * torch.linalg.matrix_norm(g[:, :, i, j], "nuc").item()
                   for i in range(g.shape[2]) for j in range(g.shape[3])) / K
    if name == "l1->rms":
        return g.norm(dim=1).sum().item() * math.sqrt(g.shape[1])
    if name == "rms->linf":
        return g.norm(dim=1).sum().item() / math.sqrt(g.shape[1])
    if name == "rms":
        return g.norm().item() * math.sqrt(g.numel())
    raise AssertionError(name)


def plain(t: torch.Tensor) -> torch.Tensor:
    return t.as_subclass(torch.Tensor).detach().clone().double()


# --- statistics against exact references ------------------------------------------------


@pytest.mark.parametrize("spectral", ["exact", "lanczos"])
def test_statistics_match_float64_references(spectral):
    lr, wd = 0.05, 0.1
    model, opt = make(lr=lr, weight_decay=wd, method="svd")
    mon = Monitor(opt, every=3, spectral=spectral)
    names = dict(model.named_parameters())
    for step in range(1, 7):
        backward(model, step)
        due = step % 3 == 0
        if due:
            before = {n: plain(p) for n, p in names.items()}
            grads = {n: plain(p.grad) for n, p in names.items()}
            bufs = {n: plain(opt.state[p]["momentum_buffer"]) for n, p in names.items()}
        opt.step()
        record = mon.step()
        opt.zero_grad()
        assert (record is not None) == due
        if not due:
            continue
        assert record["step"] == step
        for n, p in names.items():
            row = record["params"][n]
            norm = row["norm"]
            exact_w = ref_norm(norm, p)
            # Lanczos is a lower bound; this Net's matrices are small enough to converge
            assert row["weight"] == pytest.approx(exact_w, rel=1e-9 if spectral == "exact" else 1e-6), n
            assert row["grad_dual"] == pytest.approx(ref_dual(norm, grads[n]), rel=1e-9), n
            # the update is the weight change without the decoupled decay: lr·target exactly (svd)
            delta = (1 - lr * wd * dualtype.norms.get(norm).decays) * before[n] - plain(p)
            tol = 1e-9 if spectral == "exact" else 1e-6
            assert row["update"] == pytest.approx(ref_norm(norm, delta), rel=tol), n
            assert row["step_size"] == pytest.approx(lr * row["target"]) and row["update_ratio"] == pytest.approx(1, abs=tol)
            assert row["alignment"] == pytest.approx(1.0, abs=1e-9), n  # method="svd": the exact map
            m, g = bufs[n].flatten(), grads[n].flatten()
            assert row["momentum_cos"] == pytest.approx((m @ g / (m.norm() * g.norm())).item(), abs=1e-9), n
        # whole model: the flattened modular norm with c_p = target (§3)
        rows = record["params"].values()
        model_row = record["model"]
        assert model_row["weight"] == pytest.approx(max(r["weight"] / r["target"] for r in rows))
        assert model_row["update"] == pytest.approx(lr, rel=1e-6)  # max ‖Δ_p‖/t_p = lr
        assert model_row["grad_dual"] == pytest.approx(sum(r["target"] * r["grad_dual"] for r in rows))
        assert model_row["alignment"] == pytest.approx(1.0, abs=1e-9)
        hidden = record["roles"]["hidden"]
        assert hidden["count"] == 2
        assert hidden["weight"] == pytest.approx(max(record["params"][n]["weight"] / record["params"][n]["target"]
                                                     for n in ("lin1.weight", "lin2.weight")))


def test_the_update_check_fails_when_the_weight_moved_outside_the_step():
    model, opt = make(lr=0.05, method="svd")
    mon = Monitor(opt, every=1)
    backward(model, 1)
    opt.step()
    assert mon.step()["model"]["update"] == pytest.approx(0.05)
    backward(model, 2)
    opt.step()
    with torch.no_grad():
        model.lin2.weight.mul_(1.5)  # a write the optimizer did not make
    with pytest.raises(dualtype.DualityError, match=r"'lin2.weight' moved .* lr·target") as e:
        mon.step()
    assert not isinstance(e.value, TypeError)
    mon2 = Monitor(opt, every=1, update_tol=None)  # report only
    backward(model, 3)
    opt.step()
    with torch.no_grad():
        model.lin2.weight.mul_(1.5)
    assert mon2.step()["params"]["lin2.weight"]["update_ratio"] > 2


# --- the Lanczos estimate of σ_max ---------------------------------------------------------


@settings(max_examples=15)
@given(seed=st.integers(0, 10_000), out=st.integers(8, 96), inp=st.integers(8, 96))
def test_spectral_estimate_within_1_percent_after_warmup_on_a_drifting_weight(seed, out, inp):
    """The weight drifts between measurements as under an orthogonalized optimizer: 50 steps
    of lr·dualize(random) (the spectrum stays flat, the hard case for a power iteration)."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=gen) / math.sqrt(inp)
    v, errors = None, []
    for _ in range(5):
        for _ in range(50):
            w += 0.01 * math.sqrt(out / inp) * orthogonalize(torch.randn(out, inp, generator=gen))
        sigma, v = spectral_norm_estimate(w, v, generator=gen)
        exact = torch.linalg.matrix_norm(w.double(), 2).item()
        assert sigma.item() <= exact * (1 + 1e-5)  # a lower bound
        errors.append(1 - sigma.item() / exact)
    assert max(errors[1:]) < 0.01, errors


def test_spectral_estimate_batches_and_zero():
    w = torch.randn(3, 6, 5, dtype=torch.float64)
    w[1] = 0
    sigma, v = spectral_norm_estimate(w, None, 8, torch.Generator().manual_seed(0))
    assert sigma.dtype == torch.float64 and sigma.shape == (3,) and v.shape == (3, 5)
    assert sigma[1] == 0 and torch.isfinite(v).all()
    assert torch.allclose(sigma[[0, 2]], torch.linalg.matrix_norm(w[[0, 2]], 2), rtol=1e-9)


# --- alignment: 1 for the exact map, the kernel's contract for the default ---------------


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), out=st.sampled_from([16, 64, 256]), inp=st.sampled_from([16, 64, 256]))
def test_alignment_is_one_for_svd_and_within_the_kernel_contract_by_default(seed, out, inp):
    """⟨G, d⟩/‖G‖† = Σσ_i·p(σ_i)/Σσ_i: within the output-singular-value band of the
    orthogonalize contract for Gaussian input in float32 (auto: σ ∈ [0.977, 1.013])."""
    gen = torch.Generator().manual_seed(seed)
    w = nn.Parameter(torch.randn(out, inp, generator=gen))
    for method, lo, hi in (("svd", 1 - 1e-5, 1 + 1e-5), (None, 0.977, 1.013)):
        opt = dualtype.ModularSGD([("w", w)], lr=0.01, method=method)
        mon = Monitor(opt, every=1)
        w.grad = torch.randn(out, inp, generator=gen)
        opt.step()
        row = mon.step()["params"]["w"]
        assert lo <= row["alignment"] <= hi, (method, row["alignment"])
        # ‖Δ‖ = lr·max_i p(σ_i), measured from float32 weights: rounding of w − w' ~1e-5
        assert lo - 2e-4 <= row["update_ratio"] <= hi + 2e-4


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), out=st.integers(1, 96), inp=st.integers(1, 96), rank=st.integers(1, 96),
       exponent=st.integers(-30, 30), dtype=st.sampled_from([torch.float32, torch.bfloat16]))
def test_gradient_spectrum_from_the_float64_gram_matrix_matches_the_svd(seed, out, inp, rank, exponent, dtype):
    """The monitor's singular values of a float32/bf16 gradient (√ of the float64 Gram
    matrix's eigenvalues) against the float64 SVD of the same values: σ_max to rounding and
    the nuclear norm within r·1e-7·σ_max (the error class of the float32 SVD it replaced),
    rank-deficient and tiny or huge scales included."""
    gen = torch.Generator().manual_seed(seed)
    rank = min(rank, out, inp)
    g = torch.randn(out, rank, generator=gen, dtype=torch.float64) @ torch.randn(rank, inp, generator=gen,
                                                                                  dtype=torch.float64)
    g = (g * 2.0 ** exponent).to(dtype)
    exact = torch.linalg.svdvals(g.double())
    got = monitor_mod._spectrum(g)
    assert got.dtype == torch.float64 and got.shape == exact.shape
    assert got.max().item() == pytest.approx(exact.max().item(), rel=1e-10)
    r = min(out, inp)
    assert abs(got.sum().item() - exact.sum().item()) <= r * 1e-7 * exact.max().item()
    assert torch.equal(monitor_mod._spectrum(torch.zeros(out, inp, dtype=dtype)), torch.zeros(r, dtype=torch.float64))


@pytest.mark.parametrize("shape", [(5, 7), (64, 100), (3, 130, 90), (2, 4, 257, 300)])
def test_the_lower_gram_matrix_is_the_lower_triangle_of_the_product(shape):
    a = torch.randn(*shape, dtype=torch.float64)
    full = a @ a.mT
    got = monitor_mod._lower_gram(a)
    assert torch.allclose(got.tril(), full.tril(), rtol=1e-12, atol=1e-12)
    assert torch.allclose(torch.linalg.eigvalsh(got, UPLO="L"), torch.linalg.eigvalsh(full), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_gradient_spectrum_of_a_non_finite_matrix_is_nan_and_the_others_of_the_stack_are_exact(bad):
    g = torch.randn(3, 5, 9)
    g[1, 4, 8] = bad
    got = monitor_mod._spectrum(g)
    assert torch.isnan(got[1]).all()
    assert torch.allclose(got[[0, 2]], torch.linalg.svdvals(g[[0, 2]].double()).flip(-1), rtol=1e-9)


@settings(max_examples=20)
@given(seed=st.integers(0, 10_000), out=st.integers(1, 64), inp=st.integers(1, 64), batch=st.integers(1, 3),
       method=st.sampled_from(["auto", "polar_express", "gram", "quintic", "svd"]), low_rank=st.booleans())
def test_the_kernel_map_is_what_the_kernel_computes_in_float64(seed, out, inp, batch, method, low_rank):
    """In float64 (rounding far below the kernels' own error) orthogonalize(G, method) has
    singular values p(σ) (:func:`_kernel_map`) and ⟨G, orthogonalize(G)⟩ = Σσ·p(σ): the
    monitor's alignment from the spectrum is the kernel's, not an approximation of it."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(batch, out, inp, generator=gen, dtype=torch.float64)
    if low_rank:
        g = g[..., :1] @ g[..., :1, :]  # rank 1 (and the kernels' ill-conditioned case)
    sigma = torch.linalg.svdvals(g)
    p = monitor_mod._kernel_map(sigma, (out, inp), method, torch.float64)
    d = orthogonalize(g, method)
    assert torch.allclose((g * d).sum(dim=(-2, -1)), (sigma * p).sum(dim=-1), rtol=1e-9, atol=1e-12 * sigma.sum())
    got = torch.linalg.svdvals(d).sort(dim=-1).values
    assert torch.allclose(got, p.abs().sort(dim=-1).values, atol=1e-9)


@settings(max_examples=10)
@given(seed=st.integers(0, 10_000), out=st.sampled_from([8, 40, 200]), inp=st.sampled_from([8, 40, 200]),
       method=st.sampled_from([None, "polar_express", "gram", "quintic", "svd"]), low_rank=st.booleans())
def test_float32_kernel_rounding_moves_the_alignment_by_less_than_1e_4(seed, out, inp, method, low_rank):
    """The spectral alignment leaves out the kernel's float32 rounding; measured here against
    the float32 kernel run (⟨G, orthogonalize(G)⟩/Σσ, accumulated in float64)."""
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(out, inp, generator=gen, dtype=torch.float64)
    if low_rank:
        g = g[:, :4] @ g[:4, :]
    g = g.float()
    sigma = torch.linalg.svdvals(g.double())
    p = monitor_mod._kernel_map(sigma, (out, inp), method, torch.float32)
    run = (g.double() * orthogonalize(g, method).double()).sum() / sigma.sum()
    assert abs(((sigma * p).sum() / sigma.sum()).item() - run.item()) < 1e-4


def test_the_kernel_map_is_unknown_for_cubic_and_16_bit_so_the_monitor_runs_the_kernel():
    sigma = torch.rand(2, 5, dtype=torch.float64)
    assert monitor_mod._kernel_map(sigma, (5, 7), "cubic", torch.float32) is None
    assert monitor_mod._kernel_map(sigma, (5, 7), None, torch.bfloat16) is None
    for method, dtype in (("cubic", torch.float32), (None, torch.bfloat16)):
        torch.manual_seed(0)
        model = Net().to(dtype)
        opt = dualtype.ModularSGD(model, example=batch(0)[0], method=method)
        mon = Monitor(opt, every=1)
        backward(model, 1)
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        row = mon.step()["params"]["lin2.weight"]
        g = grads["lin2.weight"]
        pair = (g.double() * dualtype.norms.get("rms->rms").dualize(g, method).double()).sum().item()
        assert row["grad_dual"] == pytest.approx(ref_dual("rms->rms", g), rel=1e-6)
        assert row["alignment"] == pytest.approx(pair / row["grad_dual"], rel=1e-5), (method, dtype)


def test_a_norm_subclass_with_its_own_map_is_not_read_from_the_spectrum():
    class Halved(dualtype.norms.RMSToRMS):  # unnamed: not registered
        def _dualize(self, g, method=None):
            return super()._dualize(g, method) / 2

    g = torch.randn(2, 6, 4)
    assert monitor_mod._spectral_duals(Halved(), g, None, 2, pairing=True) is None
    gd, pair = monitor_mod._spectral_duals(dualtype.norms.get("rms->rms"), g, None, 2, pairing=True)
    assert gd.shape == pair.shape == (2,)
    assert monitor_mod._spectral_duals(dualtype.norms.get("rms->rms"), g.to_sparse(), None, 2, pairing=True) is None


def test_float32_statistics_of_the_gradient_match_float64_references():
    """float32 model, default kernel: ‖g‖† against the float64 SVD, the alignment against the
    float32 kernel run on the same gradient (rms->rms and conv2d, whose K taps each have
    their own spectrum)."""
    model, opt = make(torch.float32)
    mon = Monitor(opt, every=2)
    for step in range(1, 3):
        backward(model, step)
        grads = {n: plain(p.grad) for n, p in model.named_parameters()}
        raw = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        record = mon.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        row = record["params"][n]
        norm = dualtype.norms.get(row["norm"])
        assert row["grad_dual"] == pytest.approx(ref_dual(row["norm"], grads[n]), rel=1e-6), n
        pair = (grads[n] * norm.dualize(raw[n]).double()).sum().item()
        assert row["alignment"] == pytest.approx(pair / ref_dual(row["norm"], grads[n]), abs=1e-4), n


# --- zero cost between intervals -----------------------------------------------------------


def test_nothing_of_the_monitor_runs_between_intervals(monkeypatch):
    calls = {k: 0 for k in ("pre", "post", "forward", "finish", "spectral", "value", "dual_value", "grad_spectrum")}

    def counting(key, fn):
        def wrapper(*a, **k):
            calls[key] += 1
            return fn(*a, **k)
        return wrapper

    monkeypatch.setattr(Monitor, "_pre_step", counting("pre", Monitor._pre_step))
    monkeypatch.setattr(Monitor, "_post_step", counting("post", Monitor._post_step))
    monkeypatch.setattr(Monitor, "_finish", counting("finish", Monitor._finish))
    hook_factory = Monitor._forward_hook
    monkeypatch.setattr(Monitor, "_forward_hook", lambda self, name: counting("forward", hook_factory(self, name)))
    monkeypatch.setattr(monitor_mod, "spectral_norm_estimate", counting("spectral", spectral_norm_estimate))
    monkeypatch.setattr(dualtype.norms.Norm, "value", counting("value", dualtype.norms.Norm.value))
    monkeypatch.setattr(dualtype.norms.Norm, "dual_value", counting("dual_value", dualtype.norms.Norm.dual_value))
    monkeypatch.setattr(monitor_mod, "_spectral_duals", counting("grad_spectrum", monitor_mod._spectral_duals))

    model, opt = make(torch.float32)
    mon = Monitor(opt, every=4, activations=True)
    n_layers = 5  # emb, lin1, lin2, conv, head; the root holds the gain
    per_step = []
    for step in range(1, 10):
        before = dict(calls)
        backward(model, step)
        with torch.no_grad():
            model(batch(0)[0])  # an evaluation forward: never counted
        opt.step()
        mon.step()
        opt.zero_grad()
        per_step.append({k: calls[k] - before[k] for k in calls})
    for step, used in enumerate(per_step, 1):
        if step % 4:
            assert not any(used.values()), (step, used)
        else:
            assert used["pre"] == used["post"] == used["finish"] == 1
            assert used["forward"] == 2 * (n_layers + 1)  # the step's and the evaluation's forward
            # weights and updates: the two same-shape buckets of rms->rms are lin2's and lin1's, plus conv
            assert used["spectral"] == 6 and used["value"] > 0
            # gradients: 9 buckets; the spectral ones (lin1, lin2, conv) from one spectrum each
            assert used["grad_spectrum"] == 9 and used["dual_value"] == 6
    assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    assert not any(m._forward_hooks for m in model.modules())


def test_every_one_measures_every_step_and_close_removes_the_hooks():
    model, opt = make()
    mon = Monitor(opt, every=1)
    for step in range(1, 4):
        backward(model, step)
        opt.step()
        assert mon.step()["step"] == step
        opt.zero_grad()
    mon.close()
    assert not opt._optimizer_step_pre_hooks


def test_the_first_step_is_measured_in_the_norms_the_step_used():
    """Without example=, the table comes from the first forward and the optimizer re-reads it
    inside its first step: the head is rms->linf (a row map: alignment exactly 1), not the
    layer-type fallback rms->rms it had when the monitor was armed."""
    torch.manual_seed(0)
    model = Net()
    opt = dualtype.ModularSGD(model)
    mon = Monitor(opt, every=1, activations=True)
    backward(model, 1)
    opt.step()
    record = mon.step()
    assert record["params"]["head.weight"]["norm"] == "rms->linf"
    assert record["params"]["head.weight"]["alignment"] == pytest.approx(1.0, abs=1e-6)
    assert record["activations"]["head"]["role"] == "head"


def test_a_step_that_raises_is_not_measured():
    model, opt = make(torch.float32)
    mon = Monitor(opt, every=1)
    backward(model, 1)
    with torch.no_grad():
        model.lin1.weight.grad[0, 0] = float("nan")
    with pytest.raises(dualtype.NonFiniteError):
        opt.step()
    assert mon.step() is None
    opt.zero_grad()
    backward(model, 2)
    opt.step()
    assert mon.step()["model"]["update"] == pytest.approx(opt.param_groups[0]["lr"], rel=0.02)  # the modular norm: lr


# --- activations, AdamW groups, outputs ---------------------------------------------------


def test_activation_rms_of_the_steps_forward():
    model, opt = make(torch.float32)
    seen = {}
    handle = model.lin2.register_forward_hook(lambda m, a, out: seen.setdefault("lin2", out.detach().clone()))
    mon = Monitor(opt, every=2, activations=True)
    for step in range(1, 3):
        seen.clear()
        backward(model, step)
        opt.step()
        record = mon.step()
        opt.zero_grad()
    handle.remove()
    acts = record["activations"]
    assert set(acts) == {"emb", "lin1", "lin2", "conv", "head", "root"}
    assert acts["lin2"]["role"] == "hidden" and acts["head"]["role"] == "head"
    assert acts["lin2"]["rms"] == pytest.approx(seen["lin2"].pow(2).mean().sqrt().item(), rel=1e-5)


def test_adamw_group_is_reported_but_not_checked_or_aggregated():
    torch.manual_seed(0)
    model = Net()
    dualtype.typed(model)
    hidden = [model.lin1.weight, model.lin2.weight]
    rest = [p for p in model.parameters() if all(p is not h for h in hidden)]
    opt = dualtype.ModularSGD([{"params": hidden}, {"params": rest, "algorithm": "adamw", "lr": 3e-3}], lr=0.05)
    mon = Monitor(opt, every=2)
    for step in range(1, 3):
        backward(model, step)
        opt.step()
        record = mon.step()
        opt.zero_grad()
    emb = record["params"]["emb.weight"]
    assert emb["algorithm"] == "adamw" and emb["update_ratio"] is None and emb["alignment"] is None
    assert emb["update"] > 0 and emb["momentum_cos"] is not None
    assert record["model"]["count"] == 2
    assert record["model"]["update"] == pytest.approx(0.05, rel=0.02)


def test_jsonl_csv_tensorboard_and_plot(tmp_path):
    class Writer:
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, value, step))

    writer = Writer()
    model, opt = make(torch.float32)
    path = tmp_path / "sub" / "stats.jsonl"
    with Monitor(opt, every=2, path=path, writer=writer, activations=True) as mon:
        for step in range(1, 7):
            backward(model, step)
            opt.step()
            mon.step()
            opt.zero_grad()
    records = monitor_mod.load(path)
    assert [r["step"] for r in records] == [2, 4, 6] == [r["step"] for r in mon.records]
    assert json.loads(json.dumps(mon.records)) == records
    lines = (tmp_path / "sub" / "stats.csv").read_text().splitlines()
    assert lines[0].startswith("step,scope,name,role,norm,target,weight,update")
    assert sum(line.startswith("4,param,lin2.weight,hidden,rms->rms") for line in lines) == 1
    assert ("update_ratio/param/lin2.weight", records[0]["params"]["lin2.weight"]["update_ratio"], 2) in writer.scalars
    assert any(tag == "rms/activation/lin2" for tag, _, _ in writer.scalars)
    pytest.importorskip("matplotlib")
    fig = monitor_mod.plot(path, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 10_000
    assert len(fig.axes) == 4 * 6  # weight, update ratio, alignment, activation RMS × 6 roles


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    ({"every": 0}, "every must be an integer ≥ 1"),
    ({"every": 2.5}, "every must be an integer ≥ 1"),
    ({"every": True}, "every must be an integer ≥ 1"),
    ({"spectral": "power"}, "spectral must be 'lanczos' or 'exact'"),
    ({"spectral_steps": 0}, "spectral_steps must be an integer ≥ 1"),
    ({"update_tol": -1}, "update_tol must be a number > 0 or None"),
    ({"model": "net"}, "model must be an nn.Module"),
])
def test_bad_settings_raise_config_errors(kwargs, match):
    _, opt = make()
    with pytest.raises(dualtype.ConfigError, match=match) as e:
        Monitor(opt, **kwargs)
    assert not isinstance(e.value, TypeError)


@pytest.mark.parametrize("opt", [torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), "opt", None])
def test_not_a_dualtype_optimizer(opt):
    with pytest.raises(dualtype.ConfigError, match="Monitor needs a dualtype optimizer") as e:
        Monitor(opt)
    assert not isinstance(e.value, TypeError)


def test_activations_need_a_model_and_plot_needs_records():
    opt = dualtype.ModularSGD([torch.nn.Parameter(torch.randn(3, 3))])
    with pytest.raises(dualtype.ConfigError, match="needs the model"):
        Monitor(opt, activations=True)
    with pytest.raises(dualtype.ConfigError, match="no records"):
        monitor_mod.plot([])
    with pytest.raises(dualtype.ConfigError, match="unknown statistic"):
        monitor_mod.plot([{"step": 1, "params": {}}], stats=("loss",))


def test_writer_directory_without_tensorboard(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    _, opt = make()
    with pytest.raises(dualtype.ConfigError, match="pip install tensorboard"):
        Monitor(opt, every=1, writer=tmp_path / "tb")
    with pytest.raises(dualtype.ConfigError, match="SummaryWriter or a log directory"):
        Monitor(opt, every=1, writer=3)


# --- distributed: 2 gloo processes, statistics reduced, rank 0 writes ----------------------


def _monitored_run(rank: int, world: int, tmp: str, mode: str | None) -> dict:
    """Train the distributed tests' Net 4 steps with a Monitor (every=2); ``mode`` None is the
    single-process reference on the whole batch."""
    import os

    from test_distributed import LR, NORMS, batch as dist_batch, make_net

    model = make_net()
    wrapped = model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapped = DDP(model)
    elif mode == "fsdp2":
        from torch.distributed.fsdp import fully_shard

        fully_shard(model.lin2)
        fully_shard(model)
    if mode is None:
        opt = dualtype.ModularSGD(model, lr=LR, norms=NORMS, modular=False)
    else:
        from dualtype.distributed import DistributedModularSGD

        opt = DistributedModularSGD(wrapped, lr=LR, norms=NORMS, modular=False)
    mon = Monitor(opt, every=2, path=os.path.join(tmp, f"stats{rank}.jsonl"), model=wrapped, activations=True)
    for s in range(4):
        x, y = dist_batch(s)
        x, y = x.chunk(world)[rank], y.chunk(world)[rank]
        nn.functional.cross_entropy(wrapped(x), y).backward()
        opt.step()
        mon.step()
        opt.zero_grad()
    mon.close()
    del wrapped
    return {"records": mon.records, "files": sorted(os.listdir(tmp))}


def _close(a, b, path: str = "") -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            if k != "time":
                _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, float) and isinstance(b, float):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6), path
    else:
        assert a == b, path


@pytest.mark.parametrize("mode", ["ddp", "fsdp2"])
def test_distributed_statistics_are_reduced_and_only_rank_0_writes(tmp_path, mode):
    import torch.distributed as dist

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    from test_distributed import launch

    (tmp_path / "ref").mkdir()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = _monitored_run(0, 1, str(tmp_path / "ref"), None)["records"]
    finally:
        torch.set_num_threads(threads)
    ranks = launch(_monitored_run, tmp_path, mode)
    assert [r["step"] for r in ref] == [2, 4]
    for r in ranks:
        for got, want in zip(r["records"], ref):
            _close(got, want)
    # rank 1 wrote nothing: only rank 0's files exist (JSONL and CSV)
    assert [f for f in ranks[1]["files"] if f.startswith("stats")] == ["stats0.csv", "stats0.jsonl"]
