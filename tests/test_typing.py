"""Specification tests for dualtype.typing: Dual[N]/Primal[N] annotations and @typechecked.

No ``from __future__ import annotations`` here on purpose: the decorated functions below are
checked with real annotation objects; one test covers string annotations separately.
"""

import textwrap

import pytest
import torch
from jaxtyping import Float

import dualtype
import dualtype.typing as dt_typing
from dualtype import DualityError, NormMismatchError, ShapeError, dual, dualize
from dualtype.typing import Dual, Primal, set_debug, set_shapes, typechecked
from helpers import not_type_error, refused


@pytest.fixture(autouse=True)
def _shapes_default():
    """Every test starts with the default (shapes checked; DUALTYPE_SHAPES may be set in the
    environment) and leaves the module as it found it."""
    was = dt_typing.shapes()
    set_shapes(True)
    yield
    set_shapes(was)


def g_(norm="rms->rms", shape=(3, 4), name=None):
    return dual(torch.randn(shape), norm, name=name)



# --- isinstance semantics ----------------------------------------------------------------


def test_dual_and_primal_are_the_tensor_classes():
    assert Dual is dualtype.DualTensor and Primal is dualtype.PrimalTensor
    assert dualtype.Dual is Dual and dualtype.Primal is Primal


def test_isinstance_checks_role_and_norm():
    g = g_("rms->rms")
    d = dualize(g)
    assert isinstance(g, Dual["rms->rms"]) and isinstance(g, Dual) and isinstance(g, torch.Tensor)
    assert not isinstance(g, Dual["l2"])
    assert not isinstance(g, Primal["rms->rms"]) and not isinstance(g, Primal)
    assert isinstance(d, Primal["rms->rms"]) and not isinstance(d, Dual["rms->rms"])
    assert not isinstance(torch.randn(3, 4), Dual["rms->rms"])
    assert not isinstance(torch.randn(3, 4), Dual)
    assert not isinstance(dual(torch.randn(3, 4), None), Dual["rms->rms"])  # unknown norm
    assert isinstance(dual(torch.randn(3, 4), None), Dual)


def test_spec_classes_are_cached_and_accept_aliases_and_norm_objects():
    assert Dual["rms->rms"] is Dual["linear"] is Dual["RMS → RMS"] is Dual[dualtype.norms.RMSToRMS()]
    assert Dual["rms->rms"] is not Primal["rms->rms"]
    assert isinstance(g_("rms->rms"), Dual["spectral"])
    with pytest.raises(dualtype.ConfigError):
        Dual["no-such-norm"]


# --- @typechecked: roles and norms -------------------------------------------------------


@typechecked
def direction(g: Dual["rms->rms"]) -> Primal["rms->rms"]:
    return dualize(g)


@typechecked
def wrong_return(g: Dual["rms->rms"]) -> Primal["rms->rms"]:
    return g


@typechecked
def any_dual(g: Dual, *, scale: float = 1.0) -> Primal:
    return dualize(g, scale=scale)


def test_typechecked_accepts_the_annotated_roles_and_norms():
    g = g_()
    out = direction(g)
    assert isinstance(out, Primal["rms->rms"])
    assert torch.equal(out.as_subclass(torch.Tensor), dualize(g).as_subclass(torch.Tensor))
    assert isinstance(any_dual(g_("l2", (5,)), scale=2.0), Primal["l2"])


@pytest.mark.parametrize("bad", ["plain", "wrong norm", "primal", "unknown norm"])
def test_typechecked_rejects_wrong_arguments(bad):
    value = {
        "plain": lambda: torch.randn(3, 4),
        "wrong norm": lambda: g_("rms->linf"),
        "primal": lambda: dualize(g_()),
        "unknown norm": lambda: dual(torch.randn(3, 4), None),
    }[bad]()
    with refused(match="direction") as info:
        direction(value)
    not_type_error(info)
    assert "annotation" in str(info.value)


def test_typechecked_rejects_a_wrong_return_value():
    with refused(match="wrong_return") as info:
        wrong_return(g_())
    not_type_error(info)


def test_typechecked_checks_other_annotations_too():
    with refused():
        any_dual(torch.randn(3))
    with refused():
        any_dual(g_(), scale="2")


def test_typechecked_keeps_name_and_doc():
    @typechecked
    def step(g: Dual) -> Primal:
        """Doc."""
        return dualize(g)

    assert step.__name__ == "step" and step.__doc__ == "Doc."


# --- shapes: jaxtyping, by default -------------------------------------------------------


def _shaped(**kw):
    @typechecked(**kw)
    def step(
        g: Float[Dual["rms->rms"], "out inp"], b: Float[Dual["rms"], " out"]
    ) -> Float[Primal["rms->rms"], "out inp"]:
        return dualize(g)

    return step


def test_shapes_true_rejects_mismatched_dims_and_accepts_matching():
    step = _shaped(shapes=True)
    assert isinstance(step(g_(shape=(3, 4)), g_("rms", (3,))), Primal["rms->rms"])
    assert isinstance(step(g_(shape=(2, 5)), g_("rms", (2,))), Primal["rms->rms"])
    with pytest.raises(ShapeError, match="step") as info:
        step(g_(shape=(3, 4)), g_("rms", (5,)))  # "out" is 3 then 5
    not_type_error(info)
    with pytest.raises(ShapeError):
        step(g_(shape=(3, 4, 1)), g_("rms", (3,)))  # wrong rank
    with refused():
        step(g_("l2", (3, 4)), g_("rms", (3,)))  # roles and norms still checked
    with refused():
        step(dual(torch.ones(3, 4, dtype=torch.int64), None), g_("rms", (3,)))  # dtype


def test_shapes_true_checks_the_return_shape():
    @typechecked(shapes=True)
    def transpose(g: Float[Dual["rms->rms"], "out inp"]) -> Float[Primal["rms->rms"], "out inp"]:
        return dualize(g).t()

    assert transpose(g_(shape=(3, 3))).shape == (3, 3)
    with pytest.raises(ShapeError):
        transpose(g_(shape=(3, 4)))


def test_default_checks_shapes():
    """Issue 13: two arguments annotated "out ..." with different sizes were accepted."""
    step = _shaped()
    assert isinstance(step(g_(shape=(3, 4)), g_("rms", (3,))), Primal["rms->rms"])
    with pytest.raises(ShapeError, match="argument 'b'") as info:
        step(g_(shape=(3, 4)), g_("rms", (5,)))
    not_type_error(info)
    with refused():  # roles and norms too
        step(torch.randn(3, 4), g_("rms", (3,)))
    with pytest.raises(NormMismatchError):
        step(g_(shape=(3, 4)), g_("l2", (3,)))


def test_shapes_can_be_turned_off_for_a_hot_path():
    fast = _shaped(shapes=False)
    assert isinstance(fast(g_(shape=(3, 4)), g_("rms", (5,))), Primal["rms->rms"])
    with pytest.raises(NormMismatchError):  # roles and norms are still checked
        fast(g_(shape=(3, 4)), g_("l2", (3,)))
    set_shapes(False)
    assert not dt_typing.shapes()
    off = _shaped()
    off(g_(shape=(3, 4)), g_("rms", (5,)))
    with pytest.raises(ShapeError):
        _shaped(shapes=True)(g_(shape=(3, 4)), g_("rms", (5,)))  # explicit beats the switch
    set_shapes(True)
    off(g_(shape=(3, 4)), g_("rms", (5,)))  # decorated while off: unchanged
    assert set_debug is set_shapes  # the old name of the switch


def test_environment_switch_turns_shapes_off(monkeypatch):
    import importlib

    monkeypatch.setenv("DUALTYPE_SHAPES", "0")
    monkeypatch.delenv("DUALTYPE_DEBUG", raising=False)
    try:
        assert importlib.reload(dt_typing).shapes() is False
    finally:
        monkeypatch.undo()
        importlib.reload(dt_typing)


# --- the error: one line naming the argument, what was expected and what came -------------


def first_line(info) -> str:
    return str(info.value).splitlines()[0]


@pytest.mark.parametrize("shapes", [True, False])
def test_error_header_names_argument_expected_and_actual(shapes):
    step = _shaped(shapes=shapes)
    with pytest.raises(DualityError) as info:
        step(dualize(g_()), g_("rms", (3,)))
    line = first_line(info)
    assert type(info.value) is DualityError  # a wrong role
    assert line.startswith("_shaped.<locals>.step: argument 'g'")
    assert "expected Dual[rms->rms]" in line and "got Primal[rms->rms] float32[3, 4]" in line
    with pytest.raises(NormMismatchError) as info:
        step(g_(shape=(3, 4)), g_("l2", (3,)))
    line = first_line(info)
    assert "argument 'b'" in line and "expected Dual[rms]" in line and "got Dual[l2]" in line


def test_shape_error_header_says_which_size_disagrees():
    step = _shaped()
    with pytest.raises(ShapeError) as info:
        step(g_(shape=(3, 4)), g_("rms", (5,)))
    line = first_line(info)
    assert "argument 'b'" in line and "Float 'out'" in line and "Dual[rms] float32[5]" in line
    assert "'out' is 3 from an earlier argument, here 5" in line
    with pytest.raises(ShapeError, match="needs 2 dims, got 3"):
        step(g_(shape=(3, 4, 1)), g_("rms", (3,)))
    assert not issubclass(ShapeError, DualityError) and issubclass(ShapeError, ValueError)


def test_return_value_header_shows_what_came_back():
    @typechecked
    def flip(g: Float[Dual["rms->rms"], "out inp"]) -> Float[Primal["rms->rms"], "out inp"]:
        return dualize(g).t()

    with pytest.raises(ShapeError) as info:
        flip(g_(shape=(3, 4)))
    line = first_line(info)
    assert "the return value" in line and "got Primal[rms->rms] float32[4, 3]" in line
    with pytest.raises(DualityError, match="the return value .* got Dual") as info:
        wrong_return(g_())


def test_checker_detail_keeps_role_and_norm_below_the_header():
    step = _shaped()
    with pytest.raises(ShapeError) as info:
        step(g_(shape=(3, 4)), g_("rms", (5,)))
    head, _, detail = str(info.value).partition("\n")
    assert "Dual[rms]" in head and detail  # jaxtyping's report follows the one-line header


def test_string_annotations_under_postponed_evaluation():
    src = textwrap.dedent(
        """
        from __future__ import annotations
        from jaxtyping import Float
        from dualtype import dualize
        from dualtype.typing import Dual, Primal, typechecked

        @typechecked
        def fast(g: Float[Dual["rms->rms"], "o i"]) -> Float[Primal["rms->rms"], "o i"]:
            return dualize(g)

        @typechecked(shapes=True)
        def slow(g: Float[Dual["rms->rms"], "o i"], b: Float[Dual["rms"], " o"]) -> Primal:
            return dualize(g)
        """
    )
    ns: dict = {}
    exec(compile(src, "<postponed>", "exec"), ns)
    assert isinstance(ns["fast"](g_()), Primal["rms->rms"])
    with refused():
        ns["fast"](torch.randn(3, 4))
    assert isinstance(ns["slow"](g_(shape=(3, 4)), g_("rms", (3,))), Primal)
    with pytest.raises(ShapeError):
        ns["slow"](g_(shape=(3, 4)), g_("rms", (4,)))


def test_error_header_names_the_element_of_star_args():
    @typechecked
    def many(*gs: Float[Dual, " n"], **kw: Dual["rms"]) -> int:
        return len(gs)

    assert many(g_("rms", (3,)), g_("rms", (3,))) == 2
    with pytest.raises(ShapeError, match=r"argument 'gs\[1\]'.*'n' is 3 from an earlier argument, here 4"):
        many(g_("rms", (3,)), g_("rms", (4,)))
    with pytest.raises(NormMismatchError, match=r"argument 'kw\['x'\]'"):
        many(x=g_("l2", (4,)))
