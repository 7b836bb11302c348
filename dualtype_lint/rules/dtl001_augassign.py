from __future__ import annotations

from .base import AugAssignSite, Rule


class RawGradAugAssign(Rule):
    """DTL001 raw-grad-augassign: a raw gradient added to or subtracted from a weight with an
    augmented assignment (``-=``, ``+=``, ...), directly or through an alias, a momentum buffer
    or an ``autograd.grad`` result.

    A gradient is a dual vector; the weight is primal. ``w -= lr * w.grad`` adds vectors of two
    different spaces. Dualize first.

    Bad::

        for p in model.parameters():
            p.data -= lr * p.grad

    Good::

        from dualtype import dualize

        for p in model.parameters():
            p.data -= lr * dualize(p.grad)

    Also caught: ``w -= 0.1 * w.grad`` in a script under ``torch.no_grad()``, ``w += lr * g``
    (ascent), ``self.weight -= lr * self.weight.grad``, ``p -= lr * sq`` where
    ``sq += p.grad * p.grad``.

    Fix (unsafe, changes numerics): wraps each raw-gradient operand in ``dualize(...)`` and adds
    ``from dualtype import dualize``.
    """

    code = "DTL001"
    name = "raw-grad-augassign"
    summary = "raw gradient applied to a weight with an augmented assignment"
    fixable = True

    def on_augassign(self, a, site: AugAssignSite) -> None:
        if not (site.target_is_weight and site.value.taint) or site.value.precond:
            return
        node = site.node
        op = a.code(node.operator).strip()
        a.report(
            self,
            node,
            f"raw gradient `{a.code(node.value)}` applied to weight `{a.code(node.target)}` "
            f"with `{op}`; {a.advice(self.code, [node.value])}",
            a.fix_leaves([node.value]),
        )
