from __future__ import annotations

from .base import InplaceCall, Rule


class RawGradInplaceMethod(Rule):
    """DTL002 raw-grad-inplace: a raw gradient written into a weight by an in-place tensor
    method (``add_``, ``sub_``, ``subtract_``, ``addcdiv_``, ``addcmul_``, ``copy_``, ``lerp_``,
    ... including the deprecated ``p.add_(-lr, g)`` signature), by ``out=weight``, or by
    ``torch.nn.utils.vector_to_parameters``.

    Bad::

        for p in group["params"]:
            buf = state[p]["momentum_buffer"]
            buf.mul_(momentum).add_(p.grad)     # a buffer: fine, it stays a gradient
            p.add_(buf, alpha=-lr)              # DTL002: the buffer is still a raw gradient

    Good::

        for p in group["params"]:
            buf = state[p]["momentum_buffer"]
            buf.mul_(momentum).add_(p.grad)
            p.add_(dualize(buf), alpha=-lr)

    Also caught: ``p.data.add_(-lr, d_p)``, ``p.copy_(p - lr * g)``,
    ``torch.sub(w, lr * w.grad, out=w)``, ``p.mul_(1 - wd).add_(buf, alpha=-lr)`` (the chain's
    target is the weight), ``[p.sub_(g) for p, g in zip(params, grads)]``. Adam's
    ``p.addcdiv_(exp_avg, denom)`` with ``denom = exp_avg_sq.sqrt()`` is DTL006.

    Not flagged: scaling or clipping the gradient itself (``p.grad.mul_(c)``), EMA of weights
    (``ema.mul_(d).add_(p, alpha=1 - d)``), decoupled weight decay (``p.mul_(1 - lr * wd)``),
    clamping (``p.clamp_(-c, c)``), restoring saved weights (``p.copy_(saved)``).

    Fix (unsafe): wraps the raw-gradient arguments in ``dualize(...)`` when they are names,
    attributes or subscripts.
    """

    code = "DTL002"
    name = "raw-grad-inplace"
    summary = "raw gradient written into a weight by an in-place tensor method"
    fixable = True

    def on_inplace(self, a, site: InplaceCall) -> None:
        if site.kind == "foreach" or not (site.target_is_weight and site.tainted_args) or site.preconditioned:
            return
        grads = ", ".join(f"`{a.code(x)}`" for x in site.tainted_args)
        how = "`out=`" if site.kind == "out" else f"`{site.name}`"
        a.report(
            self,
            site.node,
            f"raw gradient {grads} written into weight `{a.code(site.target)}` by {how}; "
            f"{a.advice(self.code, site.tainted_args)}",
            a.fix_leaves(site.fix_args) if len(site.fix_args) == len(site.tainted_args) else None,
        )
