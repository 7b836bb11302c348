from __future__ import annotations

from .base import InplaceCall, Rule


class RawGradForeach(Rule):
    """DTL004 raw-grad-foreach: a ``torch._foreach_*_`` in-place call over a list of weights
    whose other operands carry raw gradients (``_foreach_add_``, ``_foreach_sub_``,
    ``_foreach_addcdiv_``, ``_foreach_addcmul_``, ``_foreach_copy_``, ``_foreach_lerp_``, ...).

    Bad::

        torch._foreach_add_(params, grads, alpha=-lr)

    Good::

        torch._foreach_add_(params, [dualize(g) for g in grads], alpha=-lr)

    Not flagged: foreach updates of gradient or state lists
    (``torch._foreach_mul_(grads, clip_coef)``, ``torch._foreach_lerp_(exp_avgs, grads, 0.1)``:
    those are buffers and stay raw gradients), decoupled weight decay
    (``torch._foreach_mul_(params, 1 - lr * wd)``).
    """

    code = "DTL004"
    name = "raw-grad-foreach"
    summary = "torch._foreach_* in-place update of weights with raw gradients"

    def on_inplace(self, a, site: InplaceCall) -> None:
        if site.kind != "foreach" or not (site.target_is_weight and site.tainted_args) or site.preconditioned:
            return
        grads = ", ".join(f"`{a.code(x)}`" for x in site.tainted_args)
        a.report(
            self,
            site.node,
            f"`{site.name}` writes raw gradients {grads} into weights `{a.code(site.target)}`; "
            f"dualize each gradient first",
        )
