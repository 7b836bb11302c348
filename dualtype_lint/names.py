"""Name heuristics: which identifiers look like weights and which look like gradients.

The linter has no types, so it recognises parameters and gradients partly by how they are
bound (``for p in params``, ``p.grad``) and partly by their names. The word lists here are the
single place those naming conventions live.
"""

from __future__ import annotations

import re
from functools import lru_cache

_SHORT_WEIGHT = re.compile(r"^(?:p|w|W|theta)\d*$")

WEIGHT_WORDS = frozenset(
    "param params parameter parameters weight weights bias biases theta thetas".split()
)
# A weight word next to one of these names something *about* weights, not a weight.
NOT_WEIGHT_WORDS = frozenset(
    """grad grads gradient gradients state states buf bufs buffer buffers momentum avg avgs
    sq sum sums norm norms lr lrs group groups name names count counts num n step steps decay
    shape shapes size sizes idx index indices id ids key keys dtype dtypes fn fns spec specs
    info init type types hook hooks map dict to of per requires version flag flags mask masks
    scheduler schedule tying tied sharing ema target targets loss losses class classes sample
    samples attn attention neg pos label labels chunk chunks cast quant observer fake qparams
    scale scales factor factors fn loader loading file path url correction corrected expr
    exprs""".split()
)

GRAD_WORDS = frozenset("grad grads gradient gradients".split())
# A grad word next to one of these names a setting, a function or a scalar, not a gradient.
NOT_GRAD_WORDS = frozenset(
    """norm norms fn fns func mode enabled enable requires is has no set clip clipping scaler pseudo
    scale scales hook hooks count counts step steps accum accumulation checkpointing idx index
    indices name names key keys shape shapes size sizes dtype type none zero sync ready flag
    flags op ops param params parameter parameters with sample samples layout placement dim
    dims check checks test tests enabled context ctx manager scope tracking""".split()
)
_GRAD_EXACT = frozenset(("d_p", "d_p_list", "dp_list", "main_grad"))


@lru_cache(maxsize=8192)
def is_weight_name(name: str) -> bool:
    """True for identifiers that conventionally hold a weight or a list of weights."""
    if _SHORT_WEIGHT.match(name) or _SHORT_QUALIFIED_WEIGHT.match(name):
        return True
    low = name.lower()
    if "_with_" in low:  # params_with_grad: the list of params (that have a grad)
        low = low.split("_with_", 1)[0]
    words = [w.rstrip("0123456789") for w in low.split("_")]
    if len(words) > 1 and words[0] in ("names", "named") and words[1] in WEIGHT_WORDS:
        words = [w for w in words[1:] if w != "dict"]  # names_weights_dict: name -> weight
    return any(w in WEIGHT_WORDS for w in words) and not any(w in NOT_WEIGHT_WORDS for w in words)


@lru_cache(maxsize=8192)
def is_grad_name(name: str) -> bool:
    """True for identifiers that conventionally hold a gradient or a list of gradients."""
    low = name.lower().strip("_")
    if low in _GRAD_EXACT or _SHORT_QUALIFIED_GRAD.match(name):
        return True
    words = low.split("_")
    if "wrt" in words and any(w in GRAD_WORDS for w in words[: words.index("wrt")]):
        return True  # names_grads_wrt_params_dict: gradients with respect to the parameters
    return any(w in GRAD_WORDS for w in words) and not any(w in NOT_GRAD_WORDS for w in words)


def is_inplace_method(name: str) -> bool:
    """Tensor in-place methods end in one underscore: ``add_``, ``mul_``; dunders do not count."""
    return len(name) > 1 and name[-1] == "_" and name[0] != "_" and name[-2] != "_"


_SHORT_QUALIFIED_WEIGHT = re.compile(r"^(?:p|w|param)_(?:slice|local|shard|flat|full|fp32|master|view|sub|block)$")
_SHORT_QUALIFIED_GRAD = re.compile(r"^(?:g|dp)_(?:slice|local|shard|flat|full|fp32|view|sub|block)$")


def is_paired_grad_name(name: str, weights, bound) -> bool:
    """``d<name>`` or ``d_<name>`` next to ``<name>`` that is a weight of the scope (``dW1`` /
    ``W1``, ``db1`` / ``b1`` when ``b1`` is a weight), and ``g_slice``-style short gradient names."""
    if _SHORT_QUALIFIED_GRAD.match(name):
        return True
    if len(name) < 2 or name[0] != "d":
        return False
    rest = name[2:] if name[1] == "_" else name[1:]
    if not rest or rest not in bound and rest not in weights:
        return False
    # W1 / dW1, w / dw; b1 / db1 (a short name with a layer number, as in NumPy courses)
    return rest in weights or is_weight_name(rest) or bool(_LAYER_NAME.match(rest))


_LAYER_NAME = re.compile(r"^[A-Za-z]{1,2}\d+$")


def is_hand_grad_target(name: str, v, value_node, paired: bool = False) -> bool:
    """``grad_w1 = x.t().mm(grad_h)``: a name that says it holds a gradient gets a computed
    (non-constant, non-dualized, non-scalar) value: it is a hand-written gradient."""
    if v.taint or v.flags or not (paired or is_grad_name(name)):
        return False
    import libcst as cst

    return type(value_node) not in (
        cst.Integer, cst.Float, cst.SimpleString, cst.Name, cst.List, cst.Tuple, cst.Dict, cst.Lambda,
    ) and not (type(value_node) is cst.Call and not value_node.args)
