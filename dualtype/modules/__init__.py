"""The modular norm (docs/design.md §3): modules with mass and sensitivity, their norm, dual norm
and duality map, and :func:`modular` for any existing ``torch.nn.Module``.

Build networks from atoms and bonds with ``@`` (composition, right runs first), ``+``,
``α *``, ``** L``, :func:`concat` and :func:`residual`; every module is a real
``torch.nn.Module``. Weights and grads of a module are lists in ``parameters()`` order. The
attention pieces (``SplitHeads``, ``QKScores``, ``Softmax``, ...) live in
:mod:`dualtype.modules.bonds`.

>>> from dualtype.modules import Linear, ReLU, modular
>>> net = Linear(64, 10) @ ReLU() @ Linear(32, 64)
>>> net.mass, net.sensitivity
(2.0, 1.0)
>>> print(modular(net))  # doctest: +SKIP
"""

from dualtype.modules.atoms import Bias, Conv2D, Embed, Gain, Head, HeadLinear, Linear, PositionEmbed
from dualtype.modules.base import (
    Atom,
    Bond,
    Composition,
    Concatenation,
    Identity,
    Module,
    Mul,
    Scale,
    Sum,
    compose,
    concat,
    repeat,
    residual,
)
from dualtype.modules.bonds import GELU, Add, Flatten, ReLU, RMSNorm
from dualtype.modules.compounds import GPT, MLP, Attention
from dualtype.modules.modular_norm import ModularNorm, ParamRecord, modular

__all__ = [
    "Module", "Atom", "Bond", "Composition", "Concatenation", "Sum", "Scale",
    "compose", "concat", "repeat", "residual",
    "Linear", "HeadLinear", "Embed", "PositionEmbed", "Conv2D", "Head", "Bias", "Gain",
    "Identity", "Mul", "ReLU", "GELU", "Add", "RMSNorm", "Flatten",
    "MLP", "Attention", "GPT",
    "modular", "ModularNorm", "ParamRecord",
]
