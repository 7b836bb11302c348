from __future__ import annotations

import libcst as cst

from .base import AssignSite, Rule

COMPREHENSIONS = (cst.ListComp, cst.GeneratorExp, cst.SetComp, cst.DictComp)


class RawGradReassignment(Rule):
    """DTL003 raw-grad-reassign: a weight assigned an out-of-place update computed from a raw
    gradient: ``p.data = p.data - lr * g``, ``model.fc.weight = nn.Parameter(w - lr * g)``,
    ``params[i] = params[i] - lr * g``, a weight name rebound to ``w - lr * g``, new weights
    computed by a helper of the tree (``params[i] = _add(p, -lr, g)``), or stored with
    ``setattr(module, name, w - lr * g)`` (directly or in a helper such as ``set_param``).

    Rebinding a loop variable (``for p in params: p = p - lr * p.grad``) does not even change
    the model; it is reported too, because the update is still a type error.

    Bad::

        with torch.no_grad():
            w.data = w.data - lr * w.grad.data

    Good::

        with torch.no_grad():
            w.data = w.data - lr * dualize(w.grad.data)

    Not flagged: ``p.grad = None``, ``p.grad = p.grad * scale`` (the gradient slot is not a
    weight), ``p.data = saved`` (restoring weights).
    """

    code = "DTL003"
    name = "raw-grad-reassign"
    summary = "weight reassigned from an out-of-place update with a raw gradient"
    fixable = True

    def on_assign(self, a, site: AssignSite) -> None:
        v = site.value
        if not (site.target_is_weight and v.taint):
            return
        if isinstance(site.value_node, COMPREHENSIONS) or a.is_map_call(site.value_node):
            return  # DTL005 reports the comprehension itself
        if not a.is_reassign_update(site):
            return  # `w = p.grad`, `ctx.params = (w, grad)`: an alias or a container, not an update
        if v.precond:
            return  # DTL006
        a.report(
            self,
            site.node,
            f"weight `{a.code(site.target)}` reassigned from `{a.code(site.value_node)}`, which "
            f"applies a raw gradient; {a.advice(self.code, [site.value_node])}",
            a.fix_leaves([site.value_node]),
        )
