from __future__ import annotations

import libcst as cst

from .base import AssignSite, AugAssignSite, CollectionUpdate, InplaceCall, Rule


class PreconditionedUpdate(Rule):
    """DTL006 preconditioned-update: a weight updated with an elementwise-preconditioned
    gradient: Adam's ``m / (√v + ε)`` (also ``addcdiv_(m, √v)``,
    ``torch._foreach_addcdiv_(params, ms, denoms)``), Adagrad's ``g / √Σg²``, RMSprop,
    ``g * v.rsqrt()``, a second-moment or curvature statistic with no root (AdaHessian's and
    Sophia's ``m / (h + ε)``: a buffer squared gradients accumulate into, or a Hessian
    estimate), including through helpers (``update = adam_update(p.grad, m, v, ...)``).
    Dividing by this step's own square (``g / (1 + g²)``) stays a raw update.
    This is not a duality map of any norm (docs/design.md §4): the update leaves the algebra.
    It is kept apart from the raw-update rules DTL001–DTL005 so that CI can select or ignore
    the Adam family on purpose (``--ignore DTL006`` in a codebase that uses Adam deliberately, or
    ``--select DTL006`` to find every such update); those rules never report these.
    Normalizing m/√v afterwards (``u / u.norm()``) does not make it a duality map: it stays
    DTL006.

    Bad::

        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        denom = exp_avg_sq.sqrt().add_(eps)
        p.addcdiv_(exp_avg, denom, value=-step_size)

    Good::

        denom = exp_avg_sq.sqrt().add_(eps)
        p.sub_(step_size * assume_primal(exp_avg / denom, "rms->rms", reason="Adam m/sqrt(v)"))

    No fix is offered: whether Adam is wanted is a decision, not a typo. State it with the
    runtime's escape hatch ``assume_primal(..., reason=...)`` (which the linter accepts) or
    ``# noqa: DTL006``.
    """

    code = "DTL006"
    name = "preconditioned-update"
    summary = "weight updated with an elementwise-preconditioned gradient (Adam's m/√v)"

    def on_inplace(self, a, site: InplaceCall) -> None:
        if not (site.target_is_weight and site.tainted_args and site.preconditioned):
            return
        how = "`out=`" if site.kind == "out" else f"`{site.name}`"
        a.report(
            self,
            site.node,
            f"elementwise-preconditioned update (m/√v) written into weight "
            f"`{a.code(site.target)}` by {how}; this is not a duality map: state it with "
            f"`assume_primal(..., reason=...)` or `# noqa: DTL006`",
        )

    def on_augassign(self, a, site: AugAssignSite) -> None:
        if site.target_is_weight and site.value.precond:
            a.report(self, site.node, _msg(a, site.node.target))

    def on_assign(self, a, site: AssignSite) -> None:
        if site.target_is_weight and site.value.precond and a.is_reassign_update(site):
            a.report(self, site.node, _msg(a, site.target))

    def on_collection(self, a, site: CollectionUpdate) -> None:
        if site.element.precond and a.is_collection_update(site.element, site.fix_expr):
            a.report(self, site.node, "new weights computed from elementwise-preconditioned gradients "
                     "(m/√v); state it with `assume_primal(..., reason=...)` or `# noqa: DTL006`")


def _msg(a, target) -> str:
    return (
        f"elementwise-preconditioned update (m/√v) applied to weight `{a.code(target)}`; this is "
        f"not a duality map: state it with `assume_primal(..., reason=...)` or `# noqa: DTL006`"
    )
