"""Name tables: which attributes, methods and functions mean what to the analysis."""

from __future__ import annotations

import libcst as cst

CLEAN_ATTRS = frozenset(
    """shape dtype device ndim is_leaf requires_grad is_sparse is_cuda layout names grad_fn
    itemsize nbytes is_meta is_quantized is_cpu is_mps stride strides sizes numel""".split()
)

UPDATE_CALLS = frozenset(
    """add sub subtract addcdiv addcmul lerp Parameter _foreach_add _foreach_sub
    _foreach_addcdiv _foreach_addcmul _foreach_lerp""".split()
)

VIEW_ATTRS = frozenset("data T mT H mH real imag _local_tensor".split())

VIEW_METHODS = frozenset(
    """detach view view_as reshape reshape_as flatten narrow select t transpose squeeze
    unsqueeze to_local as_strided unflatten movedim permute expand expand_as _values""".split()
)

SCALAR_METHODS = frozenset(
    """item numel nelement dim size tolist stride element_size data_ptr storage_offset
    is_contiguous is_floating_point is_complex get_device dual_value isfinite isnan isinf
    all any equal allclose __len__ type eq ne lt le gt ge""".split()
)

REDUCTION_METHODS = frozenset("sum mean max min amax amin std var prod".split())

CLEAN_BUILTINS = frozenset(
    """len float int bool str repr print isinstance issubclass hasattr id type range format
    round callable hash""".split()
)

CONSTRUCTORS = frozenset(
    """zeros_like ones_like empty_like full_like rand_like randn_like randint_like zeros ones
    empty full arange linspace logspace eye rand randn randint empty_strided new_zeros
    new_ones new_empty new_full new_tensor""".split()
)

GRAD_FUNCTIONS = frozenset(
    ("torch.autograd.grad", "torch.autograd.functional.vjp", "torch.autograd.functional.jacobian")
)

GRAD_TRANSFORMS = frozenset(
    (
        "torch.func.grad", "torch.func.grad_and_value", "functorch.grad", "functorch.grad_and_value",
        "jax.grad", "jax.value_and_grad", "autograd.grad",  # the same transform in JAX and HIPS autograd
    )
)

ELEMENT_PRESERVING = frozenset(("reversed", "list", "tuple", "sorted", "iter", "set"))

COMPREHENSIONS = (cst.ListComp, cst.GeneratorExp, cst.SetComp, cst.DictComp)

FN_EXPRS = (cst.Name, cst.Attribute, cst.Subscript, cst.Call, cst.Dict)

META_KWARGS = frozenset(
    """device dtype device_mesh placements layout memory_format requires_grad pin_memory
    non_blocking run_check group process_group src dst async_op shape size stride
    copy""".split()
)

AUG_OPS = {
    cst.DivideAssign: cst.Divide,
    cst.MultiplyAssign: cst.Multiply,
    cst.PowerAssign: cst.Power,
    cst.MatrixMultiplyAssign: cst.MatrixMultiply,
}

# in-place methods that set a flag of the tensor, not its data: ``requires_grad_(flag)``
FLAG_METHODS = frozenset(("requires_grad_", "share_memory_"))

CONTAINER_WRITES = frozenset(("append", "extend", "insert", "appendleft", "add", "update"))

COPY_METHODS = frozenset(
    "float double half bfloat16 clone to detach contiguous type type_as stack cat".split()
)

