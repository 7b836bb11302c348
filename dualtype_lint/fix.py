"""The (unsafe) fix: wrap raw-gradient operands in ``dualize(...)`` and import it.

``w -= lr * w.grad`` becomes ``w -= lr * dualize(w.grad)``. This changes the numbers the
program computes (the update gets the geometry of the weight's norm), so the CLI applies it
only with ``--unsafe-fixes``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import libcst as cst

IMPORT_LINE = "from dualtype import dualize\n"


class _Wrap(cst.CSTTransformer):
    def __init__(self, targets: set[int], func: cst.BaseExpression) -> None:
        super().__init__()
        self.targets = targets
        self.func = func

    def on_leave(self, original_node, updated_node):  # type: ignore[override]
        if id(original_node) in self.targets:
            return cst.Call(func=self.func, args=[cst.Arg(value=updated_node)])
        return updated_node


def _dualize_name(imports: Mapping[str, str]) -> tuple[str, bool]:
    """The expression that names ``dualtype.dualize`` here, and whether an import is needed."""
    for local, origin in imports.items():
        if origin in ("dualtype.dualize",) or (origin.endswith(".dualize") and origin.startswith("dualtype")):
            return local, False
    for local, origin in imports.items():
        if origin == "dualtype":
            return f"{local}.dualize", False
    return "dualize", True


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
    name, need_import = _dualize_name(imports)
    func = cst.parse_expression(name)
    new = module.visit(_Wrap({id(x) for x in leaves}, func))
    if need_import:
        stmt = cst.parse_statement(IMPORT_LINE)
        i = _insert_at(new)
        new = new.with_changes(body=[*new.body[:i], stmt, *new.body[i:]])
    return new.code
