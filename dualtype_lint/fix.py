"""The (unsafe) fix: wrap raw-gradient operands in ``dualize(...)`` and import it.

``w -= lr * w.grad`` becomes ``w -= lr * dualize(w.grad)``. This changes the numbers the
program computes (the update gets the geometry of the weight's norm), so the CLI applies it
only with ``--unsafe-fixes``. A fix must give code that runs, so (see :func:`plan`):

- it is not offered in files written for another framework (MXNet, JAX, TensorFlow, ...);
- ``dualize`` needs a norm: where the file makes its model typed (``typed(model)``) or already
  uses dualtype, the gradient's tag gives it (``dualize(g)``); elsewhere the fix names the ℓ2
  norm, whose duality map ``g / ‖g‖_F`` fits any shape (``dualize(g, "l2")``);
- if ``dualize`` is taken by something else in the file, the fix uses ``dualtype.dualize``;
  if ``dualtype`` is taken too, no fix is offered;
- denominators, scalars (``alpha=``, ``value=``) and copies of weights are never wrapped
  (:meth:`dualtype_lint.dataflow.Analyzer.fix_leaves`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import libcst as cst

IMPORT_LINE = "from dualtype import dualize\n"
DEFAULT_NORM = "l2"
_TYPED_CALL = re.compile(r"\btyped\s*\(")
OTHER_FRAMEWORKS = frozenset(
    "mxnet jax jaxlib flax optax tensorflow keras paddle mindspore chainer oneflow mlx".split()
)


@dataclass(frozen=True)
class Plan:
    func: str  # the expression that names dualtype.dualize here
    import_line: str | None  # the import to add, if any
    norm: str | None  # the norm to pass, if the gradients carry none


def _binds(text: str, name: str) -> bool:
    """Does the file bind ``name`` other than by importing it from dualtype?"""
    return bool(
        re.search(rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b", text, re.M)
        or re.search(rf"(?<![.\w]){name}\s*(?::[^=\n]*)?=(?!=)", text)
        or re.search(rf"\bfor\s+{name}\b|\bas\s+{name}\b", text)
    )


def plan(module: cst.Module, imports: Mapping[str, str], text: str | None = None) -> Plan | None:
    """How to fix this file, or None if no fix that runs can be offered."""
    roots = {o.split(".", 1)[0] for o in imports.values()}
    if roots & OTHER_FRAMEWORKS and not roots & {"torch", "functorch"}:
        return None  # an MXNet / JAX / TensorFlow file: dualtype does not apply
    text = module.code if text is None else text
    dualtype_aware = bool(_TYPED_CALL.search(text)) or any(
        o == "dualtype" or o.startswith("dualtype.") for o in imports.values()
    )
    norm = None if dualtype_aware else DEFAULT_NORM
    for local, origin in imports.items():
        if origin in ("dualtype.dualize", "dualtype.tensor.dualize"):
            return Plan(local, None, norm)
    for local, origin in imports.items():
        if origin == "dualtype":
            return Plan(f"{local}.dualize", None, norm)
    if "dualize" not in imports and not _binds(text, "dualize"):
        return Plan("dualize", IMPORT_LINE, norm)
    if "dualtype" not in imports and not _binds(text, "dualtype"):
        return Plan("dualtype.dualize", "import dualtype\n", norm)
    return None


class _Wrap(cst.CSTTransformer):
    def __init__(self, targets: set[int], func: cst.BaseExpression, norm: str | None) -> None:
        super().__init__()
        self.targets = targets
        self.func = func
        self.norm = norm

    def on_leave(self, original_node, updated_node):  # type: ignore[override]
        if id(original_node) in self.targets:
            args = [cst.Arg(value=updated_node)]
            if self.norm is not None:
                args.append(cst.Arg(value=cst.SimpleString(f'"{self.norm}"')))
            return cst.Call(func=self.func, args=args)
        return updated_node


def _insert_at(module: cst.Module) -> int:
    """After the docstring, ``__future__`` imports and the leading block of imports."""
    i = 0
    body = module.body
    if body and isinstance(body[0], cst.SimpleStatementLine) and len(body[0].body) == 1:
        first = body[0].body[0]
        if isinstance(first, cst.Expr) and isinstance(first.value, (cst.SimpleString, cst.ConcatenatedString)):
            i = 1
    while i < len(body):
        s = body[i]
        if isinstance(s, cst.SimpleStatementLine) and all(
            isinstance(x, (cst.Import, cst.ImportFrom)) for x in s.body
        ):
            i += 1
            continue
        break
    return i


def apply_fixes(
    module: cst.Module, leaves: Sequence[cst.BaseExpression], imports: Mapping[str, str]
) -> str:
    p = plan(module, imports)
    if p is None:
        return module.code
    func = cst.parse_expression(p.func)
    new = module.visit(_Wrap({id(x) for x in leaves}, func, p.norm))
    if p.import_line is not None:
        stmt = cst.parse_statement(p.import_line)
        i = _insert_at(new)
        new = new.with_changes(body=[*new.body[:i], stmt, *new.body[i:]])
    return new.code
