"""dualtype: gradients are dual vectors. Typed duality maps for PyTorch training code.

``w -= lr * w.grad`` raises :class:`DualityError`; ``w -= lr * dualize(w.grad)`` runs.
"""

from dualtype import modules, norms, optim, typing
from dualtype.errors import ConfigError, DualityError, DualtypeError, NonFiniteError, NormMismatchError, ShapeError
from dualtype.typed_model import TypedModel, typed, untyped
from dualtype.roles import check
from dualtype.modules import ModularNorm, ParamRecord, modular
from dualtype.optim import ModularSGD
from dualtype.monitor import Monitor
from dualtype.tensor import DualTensor, PrimalTensor, assume_primal, dual, dualize, norm_of, role
from dualtype.typing import Dual, Primal, typechecked

__version__ = "0.1.0"

__all__ = [
    "norms",
    "modules",
    "optim",
    "ModularSGD",
    "Monitor",
    "modular",
    "ModularNorm",
    "ParamRecord",
    "typing",
    "Dual",
    "Primal",
    "typechecked",
    "DualtypeError",
    "DualityError",
    "NormMismatchError",
    "ShapeError",
    "NonFiniteError",
    "ConfigError",
    "DualTensor",
    "PrimalTensor",
    "dual",
    "dualize",
    "assume_primal",
    "role",
    "norm_of",
    "typed",
    "untyped",
    "check",
    "TypedModel",
]
