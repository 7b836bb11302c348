"""Record the dataflow between a model's parameterized layers during one forward pass.

:func:`record` runs the forward under a ``TorchFunctionMode`` and keeps, for every tensor,
the set of *layers* whose outputs reach it without passing another layer (its frontier).
What runs is what is recorded, so Python control flow, helper functions and functional
calls (``F.linear(x, self.w)``) are seen as they execute. The result is a :class:`Graph`:

- a :class:`Layer` per call that uses a parameter (``linear``, ``embedding``, ``conv*d``,
  ``layer_norm`` …, an elementwise ``x * g`` or ``x + b``), with the layers it reads from;
- a :class:`Residual` per sum ``x + f(x)`` whose one operand was computed from the other;
- torch's fused layers opened into the layers they compute: ``nn.MultiheadAttention`` is
  its in-projection(s) then its out-projection, ``nn.LSTM``/``GRU``/``RNN`` an input and a
  recurrent matrix per layer and direction (their state is the layer's own output, so both
  read the layer's input);
- the model's outputs: the layers whose result reaches the returned value directly.

Sums of unrelated branches (token + position embeddings, a gated MLP's product, q·kᵀ) merge
frontiers without a node, so their layers stand in parallel. Bonds (nonlinearities,
normalization without weights, reshapes, attention) carry frontiers through unchanged.
The graph is what :mod:`dualtype.roles` reads roles, norms and masses from (docs/design.md §3,
"norms as types of activation spaces").
"""

from __future__ import annotations

import inspect
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor, nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

__all__ = ["Graph", "Layer", "Residual", "Recorder", "record", "finish", "paused", "TraceError"]

#: Layer kinds, by the function that used the parameter.
MATRIX, LOOKUP, CONV, NORM, SCALE, SHIFT, OTHER = "matrix", "lookup", "conv", "norm", "scale", "shift", "other"

_MATRIX_OPS = {"linear", "matmul", "mm", "bmm", "addmm", "__matmul__", "__rmatmul__", "einsum", "bilinear"}
_LOOKUP_OPS = {"embedding", "embedding_bag", "__getitem__", "index_select", "take_along_dim", "gather"}
_CONV_OPS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}
_NORM_OPS = {"layer_norm", "rms_norm", "batch_norm", "group_norm", "instance_norm"}
_ADD_OPS = {"add", "__add__", "__radd__", "__iadd__", "add_", "sub", "__sub__", "__rsub__", "__isub__", "sub_"}
_MUL_OPS = {"mul", "__mul__", "__rmul__", "__imul__", "mul_", "div", "__truediv__", "__itruediv__", "div_"}
# View-like ops: applied to a parameter they give the same parameter, seen differently.
_VIEW_OPS = {"t", "T", "mT", "adjoint", "swapaxes", "swapdims", "transpose", "permute", "view", "reshape",
             "contiguous", "to", "type", "float", "half", "bfloat16", "double", "squeeze", "unsqueeze", "flatten",
             "expand", "expand_as", "view_as", "reshape_as", "__get__", "detach", "narrow", "type_as", "clone"}

# Elementwise functions of a parameter alone are a reparametrization of it (x * s.exp(),
# -torch.exp(A_log)): the layer that then uses the result uses the parameter.
_REPARAM_OPS = {"exp", "sigmoid", "softplus", "tanh", "abs", "neg", "__neg__", "sqrt", "rsqrt", "square", "pow",
                "__pow__", "clamp", "clip", "log", "relu", "sin", "cos"}
_CAT_OPS = {"cat", "concat", "concatenate", "stack"}
# nn.LSTM/GRU/RNN's flat weights, by their (stable) parameter names
_RNN_OPS = {"lstm", "gru", "rnn_tanh", "rnn_relu"}
_RNN_PARAM = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?$")
_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)

INPUT = 0  # node id of the model's input
_PAUSED = [0]  # > 0 while dualtype's own bookkeeping runs inside a recorded forward


@contextmanager
def paused():
    """Do not record the torch calls made inside (dualtype retyping a nested model, say)."""
    _PAUSED[0] += 1
    try:
        yield
    finally:
        _PAUSED[0] -= 1


class TraceError(RuntimeError):
    """The forward could not be recorded (raised only by :func:`record` with ``strict``)."""


@dataclass
class Layer:
    """One call that used parameters. ``params`` maps a slot (``"weight"``, ``"bias"``) to
    the parameter's name; ``preds`` are the nodes its input came from; ``onehot`` is True when
    that input is a one-hot (ℓ1) vector; ``in_out`` when the stored weight's rows are the
    layer's inputs (``x @ W``, ``addmm(b, x, W)``)."""

    id: int
    kind: str
    op: str
    params: dict[str, str]
    preds: frozenset[int]
    onehot: bool = False
    in_out: bool = False  # a MATRIX whose weight is read as [in, out] (x @ W), not [out, in]


@dataclass
class Residual:
    """``skip + branch`` where ``branch`` was computed from ``skip``: x + f(x)."""

    id: int
    skip: frozenset[int]
    branch: frozenset[int]

    @property
    def preds(self) -> frozenset[int]:
        return self.skip | self.branch


@dataclass
class Graph:
    """The recorded dataflow. ``nodes[0]`` is the input (``None``); ``outputs`` is the
    frontier of the returned value; ``uses[name]`` lists the layers using a parameter."""

    nodes: list["Layer | Residual | None"] = field(default_factory=lambda: [None])
    outputs: frozenset[int] = frozenset()
    uses: dict[str, list[int]] = field(default_factory=dict)

    def layers(self) -> list[Layer]:
        return [n for n in self.nodes if isinstance(n, Layer)]

    def residuals(self) -> list[Residual]:
        return [n for n in self.nodes if isinstance(n, Residual)]

    def preds(self, i: int) -> frozenset[int]:
        n = self.nodes[i]
        return frozenset() if n is None else n.preds

    def ancestors(self, frontier: frozenset[int]) -> set[int]:
        """Every node that ``frontier`` was computed from (``frontier`` excluded)."""
        seen: set[int] = set()
        stack = [p for i in frontier for p in self.preds(i)]
        while stack:
            i = stack.pop()
            if i not in seen:
                seen.add(i)
                stack.extend(self.preds(i))
        return seen

    def successors(self) -> dict[int, set[int]]:
        succ: dict[int, set[int]] = {i: set() for i in range(len(self.nodes))}
        for i in range(1, len(self.nodes)):
            for p in self.preds(i):
                succ[p].add(i)
        return succ


# --- provenance of a tensor -----------------------------------------------------------------

@dataclass(frozen=True)
class _Act:
    frontier: frozenset[int]
    onehot: bool = False
    index: bool = False  # integer ids (token ids, positions)


@dataclass(frozen=True)
class _Param:
    name: str
    flipped: bool = False  # a view that swaps the matrix's two dimensions (W.t(), W.T)


def _name(func: Callable) -> str:
    name = getattr(func, "__name__", "") or ""
    return name.split(".")[0]  # aten overloads: "linear.default" -> "linear"


class Recorder(TorchFunctionMode):
    """The mode that records: enter it around one forward (:func:`record` does), then
    :func:`finish` with the forward's output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.params: dict[int, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._refresh()
        self.graph = Graph()
        self.prov: dict[int, _Act | _Param] = {}
        self.alive: list[Tensor] = []  # keeps ids unique while recording
        self.error: BaseException | None = None
        self.depth = _PAUSED[0]  # calls made under a deeper paused() are bookkeeping, not the model

    def _refresh(self) -> None:
        # FSDP2 swaps unsharded parameters in during the forward: names are the stable key
        for name, p in self.model.named_parameters():
            self.params[id(p)] = name
            self.shapes[name] = tuple(p.shape)

    def of(self, t: Any) -> "_Act | _Param | None":
        if not isinstance(t, Tensor):
            return None
        if id(t) not in self.params and isinstance(t, nn.Parameter):
            self._refresh()
        if id(t) in self.params:
            return _Param(self.params[id(t)])
        return self.prov.get(id(t))

    def mark(self, t: Any, p: "_Act | _Param") -> None:
        if isinstance(t, Tensor) and not isinstance(t, nn.Parameter):
            self.prov[id(t)] = p
            self.alive.append(t)

    def mark_input(self, value: Any) -> None:
        for t in tree_flatten(value)[0]:
            if isinstance(t, Tensor) and not isinstance(t, nn.Parameter):
                integer = not (t.is_floating_point() or t.is_complex())
                self.mark(t, _Act(frozenset({INPUT}), index=integer))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.error is None and _PAUSED[0] == self.depth:
            try:
                self._record(func, args, kwargs, out)
            except Exception as e:  # noqa: BLE001 - recording must never break the forward
                self.error = e
        return out

    # --- the rules ------------------------------------------------------------------------

    def _add_layer(self, kind: str, op: str, params: dict[str, str], preds: frozenset[int],
                   onehot: bool = False, in_out: bool = False) -> int:
        i = len(self.graph.nodes)
        self.graph.nodes.append(Layer(i, kind, op, params, preds, onehot, in_out))
        for pname in params.values():
            uses = self.graph.uses.setdefault(pname, [])
            if i not in uses:
                uses.append(i)
        return i

    def _record(self, func, args, kwargs, out) -> None:
        op = _name(func)
        flat = tree_flatten((args, kwargs))[0]
        provs = [(t, self.of(t)) for t in flat if isinstance(t, Tensor)]
        params = list(dict.fromkeys(p.name for _, p in provs if isinstance(p, _Param)))
        acts = [p for _, p in provs if isinstance(p, _Act)]
        frontier = frozenset().union(*(a.frontier for a in acts)) if acts else frozenset()
        onehot = bool(acts) and all(a.onehot for a in acts)
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, Tensor)]
        if not outs:  # metadata: w.size(), w.dim(), w.numel(), …
            return
        if not params:
            self._bond(op, acts, frontier, onehot, outs)
            return
        if (op in _VIEW_OPS or op in _REPARAM_OPS) and len(params) == 1 and not acts:
            src = next(p for _, p in provs if isinstance(p, _Param))
            for t in outs:
                self.mark(t, _Param(params[0], src.flipped != _swaps(func, op, args)))
            return
        opened = (self._attention(args, kwargs, frontier) if op == "multi_head_attention_forward"
                  else self._recurrent(params, frontier) if op in _RNN_OPS else None)
        if opened is not None:
            for t in outs:
                self.mark(t, _Act(opened))
            return
        kind, slots, parallel = self._classify(op, args, kwargs, params)
        if kind == LOOKUP and op != "embedding" and op != "embedding_bag" and not any(a.index for a in acts):
            preds: frozenset[int] = frozenset()  # a slice of a parameter: a lookup by position
        else:
            preds = frontier
        in_out = kind == MATRIX and self._reads_in_out(op, args, kwargs, slots.get("weight"))
        node = self._add_layer(kind, op, slots, preds, onehot and kind == MATRIX, in_out)
        result = (frontier | {node}) if parallel else frozenset({node})
        for t in outs:
            self.mark(t, _Act(result))

    def _bond(self, op: str, acts: list[_Act], frontier: frozenset[int], onehot: bool,
              outs: list[Tensor]) -> None:
        if not acts:
            return
        if op in {"add", "__add__", "__radd__", "__iadd__", "add_"} and len(acts) == 2:
            res = self._residual(acts[0].frontier, acts[1].frontier)
            if res is not None:
                frontier = frozenset({res})
        is_index = all(a.index for a in acts) and all(not (t.is_floating_point() or t.is_complex()) for t in outs)
        becomes_onehot = op == "one_hot" or (onehot and op in _VIEW_OPS)
        for t in outs:
            self.mark(t, _Act(frontier, onehot=becomes_onehot, index=is_index))

    def _residual(self, a: frozenset[int], b: frozenset[int]) -> int | None:
        """A node for ``a + b`` if one operand was computed from the other (x + f(x))."""
        if not a or not b or a == b:
            return None
        g = self.graph
        for skip, branch in ((a, b), (b, a)):
            if skip <= g.ancestors(branch):
                i = len(g.nodes)
                g.nodes.append(Residual(i, skip, branch))
                return i
        return None

    def _attention(self, args, kwargs, frontier: frozenset[int]) -> frozenset[int] | None:
        """``F.multi_head_attention_forward``: in-projection(s), then the out-projection."""
        try:
            bound = _MHA_SIGNATURE.bind(*args, **kwargs).arguments
        except TypeError:
            return None

        def param(key: str) -> str | None:
            p = self.of(bound.get(key))
            return p.name if isinstance(p, _Param) else None

        def source(key: str) -> frozenset[int]:
            a = self.of(bound.get(key))
            return a.frontier if isinstance(a, _Act) else frontier

        def slots(weight: str | None, bias: str | None) -> dict[str, str]:
            return {k: v for k, v in (("weight", weight), ("bias", bias)) if v is not None}

        if param("in_proj_weight") is not None:  # one fused [3E, E] matrix for q, k and v
            ins = [self._add_layer(MATRIX, "linear", slots(param("in_proj_weight"), param("in_proj_bias")),
                                   source("query") | source("key") | source("value"))]
        else:  # separate q/k/v matrices (kdim, vdim ≠ embed_dim); the fused bias is their bias
            ins = [self._add_layer(MATRIX, "linear", slots(param(f"{x}_proj_weight"), None), source(inp))
                   for x, inp in (("q", "query"), ("k", "key"), ("v", "value")) if param(f"{x}_proj_weight")]
            if param("in_proj_bias") is not None:
                ins.append(self._add_layer(SHIFT, "add", {"bias": param("in_proj_bias")}, frozenset(ins)))
        ins += [self._add_layer(SHIFT, "cat", {"bias": b}, frozenset(ins))
                for b in (param("bias_k"), param("bias_v")) if b is not None]
        out = slots(param("out_proj_weight"), param("out_proj_bias"))
        return frozenset({self._add_layer(MATRIX, "linear", out, frozenset(ins))}) if out else frozenset(ins)

    def _recurrent(self, params: list[str], frontier: frozenset[int]) -> frozenset[int] | None:
        """``nn.LSTM``/``GRU``/``RNN``: per layer and direction an input matrix and a recurrent
        matrix (both read the layer's input: the state is the layer's own output), then the
        projection ``weight_hr`` if any. None when a parameter is not one of these."""
        cells: dict[tuple[int, bool], dict[str, dict[str, str]]] = {}
        for name in params:
            m = _RNN_PARAM.search(name)
            if m is None:
                return None
            kind, which, layer, reverse = m.groups()
            cells.setdefault((int(layer), bool(reverse)), {}).setdefault(which, {})[
                "weight" if kind == "weight" else "bias"] = name
        prev = frontier
        for layer in sorted({k[0] for k in cells}):
            out: set[int] = set()
            for reverse in (False, True):
                cell = cells.get((layer, reverse))
                if cell is None:
                    continue
                ins = frozenset(self._add_layer(MATRIX, "linear", cell[w], prev) for w in ("ih", "hh") if w in cell)
                out |= {self._add_layer(MATRIX, "linear", cell["hr"], ins)} if "hr" in cell else ins
            prev = frozenset(out)
        return prev

    def _reads_in_out(self, op: str, args, kwargs, weight: str | None) -> bool:
        """Whether ``weight`` enters this matrix product as ``[in, out]``: the right operand
        of ``x @ W`` (or ``W.t()`` on the left), against ``F.linear``'s ``[out, in]``."""
        if op == "linear":
            operands = (None, args[1] if len(args) > 1 else kwargs.get("weight"))
        elif op in ("matmul", "mm", "bmm", "__matmul__"):
            operands = args[:2]
        elif op == "addmm":
            operands = args[1:3]
        elif op == "__rmatmul__":  # other @ self
            operands = (args[1], args[0]) if len(args) > 1 else ()
        elif op == "einsum":
            return _einsum_in_out(args, self.of, weight)
        else:
            return False
        for right, t in enumerate(operands):
            p = self.of(t)
            if isinstance(p, _Param) and p.name == weight:
                return p.flipped != (right == 1 and op != "linear")
        return False

    def _classify(self, op: str, args, kwargs, params: list[str]) -> tuple[str, dict[str, str], bool]:
        """(kind, slot → parameter name, parallel?) of a call that uses parameters."""
        shape = {pid: self.shapes[pid] for pid in params}
        if op in _NORM_OPS:
            w = self.of(kwargs.get("weight", _positional(op, args)))
            slots = {("weight" if isinstance(w, _Param) and w.name == pid else "bias"): pid for pid in params}
            return NORM, slots, False
        if op in _CONV_OPS:
            return CONV, _weight_bias(params, shape, lambda s: len(s) >= 3), False
        if op in _LOOKUP_OPS:
            return LOOKUP, {"weight": params[0]}, False
        if op in _MATRIX_OPS:
            return MATRIX, _weight_bias(params, shape, lambda s: len(s) >= 2), False
        if op in _CAT_OPS and len(params) == 1 and len(shape[params[0]]) >= 2:
            return LOOKUP, {"weight": params[0]}, True  # a learned token beside the inputs (ViT's cls)
        if op in _ADD_OPS and len(params) == 1:
            pid = params[0]
            if len(shape[pid]) >= 2:  # an additive table, e.g. x + pos_emb[:T]: a lookup by position
                return LOOKUP, {"weight": pid}, True
            return SHIFT, {"bias": pid}, True
        if (op in _MUL_OPS or op == "prelu") and len(params) == 1:
            return SCALE, {"weight": params[0]}, True
        return OTHER, {f"arg{i}": pid for i, pid in enumerate(params)}, False


def _einsum_in_out(args, of: Callable, weight: str | None) -> bool:
    """Whether a 2-D ``weight`` in ``torch.einsum(eq, *operands)`` is read ``[in, out]``: its
    first index is contracted away and its second kept ("bnd,de->bne")."""
    if not args or not isinstance(args[0], str):
        return False
    operands = args[1] if len(args) == 2 and isinstance(args[1], (list, tuple)) else args[1:]
    eq = args[0].replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if not _:  # implicit output: the indices that appear once, in order
        rhs = "".join(sorted(c for c in set(lhs) if c.isalpha() and lhs.count(c) == 1))
    for sub, t in zip(terms, operands):
        p = of(t)
        if isinstance(p, _Param) and p.name == weight and len(sub) == 2:
            first, second = (sub[::-1] if p.flipped else sub)
            return first not in rhs and second in rhs
    return False


def _swaps(func: Callable, op: str, args) -> bool:
    """Whether a view op swaps a matrix's last two dimensions (``W.t()``, ``W.T``, ``W.mT``,
    ``W.transpose(0, 1)``, ``W.permute(1, 0)``)."""
    if op == "__get__":
        return getattr(getattr(func, "__self__", None), "__name__", "") in ("T", "mT", "H", "mH")
    if op in ("t", "adjoint"):
        return True
    if not args or not isinstance(args[0], Tensor) or args[0].ndim < 2:
        return False
    nd = args[0].ndim
    if op in ("transpose", "swapaxes", "swapdims") and len(args) >= 3:
        return {d % nd for d in args[1:3]} == {nd - 2, nd - 1}
    if op == "permute":
        perm = tuple(args[1]) if len(args) == 2 and not isinstance(args[1], int) else tuple(args[1:])
        return [d % nd for d in perm] == [*range(nd - 2), nd - 1, nd - 2]
    return False


def _positional(op: str, args):
    # positions of the affine weight in F.layer_norm / rms_norm / batch_norm / group_norm
    index = {"layer_norm": 2, "rms_norm": 2, "batch_norm": 3, "group_norm": 2, "instance_norm": 3}[op]
    return args[index] if len(args) > index else None


def _weight_bias(params: list[str], shape: dict[str, tuple], is_weight) -> dict[str, str]:
    slots: dict[str, str] = {}
    for pid in params:
        key = "weight" if is_weight(shape[pid]) and "weight" not in slots else "bias"
        if key in slots:
            key = f"arg{len(slots)}"
        slots[key] = pid
    return slots


def record(model: nn.Module, forward: Callable[[], Any] | None = None, *example: Any,
           **kwargs: Any) -> tuple[Graph, Any]:
    """Run ``model(*example, **kwargs)`` (or ``forward()``) once and return (graph, output).

    Raises :class:`TraceError` if the recording itself failed (never for the model's own
    errors, which propagate unchanged).
    """
    rec = Recorder(model)
    rec.mark_input((example, kwargs))
    with rec:
        out = forward() if forward is not None else model(*example, **kwargs)
    finish(rec, out)
    return rec.graph, out


def finish(rec: Recorder, out: Any) -> Graph:
    """Close a recording: the output frontier; raises :class:`TraceError` on a failure."""
    if rec.error is not None:
        raise TraceError(f"recording the forward failed: {type(rec.error).__name__}: {rec.error}") from rec.error
    frontier: frozenset[int] = frozenset()
    for t in tree_flatten(out)[0]:
        p = rec.of(t)
        if isinstance(p, _Act):
            frontier |= p.frontier
    rec.graph.outputs = frontier - {INPUT}
    rec.prov.clear()
    rec.alive.clear()
    return rec.graph
