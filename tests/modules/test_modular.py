"""``modular(model)`` on existing torch models: the right norm and role per parameter,
pattern overrides, targets consistent with the module-level modular dualize, the optimizer
contract (update = lr·targets[p]·norms[p].dualize(g)), typed integration and the table."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dualtype
from dualtype.errors import ConfigError, ShapeError
from dualtype.modules import MLP, GPT, Linear, ReLU, modular
from dualtype.norms import get as get_norm
from dualtype.roles import ROLE_MASSES, types_of
from dualtype.tensor import PrimalTensor

from .helpers import F64, inner, ref_dual, ref_dualize_norm

H = ROLE_MASSES["head"]  # the head's mass in a plain torch model's table


def seq_mlp(bias: bool = True) -> nn.Module:
    return nn.Sequential(nn.Linear(5, 8, bias=bias), nn.ReLU(), nn.Linear(8, 8, bias=bias), nn.ReLU(),
                         nn.Linear(8, 3, bias=bias))


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (t.view(B, T, self.heads, -1).transpose(1, 2) for t in (q, k, v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, d)
        x = x + self.proj(a)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(nn.Module):
    """A hand-written GPT: token embedding module, raw positional parameter, LayerNorms."""

    def __init__(self, vocab=13, d=8, heads=2, layers=2, context=6, tied=False) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Parameter(0.02 * torch.randn(context, d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        x = self.wte(idx) + self.wpe[: idx.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )


def roles(mn):
    return {r.name: (r.role, str(r.norm)) for r in mn}


def _check_duality(mn, model, seed=0):
    """Targets are the modular dualize: per parameter targets·dualize_norm(g) (reference),
    modular norm = total target, pairing = target·dual norm (reference formula)."""
    g = torch.Generator().manual_seed(seed)
    grads = {n: torch.randn(p.shape, generator=g, dtype=F64) for n, p in model.named_parameters()}
    d = mn.dualize(grads, method="svd")
    for r in mn:
        assert isinstance(d[r.name], PrimalTensor)
        expect = r.target * ref_dualize_norm(str(r.norm), grads[r.name])
        torch.testing.assert_close(d[r.name].as_subclass(torch.Tensor), expect, rtol=1e-7, atol=1e-10)
        # the optimizer contract: lr·targets[p]·norms[p].dualize(g) is this same tensor
        via_contract = mn.targets[r.name] * mn.norms[r.name].dualize(grads[r.name], method="svd")
        torch.testing.assert_close(via_contract, expect, rtol=1e-7, atol=1e-10)
    dual = sum(r.target / mn.target * ref_dual(str(r.norm), grads[r.name]) for r in mn if r.target > 0)
    assert float(mn.dual_norm(grads)) == pytest.approx(float(dual), rel=1e-9)
    assert float(mn.norm({k: v.as_subclass(torch.Tensor) for k, v in d.items()})) == pytest.approx(mn.target, rel=1e-9)
    assert float(inner(list(grads.values()), list(d.values()))) == pytest.approx(mn.target * float(dual), rel=1e-9)


X5 = torch.randn(2, 5, dtype=F64)


def test_sequential_mlp_roles_norms_targets():
    model = seq_mlp().double()
    mn = modular(model, example=X5)
    assert roles(mn) == {
        "0.weight": ("hidden", "rms->rms"), "0.bias": ("bias", "rms"),
        "2.weight": ("hidden", "rms->rms"), "2.bias": ("bias", "rms"),
        "4.weight": ("head", "rms->linf"), "4.bias": ("bias", "rms"),
    }
    # a chain of three layers, masses 1, 1, H (a bias sits beside its weight): M = 2 + H
    mass = {"0.weight": 1, "2.weight": 1, "4.weight": H}
    assert mn.targets == pytest.approx({n: mass.get(n, 0.1) / (2 + H) for n in mn.targets})
    assert {r.source for r in mn} == {"graph"}
    _check_duality(mn, model)


def test_sequential_targets_match_the_dualtype_module():
    """Same architecture both ways: nn.Sequential (bias-free) vs dualtype MLP."""
    torch.manual_seed(0)
    model, ours = seq_mlp(bias=False).double(), MLP(5, 8, 3, depth=3, head=True).double()
    mn = modular(model, masses={"4.weight": 1.0}, example=X5)  # dualtype's Head atom has mass 1
    assert list(mn.targets.values()) == pytest.approx(ours.coefficients())
    assert [str(r.norm) for r in mn] == [str(t.norm) for t in ours.terms()]
    grads = [torch.randn(p.shape, dtype=F64) for p in ours.parameters()]
    a = mn.dualize(dict(zip(mn.targets, grads)), method="svd")
    b = ours.dualize(grads, method="svd")
    for x, y in zip(a.values(), b):
        torch.testing.assert_close(x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor))
    assert float(mn.dual_norm(dict(zip(mn.targets, grads)))) == pytest.approx(float(ours.dual_norm(grads)))
    ws = [p.detach() for p in ours.parameters()]
    assert float(mn.norm(ws)) == pytest.approx(float(ours.norm(ws)))


def test_overrides_by_pattern():
    model = seq_mlp().double()
    mn = modular(model, masses={"*.bias": 0.0, "0.weight": 2.0}, sensitivities={"0.*": 4.0}, target=0.3,
                 example=X5)
    r = {x.name: x for x in mn}
    assert all(r[n].target == 0 for n in r if n.endswith("bias"))
    # M = 2 + 1 + H; target_p = 0.3·(m_p/M)/S_p
    assert r["0.weight"].target == pytest.approx(0.3 * (2 / (3 + H)) / 4)
    assert r["2.weight"].target == pytest.approx(0.3 * (1 / (3 + H)))
    assert r["0.weight"].source == "graph"
    _check_duality(mn, model, seed=1)
    assert roles(modular(model, head=False))["4.weight"] == ("hidden", "rms->rms")
    assert roles(modular(model, head="2"))["2.weight"] == ("head", "rms->linf")
    declared = modular(model, norms={"*.bias": "l2"})
    assert declared["0.bias"].norm == get_norm("l2") and declared["0.bias"].source == "declared"
    # a matrix norm that contradicts the graph is an error that names the parameter and the fix
    with pytest.raises(dualtype.NormMismatchError, match=r"'2\.weight' declared rms->linf.*hidden features.*use rms->rms"):
        modular(model, norms={"2.weight": "rms->linf", "4.weight": "rms->linf"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"masses": {"nope.*": 1.0}},
        {"norms": {"nothing": "l2"}},
        {"masses": {"*.bias": -1.0}},
        {"sensitivities": {"*": 0.0}},
        {"norms": {"0.weight": "not-a-norm"}},
        {"head": "missing"},
        {"sensitivities": {"nothing": 2.0}},
        {"target": -1.0},
        {"target": 0.0},
    ],
)
def test_bad_overrides_rejected(kwargs):
    with pytest.raises(ConfigError):
        modular(seq_mlp(), **kwargs)


def test_norm_that_does_not_fit_the_parameter_rejected():
    with pytest.raises(ShapeError, match="0.bias"):  # a 1-D bias cannot carry a matrix norm
        modular(seq_mlp(), norms={"0.bias": "rms->rms"})


IDX = torch.randint(13, (2, 6), generator=torch.Generator().manual_seed(0))


def test_hand_written_gpt():
    torch.manual_seed(0)
    model = TinyGPT().double()
    mn = modular(model, example=IDX)
    r = roles(mn)
    assert r["wte.weight"] == ("embedding", "l1->rms")
    assert r["wpe"] == ("embedding", "l1->rms")  # a raw table sliced by position
    assert r["blocks.0.ln1.weight"] == ("gain", "rms") and r["blocks.0.ln1.bias"] == ("bias", "rms")
    assert r["blocks.1.qkv.weight"] == ("hidden", "rms->rms") and r["blocks.1.qkv.bias"] == ("bias", "rms")
    assert r["blocks.1.out.weight"] == ("hidden", "rms->rms")
    assert r["ln_f.weight"] == ("gain", "rms")
    assert r["lm_head.weight"] == ("head", "rms->linf")
    assert sum(1 for v in r.values() if v[0] == "head") == 1
    assert len(mn) == len(list(model.parameters()))
    # main path: tables (0.1) → residual body (BODY_MASS 2) → ln_f (0.1) → head (H): M = 2.2 + H;
    # each branch (LayerNorm 0.1 → matrix 1 → matrix 1, M = 2.1) gets the body's share 2/M
    t, M = mn.targets, 2.2 + H
    assert t["wte.weight"] == pytest.approx(0.1 / M) and t["wpe"] == pytest.approx(0.1 / M)
    assert t["lm_head.weight"] == pytest.approx(H / M) and t["ln_f.bias"] == pytest.approx(0.1 / M)
    for name in ("blocks.0.qkv.weight", "blocks.1.proj.weight", "blocks.1.fc.weight"):
        assert t[name] == pytest.approx(2 / M / 2.1)
    assert t["blocks.0.out.weight"] == pytest.approx(2 / M / 2.1 * 2)  # narrows 4d → d: ×√4
    assert t["blocks.1.ln2.weight"] == pytest.approx(2 / M * 0.1 / 2.1)
    _check_duality(mn, model)
    # typed + real backward: tagged grads go through the door into PrimalTensors
    handle = dualtype.typed(model, norms=mn.norms)
    idx = torch.randint(13, (2, 6))
    F.cross_entropy(model(idx).flatten(0, 1), torch.randint(13, (12,))).backward()
    d = mn.dualize(method="svd")
    assert all(isinstance(u, PrimalTensor) for u in d.values())
    with torch.no_grad():
        for name, p in model.named_parameters():
            p -= 0.01 * d[name]
    handle.remove()


def test_depth_does_not_change_targets():
    """The residual body is one unit: a deeper model keeps every step size."""
    shallow = modular(TinyGPT(layers=2), example=IDX).targets
    deep = modular(TinyGPT(layers=6), example=IDX).targets
    for name, t in shallow.items():
        assert deep[name] == pytest.approx(t), name


def test_tied_head_is_one_parameter_with_both_uses():
    model = TinyGPT(tied=True)
    mn = modular(model, example=IDX)
    row = mn["wte.weight"]
    assert "lm_head.weight" not in roles(mn) and (row.role, str(row.norm)) == ("embedding", "l1->rms")
    assert types_of(model).table["wte.weight"].uses == ("embedding", "head")
    assert len(mn) == len(list(model.parameters()))


def test_small_cnn():
    model = small_cnn().double()
    mn = modular(model, masses={"1.*": 0.1}, example=torch.randn(2, 3, 6, 6, dtype=F64))
    r = roles(mn)
    assert r["0.weight"] == ("conv", "conv2d") and r["3.weight"] == ("conv", "conv2d")
    assert r["0.bias"] == ("bias", "rms") and r["1.weight"] == ("gain", "rms") and r["1.bias"] == ("bias", "rms")
    assert r["7.weight"] == ("head", "rms->linf")
    M = 1 + 0.1 + 1 + H  # conv → BatchNorm → conv → head
    assert mn["0.weight"].target == pytest.approx(1 / M) and mn["1.weight"].target == pytest.approx(0.1 / M)
    _check_duality(mn, model)
    model(torch.randn(2, 3, 6, 6, dtype=F64)).sum().backward()  # the model still trains as usual


def test_dualtype_module_uses_its_own_structure_and_stays_fresh():
    a = Linear(4, 6)
    net = (Linear(6, 3) @ ReLU() @ a).double()
    mn = modular(net, target=2.0)
    assert list(mn.targets.values()) == pytest.approx(net.coefficients(2.0))
    grads = [torch.randn(p.shape, dtype=F64) for p in net.parameters()]
    for x, y in zip(mn.dualize(dict(zip(mn.targets, grads)), method="svd").values(), net.dualize(grads, 2.0, "svd")):
        torch.testing.assert_close(x.as_subclass(torch.Tensor), y.as_subclass(torch.Tensor))
    a.mass = 3.0  # re-weighting after the fact is reflected
    assert list(mn.targets.values()) == pytest.approx([2 * 3 / 4, 2 * 1 / 4])
    with pytest.raises(ConfigError):
        modular(net, masses={"*": 1.0})
    gpt = GPT(vocab=7, d_model=8, heads=2, layers=1, context=4)
    r = roles(modular(gpt))
    assert r["embed.inner.token.weight"] == ("embedding", "l1->rms") and r["head.weight"] == ("head", "rms->linf")


def test_table_is_readable():
    mn = modular(TinyGPT(), example=IDX)
    text = str(mn)
    assert text == mn.table()
    lines = text.splitlines()
    assert "name" in lines[2] and "norm" in lines[2] and "target" in lines[2] and "from" in lines[2]
    for r in mn:
        assert any(line.startswith(r.name + " ") and line.rstrip().endswith("graph") for line in lines)
    assert "TinyGPT" in lines[0] and "total mass" in lines[0]
    assert "ModularNorm" in repr(mn)


def test_other_parameter_kinds_without_a_forward_fall_back_to_layer_types():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1d = nn.Conv1d(2, 3, 3)
            self.scale = nn.Parameter(torch.ones(4))
            self.mat = nn.Parameter(torch.randn(3, 4))
            self.lin = nn.Linear(4, 2)
            self.t = nn.Parameter(torch.tensor(1.0))  # a learnable temperature: 0-D

    mn = modular(Odd())
    r = roles(mn)
    assert r["conv1d.weight"] == ("conv", "conv1d") and r["conv1d.bias"] == ("bias", "rms")
    assert r["scale"] == ("gain", "rms") and r["mat"] == ("hidden", "rms->rms") and r["t"] == ("gain", "rms")
    assert r["lin.weight"] == ("hidden", "rms->rms")  # no forward seen: no head either
    assert {x.source for x in mn} == {"fallback"}
    # no structure: one chain of the three matrices (gains and biases beside them)
    assert mn["scale"].target == pytest.approx(0.1 / 3)
    # mat narrows 4 → 3 and lin 4 → 2: √(in/out) times their share
    assert mn["mat"].target == pytest.approx((4 / 3) ** 0.5 / 3) and mn["lin.weight"].target == pytest.approx(2 ** 0.5 / 3)
    with pytest.raises(ConfigError):
        modular("not a module")  # type: ignore[arg-type]
