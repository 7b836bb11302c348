from __future__ import annotations

from .base import CollectionUpdate, Rule


class RawGradFunctionalUpdate(Rule):
    """DTL005 raw-grad-functional: new weights computed out of place from old weights and raw
    gradients over a whole collection: list/generator/dict comprehensions and ``map`` over
    ``zip(params, grads)`` (the functional, ``torch.func`` style of update).

    Bad::

        grads = torch.autograd.grad(loss, params)
        params = [p - lr * g for p, g in zip(params, grads)]

    Good::

        grads = torch.autograd.grad(loss, params)
        params = [p - lr * dualize(g) for p, g in zip(params, grads)]

    Also caught: ``tuple(p - lr * g for ...)``, ``list(map(lambda p, g: p - lr * g, params,
    grads))``, ``{k: v - lr * gs[k] for k, v in named.items()}`` with
    ``gs = torch.func.grad(f)(named)``, ``OrderedDict((n, p - lr * g) for ...)`` (an element
    that is a tuple holding an update), and the loop form ``new.append(w - lr * g)``.

    Not flagged: collections of gradient norms (``[g.norm() for g in grads]``), clipped or
    scaled gradients (``[g * c for g in grads]``), copies of weights.

    Fix (unsafe): for comprehensions, wraps the raw-gradient operands of the element in
    ``dualize(...)``.
    """

    code = "DTL005"
    name = "raw-grad-functional"
    summary = "weights recomputed from raw gradients in a comprehension or map"
    fixable = True

    def on_collection(self, a, site: CollectionUpdate) -> None:
        # [x.to(dtype) for x in (grad, weight)] is not an update: see is_collection_update
        if not a.is_collection_update(site.element, site.fix_expr) or site.element.precond:
            return
        leaves = a.fix_leaves([site.fix_expr]) if site.fix_expr is not None else None
        a.report(
            self,
            site.node,
            "new weights computed from raw gradients"
            + (f" (`{a.code(site.fix_expr)}`)" if site.fix_expr is not None else "")
            + "; " + a.advice(self.code, [site.fix_expr] if site.fix_expr is not None else [], each=True),
            leaves,
        )
