"""The one table (dualtype.roles): structure read from a recorded forward, checked against
answers computed by hand from the modular norm's composition rule (docs/design.md §3).

Masses (dualtype.roles): hidden and conv 1, the head H = 2; embeddings, gains and biases
0.1; a residual body 2. A layer's target is m / M with M the largest path mass through it; a
layer inside a residual branch gets (2 / M_body) · m / M_branch; a hidden matrix that
narrows (out < in) takes √(in/out)× that.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dualtype
from dualtype import ConfigError, NormMismatchError, norm_of
from dualtype.norms import get as N
from dualtype.optim import ModularSGD
from dualtype.roles import BODY_MASS, ROLE_MASSES, types_of
from helpers import snapshot

H = ROLE_MASSES["head"]


def rows(model, *example):
    table = dualtype.check(model, *example, show=False)
    return {r.name: (r.role, str(r.norm)) for r in table}, table.targets


# --- the models, each with its answer ----------------------------------------------------------

def mlp():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))


class ResidualMLP(nn.Module):
    def __init__(self, d=8, depth=3):
        super().__init__()
        self.inp = nn.Linear(4, d)
        self.fc1 = nn.ModuleList(nn.Linear(d, 2 * d) for _ in range(depth))
        self.fc2 = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(depth))
        self.out = nn.Linear(d, 3)

    def forward(self, x):
        x = self.inp(x)
        for a, b in zip(self.fc1, self.fc2):
            x = x + b(F.relu(a(x)))
        return self.out(x)


def cnn():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = (t.view(B, T, 2, D // 2).transpose(1, 2) for t in self.c_attn(self.ln_1(x)).split(D, dim=2))
        x = x + self.c_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class TiedGPT(nn.Module):
    """nanoGPT's layout: the head is registered BEFORE the blocks and tied to the embedding."""

    def __init__(self, vocab=11, d=8, layers=2, ctx=6):
        super().__init__()
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.wte.weight = self.lm_head.weight

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.h:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


class HeadFirst(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(8, 3)
        self.blocks = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8))

    def forward(self, x):
        return self.head(torch.tanh(self.blocks(x)))


class Gated(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.w1, self.w3 = nn.Linear(4, d, bias=False), nn.Linear(4, d, bias=False)
        self.w2 = nn.Linear(d, 8, bias=False)
        self.head = nn.Linear(8, 3, bias=False)

    def forward(self, x):
        return self.head(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class Branchy(nn.Module):
    """Python control flow: a loop that reuses a layer and a branch that may not run."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 3)
        self.repeat, self.use_c = 2, False

    def forward(self, x):
        h = torch.relu(self.a(x))
        for _ in range(self.repeat):
            h = torch.relu(self.b(h))
        if self.use_c and h.sum() > 0:
            h = self.c(h)
        return self.head(h)


X4 = torch.randn(2, 4)
IDX = torch.randint(11, (2, 6))


def test_mlp_is_a_chain():
    r, t = rows(mlp(), X4)
    assert r["0.weight"] == ("hidden", "rms->rms") and r["4.weight"] == ("head", "rms->linf")
    assert r["0.bias"] == ("bias", "rms")
    M = 1 + 1 + H  # three layers in a row (hidden, hidden, head): composition gives each m/M
    for i in (0, 2):
        assert t[f"{i}.weight"] == pytest.approx(1 / M) and t[f"{i}.bias"] == pytest.approx(0.1 / M)
    assert t["4.weight"] == pytest.approx(H / M) and t["4.bias"] == pytest.approx(0.1 / M)


def test_residual_mlp_targets_do_not_depend_on_depth():
    for depth in (1, 3, 6):
        r, t = rows(ResidualMLP(depth=depth), X4)
        assert r["inp.weight"] == ("hidden", "rms->rms") and r["out.weight"] == ("head", "rms->linf")
        M = 1 + BODY_MASS + H  # inp → body → out
        assert t["inp.weight"] == pytest.approx(1 / M) and t["out.weight"] == pytest.approx(H / M)
        for i in range(depth):  # branch fc1 → fc2 (M_branch 2) gets the body's share
            assert t[f"fc1.{i}.weight"] == pytest.approx(BODY_MASS / M / 2)
            assert t[f"fc2.{i}.bias"] == pytest.approx(BODY_MASS / M * 0.1 / 2)
            # fc2 narrows 2d → d: √(in/out) = √2 times its share (the narrowing factor)
            assert t[f"fc2.{i}.weight"] == pytest.approx(BODY_MASS / M / 2 * 2 ** 0.5)
    model = ResidualMLP(depth=2)
    types = types_of(model)
    types.observe(X4)
    assert len(types.graph.residuals()) == 2


@pytest.mark.parametrize("out, inp", [(8, 32), (16, 64), (3, 12), (4, 4), (12, 3)])
def test_narrowing_factor_depends_on_the_shape_ratio_only(out, inp):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, inp), nn.Tanh(), nn.Linear(inp, out), nn.Tanh(), nn.Linear(out, 3))
    _, t = rows(model, X4)  # (tanh: no dead units, so every layer has a gradient)
    factor = max(1.0, inp / out) ** 0.5  # Muon's max(1, in/out)^½ on a narrowing matrix
    M = 1 + 1 + H
    assert t["2.weight"] == pytest.approx(factor / M) and t["2.bias"] == pytest.approx(0.1 / M)
    assert t["4.weight"] == pytest.approx(H / M)  # the head narrows too, but is no hidden layer
    # the step it gives: Primal of RMS→RMS norm lr·t, i.e. σ_max = lr·t·√(out/in) = lr/3 when narrowing
    w = model[2].weight
    opt = ModularSGD(model, lr=0.1, momentum=0.0, weight_decay=0.0, method="svd")
    before = w.detach().clone()
    model(X4).square().sum().backward()
    opt.step()
    sigma = torch.linalg.matrix_norm((w.detach() - before).double(), ord=2).item()
    assert sigma == pytest.approx(0.1 * t["2.weight"] * (out / inp) ** 0.5, rel=1e-5)


def test_cnn_with_batchnorm():
    r, t = rows(cnn(), torch.randn(2, 1, 8, 8))
    assert r["0.weight"] == ("conv", "conv2d") and r["1.weight"] == ("gain", "rms")
    assert r["1.bias"] == ("bias", "rms") and r["8.weight"] == ("head", "rms->linf")
    M = 1 + 0.1 + 1 + 0.1 + H
    assert t["0.weight"] == pytest.approx(1 / M) and t["4.weight"] == pytest.approx(0.1 / M)
    assert t["8.weight"] == pytest.approx(H / M)


def test_conv1d_and_conv3d_get_their_conv_norms_and_transposed_convs_l2():
    audio = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose1d(4, 2, 3, padding=1),
                          nn.Flatten(), nn.Linear(16, 3))
    with pytest.warns(UserWarning, match=r"ops dualtype has no norm for \(conv_transpose1d\).*: 2\.weight;"):
        r, _ = rows(audio, torch.randn(2, 2, 8))
    assert r["0.weight"] == ("conv", "conv1d") and r["0.bias"] == ("bias", "rms")
    assert r["2.weight"] == ("other", "l2")  # [in, out, k]: the conv norm's out/in would be swapped
    volume = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 4 * 4 * 4, 3))
    r, _ = rows(volume, torch.randn(2, 1, 4, 4, 4))
    assert r["0.weight"] == ("conv", "conv3d")
    assert dualtype.typed(nn.Conv1d(2, 4, 3)).norms["weight"] == N("conv1d")  # fallback agrees
    opt = ModularSGD(audio)
    audio(torch.randn(2, 2, 8)).sum().backward()
    before = audio[0].weight.detach().clone()
    opt.step()
    assert not torch.equal(before, audio[0].weight.detach())


def test_tied_gpt_with_the_head_registered_first():
    model = TiedGPT()
    r, t = rows(model, IDX)
    assert "lm_head.weight" in r and len(r) == len(list(model.parameters()))
    assert r["lm_head.weight"] == ("embedding", "l1->rms")  # the tied table: both uses are row maps
    assert types_of(model).table["lm_head.weight"].uses == ("embedding", "head")
    assert r["wpe.weight"] == ("embedding", "l1->rms")
    assert r["h.0.c_attn.weight"] == ("hidden", "rms->rms") and r["h.1.ln_2.weight"] == ("gain", "rms")
    M = ROLE_MASSES["embedding"] + BODY_MASS + 0.1 + ROLE_MASSES["head"]
    assert t["lm_head.weight"] == pytest.approx(ROLE_MASSES["embedding"] / M)
    assert t["h.1.c_fc.weight"] == pytest.approx(BODY_MASS / M / 2.1)  # ln (0.1) → c_fc → proj


@pytest.mark.parametrize("d", [8, 32])
def test_tied_weight_steps_within_both_uses_budgets(d):
    """A tied embedding/head moves lr·min(t_emb, t_head/d) in l1->rms: l1->rms and rms->linf
    are the same row map and differ by d, so that step is within both uses' budgets."""
    model = TiedGPT(d=d)
    _, t = rows(model, IDX)
    M = ROLE_MASSES["embedding"] + BODY_MASS + 0.1 + H
    t_emb, t_head = ROLE_MASSES["embedding"] / M, H / M
    assert t["lm_head.weight"] == pytest.approx(min(t_emb, t_head / d))  # d=8: t_emb binds, d=32: t_head
    lr = 0.1
    opt = ModularSGD(model, lr=lr, momentum=0.0, weight_decay=0.0)
    before = model.lm_head.weight.detach().clone()
    model(IDX, IDX)[1].backward()
    opt.step()
    delta = before - model.lm_head.weight.detach()
    assert N("l1->rms").value(delta).item() == pytest.approx(lr * t["lm_head.weight"], rel=1e-5)
    assert N("l1->rms").value(delta).item() <= lr * t_emb * (1 + 1e-5)
    assert N("rms->linf").value(delta).item() <= lr * t_head * (1 + 1e-5)


def test_head_registered_before_the_blocks():
    r, _ = rows(HeadFirst(), X4)
    assert r["head.weight"] == ("head", "rms->linf")
    assert r["blocks.2.weight"] == ("hidden", "rms->rms") and r["blocks.0.weight"] == ("hidden", "rms->rms")


def test_gated_mlp_branches_side_by_side():
    r, t = rows(Gated(), X4)
    assert {r[n][0] for n in ("w1.weight", "w2.weight", "w3.weight")} == {"hidden"}
    for n in ("w1.weight", "w3.weight", "w2.weight"):  # (w1 ∥ w3) → w2 → head
        assert t[n] == pytest.approx(1 / (2 + H)), n
    assert t["head.weight"] == pytest.approx(H / (2 + H))


class TorchEncoder(nn.Module):
    """torch's own post-norm nn.TransformerEncoder: attention is one fused op."""

    def __init__(self, layers, d=8, vocab=11, **kw):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        block = nn.TransformerEncoderLayer(d, 2, d, dropout=0.0, batch_first=True, **kw)
        self.enc = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.out = nn.Linear(d, vocab)

    def forward(self, idx):
        return self.out(self.enc(self.emb(idx)))


@pytest.mark.parametrize("layers", [2, 4])
def test_torch_multihead_attention_opens_into_its_projections(layers):
    r, t = rows(TorchEncoder(layers), IDX)
    a = "enc.layers.0.self_attn."
    assert r[a + "in_proj_weight"] == r[a + "out_proj.weight"] == ("hidden", "rms->rms")
    assert r[a + "in_proj_bias"] == r[a + "out_proj.bias"] == ("bias", "rms")
    # x ← LN(x + f(x)): the blocks are one residual body through their post-norms
    M = 0.1 + BODY_MASS + 0.1 + H  # embedding, body, the last block's norm2, head
    assert t[a + "in_proj_weight"] == pytest.approx(BODY_MASS / M / 2)  # in-proj → out-proj
    assert t["enc.layers.0.linear1.weight"] == pytest.approx(BODY_MASS / M / 2.1)  # norm1 → linear1 → linear2
    assert t["enc.layers.0.norm1.weight"] == pytest.approx(BODY_MASS / M * 0.1 / 2.1)
    assert t[f"enc.layers.{layers - 1}.norm2.weight"] == pytest.approx(0.1 / M)
    assert t["out.weight"] == pytest.approx(H / M)


def test_cross_attention_with_separate_projections():
    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, kdim=5, vdim=6, add_bias_kv=True, batch_first=True)
            self.out = nn.Linear(8, 3)

        def forward(self, q, k, v):
            return self.out(self.attn(q, k, v)[0])

    r, _ = rows(Cross(), torch.randn(2, 4, 8), torch.randn(2, 3, 5), torch.randn(2, 3, 6))
    for w in ("q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj.weight"):
        assert r["attn." + w] == ("hidden", "rms->rms")
    for b in ("in_proj_bias", "bias_k", "bias_v", "out_proj.bias"):
        assert r["attn." + b][0] == "bias"


@pytest.mark.parametrize("cell, gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_layers_are_hidden_matrices_per_layer(cell, gates):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(11, 8)
            self.rnn = cell(8, 8, num_layers=2, bidirectional=True, batch_first=True)
            self.out = nn.Linear(16, 11)

        def forward(self, idx):
            return self.out(self.rnn(self.emb(idx))[0])

    before = dualtype.typed(Net()).norms  # by layer type, before any forward: the cell's norms agree
    r, t = rows(Net(), IDX)
    assert {n: str(v) for n, v in before.items() if "rnn" in n} == {n: v[1] for n, v in r.items() if "rnn" in n}
    M = 0.1 + 1 + 1 + H  # embedding, layer 0 (its ih and hh side by side), layer 1, head
    for name, fan_in in (("weight_ih_l0", 8), ("weight_hh_l0_reverse", 8), ("weight_ih_l1", 16)):
        assert r["rnn." + name] == ("hidden", "rms->rms")
        assert t["rnn." + name] == pytest.approx(max(1, fan_in / (gates * 8)) ** 0.5 / M)  # nn.RNN's l1 narrows
    assert r["rnn.bias_hh_l1_reverse"] == ("bias", "rms") and t["rnn.bias_ih_l0"] == pytest.approx(0.1 / M)


def test_lstm_projection_is_a_layer_after_the_cell():
    net = nn.Sequential(nn.LSTM(4, 8, proj_size=6, batch_first=True))
    r, t = rows(net, torch.randn(2, 5, 4))
    assert r["0.weight_hr_l0"] == ("head", "rms->linf")  # it produces the model's output
    assert t["0.weight_ih_l0"] == pytest.approx(1 / (1 + H))


def test_vit_tokens_and_a_reparametrized_scale():
    class ViT(nn.Module):
        def __init__(self, d=8):
            super().__init__()
            self.patch = nn.Conv2d(3, d, 4, stride=4)
            self.cls, self.pos = nn.Parameter(torch.zeros(1, 1, d)), nn.Parameter(torch.zeros(1, 5, d))
            self.head, self.logit_scale = nn.Linear(d, 3), nn.Parameter(torch.zeros(()))

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            return self.head(x[:, 0]) * self.logit_scale.exp()  # exp(s): still the parameter s

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing falls back
        r, _ = rows(ViT(), torch.randn(2, 3, 8, 8))
    assert r["cls"] == r["pos"] == ("embedding", "l1->rms")  # learned tokens beside the patches
    assert r["logit_scale"] == ("gain", "rms") and r["head.weight"] == ("head", "rms->linf")


def test_prelu_slope_is_a_gain():
    r, _ = rows(nn.Sequential(nn.Linear(4, 8), nn.PReLU(8), nn.Linear(8, 3)), X4)
    assert r["1.weight"] == ("gain", "rms")


def test_control_flow_is_recorded_as_it_ran():
    model = Branchy()
    with pytest.warns(UserWarning, match="c.weight") as seen:
        r, t = rows(model, X4)
    assert len([w for w in seen if "not used" in str(w.message)]) == 1  # one warning for c
    assert r["c.weight"] == ("hidden", "rms->rms") and types_of(model).table["c.weight"].source == "fallback"
    assert t["b.weight"] == pytest.approx(1 / (3 + H))  # a → b → b → head
    model.use_c = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r, t = rows(model, torch.ones(2, 4))
    assert t["c.weight"] == pytest.approx(1 / (4 + H)) and types_of(model).table["c.weight"].source == "graph"


def test_onehot_input_makes_a_linear_an_embedding():
    class OneHot(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = nn.Linear(5, 8, bias=False), nn.Linear(8, 5, bias=False)

        def forward(self, idx):
            return self.head(torch.tanh(self.emb(F.one_hot(idx, 5).float())))

    table = dualtype.check(OneHot(), torch.randint(5, (3,)), show=False)
    # nn.Linear(5, 8) stores [d, vocab]: the table's rows are its columns
    assert table["emb.weight"].role == "embedding" and table["emb.weight"].norm == N("l1->rms.t")


class InOut(nn.Module):
    """Weights read as x @ W ([in, out]: transformers' Conv1D via addmm, a bare head); with
    ``transpose=False`` the same network stored [out, in] and read by F.linear."""

    def __init__(self, transpose=True, d=6, hidden=12, classes=5):
        super().__init__()
        lay = (lambda o, i: (i, o)) if transpose else (lambda o, i: (o, i))
        self.transpose = transpose
        self.fc = nn.Parameter(torch.randn(*lay(hidden, d)) / d**0.5)
        self.fc_bias = nn.Parameter(torch.zeros(hidden))
        self.proj = nn.Parameter(torch.randn(*lay(d, hidden)) / hidden**0.5)
        self.out = nn.Parameter(torch.randn(*lay(classes, d)) / d**0.5)

    def forward(self, x):
        if self.transpose:
            shape = x.shape[:-1] + (self.fc.size(-1),)  # metadata reads are not uses
            h = torch.addmm(self.fc_bias, x.reshape(-1, x.shape[-1]), self.fc).view(shape)
            return (x + F.gelu(h) @ self.proj) @ self.out
        return F.linear(x + F.linear(F.gelu(F.linear(x, self.fc, self.fc_bias)), self.proj), self.out)


def test_weights_read_as_x_at_w_get_the_transposed_norms():
    r, t = rows(InOut(), torch.randn(3, 6))
    assert r["fc"] == ("hidden", "rms->rms.t") and r["fc_bias"] == ("bias", "rms")
    assert r["proj"] == ("hidden", "rms->rms.t") and r["out"] == ("head", "rms->linf.t")
    _, t_plain = rows(InOut(transpose=False), torch.randn(3, 6))
    assert t == pytest.approx(t_plain)  # proj narrows 12 → 6 either way: the same √2


OUT_IN, IN_OUT = (12, 6), (6, 12)


class ReadW(nn.Module):
    """One hidden matrix ``w`` of shape ``stored`` read by ``read(x, w)`` into 12 features."""

    def __init__(self, read, stored):
        super().__init__()
        self.read, self.w, self.head = read, nn.Parameter(torch.randn(*stored)), nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.read(x, self.w))


@pytest.mark.parametrize("eq, stored, norm", [("bnd,de->bne", IN_OUT, "rms->rms.t"),
                                               ("bnd,ed->bne", OUT_IN, "rms->rms"),
                                               ("ab,bc", IN_OUT, "rms->rms.t")])  # implicit output "ac"
def test_einsum_reads_the_layout_from_its_equation(eq, stored, norm):
    x = torch.randn(*(2, 4, 6)[3 - len(eq.split(",")[0]):])
    r, _ = rows(ReadW(lambda x, w: torch.einsum(eq, x, w), stored), x)
    assert r["w"] == ("hidden", norm)


@pytest.mark.parametrize("read, stored, norm", [
    (lambda x, w: x @ w.T, OUT_IN, "rms->rms"), (lambda x, w: x @ w.mT, OUT_IN, "rms->rms"),
    (lambda x, w: x @ w.transpose(0, 1), OUT_IN, "rms->rms"), (lambda x, w: x @ w.permute(1, 0), OUT_IN, "rms->rms"),
    (lambda x, w: (w @ x.T).T, OUT_IN, "rms->rms"),  # W on the left reads [out, in]
    (lambda x, w: x @ w.T.T, IN_OUT, "rms->rms.t"), (lambda x, w: (w.T @ x.T).T, IN_OUT, "rms->rms.t"),
])
def test_views_that_swap_a_matrix_flip_its_layout(read, stored, norm):
    r, _ = rows(ReadW(read, stored), torch.randn(3, 6))
    assert r["w"] == ("hidden", norm)


def test_a_transposed_weight_steps_as_the_transpose_of_the_plain_one():
    plain, flipped = InOut(transpose=False), InOut()
    with torch.no_grad():
        for name in ("fc", "proj", "out"):
            getattr(flipped, name).copy_(getattr(plain, name).T)
    x = torch.randn(4, 6)
    for model in (plain, flipped):
        opt = ModularSGD(model, lr=0.1, weight_decay=0.0, example=(x,))
        model(x).square().mean().backward()
        opt.step()
    for name in ("fc", "proj", "out"):
        torch.testing.assert_close(getattr(flipped, name).detach(), getattr(plain, name).detach().T,
                                   rtol=1e-4, atol=1e-5)


def test_a_declared_norm_with_the_wrong_layout_names_the_fix():
    with pytest.raises(NormMismatchError, match=r"'fc' declared rms->rms, but it is stored .*in, out.*use rms->rms\.t"):
        dualtype.typed(InOut(), norms={"fc": "rms->rms"}, example=(torch.randn(3, 6),))


# --- one source of truth -----------------------------------------------------------------------

@pytest.mark.parametrize("make, example", [(mlp, X4), (ResidualMLP, X4), (cnn, torch.randn(2, 1, 8, 8)),
                                           (TiedGPT, IDX), (HeadFirst, X4), (Gated, X4)])
def test_typed_modular_and_the_optimizer_agree(make, example):
    torch.manual_seed(0)
    model = make()
    handle = dualtype.typed(model)
    opt = ModularSGD(model)
    out = model(example)  # the first forward is recorded here
    out = out[0] if isinstance(out, tuple) else out
    out.float().pow(2).mean().backward()
    opt.step()
    mn = dualtype.modular(model)
    group = opt.param_groups[0]
    assert dict(zip(group["names"], group["norms"])) == {n: str(v) for n, v in mn.norms.items()}
    assert dict(zip(group["names"], group["targets"])) == pytest.approx(mn.targets)
    assert {n: str(v) for n, v in handle.norms.items()} == {n: str(v) for n, v in mn.norms.items()}
    for name, p in model.named_parameters():
        assert norm_of(p.grad) == mn.norms[name], name
    assert {r.source for r in mn} == {"graph"}


def test_typed_then_optimizer_keeps_what_the_user_typed():
    model = mlp()
    dualtype.typed(model, norms={"*.bias": "l2"})
    opt = ModularSGD(model)
    model(X4).sum().backward()
    opt.step()
    norms = dict(zip(opt.param_groups[0]["names"], opt.param_groups[0]["norms"]))
    assert norms["0.bias"] == "l2" and norms["4.weight"] == "rms->linf" and norms["0.weight"] == "rms->rms"
    assert norm_of(model[0].bias.grad) == N("l2")


def test_declared_norm_that_contradicts_the_graph_is_an_error():
    model = mlp()
    dualtype.typed(model, norms={"4.weight": "l1->rms"})
    with pytest.raises(NormMismatchError, match=r"'4\.weight' declared l1->rms, but its output is the model's logits"):
        model(X4)
    with pytest.raises(NormMismatchError, match="use rms->linf"):
        dualtype.check(model, X4, show=False)
    relaxed = mlp()
    dualtype.typed(relaxed, norms={"4.weight": "l1->rms"}, strict=False)
    with pytest.warns(UserWarning, match="4.weight"):
        relaxed(X4)
    assert types_of(relaxed).table["4.weight"].norm == N("l1->rms")
    muon_head = mlp()  # a Muon-style head (logits read in RMS) is a choice, not a contradiction
    dualtype.typed(muon_head, norms={"4.weight": "rms->rms"}, example=X4)
    assert types_of(muon_head).table["4.weight"].norm == N("rms->rms")


def test_a_declared_lookup_norm_on_a_hidden_layer_names_the_reason():
    with pytest.raises(NormMismatchError, match="hidden features"):
        dualtype.typed(mlp(), norms={"2.weight": "l1->rms"}, example=X4)


def test_check_prints_the_table(capsys):
    dualtype.check(TiedGPT(), IDX)
    out = capsys.readouterr().out
    assert "lm_head.weight" in out and "embedding (embedding+head)" in out and "graph" in out


def test_check_takes_example_as_typed_does():
    by_position = dualtype.check(TiedGPT(), IDX, show=False)
    for example in (IDX, (IDX,)):
        assert dualtype.check(TiedGPT(), example=example, show=False).norms == by_position.norms
    with pytest.raises(ConfigError, match="positionally or as example="):
        dualtype.check(TiedGPT(), IDX, example=IDX)


def test_printing_the_returned_table_shows_its_rows():
    text = str(dualtype.check(TiedGPT(), IDX, show=False))
    row = next(line for line in text.splitlines() if line.startswith("lm_head.weight"))
    assert "embedding+head" in row and "l1->rms" in row


def test_first_forward_retypes_the_gradient_hook():
    model = HeadFirst()
    handle = dualtype.typed(model)
    assert handle.norms["head.weight"] == N("rms->rms")  # by layer type: nothing recorded yet
    model(X4).sum().backward()
    assert norm_of(model.head.weight.grad) == N("rms->linf")
    assert len(types_of(model)._hooks) == 0  # later forwards run without hooks


def test_recording_failure_falls_back_with_a_warning(monkeypatch):
    import dualtype.trace as trace

    def broken(self, *a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(trace.Recorder, "_record", broken)
    model = mlp()
    dualtype.typed(model)
    with pytest.warns(UserWarning, match="could not record"):
        model(X4)
    assert types_of(model).table["4.weight"].source == "fallback"
    model(X4)  # no second attempt, no second warning


def test_retyping_or_a_new_optimizer_after_backward_keeps_gradients_dual():
    model = mlp()
    dualtype.typed(model)
    model(X4).sum().backward()
    dualtype.typed(model, norms={"*.bias": "l2"})  # again, after a backward
    assert norm_of(model[0].bias.grad) == N("l2") and norm_of(model[0].weight.grad) == N("rms->rms")
    ModularSGD(model)
    assert all(isinstance(p.grad, dualtype.DualTensor) for p in model.parameters())


def test_optimizer_warns_once_when_no_forward_was_recorded():
    model = mlp()
    opt = ModularSGD(model)
    model.forward(X4).sum().backward()  # .forward() bypasses the hooks: nothing is recorded
    with pytest.warns(UserWarning, match="no forward of Sequential was recorded"):
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()


def test_param_groups_of_a_typed_model_keep_names_norms_and_targets():
    model = mlp()
    dualtype.typed(model, example=X4)
    decay = [p for p in model.parameters() if p.ndim == 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = ModularSGD([{"params": decay, "weight_decay": 0.1}, {"params": rest}])
    table = types_of(model).table
    for group in opt.param_groups:
        for p, name, norm, target in zip(group["params"], group["names"], group["norms"], group["targets"]):
            assert table[name].norm == N(norm) and target == pytest.approx(table[name].target)
    assert opt.param_groups[0]["names"] == ["0.weight", "2.weight", "4.weight"]


def test_excluded_parameters_stay_plain_for_another_optimizer():
    model = TiedGPT()
    with pytest.raises(dualtype.ConfigError, match="example"):  # roles need the graph
        dualtype.typed(model, exclude=["embedding"])
    handle = dualtype.typed(model, exclude=["embedding", "*.bias"], example=IDX)
    opt = ModularSGD(model)
    names = set(opt.param_groups[0]["names"])
    assert "lm_head.weight" not in names and "wpe.weight" not in names and "h.0.c_fc.bias" not in names
    assert "h.0.c_fc.weight" in names and "h.0.ln_1.weight" in names
    plain = [p for n, p in model.named_parameters() if n not in names]
    adamw = torch.optim.AdamW(plain, lr=1e-3)
    model(IDX)[0].float().pow(2).mean().backward()
    assert all(type(p.grad) is torch.Tensor for p in plain)
    before = snapshot(model)
    adamw.step()  # a third-party optimizer on the excluded parameters runs
    opt.step()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())
    text = repr(handle)
    assert "lm_head.weight" in text and "excluded" in text
    assert "excluded" in types_of(model).table.table()
    with pytest.raises(dualtype.ConfigError, match="exclude"):
        dualtype.typed(model, exclude=["no_such_thing"])


# --- a typed model's life: moves, swaps, nested typing (issue 13 items 1 and 8) ---------------

def test_dtype_move_after_typed_keeps_the_data_guard():
    m = nn.Linear(4, 3)
    dualtype.typed(m)
    m(torch.randn(2, 4)).sum().backward()
    p = m.weight
    m.double()  # new storage: the first backward after it re-keys the weight
    m(torch.randn(2, 4).double()).sum().backward()
    with torch.no_grad(), pytest.raises(dualtype.DualityError):
        p.data.sub_(0.1 * p.grad)  # noqa: DTL002 (refused on purpose)


def test_swap_tensors_works_on_a_typed_model():
    m = nn.Linear(4, 3)
    dualtype.typed(m)
    torch.utils.swap_tensors(m.weight, nn.Parameter(torch.randn(3, 4)))


def test_typing_and_untyping_a_submodule_keeps_the_parent_guard():
    outer = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 3))
    dualtype.typed(outer)
    dualtype.typed(outer[0])
    dualtype.untyped(outer[0])
    outer(X4).sum().backward()  # the nested typing is not recorded as a use of the weights
    assert types_of(outer).table["0.weight"].role == "hidden"
    with torch.no_grad(), pytest.raises(dualtype.DualityError):
        outer[0].weight.data.sub_(outer[0].weight.grad)  # noqa: DTL002 (refused on purpose)
