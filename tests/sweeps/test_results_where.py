"""The --where filter language: property tests against a reference evaluator."""

from __future__ import annotations

import operator

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sweeps.results import WhereError
from sweeps.results._where import compile_where

TABLE = pa.table({
    "x": pa.array([0.5, -1.0, None, 2.25, 0.0, 1e3], pa.float64()),
    "n": pa.array([1, 2, 3, None, -4, 0], pa.int64()),
    "s": pa.array(["SUCCESS", "ERROR", None, "it's", "PRUNED", ""], pa.string()),
    "b": pa.array([True, False, None, True, False, None], pa.bool_()),
})
ROWS = TABLE.to_pylist()
OPS = {"==": operator.eq, "=": operator.eq, "!=": operator.ne, "<": operator.lt,
       "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


numbers = st.one_of(st.integers(-5, 5), st.sampled_from([0.5, -1.0, 2.25, 1e3, 0.0]))
strings = st.sampled_from(["SUCCESS", "ERROR", "it's", "PRUNED", "", "x"])


@st.composite
def comparisons(draw):
    column = draw(st.sampled_from(["x", "n", "s", "b"]))
    form = draw(st.sampled_from(["op", "in", "null"] if column != "b" else ["op", "null", "bare"]))
    if form == "null":
        negated = draw(st.booleans())
        text = f"{column} is {'not ' if negated else ''}null"
        return text, lambda r: (r[column] is not None) if negated else (r[column] is None)
    if form == "bare":
        return column, lambda r: r[column]
    values = {"x": numbers, "n": numbers, "s": strings, "b": st.booleans()}[column]
    if form == "in":
        items = draw(st.lists(values, min_size=1, max_size=3))
        negated = draw(st.booleans())
        literal = ", ".join(quote(v) if isinstance(v, str) else str(v) for v in items)
        text = f"{column} {'not ' if negated else ''}in ({literal})"

        def in_list(r):
            if r[column] is None:
                return None
            return (r[column] not in items) if negated else (r[column] in items)
        return text, in_list
    op = draw(st.sampled_from(sorted(OPS) if column != "b" else ["==", "!="]))
    value = draw(values)
    literal = quote(value) if isinstance(value, str) else ("true" if value is True else "false" if value is False else repr(value))
    flipped = draw(st.booleans())
    text = f"{literal} {op} {column}" if flipped else f"{column} {op} {literal}"

    def compare(r):
        if r[column] is None:
            return None
        return OPS[op](value, r[column]) if flipped else OPS[op](r[column], value)
    return text, compare


def kleene_and(a, b):
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


def kleene_or(a, b):
    if a is True or b is True:
        return True
    return None if a is None or b is None else False


expressions = st.recursive(
    comparisons(),
    lambda inner: st.one_of(
        st.tuples(inner, inner).map(lambda p: (f"({p[0][0]}) and ({p[1][0]})",
                                               lambda r, p=p: kleene_and(p[0][1](r), p[1][1](r)))),
        st.tuples(inner, inner).map(lambda p: (f"({p[0][0]}) OR ({p[1][0]})",
                                               lambda r, p=p: kleene_or(p[0][1](r), p[1][1](r)))),
        inner.map(lambda e: (f"not ({e[0]})",
                             lambda r, e=e: None if e[1](r) is None else not e[1](r))),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions)
def test_filter_keeps_exactly_the_rows_where_the_expression_is_true(expr):
    text, reference = expr
    kept = TABLE.filter(compile_where(text, TABLE.schema)).to_pylist()
    assert kept == [r for r in ROWS if reference(r) is True], text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("xnsb ()'\"<=>!,.-01eandortiul_`[]")), max_size=30))
def test_any_text_compiles_or_raises_where_error(text):
    try:
        compile_where(text, TABLE.schema)
    except WhereError:
        pass


def test_and_binds_tighter_than_or_and_not_tighter_than_and():
    def ids(text):
        return TABLE.filter(compile_where(text, TABLE.schema))["n"].to_pylist()

    assert ids("n == 1 or n == 2 and x > 0") == [1]
    assert ids("(n == 1 or n == 2) and x > 0") == [1]
    assert ids("not n == 1 and x >= 0") == [-4, 0]


@pytest.mark.parametrize("text", ["x < 1 and", "x <", "(x < 1", "x in ()", "x in (n)", "1 < 2",
                                  "x == null", "s is nul", "x < 1 x", "x ~ 1", "'a' in (1)"])
def test_malformed_expressions_raise_where_error_with_a_caret(text):
    with pytest.raises(WhereError, match="bad filter expression") as info:
        compile_where(text, TABLE.schema)
    assert "^" in str(info.value) or "position" in str(info.value)


def test_type_mismatches_are_reported_with_the_column():
    with pytest.raises(WhereError, match="column 'n' holds number values .* 'a'"):
        compile_where("n == 'a'", TABLE.schema)
    with pytest.raises(WhereError, match="columns 'n' and 's' hold different kinds"):
        compile_where("n == s", TABLE.schema)
    with pytest.raises(WhereError, match="column 'x' holds number values; compare it"):
        compile_where("x", TABLE.schema)
