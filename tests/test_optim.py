"""Specification of dualtype.optim.ModularSGD."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

import dualtype
from dualtype import norms as N
from dualtype.errors import ConfigError, DualityError, NonFiniteError
from dualtype.optim import DualizeItem, ModularSGD
from dualtype.tensor import DualTensor, PrimalTensor


@pytest.fixture(autouse=True)
def _one_thread():
    # These models are tiny: one thread avoids oversubscription on a shared machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(12, 16)
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 12, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.emb(x)
        h = torch.relu(self.a(h))
        h = torch.relu(self.b(h))
        return self.head(self.norm(h))


def _data(n: int = 64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 12, (n,), generator=g)
    return x, (x * 5 + 3) % 12


def _loss(model: nn.Module, x, y) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def _train(model: nn.Module, opt, steps: int, sched=None, seed: int = 0) -> list[float]:
    losses = []
    for i in range(steps):
        x, y = _data(seed=seed + i)
        loss = _loss(model, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        losses.append(loss.item())
    return losses


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _backward(model: nn.Module, seed: int = 0) -> None:
    x, y = _data(seed=seed)
    _loss(model, x, y).backward()


# --- training ---------------------------------------------------------------------------------


def test_tiny_model_loss_decreases():
    model = Tiny()
    opt = ModularSGD(model, lr=0.05, modular=False)
    losses = _train(model, opt, 60)
    assert losses[-1] < 0.2 * losses[0]


def test_momentum_buffer_stays_dual():
    model = Tiny()
    opt = ModularSGD(model, lr=0.05, modular=False)
    _train(model, opt, 2)
    for group in opt.param_groups:
        for p, norm in zip(group["params"], group["norms"]):
            buf = opt.state[p]["momentum_buffer"]
            assert isinstance(buf, DualTensor)
            assert dualtype.norm_of(buf) == N.get(norm)


def test_conv_model_trains_with_conv2d_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))
    opt = ModularSGD(model, lr=0.2, modular=False)
    assert opt.param_groups[0]["norms"][0] == "conv2d"
    x = torch.randn(64, 1, 4, 4)
    y = (x[:, 0, :2].sum((1, 2)) > 0).long() + (x[:, 0, 2:].sum((1, 2)) > 0).long()
    first = None
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first


# --- the update rule --------------------------------------------------------------------------


@pytest.mark.parametrize("nesterov", [True, False])
def test_update_equals_hand_computed_dualize(nesterov):
    torch.manual_seed(1)
    model = Tiny()
    targets = {"emb.weight": 0.5, "head.weight": 2.0}
    lr, beta, wd = 0.03, 0.9, 0.1
    opt = ModularSGD(model, lr=lr, momentum=beta, nesterov=nesterov, weight_decay=wd,
                     modular=False, targets=targets, batched=False)
    named = dict(model.named_parameters())
    bufs = {n: torch.zeros_like(p) for n, p in named.items()}
    for step in range(3):
        before = _snapshot(model)
        _backward(model, seed=step)
        grads = {n: p.grad.detach().clone() for n, p in named.items()}
        opt.step()
        opt.zero_grad()
        for n, p in named.items():
            g = grads[n]
            bufs[n] = beta * bufs[n] + (1 - beta) * g
            u = (1 - beta) * g + beta * bufs[n] if nesterov else bufs[n]
            norm_name = opt.param_groups[0]["norms"][opt.param_groups[0]["names"].index(n)]
            t = targets.get(n, 1.0)
            d = dualtype.dualize(u, norm_name, scale=lr * t)
            decay = lr * wd if N.get(norm_name).decays else 0.0  # hidden and conv maps only
            expected = (1 - decay) * before[n] - d.as_subclass(torch.Tensor)
            torch.testing.assert_close(p.detach(), expected, rtol=1e-6, atol=1e-6, msg=n)


def test_step_size_is_lr_times_target_in_each_norm():
    torch.manual_seed(2)
    model = Tiny()
    opt = ModularSGD(model, lr=0.01, momentum=0.0, weight_decay=0.0, modular=False, method="svd",
                     targets={"head.weight": 3.0})
    before = _snapshot(model)
    _backward(model)
    opt.step()
    for p, name, norm, t in zip(*(opt.param_groups[0][k] for k in ("params", "names", "norms", "targets"))):
        delta = before[name] - p.detach()
        assert math.isclose(N.get(norm).value(delta).item(), 0.01 * t, rel_tol=1e-4), name


def test_decoupled_weight_decay_with_zero_gradient():
    p = nn.Parameter(torch.randn(4, 3))
    opt = ModularSGD([p], lr=0.1, weight_decay=0.5)
    before = p.detach().clone()
    p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(p.detach(), before * (1 - 0.05), rtol=0, atol=0)


def test_weight_decay_shrinks_hidden_and_conv_weights_only():
    """Decay applies where the norm decays (rms->rms, conv): embeddings, head, gains and biases
    keep their initialization's scale (docs/design.md §1 "Weight decay")."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Conv1d(8, 8, 3, padding=1))
    model.append(nn.Linear(8, 10))
    lr, wd = 0.1, 0.5
    norms = {"0.weight": "l1->rms", "1.weight": "rms->rms", "1.bias": "rms", "2.weight": "rms", "2.bias": "rms",
             "3.weight": "conv1d", "3.bias": "rms", "4.weight": "rms->linf", "4.bias": "rms"}
    opt = ModularSGD(model, lr=lr, weight_decay=wd, norms=norms)
    before = _snapshot(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        factor = 1 - lr * wd if norms[name] in ("rms->rms", "conv1d") else 1.0
        torch.testing.assert_close(p.detach(), before[name] * factor, rtol=0, atol=0, msg=name)


def test_weight_decay_bounds_a_hidden_weight_by_target_over_wd():
    """p ← (1 − lr·wd)·p − lr·t·u with ‖u‖ = 1 keeps ‖p‖ ≤ max(‖p₀‖, t/wd): the fixed point."""
    torch.manual_seed(5)
    p = nn.Parameter(torch.randn(6, 4) * 0.01)
    lr, wd, t = 0.2, 0.5, 0.3
    opt = ModularSGD([p], lr=lr, momentum=0.0, weight_decay=wd, targets=t, method="svd")
    fixed = torch.randn(6, 4)
    for _ in range(200):  # the same gradient every step: the weight runs to the bound
        p.grad = fixed.clone()
        opt.step()
    size = N.get("rms->rms").value(p.detach()).item()
    assert size <= t / wd * (1 + 1e-5)
    assert size == pytest.approx(t / wd, rel=1e-3)  # reached: the bound is tight


def test_batched_dualize_equals_per_parameter():
    torch.manual_seed(3)
    shapes = [(16, 16), (16, 16), (16, 16), (32, 16), (32, 16), (12, 16)]
    params = [nn.Parameter(torch.randn(s)) for s in shapes]
    norm_of = {id(params[-1]): "rms->linf"}
    opt = ModularSGD([(f"p{i}", p) for i, p in enumerate(params)], lr=0.1,
                     norms={params[-1]: "rms->linf"})
    items = []
    for i, p in enumerate(params):
        norm = N.get(norm_of.get(id(p), "rms->rms"))
        g = dualtype.dual(torch.randn(p.shape), norm, f"p{i}")
        items.append(DualizeItem(p, g, norm, 0.1 * (i + 1)))
    opt.batched = True
    batched = opt._dualize(items)
    opt.batched = False
    single = opt._dualize(items)
    for it, b, s in zip(items, batched, single):
        assert isinstance(b, PrimalTensor) and dualtype.norm_of(b) == it.norm
        torch.testing.assert_close(b.as_subclass(torch.Tensor), s.as_subclass(torch.Tensor),
                                   rtol=1e-5, atol=1e-6)
        by_hand = dualtype.dualize(it.update, scale=it.scale)
        torch.testing.assert_close(s.as_subclass(torch.Tensor), by_hand.as_subclass(torch.Tensor))


def test_same_shape_parameters_take_one_kernel_call(monkeypatch):
    torch.manual_seed(4)
    model = nn.Sequential(*[nn.Linear(8, 8, bias=False) for _ in range(5)])
    opt = ModularSGD(model, lr=0.1, modular=False)
    calls = []
    real = ModularSGD._dualize_batch

    def spy(self, items):
        calls.append(len(items))
        return real(self, items)

    monkeypatch.setattr(ModularSGD, "_dualize_batch", spy)
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    assert calls == [4, 1]  # four hidden 8×8 matrices in one call; the last Linear is the head


# --- resume -----------------------------------------------------------------------------------


def test_resume_from_state_dict_is_bit_identical():
    torch.manual_seed(5)
    ref = Tiny()
    start = copy.deepcopy(ref.state_dict())

    def make(model):
        opt = ModularSGD(model, lr=0.05, momentum=0.9, weight_decay=0.01, modular=False)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        return opt, sched

    opt, sched = make(ref)
    _train(ref, opt, 10, sched)

    first = Tiny()
    first.load_state_dict(start)
    opt1, sched1 = make(first)
    _train(first, opt1, 4, sched1)
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": opt1.state_dict(),
                "sched": sched1.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)

    resumed = Tiny()
    resumed.load_state_dict(ckpt["model"])
    opt2, sched2 = make(resumed)
    opt2.load_state_dict(ckpt["opt"])
    sched2.load_state_dict(ckpt["sched"])
    _train(resumed, opt2, 6, sched2, seed=4)
    for (k, a), b in zip(ref.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    for p_ref, p_res in zip(ref.parameters(), resumed.parameters()):
        assert torch.equal(opt.state[p_ref]["momentum_buffer"], opt2.state[p_res]["momentum_buffer"])
        assert isinstance(opt2.state[p_res]["momentum_buffer"], DualTensor)


def test_state_dict_records_norms_and_targets():
    model = Tiny()
    opt = ModularSGD(model, lr=0.05, modular=False, targets={"head.weight": 2.0})
    sd = opt.state_dict()["param_groups"][0]
    assert sd["names"][sd["norms"].index("l1->rms")] == "emb.weight"
    assert sd["targets"][sd["names"].index("head.weight")] == 2.0


# --- schedulers and groups --------------------------------------------------------------------


def _update_norm(model, opt, name: str, seed: int) -> float:
    p = dict(model.named_parameters())[name]
    before = p.detach().clone()
    opt.zero_grad()
    _backward(model, seed)
    opt.step()
    return N.RMSToRMS().value(before - p.detach()).item()


def test_scheduler_changes_the_measured_step_size():
    torch.manual_seed(6)
    model = Tiny()
    opt = ModularSGD(model, lr=0.02, momentum=0.5, weight_decay=0.0, modular=False, method="svd")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)
    sizes = []
    for i in range(5):
        sizes.append(_update_norm(model, opt, "a.weight", i))
        sched.step()
    expected = [0.02, 0.02, 0.002, 0.002, 0.0002]
    for got, want in zip(sizes, expected):
        assert math.isclose(got, want, rel_tol=1e-4)


def test_param_groups_with_different_lr():
    torch.manual_seed(7)
    model = Tiny()
    opt = ModularSGD([{"params": list(model.a.parameters()), "lr": 0.1},
                      {"params": list(model.b.parameters()), "lr": 0.01, "targets": 0.5},
                      {"params": [model.emb.weight, model.head.weight, *model.norm.parameters()]}],
                     lr=0.001, momentum=0.0, weight_decay=0.0, method="svd")
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01, 0.001]
    assert opt.param_groups[2]["norms"][0] == "rms->rms"  # untyped 2-D without names
    assert math.isclose(_update_norm(model, opt, "a.weight", 0), 0.1, rel_tol=1e-4)
    assert math.isclose(_update_norm(model, opt, "b.weight", 1), 0.005, rel_tol=1e-4)


def test_plain_named_parameters_with_norms_mapping():
    model = Tiny()
    opt = ModularSGD(model.named_parameters(), lr=0.01,
                     norms={"emb.weight": "embedding", "head.weight": "head", "*.bias": "l2"})
    table = dict(zip(opt.param_groups[0]["names"], opt.param_groups[0]["norms"]))
    assert table["emb.weight"] == "l1->rms" and table["head.weight"] == "rms->linf"
    assert table["a.bias"] == "l2" and table["a.weight"] == "rms->rms"
    _backward(model)
    opt.step()  # untyped grads are declared Dual[norm] by the optimizer


def test_model_typed_by_the_user_keeps_its_norms():
    model = Tiny()
    dualtype.typed(model, norms={"head.weight": "rms->linf"})
    opt = ModularSGD(model, lr=0.01, modular=False)
    table = dict(zip(opt.param_groups[0]["names"], opt.param_groups[0]["norms"]))
    assert table["head.weight"] == "rms->linf"


def test_modular_targets_are_adopted_when_available():
    model = Tiny()
    mod = dualtype.modular(model)
    opt = ModularSGD(model, lr=0.1, modular=mod)
    g = opt.param_groups[0]
    assert dict(zip(g["names"], g["targets"])) == pytest.approx(mod.targets)
    assert dict(zip(g["names"], g["norms"])) == {k: v.name for k, v in mod.norms.items()}


# --- zero_grad --------------------------------------------------------------------------------


def test_zero_grad():
    model = Tiny()
    opt = ModularSGD(model, lr=0.01, modular=False)
    _backward(model)
    assert all(isinstance(p.grad, DualTensor) for p in model.parameters())
    opt.zero_grad(set_to_none=False)
    for p in model.parameters():
        assert isinstance(p.grad, DualTensor) and not p.grad.any()
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


# --- safety -----------------------------------------------------------------------------------


def test_raw_gradient_applied_by_user_code_raises():
    model = Tiny()
    opt = ModularSGD(model, lr=0.01, modular=False)
    _backward(model)
    opt.step()
    w = model.a.weight
    with pytest.raises(DualityError, match="a.weight"):
        w.data -= 0.01 * w.grad  # noqa: DTL001 (the error is the point)
    with pytest.raises(DualityError):
        with torch.no_grad():
            w.sub_(w.grad, alpha=0.01)  # noqa: DTL002 (the error is the point)
    with pytest.raises(DualityError):
        with torch.no_grad():
            w.add_(opt.state[w]["momentum_buffer"], alpha=-0.01)


def test_nan_gradient_raises_and_changes_nothing():
    model = Tiny()
    opt = ModularSGD(model, lr=0.05, modular=False)
    _train(model, opt, 2)
    weights = _snapshot(model)
    bufs = {n: opt.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    _backward(model, seed=9)
    model.b.weight.grad[0, 0] = float("nan")  # a later bucket than a.weight's
    model.head.weight.grad[1, 1] = float("inf")
    with pytest.raises(NonFiniteError, match="b.weight"):
        opt.step()
    for k, v in model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for n, p in model.named_parameters():
        assert torch.equal(opt.state[p]["momentum_buffer"], bufs[n]), n


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(lr=-0.1), "lr must be"),
        (dict(lr=float("nan")), "lr must be"),
        (dict(momentum=1.0), "momentum must be in \\[0, 1\\)"),
        (dict(momentum=-0.1), "momentum"),
        (dict(weight_decay=-1e-4), "weight_decay must be"),
        (dict(norms={"a.weight": "spectrall"}), "unknown norm 'spectrall'"),
        (dict(targets={"a.weight": -1.0}), "target of 'a.weight'"),
        (dict(method="qr"), "unknown orthogonalization method"),
    ],
)
def test_bad_hyper_parameters_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModularSGD(Tiny(), **{"lr": 0.01, "modular": False, **kwargs})


def test_bad_param_group_raises_config_error():
    model = Tiny()
    opt = ModularSGD(list(model.a.parameters()), lr=0.01)
    with pytest.raises(ConfigError, match="param group 1: lr"):
        opt.add_param_group({"params": list(model.b.parameters()), "lr": -1.0})
    with pytest.raises(ConfigError, match="single tensor"):
        ModularSGD(model.a.weight, lr=0.01)
    with pytest.raises(ConfigError, match="empty"):
        ModularSGD([], lr=0.01)


def test_norm_contradicting_the_typed_model_is_refused():
    model = Tiny()
    dualtype.typed(model)
    with pytest.raises(ConfigError, match="typed with norm"):
        ModularSGD(model.named_parameters(), lr=0.01, norms={"a.weight": "l2"})


@pytest.mark.slow
def test_compiled_step_matches_eager():
    torch.manual_seed(8)
    eager, comp = Tiny(), Tiny()
    comp.load_state_dict(eager.state_dict())
    opt_e = ModularSGD(eager, lr=0.05, modular=False)
    opt_c = ModularSGD(comp, lr=0.05, modular=False, compile=True)
    for i in range(3):
        for model, opt in ((eager, opt_e), (comp, opt_c)):
            opt.zero_grad()
            _backward(model, seed=i)
            opt.step()
    for a, b in zip(eager.parameters(), comp.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert isinstance(opt_c.state[comp.a.weight]["momentum_buffer"], DualTensor)


def test_compile_option_is_validated():
    with pytest.raises(ConfigError, match="compile must be"):
        ModularSGD(Tiny(), lr=0.01, modular=False, compile="yes")


def test_repr_is_the_table_of_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    text = repr(ModularSGD(model, lr=0.1, modular=False))
    assert text.startswith("ModularSGD: 4 parameter tensors in 1 group(s)")
    assert "0.weight" in text and "rms->rms" in text and "1.weight" in text


def test_groups_with_different_methods_are_dualized_apart(monkeypatch):
    a, b = nn.Parameter(torch.randn(6, 6)), nn.Parameter(torch.randn(6, 6))
    opt = ModularSGD([{"params": [("a", a)], "method": "svd"}, {"params": [("b", b)], "method": "quintic"}],
                     norms={"a": "rms->rms", "b": "rms->rms"})
    seen = []
    real = ModularSGD._dualize_batch
    monkeypatch.setattr(ModularSGD, "_dualize_batch",
                        lambda self, items: seen.append([self._methods()[id(it.param)] for it in items])
                        or real(self, items))
    a.grad, b.grad = torch.randn(6, 6), torch.randn(6, 6)
    opt.step()
    assert sorted(seen) == [["quintic"], ["svd"]]
